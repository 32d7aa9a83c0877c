//! Forwarding to origins: the HTTP/1.1 forward-proxy loop shared by the
//! gateway (behind mutual TLS) and the client's direct mode (on premise, or
//! fail-open when no gateway is available).
//!
//! Per request: read and check the head, apply the deny policy, then either
//! open a CONNECT tunnel or forward an absolute-form request in origin-form,
//! keeping both the requester's connection and the origin connection alive
//! when the framing allows.

pub mod access;
pub mod egress;
pub mod error;
pub mod http;
pub mod policy;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use monoio::net::TcpStream;
use msc_io::framing::{BodyLen, BodyTracker, ResponseKind, request_body, response_kind};
use msc_io::head::{Form, Limits, Method, RequestHead};
use msc_io::resolve::{Resolver, connect_any};
use msc_io::stream::{
    BodyError, HeadReadError, PlainReader, PlainWriter, RelayState, Sink, Source, forward_body, read_request_head,
    read_response_head, relay,
};

use crate::forward::access::{AccessLog, Record};
use crate::forward::egress::Egress;
use crate::forward::error::{ProxyError, Retry, Side};
use crate::forward::http::{block_page, copy_end_to_end, error_reply, origin_request, write_upgrade};
use crate::forward::policy::{DenyList, normalize_host};
use crate::upstream::FailureKind;

/// Body bytes that arrived with a response head and are sent with it (copied
/// into the head's buffer) rather than in a second write.
const COALESCE_MAX: usize = 16 * 1024;

/// Path of the probe endpoint the client's control plane measures.
pub const PROBE_PATH: &str = "/.well-known/msc/probe";

/// Time limits of the proxy loop.
#[derive(Clone, Copy, Debug)]
pub struct ProxyTimeouts {
    pub head: Duration,
    pub idle: Duration,
    pub connect: Duration,
}

/// What a proxy front is and does (shared by all workers, immutable).
#[derive(Debug)]
pub struct ProxySettings {
    /// Names the answering component in error replies (`msc-gateway`).
    pub who: &'static str,
    /// The `Via` value added to forwarded requests (`1.1 msc-gateway`).
    pub via: &'static str,
    pub deny: DenyList,
    /// Which resolved addresses and CONNECT ports may be reached: set by the
    /// gateway only (the client's direct relay reaches the intranet on purpose).
    pub egress: Option<Egress>,
    pub timeouts: ProxyTimeouts,
    pub log: AccessLog,
    /// Answer the probe endpoint (gateways only).
    pub probe: bool,
    /// Wait this long before answering a probe (simulates distance).
    pub probe_delay: Option<Duration>,
    /// Added to every access-log line (e.g. the client's `direct:on-premise`).
    pub route: Option<Arc<str>>,
    /// What request heads must fit in: [`Limits::RELAYED`] behind the msc
    /// client (which adds `Via`), [`Limits::PEER`] facing a browser.
    pub request_limits: Limits,
    /// Documents served to the gateway's own clients (gateways only; see
    /// [`crate::gateway::docs`]).
    pub docs: Option<Arc<crate::gateway::docs::Docs>>,
}

/// How a proxied connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Close normally (FIN, or close_notify over TLS).
    Clean,
    /// A response was cut after part of it went out: reset the connection so
    /// the requester sees a cut transfer, never a clean (short) end.
    Abort,
}

/// One worker's proxy: shared settings plus this worker's resolver cache.
#[derive(Debug)]
pub struct Proxy {
    settings: Arc<ProxySettings>,
    resolver: Resolver,
}

impl Proxy {
    pub fn new(settings: Arc<ProxySettings>) -> Proxy {
        Proxy {
            settings,
            resolver: Resolver::new(),
        }
    }

    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }
}

/// An origin connection kept for the next request on the same tunnel.
struct Origin {
    host: String,
    port: u16,
    r: PlainReader,
    w: PlainWriter,
}

/// How one request ended, for the log and for the connection's fate.
struct Outcome {
    status: u16,
    up: u64,
    down: u64,
    keep_alive: bool,
    /// The response was cut midway: reset the requester's connection.
    abort: bool,
}

impl Outcome {
    fn reply(status: u16, bytes: usize, keep_alive: bool) -> Outcome {
        Outcome {
            status,
            up: 0,
            down: bytes as u64,
            keep_alive,
            abort: false,
        }
    }

    fn ended(&self) -> Option<Ended> {
        match (self.abort, self.keep_alive) {
            (true, _) => Some(Ended::Abort),
            (false, false) => Some(Ended::Clean),
            (false, true) => None,
        }
    }
}

/// The requesting side of a proxy connection.
#[derive(Debug)]
pub struct Peer<R, W> {
    pub r: R,
    pub w: W,
    /// Who is asking, for the access log.
    pub user: Arc<str>,
}

impl Proxy {
    /// Serves proxy requests from `c` until it closes or a request ends the
    /// connection. `first`: a head already read from `c.r` (still unconsumed).
    pub async fn serve<R: Source, W: Sink>(&self, c: &mut Peer<R, W>, first: Option<RequestHead>) -> Ended {
        let t = self.settings.timeouts;
        let mut first = first;
        // Kept between requests: the origin connection for the next request
        // to the same host.
        let mut origin: Option<Origin> = None;
        let stop = msc_io::worker::stopping();
        loop {
            if first.is_none() {
                // Between requests this future only waits for a first byte,
                // holding no buffer; the request itself runs boxed below, so
                // an idle connection costs little.
                let idle = msc_io::deadline::sleep(t.idle);
                let ready = monoio::select! {
                    r = c.r.ready() => r,
                    _ = idle => return Ended::Clean,
                    _ = stop.wait() => return Ended::Clean,
                };
                // The first bytes (or the close: a closing connection then
                // costs no request state) before the request's future is built.
                if ready.is_err() || !msc_io::stream::fill_first(&mut c.r).await {
                    return Ended::Clean;
                }
            }
            let request = Box::pin(self.request(c, first.take(), &mut origin));
            if let Some(end) = request.await {
                return end;
            }
        }
    }

    /// Serves one request from `c` (`first`: its head, already read and
    /// still unconsumed; `None`: read it), keeping no origin connection for
    /// a next one. Returns how the connection ends, or `None` if it may carry
    /// another request, which the caller then routes afresh (the client's
    /// fail-open relay: each request is judged, counted and logged on its own).
    pub async fn serve_one<R: Source, W: Sink>(&self, c: &mut Peer<R, W>, first: Option<RequestHead>) -> Option<Ended> {
        let mut origin = None;
        Box::pin(self.request(c, first, &mut origin)).await
    }

    /// Reads (unless given) and handles one request. Returns how the
    /// connection ends, or `None` if it may carry another request.
    async fn request<R: Source, W: Sink>(
        &self,
        c: &mut Peer<R, W>,
        first: Option<RequestHead>,
        origin: &mut Option<Origin>,
    ) -> Option<Ended> {
        let t = self.settings.timeouts;
        let next = match first {
            Some(h) => Ok(Some(h)),
            None => read_request_head(&mut c.r, t.head, t.head, self.settings.request_limits).await,
        };
        let head = match next {
            Ok(Some(h)) => h,
            Ok(None) => return Some(Ended::Clean),
            Err(e) => {
                if let Some(e) = ProxyError::request_head(&e, t.head) {
                    let r = error_reply(e.status, self.settings.who, &e.reason, true);
                    let _ = c.w.write_bytes(&r).await;
                    self.log(c, "-", "-", &Outcome::reply(e.status, r.len(), false), Instant::now());
                }
                return Some(Ended::Clean);
            }
        };
        let start = Instant::now();
        let data = c.r.data();
        // Probes are frequent and uninteresting in the access log.
        let logged =
            self.settings.log.enabled() && !(head.form == Form::Origin && head.path.get(data) == PROBE_PATH.as_bytes());
        let line = logged.then(|| (head.method_span.str(data).to_owned(), head.target.str(data).to_owned()));
        let outcome = self.handle(c, head, origin).await;
        if let Some((method, target)) = line {
            self.log(c, &method, &target, &outcome, start);
        }
        outcome.ended()
    }

    async fn handle<R: Source, W: Sink>(
        &self,
        c: &mut Peer<R, W>,
        head: RequestHead,
        origin: &mut Option<Origin>,
    ) -> Outcome {
        match head.form {
            Form::Origin | Form::Asterisk => self.own_endpoint(c, &head).await,
            Form::Authority | Form::Absolute => {
                let host = normalize_host(head.host(c.r.data()));
                if let Some(rule) = self.settings.deny.matches(&host) {
                    self.blocked(c, &head, &host, rule).await
                } else if head.method == Method::Connect {
                    // Boxed: rare next to plain requests, and its relay is
                    // large; every request's future stays small.
                    Box::pin(self.tunnel(c, &head, host)).await
                } else {
                    self.forward(c, head, host, origin).await
                }
            }
        }
    }

    fn log<R: Source, W: Sink>(&self, c: &Peer<R, W>, method: &str, target: &str, o: &Outcome, start: Instant) {
        self.settings.log.log(Record {
            at: SystemTime::now(),
            user: c.user.clone(),
            method: method.to_owned(),
            target: target.to_owned(),
            status: o.status,
            up: o.up,
            down: o.down,
            duration: start.elapsed(),
            route: self.settings.route.clone(),
        });
    }

    /// Requests addressed to the gateway itself (origin-form): only the probe.
    async fn own_endpoint<R: Source, W: Sink>(&self, c: &mut Peer<R, W>, head: &RequestHead) -> Outcome {
        let data = c.r.data();
        let has_body = !matches!(request_body(head, data), Ok(BodyLen::Empty));
        let path = head.path.str(data);
        if let Some(docs) = &self.settings.docs
            && head.form == Form::Origin
            && path.starts_with(crate::gateway::docs::DOCS_PREFIX)
            && path != PROBE_PATH
            && !has_body
            && (head.method == Method::Get || head.method == Method::Head)
        {
            let inm = head
                .headers
                .values(data, "if-none-match")
                .next()
                .map(|v| String::from_utf8_lossy(v).into_owned());
            let is_head = head.method == Method::Head;
            let keep = !head.wants_close(data);
            // A provider may stat, read and hash a file (a release is tens of
            // MB): on the blocking pool, never on this worker's thread.
            let (docs, path, user) = (docs.clone(), path.to_owned(), c.user.clone());
            c.r.consume(head.len);
            let answer = monoio::spawn_blocking(move || docs.get(&path, &user))
                .await
                .unwrap_or_else(|_| {
                    Err(crate::gateway::docs::Refused {
                        status: 503,
                        reason: "the document could not be read on this gateway".into(),
                    })
                });
            return self.document(c, answer, inm.as_deref(), is_head, keep).await;
        }
        let reply = if self.settings.probe && head.form == Form::Origin && path == PROBE_PATH && !has_body {
            if head.method == Method::Get || head.method == Method::Head {
                if let Some(d) = self.settings.probe_delay {
                    monoio::time::sleep(d).await;
                }
                (204, None)
            } else {
                (405, Some("the probe endpoint answers GET and HEAD only"))
            }
        } else {
            (
                400,
                Some("this is a proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port"),
            )
        };
        let keep = !has_body && !head.wants_close(data);
        c.r.consume(head.len);
        let bytes = match reply {
            (204, _) => {
                let b: &[u8] = if keep {
                    b"HTTP/1.1 204 No Content\r\nCache-Control: no-store\r\n\r\n"
                } else {
                    b"HTTP/1.1 204 No Content\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
                };
                b.to_vec()
            }
            (s, reason) => error_reply(s, self.settings.who, reason.unwrap_or(""), !keep),
        };
        let ok = c.w.write_bytes(&bytes).await.is_ok();
        Outcome::reply(reply.0, bytes.len(), keep && ok)
    }

    /// Answers a gateway document request (head already consumed).
    async fn document<R: Source, W: Sink>(
        &self,
        c: &mut Peer<R, W>,
        answer: Result<crate::gateway::docs::Doc, crate::gateway::docs::Refused>,
        if_none_match: Option<&str>,
        is_head: bool,
        keep: bool,
    ) -> Outcome {
        use crate::gateway::docs;
        match answer {
            Err(r) => {
                let bytes = error_reply(r.status, self.settings.who, &r.reason, !keep);
                let ok = c.w.write_bytes(&bytes).await.is_ok();
                Outcome::reply(r.status, bytes.len(), keep && ok)
            }
            Ok(doc) => {
                let not_modified = if_none_match.is_some_and(|v| docs::none_match(v, &doc.etag));
                let head = docs::head(&doc, not_modified, !keep);
                let mut ok = c.w.write_bytes(&head).await.is_ok();
                let mut sent = head.len();
                if ok && !not_modified && !is_head {
                    ok = c.w.write_bytes(&doc.body).await.is_ok();
                    sent += doc.body.len();
                }
                Outcome::reply(if not_modified { 304 } else { 200 }, sent, keep && ok)
            }
        }
    }

    async fn blocked<R: Source, W: Sink>(
        &self,
        c: &mut Peer<R, W>,
        head: &RequestHead,
        host: &str,
        rule: &str,
    ) -> Outcome {
        let data = c.r.data();
        // A request body we will not forward cannot be skipped reliably; close instead.
        let keep = head.method != Method::Connect
            && matches!(request_body(head, data), Ok(BodyLen::Empty))
            && !head.wants_close(data);
        c.r.consume(head.len);
        let page = block_page(host, rule, !keep);
        let ok = c.w.write_bytes(&page).await.is_ok();
        tracing::info!("blocked {host} for {} by rule {rule}", c.user);
        Outcome::reply(403, page.len(), keep && ok)
    }

    async fn fail<R: Source, W: Sink>(&self, c: &mut Peer<R, W>, e: &ProxyError, keep: bool) -> Outcome {
        let r = error_reply(e.status, self.settings.who, &e.reason, !keep);
        let ok = c.w.write_bytes(&r).await.is_ok();
        Outcome::reply(e.status, r.len(), keep && ok)
    }

    async fn dial(&self, host: &str, port: u16) -> Result<TcpStream, ProxyError> {
        let t = self.settings.timeouts;
        let mut addrs = self.resolver.resolve(host, port).await.map_err(|e| {
            ProxyError::new(
                Side::Upstream,
                502,
                "resolve_failed",
                format!("cannot resolve {host}: {e}"),
            )
        })?;
        // On the addresses about to be dialled (no second lookup), before any
        // attempt: an open and a closed port answer alike.
        crate::forward::egress::admit(&self.settings.deny, self.settings.egress.as_ref(), host, &mut addrs).map_err(
            |r| {
                tracing::info!("refused {host}:{port}: {r:?}");
                ProxyError::new(Side::Requester, 403, "egress_refused", r.to_string())
            },
        )?;
        connect_any(&addrs, t.connect).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                let reason = format!(
                    "origin {host}:{port} did not accept within {}",
                    humantime::format_duration(t.connect)
                );
                ProxyError::new(Side::Upstream, 504, "connect_timeout", reason).retry(Retry::Safe)
            } else {
                let reason = format!("cannot connect to {host}:{port}: {e}");
                ProxyError::upstream_io(&e, "connect_failed", reason).retry(Retry::Safe)
            }
        })
    }

    /// CONNECT: a TCP tunnel to the target.
    async fn tunnel<R: Source, W: Sink>(&self, c: &mut Peer<R, W>, head: &RequestHead, host: String) -> Outcome {
        let port = head.port;
        c.r.consume(head.len);
        if let Some(e) = &self.settings.egress
            && !e.connect_port_allowed(port)
        {
            let e = ProxyError::new(Side::Requester, 403, "egress_refused", e.port_refusal(port));
            return self.fail(c, &e, true).await;
        }
        let tcp = match self.dial(&host, port).await {
            Ok(s) => s,
            Err(e) => return self.fail(c, &e, true).await,
        };
        if c.w
            .write_bytes(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .is_err()
        {
            return Outcome::reply(200, 0, false);
        }
        let (mut or, mut ow) = msc_io::stream::split(tcp);
        let (up, down) = relay(&mut c.r, &mut c.w, &mut or, &mut ow, self.settings.timeouts.idle).await;
        let failed = up.result.as_ref().and(down.result.as_ref()).err();
        if let Some(e) = failed {
            tracing::debug!("tunnel to {host}:{port} ended: {e}");
        }
        Outcome {
            status: 200,
            up: up.bytes,
            down: down.bytes,
            keep_alive: false,
            // A tunnel cut by either side is passed on as a cut.
            abort: failed.is_some(),
        }
    }

    /// Absolute-form request: forward in origin-form, keep both sides alive
    /// when framing allows.
    async fn forward<R: Source, W: Sink>(
        &self,
        c: &mut Peer<R, W>,
        head: RequestHead,
        host: String,
        origin: &mut Option<Origin>,
    ) -> Outcome {
        let data = c.r.data();
        let body = match request_body(&head, data) {
            Ok(b) => b,
            Err(e) => {
                c.r.consume(head.len);
                let e = ProxyError::new(Side::Requester, 400, "request_body_framing", e.reason());
                return self.fail(c, &e, false).await;
            }
        };
        let client_close = head.wants_close(data) || head.minor_version == 0;
        let upgrade = head.headers.has_token(data, "connection", "upgrade")
            && head.headers.values(data, "upgrade").next().is_some();
        let mut out = Vec::with_capacity(head.len + 64);
        origin_request(&head, data, upgrade, self.settings.via, &mut out);
        let port = head.port;
        let method = head.method;
        c.r.consume(head.len);

        // An idle origin connection is reused only for the same host and if
        // the origin has not closed it meanwhile.
        let mut reused = false;
        let mut conn = match origin.take() {
            Some(o) if o.host == host && o.port == port && !o.r.is_stale() => {
                reused = true;
                o
            }
            _ => match Box::pin(self.dial(&host, port)).await {
                Ok(s) => {
                    let (r, w) = msc_io::stream::split(s);
                    Origin { host, port, r, w }
                }
                Err(e) => return self.fail(c, &e, body == BodyLen::Empty && !client_close).await,
            },
        };
        if let Err(e) = conn.w.write_bytes(&out).await {
            if !reused {
                let e = ProxyError::upstream_io(&e, "send_failed", format!("cannot send to origin: {e}"));
                return self.fail(c, &e, false).await;
            }
            // The kept connection died: one fresh attempt.
            match Box::pin(self.dial(&conn.host, port)).await {
                Ok(s) => {
                    let (r, w) = msc_io::stream::split(s);
                    conn = Origin {
                        host: conn.host,
                        port,
                        r,
                        w,
                    };
                    reused = false;
                    if let Err(e) = conn.w.write_bytes(&out).await {
                        let e = ProxyError::upstream_io(&e, "send_failed", format!("cannot send to origin: {e}"));
                        return self.fail(c, &e, false).await;
                    }
                }
                Err(e) => return self.fail(c, &e, false).await,
            }
        }
        let _ = reused;

        let state = RelayState::new(self.settings.timeouts.idle);
        let mut tracker = BodyTracker::new(body);
        let (up, down) = monoio::join!(
            forward_body(&mut c.r, &mut conn.w, &mut tracker, &state),
            relay_response(
                &mut conn.r,
                &mut c.w,
                method,
                client_close,
                self.settings.timeouts,
                &state,
                "origin",
                Limits::PEER,
            )
        );
        let resp = match down {
            Ok(r) => r,
            Err(e) if !e.is_cut() => {
                // A broken request body is the requester's fault: say so.
                if let Err(BodyError::Framing(b)) = &up {
                    let e = ProxyError::new(Side::Requester, 400, "request_body_framing", b.reason());
                    return self.fail(c, &e, false).await;
                }
                return self.fail(c, &e, false).await;
            }
            Err(e) => {
                tracing::debug!("response from {}:{port} failed midway: {}", conn.host, e.reason);
                return Outcome {
                    status: e.status,
                    up: up.as_ref().map_or(0, |n| *n),
                    down: e.sent,
                    keep_alive: false,
                    abort: true,
                };
            }
        };
        let (up_bytes, up_ok) = match up {
            Ok(n) => (n, true),
            Err(BodyError::Framing(e)) => {
                tracing::debug!("request body from {} refused: {e}", c.user);
                (0, false)
            }
            Err(BodyError::Io(_)) => (0, false),
        };
        if resp.upgraded && up_ok {
            let (u, d) = relay(
                &mut c.r,
                &mut c.w,
                &mut conn.r,
                &mut conn.w,
                self.settings.timeouts.idle,
            )
            .await;
            return Outcome {
                status: resp.status,
                up: up_bytes + u.bytes,
                down: resp.bytes + d.bytes,
                keep_alive: false,
                abort: u.result.is_err() || d.result.is_err(),
            };
        }
        let keep = resp.client_keep_alive && up_ok;
        if resp.origin_reusable && up_ok {
            *origin = Some(conn);
        }
        Outcome {
            status: resp.status,
            up: up_bytes,
            down: resp.bytes,
            keep_alive: keep,
            abort: false,
        }
    }
}

pub(crate) struct Response {
    pub status: u16,
    /// Bytes sent to the requester (heads included).
    pub bytes: u64,
    /// The requester's connection may carry another request.
    pub client_keep_alive: bool,
    /// The upstream connection may carry another request.
    pub origin_reusable: bool,
    /// The connection became a tunnel (101, or 2xx to CONNECT).
    pub upgraded: bool,
}

/// Upper bound on the wait for a response head inside a relay: the relay's
/// own idle rule (no byte in either direction for `idle`) is what ends a
/// silent exchange, so an upload longer than `idle` is never cut.
const HEAD_WAIT_CAP: Duration = Duration::from_secs(7 * 24 * 3600);

/// Reads the origin's response (interim ones included) and relays it to the
/// client with hop-by-hop fields replaced. `limits`: what the upstream's
/// heads must fit in ([`Limits::PEER`] for an origin, [`Limits::RELAYED`]
/// for a gateway, which may add a field to what an origin sent).
#[allow(
    clippy::too_many_arguments,
    reason = "one call site per side; a struct would only rename them"
)]
pub(crate) async fn relay_response<U: Source, K: Sink>(
    or: &mut U,
    cw: &mut K,
    method: Method,
    client_close: bool,
    t: ProxyTimeouts,
    state: &RelayState,
    upstream: &str,
    limits: Limits,
) -> Result<Response, ProxyError> {
    let mut sent = 0u64;
    // An upstream that broke HTTP framing: answered 502 if nothing went out yet.
    let malformed = |sent: u64, e: msc_io::FramingError| {
        state.fail();
        ProxyError::new(
            Side::Upstream,
            502,
            "upstream_malformed",
            format!("invalid response from {upstream}: {}", e.reason()),
        )
        .fault(Some(FailureKind::Broken))
        .retry(Retry::IfIdempotent)
        .after(sent)
    };
    // Writing to the requester failed: it went away (or reset) mid-reply.
    let requester_gone = |status: u16, sent: u64, e: std::io::Error| {
        ProxyError::new(Side::Requester, status, "requester_gone", e.to_string()).after(sent)
    };
    // The request was just sent: its answer is coming.
    or.expect_data();
    loop {
        let read = state.guard(async { Ok(read_response_head(or, HEAD_WAIT_CAP, limits).await) });
        let head = match read.await {
            Ok(Ok(Some(h))) => h,
            Ok(Ok(None)) => {
                state.fail();
                return Err(ProxyError::closed_without_response(upstream).after(sent));
            }
            Ok(Err(e)) => {
                state.fail();
                return Err(ProxyError::response_head(e, upstream, t.idle).after(sent));
            }
            // The relay's idle rule: nothing moved either way for `idle`.
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                state.fail();
                return Err(ProxyError::response_head(HeadReadError::Timeout, upstream, t.idle).after(sent));
            }
            // The other direction failed (the request body could not be sent).
            Err(e) => {
                state.fail();
                let reason = format!("{upstream}: {e}");
                let e = ProxyError::upstream_io(&e, "upstream_io", reason).retry(Retry::IfIdempotent);
                return Err(e.after(sent));
            }
        };
        let data = or.data();
        let kind = match response_kind(&head, data, method) {
            Ok(k) => k,
            Err(e) => return Err(malformed(sent, e)),
        };
        let mut out = Vec::with_capacity(head.len + 32);
        // Status line with our version; keep the origin's code and phrase.
        let line_end = data.iter().position(|&b| b == b'\n').unwrap_or(0);
        let status_text = data.get(9..line_end).unwrap_or(b"").strip_suffix(b"\r").unwrap_or(b"");
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status_text);
        out.extend_from_slice(b"\r\n");
        copy_end_to_end(&head.headers, data, false, &[], &mut out);
        let origin_close = head.wants_close(data) || head.minor_version == 0;
        let head_len = head.len;
        match kind {
            ResponseKind::Interim => {
                out.extend_from_slice(b"\r\n");
                or.consume(head_len);
                state
                    .guard(cw.write_bytes(&out))
                    .await
                    .map_err(|e| requester_gone(502, sent, e))?;
                sent += out.len() as u64;
            }
            ResponseKind::Upgrade => {
                write_upgrade(&head.headers, data, &mut out);
                out.extend_from_slice(b"\r\n");
                or.consume(head_len);
                state
                    .guard(cw.write_bytes(&out))
                    .await
                    .map_err(|e| requester_gone(502, sent, e))?;
                return Ok(Response {
                    status: head.status,
                    bytes: sent + out.len() as u64,
                    client_keep_alive: false,
                    origin_reusable: false,
                    upgraded: true,
                });
            }
            ResponseKind::Final(len) => {
                let keep = !client_close && len != BodyLen::UntilClose;
                if !keep {
                    out.extend_from_slice(b"Connection: close\r\n");
                }
                out.extend_from_slice(b"\r\n");
                // A small body that arrived with the head goes out in the same
                // write: one send (one TLS record) instead of two. Checked
                // before anything is sent: a bad start of a body is then
                // answered with a 502 of our own rather than a cut.
                let mut tracker = BodyTracker::new(len);
                let mut early = 0;
                if data.len() - head_len <= COALESCE_MAX && !tracker.until_close() {
                    match tracker.advance(&data[head_len..]) {
                        Ok(n) => {
                            out.extend_from_slice(&data[head_len..head_len + n]);
                            early = n;
                        }
                        Err(e) => return Err(malformed(sent, e)),
                    }
                }
                or.consume(head_len + early);
                state
                    .guard(cw.write_bytes(&out))
                    .await
                    .map_err(|e| requester_gone(head.status, sent, e))?;
                sent += out.len() as u64;
                let n = forward_body(or, cw, &mut tracker, state).await.map_err(|e| {
                    // Cut mid-body: whichever side broke it, the reply is cut.
                    ProxyError::new(Side::Upstream, head.status, "cut", e.to_string()).after(sent)
                })?;
                return Ok(Response {
                    status: head.status,
                    bytes: sent + n,
                    client_keep_alive: keep,
                    origin_reusable: !origin_close && len != BodyLen::UntilClose,
                    upgraded: false,
                });
            }
        }
    }
}
