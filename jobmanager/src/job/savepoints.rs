//! The savepoint and stop-with-savepoint requests of one job: a queue,
//! triggered one at a time, oldest first. Pure bookkeeping: requests are
//! known by an id the caller chose, and answers are returned, not sent.

use weir_types::CheckpointId;

/// Identity of a request (the caller maps it to whoever waits for the answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RequestId(pub(crate) u64);

/// One savepoint asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// Its identity.
    pub(crate) id: RequestId,
    /// The savepoint's directory.
    pub(crate) location: String,
    /// Whether the job stops with it.
    pub(crate) stop: bool,
    /// The checkpoint id it was triggered as.
    pub(crate) triggered: Option<CheckpointId>,
}

/// The requests of a job, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct SavepointQueue {
    requests: Vec<Request>,
    /// A stop-with-savepoint is under way: no other checkpoint is triggered.
    stopping: bool,
}

impl SavepointQueue {
    /// Adds a request.
    pub(crate) fn push(&mut self, id: RequestId, location: String, stop: bool) {
        self.stopping |= stop;
        self.requests.push(Request { id, location, stop, triggered: None });
    }

    /// Whether a stop-with-savepoint is under way.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping
    }

    /// Whether a request waits to be triggered (or a stop is under way):
    /// periodic checkpoints give way.
    pub(crate) fn wants_barriers(&self) -> bool {
        self.stopping || self.requests.iter().any(|r| r.triggered.is_none())
    }

    /// The oldest request not triggered yet, marked as triggered as `checkpoint`.
    pub(crate) fn trigger_next(&mut self, checkpoint: CheckpointId) -> Option<&Request> {
        let r = self.requests.iter_mut().find(|r| r.triggered.is_none())?;
        r.triggered = Some(checkpoint);
        Some(r)
    }

    /// The next request to trigger, if any.
    pub(crate) fn next(&self) -> Option<&Request> {
        self.requests.iter().find(|r| r.triggered.is_none())
    }

    /// Removes and returns the requests triggered as `checkpoint`; if one of
    /// them stopped the job and `failed`, the stop is called off.
    pub(crate) fn take_triggered(&mut self, checkpoint: CheckpointId, failed: bool) -> Vec<Request> {
        let (done, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.requests).into_iter().partition(|r| r.triggered == Some(checkpoint));
        self.requests = waiting;
        if failed && done.iter().any(|r| r.stop) {
            self.stopping = false;
        }
        done
    }

    /// Removes every request (the job stopped running) and calls off a stop.
    pub(crate) fn drain(&mut self) -> Vec<Request> {
        self.stopping = false;
        std::mem::take(&mut self.requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_trigger_oldest_first_and_answer_by_checkpoint() {
        let mut q = SavepointQueue::default();
        assert!(!q.wants_barriers());
        q.push(RequestId(1), "a".into(), false);
        q.push(RequestId(2), "b".into(), false);
        assert!(q.wants_barriers());
        assert_eq!(q.trigger_next(CheckpointId(5)).unwrap().id, RequestId(1));
        assert_eq!(q.next().unwrap().id, RequestId(2));
        let done = q.take_triggered(CheckpointId(5), false);
        assert_eq!(done.iter().map(|r| r.id).collect::<Vec<_>>(), [RequestId(1)]);
        assert!(q.take_triggered(CheckpointId(5), false).is_empty(), "answered once");
        assert!(q.wants_barriers(), "request 2 still waits");
    }

    #[test]
    fn a_failed_stop_is_called_off_and_a_drain_answers_everything() {
        let mut q = SavepointQueue::default();
        q.push(RequestId(1), "a".into(), true);
        assert!(q.stopping());
        q.trigger_next(CheckpointId(3));
        assert!(q.wants_barriers(), "a stop under way keeps periodic checkpoints off");
        q.take_triggered(CheckpointId(3), true);
        assert!(!q.stopping());
        q.push(RequestId(2), "b".into(), true);
        q.push(RequestId(3), "c".into(), false);
        assert_eq!(q.drain().len(), 2);
        assert!(!q.stopping() && !q.wants_barriers());
    }
}
