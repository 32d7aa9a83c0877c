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
