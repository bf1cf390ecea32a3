//! Where jobs may read and write local files: every local path a job names
//! (an operator's `path`, `*_file` or `*_dir` setting, any `file://` URI,
//! its checkpoint storage) must lie under one of the roots the operator of
//! the cluster allows (`security.allowed_paths`). Checked at submission;
//! `..`, symlinks out of a root and paths elsewhere are refused.

use std::path::{Component, Path, PathBuf};

/// The roots jobs may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedPaths {
    roots: Vec<PathBuf>,
    /// What relative paths resolve against (`weir local`: the working
    /// directory); `None`: relative paths are refused, since they would
    /// resolve on task managers in directories nobody chose.
    base: Option<PathBuf>,
}

impl Default for AllowedPaths {
    fn default() -> Self {
        AllowedPaths::cluster_default()
    }
}

impl AllowedPaths {
    /// Exactly these roots (absolute paths).
    pub fn new(roots: &[PathBuf]) -> Result<AllowedPaths, String> {
        for r in roots {
            if !r.is_absolute() {
                return Err(format!("`{}` is not an absolute path", r.display()));
            }
        }
        Ok(AllowedPaths { roots: roots.iter().map(|r| resolve(r)).collect(), base: None })
    }

    /// A cluster's default: the system temp directory and `/var/lib/weir`.
    pub fn cluster_default() -> AllowedPaths {
        AllowedPaths::new(&[std::env::temp_dir(), PathBuf::from("/var/lib/weir")]).expect("absolute defaults")
    }

    /// `weir local`'s default: the working directory (relative paths
    /// resolve there) and the system temp directory.
    pub fn local_default() -> AllowedPaths {
        let cwd = std::env::current_dir().unwrap_or_else(|_| std::env::temp_dir());
        let mut a = AllowedPaths::new(&[cwd.clone(), std::env::temp_dir()]).expect("absolute defaults");
        a.base = Some(cwd);
        a
    }

    /// The roots, resolved.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Whether `path` (a local path or a `file://` URI; other schemes pass)
    /// lies under a root; the error says why not.
    pub fn check(&self, path: &str) -> Result<(), String> {
        let local = match path.strip_prefix("file://") {
            Some(p) => p,
            None if path.contains("://") => return Ok(()),
            None => path,
        };
        let p = Path::new(local);
        if p.components().any(|c| c == Component::ParentDir) {
            return Err(format!("`{path}`: `..` is not allowed in paths"));
        }
        let absolute = match (&self.base, p.is_absolute()) {
            (_, true) => p.to_path_buf(),
            (Some(base), false) => base.join(p),
            (None, false) => {
                return Err(format!(
                    "`{path}`: write an absolute path (a relative one would resolve on each task manager)"
                ))
            }
        };
        let resolved = resolve(&absolute);
        if self.roots.iter().any(|r| resolved.starts_with(r)) {
            return Ok(());
        }
        let via = if resolved != absolute { format!(" (it leads to {})", resolved.display()) } else { String::new() };
        let roots: Vec<_> = self.roots.iter().map(|r| r.display().to_string()).collect();
        Err(format!(
            "`{path}`{via} is outside the paths jobs may use ({}); the cluster's operator can allow more with security.allowed_paths",
            roots.join(", ")
        ))
    }
}

/// `path` with symlinks resolved as far as it exists (the rest is taken
/// as written, below the deepest existing directory).
fn resolve(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.into_iter().rev().fold(real, |acc: PathBuf, part| acc.join(part));
        }
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The local paths an operator's configuration names, with the field each
/// is in (`config.path`): `path`, `*_file` and `*_dir` settings, and any
/// `file://` URI.
pub fn local_paths(config: &serde_json::Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    walk(config, "config", &mut found);
    found
}

fn walk(v: &serde_json::Value, at: &str, found: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let field = format!("{at}.{k}");
                match v.as_str() {
                    Some(s)
                        if k == "path" || k.ends_with("_file") || k.ends_with("_dir") || s.starts_with("file://") =>
                    {
                        found.push((field, s.to_string()))
                    }
                    _ => walk(v, &field, found),
                }
            }
        }
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                walk(v, &format!("{at}[{i}]"), found);
            }
        }
        serde_json::Value::String(s) if s.starts_with("file://") => found.push((at.to_string(), s.clone())),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_lie_under_a_root_without_dot_dot_or_symlinks_out() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let allowed = AllowedPaths::new(&[root.path().to_path_buf()]).unwrap();
        let r = root.path().display();
        assert!(allowed.check(&format!("{r}/out/parts")).is_ok(), "a directory still to be made");
        assert!(allowed.check(&format!("file://{r}/out")).is_ok());
        assert!(allowed.check("s3://bucket/anywhere").is_ok() && allowed.check("hdfs://nn:8020/x").is_ok());
        let e = allowed.check("/etc/passwd").unwrap_err();
        assert!(e.contains("outside the paths jobs may use") && e.contains("security.allowed_paths"), "{e}");
        assert!(allowed.check(&format!("{r}/../etc")).unwrap_err().contains("`..` is not allowed"));
        assert!(allowed.check("out/parts").unwrap_err().contains("write an absolute path"));
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        let e = allowed.check(&format!("{r}/escape/secrets")).unwrap_err();
        assert!(e.contains("it leads to"), "a symlink out of the root: {e}");
        assert!(AllowedPaths::new(&[PathBuf::from("relative")]).is_err());
        let local = AllowedPaths::local_default();
        assert!(local.check("out/parts").is_ok(), "weir local: relative to the working directory");
    }

    #[test]
    fn local_paths_are_found_wherever_the_configuration_names_them() {
        let config = serde_json::json!({
            "path": "/data/out", "format": "json",
            "password_file": "/run/secret", "url": "jdbc:mysql://db/x",
            "nested": {"state_dir": "/var/x", "list": ["file:///srv/a", "s3://b/c"]},
            "topic": "t"
        });
        let mut got = local_paths(&config);
        got.sort();
        let want = [
            ("config.nested.list[0]", "file:///srv/a"),
            ("config.nested.state_dir", "/var/x"),
            ("config.password_file", "/run/secret"),
            ("config.path", "/data/out"),
        ];
        assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
    }
}
