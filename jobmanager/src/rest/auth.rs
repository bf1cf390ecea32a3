//! Bearer tokens for the REST API (`weir_security::Tokens`): role `read`
//! (every GET) or `admin` (also submit, cancel, savepoint, stop). Probes,
//! the web UI's own files and the OpenAPI document stay open: they reveal
//! nothing of the cluster.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use weir_security::{Role, Tokens};

use super::ApiError;

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
    let grants = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| tokens.grants_of_header(v))
        .unwrap_or_default();
    if grants == weir_security::Grants::NONE {
        let mut r =
            ApiError(StatusCode::UNAUTHORIZED, "a valid bearer token is needed (Authorization: Bearer TOKEN)".into())
                .into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return r;
    }
    if !grants.allows(needed(req.method())) {
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
