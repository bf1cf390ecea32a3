//! A minimal HTTP/1.1 server for probes and Prometheus scrapes: `GET` only,
//! one request per connection, the whole response at once. Both servers use
//! it for `/healthz`, `/readyz` and `/metrics` (and the job manager for its
//! small REST overview); nothing here is on a data path.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A response: status code, content type, body.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Response {
    /// `200` with a plain-text body.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self { status, content_type: "text/plain; charset=utf-8", body: body.into() }
    }

    /// `200` with a JSON body.
    pub fn json(body: impl Into<String>) -> Self {
        Self { status: 200, content_type: "application/json", body: body.into() }
    }

    /// Prometheus text exposition.
    pub fn metrics(body: String) -> Self {
        Self { status: 200, content_type: "text/plain; version=0.0.4; charset=utf-8", body }
    }

    /// `404`.
    pub fn not_found(path: &str) -> Self {
        Self::text(404, format!("no such path: {path}\n"))
    }
}

/// Answers a request path.
pub type Handler = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync>;

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Serves `handler` on `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, handler: Handler) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let handler = handler.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            // The request head, up to 16 KiB and 5 s.
            let head = tokio::time::timeout(Duration::from_secs(5), async {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 << 10 {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                true
            })
            .await;
            if !matches!(head, Ok(true)) {
                return;
            }
            let text = String::from_utf8_lossy(&buf);
            let mut parts = text.lines().next().unwrap_or("").split_whitespace();
            let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let path = target.split('?').next().unwrap_or("").to_string();
            let response = match method {
                "GET" | "HEAD" => handler(path).await,
                "" => Response::text(400, "malformed request\n"),
                _ => Response::text(405, "only GET is served\n"),
            };
            let mut out = format!(
                "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                response.status,
                reason(response.status),
                response.content_type,
                response.body.len()
            )
            .into_bytes();
            if method != "HEAD" {
                out.extend_from_slice(response.body.as_bytes());
            }
            if let Err(e) = stream.write_all(&out).await {
                tracing::debug!(error = %e, "writing an HTTP response failed");
            }
            let _ = stream.shutdown().await;
        });
    }
}
