//! `weir`: submit and control jobs on a Weir cluster, run a job on an
//! embedded cluster, and benchmark. A client of the gRPC API only.

mod bench;
mod client;
mod embedded;
mod output;
mod savepoint;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::output::Format;

/// Weir: distributed stream processing.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, long_about = None)]
struct Cli {
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Text)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Target {
    /// Job manager URL.
    #[arg(long, short = 'm', env = "WEIR_JOBMANAGER", default_value = "http://127.0.0.1:6123")]
    jobmanager: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a job on an embedded job manager and task manager in this process,
    /// and wait for it to end.
    Local {
        /// YAML job file.
        job: PathBuf,
        /// Default parallelism of operators that set none.
        #[arg(long, short = 'p')]
        parallelism: Option<u32>,
        /// Slots of the embedded task manager [default: what the job needs].
        #[arg(long)]
        slots: Option<u32>,
    },
    /// Submit a job to a cluster and print its id.
    Run {
        /// YAML job file.
        job: PathBuf,
        #[command(flatten)]
        target: Target,
        /// Default parallelism of operators that set none.
        #[arg(long, short = 'p')]
        parallelism: Option<u32>,
        /// Wait for the job to end and print its final status.
        #[arg(long)]
        wait: bool,
        /// Start from this savepoint directory (state matched by operator uid).
        #[arg(long, short = 's', value_name = "URI")]
        from_savepoint: Option<String>,
        /// With --from-savepoint: start even if the savepoint has state of
        /// operators this job no longer has (that state is dropped).
        #[arg(long, requires = "from_savepoint")]
        allow_non_restored_state: bool,
    },
    /// Take a savepoint of a running job and print its location; or inspect
    /// or dispose of a savepoint.
    Savepoint(SavepointArgs),
    /// Stop a job with a savepoint: sources stop right after it, sinks
    /// commit everything up to it, and the job ends FINISHED.
    Stop {
        /// Job id.
        job_id: String,
        /// Take the savepoint under this directory (without a value: the
        /// job manager's savepoint_dir).
        #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "URI")]
        savepoint: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List the jobs of a cluster.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Show a job's state, tasks and failure.
    Status {
        /// Job id.
        job_id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Show a job's checkpoint history: id, status, duration, size, alignment.
    Checkpoints {
        /// Job id.
        job_id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Cancel a job.
    Cancel {
        /// Job id.
        job_id: String,
        #[command(flatten)]
        target: Target,
    },
    /// List the task managers of a cluster.
    Taskmanagers {
        #[command(flatten)]
        target: Target,
    },
    /// Check a job file without running it (the checks of submission).
    Validate {
        /// YAML job file.
        job: PathBuf,
        /// Default parallelism of operators that set none.
        #[arg(long, short = 'p')]
        parallelism: Option<u32>,
    },
    /// Run a benchmark workload of the Flink baseline on an embedded cluster.
    Bench {
        /// Workload.
        #[arg(value_enum)]
        workload: bench::Workload,
        /// Number of generated events.
        #[arg(long, default_value_t = 20_000_000)]
        events: u64,
        /// Parallelism of every operator.
        #[arg(long, short = 'p', default_value_t = 2)]
        parallelism: u32,
        /// w3-rocksdb: checkpoints without change files (`changelog: false`).
        #[arg(long)]
        no_changelog: bool,
        #[command(flatten)]
        kafka: bench::KafkaArgs,
    },
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct SavepointArgs {
    #[command(subcommand)]
    action: Option<SavepointAction>,
    /// Job id.
    #[arg(required = true)]
    job_id: Option<String>,
    /// Directory under which the savepoint is created [default: the job
    /// manager's savepoint_dir].
    #[arg(long, value_name = "URI")]
    target: Option<String>,
    /// Job manager URL (`inspect` and `dispose` work on storage directly).
    #[arg(long, short = 'm', env = "WEIR_JOBMANAGER", default_value = "http://127.0.0.1:6123", global = true)]
    jobmanager: String,
}

#[derive(Debug, Subcommand)]
enum SavepointAction {
    /// Show a savepoint's operators, states and sizes, key groups and source positions.
    Inspect {
        /// Savepoint directory (file:///dir or s3://bucket/prefix).
        uri: String,
    },
    /// Delete a savepoint (its metadata first, then its files).
    Dispose {
        /// Savepoint directory.
        uri: String,
    },
}

fn main() -> ExitCode {
    weir_connectors::install();
    let cli = Cli::parse();
    weir_config::init_logging("warn");
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let fmt = cli.output;
    match cli.command {
        Command::Local { job, parallelism, slots } => embedded::run_local(&job, parallelism, slots, fmt).await,
        Command::Run { job, target, parallelism, wait, from_savepoint, allow_non_restored_state } => {
            let graph = client::read_job(&job)?;
            let mut c = client::connect(&target.jobmanager).await?;
            let from = client::StartFrom { savepoint: from_savepoint, allow_non_restored_state };
            let id = client::submit(&mut c, &graph, parallelism, &from).await?;
            if !wait {
                output::job_id(fmt, &id);
                return Ok(ExitCode::SUCCESS);
            }
            if fmt == Format::Text {
                eprintln!("submitted job {id}");
            }
            let details = client::wait_for_end(&mut c, &id, Duration::from_secs(10)).await?;
            output::details(fmt, &details);
            Ok(client::exit_code(&details))
        }
        Command::Savepoint(args) => match (args.action, args.job_id) {
            (Some(SavepointAction::Inspect { uri }), _) => savepoint::inspect(fmt, &uri).await,
            (Some(SavepointAction::Dispose { uri }), _) => savepoint::dispose(fmt, &uri).await,
            (None, Some(job_id)) => {
                let mut c = client::connect(&args.jobmanager).await?;
                savepoint::trigger(&mut c, fmt, &job_id, args.target, false).await
            }
            (None, None) => anyhow::bail!("weir savepoint needs a job id, or `inspect URI` / `dispose URI`"),
        },
        Command::Stop { job_id, savepoint, target } => {
            let Some(dir) = savepoint else {
                anyhow::bail!("weir stop takes a savepoint: pass --savepoint [URI] (weir cancel stops without one)")
            };
            let mut c = client::connect(&target.jobmanager).await?;
            savepoint::trigger(&mut c, fmt, &job_id, Some(dir).filter(|d| !d.is_empty()), true).await
        }
        Command::List { target } => {
            let mut c = client::connect(&target.jobmanager).await?;
            let jobs = c.list_jobs(weir_proto::v1::ListJobsRequest {}).await.map_err(client::status)?.into_inner().jobs;
            output::jobs(fmt, &jobs);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { job_id, target } => {
            let mut c = client::connect(&target.jobmanager).await?;
            let details = client::details(&mut c, &job_id).await?;
            output::details(fmt, &details);
            Ok(ExitCode::SUCCESS)
        }
        Command::Checkpoints { job_id, target } => {
            let mut c = client::connect(&target.jobmanager).await?;
            let details = client::details(&mut c, &job_id).await?;
            output::checkpoints(fmt, &details);
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel { job_id, target } => {
            let mut c = client::connect(&target.jobmanager).await?;
            let r = c
                .cancel_job(weir_proto::v1::CancelJobRequest { job_id: job_id.clone() })
                .await
                .map_err(client::status)?
                .into_inner();
            output::cancelled(fmt, &job_id, r.state());
            Ok(ExitCode::SUCCESS)
        }
        Command::Taskmanagers { target } => {
            let mut c = client::connect(&target.jobmanager).await?;
            let o = c
                .cluster_overview(weir_proto::v1::ClusterOverviewRequest {})
                .await
                .map_err(client::status)?
                .into_inner();
            output::task_managers(fmt, &o);
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { job, parallelism } => {
            let graph = client::read_job(&job)?;
            let plan = weir_runtime::graph::Plan::new(&graph, parallelism.unwrap_or(0))
                .map_err(|e| anyhow::anyhow!("job file {}: {e}", job.display()))?;
            output::plan(fmt, &plan);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { workload, events, parallelism, no_changelog, kafka } => {
            bench::run(workload, events, parallelism, !no_changelog, &kafka).await
        }
    }
}
