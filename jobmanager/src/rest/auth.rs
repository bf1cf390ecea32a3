//! Bearer tokens for the REST API: a file of `TOKEN ROLE` lines, role
//! `read` (every GET) or `admin` (also submit, cancel, savepoint, stop).
//! Probes, the web UI's own files and the OpenAPI document stay open: they
//! reveal nothing of the cluster.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::ApiError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read the cluster and its jobs.
    Read,
    /// Also submit, cancel, take savepoints and stop jobs.
    Admin,
}

/// The tokens the REST API accepts.
#[derive(Clone)]
pub struct Tokens(Vec<(Vec<u8>, Role)>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    /// Reads a token file.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses `TOKEN ROLE` lines; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(token), Some(role), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {}: expected `TOKEN ROLE`", i + 1));
            };
            let role = match role {
                "read" => Role::Read,
                "admin" => Role::Admin,
                other => return Err(format!("line {}: role `{other}` is neither `read` nor `admin`", i + 1)),
            };
            if token.len() < 16 {
                return Err(format!("line {}: a token needs at least 16 characters", i + 1));
            }
            tokens.push((token.as_bytes().to_vec(), role));
        }
        if tokens.is_empty() {
            return Err("no tokens: every request would be refused".into());
        }
        Ok(Tokens(tokens))
    }

    /// The role of `token`, comparing against every entry in constant time.
    pub fn role(&self, token: &str) -> Option<Role> {
        let mut found = None;
        for (t, role) in &self.0 {
            if bool::from(t.as_slice().ct_eq(token.as_bytes())) {
                found = found.max(Some(*role));
            }
        }
        found
    }
}

/// Paths anyone may fetch.
fn open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/" | "/v1/openapi.json")
        || path.starts_with("/ui/")
        || (path.starts_with("/jobs/") && !path[6..].contains('/'))
}

/// The role a request needs: reading for GET, administration otherwise.
fn needed(method: &Method) -> Role {
    if method == Method::GET || method == Method::HEAD {
        Role::Read
    } else {
        Role::Admin
    }
}

/// Refuses requests without a token of the role they need.
pub(crate) async fn require(State(tokens): State<Arc<Tokens>>, req: Request, next: Next) -> Response {
    if open(req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(role) = presented.and_then(|t| tokens.role(t)) else {
        let mut r =
            ApiError(StatusCode::UNAUTHORIZED, "a valid bearer token is needed (Authorization: Bearer TOKEN)".into())
                .into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return r;
    };
    let need = needed(req.method());
    if role < need {
        return ApiError(
            StatusCode::FORBIDDEN,
            "this token may only read; submitting and changing jobs needs admin".into(),
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_map_tokens_to_roles_and_refuse_what_they_cannot_read() {
        let t = Tokens::parse("# operators\nreader-0123456789abcdef read\n\nadmin-0123456789abcdef admin\n").unwrap();
        assert_eq!(t.role("reader-0123456789abcdef"), Some(Role::Read));
        assert_eq!(t.role("admin-0123456789abcdef"), Some(Role::Admin));
        assert_eq!(t.role("admin-0123456789abcde"), None);
        assert_eq!(t.role(""), None);
        assert!(Tokens::parse("x0123456789abcdefgh root\n").unwrap_err().contains("line 1: role `root`"));
        assert!(Tokens::parse("\nshort admin\n").unwrap_err().contains("line 2: a token needs at least 16"));
        assert!(Tokens::parse("onlyonefield0123456\n").unwrap_err().contains("expected `TOKEN ROLE`"));
        assert!(Tokens::parse("# nothing\n").unwrap_err().contains("no tokens"));
    }

    #[test]
    fn probes_and_the_pages_are_open_the_api_is_not() {
        for p in ["/healthz", "/readyz", "/", "/ui/app.js", "/jobs/abc", "/v1/openapi.json"] {
            assert!(open(p), "{p}");
        }
        for p in ["/v1/jobs", "/v1/jobs/abc", "/v1/overview", "/jobs/abc/cancel", "/metrics"] {
            assert!(!open(p), "{p}");
        }
        assert_eq!(needed(&Method::GET), Role::Read);
        assert_eq!(needed(&Method::POST), Role::Admin);
    }
}
