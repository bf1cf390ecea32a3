//! Crash points for end-to-end tests. Compiled in only with the
//! `failpoints` feature (the test suite enables it); without it every check
//! is a constant `false` and costs nothing.
//!
//! `WEIR_FAILPOINT=name` arms crash point `name` in a process: when the code
//! reaches it, the process aborts at once, as `kill -9` would stop it.
//! `name@n` aborts at the `n`-th time the point is reached instead, so a
//! test can land a crash in a later checkpoint. Several points are
//! separated by commas.
//!
//! The message goes straight to standard error, not through the log's
//! writer: a buffered line would be lost with the process.

/// Aborts the process if failpoint `name` is armed and due.
pub fn hit(name: &str) {
    if due(name) {
        eprintln!("failpoint reached: {name} (aborting the process)");
        std::process::abort();
    }
}

#[cfg(feature = "failpoints")]
fn due(name: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;

    static HITS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);
    let Ok(armed) = std::env::var("WEIR_FAILPOINT") else { return false };
    let Some(at) = armed.split(',').find_map(|f| armed_at(f.trim(), name)) else { return false };
    let mut hits = HITS.lock().unwrap_or_else(|e| e.into_inner());
    let count = hits.get_or_insert_with(HashMap::new).entry(name.to_string()).or_default();
    *count += 1;
    *count >= at
}

/// At which hit `spec` (`name` or `name@n`) aborts at `name`, if it names it.
#[cfg(feature = "failpoints")]
fn armed_at(spec: &str, name: &str) -> Option<u32> {
    match spec.split_once('@') {
        None => (spec == name).then_some(1),
        Some((n, at)) if n == name => Some(at.parse().unwrap_or(1).max(1)),
        Some(_) => None,
    }
}

#[cfg(not(feature = "failpoints"))]
fn due(_name: &str) -> bool {
    false
}

#[cfg(all(test, feature = "failpoints"))]
mod tests {
    use super::armed_at;

    #[test]
    fn a_spec_names_a_point_and_the_hit_that_aborts() {
        assert_eq!(armed_at("upload", "upload"), Some(1));
        assert_eq!(armed_at("upload@3", "upload"), Some(3));
        assert_eq!(armed_at("upload@0", "upload"), Some(1));
        assert_eq!(armed_at("upload@x", "upload"), Some(1));
        assert_eq!(armed_at("uploaded@3", "upload"), None);
        assert_eq!(armed_at("other", "upload"), None);
    }
}
