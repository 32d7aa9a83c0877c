//! One error type for the data path of both sides: who failed, whether
//! repeating the request is safe, the status of the reply (or that the
//! reply was cut), and a short label for logs and metrics.
//!
//! Modelled on pingora-error's `ErrorSource`/`RetryType` and g3's
//! `serve/error.rs`: every failure is classified once, where it happens,
//! and the callers only read the classification. The security rules hang
//! off it: only a [`Side::Upstream`] failure with a [`FailureKind`] is held
//! against a gateway (origin faults, slowness and this machine's own
//! shortages never are), and [`Retry`] says when a request may be sent again.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use msc_io::head::HeadError;
use msc_io::stream::HeadReadError;

use crate::upstream::{FailureKind, classify_io};

/// Who failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Whoever sent the request (a browser at the client, a client at the
    /// gateway): a bad head or body, a timeout, or it went away.
    Requester,
    /// The hop requests are forwarded to: the gateway, from the client;
    /// the origin, from the gateway (or from the client's direct relay).
    Upstream,
    /// This machine: out of descriptors, memory or ports.
    Local,
}

/// Whether the request may be sent again (on a fresh connection, possibly
/// to another gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Nothing of the request reached the upstream (the connection or the
    /// first write failed): safe for any method.
    Safe,
    /// The request may have reached the upstream but nothing came back:
    /// only a request that is safe to repeat (idempotent, no body) may be
    /// sent again.
    IfIdempotent,
    /// Never: part of the reply went out, the requester is at fault, or the
    /// request may still be running (a timeout).
    Never,
}

/// A data-path failure, classified where it happened.
#[derive(Debug)]
pub struct ProxyError {
    pub side: Side,
    /// What the failure says about the upstream's health, when the upstream
    /// is a gateway being judged; `None` when it says nothing (slow, local,
    /// or not the upstream's doing).
    pub fault: Option<FailureKind>,
    pub retry: Retry,
    /// The status of the reply msc makes (or of the response being relayed,
    /// when it was cut).
    pub status: u16,
    /// Bytes of the response already sent to the requester: if any, the
    /// requester's connection is cut (reset), not answered.
    pub sent: u64,
    /// A short fixed label for logs and metrics (`upstream_timeout`, ...).
    pub label: &'static str,
    /// One line for the reply and the log.
    pub reason: Cow<'static, str>,
}

impl ProxyError {
    pub fn new(side: Side, status: u16, label: &'static str, reason: impl Into<Cow<'static, str>>) -> ProxyError {
        ProxyError {
            side,
            fault: None,
            retry: Retry::Never,
            status,
            sent: 0,
            label,
            reason: reason.into(),
        }
    }

    pub fn fault(mut self, kind: Option<FailureKind>) -> ProxyError {
        self.fault = kind;
        self
    }

    pub fn retry(mut self, r: Retry) -> ProxyError {
        self.retry = r;
        self
    }

    /// The same failure after `sent` bytes of the reply went out: a cut,
    /// never retried.
    pub fn after(mut self, sent: u64) -> ProxyError {
        self.sent = sent;
        if sent > 0 {
            self.retry = Retry::Never;
        }
        self
    }

    /// Whether the requester's connection must be cut rather than answered.
    pub fn is_cut(&self) -> bool {
        self.sent > 0
    }

    /// Whether the request may be sent again, given what it is.
    pub fn may_retry(&self, idempotent_without_body: bool) -> bool {
        match self.retry {
            Retry::Safe => true,
            Retry::IfIdempotent => idempotent_without_body,
            Retry::Never => false,
        }
    }

    /// The failure to hold against the upstream gateway, if any.
    pub fn against_upstream(&self) -> Option<FailureKind> {
        match self.side {
            Side::Upstream => self.fault,
            _ => None,
        }
    }

    /// An upstream I/O failure before anything came back: judged by its kind
    /// (this machine's own shortages are [`Side::Local`]).
    pub fn upstream_io(e: &std::io::Error, label: &'static str, reason: String) -> ProxyError {
        match classify_io(e) {
            None => ProxyError::new(Side::Local, 503, "local_resources", reason),
            kind => ProxyError::new(Side::Upstream, 502, label, reason).fault(kind),
        }
    }

    /// A response head that could not be read from `upstream`.
    pub fn response_head(e: HeadReadError, upstream: &str, wait: Duration) -> ProxyError {
        match e {
            // Slow (the upstream may be waiting on a slow origin): answered,
            // never repeated (the request may be running), not held against
            // the gateway.
            HeadReadError::Timeout => ProxyError::new(
                Side::Upstream,
                504,
                "upstream_timeout",
                format!("{upstream} did not answer within {}", humantime::format_duration(wait)),
            ),
            HeadReadError::Head(e) => ProxyError::new(
                Side::Upstream,
                502,
                "upstream_malformed",
                format!("invalid response from {upstream}: {e}"),
            )
            .fault(Some(FailureKind::Broken))
            .retry(Retry::IfIdempotent),
            HeadReadError::Truncated => ProxyError::new(
                Side::Upstream,
                502,
                "upstream_closed",
                format!("{upstream} closed in the middle of the response head"),
            )
            .fault(Some(FailureKind::Unreachable))
            .retry(Retry::IfIdempotent),
            HeadReadError::Io(e) => {
                let reason = format!("invalid response from {upstream}: {e}");
                ProxyError::upstream_io(&e, "upstream_io", reason).retry(Retry::IfIdempotent)
            }
        }
    }

    /// The upstream closed before any byte of a response.
    pub fn closed_without_response(upstream: &str) -> ProxyError {
        ProxyError::new(
            Side::Upstream,
            502,
            "upstream_closed",
            format!("{upstream} closed the connection without a response"),
        )
        .fault(Some(FailureKind::Unreachable))
        .retry(Retry::IfIdempotent)
    }

    /// A request head that could not be read from the requester: the reply
    /// to make, or `None` when the connection just ends (closed, reset).
    pub fn request_head(e: &HeadReadError, wait: Duration) -> Option<ProxyError> {
        match e {
            HeadReadError::Head(e) => Some(ProxyError::new(
                Side::Requester,
                e.status(),
                request_head_label(e),
                e.reason(),
            )),
            HeadReadError::Timeout => Some(ProxyError::new(
                Side::Requester,
                408,
                "request_timeout",
                format!("request head not received within {}", humantime::format_duration(wait)),
            )),
            HeadReadError::Truncated | HeadReadError::Io(_) => None,
        }
    }
}

fn request_head_label(e: &HeadError) -> &'static str {
    match e {
        HeadError::TooLarge | HeadError::TooManyHeaders => "request_head_too_large",
        HeadError::Malformed(_) => "request_malformed",
        HeadError::BadTarget(_) => "request_bad_target",
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.label, self.reason)
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_is_never_retried() {
        let e = ProxyError::new(Side::Upstream, 502, "upstream_closed", "x")
            .retry(Retry::Safe)
            .after(10);
        assert!(e.is_cut());
        assert!(!e.may_retry(true));
    }

    #[test]
    fn retry_rules() {
        let safe = ProxyError::new(Side::Upstream, 502, "x", "x").retry(Retry::Safe);
        assert!(safe.may_retry(false) && safe.may_retry(true));
        let idem = ProxyError::new(Side::Upstream, 502, "x", "x").retry(Retry::IfIdempotent);
        assert!(!idem.may_retry(false) && idem.may_retry(true));
        let never = ProxyError::new(Side::Upstream, 502, "x", "x");
        assert!(!never.may_retry(true));
    }

    #[test]
    fn only_upstream_faults_count_against_a_gateway() {
        let timeout = ProxyError::response_head(HeadReadError::Timeout, "gateway", Duration::from_secs(1));
        assert_eq!((timeout.status, timeout.against_upstream()), (504, None));
        assert_eq!(
            timeout.retry,
            Retry::Never,
            "a slow request may be running: never repeated"
        );
        let broken = ProxyError::response_head(
            HeadReadError::Head(HeadError::Malformed("x")),
            "gateway",
            Duration::from_secs(1),
        );
        assert_eq!(broken.against_upstream(), Some(FailureKind::Broken));
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        let local = ProxyError::response_head(HeadReadError::Io(emfile), "gateway", Duration::from_secs(1));
        assert_eq!(
            (local.side, local.status, local.against_upstream()),
            (Side::Local, 503, None)
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let reset = ProxyError::response_head(HeadReadError::Io(refused), "gateway", Duration::from_secs(1));
        assert_eq!(reset.against_upstream(), Some(FailureKind::Unreachable));
        let browser = ProxyError::request_head(&HeadReadError::Timeout, Duration::from_secs(5)).unwrap();
        assert_eq!(
            (browser.side, browser.status, browser.against_upstream()),
            (Side::Requester, 408, None)
        );
        assert!(ProxyError::request_head(&HeadReadError::Truncated, Duration::from_secs(5)).is_none());
    }
}
