//! Carrying out what a job's transitions decided: slots, RPCs to task
//! managers, timers, storage writes and answers. Every RPC and write runs
//! in a task of its own and reports back as a [`Command`], so the core never
//! waits on the network.

use tracing::{info, warn};
use weir_proto::v1;
use weir_state::savepoint::Savepoint;
use weir_state::CheckpointStorage;
use weir_types::{failpoint, Failure, JobId};

use super::{Cluster, ClusterError, Command};
use crate::job::{Effect, Job};
use crate::restore;
use crate::scheduler::TaskPlacement;

impl Cluster {
    /// Carries out `effects` of job `id`, in order.
    pub(super) fn apply(&mut self, id: &JobId, effects: Vec<Effect>) {
        for effect in effects {
            self.apply_one(id, effect);
        }
    }

    fn apply_one(&mut self, id: &JobId, effect: Effect) {
        match effect {
            Effect::Allocate(slots) => self.membership.allocate(id, &slots),
            Effect::Release => {
                self.membership.release(id);
                self.reschedule = true;
            }
            Effect::Deploy { attempt, placements } => self.deploy(id, attempt, &placements),
            Effect::CancelTasks { attempt, task_managers } => {
                for (tm, mut client) in self.clients_of(&task_managers) {
                    let req = v1::CancelJobTasksRequest { job_id: id.to_string(), attempt };
                    tokio::spawn(async move {
                        if let Err(e) = client.cancel_job_tasks(req).await {
                            warn!(task_manager = %tm, error = %e.message(), "cancelling tasks failed");
                        }
                    });
                }
            }
            Effect::ArmTrigger { attempt, at } => {
                let (tx, job) = (self.tx.clone(), id.clone());
                tokio::spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    let _ = tx.send(Command::CheckpointDue(job, attempt)).await;
                });
            }
            Effect::Trigger { attempt, id: cp, task_managers } => {
                for (tm, mut client) in self.clients_of(&task_managers) {
                    let req = v1::TriggerCheckpointRequest {
                        job_id: id.to_string(),
                        attempt,
                        checkpoint_id: cp.0,
                        ..Default::default()
                    };
                    let (tx, job) = (self.tx.clone(), id.clone());
                    tokio::spawn(async move {
                        if let Err(e) = client.trigger_checkpoint(req).await {
                            let failure = rpc_failure(&tm, &e);
                            let unreachable = unreachable(&tm, &e);
                            let _ =
                                tx.send(Command::TriggerFailed { job, attempt, id: cp, failure, unreachable }).await;
                        }
                    });
                }
            }
            Effect::TriggerSavepoint { attempt, id: cp, location, stop, everyone, sources } => {
                let (everyone, sources) = (self.clients_of(&everyone), self.clients_of(&sources));
                let (tx, job) = (self.tx.clone(), id.clone());
                tokio::spawn(async move {
                    let req = |prepare: bool| v1::TriggerCheckpointRequest {
                        job_id: job.to_string(),
                        attempt,
                        checkpoint_id: cp.0,
                        savepoint_location: location.clone(),
                        stop,
                        prepare,
                    };
                    // Every task manager learns that checkpoint `cp` is a savepoint
                    // before any source emits its barrier.
                    for (phase, targets) in [(true, everyone), (false, sources)] {
                        for (tm, mut client) in targets {
                            if let Err(e) = client.trigger_checkpoint(req(phase)).await {
                                let failure = rpc_failure(&tm, &e);
                                let unreachable = unreachable(&tm, &e);
                                let _ = tx
                                    .send(Command::TriggerFailed { job, attempt, id: cp, failure, unreachable })
                                    .await;
                                return;
                            }
                        }
                    }
                });
            }
            Effect::WriteMetadata(meta) => {
                let Some(storage) = self.storage_of(id) else { return };
                let (tx, job, cp) = (self.tx.clone(), id.clone(), meta.checkpoint_id);
                tokio::spawn(async move {
                    failpoint::hit("jm_before_metadata");
                    let result = storage.complete(&meta).await.map(|_| meta).map_err(|e| Failure::of(&e));
                    if result.is_ok() {
                        failpoint::hit("jm_metadata_written");
                    }
                    let _ = tx.send(Command::MetadataWritten { job, id: cp, result }).await;
                });
            }
            Effect::WriteSavepoint { id: cp, location, meta } => {
                let (s3, tx, job) = (self.opts.s3.clone(), self.tx.clone(), id.clone());
                tokio::spawn(async move {
                    let result = async {
                        let storage = CheckpointStorage::from_uri_with(&location, &s3)?;
                        Savepoint::write_metadata(&storage, &meta).await?;
                        Ok::<u64, weir_state::StorageError>(meta.state_bytes())
                    }
                    .await
                    .map_err(|e| Failure::of(&e));
                    let _ = tx.send(Command::SavepointWritten { job, id: cp, result }).await;
                });
            }
            Effect::Notify { attempt, id: cp, aborted, task_managers } => {
                for (tm, mut client) in self.clients_of(&task_managers) {
                    let req = v1::NotifyCheckpointCompleteRequest {
                        job_id: id.to_string(),
                        attempt,
                        checkpoint_id: cp.0,
                        aborted,
                    };
                    tokio::spawn(async move {
                        if let Err(e) = client.notify_checkpoint_complete(req).await {
                            warn!(task_manager = %tm, checkpoint = %cp, error = %e.message(), "notifying tasks of a checkpoint failed");
                        }
                    });
                }
            }
            Effect::Discard { checkpoints, shared } => {
                let Some(storage) = self.storage_of(id) else { return };
                let job = id.clone();
                tokio::spawn(async move {
                    for old in checkpoints {
                        failpoint::hit("jm_discarding");
                        if let Err(e) = storage.discard(&job, old).await {
                            warn!(job_id = %job, checkpoint = %old, error = %e, "deleting a checkpoint's files failed");
                        }
                    }
                    if let Err(e) = storage.delete_shared(&shared).await {
                        warn!(job_id = %job, error = %e, "deleting unreferenced shared state files failed");
                    }
                });
            }
            Effect::Restart { attempt, delay } => {
                let Some(job) = self.jobs.get(id) else { return };
                let storage = self.storage_of(id);
                let (tx, job_id, start, keep) = (self.tx.clone(), id.clone(), job.start.clone(), retained(job));
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Some(storage) = &storage {
                        // The failed attempt's tasks are gone: whatever its
                        // unfinished checkpoints wrote is garbage now.
                        sweep(storage, &job_id, keep).await;
                    }
                    let restore = restore::find_restore_point(storage, &job_id, start).await;
                    let _ = tx.send(Command::RestartReady { job: job_id, attempt, restore }).await;
                });
            }
            Effect::SaveRecord => {
                let (Some(records), Some(rec)) = (self.records.clone(), self.jobs.get(id).and_then(Job::record)) else {
                    return;
                };
                tokio::spawn(async move {
                    if let Err(e) = crate::records::save(&records, &rec).await {
                        warn!(job_id = %rec.job_id, error = %e, "writing the job record failed: a restarted job manager would not resume this job");
                    }
                });
            }
            Effect::Ended => {
                let (Some(storage), Some(keep)) = (self.storage_of(id), self.jobs.get(id).map(retained)) else {
                    return;
                };
                let (records, job) = (self.records.clone(), id.clone());
                tokio::spawn(async move {
                    if let Some(records) = records {
                        if let Err(e) = crate::records::remove(&records, &job).await {
                            warn!(job_id = %job, error = %e, "removing the job record failed");
                        }
                    }
                    sweep(&storage, &job, keep).await;
                });
            }
            Effect::Answer { request, result } => {
                if let Some(reply) = self.answers.remove(&request) {
                    let _ = reply.send(
                        result
                            .map(|done| v1::TriggerSavepointResponse {
                                location: done.location,
                                checkpoint_id: done.checkpoint.0,
                                state_bytes: done.state_bytes,
                            })
                            .map_err(|e| ClusterError::WrongState(e.0)),
                    );
                }
            }
        }
    }

    /// The gRPC clients of these task managers (the ones still registered).
    fn clients_of(
        &self,
        tms: &[String],
    ) -> Vec<(String, v1::task_manager_service_client::TaskManagerServiceClient<tonic::transport::Channel>)> {
        tms.iter().filter_map(|tm| self.clients.get(tm).map(|c| (tm.clone(), c.clone()))).collect()
    }

    fn storage_of(&self, id: &JobId) -> Option<CheckpointStorage> {
        self.jobs.get(id).and_then(|j| j.checkpoints.as_ref()).map(|c| c.storage.clone())
    }

    /// Sends every subtask of `placements` to its task manager, with the
    /// whole graph, the placement of every subtask and what it restores.
    fn deploy(&self, id: &JobId, attempt: u32, placements: &[TaskPlacement]) {
        let Some(job) = self.jobs.get(id) else { return };
        let wire: Vec<v1::Placement> = placements
            .iter()
            .map(|p| v1::Placement {
                vertex: p.vertex,
                subtask: p.subtask,
                task_manager_id: p.task_manager.clone(),
                rpc_address: self.membership.get(&p.task_manager).map(|m| m.address.clone()).unwrap_or_default(),
            })
            .collect();
        let storage = job.checkpoints.as_ref().map(|c| c.storage.uri().to_string()).unwrap_or_default();
        for p in placements {
            let Some(mut client) = self.clients.get(&p.task_manager).cloned() else { continue };
            let (restore, restore_storage) =
                job.restore.as_ref().map(|r| r.parts(&job.plan, p.vertex)).unwrap_or_default();
            let req = v1::DeployTaskRequest {
                task: Some(v1::TaskKey { job_id: id.to_string(), vertex: p.vertex, subtask: p.subtask, attempt }),
                graph: Some(job.graph.clone()),
                placements: wire.clone(),
                checkpoint_storage: storage.clone(),
                restore: restore.iter().map(weir_proto::snapshot_to_proto).collect(),
                restore_checkpoint: job.restore.as_ref().map_or(0, |r| r.checkpoint_id().0),
                restore_storage,
                finished: job.restore.as_ref().is_some_and(|r| r.finished(&job.plan, p.vertex, p.subtask)),
            };
            let tx = self.tx.clone();
            let (job_id, tm) = (id.clone(), p.task_manager.clone());
            tokio::spawn(async move {
                if let Err(status) = client.deploy_task(req).await {
                    let _ = tx
                        .send(Command::DeployFailed {
                            job: job_id,
                            attempt,
                            task_manager: tm,
                            error: status.message().to_string(),
                            unreachable: status.code() == tonic::Code::Unavailable,
                        })
                        .await;
                }
            });
        }
    }
}

/// The task manager `tm` when an RPC to it found nothing listening.
fn unreachable(tm: &str, e: &tonic::Status) -> Option<String> {
    (e.code() == tonic::Code::Unavailable).then(|| tm.to_string())
}

/// A failed RPC to task manager `tm`: unreachable or timed out is
/// transient; a refused request is the user's (a bad savepoint target).
fn rpc_failure(tm: &str, e: &tonic::Status) -> Failure {
    use weir_types::ErrorClass;
    let class = match e.code() {
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => ErrorClass::User,
        _ => ErrorClass::Transient,
    };
    Failure::new(class, format!("task manager {tm}: {}", e.message()))
}

/// How many complete checkpoints `job` retains.
fn retained(job: &Job) -> usize {
    job.plan.graph.checkpoint.as_ref().map_or(1, |c| c.retained as usize)
}

/// Deletes the files of `job`'s checkpoints that none of the `keep` newest
/// complete ones needs (see [`CheckpointStorage::sweep`]); a failure is only
/// logged, the next sweep tries again.
async fn sweep(storage: &CheckpointStorage, job: &JobId, keep: usize) {
    match storage.sweep(job, keep).await {
        Ok(swept) if swept.files > 0 => {
            info!(job_id = %job, files = swept.files, "deleted files no retained checkpoint needs")
        }
        Ok(_) => {}
        Err(e) => warn!(job_id = %job, error = %e, "sweeping the checkpoint storage failed"),
    }
}
