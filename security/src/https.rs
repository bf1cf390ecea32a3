//! HTTPS for the REST API and web UI: the process's certificate, and no
//! client certificate asked for (browsers and `curl` prove themselves with
//! bearer tokens instead).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::serve::accept_tls;
use crate::tls::Tls;

/// An `axum` listener whose connections are TLS.
pub struct HttpsListener {
    connections: mpsc::Receiver<io::Result<(TlsStream<TcpStream>, SocketAddr)>>,
    local: SocketAddr,
}

impl std::fmt::Debug for HttpsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpsListener({})", self.local)
    }
}

impl HttpsListener {
    /// Serves HTTPS on `listener` with `tls`'s certificate (followed through
    /// rotations like every other port).
    pub fn new(listener: TcpListener, tls: Arc<Tls>, what: &'static str) -> io::Result<HttpsListener> {
        let local = listener.local_addr()?;
        let connections = accept_tls(listener, move || tls.https_config(), what, |s, a| (s, a));
        Ok(HttpsListener { connections, local })
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.connections.recv().await {
                Some(Ok(c)) => return c,
                Some(Err(e)) => tracing::warn!(addr = %self.local, error = %e, "accepting an HTTPS connection failed"),
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
