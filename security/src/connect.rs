//! The client side: gRPC channels to `http://` addresses in plain TCP, and
//! to `https://` addresses in TLS with this process's certificate.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::tls::Tls;

/// Why a channel cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Not a URL.
    #[error("`{url}` is not a URL: {reason}")]
    Url { url: String, reason: String },
    /// The address's scheme and the process's TLS settings disagree.
    #[error("{0}")]
    Scheme(String),
    /// Connecting failed.
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
}

/// Whether `url` can be dialled with these TLS settings (a URL, and
/// `https://` exactly when TLS is configured).
pub fn check_address(url: &str, tls: Option<&Arc<Tls>>) -> Result<(), ConnectError> {
    prepare(url, tls, Duration::from_secs(1)).map(|_| ())
}

/// A channel to `url`, connected on first use (and again after a broken
/// connection, each time with the current certificates).
pub fn lazy_channel(url: &str, tls: Option<&Arc<Tls>>, timeout: Duration) -> Result<Channel, ConnectError> {
    let (endpoint, connector) = prepare(url, tls, timeout)?;
    Ok(match connector {
        Some(c) => endpoint.connect_with_connector_lazy(c),
        None => endpoint.connect_lazy(),
    })
}

/// A channel to `url`, connected now: an unreachable address or a refused
/// certificate is an error here, with the reason.
pub async fn channel(url: &str, tls: Option<&Arc<Tls>>, timeout: Duration) -> Result<Channel, ConnectError> {
    let (endpoint, connector) = prepare(url, tls, timeout)?;
    let connected = match connector {
        Some(c) => endpoint.connect_with_connector(c).await,
        None => endpoint.connect().await,
    };
    connected.map_err(|e| ConnectError::Unreachable { url: url.to_string(), reason: explain(&e) })
}

fn prepare(
    url: &str,
    tls: Option<&Arc<Tls>>,
    timeout: Duration,
) -> Result<(Endpoint, Option<TlsConnect>), ConnectError> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| ConnectError::Url { url: url.to_string(), reason: e.to_string() })?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    let https = match endpoint.uri().scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(ConnectError::Url {
                url: url.to_string(),
                reason: "the scheme must be http:// or https://".into(),
            })
        }
    };
    match (https, tls) {
        (true, Some(tls)) => Ok((endpoint, Some(TlsConnect { tls: tls.clone(), timeout }))),
        (false, None) => Ok((endpoint, None)),
        (true, None) => Err(ConnectError::Scheme(format!(
            "`{url}` is an https:// address, but no TLS settings are given (--tls-ca, --tls-cert and --tls-key, or WEIR_TLS_CA, WEIR_TLS_CERT and WEIR_TLS_KEY)"
        ))),
        (false, Some(_)) => Err(ConnectError::Scheme(format!(
            "TLS is configured, so `{url}` must be written as https://"
        ))),
    }
}

/// The innermost reason of a connection error, which is the useful one (a
/// refused certificate, a closed port), with a hint where one helps.
pub fn explain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut reason = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        reason = s.to_string();
        source = s.source();
    }
    match reason.as_str() {
        r if r.contains("CertificateRequired") => {
            format!("{r} (the server wants a client certificate of its CA: pass --tls-cert and --tls-key)")
        }
        r if r.contains("UnknownCA") || r.contains("BadCertificate") || r.contains("CertificateExpired") => {
            format!("{r} (the server refused this process's certificate)")
        }
        r if r.contains("UnknownIssuer") || r.contains("NotValidForName") => {
            format!("{r} (the server's certificate is not one this process trusts for that address)")
        }
        _ => reason,
    }
}

/// Opens TLS connections for a tonic endpoint.
#[derive(Clone)]
struct TlsConnect {
    tls: Arc<Tls>,
    timeout: Duration,
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tower_service::Service<Uri> for TlsConnect {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let config = self.tls.client_config();
        let timeout = self.timeout;
        Box::pin(async move {
            let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} in {uri}"));
            let host = uri.host().ok_or_else(|| invalid("no host"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone()).map_err(|_| invalid("not a host name"))?;
            let handshake = async {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                TlsConnector::from(config).connect(name, tcp).await
            };
            let stream = tokio::time::timeout(timeout, handshake)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
            Ok(TokioIo::new(stream))
        })
    }
}
