//! In-band stream elements and credit-based channels.
//!
//! Every channel connects one upstream subtask to one downstream subtask and
//! carries data, watermarks, idleness and end-of-input *in order*. A channel
//! has a fixed number of credits: the producer spends one per element and the
//! consumer returns it once the element has been processed, so a slow consumer
//! slows its producers and nothing is buffered without bound.
//!
//! Consumers always return credits to a local semaphore per channel. For a
//! channel whose producer is on the same task manager, the producer acquires
//! from that semaphore directly; for a remote producer, the task manager's
//! exchange service acquires on its behalf and forwards each permit over the
//! network as a credit grant.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::RecordBatch;
use tokio::sync::{mpsc, Semaphore};

use crate::error::OperatorError;

/// What flows on a channel.
#[derive(Debug, Clone)]
pub enum StreamElement {
    /// A batch of records with the edge's schema.
    Batch(RecordBatch),
    /// Event time has advanced to this many milliseconds since the epoch:
    /// no record with a smaller timestamp follows on this channel.
    Watermark(i64),
    /// The upstream became idle (`true`: leave it out of watermark minimums)
    /// or active again (`false`).
    Idle(bool),
    /// Checkpoint barrier: everything before it belongs to checkpoint `.0`.
    Barrier(crate::barrier::CheckpointId),
    /// The upstream has finished; nothing follows.
    EndOfInput,
    /// The upstream stopped after a stop-with-savepoint completed: nothing
    /// follows, and unlike [`StreamElement::EndOfInput`] nothing held is
    /// flushed (open windows stay in the savepoint instead of firing).
    Stop,
    /// The channel broke (its producer vanished without an end of input).
    /// Raised by the transport, never by operators; the consuming task fails.
    Broken(String),
}

/// An element addressed to one input channel of a task.
#[derive(Debug)]
pub struct Envelope {
    /// Input index of the consuming task's head operator.
    pub input: u32,
    /// Upstream subtask index within that input.
    pub channel: u32,
    /// The element.
    pub element: StreamElement,
}

/// Default number of credits (elements in flight) per channel.
pub const DEFAULT_CREDITS: usize = 8;

/// The producing end of a channel.
#[derive(Debug, Clone)]
pub struct OutputChannel {
    credits: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Envelope>,
    input: u32,
    channel: u32,
    /// For error messages: where this channel leads.
    target: Arc<str>,
    /// Where time spent waiting for credits is added up (ns).
    blocked: Option<Arc<AtomicU64>>,
}

impl OutputChannel {
    /// A channel that spends `credits` and delivers to `tx` tagged with
    /// `(input, channel)`.
    pub fn new(
        credits: Arc<Semaphore>,
        tx: mpsc::UnboundedSender<Envelope>,
        input: u32,
        channel: u32,
        target: &str,
    ) -> Self {
        Self { credits, tx, input, channel, target: target.into(), blocked: None }
    }

    /// Counts the time this channel waits for credits into `blocked` (ns).
    pub fn count_backpressure(mut self, blocked: Arc<AtomicU64>) -> Self {
        self.blocked = Some(blocked);
        self
    }

    /// Sends one element, waiting for a credit first.
    pub async fn send(&self, element: StreamElement) -> Result<(), OperatorError> {
        let permit = match self.credits.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                let waiting = std::time::Instant::now();
                let p = self
                    .credits
                    .acquire()
                    .await
                    .map_err(|_| OperatorError::ChannelClosed(format!("to {}", self.target)))?;
                if let Some(b) = &self.blocked {
                    b.fetch_add(waiting.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
                p
            }
        };
        permit.forget();
        self.tx
            .send(Envelope { input: self.input, channel: self.channel, element })
            .map_err(|_| OperatorError::ChannelClosed(format!("to {}", self.target)))
    }
}

/// The consuming side of all input channels of one task. Channels are
/// grouped in slots, one per edge entering the task; each slot feeds an
/// input of the task's first operator (its port), and the slots of a union
/// share one.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<Envelope>,
    handle: InboxHandle,
    ports: Vec<usize>,
}

/// What producers (local, or the exchange service for remote ones) need to
/// deliver into an [`Inbox`].
#[derive(Debug, Clone)]
pub struct InboxHandle {
    /// Delivery queue; bounded in practice by the credits.
    pub tx: mpsc::UnboundedSender<Envelope>,
    /// Credits per input, per channel.
    pub credits: Arc<Vec<Vec<Arc<Semaphore>>>>,
}

impl InboxHandle {
    /// A local producer's end of channel `(input, channel)`.
    pub fn output_channel(&self, input: u32, channel: u32, target: &str) -> Option<OutputChannel> {
        let sem = self.credits.get(input as usize)?.get(channel as usize)?;
        Some(OutputChannel::new(sem.clone(), self.tx.clone(), input, channel, target))
    }

    /// Credits of channel `(input, channel)`.
    pub fn credits(&self, input: u32, channel: u32) -> Option<Arc<Semaphore>> {
        self.credits.get(input as usize)?.get(channel as usize).cloned()
    }
}

impl Inbox {
    /// An inbox with `channels[i]` channels on input `i`, each with `credits`.
    pub fn new(channels: &[u32], credits: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let credits = channels.iter().map(|&n| (0..n).map(|_| Arc::new(Semaphore::new(credits))).collect()).collect();
        let ports = (0..channels.len()).collect();
        Self { rx, handle: InboxHandle { tx, credits: Arc::new(credits) }, ports }
    }

    /// The operator input each slot feeds (by default slot `i` feeds input `i`).
    pub fn with_ports(mut self, ports: Vec<usize>) -> Self {
        assert_eq!(ports.len(), self.ports.len(), "one port per slot");
        self.ports = ports;
        self
    }

    /// The operator input each slot feeds.
    pub fn ports(&self) -> &[usize] {
        &self.ports
    }

    /// Handle for producers.
    pub fn handle(&self) -> InboxHandle {
        self.handle.clone()
    }

    /// Number of channels per input.
    pub fn channels(&self) -> Vec<u32> {
        self.handle.credits.iter().map(|c| c.len() as u32).collect()
    }

    /// Next element from any channel; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Envelope> {
        self.rx.recv().await
    }

    /// Returns the credit of a processed element.
    pub fn release(&self, input: u32, channel: u32) {
        if let Some(sem) = self.handle.credits(input, channel) {
            sem.add_permits(1);
        }
    }
}

impl Drop for Inbox {
    /// A consumer that is gone takes no more elements: producers waiting for
    /// a credit fail at once (channel closed) instead of waiting forever.
    fn drop(&mut self) {
        for sem in self.handle.credits.iter().flatten() {
            sem.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_producer_waiting_for_credit_fails_when_the_consumer_goes_away() {
        let inbox = Inbox::new(&[1], 1);
        let out = inbox.handle().output_channel(0, 0, "t").unwrap();
        out.send(StreamElement::Watermark(1)).await.unwrap();
        let waiting = tokio::spawn(async move { out.send(StreamElement::Watermark(2)).await });
        drop(inbox);
        let r = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("no hang").unwrap();
        assert!(matches!(r, Err(OperatorError::ChannelClosed(_))), "{r:?}");
    }

    #[tokio::test]
    async fn a_producer_blocks_when_credits_run_out_and_resumes_on_release() {
        let mut inbox = Inbox::new(&[1], 2);
        let out = inbox.handle().output_channel(0, 0, "t").unwrap();
        out.send(StreamElement::Watermark(1)).await.unwrap();
        out.send(StreamElement::Watermark(2)).await.unwrap();
        let blocked = tokio::time::timeout(Duration::from_millis(50), out.send(StreamElement::Watermark(3))).await;
        assert!(blocked.is_err(), "third send must wait for a credit");
        let first = inbox.recv().await.unwrap();
        assert!(matches!(first.element, StreamElement::Watermark(1)));
        inbox.release(first.input, first.channel);
        out.send(StreamElement::Watermark(3)).await.unwrap();
        for want in [2, 3] {
            match inbox.recv().await.unwrap().element {
                StreamElement::Watermark(w) => assert_eq!(w, want),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
