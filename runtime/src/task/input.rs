//! Reading a task's input channels: barrier alignment, watermarks over
//! channels, idleness and the end of each input.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::barrier::{Action, Aligner, CheckpointId, Item};
use crate::channel::StreamElement;
use crate::error::OperatorError;

use super::*;

/// Watermark and end-of-input bookkeeping over all input channels, by slot
/// (one per edge entering the task) and channel.
#[derive(Debug)]
struct InputState {
    /// The operator input each slot feeds.
    ports: Vec<usize>,
    watermarks: Vec<Vec<i64>>,
    idle: Vec<Vec<bool>>,
    ended: Vec<Vec<bool>>,
    open_per_input: Vec<u32>,
    open: u32,
    current: i64,
    all_idle: bool,
}

impl InputState {
    fn new(channels: &[u32], ports: &[usize]) -> Self {
        Self {
            ports: ports.to_vec(),
            watermarks: channels.iter().map(|&n| vec![i64::MIN; n as usize]).collect(),
            idle: channels.iter().map(|&n| vec![false; n as usize]).collect(),
            ended: channels.iter().map(|&n| vec![false; n as usize]).collect(),
            open_per_input: channels.to_vec(),
            open: channels.iter().sum(),
            current: i64::MIN,
            all_idle: false,
        }
    }

    /// The combined watermark if it advanced.
    ///
    /// When every open channel is idle, event time catches up with the
    /// largest watermark any of them reached: otherwise the channel that
    /// went idle last would hold back forever what the others allowed.
    fn advance(&mut self) -> Option<i64> {
        let mut min = i64::MAX;
        let mut max = i64::MIN;
        let mut any = false;
        for (i, ws) in self.watermarks.iter().enumerate() {
            for (c, &w) in ws.iter().enumerate() {
                if self.ended[i][c] {
                    continue;
                }
                max = max.max(w);
                if self.idle[i][c] {
                    continue;
                }
                any = true;
                min = min.min(w);
            }
        }
        if !any && self.open > 0 {
            min = max;
        }
        if min > self.current && min != i64::MAX && min != i64::MIN {
            self.current = min;
            Some(min)
        } else {
            None
        }
    }

    /// Whether every open channel is idle, if that changed.
    fn idleness_changed(&mut self) -> Option<bool> {
        let mut all = self.open > 0;
        for (i, flags) in self.idle.iter().enumerate() {
            for (c, &idle) in flags.iter().enumerate() {
                if !self.ended[i][c] && !idle {
                    all = false;
                }
            }
        }
        (all != self.all_idle).then(|| {
            self.all_idle = all;
            all
        })
    }
}

impl Task {
    pub(super) async fn run_inputs(&mut self, cancel: &CancellationToken) -> Result<Ending, TaskError> {
        let mut inbox = self.inbox.take().expect("a task without a source has inputs");
        let channels = inbox.channels();
        let mut state = InputState::new(&channels, inbox.ports());
        // Channels are numbered across inputs for alignment.
        let flat: Vec<(u32, u32)> =
            channels.iter().enumerate().flat_map(|(i, &n)| (0..n).map(move |c| (i as u32, c))).collect();
        let offsets: Vec<usize> =
            channels.iter().scan(0usize, |acc, &n| Some(std::mem::replace(acc, *acc + n as usize))).collect();
        let mut aligner = Aligner::new(flat.len(), self.options.checkpoint_mode);
        let mut actions = Vec::new();
        let mut control = self.control.take();
        let mut first_barrier: Vec<(CheckpointId, Instant)> = Vec::new();
        // Channels that ended with a stop (not drained), and checkpoint progress.
        let mut stopped = vec![false; flat.len()];
        let (mut taken, mut completed): (Option<CheckpointId>, Option<CheckpointId>) = (None, None);
        let mut ticker = tokio::time::interval(self.options.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while state.open > 0 {
            // The timer goes before input so that a busy input cannot starve
            // timed flushes and processing-time callbacks.
            let envelope = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(TaskError::Canceled),
                now = ticker.tick() => {
                    self.tick(now.into_std()).await?;
                    continue;
                }
                Some(ctl) = next_control(&mut control) => {
                    if let TaskControl::CheckpointComplete(id) = ctl {
                        self.checkpoint_complete(id, None)?;
                        self.emit_tail().await?;
                        completed = completed.max(Some(id));
                    }
                    continue;
                }
                e = inbox.recv() => match e {
                    Some(e) => e,
                    None => return Err(TaskError::Exchange(OperatorError::ChannelClosed("all input channels closed".into()))),
                },
            };
            let ch = offsets[envelope.input as usize] + envelope.channel as usize;
            match envelope.element {
                StreamElement::Barrier(id) => {
                    // A barrier's credit comes back at once; held data keeps its credits.
                    inbox.release(envelope.input, envelope.channel);
                    if !first_barrier.iter().any(|(b, _)| *b == id) {
                        first_barrier.push((id, Instant::now()));
                    }
                    aligner.barrier(ch, id, &mut actions);
                }
                StreamElement::EndOfInput => aligner.end(ch, &mut actions),
                StreamElement::Stop => {
                    stopped[ch] = true;
                    aligner.end(ch, &mut actions)
                }
                StreamElement::Broken(why) => {
                    let (i, c) = flat[ch];
                    return Err(TaskError::Exchange(OperatorError::ChannelClosed(format!(
                        "input {i} channel {c}: {why}"
                    ))));
                }
                element => aligner.element(ch, element, &mut actions),
            }
            for action in std::mem::take(&mut actions) {
                match action {
                    Action::Deliver(ch, item) => {
                        let (i, c) = flat[ch];
                        match item {
                            Item::Element(element) => self.process(&mut state, i as usize, c as usize, element)?,
                            Item::End => self.end_channel(&mut state, i as usize, c as usize, !stopped[ch])?,
                        }
                        inbox.release(i, c);
                        self.emit_tail().await?;
                    }
                    Action::Checkpoint(id) => {
                        let since = first_barrier.iter().find(|(b, _)| *b == id).map(|(_, t)| t.elapsed());
                        first_barrier.retain(|(b, _)| *b > id);
                        self.checkpoint(id, None, since.unwrap_or_default()).await?;
                        taken = Some(id);
                    }
                    Action::Aborted(id) => {
                        tracing::debug!(checkpoint = %id, "alignment given up for a newer checkpoint");
                        self.event(TaskEvent::CheckpointAborted(id));
                    }
                }
            }
        }
        self.control = control;
        Ok(if stopped.contains(&true) { Ending::Stopped { taken, completed } } else { Ending::Drained })
    }

    /// Processes one element of input `i`, channel `c`.
    fn process(&mut self, state: &mut InputState, i: usize, c: usize, element: StreamElement) -> Result<(), TaskError> {
        match element {
            StreamElement::Batch(b) => {
                self.counters.records_in.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                self.counters.bytes_in.fetch_add(b.get_array_memory_size() as u64, Ordering::Relaxed);
                if state.idle[i][c] {
                    state.idle[i][c] = false;
                    if let Some(idle) = state.idleness_changed() {
                        self.chain.feed(0, 0, StreamElement::Idle(idle))?;
                    }
                }
                self.chain.feed(0, state.ports[i], StreamElement::Batch(b))?;
            }
            StreamElement::Watermark(w) => {
                let slot = &mut state.watermarks[i][c];
                *slot = (*slot).max(w);
                if let Some(w) = state.advance() {
                    self.chain.feed(0, 0, StreamElement::Watermark(w))?;
                }
            }
            StreamElement::Idle(idle) => {
                state.idle[i][c] = idle;
                if let Some(all) = state.idleness_changed() {
                    self.chain.feed(0, 0, StreamElement::Idle(all))?;
                }
                if let Some(w) = state.advance() {
                    self.chain.feed(0, 0, StreamElement::Watermark(w))?;
                }
            }
            StreamElement::EndOfInput | StreamElement::Stop | StreamElement::Barrier(_) | StreamElement::Broken(_) => {
                unreachable!("handled by the task loop")
            }
        }
        Ok(())
    }

    /// Channel `c` of input `i` ended; `drained` is false when it stopped
    /// with a savepoint (then nothing is flushed and event time stays put).
    fn end_channel(&mut self, state: &mut InputState, i: usize, c: usize, drained: bool) -> Result<(), TaskError> {
        if state.ended[i][c] {
            return Ok(());
        }
        state.ended[i][c] = true;
        state.open -= 1;
        state.open_per_input[i] -= 1;
        if !drained {
            return Ok(());
        }
        // An input ends once every slot feeding it (all edges of a union) ended.
        let port = state.ports[i];
        if state.open_per_input[i] == 0
            && state.ports.iter().zip(&state.open_per_input).all(|(&p, &open)| p != port || open == 0)
        {
            self.chain.end_input(port)?;
        }
        if state.open > 0 {
            if let Some(w) = state.advance() {
                self.chain.feed(0, 0, StreamElement::Watermark(w))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_is_the_minimum_over_open_active_channels() {
        let mut s = InputState::new(&[2, 1], &[0, 1]);
        s.watermarks[0][0] = 10;
        assert_eq!(s.advance(), None, "channels without a watermark hold it back");
        s.watermarks[0][1] = 5;
        s.watermarks[1][0] = 7;
        assert_eq!(s.advance(), Some(5));
        s.idle[0][1] = true;
        assert_eq!(s.advance(), Some(7));
        s.ended[1][0] = true;
        assert_eq!(s.advance(), Some(10));
        s.watermarks[0][1] = 3;
        s.idle[0][1] = false;
        assert_eq!(s.advance(), None, "the watermark never goes back");
    }

    #[test]
    fn when_every_channel_is_idle_event_time_catches_up_with_the_furthest() {
        let mut s = InputState::new(&[2], &[0]);
        s.watermarks[0][0] = 100;
        s.watermarks[0][1] = 500;
        assert_eq!(s.advance(), Some(100));
        s.idle[0][1] = true; // the furthest goes idle first
        assert_eq!(s.advance(), None);
        s.idle[0][0] = true;
        assert_eq!(s.advance(), Some(500), "all idle: the furthest watermark");
        s.idle[0][0] = false;
        assert_eq!(s.advance(), None, "never back");
    }

    #[test]
    fn all_idle_is_reported_once_per_change() {
        let mut s = InputState::new(&[2], &[0]);
        s.idle[0][0] = true;
        assert_eq!(s.idleness_changed(), None);
        s.idle[0][1] = true;
        assert_eq!(s.idleness_changed(), Some(true));
        assert_eq!(s.idleness_changed(), None);
        s.idle[0][0] = false;
        assert_eq!(s.idleness_changed(), Some(false));
    }
}
