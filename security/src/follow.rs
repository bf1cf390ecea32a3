//! Material loaded from files and loaded again when they change (TLS
//! certificates, the token file): looked at no more than once per interval,
//! when the material is used; a change that does not load keeps what was
//! loaded before.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Files are looked at again at most this often.
pub(crate) const RECHECK: Duration = Duration::from_secs(1);

/// The current material, and when its files were last looked at.
pub(crate) struct Followed<T> {
    current: RwLock<Arc<T>>,
    checked: Mutex<Instant>,
    pub(crate) recheck: Duration,
}

impl<T> Followed<T> {
    /// Follows `loaded`, looked at again every [`RECHECK`].
    pub(crate) fn new(loaded: T) -> Self {
        Self { current: RwLock::new(Arc::new(loaded)), checked: Mutex::new(Instant::now()), recheck: RECHECK }
    }

    /// The material as it is, without looking at the files.
    pub(crate) fn current(&self) -> Arc<T> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The current material; when a look is due, `reload` gets it and
    /// returns what replaces it (`None`: unchanged, or a change that does
    /// not load, which `reload` reports).
    pub(crate) fn fresh(&self, reload: impl FnOnce(&T) -> Option<T>) -> Arc<T> {
        let current = self.current();
        {
            let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            if checked.elapsed() < self.recheck {
                return current;
            }
            *checked = Instant::now();
        }
        match reload(&current) {
            Some(loaded) => {
                let loaded = Arc::new(loaded);
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded.clone();
                loaded
            }
            None => current,
        }
    }
}
