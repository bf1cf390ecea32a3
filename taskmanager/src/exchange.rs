//! The data exchange between task managers: one gRPC stream per channel,
//! carrying Arrow IPC frames, watermarks, idleness and end-of-input in order,
//! with credits flowing back.
//!
//! Producer side ([`remote_output`]): the producing task spends credits from a
//! semaphore that only grows when the consumer grants credits, and hands
//! elements to a writer task that encodes them (one IPC stream per channel:
//! the schema once, then batches).
//!
//! Consumer side ([`ExchangeService`]): waits for the target task's inbox,
//! grants credits by acquiring permits of the channel's semaphore (which the
//! consuming task releases as it processes elements), decodes frames and
//! delivers them to the inbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};
use weir_proto::v1::data_exchange_client::DataExchangeClient;
use weir_proto::v1::data_exchange_server::DataExchange;
use weir_proto::v1::{exchange_frame::Frame, ChannelHeader, ExchangeCredit, ExchangeFrame};
use weir_runtime::barrier::CheckpointId;
use weir_runtime::channel::{Envelope, InboxHandle, OutputChannel, StreamElement};

use crate::tasks::{TaskId, Tasks};

/// Largest frame accepted on the exchange.
pub const MAX_FRAME_BYTES: usize = 256 << 20;

/// gRPC channels to other task managers, one per address, shared by tasks.
#[derive(Debug, Default, Clone)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<Arc<weir_security::Tls>>,
}

impl Peers {
    /// No channels yet; they will be TLS with `tls`.
    pub fn new(tls: Option<Arc<weir_security::Tls>>) -> Self {
        Self { channels: Arc::default(), tls }
    }

    fn channel(&self, address: &str) -> Result<Channel, String> {
        let mut g = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = g.get(address) {
            return Ok(c.clone());
        }
        let c = weir_security::lazy_channel(address, self.tls.as_ref(), Duration::from_secs(5))
            .map_err(|e| format!("peer task manager {address}: {e}"))?;
        g.insert(address.to_string(), c.clone());
        Ok(c)
    }
}

/// Opens a channel to a task on another task manager. Elements sent on the
/// returned [`OutputChannel`] travel over gRPC; a broken stream closes it, so
/// the producing task fails on its next send.
pub fn remote_output(
    runtime: &tokio::runtime::Handle,
    peers: &Peers,
    address: &str,
    header: ChannelHeader,
    schema: SchemaRef,
) -> Result<OutputChannel, String> {
    // The connection's background worker must live on the task manager's
    // runtime, not on the (shorter-lived) runtime of the calling task.
    let channel = {
        let _enter = runtime.enter();
        peers.channel(address)?
    };
    let credits = Arc::new(Semaphore::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let target = format!("subtask {} of vertex {} at {address}", header.target_subtask, header.target_vertex);
    let out = OutputChannel::new(credits.clone(), tx, header.input, header.source_subtask, &target);
    runtime.spawn(write_channel(channel, header, schema, rx, credits, target));
    Ok(out)
}

async fn write_channel(
    channel: Channel,
    header: ChannelHeader,
    schema: SchemaRef,
    mut rx: mpsc::UnboundedReceiver<Envelope>,
    credits: Arc<Semaphore>,
    target: String,
) {
    let (frames, frames_rx) = mpsc::channel::<ExchangeFrame>(4);
    let _ = frames.send(ExchangeFrame { frame: Some(Frame::Header(header)) }).await;
    let mut client = DataExchangeClient::new(channel)
        .max_decoding_message_size(MAX_FRAME_BYTES)
        .max_encoding_message_size(MAX_FRAME_BYTES);
    let mut grants = match client.exchange(ReceiverStream::new(frames_rx)).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            warn!(%target, error = %status.message(), "opening exchange channel failed");
            credits.close();
            return;
        }
    };
    let credit_sem = credits.clone();
    let reader = tokio::spawn(async move {
        loop {
            match grants.message().await {
                Ok(Some(c)) => credit_sem.add_permits(c.credits as usize),
                Ok(None) => break,
                Err(status) => {
                    debug!(error = %status.message(), "exchange credit stream ended");
                    break;
                }
            }
        }
        credit_sem.close();
    });
    let mut encoder = match StreamWriter::try_new(Vec::new(), &schema) {
        Ok(w) => w,
        Err(e) => {
            warn!(%target, error = %e, "creating IPC encoder failed");
            credits.close();
            return;
        }
    };
    while let Some(env) = rx.recv().await {
        let end = matches!(env.element, StreamElement::EndOfInput | StreamElement::Stop);
        let frame = match env.element {
            StreamElement::Batch(b) => {
                if let Err(e) = encoder.write(&b) {
                    warn!(%target, error = %e, "encoding a batch failed");
                    credits.close();
                    return;
                }
                Frame::ArrowIpc(std::mem::take(encoder.get_mut()))
            }
            StreamElement::Watermark(w) => Frame::Watermark(w),
            StreamElement::Idle(i) => Frame::Idle(i),
            StreamElement::EndOfInput => Frame::EndOfInput(true),
            StreamElement::Stop => Frame::Stopped(true),
            StreamElement::Barrier(id) => Frame::Barrier(id.0),
            StreamElement::Broken(_) => continue,
        };
        if frames.send(ExchangeFrame { frame: Some(frame) }).await.is_err() {
            credits.close();
            return;
        }
        if end {
            break;
        }
    }
    drop(frames);
    let _ = reader.await;
}

/// Serves `DataExchange`: the consuming end of remote channels.
#[derive(Debug, Clone)]
pub struct ExchangeService {
    tasks: Tasks,
    deploy_wait: Duration,
    security: weir_security::Security,
}

impl ExchangeService {
    /// A service delivering into the inboxes of `tasks`; a channel whose
    /// target is not deployed within `deploy_wait` is refused, and so is a
    /// caller without the `taskmanager` role.
    pub fn new(tasks: Tasks, deploy_wait: Duration, security: weir_security::Security) -> Self {
        Self { tasks, deploy_wait, security }
    }
}

#[tonic::async_trait]
impl DataExchange for ExchangeService {
    type ExchangeStream = ReceiverStream<Result<ExchangeCredit, Status>>;

    async fn exchange(&self, req: Request<Streaming<ExchangeFrame>>) -> Result<Response<Self::ExchangeStream>, Status> {
        self.security.check(&req, weir_security::Role::TaskManager, "send records to tasks")?;
        let mut frames = req.into_inner();
        let header = match frames.message().await? {
            Some(ExchangeFrame { frame: Some(Frame::Header(h)) }) => h,
            _ => return Err(Status::invalid_argument("an exchange stream must start with a channel header")),
        };
        let id = TaskId {
            job: header.job_id.clone(),
            attempt: header.attempt,
            vertex: header.target_vertex,
            subtask: header.target_subtask,
        };
        let inbox = self
            .tasks
            .inbox(&id, self.deploy_wait)
            .await
            .ok_or_else(|| Status::not_found(format!("task {id} is not deployed here")))?;
        let credits = inbox.credits(header.input, header.source_subtask).ok_or_else(|| {
            Status::invalid_argument(format!("task {id} has no channel {}:{}", header.input, header.source_subtask))
        })?;
        let (grant_tx, grant_rx) = mpsc::channel(16);
        let done = CancellationToken::new();
        tokio::spawn(grant_credits(credits, grant_tx, done.clone()));
        tokio::spawn(read_frames(frames, inbox, header.input, header.source_subtask, done));
        Ok(Response::new(ReceiverStream::new(grant_rx)))
    }
}

/// Turns permits released by the consuming task into credits for the producer.
async fn grant_credits(
    credits: Arc<Semaphore>,
    tx: mpsc::Sender<Result<ExchangeCredit, Status>>,
    done: CancellationToken,
) {
    loop {
        let permit = tokio::select! {
            p = credits.acquire() => p,
            _ = done.cancelled() => return,
        };
        let Ok(permit) = permit else { return };
        permit.forget();
        let mut n = 1;
        while let Ok(p) = credits.try_acquire() {
            p.forget();
            n += 1;
        }
        if tx.send(Ok(ExchangeCredit { credits: n })).await.is_err() {
            return;
        }
    }
}

async fn read_frames(
    mut frames: Streaming<ExchangeFrame>,
    inbox: InboxHandle,
    input: u32,
    channel: u32,
    done: CancellationToken,
) {
    let mut decoder = StreamDecoder::new();
    let deliver = |element| inbox.tx.send(Envelope { input, channel, element }).is_ok();
    let broken = loop {
        let frame = match frames.message().await {
            Ok(Some(ExchangeFrame { frame: Some(f) })) => f,
            Ok(Some(_)) => break "an empty frame arrived".to_string(),
            Ok(None) => break "the producer closed the stream before its end of input".to_string(),
            Err(status) => break format!("the stream from the producer broke: {}", status.message()),
        };
        let ok = match frame {
            Frame::ArrowIpc(bytes) => {
                let mut buf = Buffer::from_vec(bytes);
                let mut ok = true;
                while !buf.is_empty() {
                    match decoder.decode(&mut buf) {
                        Ok(Some(batch)) => ok &= deliver(StreamElement::Batch(batch)),
                        Ok(None) => {}
                        Err(e) => {
                            deliver(StreamElement::Broken(format!("undecodable Arrow IPC frame: {e}")));
                            done.cancel();
                            return;
                        }
                    }
                }
                ok
            }
            Frame::Watermark(w) => deliver(StreamElement::Watermark(w)),
            Frame::Idle(i) => deliver(StreamElement::Idle(i)),
            Frame::Barrier(id) => deliver(StreamElement::Barrier(CheckpointId(id))),
            Frame::EndOfInput(_) => {
                deliver(StreamElement::EndOfInput);
                done.cancel();
                return;
            }
            Frame::Stopped(_) => {
                deliver(StreamElement::Stop);
                done.cancel();
                return;
            }
            Frame::Header(_) => break "a second channel header arrived".to_string(),
        };
        if !ok {
            // The consuming task is gone (finished, failed or cancelled).
            done.cancel();
            return;
        }
    };
    deliver(StreamElement::Broken(broken));
    done.cancel();
}
