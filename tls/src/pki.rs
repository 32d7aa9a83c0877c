//! Test and demo PKI: a CA that issues gateway and client certificates.
//!
//! ECDSA P-256 throughout (cheap handshakes). Keys leave this module only as
//! PEM strings; writing them to disk with the right permissions is the
//! caller's job.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate authority able to issue certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate and key.
    pub issued: Issued,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// Validity window of an issued certificate.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (tolerating clock skew) for `days` days.
    pub fn days(days: i64) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }

    /// A window that ended yesterday (for testing that expiry is enforced).
    pub fn expired() -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::days(30),
            not_after: now - Duration::days(1),
        }
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, "msc");
    d.push(DnType::CommonName, cn);
    d
}

impl Ca {
    /// Creates a new self-signed CA named `cn`, valid for ten years.
    pub fn new(cn: &str) -> Result<Ca, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let v = Validity::days(3650);
        p.not_before = v.not_before;
        p.not_after = v.not_after;
        let cert = p.self_signed(&key)?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Ca {
            issuer: Issuer::new(p, key),
            issued,
        })
    }

    /// Loads an existing CA (certificate and key PEM) to issue more certificates.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, rcgen::Error> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Ca {
            issuer,
            issued: Issued {
                cert_pem: cert_pem.to_owned(),
                key_pem: key_pem.to_owned(),
            },
        })
    }

    /// Issues a gateway (TLS server) certificate for `names`: DNS names and/or IP addresses.
    pub fn issue_server(&self, names: &[String], validity: Validity) -> Result<Issued, rcgen::Error> {
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(names.first().map_or("msc gateway", String::as_str));
        for n in names {
            p.subject_alt_names.push(match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.as_str().try_into()?),
            });
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = validity.not_before;
        p.not_after = validity.not_after;
        self.sign(p)
    }

    /// Issues a client certificate for `user` (subject CN) with an optional
    /// SAN e-mail address.
    pub fn issue_client(&self, user: &str, email: Option<&str>, validity: Validity) -> Result<Issued, rcgen::Error> {
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(user);
        if let Some(e) = email {
            p.subject_alt_names.push(SanType::Rfc822Name(e.try_into()?));
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = validity.not_before;
        p.not_after = validity.not_after;
        self.sign(p)
    }

    fn sign(&self, p: CertificateParams) -> Result<Issued, rcgen::Error> {
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn client_identity_roundtrip() {
        let ca = Ca::new("test CA").unwrap();
        let c = ca
            .issue_client("alice", Some("alice@example.com"), Validity::days(1))
            .unwrap();
        let der = CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap();
        let id = Identity::from_der(&der);
        assert_eq!(id.common_name.as_deref(), Some("alice"));
        assert_eq!(id.emails, vec!["alice@example.com".to_string()]);
        assert_eq!(id.principal(), "alice@example.com");
        let again = Ca::from_pem(&ca.issued.cert_pem, &ca.issued.key_pem).unwrap();
        again
            .issue_server(&["localhost".into(), "127.0.0.1".into()], Validity::days(1))
            .unwrap();
    }
}
