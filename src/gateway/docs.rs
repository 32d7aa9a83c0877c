//! Documents the gateway serves to its own clients over their mutual-TLS
//! tunnel: `GET /.well-known/msc/<name>` (origin-form, like the probe).
//!
//! Each kind of document (per-user configuration, the administrator's PAC,
//! signed releases) is a [`Provider`]; the first provider that knows a name
//! answers it, for the identity in the client certificate. Answers carry an
//! `ETag`; a request whose `If-None-Match` names it gets `304 Not
//! Modified`. A name no provider knows is a 404 with a one-line reason.
//! Nothing here reaches an origin or the egress policy.

use std::fmt;
use std::sync::Arc;

/// Where gateway documents live (followed by the document's name).
pub const DOCS_PREFIX: &str = "/.well-known/msc/";

/// One document as served.
#[derive(Clone)]
pub struct Doc {
    pub body: Arc<[u8]>,
    /// A strong entity tag, quoted (`"..."`).
    pub etag: String,
    pub content_type: &'static str,
}

impl fmt::Debug for Doc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Doc")
            .field("len", &self.body.len())
            .field("etag", &self.etag)
            .field("content_type", &self.content_type)
            .finish()
    }
}

impl Doc {
    /// A document whose tag is derived from its content (SHA-256, 128 bits).
    pub fn new(body: impl Into<Arc<[u8]>>, content_type: &'static str) -> Doc {
        let body = body.into();
        Doc {
            etag: etag_of(&body),
            body,
            content_type,
        }
    }
}

/// The strong entity tag of `body`: its SHA-256, truncated to 128 bits, quoted.
pub fn etag_of(body: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, body);
    let hex: String = d.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// A refusal: the status and a one-line reason for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub reason: String,
}

/// Serves some document names.
pub trait Provider: Send + Sync + fmt::Debug {
    /// The document `name` (the path after [`DOCS_PREFIX`], without query)
    /// for the client identified as `user` (the certificate's principal:
    /// first e-mail, else CN, else first URI). `None`: not a name this
    /// provider serves.
    fn get(&self, name: &str, user: &str) -> Option<Result<Doc, Refused>>;
}

/// The gateway's document providers, asked in order.
#[derive(Debug, Default, Clone)]
pub struct Docs {
    providers: Vec<Arc<dyn Provider>>,
}

impl Docs {
    pub fn add(&mut self, p: Arc<dyn Provider>) {
        self.providers.push(p);
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// The answer to `path` (starting with [`DOCS_PREFIX`]) for `user`.
    pub fn get(&self, path: &str, user: &str) -> Result<Doc, Refused> {
        let name = path
            .strip_prefix(DOCS_PREFIX)
            .map(|n| n.split('?').next().unwrap_or(n))
            .unwrap_or("");
        if name.is_empty() || name.contains("..") {
            return Err(Refused {
                status: 404,
                reason: "no such document".into(),
            });
        }
        self.providers
            .iter()
            .find_map(|p| p.get(name, user))
            .unwrap_or_else(|| {
                Err(Refused {
                    status: 404,
                    reason: format!("no document {name:?} on this gateway"),
                })
            })
    }
}

/// The providers a gateway with `cfg` serves.
pub fn for_gateway(cfg: &crate::config::gateway::GatewayConfig) -> std::io::Result<Docs> {
    let mut docs = Docs::default();
    if let Some(p) = &cfg.profiles {
        docs.add(Arc::new(super::profiles::Profiles::start(p)?));
    }
    if let Some(dir) = &cfg.releases_dir {
        docs.add(Arc::new(super::releases::Releases::new(dir.clone())));
    }
    Ok(docs)
}

/// Whether an `If-None-Match` value names `etag` (RFC 9110 13.1.2: a list
/// of tags, weak comparison, or `*`).
pub fn none_match(header: &str, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let want = bare(etag);
    header.split(',').any(|t| {
        let t = t.trim();
        t == "*" || bare(t) == want
    })
}

/// The response head (and whether a body follows) for a document answer.
pub fn head(doc: &Doc, not_modified: bool, close: bool) -> Vec<u8> {
    let close = if close { "Connection: close\r\n" } else { "" };
    if not_modified {
        format!(
            "HTTP/1.1 304 Not Modified\r\nETag: {}\r\nCache-Control: no-store\r\n{close}\r\n",
            doc.etag
        )
        .into_bytes()
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nETag: {}\r\nCache-Control: no-store\r\n{close}\r\n",
            doc.content_type,
            doc.body.len(),
            doc.etag
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed;

    impl Provider for Fixed {
        fn get(&self, name: &str, user: &str) -> Option<Result<Doc, Refused>> {
            match name {
                "hello" => Some(Ok(Doc::new(format!("hello {user}").into_bytes(), "text/plain"))),
                "secret" => Some(Err(Refused {
                    status: 403,
                    reason: "not for you".into(),
                })),
                _ => None,
            }
        }
    }

    #[test]
    fn providers_answer_their_names_and_others_are_404() {
        let mut d = Docs::default();
        d.add(Arc::new(Fixed));
        let doc = d.get("/.well-known/msc/hello?x=1", "alice").expect("served");
        assert_eq!(&*doc.body, b"hello alice");
        assert_eq!(doc.etag, etag_of(b"hello alice"));
        assert_eq!(d.get("/.well-known/msc/secret", "a").unwrap_err().status, 403);
        assert_eq!(d.get("/.well-known/msc/other", "a").unwrap_err().status, 404);
        assert_eq!(d.get("/.well-known/msc/", "a").unwrap_err().status, 404);
        assert_eq!(d.get("/.well-known/msc/../hello", "a").unwrap_err().status, 404);
    }

    #[test]
    fn if_none_match_lists_weak_tags_and_star() {
        let e = "\"abc\"";
        assert!(none_match("\"abc\"", e));
        assert!(none_match("\"x\", W/\"abc\"", e));
        assert!(none_match("*", e));
        assert!(!none_match("\"abcd\"", e));
        assert!(!none_match("", e));
    }

    #[test]
    fn heads_frame_the_body_or_none() {
        let doc = Doc::new(b"12345".to_vec(), "text/plain");
        let h = String::from_utf8(head(&doc, false, false)).expect("ascii");
        assert!(h.starts_with("HTTP/1.1 200 OK\r\n") && h.contains("Content-Length: 5\r\n"));
        assert!(h.contains(&format!("ETag: {}\r\n", doc.etag)) && h.ends_with("\r\n\r\n"));
        let h = String::from_utf8(head(&doc, true, true)).expect("ascii");
        assert!(h.starts_with("HTTP/1.1 304 Not Modified\r\n") && h.contains("Connection: close\r\n"));
        assert!(!h.contains("Content-Length"));
    }
}
