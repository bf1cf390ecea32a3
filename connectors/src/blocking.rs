//! Async clients (database drivers, object stores) called from operators,
//! which are synchronous: each call runs on a small runtime shared by the
//! process's connectors and the operator waits for it, as the Kafka sink
//! waits for its flushes.

use std::future::Future;
use std::sync::OnceLock;

/// The runtime the connectors' calls run on: two threads, started on first use.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-connectors")
            .enable_all()
            .build()
            .expect("starting the connectors' runtime")
    })
}

/// Runs `f` on the connectors' runtime and waits for it. Works from inside
/// the task's own runtime, which a nested `block_on` would not.
pub fn wait<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    start(f).recv().expect("the connectors' runtime dropped a call")
}

/// Starts `f` on the connectors' runtime without waiting: the operator goes
/// on and takes the result from the receiver later.
pub fn start<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> std::sync::mpsc::Receiver<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(f.await);
    });
    rx
}
