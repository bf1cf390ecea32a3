//! Bearer tokens: a file of `TOKEN ROLE` lines, role `read` or `admin`.
//! The REST API takes them in `Authorization: Bearer TOKEN`, and the job
//! manager's gRPC API in the same metadata, so `weir` and `curl` present
//! the same tokens.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::follow::Followed;
use crate::roles::{Grants, Role};

/// Shortest token accepted.
const MIN_TOKEN_LEN: usize = 16;

/// Tokens and their roles. Never printed: `Debug` shows only how many.
/// Loaded from a file, they follow it: a changed file is read again (at
/// most once a second, when a token is checked), so tokens are added and
/// revoked without a restart; a file that no longer reads keeps the tokens
/// loaded before, and says so in the log.
pub struct Tokens {
    entries: Followed<Entries>,
    /// The file they were loaded from, if any.
    file: Option<PathBuf>,
}

/// Parsed tokens, and the text they came from.
struct Entries {
    list: Vec<(Vec<u8>, Role)>,
    text: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.entries.current().list.len())
    }
}

impl Tokens {
    /// Reads a token file, followed from then on; errors name the file and line.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let list = Self::entries_of(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Tokens { entries: Followed::new(Entries { list, text }), file: Some(path.to_path_buf()) })
    }

    /// Tokens from `TOKEN ROLE` lines (not followed).
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let list = Self::entries_of(text)?;
        Ok(Tokens { entries: Followed::new(Entries { list, text: text.to_string() }), file: None })
    }

    /// The current tokens, read again first when the file changed.
    fn fresh(&self) -> Arc<Entries> {
        let Some(path) = &self.file else { return self.entries.current() };
        self.entries.fresh(|current| {
            let text = match std::fs::read_to_string(path) {
                Ok(t) if t != current.text => t,
                Ok(_) => return None,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "the token file is unreadable; keeping the tokens loaded before");
                    return None;
                }
            };
            match Self::entries_of(&text) {
                Ok(list) => {
                    tracing::info!(file = %path.display(), tokens = list.len(), "the token file changed; its tokens apply now");
                    Some(Entries { list, text })
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "the changed token file does not read; keeping the tokens loaded before");
                    None
                }
            }
        })
    }

    /// Reads `TOKEN ROLE` lines; blank lines and `#` comments are skipped.
    fn entries_of(text: &str) -> Result<Vec<(Vec<u8>, Role)>, String> {
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
        Ok(tokens)
    }

    /// What `token` may do (every entry is compared in constant time).
    pub fn grants(&self, token: &str) -> Grants {
        let mut found = Grants::NONE;
        for (t, role) in &self.fresh().list {
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

    #[test]
    fn a_changed_token_file_applies_without_a_restart_and_a_broken_one_keeps_the_last_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "old-0123456789abcdef admin\n").unwrap();
        let mut t = Tokens::load(&path).unwrap();
        t.entries.recheck = std::time::Duration::ZERO;
        assert!(t.grants("old-0123456789abcdef").allows(Role::Admin));
        // Rotation: the old token is revoked, a new one added.
        std::fs::write(&path, "new-0123456789abcdef read\n").unwrap();
        assert_eq!(t.grants("old-0123456789abcdef"), Grants::NONE, "revoked");
        assert!(t.grants("new-0123456789abcdef").allows(Role::Read));
        // A half-written file and a missing one keep what was loaded.
        std::fs::write(&path, "new-0123456789abcdef").unwrap();
        assert!(t.grants("new-0123456789abcdef").allows(Role::Read));
        std::fs::remove_file(&path).unwrap();
        assert!(t.grants("new-0123456789abcdef").allows(Role::Read));
        assert_eq!(format!("{t:?}"), "Tokens(1 configured)");
    }
}
