//! The server side: connections accepted for a tonic server, in TLS when
//! the process has TLS settings, with what the peer proved about itself.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::tls::Tls;

/// A peer that does not finish its handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections waiting for the server to take them.
const BACKLOG: usize = 64;

/// What a connection's peer is known by; tonic puts it in each request's
/// extensions.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Its address.
    pub remote: Option<SocketAddr>,
    /// The subject of the certificate it presented (checked against the
    /// CA), when the connection is TLS; read once per connection.
    pub subject: Option<Arc<str>>,
}

/// An accepted connection, plain or TLS.
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP (no TLS configured).
    Plain(TcpStream),
    /// A TLS connection whose peer presented a certificate of the CA.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            Conn::Plain(s) => PeerInfo { remote: s.peer_addr().ok(), subject: None },
            Conn::Tls(s) => {
                let (tcp, session) = s.get_ref();
                let leaf = session.peer_certificates().and_then(|c| c.first());
                PeerInfo {
                    remote: tcp.peer_addr().ok(),
                    subject: leaf.and_then(|c| crate::roles::subject_of(c).ok()).map(Arc::from),
                }
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The connections of `listener` for `tonic`'s `serve_with_incoming`. With
/// `tls`, each is a TLS handshake that requires a client certificate of the
/// CA; handshakes run side by side, so a slow or hostile peer holds up no
/// one else, and a refused one is logged with its reason. Accepting stops
/// when the server drops the stream.
pub fn incoming(listener: TcpListener, tls: Option<Arc<Tls>>, what: &'static str) -> ReceiverStream<io::Result<Conn>> {
    let rx = match tls {
        Some(tls) => accept_tls(listener, move || tls.server_config(), what, |s, _| Conn::Tls(Box::new(s))),
        None => accept_each(listener, |tcp, _, _| Some(Conn::Plain(tcp))),
    };
    ReceiverStream::new(rx)
}

/// Accepts connections of `listener` (with `TCP_NODELAY`) until the
/// receiver is dropped. `take` turns each into an item for the receiver, or
/// returns `None` when it hands the connection on itself (through the
/// sender it is given); accept errors reach the receiver as they are.
fn accept_each<T: Send + 'static>(
    listener: TcpListener,
    mut take: impl FnMut(TcpStream, SocketAddr, &mpsc::Sender<io::Result<T>>) -> Option<T> + Send + 'static,
) -> mpsc::Receiver<io::Result<T>> {
    let (tx, rx) = mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let item = match accepted {
                Ok((tcp, remote)) => {
                    let _ = tcp.set_nodelay(true);
                    take(tcp, remote, &tx).map(Ok)
                }
                Err(e) => Some(Err(e)),
            };
            if let Some(item) = item {
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Accepts connections of `listener` and runs each one's TLS handshake
/// with the configuration `config` gives at that moment, on a task of its
/// own; the established ones come out of the returned channel, `wrap`ped.
pub(crate) fn accept_tls<T: Send + 'static>(
    listener: TcpListener,
    config: impl Fn() -> Arc<rustls::ServerConfig> + Send + 'static,
    what: &'static str,
    wrap: fn(TlsStream<TcpStream>, SocketAddr) -> T,
) -> mpsc::Receiver<io::Result<T>> {
    accept_each(listener, move |tcp, remote, tx| {
        let acceptor = TlsAcceptor::from(config());
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => {
                    let _ = tx.send(Ok(wrap(s, remote))).await;
                }
                Ok(Err(e)) => {
                    tracing::info!(port = what, %remote, error = %e, "refused a connection: TLS handshake failed")
                }
                Err(_) => tracing::info!(port = what, %remote, "refused a connection: no TLS handshake within 10s"),
            }
        });
        None
    })
}
