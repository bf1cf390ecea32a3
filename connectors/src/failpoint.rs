//! Crash points for end-to-end tests. Compiled in only with the
//! `failpoints` feature (the test suite enables it); without it every check
//! is a constant `false`.
//!
//! `WEIR_FAILPOINT=name` arms failpoint `name` in a process; when the code
//! reaches it, the process aborts at once, as `kill -9` would stop it.

/// Aborts the process if failpoint `name` is armed.
pub fn hit(name: &str) {
    if armed(name) {
        tracing::error!(failpoint = name, "failpoint reached: aborting the process");
        std::process::abort();
    }
}

#[cfg(feature = "failpoints")]
fn armed(name: &str) -> bool {
    std::env::var("WEIR_FAILPOINT").is_ok_and(|v| v.split(',').any(|f| f.trim() == name))
}

#[cfg(not(feature = "failpoints"))]
fn armed(_name: &str) -> bool {
    false
}
