//! A process's TLS material: its CA bundle, certificate chain and key,
//! read from PEM files and read again when they change, so that rotated
//! certificates (cert-manager renews them in place) take effect on the next
//! connection without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::follow::Followed;
use crate::roles::subject_of;

/// Where a process's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM bundle of the certificate authorities whose certificates are trusted.
    pub ca: PathBuf,
    /// PEM certificate chain of this process, leaf first.
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
}

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// A file holds no usable PEM of the expected kind.
    #[error("{}: {what}", path.display())]
    Pem { path: PathBuf, what: String },
    /// rustls refused the material (e.g. a key that does not match the certificate).
    #[error("{0}")]
    Config(String),
}

/// TLS settings that follow their files. Handshakes take the current
/// configuration; connections already open keep the one they started with.
pub struct Tls {
    files: TlsFiles,
    /// Looked at again on a handshake.
    loaded: Followed<Loaded>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish_non_exhaustive()
    }
}

struct Loaded {
    contents: [Vec<u8>; 3],
    server: Arc<ServerConfig>,
    https: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    subject: String,
}

impl Tls {
    /// Reads and checks the files; errors name the file and what is wrong.
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let contents = read_all(&files)?;
        let loaded = build(&files, contents)?;
        tracing::info!(subject = %loaded.subject, ca = %files.ca.display(), "TLS on: peers need a certificate of this CA");
        Ok(Arc::new(Tls { files, loaded: Followed::new(loaded) }))
    }

    /// The files this follows.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The subject of this process's own certificate.
    pub fn subject(&self) -> String {
        self.fresh().subject.clone()
    }

    /// Configuration for accepting a connection: this process's certificate,
    /// and a client certificate of the CA required.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.fresh().server.clone()
    }

    /// Configuration for serving HTTPS (REST and the web UI): this
    /// process's certificate, no client certificate asked for.
    pub fn https_config(&self) -> Arc<ServerConfig> {
        self.fresh().https.clone()
    }

    /// Configuration for opening a connection: the server's certificate must
    /// be of the CA and name the host dialled; this process's certificate is
    /// presented.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.fresh().client.clone()
    }

    /// The current material, re-read first when the files changed. A change
    /// that does not load (a half-written rotation) keeps the previous
    /// material and is logged; the next check tries again.
    fn fresh(&self) -> Arc<Loaded> {
        self.loaded.fresh(|current| {
            let contents = match read_all(&self.files) {
                Ok(c) if c != current.contents => c,
                Ok(_) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "TLS files unreadable; keeping the certificates loaded before");
                    return None;
                }
            };
            match build(&self.files, contents) {
                Ok(loaded) => {
                    tracing::info!(subject = %loaded.subject, "TLS files changed; new connections use them");
                    Some(loaded)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "changed TLS files do not load; keeping the certificates loaded before");
                    None
                }
            }
        })
    }
}

fn read_all(files: &TlsFiles) -> Result<[Vec<u8>; 3], TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|source| TlsError::Read { path: p.to_path_buf(), source });
    Ok([read(&files.ca)?, read(&files.cert)?, read(&files.key)?])
}

fn certificates(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: path.to_path_buf(), what: format!("not PEM certificates: {e}") })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { path: path.to_path_buf(), what: "holds no CERTIFICATE block".into() });
    }
    Ok(certs)
}

fn build(files: &TlsFiles, contents: [Vec<u8>; 3]) -> Result<Loaded, TlsError> {
    let [ca, cert, key] = &contents;
    let mut roots = RootCertStore::empty();
    for c in certificates(&files.ca, ca)? {
        roots.add(c).map_err(|e| TlsError::Pem { path: files.ca.clone(), what: format!("not a usable CA: {e}") })?;
    }
    let roots = Arc::new(roots);
    let chain = certificates(&files.cert, cert)?;
    let subject = subject_of(&chain[0])
        .map_err(|e| TlsError::Pem { path: files.cert.clone(), what: format!("not an X.509 certificate: {e}") })?;
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| TlsError::Pem { path: files.key.clone(), what: format!("no usable private key: {e}") })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config =
        |e: rustls::Error| TlsError::Config(format!("{} and {}: {e}", files.cert.display(), files.key.display()));

    let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| TlsError::Config(format!("{}: {e}", files.ca.display())))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config)?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(config)?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut https = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config)?
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(config)?;
    https.alpn_protocols = vec![b"http/1.1".to_vec()];

    let servers = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsError::Config(format!("{}: {e}", files.ca.display())))?;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config)?
        .with_webpki_verifier(servers)
        .with_client_auth_cert(chain, key)
        .map_err(config)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded { contents, server: Arc::new(server), https: Arc::new(https), client: Arc::new(client), subject })
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    use super::*;

    /// A CA (written as `ca.crt` into `dir`) to sign with.
    fn ca(dir: &Path) -> Issuer<'static, KeyPair> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "test-ca");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        std::fs::write(dir.join("ca.crt"), p.self_signed(&key).unwrap().pem()).unwrap();
        Issuer::new(p, key)
    }

    /// Writes a certificate for `cn` signed by `ca` and its key into `dir`.
    fn issue(dir: &Path, ca: &Issuer<'static, KeyPair>, cn: &str) {
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        std::fs::write(dir.join("tls.crt"), p.signed_by(&key, ca).unwrap().pem()).unwrap();
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    }

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles { ca: dir.join("ca.crt"), cert: dir.join("tls.crt"), key: dir.join("tls.key") }
    }

    #[test]
    fn rotated_files_are_taken_and_broken_ones_keep_the_last_good_material() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        issue(dir.path(), &ca, "first");
        let mut tls = Arc::try_unwrap(Tls::load(files(dir.path())).unwrap()).unwrap();
        tls.loaded.recheck = std::time::Duration::ZERO;
        assert_eq!(tls.subject(), "CN=first");
        issue(dir.path(), &ca, "second");
        assert_eq!(tls.subject(), "CN=second", "a rotated certificate is read on the next use");
        std::fs::write(dir.path().join("tls.crt"), "half a rotation").unwrap();
        assert_eq!(tls.subject(), "CN=second", "a broken file keeps what was loaded");
        std::fs::remove_file(dir.path().join("tls.key")).unwrap();
        assert_eq!(tls.subject(), "CN=second", "a missing file too");
    }

    #[test]
    fn unusable_files_are_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        issue(dir.path(), &ca, "one");
        let key_of_one = std::fs::read(dir.path().join("tls.key")).unwrap();
        issue(dir.path(), &ca, "two");
        std::fs::write(dir.path().join("tls.key"), key_of_one).unwrap();
        let e = Tls::load(files(dir.path())).unwrap_err().to_string();
        assert!(e.contains("tls.crt and") && e.contains("tls.key"), "a key of another certificate: {e}");
        std::fs::write(dir.path().join("ca.crt"), "no pem here").unwrap();
        let e = Tls::load(files(dir.path())).unwrap_err().to_string();
        assert!(e.contains("ca.crt: holds no CERTIFICATE block"), "{e}");
        let e = Tls::load(TlsFiles { ca: dir.path().join("missing.crt"), ..files(dir.path()) }).unwrap_err();
        assert!(e.to_string().contains("reading") && e.to_string().contains("missing.crt"), "{e}");
    }
}
