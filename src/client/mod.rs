//! The client's data path (`msc run`): a loopback forward proxy whose
//! requests travel through mutual-TLS tunnels to a gateway.
//!
//! Per browser connection, per request: read and check the head, take a
//! ready tunnel from the worker's pool (or open one, failing over across the
//! slot's gateways), send the head on (hop-by-hop fields removed, `Via`
//! added), then relay the body and the response with HTTP framing tracked
//! both ways. When the response completes, the tunnel goes back to the pool
//! for any browser connection's next request; `CONNECT` and upgrades turn the
//! connection into a plain tunnel that is not reused.

pub mod generation;
pub mod pool;
pub mod replay;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use msc_io::framing::{BodyLen, BodyTracker, request_body};
use msc_io::head::{Form, Limits, Method, RequestHead};
use msc_io::stream::{
    BodyError, PlainReader, PlainWriter, RelayState, Sink, Source, forward_body, read_request_head, relay,
};

use crate::config::client::ClientTimeouts;
use crate::forward::access::{AccessLog, Record};
use crate::forward::error::{ProxyError, Retry, Side};
use crate::forward::http::{copy_end_to_end, error_reply, write_upgrade};
use crate::forward::{Ended, Peer, Proxy, ProxySettings, ProxyTimeouts, relay_response};
use crate::upstream::feedback::Recorder;
use crate::upstream::{FailureKind, Routing, RoutingHandle};
use pool::{Tunnel, TunnelPool, retire};
use replay::Replay;

const WHO: &str = "msc-client";
const VIA: &str = "1.1 msc-client";

/// What every client worker shares (immutable).
#[derive(Debug)]
pub struct ClientShared {
    pub routing: RoutingHandle,
    /// The client generation (configuration) this belongs to (see [`generation`]).
    pub generation: u64,
    pub timeouts: ClientTimeouts,
    /// When no gateway can be used: relay directly (true) or answer 503.
    pub fail_open: bool,
    /// By listener id: the slot it serves (a slot has one or two listeners:
    /// http_port, https_port); `None`: not a listener of this generation.
    pub listener_slots: Vec<Option<usize>>,
    /// The direct relay used on premise.
    pub on_premise: Arc<ProxySettings>,
    /// The direct relay used when failing open because the control plane
    /// judges no gateway available.
    pub fail_open_relay: Arc<ProxySettings>,
    /// The direct relay used when failing open because this request found
    /// every gateway of its slot unreachable (before the control plane knew).
    pub fail_open_unreachable_relay: Arc<ProxySettings>,
    /// The direct relay used while a trusted user disabled protection.
    pub disabled_relay: Arc<ProxySettings>,
    /// This client's identity (certificate principal), for the access log.
    pub user: Arc<str>,
    pub log: AccessLog,
}

impl ClientShared {
    /// The slot listener `id` serves in this generation.
    pub fn slot_of(&self, id: usize) -> Option<usize> {
        self.listener_slots.get(id).copied().flatten()
    }
}

/// One worker's client service (of one generation).
#[derive(Debug)]
pub struct ClientService {
    shared: Arc<ClientShared>,
    t: ClientTimeouts,
    recorder: Rc<Recorder>,
    pool: Rc<TunnelPool>,
    on_premise: Proxy,
    fail_open: Proxy,
    fail_open_unreachable: Proxy,
    disabled: Proxy,
    /// Access-log labels per gateway (`gw:NAME`), built once.
    routes: Vec<Arc<str>>,
}

impl ClientService {
    pub fn new(shared: Arc<ClientShared>, recorder: Rc<Recorder>, pool: Rc<TunnelPool>) -> ClientService {
        let routes = shared
            .routing
            .load()
            .gateways
            .iter()
            .map(|g| Arc::from(format!("gw:{}", g.name)))
            .collect();
        ClientService {
            t: shared.timeouts,
            on_premise: Proxy::new(shared.on_premise.clone()),
            fail_open: Proxy::new(shared.fail_open_relay.clone()),
            fail_open_unreachable: Proxy::new(shared.fail_open_unreachable_relay.clone()),
            disabled: Proxy::new(shared.disabled_relay.clone()),
            shared,
            recorder,
            pool,
            routes,
        }
    }

    /// The worker's tunnel pool.
    pub fn pool(&self) -> &Rc<TunnelPool> {
        &self.pool
    }

    /// Serves the rest of the connection without a gateway, starting with `head`.
    async fn direct(&self, proxy: &Proxy, r: &mut PlainReader, w: &mut PlainWriter, head: RequestHead) -> Next {
        let mut peer = Peer {
            r,
            w,
            user: self.shared.user.clone(),
        };
        match proxy.serve(&mut peer, Some(head)).await {
            Ended::Clean => Next::Close,
            Ended::Abort => Next::Abort,
        }
    }

    /// One request without a gateway (failing open): `head` (already read,
    /// unconsumed) or, with `None`, one read from `r`. The connection's next
    /// request is routed afresh, so it returns to a gateway as soon as one is
    /// usable, and every DIRECT request is counted and logged.
    async fn direct_one<R: Source>(&self, proxy: &Proxy, r: R, w: &mut PlainWriter, head: Option<RequestHead>) -> Next {
        let mut peer = Peer {
            r,
            w,
            user: self.shared.user.clone(),
        };
        match proxy.serve_one(&mut peer, head).await {
            None => Next::KeepAlive,
            Some(Ended::Clean) => Next::Close,
            Some(Ended::Abort) => Next::Abort,
        }
    }

    /// Every gateway of the slot was unreachable for this request (connect
    /// refused or timed out, before the control plane judged them
    /// unavailable): the configured policy applies at once, as it does once
    /// the control plane knows. The request is `Ok(head)` (still unconsumed
    /// in `br`) or `Err(bytes)`, a head already consumed, replayed in front
    /// of `br`.
    async fn unreachable(
        &self,
        br: &mut PlainReader,
        bw: &mut PlainWriter,
        request: Result<RequestHead, Vec<u8>>,
        reason: &str,
    ) -> Next {
        if !self.shared.fail_open {
            self.recorder.direct(|d| {
                d.fail_closed += 1;
                d.fail_closed_unreachable += 1;
            });
            let reason =
                format!("no gateway could be reached and the policy is fail-closed (no direct access): {reason}");
            answer(bw, 503, &reason).await;
            return Next::Close;
        }
        self.recorder.direct(|d| {
            d.fail_open += 1;
            d.fail_open_unreachable += 1;
        });
        let proxy = &self.fail_open_unreachable;
        match request {
            Ok(head) => Box::pin(self.direct_one(proxy, &mut *br, bw, Some(head))).await,
            Err(bytes) => {
                let mut replay = Replay::new(bytes, br);
                let next = Box::pin(self.direct_one(proxy, &mut replay, bw, None)).await;
                // Bytes moved behind an unfinished replay cannot be returned.
                if matches!(next, Next::KeepAlive) && !replay.is_drained() {
                    Next::Close
                } else {
                    next
                }
            }
        }
    }

    /// A tunnel for `slot`: a pooled one to the slot's first (best) gateway
    /// if it has one, else a new one, failing over across the slot's
    /// gateways in order. Other gateways' pools are not taken from: their
    /// tunnels would route around the ranking.
    async fn tunnel_for(
        &self,
        routing: &Routing,
        slot: usize,
        peer: SocketAddr,
        check: bool,
    ) -> Result<(Tunnel, bool), NoTunnel> {
        for gw in routing.for_slot(slot).take(1) {
            if let Some(t) = self.pool.take(gw, check).await {
                return Ok((t, true));
            }
        }
        // Boxed: the handshake's future is large and rarely needed (the pool
        // usually has a tunnel), so every request's future stays small.
        Box::pin(self.open_any(routing, slot, peer)).await.map(|t| (t, false))
    }

    fn log(&self, req: &ReqLog, status: u16, up: u64, down: u64, gw: usize) {
        if !self.shared.log.enabled() {
            return;
        }
        self.shared.log.log(Record {
            at: SystemTime::now(),
            user: self.shared.user.clone(),
            method: req.method.clone(),
            target: req.target.clone(),
            status,
            up,
            down,
            duration: req.start.elapsed(),
            route: self.routes.get(gw).cloned(),
        });
    }
}

/// Writes an error reply and sends the FIN at once: the browser may still
/// be sending, and the close that follows would then reset the connection.
async fn answer(w: &mut PlainWriter, status: u16, reason: &str) {
    let _ = w.write_bytes(&error_reply(status, WHO, reason, true)).await;
    let _ = w.close_write().await;
}

/// The head as sent to the gateway: the browser's request line and fields,
/// minus what is hop-by-hop for the browser's connection (`Connection`,
/// `Proxy-Connection`, `Keep-Alive`, the fields they name), plus `Via`. An
/// upgrade handshake keeps `Connection: upgrade` and `Upgrade`.
fn tunnel_head(head: &RequestHead, buf: &[u8], upgrade: bool, out: &mut Vec<u8>) {
    let line_end = buf.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
    out.extend_from_slice(&buf[..line_end]);
    // Proxy-Authorization is for the gateway, not hop-by-hop on this leg.
    copy_end_to_end(&head.headers, buf, false, &["proxy-authorization"], out);
    if upgrade {
        write_upgrade(&head.headers, buf, out);
    }
    out.extend_from_slice(b"Via: ");
    out.extend_from_slice(VIA.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// Why no tunnel could be opened: the last gateway's error (its status and
/// reason go to the browser), and whether every gateway tried was
/// unreachable (then the fail-open/closed policy applies instead).
struct NoTunnel {
    err: ProxyError,
    unreachable: bool,
}

/// The head as sent to the gateway, without the `Via` this client added (the
/// direct relay adds its own) and with `Connection: close` if the browser
/// asked for it (`tunnel_head` dropped the browser's hop-by-hop fields).
fn replay_head(up: &[u8], close: bool) -> Vec<u8> {
    let tail = b"Via: 1.1 msc-client\r\n\r\n";
    let keep = up.strip_suffix(tail.as_slice()).unwrap_or(up);
    let mut out = Vec::with_capacity(keep.len() + 21);
    out.extend_from_slice(keep);
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The request-line facts the access log needs.
struct ReqLog {
    method: String,
    target: String,
    start: Instant,
}

/// What became of one request.
enum Next {
    /// The browser connection may carry another request.
    KeepAlive,
    /// Close the browser connection.
    Close,
    /// Reset the browser connection: a response was cut after part of it
    /// went out, and the browser must see a cut, not a clean end.
    Abort,
    /// CONNECT or an upgrade: relay bytes both ways until both sides end,
    /// then close. Run by the connection's future after the request's
    /// future is gone, so a long-lived tunnel holds only the relay's state.
    Tunnel(Box<Upgraded>),
}

/// A tunnel whose exchange turned into a plain byte relay.
struct Upgraded {
    tun: Tunnel,
    req: ReqLog,
    status: u16,
    up: u64,
    down: u64,
}

impl ClientService {
    /// Reads one request head and routes it: through a tunnel, directly (on
    /// premise, or failing open), or refused.
    async fn request(&self, br: &mut PlainReader, bw: &mut PlainWriter, slot: usize, peer: SocketAddr) -> Next {
        let t = self.t;
        let head = match read_request_head(br, t.head, t.head, Limits::PEER).await {
            Ok(Some(h)) => h,
            Ok(None) => return Next::Close,
            Err(e) => {
                if let Some(e) = ProxyError::request_head(&e, t.head) {
                    answer(bw, e.status, &e.reason).await;
                }
                return Next::Close;
            }
        };
        if matches!(head.form, Form::Origin | Form::Asterisk) {
            answer(
                bw,
                400,
                "this is a proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port",
            )
            .await;
            return Next::Close;
        }
        let routing = self.shared.routing.load_full();
        if routing.disabled {
            // Deliberate and visible: counted, shown by `msc status`, logged
            // as `direct:disabled` in the access log.
            self.recorder.direct(|d| d.disabled += 1);
            return Box::pin(self.direct(&self.disabled, br, bw, head)).await;
        }
        if routing.direct_on_premise {
            self.recorder.direct(|d| d.on_premise += 1);
            return Box::pin(self.direct(&self.on_premise, br, bw, head)).await;
        }
        if routing.none_available {
            if !routing.direct_permitted {
                // A gateway that fails authentication is what interception
                // looks like: never a reason to go DIRECT.
                self.recorder.direct(|d| d.refused_untrusted += 1);
                let reason = format!(
                    "no trusted gateway is available; requests are refused, not sent directly: {}",
                    routing.unavailable_reason()
                );
                answer(bw, 503, &reason).await;
                return Next::Close;
            }
            if self.shared.fail_open {
                self.recorder.direct(|d| d.fail_open += 1);
                return Box::pin(self.direct_one(&self.fail_open, &mut *br, bw, Some(head))).await;
            }
            self.recorder.direct(|d| d.fail_closed += 1);
            let reason = format!(
                "no gateway is available and the policy is fail-closed (no direct access): {}",
                routing.unavailable_reason()
            );
            answer(bw, 503, &reason).await;
            return Next::Close;
        }
        self.exchange(br, bw, head, slot, &routing, peer).await
    }

    /// One request through a tunnel; the response relayed with its framing.
    async fn exchange(
        &self,
        br: &mut PlainReader,
        bw: &mut PlainWriter,
        head: RequestHead,
        slot: usize,
        routing: &Routing,
        peer: SocketAddr,
    ) -> Next {
        let start = Instant::now();
        let data = br.data();
        let body = match request_body(&head, data) {
            Ok(b) => b,
            Err(e) => {
                answer(bw, 400, e.reason()).await;
                return Next::Close;
            }
        };
        let browser_close = head.wants_close(data) || head.minor_version == 0;
        let upgrade = head.headers.has_token(data, "connection", "upgrade")
            && head.headers.values(data, "upgrade").next().is_some();
        let method = head.method;
        // The log line's strings only when the access log is on.
        let req = if self.shared.log.enabled() {
            ReqLog {
                method: head.method_span.str(data).to_owned(),
                target: head.target.str(data).to_owned(),
                start,
            }
        } else {
            ReqLog {
                method: String::new(),
                target: String::new(),
                start,
            }
        };
        let mut up = Vec::with_capacity(head.len + VIA.len() + 16);
        tunnel_head(&head, &data[..head.len], upgrade, &mut up);

        let idempotent = matches!(method, Method::Get | Method::Head | Method::Options | Method::Connect);
        // A request that must not be repeated gets a checked tunnel: one the
        // gateway closed while it sat idle is found before anything is sent.
        let check = body != BodyLen::Empty || !idempotent;
        let (mut tun, mut pooled) = match self.tunnel_for(routing, slot, peer, check).await {
            Ok(t) => {
                self.recorder.pool(t.1);
                t
            }
            // Only "unreachable" may lead to DIRECT: never a gateway that
            // failed authentication or answered wrongly (here or as the
            // control plane last saw it).
            Err(NoTunnel { err, unreachable: true }) if routing.direct_permitted => {
                return Box::pin(self.unreachable(br, bw, Ok(head), &err.reason)).await;
            }
            Err(NoTunnel { err, .. }) => {
                answer(bw, err.status, &err.reason).await;
                return Next::Close;
            }
        };
        br.consume(head.len);
        let timeouts = ProxyTimeouts {
            head: self.t.head,
            idle: self.t.idle,
            connect: self.t.connect,
        };
        // One retry on a fresh tunnel (failing over across the slot's
        // gateways) if the tunnel fails before anything came back and no
        // body byte was taken from the browser, and only if repeating is
        // safe: the method is idempotent, or nothing of the request reached
        // the gateway (the write itself failed: the gateway had closed the
        // tunnel). A request that may have reached an origin is never sent
        // twice.
        let mut retried = false;
        let may_repeat = body == BodyLen::Empty && idempotent;
        let (up_res, resp) = loop {
            let gw_index = tun.gw;
            let outcome = match tun.w.write_bytes(&up).await {
                // Nothing of the request reached the gateway (it had closed
                // the tunnel): safe to send on another, whatever the method.
                Err(e) => {
                    let reason = format!("cannot send to the gateway: {e}");
                    Err(ProxyError::upstream_io(&e, "gateway_send_failed", reason).retry(Retry::Safe))
                }
                Ok(()) => {
                    let state = RelayState::new(self.t.idle);
                    let mut tracker = BodyTracker::new(body);
                    let (up_res, resp) = monoio::join!(
                        forward_body(br, &mut tun.w, &mut tracker, &state),
                        relay_response(
                            &mut tun.r,
                            bw,
                            method,
                            browser_close,
                            timeouts,
                            &state,
                            "gateway",
                            Limits::RELAYED
                        )
                    );
                    match resp {
                        // The browser went away (or broke its body): not the gateway's fault.
                        Err(e)
                            if !e.is_cut()
                                && up_res.is_err()
                                && (br.is_stale() || !matches!(up_res, Err(BodyError::Io(_)))) =>
                        {
                            Ok((up_res, Err(e)))
                        }
                        // Answered without going elsewhere: a cut, a slow
                        // gateway (the request may be running), or a shortage
                        // of this machine's.
                        Err(e) if e.is_cut() || e.against_upstream().is_none() => Ok((up_res, Err(e))),
                        Err(e) => Err(e),
                        Ok(r) => Ok((up_res, Ok(r))),
                    }
                }
            };
            let failed = match outcome {
                Ok(done) => break done,
                Err(failed) => failed,
            };
            retire(tun);
            let label = routing.gateways.get(gw_index).map(|g| g.label()).unwrap_or_default();
            if let (false, Some(kind)) = (pooled, failed.against_upstream()) {
                self.recorder.tunnel_failed(gw_index, kind, &failed.reason);
            }
            if !retried && body == BodyLen::Empty && failed.may_retry(may_repeat) {
                tracing::debug!("{peer}: tunnel to {label} failed before answering ({failed}); retrying");
                retried = true;
                match Box::pin(self.open_any(routing, slot, peer)).await {
                    Ok(t) => {
                        tun = t;
                        pooled = false;
                        continue;
                    }
                    // The gateway died and none can be reached: nothing of
                    // the request was answered and it may be repeated, so it
                    // gets the policy rather than a 502.
                    Err(NoTunnel { err, unreachable: true }) if routing.direct_permitted => {
                        let replay = replay_head(&up, browser_close);
                        return Box::pin(self.unreachable(br, bw, Err(replay), &err.reason)).await;
                    }
                    Err(_) => {}
                }
            }
            answer(
                bw,
                502,
                &format!(
                    "gateway {label} closed the tunnel before answering (is this client's certificate accepted?): {}",
                    failed.reason
                ),
            )
            .await;
            self.log(&req, 502, 0, 0, gw_index);
            return Next::Close;
        };
        let gw = tun.gw;
        let up_bytes = match &up_res {
            Ok(n) => *n,
            Err(_) => 0,
        };
        let resp = match resp {
            Ok(r) => r,
            Err(e) if !e.is_cut() => {
                // Nothing reached the browser: it gets a clear answer.
                retire(tun);
                let (status, reason) = match up_res {
                    Err(BodyError::Framing(b)) => (400, b.reason().to_string()),
                    Err(BodyError::Io(io)) => {
                        // The browser closed while sending its request body.
                        tracing::debug!("{peer}: browser went away during the request: {io}");
                        self.log(&req, 499, up_bytes, 0, gw);
                        return Next::Close;
                    }
                    Ok(_) => {
                        // Slow or local (see above): not held against the gateway.
                        let label = routing.gateways.get(gw).map(|g| g.label()).unwrap_or_default();
                        (e.status, format!("gateway {label}: {}", e.reason))
                    }
                };
                tracing::warn!("{peer}: {reason}");
                answer(bw, status, &reason).await;
                self.log(&req, status, up_bytes, 0, gw);
                return Next::Close;
            }
            Err(e) => {
                tracing::debug!("{peer}: response relay failed midway: {}", e.reason);
                retire(tun);
                self.log(&req, e.status, up_bytes, e.sent, gw);
                return Next::Abort;
            }
        };
        if resp.upgraded && up_res.is_ok() {
            // CONNECT or an upgrade: a plain tunnel from now on, not reused.
            return Next::Tunnel(Box::new(Upgraded {
                tun,
                req,
                status: resp.status,
                up: up_bytes,
                down: resp.bytes,
            }));
        }
        self.log(&req, resp.status, up_bytes, resp.bytes, gw);
        self.recorder.request(gw, up_bytes, resp.bytes);
        if resp.origin_reusable && up_res.is_ok() {
            self.pool.put(tun);
        } else {
            retire(tun);
        }
        if resp.client_keep_alive && up_res.is_ok() {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    /// Relays a CONNECT or upgraded connection until both sides are done.
    /// Returns whether it was cut (either side failed): the browser
    /// connection is then reset, not closed.
    async fn relay_tunnel(&self, br: &mut PlainReader, bw: &mut PlainWriter, u: Upgraded) -> bool {
        let Upgraded {
            mut tun,
            req,
            status,
            up,
            down,
        } = u;
        let (u, d) = relay(br, bw, &mut tun.r, &mut tun.w, self.t.idle).await;
        self.log(&req, status, up + u.bytes, down + d.bytes, tun.gw);
        self.recorder.request(tun.gw, up + u.bytes, down + d.bytes);
        u.result.is_err() || d.result.is_err()
    }

    /// A new tunnel, failing over across the slot's gateways in order.
    async fn open_any(&self, routing: &Routing, slot: usize, peer: SocketAddr) -> Result<Tunnel, NoTunnel> {
        let mut last = None;
        let mut unreachable = true;
        let mut reasons = Vec::new();
        for gw in routing.for_slot(slot) {
            match self.pool.open(gw).await {
                Ok(t) => return Ok(t),
                Err(e) => {
                    tracing::warn!("{peer}: {}", e.reason);
                    unreachable &= e.against_upstream() == Some(FailureKind::Unreachable);
                    reasons.push(e.reason.clone());
                    last = Some(e);
                }
            }
        }
        match last {
            Some(mut err) => {
                if reasons.len() > 1 {
                    err.reason = reasons.join("; ").into();
                }
                Err(NoTunnel { err, unreachable })
            }
            None => Err(NoTunnel {
                err: ProxyError::new(Side::Local, 502, "no_gateway", "no gateway is configured for this port"),
                unreachable: false,
            }),
        }
    }
}
