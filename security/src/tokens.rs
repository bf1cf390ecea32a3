//! Bearer tokens: a file of `TOKEN ROLE` lines, role `read` or `admin`.
//! The REST API takes them in `Authorization: Bearer TOKEN`, and the job
//! manager's gRPC API in the same metadata, so `weir` and `curl` present
//! the same tokens.

use std::path::Path;

use subtle::ConstantTimeEq;

use crate::roles::{Grants, Role};

/// Shortest token accepted.
const MIN_TOKEN_LEN: usize = 16;

/// Tokens and their roles. Never printed: `Debug` shows only how many.
#[derive(Clone)]
pub struct Tokens(Vec<(Vec<u8>, Role)>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    /// Reads a token file; errors name the file and line.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Reads `TOKEN ROLE` lines; blank lines and `#` comments are skipped.
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
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!("line {}: a token needs at least {MIN_TOKEN_LEN} characters", i + 1));
            }
            tokens.push((token.as_bytes().to_vec(), role));
        }
        if tokens.is_empty() {
            return Err("no tokens: every request would be refused".into());
        }
        Ok(Tokens(tokens))
    }

    /// What `token` may do (every entry is compared in constant time).
    pub fn grants(&self, token: &str) -> Grants {
        let mut found = Grants::NONE;
        for (t, role) in &self.0 {
            if bool::from(t.as_slice().ct_eq(token.as_bytes())) {
                found = found.union(Grants::of(*role));
            }
        }
        found
    }

    /// What the `Authorization: Bearer TOKEN` header value `header` may do.
    pub fn grants_of_header(&self, header: &str) -> Grants {
        header.strip_prefix("Bearer ").map(|t| self.grants(t.trim())).unwrap_or(Grants::NONE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_map_tokens_to_roles_and_refuse_what_they_cannot_read() {
        let t = Tokens::parse("# operators\nreader-0123456789abcdef read\n\nadmin-0123456789abcdef admin\n").unwrap();
        assert!(t.grants("reader-0123456789abcdef").allows(Role::Read));
        assert!(!t.grants("reader-0123456789abcdef").allows(Role::Admin));
        assert!(t.grants("admin-0123456789abcdef").allows(Role::Admin));
        assert!(t.grants_of_header("Bearer admin-0123456789abcdef").allows(Role::Read));
        assert_eq!(t.grants_of_header("admin-0123456789abcdef"), Grants::NONE, "the scheme is needed");
        assert_eq!(t.grants("admin-0123456789abcde"), Grants::NONE);
        assert_eq!(t.grants(""), Grants::NONE);
        assert!(Tokens::parse("x0123456789abcdefgh root\n").unwrap_err().contains("line 1: role `root`"));
        assert!(Tokens::parse("\nshort admin\n").unwrap_err().contains("line 2: a token needs at least 16"));
        assert!(Tokens::parse("onlyonefield0123456\n").unwrap_err().contains("expected `TOKEN ROLE`"));
        assert!(Tokens::parse("# nothing\n").unwrap_err().contains("no tokens"));
        assert!(!format!("{t:?}").contains("0123456789"), "tokens are never printed");
    }
}
