//! The gRPC face of the job manager: translates requests into commands for
//! the core ([`crate::cluster`]) and its errors into statuses.

use tonic::{Request, Response, Status};
use weir_proto::v1;
use weir_proto::v1::job_manager_service_server::JobManagerService;

use crate::cluster::{ClusterError, ClusterHandle, Command};

/// Serves `JobManagerService`.
#[derive(Debug, Clone)]
pub(crate) struct JobManagerRpc {
    cluster: ClusterHandle,
    s3: weir_state::S3Options,
}

impl JobManagerRpc {
    /// A service forwarding to `cluster`; `s3` opens savepoints to start from.
    pub(crate) fn new(cluster: ClusterHandle, s3: weir_state::S3Options) -> Self {
        Self { cluster, s3 }
    }
}

fn status(e: ClusterError) -> Status {
    match e {
        ClusterError::InvalidJob(m) => Status::invalid_argument(m),
        ClusterError::UnknownJob(_) => Status::not_found(e.to_string()),
        ClusterError::WrongState(m) => Status::failed_precondition(m),
        ClusterError::ShuttingDown => Status::unavailable(e.to_string()),
    }
}

#[tonic::async_trait]
impl JobManagerService for JobManagerRpc {
    async fn submit_job(&self, req: Request<v1::SubmitJobRequest>) -> Result<Response<v1::SubmitJobResponse>, Status> {
        let req = req.into_inner();
        // The savepoint is read and verified (every file's checksum) before
        // the job exists, so that a bad one is refused at submission.
        let savepoint = if req.from_savepoint.is_empty() {
            None
        } else {
            let start = crate::restore::load_start(&req.from_savepoint, &self.s3)
                .await
                .map_err(|e| Status::invalid_argument(format!("cannot start from {}: {e}", req.from_savepoint)))?;
            Some(start)
        };
        let job_id = self.cluster.ask(|r| Command::Submit(req, savepoint, r)).await.map_err(status)?;
        Ok(Response::new(v1::SubmitJobResponse { job_id }))
    }

    async fn trigger_savepoint(
        &self,
        req: Request<v1::TriggerSavepointRequest>,
    ) -> Result<Response<v1::TriggerSavepointResponse>, Status> {
        let r = req.into_inner();
        let reply = self
            .cluster
            .ask(|reply| Command::Savepoint { job: r.job_id, target: r.target, stop: r.stop, reply })
            .await
            .map_err(status)?;
        Ok(Response::new(reply))
    }

    async fn list_jobs(&self, _: Request<v1::ListJobsRequest>) -> Result<Response<v1::ListJobsResponse>, Status> {
        let jobs = self.cluster.ask(Command::List).await.map_err(status)?;
        Ok(Response::new(v1::ListJobsResponse { jobs }))
    }

    async fn get_job(&self, req: Request<v1::GetJobRequest>) -> Result<Response<v1::JobDetails>, Status> {
        let req = req.into_inner();
        let wait = (req.wait_for_end_ms > 0).then(|| std::time::Duration::from_millis(req.wait_for_end_ms));
        Ok(Response::new(self.cluster.ask(|r| Command::Get(req.job_id, wait, r)).await.map_err(status)?))
    }

    async fn cancel_job(&self, req: Request<v1::CancelJobRequest>) -> Result<Response<v1::CancelJobResponse>, Status> {
        let id = req.into_inner().job_id;
        let state = self.cluster.ask(|r| Command::Cancel(id, r)).await.map_err(status)?;
        Ok(Response::new(v1::CancelJobResponse { state: state as i32 }))
    }

    async fn cluster_overview(
        &self,
        _: Request<v1::ClusterOverviewRequest>,
    ) -> Result<Response<v1::ClusterOverviewResponse>, Status> {
        Ok(Response::new(self.cluster.ask(Command::Overview).await.map_err(status)?))
    }

    async fn register_task_manager(
        &self,
        req: Request<v1::RegisterTaskManagerRequest>,
    ) -> Result<Response<v1::RegisterTaskManagerResponse>, Status> {
        let req = req.into_inner();
        if req.task_manager_id.is_empty() || req.slots == 0 {
            return Err(Status::invalid_argument("a task manager needs an id and at least one slot"));
        }
        Ok(Response::new(self.cluster.ask(|r| Command::Register(req, r)).await.map_err(status)?))
    }

    async fn heartbeat(&self, req: Request<v1::HeartbeatRequest>) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let req = req.into_inner();
        Ok(Response::new(self.cluster.ask(|r| Command::Heartbeat(req, r)).await.map_err(status)?))
    }

    async fn acknowledge_checkpoint(
        &self,
        req: Request<v1::AcknowledgeCheckpointRequest>,
    ) -> Result<Response<v1::CheckpointReply>, Status> {
        self.cluster.tell(Command::Acknowledge(req.into_inner())).await;
        Ok(Response::new(v1::CheckpointReply {}))
    }

    async fn decline_checkpoint(
        &self,
        req: Request<v1::DeclineCheckpointRequest>,
    ) -> Result<Response<v1::CheckpointReply>, Status> {
        self.cluster.tell(Command::Decline(req.into_inner())).await;
        Ok(Response::new(v1::CheckpointReply {}))
    }

    async fn report_task_state(&self, req: Request<v1::TaskStateReport>) -> Result<Response<v1::TaskStateAck>, Status> {
        self.cluster.tell(Command::TaskState(req.into_inner())).await;
        Ok(Response::new(v1::TaskStateAck {}))
    }
}
