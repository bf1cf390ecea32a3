//! Turning a deployment request into a running task: instantiate the chain,
//! create its inbox, wire its outputs (local inboxes or remote streams), and
//! run it on a thread of its own until it ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{info, warn};
use weir_proto::v1;
use weir_runtime::channel::{Inbox, OutputChannel};
use weir_runtime::graph::{channel_index, Partitioning};
use weir_runtime::operators::Registry;
use weir_runtime::plan::Plan;
use weir_runtime::task::{Chain, Checkpointer, OutputEdge, Task, TaskCounters, TaskError, TaskOptions};
use weir_state::CheckpointStorage;
use weir_types::{CheckpointId, ErrorClass, Failure};

use crate::checkpoint::{Background, CheckpointSetup, Restore, SavepointTable, TaskCheckpointer};
use crate::exchange::{remote_output, Peers};
use crate::tasks::{RunningTask, TaskId, Tasks};

/// What every deployment on a task manager shares.
#[derive(Debug, Clone)]
pub struct DeployContext {
    /// This task manager's id.
    pub task_manager_id: String,
    /// Tasks and inboxes.
    pub tasks: Tasks,
    /// The operator kinds tasks are instantiated from.
    pub operators: Arc<Registry>,
    /// Connections to other task managers.
    pub peers: Peers,
    /// The task manager's main runtime (network I/O runs there).
    pub runtime: tokio::runtime::Handle,
    /// Reports to the job manager.
    pub reports: mpsc::UnboundedSender<v1::TaskStateReport>,
    /// Data-plane tunables.
    pub options: TaskOptions,
    /// Credits per input channel.
    pub credits: usize,
    /// How long to wait for a local consumer to be deployed.
    pub deploy_wait: Duration,
    /// The job manager (checkpoint acknowledgements).
    pub jm: weir_proto::v1::job_manager_service_client::JobManagerServiceClient<tonic::transport::Channel>,
    /// Local working directory of state backends.
    pub state_dir: std::path::PathBuf,
    /// S3 settings for checkpoint storage.
    pub s3: weir_state::S3Options,
    /// Savepoints announced by the job manager.
    pub savepoints: SavepointTable,
    /// Nice increment of task threads.
    pub task_nice: i32,
}

/// Lowers the calling thread's scheduling priority by `nice` (Linux; a
/// thread's nice value is its own there). Task threads run their operators
/// flat out; the task manager's runtime threads (checkpoint uploads and
/// acknowledgements, heartbeats, the exchange's network I/O) mostly sleep and
/// must run as soon as they wake. At equal priority a waking thread may wait
/// for a busy task's time slice on every hand-off, which on a machine with
/// fewer cores than busy tasks adds up to tens of milliseconds per checkpoint.
fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let me = Some(rustix::thread::gettid());
        let result = getpriority_process(me).and_then(|now| setpriority_process(me, (now + nice).min(19)));
        if let Err(e) = result {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| warn!(error = %e, "task threads keep the process's scheduling priority"));
        }
    }
}

/// How a task ended other than by finishing.
enum Ended {
    Canceled,
    /// An operator (or the state backend) failed.
    Failed(Failure),
    /// The data plane failed (often the echo of a lost peer).
    Exchange(Failure),
}

/// Deploys one task. Returns once it is instantiated; it runs on its own thread.
pub fn deploy(ctx: &DeployContext, req: v1::DeployTaskRequest) -> Result<(), Status> {
    let key = req.task.ok_or_else(|| Status::invalid_argument("no task key"))?;
    let graph = req.graph.ok_or_else(|| Status::invalid_argument("no job graph"))?;
    let plan = ctx
        .tasks
        .plan(&key.job_id, key.attempt, || {
            let g = weir_proto::graph_from_proto(&graph).map_err(|e| e.to_string())?;
            Plan::new(&g, &ctx.operators, 0).map_err(|e| e.to_string())
        })
        .map_err(Status::invalid_argument)?;
    let vertex = plan
        .vertices
        .get(key.vertex as usize)
        .ok_or_else(|| Status::invalid_argument(format!("the job has no vertex {}", key.vertex)))?;
    if key.subtask >= vertex.parallelism {
        return Err(Status::invalid_argument(format!("vertex {} has no subtask {}", vertex.name, key.subtask)));
    }
    let mut chain = Chain::new(&plan, key.vertex, key.subtask).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let checkpointing = match (&plan.graph.checkpoint, req.checkpoint_storage.is_empty()) {
        (Some(c), false) => {
            let storage = CheckpointStorage::from_uri_with(&req.checkpoint_storage, &ctx.s3)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let backend = c.backend;
            let restore = if req.restore.is_empty() {
                None
            } else {
                let from = if req.restore_storage.is_empty() {
                    storage.clone()
                } else {
                    CheckpointStorage::from_uri_with(&req.restore_storage, &ctx.s3)
                        .map_err(|e| Status::invalid_argument(e.to_string()))?
                };
                let snapshots = req.restore.iter().map(weir_proto::snapshot_from_proto).collect();
                Some(Restore { from, checkpoint: CheckpointId(req.restore_checkpoint), snapshots })
            };
            Some((storage, backend, c.changelog, restore))
        }
        _ => None,
    };
    let (control_tx, control_rx) = tokio::sync::mpsc::unbounded_channel();
    let is_source = plan.inputs_of(key.vertex).is_empty();
    let parallelism = vertex.parallelism;
    let inputs = plan.inputs_of(key.vertex);
    let inbox = (!inputs.is_empty())
        .then(|| Inbox::new(&plan.input_channels(key.vertex), ctx.credits).with_ports(plan.input_ports(key.vertex)));
    let id = TaskId { job: key.job_id.clone(), attempt: key.attempt, vertex: key.vertex, subtask: key.subtask };
    let cancel = CancellationToken::new();
    let counters = Arc::new(TaskCounters::default());
    ctx.tasks.add(
        id.clone(),
        RunningTask {
            cancel: cancel.clone(),
            counters: counters.clone(),
            control: control_tx,
            is_source,
            name: vertex.name.clone(),
            rows: chain.operator_rows(),
        },
        inbox.as_ref().map(|i| i.handle()),
    );
    let ctx = ctx.clone();
    let name = format!("{}#{}", vertex.name, key.subtask);
    let placements = req.placements;
    let finished = req.finished;
    std::thread::Builder::new()
        .name(format!("task-{}-{}", key.vertex, key.subtask))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let failure = Failure::new(ErrorClass::Transient, format!("starting the task runtime failed: {e}"));
                    report(&ctx, &key, v1::TaskState::TaskFailed, &failure, false, &counters);
                    ctx.tasks.remove(&id);
                    return;
                }
            };
            report(&ctx, &key, v1::TaskState::TaskInitializing, &Failure::new(ErrorClass::Transient, ""), false, &counters);
            let background = Arc::new(Background::default());
            // A panic in an operator fails the task (and so the job, or a restart)
            // instead of silently ending its thread.
            let run = std::panic::AssertUnwindSafe(|| rt.block_on(async {
                let checkpointer: Option<Box<dyn Checkpointer>> = match checkpointing {
                    Some((storage, backend, changelog, restore)) => {
                        let setup = CheckpointSetup {
                            storage,
                            backend,
                            changelog,
                            state_dir: &ctx.state_dir,
                            operators: chain.operator_uids(),
                            parallelism,
                            max_parallelism: plan.graph.max_parallelism,
                            savepoints: ctx.savepoints.clone(),
                            s3: ctx.s3.clone(),
                            state_bytes: counters.state_bytes.clone(),
                            background: background.clone(),
                        };
                        let (cp, entries) =
                            TaskCheckpointer::open(setup, key.clone(), ctx.jm.clone(), ctx.runtime.clone(), restore)
                                .await
                                .map_err(Ended::Failed)?;
                        if !entries.is_empty() {
                            chain.restore(&entries).map_err(|e| Ended::Failed(Failure::of(&e)))?;
                        }
                        Some(Box::new(cp))
                    }
                    None => None,
                };
                let outputs = wire_outputs(&ctx, &plan, &key, &placements, counters.backpressure_ns.clone()).await.map_err(|e| Ended::Exchange(Failure::new(ErrorClass::Transient, e)))?;
                // Lowered only now: threads the backend started while opening
                // (RocksDB's flushes) keep the process's priority.
                lower_priority(ctx.task_nice);
                report(&ctx, &key, v1::TaskState::TaskRunning, &Failure::new(ErrorClass::Transient, ""), false, &counters);
                let task = Task {
                    chain,
                    inbox,
                    outputs,
                    options: ctx.options,
                    counters: counters.clone(),
                    control: Some(control_rx),
                    events: None,
                    checkpointer,
                    finished,
                };
                let ended = task.run(cancel).await.map_err(|e| match e {
                    TaskError::Canceled => Ended::Canceled,
                    e @ TaskError::Exchange(_) => Ended::Exchange(Failure::of(&e)),
                    e @ TaskError::Operator { .. } => Ended::Failed(Failure::of(&e)),
                });
                // A finished task is finished once its uploads are: when its
                // job has ended, nothing of it is still being written. (A
                // cancelled or failed one reports at once, so that its job's
                // recovery does not wait for storage.)
                if ended.is_ok() {
                    background.idle().await;
                }
                ended
            }));
            let result = std::panic::catch_unwind(run).unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_string());
                Err(Ended::Failed(Failure::new(ErrorClass::Internal, format!("the task panicked: {what}"))))
            });
            drop(rt);
            match result {
                Ok(()) => {
                    info!(task = %name, records_in = counters.records_in.load(std::sync::atomic::Ordering::Relaxed), "task finished");
                    report(&ctx, &key, v1::TaskState::TaskFinished, &Failure::new(ErrorClass::Transient, ""), false, &counters);
                }
                Err(Ended::Canceled) => {
                    report(&ctx, &key, v1::TaskState::TaskCanceled, &Failure::new(ErrorClass::Transient, ""), false, &counters)
                }
                Err(Ended::Failed(failure)) => {
                    warn!(task = %name, class = %failure.class, error = %failure, "task failed");
                    report(&ctx, &key, v1::TaskState::TaskFailed, &failure, false, &counters);
                }
                Err(Ended::Exchange(failure)) => {
                    warn!(task = %name, error = %failure, "task failed in the data exchange");
                    report(&ctx, &key, v1::TaskState::TaskFailed, &failure, true, &counters);
                }
            }
            ctx.tasks.remove(&id);
        })
        .map_err(|e| Status::resource_exhausted(format!("spawning a task thread failed: {e}")))?;
    Ok(())
}

fn report(
    ctx: &DeployContext,
    key: &v1::TaskKey,
    state: v1::TaskState,
    failure: &Failure,
    exchange: bool,
    c: &TaskCounters,
) {
    let _ = ctx.reports.send(v1::TaskStateReport {
        task: Some(key.clone()),
        state: state as i32,
        failure: failure.message.clone(),
        failure_class: weir_proto::class_to_proto(failure.class) as i32,
        counters: Some(counters_to_proto(c)),
        exchange_failure: exchange,
    });
}

/// A task's counters as the job manager receives them.
pub(crate) fn counters_to_proto(c: &TaskCounters) -> v1::TaskCounters {
    use std::sync::atomic::Ordering::Relaxed;
    v1::TaskCounters {
        records_in: c.records_in.load(Relaxed),
        records_out: c.records_out.load(Relaxed),
        sink_records: c.sink_records.load(Relaxed),
        bad_records: c.bad_records.load(Relaxed),
        backpressure_ns: c.backpressure_ns.load(Relaxed),
        watermark_ms: Some(c.watermark.load(Relaxed)).filter(|&w| w != i64::MIN),
        state_bytes: c.state_bytes.load(Relaxed),
    }
}

async fn wire_outputs(
    ctx: &DeployContext,
    plan: &Plan,
    key: &v1::TaskKey,
    placements: &[v1::Placement],
    blocked: Arc<std::sync::atomic::AtomicU64>,
) -> Result<Vec<OutputEdge>, String> {
    let mut outputs = Vec::new();
    for e in plan.outputs_of(key.vertex) {
        let edge = &plan.graph.edges[e.edge];
        let schema = plan.edge_schema(e.edge);
        let downstream = &plan.vertices[e.to as usize];
        let targets: Vec<u32> = match edge.partitioning {
            Partitioning::Forward => vec![key.subtask],
            _ => (0..downstream.parallelism).collect(),
        };
        let chan = channel_index(edge.partitioning, key.subtask);
        // The downstream inbox slot of this edge (edges of a union share an
        // operator input but each has its own slot).
        let slot = plan.input_slot(e.edge).ok_or_else(|| format!("edge {} enters no vertex", e.edge))?;
        let mut channels: Vec<OutputChannel> = Vec::with_capacity(targets.len());
        for d in targets {
            let place = placements
                .iter()
                .find(|p| p.vertex == e.to && p.subtask == d)
                .ok_or_else(|| format!("no placement for subtask {d} of {}", downstream.name))?;
            if place.task_manager_id == ctx.task_manager_id {
                let id = TaskId { job: key.job_id.clone(), attempt: key.attempt, vertex: e.to, subtask: d };
                let inbox = ctx
                    .tasks
                    .inbox(&id, ctx.deploy_wait)
                    .await
                    .ok_or_else(|| format!("downstream task {id} was not deployed within {:?}", ctx.deploy_wait))?;
                channels.push(
                    inbox
                        .output_channel(slot, chan, &format!("{} ({})", downstream.name, d))
                        .ok_or_else(|| format!("downstream task {id} has no channel {slot}:{chan}"))?,
                );
            } else {
                let header = v1::ChannelHeader {
                    job_id: key.job_id.clone(),
                    attempt: key.attempt,
                    edge: e.edge as u32,
                    target_vertex: e.to,
                    target_subtask: d,
                    input: slot,
                    source_subtask: chan,
                };
                channels.push(remote_output(&ctx.runtime, &ctx.peers, &place.rpc_address, header, schema.clone())?);
            }
        }
        let key_idx: Vec<usize> = edge
            .key
            .iter()
            .map(|k| schema.index_of(k).map_err(|_| format!("key column {k} missing")))
            .collect::<Result<_, _>>()?;
        let channels = channels.into_iter().map(|c| c.count_backpressure(blocked.clone())).collect();
        outputs.push(
            OutputEdge::new(edge.partitioning, key_idx, plan.graph.max_parallelism, channels)
                .from_port(plan.edge_ports[e.edge]),
        );
    }
    Ok(outputs)
}
