//! An application: one binary that is a job manager, a task manager, a
//! client of a cluster and an embedded runner, with the operator kinds its
//! registry holds and, optionally, jobs of its own.
//!
//! The stock `weir` binary is the application with the built-in operators
//! and the connectors ([`Application::stock`]). A user's application adds
//! its own kinds to that registry and names the jobs it builds in code; its
//! binary then runs as
//!
//! ```text
//! my-app jobmanager [flags]        the job manager role
//! my-app taskmanager [flags]       the task manager role
//! my-app run [JOB] [-m URL]        submit a job of the application (or a job file)
//! my-app local [JOB]               run it on an embedded cluster
//! ```
//!
//! Every role of one deployment must run the same binary: task managers
//! instantiate the application's operators by kind, and the job manager
//! plans with the same registry.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use weir_runtime::graph::JobGraph;
use weir_runtime::operators::Registry;

use crate::bench::BenchWorkload;
use crate::output::{self, Format};
use crate::progress::Progress;
use crate::roles::{JobManagerArgs, TaskManagerArgs};
use crate::{bench, client, embedded, roles, savepoint};

/// Values a job of an application reads: `--arg key=value` on the command
/// line of `run`, `local` and `validate`.
///
/// An application's jobs are also built when its binary starts in any role,
/// with no arguments at all, so that the functions they use are registered:
/// a job must build without them (falling back to defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobArgs {
    values: BTreeMap<String, String>,
}

impl JobArgs {
    /// Arguments from `key=value` pairs.
    pub fn parse<S: AsRef<str>>(pairs: &[S]) -> anyhow::Result<Self> {
        let mut values = BTreeMap::new();
        for p in pairs {
            let p = p.as_ref();
            let (k, v) = p.split_once('=').ok_or_else(|| anyhow!("--arg `{p}` is not KEY=VALUE"))?;
            if k.is_empty() {
                bail!("--arg `{p}` has an empty key");
            }
            values.insert(k.to_string(), v.to_string());
        }
        Ok(Self { values })
    }

    /// The value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The value of `key`, or `default`.
    pub fn get_or(&self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or(default).to_string()
    }

    /// Whether no argument is given.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The arguments as a map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.values.clone()
    }

    /// Arguments from a map.
    pub fn from_map(values: BTreeMap<String, String>) -> Self {
        Self { values }
    }
}

/// Builds the job graph of one of an application's jobs.
pub type JobFactory = Arc<dyn Fn(&JobArgs) -> anyhow::Result<JobGraph> + Send + Sync>;

/// A Weir binary: its registry and its own jobs.
#[derive(Clone)]
pub struct Application {
    name: String,
    registry: Arc<Registry>,
    jobs: BTreeMap<String, JobFactory>,
    workloads: BTreeMap<String, BenchWorkload>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("name", &self.name)
            .field("registry", &self.registry)
            .field("jobs", &self.jobs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Application {
    /// An application called `name` (its binary's name, in help texts)
    /// whose processes plan and run the kinds of `registry`.
    pub fn new(name: impl Into<String>, registry: Registry) -> Self {
        Self { name: name.into(), registry: Arc::new(registry), jobs: BTreeMap::new(), workloads: BTreeMap::new() }
    }

    /// The stock `weir` binary: built-in operators and every connector.
    pub fn stock() -> Self {
        Self::new("weir", weir_connectors::registry())
    }

    /// Adds a job the application builds in code, run by name (`run NAME`,
    /// `local NAME`; the only or first job when no name is given).
    pub fn job(
        mut self,
        name: impl Into<String>,
        build: impl Fn(&JobArgs) -> anyhow::Result<JobGraph> + Send + Sync + 'static,
    ) -> Self {
        self.jobs.insert(name.into(), Arc::new(build));
        self
    }

    /// Adds a workload to `bench` (run as `bench NAME`).
    pub fn workload(mut self, name: impl Into<String>, workload: BenchWorkload) -> Self {
        self.workloads.insert(name.into(), workload);
        self
    }

    /// The registry every role of this application uses.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Runs the command line of `std::env::args`.
    pub fn main(self) -> ExitCode {
        let about = format!("{}: a Weir application (job manager, task manager, client)", self.name);
        let cmd = <Cli as clap::CommandFactory>::command().name(self.name.clone()).about(about);
        let cli = match cmd.try_get_matches().and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m)) {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        };
        let server = matches!(cli.command, Command::Jobmanager(_) | Command::Taskmanager(_));
        weir_telemetry::init_logging(if server { "info" } else { "warn" });
        block_on(self.run(cli))
    }

    /// Runs only the job manager role, its flags at the top level (the
    /// stock `weir-jobmanager` binary).
    pub fn main_jobmanager(self) -> ExitCode {
        #[derive(Debug, Parser)]
        #[command(version, about = "The Weir job manager")]
        struct Only {
            #[command(flatten)]
            args: JobManagerArgs,
        }
        let args = Only::parse().args;
        weir_telemetry::init_logging("info");
        let registry = self.registry.clone();
        block_on(async move { roles::jobmanager(args, registry).await.map(|()| ExitCode::SUCCESS) })
    }

    /// Runs only the task manager role, its flags at the top level (the
    /// stock `weir-taskmanager` binary).
    pub fn main_taskmanager(self) -> ExitCode {
        #[derive(Debug, Parser)]
        #[command(version, about = "A Weir task manager")]
        struct Only {
            #[command(flatten)]
            args: TaskManagerArgs,
        }
        let args = Only::parse().args;
        weir_telemetry::init_logging("info");
        let registry = self.registry.clone();
        block_on(async move { roles::taskmanager(args, registry).await.map(|()| ExitCode::SUCCESS) })
    }

    /// The job a command names: one of the application's jobs, or a job file.
    fn resolve(&self, job: Option<&str>, args: &[String]) -> anyhow::Result<client::JobFile> {
        let args = JobArgs::parse(args)?;
        let by_name = match job {
            None => match self.jobs.iter().next() {
                Some((_, build)) => build,
                None => bail!("name a job file"),
            },
            Some(name) => match self.jobs.get(name) {
                Some(build) => build,
                None => {
                    if !args.values.is_empty() {
                        bail!("--arg applies to the application's own jobs ({}), not to job files", self.job_names());
                    }
                    return client::read_job(Path::new(name));
                }
            },
        };
        let graph = by_name(&args).with_context(|| format!("building job {}", job.unwrap_or("")))?;
        Ok(client::JobFile { graph, explain: false })
    }

    /// Prints a job as a YAML job file, after the checks of submission.
    fn explain(&self, graph: &JobGraph, parallelism: Option<u32>, fmt: Format) -> anyhow::Result<ExitCode> {
        weir_runtime::plan::Plan::new(graph, &self.registry, parallelism.unwrap_or(0))
            .map_err(|e| anyhow!("job {}: {e}", graph.name))?;
        match fmt {
            Format::Json => println!("{}", serde_json::to_string_pretty(graph)?),
            Format::Text => print!("{}", weir_runtime::spec::job_yaml(graph)),
        }
        Ok(ExitCode::SUCCESS)
    }

    fn job_names(&self) -> String {
        if self.jobs.is_empty() {
            "it has none".into()
        } else {
            self.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }

    async fn run(self, cli: Cli) -> anyhow::Result<ExitCode> {
        let fmt = cli.output;
        match cli.command {
            Command::Jobmanager(args) => {
                roles::jobmanager(args, self.registry.clone()).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Taskmanager(args) => {
                roles::taskmanager(args, self.registry.clone()).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Jobs => {
                output::names(fmt, self.jobs.keys());
                Ok(ExitCode::SUCCESS)
            }
            Command::Local { job, parallelism, slots, args } => {
                let file = self.resolve(job.as_deref(), &args)?;
                if file.explain {
                    return self.explain(&file.graph, parallelism, fmt);
                }
                let graph = file.graph;
                embedded::run_local(&graph, self.registry.clone(), parallelism, slots, fmt).await
            }
            Command::Sql => crate::shell::run(self.registry.clone()).await,
            Command::Run { job, target, parallelism, wait, from_savepoint, allow_non_restored_state, args } => {
                let file = self.resolve(job.as_deref(), &args)?;
                if file.explain {
                    return self.explain(&file.graph, parallelism, fmt);
                }
                let graph = file.graph;
                let mut c = client::connect(&target.jobmanager, &target.credentials).await?;
                let from = client::StartFrom { savepoint: from_savepoint, allow_non_restored_state };
                let id = client::submit(&mut c, &graph, parallelism, &from).await?;
                if !wait {
                    output::job_id(fmt, &id);
                    return Ok(ExitCode::SUCCESS);
                }
                if fmt == Format::Text {
                    eprintln!("submitted job {id}");
                }
                let progress = Progress::start(fmt, &format!("job {id}"));
                let details = client::wait_for_end(&mut c, &id, &progress).await?;
                output::details(fmt, &details);
                Ok(client::exit_code(&details))
            }
            Command::Savepoint(args) => match (args.action, args.job_id) {
                (Some(SavepointAction::Inspect { uri }), _) => savepoint::inspect(fmt, &uri, &self.registry).await,
                (Some(SavepointAction::Dispose { uri }), _) => savepoint::dispose(fmt, &uri).await,
                (None, Some(job_id)) => {
                    let mut c = client::connect(&args.jobmanager, &args.credentials).await?;
                    savepoint::trigger(&mut c, fmt, &job_id, args.target, false, args.timeout).await
                }
                (None, None) => bail!("savepoint needs a job id, or `inspect URI` / `dispose URI`"),
            },
            Command::Stop { job_id, savepoint, timeout, target } => {
                let Some(dir) = savepoint else {
                    bail!("stop takes a savepoint: pass --savepoint [URI] (cancel stops without one)")
                };
                let mut c = client::connect(&target.jobmanager, &target.credentials).await?;
                savepoint::trigger(&mut c, fmt, &job_id, Some(dir).filter(|d| !d.is_empty()), true, timeout).await
            }
            Command::List { target } => {
                let mut c = client::connect(&target.jobmanager, &target.credentials).await?;
                let jobs =
                    c.list_jobs(weir_proto::v1::ListJobsRequest {}).await.map_err(client::status)?.into_inner().jobs;
                output::jobs(fmt, &jobs);
                Ok(ExitCode::SUCCESS)
            }
            Command::Status { job_id, target } => {
                let mut c = client::connect(&target.jobmanager, &target.credentials).await?;
                let details = client::details(&mut c, &job_id).await?;
                output::details(fmt, &details);
                Ok(ExitCode::SUCCESS)
            }
            Command::Checkpoints { job_id, target } => {
                let mut c = client::connect(&target.jobmanager, &target.credentials).await?;
                let details = client::details(&mut c, &job_id).await?;
                output::checkpoints(fmt, &details);
                Ok(ExitCode::SUCCESS)
            }
            Command::Cancel { job_id, target } => {
                let mut c = client::connect(&target.jobmanager, &target.credentials).await?;
                let r = c
                    .cancel_job(weir_proto::v1::CancelJobRequest { job_id: job_id.clone() })
                    .await
                    .map_err(client::status)?
                    .into_inner();
                output::cancelled(fmt, &job_id, r.state());
                Ok(ExitCode::SUCCESS)
            }
            Command::Taskmanagers { target } => {
                let mut c = client::connect(&target.jobmanager, &target.credentials).await?;
                let o = c
                    .cluster_overview(weir_proto::v1::ClusterOverviewRequest {})
                    .await
                    .map_err(client::status)?
                    .into_inner();
                output::task_managers(fmt, &o);
                Ok(ExitCode::SUCCESS)
            }
            Command::Explain { job, parallelism, args } => {
                let graph = self.resolve(job.as_deref(), &args)?.graph;
                self.explain(&graph, parallelism, fmt)
            }
            Command::Validate { job, parallelism, args } => {
                let graph = self.resolve(job.as_deref(), &args)?.graph;
                let plan = weir_runtime::plan::Plan::new(&graph, &self.registry, parallelism.unwrap_or(0))
                    .map_err(|e| anyhow!("job {}: {e}", job.as_deref().unwrap_or(&graph.name)))?;
                output::plan(fmt, &plan);
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench { workload, events, parallelism, no_changelog, checkpoint_storage, systems } => {
                let w = bench::choose(&workload, &self.workloads, &systems)?;
                let checkpoints = bench::Checkpoints { changelog: !no_changelog, storage: checkpoint_storage };
                bench::run(w, events, parallelism, checkpoints, self.registry.clone()).await
            }
        }
    }
}

fn block_on(work: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(work) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

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
    /// Job manager URL (https://… when it uses TLS).
    #[arg(long, short = 'm', env = "WEIR_JOBMANAGER", default_value = "http://127.0.0.1:6123")]
    jobmanager: String,
    #[command(flatten)]
    credentials: client::Credentials,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve as a job manager.
    Jobmanager(JobManagerArgs),
    /// Serve as a task manager.
    Taskmanager(TaskManagerArgs),
    /// List the jobs this application builds in code.
    Jobs,
    /// Run a job on an embedded job manager and task manager in this process,
    /// and wait for it to end.
    Local {
        /// A YAML job file, a SQL script (.sql), or the name of one of the
        /// application's jobs.
        job: Option<String>,
        /// Default parallelism of operators that set none.
        #[arg(long, short = 'p', value_parser = clap::value_parser!(u32).range(1..))]
        parallelism: Option<u32>,
        /// Slots of the embedded task manager [default: what the job needs].
        #[arg(long)]
        slots: Option<u32>,
        /// An argument of the application's job, KEY=VALUE (repeatable).
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
    },
    /// An interactive SQL shell: declare tables, run queries on an embedded
    /// cluster and watch their results change.
    Sql,
    /// Submit a job to a cluster and print its id.
    Run {
        /// A YAML job file, a SQL script (.sql), or the name of one of the
        /// application's jobs.
        job: Option<String>,
        #[command(flatten)]
        target: Target,
        /// Default parallelism of operators that set none.
        #[arg(long, short = 'p', value_parser = clap::value_parser!(u32).range(1..))]
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
        /// An argument of the application's job, KEY=VALUE (repeatable).
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
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
        /// Give up waiting after this long, for the savepoint and then for
        /// the job to end (the job manager goes on; `weir status` tells).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
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
    /// Check a job without running it (the checks of submission).
    Validate {
        /// A YAML job file, a SQL script (.sql), or the name of one of the
        /// application's jobs.
        job: Option<String>,
        /// Default parallelism of operators that set none.
        #[arg(long, short = 'p', value_parser = clap::value_parser!(u32).range(1..))]
        parallelism: Option<u32>,
        /// An argument of the application's job, KEY=VALUE (repeatable).
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
    },
    /// Print the job graph a job file or SQL script compiles to, as a YAML
    /// job file (after the checks of submission).
    Explain {
        /// A YAML job file, a SQL script (.sql), or the name of one of the
        /// application's jobs.
        job: Option<String>,
        /// Default parallelism of operators that set none.
        #[arg(long, short = 'p', value_parser = clap::value_parser!(u32).range(1..))]
        parallelism: Option<u32>,
        /// An argument of the application's job, KEY=VALUE (repeatable).
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
    },
    /// Run a benchmark workload of the Flink baseline on an embedded cluster.
    Bench {
        /// Workload: w1, w2, w3-heap, w3-rocksdb, w4-load, w4, or one the
        /// application adds.
        workload: String,
        /// Number of generated events.
        #[arg(long, default_value_t = 20_000_000)]
        events: u64,
        /// Parallelism of every operator.
        #[arg(long, short = 'p', default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
        parallelism: u32,
        /// w3-rocksdb: checkpoints without change files (`changelog: false`).
        #[arg(long)]
        no_changelog: bool,
        /// W3: where checkpoints go (e.g. `s3://bucket/prefix`, S3 settings
        /// from the `AWS_*` variables); default: a fresh local directory.
        #[arg(long, value_name = "URI")]
        checkpoint_storage: Option<String>,
        #[command(flatten)]
        systems: bench::Systems,
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
    /// Give up waiting for the savepoint after this long (the job manager
    /// goes on; `weir checkpoints` tells whether it completed).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Job manager URL (`inspect` and `dispose` work on storage directly).
    #[arg(long, short = 'm', env = "WEIR_JOBMANAGER", default_value = "http://127.0.0.1:6123", global = true)]
    jobmanager: String,
    #[command(flatten)]
    credentials: client::Credentials,
}

#[derive(Debug, Subcommand)]
enum SavepointAction {
    /// Show a savepoint's operators, states and sizes, key groups and source positions.
    Inspect {
        /// Savepoint directory (file:///dir, s3://bucket/prefix or hdfs://namenode:port/dir).
        uri: String,
    },
    /// Delete a savepoint (its metadata first, then its files).
    Dispose {
        /// Savepoint directory.
        uri: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parallelism_of_zero_is_refused_on_the_command_line() {
        for cmd in ["local", "run", "validate"] {
            let e = Cli::try_parse_from(["weir", cmd, "job.yaml", "-p", "0"]).unwrap_err();
            assert!(e.to_string().contains("0 is not in 1.."), "{cmd}: {e}");
            assert!(Cli::try_parse_from(["weir", cmd, "job.yaml", "-p", "3"]).is_ok(), "{cmd}");
        }
        assert!(Cli::try_parse_from(["weir", "bench", "w1", "-p", "0"]).is_err());
    }

    #[test]
    fn job_args_are_key_value_pairs() {
        let a = JobArgs::parse(&["kafka=127.0.0.1:9092", "topic=a=b"]).unwrap();
        assert_eq!(a.get("kafka"), Some("127.0.0.1:9092"));
        assert_eq!(a.get("topic"), Some("a=b"));
        assert_eq!(a.get_or("missing", "x"), "x");
        assert!(JobArgs::parse(&["novalue"]).unwrap_err().to_string().contains("KEY=VALUE"));
        assert!(JobArgs::parse(&["=v"]).is_err());
    }

    #[test]
    fn jobs_resolve_by_name_first_then_as_files() {
        let app = Application::new("t", Registry::builtins()).job("mine", |args| {
            let mut b = weir_runtime::builder::JobBuilder::new(args.get_or("name", "mine"));
            b.operator("gen", "datagen", serde_json::json!({"events": 1}));
            b.operator("out", "discard", serde_json::json!({}));
            b.forward("gen", "out");
            Ok(b.build())
        });
        assert_eq!(app.resolve(None, &[]).unwrap().graph.name, "mine");
        assert_eq!(app.resolve(Some("mine"), &["name=other".into()]).unwrap().graph.name, "other");
        let quickstart = concat!(env!("CARGO_MANIFEST_DIR"), "/../jobs/quickstart.yaml");
        assert!(app.resolve(Some(quickstart), &[]).is_ok());
        assert!(app.resolve(Some(quickstart), &["a=b".into()]).unwrap_err().to_string().contains("--arg"));
        let none = Application::new("t", Registry::builtins());
        assert!(none.resolve(None, &[]).unwrap_err().to_string().contains("name a job file"));
    }
}
