//! The uploads a task's checkpoints run in the background, counted, so that
//! a task that finishes reports so only once they are done: when a job has
//! ended, nothing of it is still being written (the job manager then sweeps
//! its storage of what no complete checkpoint needs).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// A count of running background work, and a way to wait until none runs.
#[derive(Debug, Default)]
pub struct Background {
    running: AtomicUsize,
    idle: Notify,
}

/// Counts one piece of work out when dropped, even if it panicked.
struct Running(Arc<Background>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Background {
    /// Runs `work` on `runtime`, counted until it ends.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        work: impl Future<Output = ()> + Send + 'static,
    ) {
        self.running.fetch_add(1, Ordering::AcqRel);
        let running = Running(self.clone());
        runtime.spawn(async move {
            let _running = running;
            work.await;
        });
    }

    /// Waits until no counted work runs.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_waits_for_every_piece_of_work() {
        let b = Arc::new(Background::default());
        b.idle().await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        b.spawn(&tokio::runtime::Handle::current(), async move {
            let _ = rx.await;
            d.fetch_add(1, Ordering::SeqCst);
        });
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the work still runs");
        tx.send(()).unwrap();
        waiting.await.unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 1);
        // Work that panics is counted out too.
        b.spawn(&tokio::runtime::Handle::current(), async { panic!("boom") });
        b.idle().await;
    }
}
