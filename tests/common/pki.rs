//! Certificates made at test time (nothing is committed): a CA, server
//! certificates and client certificates with a SPIFFE URI SAN or a CN.
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};

/// A root store holding the certificates in `ca_pem`.
pub fn roots(ca_pem: &str) -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

/// A CA, and a server certificate for localhost and 127.0.0.1 written to
/// `dir` (`server.crt`, `server.key`), with the `[tls]` table that serves
/// it: TLS with no client certificates.
pub fn server_tls(dir: &std::path::Path) -> (Ca, String) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = Ca::new("Envelope test CA");
    let cert = ca.server(&["localhost"]);
    std::fs::write(dir.join("server.crt"), &cert.cert).unwrap();
    std::fs::write(dir.join("server.key"), &cert.key).unwrap();
    let table = format!(
        "[tls]\ncert = \"{d}/server.crt\"\nkey = \"{d}/server.key\"\n",
        d = dir.display()
    );
    (ca, table)
}

/// A TLS client that trusts `ca_pem`, offers HTTP/2 and shows no
/// certificate.
pub fn connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots(ca_pem))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pub pem: String,
}

pub struct Issued {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    /// A server certificate for these DNS names and 127.0.0.1.
    pub fn server(&self, dns: &[&str]) -> Issued {
        let mut p =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(p)
    }

    /// A server certificate for localhost and 127.0.0.1, valid from now
    /// for `days` days.
    pub fn server_for_days(&self, days: i64) -> Issued {
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(days);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(p)
    }

    /// A server certificate for 127.0.0.1 that expired in 2021.
    pub fn expired_server(&self) -> Issued {
        self.server_between(2020, 2021)
    }

    /// A server certificate for 127.0.0.1 valid only from 2090.
    pub fn future_server(&self) -> Issued {
        self.server_between(2090, 2091)
    }

    /// A server certificate for 127.0.0.1 valid from 1 January of `from`
    /// to 1 January of `to`.
    fn server_between(&self, from: i32, to: i32) -> Issued {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.not_before = rcgen::date_time_ymd(from, 1, 1);
        p.not_after = rcgen::date_time_ymd(to, 1, 1);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(p)
    }

    /// A client certificate for `cn` that expired in 2021.
    pub fn expired_client(&self, cn: &str) -> Issued {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(p)
    }

    /// A client certificate with a CN and, optionally, a URI SAN.
    pub fn client(&self, cn: &str, uri: Option<&str>) -> Issued {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        if let Some(u) = uri {
            p.subject_alt_names
                .push(SanType::URI(u.try_into().unwrap()));
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(p)
    }

    fn issue(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}
