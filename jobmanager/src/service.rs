//! The gRPC face of the job manager: job control goes through the service
//! layer shared with REST ([`crate::api`]); task managers' membership,
//! checkpoint and task reports go to the core ([`crate::cluster`]). Each
//! call first checks that its caller holds the role it needs: `read` or
//! `admin` for job control, `taskmanager` for what task managers report.

use tonic::{Request, Response, Status};
use weir_proto::v1;
use weir_proto::v1::job_manager_service_server::JobManagerService;
use weir_security::{Role, Security};

use crate::api::Api;
use crate::cluster::{ClusterError, ClusterHandle, Command};

/// Serves `JobManagerService`.
#[derive(Debug, Clone)]
pub(crate) struct JobManagerRpc {
    api: Api,
    cluster: ClusterHandle,
    security: Security,
}

impl JobManagerRpc {
    /// A service answering through `api`, reporting to `cluster`.
    pub(crate) fn new(api: Api, cluster: ClusterHandle, security: Security) -> Self {
        Self { api, cluster, security }
    }
}

fn status(e: ClusterError) -> Status {
    match e {
        ClusterError::InvalidJob(m) => Status::invalid_argument(m),
        ClusterError::UnknownJob(_) | ClusterError::UnknownTrigger(_) => Status::not_found(e.to_string()),
        ClusterError::WrongState(m) => Status::failed_precondition(m),
        ClusterError::ShuttingDown => Status::unavailable(e.to_string()),
    }
}

#[tonic::async_trait]
impl JobManagerService for JobManagerRpc {
    async fn submit_job(&self, req: Request<v1::SubmitJobRequest>) -> Result<Response<v1::SubmitJobResponse>, Status> {
        self.security.check(&req, Role::Admin, "submit jobs")?;
        let job_id = self.api.submit(req.into_inner()).await.map_err(status)?;
        Ok(Response::new(v1::SubmitJobResponse { job_id }))
    }

    async fn trigger_savepoint(
        &self,
        req: Request<v1::TriggerSavepointRequest>,
    ) -> Result<Response<v1::TriggerSavepointResponse>, Status> {
        self.security.check(&req, Role::Admin, "take savepoints or stop jobs")?;
        let r = req.into_inner();
        Ok(Response::new(self.api.savepoint(r.job_id, r.target, r.stop).await.map_err(status)?))
    }

    async fn list_jobs(&self, req: Request<v1::ListJobsRequest>) -> Result<Response<v1::ListJobsResponse>, Status> {
        self.security.check(&req, Role::Read, "list jobs")?;
        let jobs = self.api.list().await.map_err(status)?;
        Ok(Response::new(v1::ListJobsResponse { jobs }))
    }

    async fn get_job(&self, req: Request<v1::GetJobRequest>) -> Result<Response<v1::JobDetails>, Status> {
        self.security.check(&req, Role::Read, "read jobs")?;
        let req = req.into_inner();
        let wait = (req.wait_for_end_ms > 0).then(|| std::time::Duration::from_millis(req.wait_for_end_ms));
        Ok(Response::new(self.api.get(req.job_id, wait).await.map_err(status)?))
    }

    async fn cancel_job(&self, req: Request<v1::CancelJobRequest>) -> Result<Response<v1::CancelJobResponse>, Status> {
        self.security.check(&req, Role::Admin, "cancel jobs")?;
        let state = self.api.cancel(req.into_inner().job_id).await.map_err(status)?;
        Ok(Response::new(v1::CancelJobResponse { state: state as i32 }))
    }

    async fn cluster_overview(
        &self,
        req: Request<v1::ClusterOverviewRequest>,
    ) -> Result<Response<v1::ClusterOverviewResponse>, Status> {
        self.security.check(&req, Role::Read, "read the cluster")?;
        Ok(Response::new(self.api.overview().await.map_err(status)?))
    }

    async fn register_task_manager(
        &self,
        req: Request<v1::RegisterTaskManagerRequest>,
    ) -> Result<Response<v1::RegisterTaskManagerResponse>, Status> {
        self.security.check(&req, Role::TaskManager, "register as a task manager")?;
        let req = req.into_inner();
        if req.task_manager_id.is_empty() || req.slots == 0 {
            return Err(Status::invalid_argument("a task manager needs an id and at least one slot"));
        }
        weir_security::check_address(&req.rpc_address, self.security.tls.as_ref())
            .map_err(|e| Status::invalid_argument(format!("task manager address: {e}")))?;
        Ok(Response::new(self.cluster.ask(|r| Command::Register(req, r)).await.map_err(status)?))
    }

    async fn heartbeat(&self, req: Request<v1::HeartbeatRequest>) -> Result<Response<v1::HeartbeatResponse>, Status> {
        self.security.check(&req, Role::TaskManager, "send task manager heartbeats")?;
        let req = req.into_inner();
        Ok(Response::new(self.cluster.ask(|r| Command::Heartbeat(req, r)).await.map_err(status)?))
    }

    async fn acknowledge_checkpoint(
        &self,
        req: Request<v1::AcknowledgeCheckpointRequest>,
    ) -> Result<Response<v1::CheckpointReply>, Status> {
        self.security.check(&req, Role::TaskManager, "acknowledge checkpoints")?;
        self.cluster.tell(Command::Acknowledge(req.into_inner())).await;
        Ok(Response::new(v1::CheckpointReply {}))
    }

    async fn decline_checkpoint(
        &self,
        req: Request<v1::DeclineCheckpointRequest>,
    ) -> Result<Response<v1::CheckpointReply>, Status> {
        self.security.check(&req, Role::TaskManager, "decline checkpoints")?;
        self.cluster.tell(Command::Decline(req.into_inner())).await;
        Ok(Response::new(v1::CheckpointReply {}))
    }

    async fn report_task_state(&self, req: Request<v1::TaskStateReport>) -> Result<Response<v1::TaskStateAck>, Status> {
        self.security.check(&req, Role::TaskManager, "report task states")?;
        self.cluster.tell(Command::TaskState(req.into_inner())).await;
        Ok(Response::new(v1::TaskStateAck {}))
    }
}
