//! Loading PEM certificates and keys, and reading identities from certificates.

use std::fmt;
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::SetupError;

/// Reads every certificate in a PEM file; at least one is required.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, SetupError> {
    let err = |reason: String| SetupError::File {
        path: path.to_path_buf(),
        reason,
    };
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| err(pem_reason(e)))?;
    let certs = iter.collect::<Result<Vec<_>, _>>().map_err(|e| err(pem_reason(e)))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE blocks found".into()));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, SEC1 or PKCS#1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, SetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| SetupError::File {
        path: path.to_path_buf(),
        reason: match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block found".into(),
            e => pem_reason(e),
        },
    })
}

fn pem_reason(e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        e => format!("not valid PEM: {e:?}"),
    }
}

/// Who a certificate names: subject CN plus SAN e-mail addresses and URIs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub common_name: Option<String>,
    pub emails: Vec<String>,
    pub uris: Vec<String>,
}

impl Identity {
    /// Reads the identity fields of a DER certificate; unparsable certificates
    /// (which a verifier would have refused) yield an empty identity.
    pub fn from_der(der: &[u8]) -> Identity {
        use x509_parser::extensions::GeneralName;
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return Identity::default();
        };
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let mut id = Identity {
            common_name,
            ..Identity::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::RFC822Name(e) => id.emails.push((*e).to_owned()),
                    GeneralName::URI(u) => id.uris.push((*u).to_owned()),
                    _ => {}
                }
            }
        }
        id
    }

    /// A single token for logs: the first e-mail, else the CN, else the first URI.
    pub fn principal(&self) -> &str {
        self.emails
            .first()
            .or(self.common_name.as_ref())
            .or(self.uris.first())
            .map_or("-", String::as_str)
    }
}

/// What a certificate says about itself, for status and support output:
/// names and validity only (a certificate holds no secret; this never
/// touches a key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    /// RFC 4514 style, e.g. `CN=alice`.
    pub subject: String,
    pub issuer: String,
    /// Validity bounds, seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// Hex, as printed by `openssl x509 -serial`.
    pub serial: String,
}

impl CertSummary {
    /// `None` for bytes that are not a DER certificate.
    pub fn from_der(der: &[u8]) -> Option<CertSummary> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(CertSummary {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            serial: cert.raw_serial_as_string().replace(':', "").to_ascii_uppercase(),
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cn = self.common_name.as_deref().unwrap_or("-");
        write!(f, "CN={cn}")?;
        for e in &self.emails {
            write!(f, " email={e}")?;
        }
        for u in &self.uris {
            write!(f, " uri={u}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Ca, Validity};

    #[test]
    fn summary_names_subject_issuer_and_validity() {
        let ca = Ca::new("Test CA").unwrap();
        let v = Validity::days(30);
        let leaf = ca.issue_client("alice", Some("alice@example.com"), v).unwrap();
        let der = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
        let s = CertSummary::from_der(&der).unwrap();
        assert!(s.subject.contains("CN=alice"), "{s:?}");
        assert!(s.issuer.contains("CN=Test CA"), "{s:?}");
        assert_eq!(s.not_after, v.not_after.unix_timestamp());
        assert!(s.not_before < s.not_after);
        assert!(!s.serial.is_empty() && s.serial.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(CertSummary::from_der(b"not a certificate"), None);
    }
}
