//! Certificates for TLS tests: certificate authorities and the
//! certificates they sign, written as PEM files, generated per test.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// A certificate authority.
pub struct Ca {
    name: String,
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, as a PEM file.
    pub cert: PathBuf,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ca({})", self.name)
    }
}

/// The three files a Weir process takes (`--tls-ca`, `--tls-cert`, `--tls-key`).
#[derive(Debug, Clone)]
pub struct Files {
    /// The CA bundle to trust.
    pub ca: PathBuf,
    /// This holder's certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl Files {
    /// The files as `WEIR_TLS_*` environment variables.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("WEIR_TLS_CA".into(), self.ca.display().to_string()),
            ("WEIR_TLS_CERT".into(), self.cert.display().to_string()),
            ("WEIR_TLS_KEY".into(), self.key.display().to_string()),
        ]
    }

    /// The files as CLI flags.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--tls-ca".into(),
            self.ca.display().to_string(),
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

impl Ca {
    /// A new CA named `name`, its files under `dir`.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Ca> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let path = dir.join(format!("{name}.crt"));
        std::fs::write(&path, cert.pem())?;
        Ok(Ca { name: name.to_string(), dir: dir.to_path_buf(), issuer: Issuer::new(params, key), cert: path })
    }

    /// A certificate for `cn`, valid for `localhost` and 127.0.0.1 (as a
    /// server and as a client), trusting this CA.
    pub fn issue(&self, cn: &str) -> anyhow::Result<Files> {
        self.issue_with(cn, false)
    }

    /// A certificate for `cn` that expired in 2021.
    pub fn issue_expired(&self, cn: &str) -> anyhow::Result<Files> {
        self.issue_with(cn, true)
    }

    fn issue_with(&self, cn: &str, expired: bool) -> anyhow::Result<Files> {
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let stem = format!("{}-{cn}{}", self.name, if expired { "-expired" } else { "" });
        let (cert_path, key_path) = (self.dir.join(format!("{stem}.crt")), self.dir.join(format!("{stem}.key")));
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        Ok(Files { ca: self.cert.clone(), cert: cert_path, key: key_path })
    }
}
