//! A task manager's local scratch directory (RocksDB's working copies), and
//! the clean-up of those that task managers killed without a chance to
//! clean up left behind.
//!
//! Task managers of one host may share a base directory; each works in
//! `<base>/<id>/` and holds an exclusive lock on `<base>/<id>.lock` for as
//! long as it runs (the operating system drops the lock when the process
//! dies, `kill -9` included). A task manager that starts deletes every
//! `<base>/<x>/` whose `<x>.lock` it can lock: its owner is gone.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

/// This task manager's scratch directory, locked while it exists.
#[derive(Debug)]
pub(crate) struct Scratch {
    /// `<base>/<id>`.
    pub(crate) dir: PathBuf,
    /// Held for the process's lifetime.
    _lock: File,
}

fn lock_path(base: &Path, name: &str) -> PathBuf {
    base.join(format!("{name}.lock"))
}

/// Locks `path` (created if missing) and returns it once the file locked is
/// still the one at `path` (a sweeper may have deleted it meanwhile). A lock
/// another process holds is an error: a task manager of the same id runs.
fn lock(path: &Path) -> io::Result<File> {
    loop {
        let f = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::other(
                    "a task manager with the same id runs with the same state directory: \
                     give each task manager of a host its own id or state_dir",
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        if same_file(&f, path)? {
            return Ok(f);
        }
    }
}

fn same_file(f: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (held, now) = (f.metadata()?, std::fs::metadata(path));
    Ok(now.is_ok_and(|m| m.ino() == held.ino() && m.dev() == held.dev()))
}

/// Deletes the scratch directories under `base` whose task managers are
/// gone; returns how many.
fn sweep(base: &Path) -> io::Result<usize> {
    let mut swept = 0;
    for entry in std::fs::read_dir(base)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name.strip_suffix(".lock") else { continue };
        let path = entry.path();
        let Ok(f) = OpenOptions::new().write(true).open(&path) else { continue };
        if f.try_lock().is_err() || !same_file(&f, &path)? {
            continue; // its task manager runs (or another one is sweeping it)
        }
        let dir = base.join(owner);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => swept += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "deleting a gone task manager's scratch directory failed");
                continue;
            }
        }
        // Still holding the lock: nobody can be using this name.
        let _ = std::fs::remove_file(&path);
    }
    Ok(swept)
}

impl Scratch {
    /// Claims `<base>/<id>` (emptied: a task manager of the same id that ran
    /// before is gone), after deleting what gone task managers left.
    pub(crate) fn claim(base: &Path, id: &str) -> io::Result<Scratch> {
        std::fs::create_dir_all(base)?;
        let lock = lock(&lock_path(base, id))?;
        let dir = base.join(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&dir)?;
        match sweep(base) {
            Ok(0) => {}
            Ok(n) => {
                info!(base = %base.display(), directories = n, "deleted the scratch directories of task managers that are gone")
            }
            Err(e) => warn!(base = %base.display(), error = %e, "sweeping scratch directories failed"),
        }
        Ok(Scratch { dir, _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_sweeps_what_gone_task_managers_left_and_nothing_else() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let running = Scratch::claim(base, "tm-a").unwrap();
        std::fs::write(running.dir.join("db"), b"live").unwrap();
        // A task manager that died: its directory and its (unlocked) lock file.
        std::fs::create_dir_all(base.join("tm-dead/job/0-1")).unwrap();
        std::fs::write(base.join("tm-dead.lock"), b"").unwrap();
        // Something else in the base directory is not ours to delete.
        std::fs::create_dir_all(base.join("unrelated")).unwrap();

        let second = Scratch::claim(base, "tm-b").unwrap();
        assert!(!base.join("tm-dead").exists() && !base.join("tm-dead.lock").exists());
        assert!(running.dir.join("db").exists(), "a running task manager's files stay");
        assert!(base.join("unrelated").exists());
        assert!(second.dir.is_dir());

        // The same id while its task manager runs: refused, nothing touched.
        let e = Scratch::claim(base, "tm-a").unwrap_err();
        assert!(e.to_string().contains("same id"), "{e}");
        assert!(running.dir.join("db").exists());
        // The same id again after its task manager is gone: an empty directory.
        drop(running);
        let again = Scratch::claim(base, "tm-a").unwrap();
        assert!(!again.dir.join("db").exists());
    }
}
