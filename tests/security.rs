//! The security review's findings (issue 9), each reproduced against real
//! processes: desyncs through `Connection`, hostile origins, cut transfers,
//! uploads longer than the idle time, repeated non-idempotent requests, and
//! the low-severity parsing findings. Every test here failed on the code
//! before the fix.
#![allow(
    clippy::disallowed_methods,
    reason = "test code: bounded waits on child processes, off any runtime"
)]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

/// A gateway, a client and a scripted origin.
struct RawChain {
    env: Env,
    origin: RawOrigin,
    gateway: Proc,
    client: Proc,
    proxy: SocketAddr,
}

fn raw_chain(script: impl Fn(&str) -> Reply + Send + Sync + 'static, client_extra: &str, gw_tail: &str) -> RawChain {
    let env = Env::new();
    let origin = RawOrigin::start(script);
    let (gateway, gw) = env.gateway_at("gateway", "127.0.0.1:0", gw_tail);
    let cfg = env.client_toml("client-run", gw, "client.pem", "client-key.pem", client_extra);
    let (client, proxy) = env.client_from("client", &cfg);
    RawChain {
        env,
        origin,
        gateway,
        client,
        proxy,
    }
}

/// The path of each request, echoed as the body.
fn echo_path(head: &str) -> Reply {
    Reply::Send(ok_response(request_path(head).as_bytes()))
}

fn status_json(client: &Proc) -> serde_json::Value {
    let (code, body, err) = curl(&[&format!("http://{}/status", client.control_addr())]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_slice(&body).unwrap()
}

/// High 1: `Connection: Content-Length` must not strip the framing. Before
/// the fix the client forwarded the body as a second request: the origin
/// received a request the browser never made, and the next browser
/// connection on the pooled tunnel got the wrong response.
#[test]
fn connection_naming_content_length_does_not_desync() {
    let c = raw_chain(echo_path, "", "");
    let smuggled = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", c.origin.url("/smuggled"));
    for header in ["Content-Length", "content-length, keep-alive"] {
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nConnection: {header}\r\nContent-Length: {}\r\n\r\n{smuggled}",
            c.origin.url("/first"),
            smuggled.len()
        );
        let (status, _, body) = exchange(c.proxy, req.as_bytes());
        assert_eq!((status, body.as_slice()), (200, b"/first".as_slice()));
        // A new browser connection right away takes the same pooled tunnel.
        let (status, _, body) = exchange(
            c.proxy,
            format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", c.origin.url("/second")).as_bytes(),
        );
        assert_eq!(
            (status, String::from_utf8_lossy(&body).into_owned()),
            (200, "/second".into())
        );
    }
    let got = c.origin.received();
    assert!(
        got.iter()
            .all(|r| r.starts_with("POST /first ") || r.starts_with("GET /second ")),
        "a request the browser never made reached the origin: {got:#?}"
    );
    assert_eq!(got.len(), 4, "{got:#?}");
    let posts: Vec<&String> = got.iter().filter(|r| r.starts_with("POST /first")).collect();
    assert_eq!(posts.len(), 2, "{got:#?}");
    for p in posts {
        assert!(p.contains(&format!("Content-Length: {}\r\n", smuggled.len())), "{p}");
        assert!(p.ends_with(&smuggled), "the body arrives as a body: {p}");
    }
}

/// High 1 at the gateway -> origin hop alone: a request sent straight to the
/// gateway over mutual TLS.
#[test]
fn gateway_keeps_framing_named_in_connection() {
    let env = Env::new();
    let origin = RawOrigin::start(echo_path);
    let (_gw, gw) = env.gateway_at("gateway", "127.0.0.1:0", "");
    let smuggled = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", origin.url("/smuggled"));
    let mut s = mtls(&env, gw);
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\nContent-Length: {}\r\n\r\n{smuggled}GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
        origin.url("/first"),
        smuggled.len(),
        origin.url("/second")
    );
    s.write_all(req.as_bytes()).unwrap();
    let (st1, _, b1) = read_response(&mut s);
    let (st2, _, b2) = read_response(&mut s);
    assert_eq!((st1, b1.as_slice()), (200, b"/first".as_slice()));
    assert_eq!((st2, b2.as_slice()), (200, b"/second".as_slice()));
    // Exactly the two requests sent, the first with its framing and body.
    let got = origin.received();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with("POST /first ")
            && got[0].contains(&format!("\r\nContent-Length: {}\r\n", smuggled.len()))
            && got[0].ends_with(&smuggled),
        "{got:#?}"
    );
    assert!(got[1].starts_with("GET /second "), "{got:#?}");
}

/// High 1, responses: an origin naming `Content-Length` in `Connection`.
/// Before the fix the length was stripped and the browser waited forever.
#[test]
fn response_naming_content_length_in_connection_is_framed() {
    let c = raw_chain(
        |_| Reply::Send(b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello".to_vec()),
        "",
        "",
    );
    let mut s = tcp(c.proxy);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..2 {
        s.write_all(format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", c.origin.url("/r")).as_bytes())
            .unwrap();
        let (status, head, body) = read_response(&mut s);
        assert_eq!((status, body.as_slice()), (200, b"hello".as_slice()), "{head}");
        assert!(head.contains("Content-Length: 5\r\n"), "{head}");
    }
}

/// High 2: responses no origin should send, many times over, must not make
/// the client give up on its gateway (and then relay DIRECT). The gateway
/// answers them with a 502 of its own.
#[test]
fn hostile_origins_do_not_push_the_client_off_its_gateway() {
    let hundred: String = (0..100).map(|i| format!("X-F{i}: v\r\n")).collect();
    let big_value = "a".repeat(64 * 1024 - 200);
    let c = raw_chain(
        move |head| {
            match request_path(head) {
                "/badchunk" => Reply::Send(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec(),
                ),
                // Exactly at the limits and close-delimited: a hop adds
                // `Connection: close`.
                "/hundred" => Reply::SendThenClose(format!("HTTP/1.1 200 OK\r\n{hundred}\r\nbody").into_bytes()),
                "/bighead" => {
                    Reply::SendThenClose(format!("HTTP/1.1 200 OK\r\nX-Big: {big_value}\r\n\r\nbody").into_bytes())
                }
                "/toomany" => Reply::Send(
                    format!("HTTP/1.1 200 OK\r\n{hundred}X-One-More: v\r\nContent-Length: 0\r\n\r\n").into_bytes(),
                ),
                "/cl-list" => Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd".to_vec()),
                _ => Reply::Send(ok_response(b"fine")),
            }
        },
        "[selection]\nkeepalive_interval = \"200ms\"\nevaluate_interval = \"200ms\"\n",
        "",
    );
    for _ in 0..12 {
        for path in ["/badchunk", "/hundred", "/bighead", "/toomany", "/cl-list"] {
            let (code, out, err) = curl(&[
                "-sS",
                "-x",
                &c.proxy.to_string(),
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &c.origin.url(path),
            ]);
            let status = String::from_utf8_lossy(&out).into_owned();
            // A 502 from the gateway, or (close-delimited heads that fit) the
            // response itself; never a client-made refusal.
            assert!(
                ["502", "200"].contains(&status.as_str()) || code != 0,
                "{path}: {status} {err}"
            );
        }
    }
    let (_, out, _) = curl(&["-sS", "-i", "-x", &c.proxy.to_string(), &c.origin.url("/badchunk")]);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 502") && text.contains("Proxy-Status: msc-gateway"),
        "{text}"
    );
    let st = status_json(&c.client);
    assert_eq!(st["selected"], "gw1", "{st:#}");
    assert_eq!(st["direct"]["fail_open"], 0, "{st:#}");
    assert!(
        !c.client.stderr().contains("failed on the data path"),
        "{}",
        c.client.stderr()
    );
    // And ordinary traffic still goes through the gateway.
    let (code, out, err) = curl(&["-sS", "-x", &c.proxy.to_string(), &c.origin.url("/ok")]);
    assert_eq!((code, out.as_slice()), (0, b"fine".as_slice()), "{err}");
    let last = c.origin.received().pop().unwrap();
    assert!(last.contains("Via: 1.1 msc-gateway"), "{last}");
}

/// Medium 7: an upload that takes longer than `timeouts.idle` while bytes
/// keep flowing upward is not idle (with and without `Expect: 100-continue`).
#[test]
fn slow_upload_longer_than_idle_completes() {
    let env = Env::new();
    let (_origin, origin) = env.origin();
    let (_gw, gw) = env.gateway_at("gateway", "127.0.0.1:0", "[timeouts]\nidle = \"1s\"\n");
    let cfg = env.client_toml(
        "client-run",
        gw,
        "client.pem",
        "client-key.pem",
        "[timeouts]\nidle = \"1s\"\n",
    );
    let (_client, proxy) = env.client_from("client", &cfg);
    let body = random_bytes(200 * 1024);
    let file = env.write("upload.bin", "");
    std::fs::write(&file, &body).unwrap();
    for expect in ["Expect:", "Expect: 100-continue"] {
        let t0 = Instant::now();
        let (code, out, err) = curl(&[
            "-sS",
            "-x",
            &proxy.to_string(),
            "--limit-rate",
            "80K",
            "-H",
            expect,
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("http://{origin}/sha256"),
        ]);
        assert!(
            t0.elapsed() > Duration::from_secs(2),
            "the upload took longer than idle"
        );
        assert_eq!(code, 0, "{expect}: {err}");
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(text.contains(&sha256_hex(&body)), "{expect}: {text}");
    }
}

/// Reads until the peer ends the stream; Ok(n) for a clean end, Err for a reset.
fn read_to_end_or_reset(s: &mut impl Read) -> std::io::Result<usize> {
    let mut total = 0;
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf)? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

/// Medium 8: a close-delimited response cut by the origin (a reset) reaches
/// the browser as a cut (a reset), never as a clean short end.
#[test]
fn origin_cut_of_close_delimited_response_is_visible() {
    let part = vec![b'x'; 300 * 1024];
    let c = raw_chain(
        move |head| {
            let mut r = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
            if request_path(head) == "/cut" {
                r.extend_from_slice(&part);
                Reply::SendThenReset(r)
            } else {
                r.extend_from_slice(b"whole");
                Reply::SendThenReset(r)
            }
        },
        "",
        "",
    );
    let mut s = tcp(c.proxy);
    s.write_all(format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", c.origin.url("/cut")).as_bytes())
        .unwrap();
    let res = read_to_end_or_reset(&mut s);
    assert!(res.is_err(), "the browser saw a clean end after {res:?} bytes");
    // curl reports the failure too.
    let (code, _, err) = curl(&[
        "-sS",
        "-x",
        &c.proxy.to_string(),
        "-o",
        "/dev/null",
        &c.origin.url("/cut"),
    ]);
    assert_ne!(code, 0, "curl saw a complete transfer: {err}");
    // The gateway's access log records what was actually sent.
    let log = c.gateway.wait_stderr("/cut");
    let line = log.lines().find(|l| l.contains("/cut ")).unwrap();
    let down: u64 = line.split_whitespace().nth(6).unwrap().parse().unwrap();
    assert!(down > 0, "{line}");
}

/// Medium 8: the gateway dies during a close-delimited response.
#[test]
fn gateway_death_during_close_delimited_response_is_visible() {
    let mut c = raw_chain(
        |_| {
            let mut r = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
            r.extend_from_slice(&[b'y'; 64 * 1024]);
            Reply::SendThenHold(r)
        },
        "",
        "",
    );
    let mut s = tcp(c.proxy);
    s.write_all(format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", c.origin.url("/hold")).as_bytes())
        .unwrap();
    // The response has started.
    let mut first = [0u8; 1024];
    s.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"HTTP/1.1 200"));
    c.gateway.child.kill().unwrap();
    let _ = c.gateway.child.wait();
    let res = read_to_end_or_reset(&mut s);
    assert!(res.is_err(), "the browser saw a clean end after {res:?} more bytes");
    let _ = &c.env;
}

/// Medium 9: a POST that reached the origin is never sent again, even when
/// the gateway dies before answering and another gateway is available.
#[test]
fn non_idempotent_request_is_not_retried_after_reaching_the_gateway() {
    let env = Env::new();
    let origin = RawOrigin::start(|head| {
        if head.starts_with("POST") {
            // Received, never answered.
            Reply::SendThenHold(Vec::new())
        } else {
            Reply::Send(ok_response(b"ok"))
        }
    });
    let (mut gw_a, a) = env.gateway_at("gw-a", "127.0.0.1:0", "");
    let (_gw_b, b) = env.gateway_at("gw-b", "127.0.0.1:0", "[probe]\ndelay = \"100ms\"\n");
    let cfg = env.multi_client_toml("client-run", &[("a", a), ("b", b)], "");
    let (client, proxy) = env.client_from("client", &cfg);
    let deadline = Instant::now() + WAIT;
    while status_json(&client)["selected"] != "a" {
        assert!(Instant::now() < deadline, "gateway a was never selected");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A GET first: its tunnel goes back to the pool, so the POST takes a
    // pooled tunnel (the case the old code retried).
    let (status, _, _) = exchange(
        proxy,
        format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", origin.url("/warm")).as_bytes(),
    );
    assert_eq!(status, 200);
    let _ = origin.next_request();
    let mut s = tcp(proxy);
    s.write_all(
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            origin.url("/once")
        )
        .as_bytes(),
    )
    .unwrap();
    let first = origin.next_request();
    assert!(first.starts_with("POST /once"), "{first}");
    gw_a.child.kill().unwrap();
    let _ = gw_a.child.wait();
    let (status, _, body) = read_response(&mut s);
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    // Give a retry every chance to arrive (bounded), then count.
    let again = origin.requests_within(Duration::from_secs(2));
    assert!(
        again.iter().all(|r| !r.starts_with("POST")),
        "the POST was sent twice: {again:#?}"
    );
}

/// Low: an empty line before a request line is skipped, not forwarded as
/// the request line.
#[test]
fn leading_empty_line_is_skipped() {
    let c = raw_chain(echo_path, "", "");
    let (status, _, body) = exchange(
        c.proxy,
        format!("\r\nGET {} HTTP/1.1\r\nHost: x\r\n\r\n", c.origin.url("/after-crlf")).as_bytes(),
    );
    assert_eq!((status, body.as_slice()), (200, b"/after-crlf".as_slice()));
    assert!(c.origin.next_request().starts_with("GET /after-crlf HTTP/1.1\r\n"));
}

/// Low: `Content-Length: 3, 3` goes on as one value; a browser request with
/// exactly 100 header fields is accepted although the client adds `Via`.
#[test]
fn length_lists_are_normalised_and_hundred_fields_pass() {
    let c = raw_chain(echo_path, "", "");
    let (status, _, _) = exchange(
        c.proxy,
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
            c.origin.url("/list")
        )
        .as_bytes(),
    );
    assert_eq!(status, 200);
    let got = c.origin.next_request();
    assert!(
        got.contains("\r\nContent-Length: 3\r\n") && !got.contains("3, 3"),
        "{got}"
    );
    let fields: String = (0..99).map(|i| format!("X-F{i}: v\r\n")).collect();
    let (status, head, _) = exchange(
        c.proxy,
        format!("GET {} HTTP/1.1\r\nHost: x\r\n{fields}\r\n", c.origin.url("/hundred")).as_bytes(),
    );
    assert_eq!(status, 200, "{head}");
}

/// A client config for one gateway with fast probes.
fn fast_client(env: &Env, name: &str, gw: SocketAddr, server_name: &str, extra: &str) -> std::path::PathBuf {
    env.write(
        &format!("{name}.toml"),
        &format!(
            "workers = 2\n[tls]\nca = \"ca.pem\"\ncert = \"client.pem\"\nkey = \"client-key.pem\"\n\
             [selection]\nprobe_interval = \"300ms\"\nkeepalive_interval = \"200ms\"\nevaluate_interval = \"200ms\"\n\
             {extra}\n[[servers]]\nname = \"gw1\"\naddress = \"{gw}\"\nserver_name = \"{server_name}\"\n\
             http_port = 0\nhttps_port = 0\n[control]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
}

/// Medium 4: a gateway whose certificate fails verification (another CA,
/// or the wrong name) looks exactly like a man in the middle. Requests are
/// refused, never relayed DIRECT, although `fail_open` is on; the status
/// says why.
#[test]
fn untrusted_gateway_never_leads_to_direct() {
    let env = Env::new();
    let other = Env::new();
    let origin = RawOrigin::start(echo_path);
    let (_foreign, foreign) = other.gateway_at("gw-foreign", "127.0.0.1:0", "");
    let (_ours, ours) = env.gateway_at("gw-ours", "127.0.0.1:0", "");
    for (case, addr, server_name) in [
        ("foreign-ca", foreign, "localhost"),
        ("wrong-name", ours, "wrong.example"),
    ] {
        let cfg = fast_client(&env, case, addr, server_name, "");
        let (client, proxy) = env.client_from(case, &cfg);
        let deadline = Instant::now() + WAIT;
        loop {
            let (code, out, err) = curl(&["-x", &proxy.to_string(), "-w", "\n%{http_code}", &origin.url("/x")]);
            let text = String::from_utf8_lossy(&out).into_owned();
            let status = text.lines().last().unwrap_or("").to_string();
            assert!(code == 0, "{case}: {err}");
            assert_ne!(status, "200", "{case}: a request went through: {text}");
            if status_json(&client)["traffic"] == "refused:untrusted" {
                break;
            }
            assert!(Instant::now() < deadline, "{case}: never judged untrusted: {text}");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Several more probe rounds: still refused, never DIRECT.
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(300));
            let (code, out, _) = curl(&["-x", &proxy.to_string(), "-w", "\n%{http_code}", &origin.url("/x")]);
            let text = String::from_utf8_lossy(&out).into_owned();
            assert_eq!(code, 0);
            assert!(text.ends_with("503"), "{case}: {text}");
            assert!(text.contains("not sent directly"), "{case}: {text}");
        }
        let st = status_json(&client);
        assert_eq!(st["direct"]["fail_open"], 0, "{case}: {st:#}");
        assert!(
            st["direct"]["refused_untrusted"].as_u64().unwrap() > 0,
            "{case}: {st:#}"
        );
        assert!(st["error"].as_str().unwrap().contains("certificate"), "{case}: {st:#}");
        assert!(client.stderr().contains("could not be authenticated"), "{case}");
    }
    assert!(origin.received().is_empty(), "a request reached the origin");
}

/// Medium 5: this machine running out of descriptors (a local user holding
/// connections) is not a gateway failure: the client neither fails open
/// nor stays off its gateway after the user leaves.
#[test]
fn local_descriptor_exhaustion_is_not_a_gateway_failure() {
    let env = Env::new();
    let origin = RawOrigin::start(echo_path);
    let (_gw, gw) = env.gateway_at("gateway", "127.0.0.1:0", "");
    let cfg = fast_client(&env, "client-fd", gw, "localhost", "[pool]\nidle = 1\n");
    let client = Proc::start_wrapped(
        &["prlimit", "--nofile=48:48", "--"],
        &["run", "--config", cfg.to_str().unwrap()],
        env.dir.path(),
        "client-fd",
    );
    let proxy = client.addr_after("slot 1 http ");
    let (status, _, _) = exchange(
        proxy,
        format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", origin.url("/before")).as_bytes(),
    );
    assert_eq!(status, 200);
    // A local user holds more connections than the client may have files.
    let held: Vec<std::net::TcpStream> = (0..80).map(|_| tcp(proxy)).collect();
    client.wait_stderr("Too many open files");
    // Several probe rounds while exhausted.
    std::thread::sleep(Duration::from_secs(2));
    drop(held);
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, out, _) = curl(&["-x", &proxy.to_string(), &origin.url("/after")]);
        if code == 0 && out == b"/after" {
            break;
        }
        assert!(Instant::now() < deadline, "the client did not recover");
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = status_json(&client);
    assert_eq!(st["traffic"], "gateway", "{st:#}");
    assert_eq!(st["selected"], "gw1", "{st:#}");
    assert_eq!(st["direct"]["fail_open"], 0, "{st:#}");
    assert!(
        !client.stderr().contains("probe of gateway gw1 failed"),
        "{}",
        client.stderr()
    );
}

/// Runs `msc run` to its exit (bounded); returns (status, stderr).
fn run_to_exit(env: &Env, cfg: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new("timeout")
        .args(["20", MSC, "run", "--config", cfg.to_str().unwrap()])
        .current_dir(env.dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Medium 10: a port msc needs, held by another user before msc starts,
/// stops the start with exit status 3 and names the holder; held by the
/// same user, exit status 2.
#[test]
fn squatted_ports_stop_the_start_loudly() {
    let env = Env::new();
    // The squatter: a listener owned by `nobody` (perl is essential on
    // Debian and readable by every uid, unlike a build tree may be).
    let mut squatter = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "perl",
            "-MIO::Socket::INET",
            "-e",
        ])
        .arg(
            "$s = IO::Socket::INET->new(LocalAddr => '127.0.0.1:0', Listen => 5) or die $!; \
             $| = 1; print $s->sockport(), \"\\n\"; sleep 60;",
        )
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(squatter.stdout.take().unwrap()), &mut line).unwrap();
    let port: u16 = line.trim().parse().expect("the squatter's port");
    let base = |control: &str, http: &str| {
        format!(
            "[tls]\nca = \"ca.pem\"\ncert = \"client.pem\"\nkey = \"client-key.pem\"\n[[servers]]\nname = \"gw1\"\n\
             address = \"127.0.0.1:9\"\nserver_name = \"localhost\"\nhttp_port = {http}\nhttps_port = 0\n\
             [control]\nlisten = \"{control}\"\n"
        )
    };
    let control = env.write("squat-control.toml", &base(&format!("127.0.0.1:{port}"), "0"));
    let (code, err) = run_to_exit(&env, &control);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("control.listen") && err.contains("uid 65534"), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "printed once: {err}");
    let slot = env.write("squat-slot.toml", &base("127.0.0.1:0", &port.to_string()));
    let (code, err) = run_to_exit(&env, &slot);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("servers[0].http_port") && err.contains("uid 65534"),
        "{err}"
    );
    let _ = squatter.kill();
    let _ = squatter.wait();
    // Held by this same user: exit status 2, "another msc?".
    let mine = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = env.write("mine.toml", &base(&mine.local_addr().unwrap().to_string(), "0"));
    let (code, err) = run_to_exit(&env, &cfg);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("another msc"), "{err}");
}

/// Medium 10: the PAC is never sniffed, and web pages cannot load it.
#[test]
fn pac_refuses_web_pages() {
    let c = Chain::start();
    let ctl = c.client.control_addr();
    let get = |extra: &str| {
        exchange(
            ctl,
            format!("GET /proxy.pac HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n").as_bytes(),
        )
    };
    let (status, head, _) = get("");
    assert_eq!(status, 200);
    assert!(head.contains("X-Content-Type-Options: nosniff\r\n"), "{head}");
    for bad in [
        "Sec-Fetch-Site: cross-site\r\n",
        "Sec-Fetch-Dest: script\r\nSec-Fetch-Site: same-site\r\n",
    ] {
        let (status, _, body) = get(bad);
        assert_eq!(status, 403, "{bad}: {}", String::from_utf8_lossy(&body));
    }
    // The browser's own PAC fetch and same-origin navigation still work.
    let (status, _, _) = get("Sec-Fetch-Site: none\r\nSec-Fetch-Dest: document\r\n");
    assert_eq!(status, 200);
}

/// Privacy: by default the client logs no URL that went through a gateway
/// (the gateway's access log is the record), only what went DIRECT, with
/// the reason; `log.requests = "all"` logs everything.
#[test]
fn client_logs_only_direct_requests_by_default() {
    let env = Env::new();
    let origin = RawOrigin::start(echo_path);
    let (_gw, gw) = env.gateway_at("gateway", "127.0.0.1:0", "");
    for (name, extra, logs_gateway_requests) in [("default", "", false), ("all", "[log]\nrequests = \"all\"\n", true)] {
        let cfg = env.client_toml(name, gw, "client.pem", "client-key.pem", extra);
        let (client, proxy) = env.client_from(name, &cfg);
        let url = origin.url(&format!("/private-{name}"));
        let (code, out, err) = curl(&["-x", &proxy.to_string(), &url]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, format!("/private-{name}").as_bytes());
        // The gateway recorded it either way.
        let _ = _gw.wait_stderr(&url);
        if logs_gateway_requests {
            client.wait_stderr(&url);
        } else {
            // Give a line every chance to appear (bounded), then check.
            std::thread::sleep(Duration::from_millis(300));
            assert!(!client.stderr().contains("private"), "{}", client.stderr());
        }
    }
    // DIRECT requests are logged with their reason: a client whose only
    // gateway is unreachable, failing open.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let cfg = fast_client(&env, "direct", dead_addr, "localhost", "");
    let (client, proxy) = env.client_from("direct", &cfg);
    let url = origin.url("/went-direct");
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, out, _) = curl(&["-x", &proxy.to_string(), &url]);
        if code == 0 && out == b"/went-direct" {
            break;
        }
        assert!(Instant::now() < deadline, "never failed open");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = client.wait_stderr("direct:fail-open");
    assert!(
        log.lines()
            .any(|l| l.contains("/went-direct") && l.contains("direct:fail-open")),
        "{log}"
    );
}
