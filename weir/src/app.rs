//! [`Application`]: a user's binary. It registers the application's jobs
//! (and any operator kinds of its own), and its `main` runs every role of
//! a Weir deployment — job manager, task manager, submitter, embedded
//! runner — with the same registry.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context as _};
use arrow::datatypes::SchemaRef;
use weir_cli::{BenchWorkload, JobArgs};
use weir_runtime::graph::JobGraph;
use weir_runtime::operators::{Arity, Instance, OperatorFactory, PlanContext, Registry, SubtaskInfo};
use weir_runtime::PlanError;

use crate::env::StreamEnvironment;
use crate::ops::FnFactory;

/// Builds a job in a [`StreamEnvironment`] (which carries its arguments).
pub type BuildJob = Arc<dyn Fn(&StreamEnvironment) -> anyhow::Result<()> + Send + Sync>;

/// A Weir application: the stock operators and connectors, the jobs it
/// builds in code, and operator kinds of its own.
///
/// ```no_run
/// use serde::{Deserialize, Serialize};
/// use weir::{Application, Sink, Source};
///
/// #[derive(Serialize, Deserialize)]
/// struct Bid { auction: i64, price: i64 }
///
/// fn main() -> std::process::ExitCode {
///     Application::new("bids")
///         .job("expensive-bids", |env| {
///             env.source::<Bid>("bids", Source::datagen(Some(1000), None))
///                 .filter("expensive", |b: &Bid| b.price > 1_000)
///                 .sink("out", Sink::stdout());
///             Ok(())
///         })
///         .main()
/// }
/// ```
///
/// Its binary then runs as `bids jobmanager`, `bids taskmanager`,
/// `bids run expensive-bids -m URL [--arg KEY=VALUE]` and `bids local`.
pub struct Application {
    name: String,
    registry: Registry,
    jobs: Vec<(String, BuildJob)>,
    workloads: Vec<Workload>,
    /// The first mistake made registering.
    error: Option<anyhow::Error>,
}

/// Builds a benchmark workload for a number of events and a parallelism.
type BuildWorkload = Arc<dyn Fn(&StreamEnvironment, u64, u32) -> anyhow::Result<()> + Send + Sync>;

/// A benchmark workload of the application.
struct Workload {
    name: String,
    label: String,
    build: BuildWorkload,
    expected: fn(u64) -> u64,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("name", &self.name)
            .field("jobs", &self.jobs.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .finish()
    }
}

impl Application {
    /// An application called `name` (its binary's name, in help texts),
    /// with the built-in operators and every connector.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            registry: weir_connectors::registry(),
            jobs: Vec::new(),
            workloads: Vec::new(),
            error: None,
        }
    }

    /// Adds an operator kind of the application's own, for its job files
    /// or jobs built with the low-level builder.
    pub fn register(mut self, factory: impl OperatorFactory + 'static) -> Self {
        if let Err(e) = self.registry.register(factory) {
            // Reported by `build` (and so by `main`).
            self.error.get_or_insert_with(|| anyhow!("registering an operator kind: {e}"));
        }
        self
    }

    /// Adds a job built in code, run by name (`run NAME`, `local NAME`).
    ///
    /// `build` also runs, without arguments, whenever the binary starts,
    /// so that every process knows the job's functions: it must build
    /// without arguments (falling back to defaults), and the operators it
    /// adds must not depend on the arguments (their settings may).
    pub fn job(
        mut self,
        name: impl Into<String>,
        build: impl Fn(&StreamEnvironment) -> anyhow::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.jobs.push((name.into(), Arc::new(build)));
        self
    }

    /// Adds a benchmark workload (`bench NAME`): `build` builds it for a
    /// number of events and a parallelism; `expected` is the result count
    /// it must produce; `label` names it in the result line.
    pub fn workload(
        mut self,
        name: impl Into<String>,
        label: impl Into<String>,
        build: impl Fn(&StreamEnvironment, u64, u32) -> anyhow::Result<()> + Send + Sync + 'static,
        expected: fn(u64) -> u64,
    ) -> Self {
        self.workloads.push(Workload { name: name.into(), label: label.into(), build: Arc::new(build), expected });
        self
    }

    /// The application as the command line runs it: the registry with the
    /// kinds of every job's functions, and the jobs by name.
    pub fn build(self) -> anyhow::Result<weir_cli::Application> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut registry = self.registry;
        let mut jobs = Vec::new();
        for (name, build) in self.jobs {
            let kinds = register_job(&mut registry, &name, build.clone())
                .with_context(|| format!("building job {name} without arguments"))?;
            jobs.push((name, build, kinds));
        }
        let mut workloads = Vec::new();
        for Workload { name, label, build, expected } in self.workloads {
            let job = name.clone();
            let b = build.clone();
            let as_job: BuildJob = Arc::new(move |env: &StreamEnvironment| b(env, 0, 1));
            register_job(&mut registry, &job, as_job).with_context(|| format!("building workload {name}"))?;
            workloads.push(Workload { name, label, build, expected });
        }
        let mut app = weir_cli::Application::new(self.name, registry);
        for (name, build, kinds) in jobs {
            let job = name.clone();
            app = app.job(name, move |args: &JobArgs| {
                let env = StreamEnvironment::with_args(&job, args.clone());
                build(&env)?;
                let graph = env.graph().map_err(|e| anyhow!("{e}"))?;
                let built: BTreeSet<String> = env.typed_factories().iter().map(|f| f.kind.clone()).collect();
                if built != kinds {
                    bail!(
                        "the operators of job {job} depend on its arguments (built with them: {}; without: {}); \
                         arguments may change operators' settings only",
                        join(&built),
                        join(&kinds)
                    );
                }
                Ok(graph)
            });
        }
        for Workload { name, label, build, expected } in workloads {
            let job = name.clone();
            let build: Arc<dyn Fn(u64, u32) -> anyhow::Result<JobGraph> + Send + Sync> =
                Arc::new(move |events, parallelism| {
                    let env = StreamEnvironment::new(&job);
                    build(&env, events, parallelism)?;
                    env.graph().map_err(|e| anyhow!("{e}"))
                });
            app = app.workload(name, BenchWorkload { label, build, expected, backend: None });
        }
        Ok(app)
    }

    /// Runs the command line of `std::env::args`.
    pub fn main(self) -> ExitCode {
        match self.build() {
            Ok(app) => app.main(),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }

    /// Runs only the job manager role, its flags at the top level.
    pub fn main_jobmanager(self) -> ExitCode {
        self.build().map(weir_cli::Application::main_jobmanager).unwrap_or_else(fail)
    }

    /// Runs only the task manager role, its flags at the top level.
    pub fn main_taskmanager(self) -> ExitCode {
        self.build().map(weir_cli::Application::main_taskmanager).unwrap_or_else(fail)
    }
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}

fn join(kinds: &BTreeSet<String>) -> String {
    kinds.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Builds `name` without arguments and registers the kinds of its
/// functions; returns them.
fn register_job(registry: &mut Registry, name: &str, build: BuildJob) -> anyhow::Result<BTreeSet<String>> {
    let env = StreamEnvironment::new(name);
    build(&env)?;
    env.graph().map_err(|e| anyhow!("{e}"))?;
    let mut kinds = BTreeSet::new();
    for default in env.typed_factories() {
        kinds.insert(default.kind.clone());
        let f =
            AppFactory { name: name.to_string(), build: build.clone(), default, built: Mutex::new(BTreeMap::new()) };
        registry.register(f)?;
    }
    Ok(kinds)
}

/// A typed operator of an application's job. Its functions are those of
/// the job built without arguments, unless the operator's configuration
/// carries the arguments the job was submitted with: then those of the job
/// built with them (a closure may have captured an argument).
struct AppFactory {
    name: String,
    build: BuildJob,
    default: Arc<FnFactory>,
    /// The factory of this kind in the job built with given arguments.
    built: Mutex<BTreeMap<BTreeMap<String, String>, Arc<FnFactory>>>,
}

impl std::fmt::Debug for AppFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppFactory").field("job", &self.name).field("kind", &self.default.kind).finish()
    }
}

impl AppFactory {
    fn with_args(&self, ctx: &PlanContext<'_>) -> Result<Arc<FnFactory>, PlanError> {
        let Some(args) = ctx.config.get("args") else { return Ok(self.default.clone()) };
        let args: BTreeMap<String, String> = serde_json::from_value(args.clone())
            .map_err(|e| PlanError::operator(ctx.uid, ctx.line, format!("`args`: {e}")).field("args"))?;
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = built.get(&args) {
            return Ok(f.clone());
        }
        let env = StreamEnvironment::with_args(&self.name, JobArgs::from_map(args.clone()));
        let mine = (self.build)(&env)
            .map_err(|e| format!("{e:#}"))
            .and_then(|()| env.graph().map(|_| ()).map_err(|e| e.to_string()))
            .and_then(|()| {
                env.typed_factories()
                    .into_iter()
                    .find(|f| f.kind == self.default.kind)
                    .ok_or_else(|| format!("the job built with {args:?} has no operator of kind {}", self.default.kind))
            })
            .map_err(|e| PlanError::operator(ctx.uid, ctx.line, format!("building job {}: {e}", self.name)))?;
        built.insert(args, mine.clone());
        Ok(mine)
    }
}

impl OperatorFactory for AppFactory {
    fn kind(&self) -> &str {
        &self.default.kind
    }
    fn arity(&self) -> Arity {
        self.default.arity
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        self.with_args(ctx)?.plan(ctx)
    }
    fn side_outputs(&self, ctx: &PlanContext<'_>) -> Result<Vec<(String, SchemaRef)>, PlanError> {
        self.with_args(ctx)?.side_outputs(ctx)
    }
    fn state_types(&self, ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        self.default.state_types(ctx)
    }
    fn state_restorable(&self, name: &str, declared: &str, recorded: &str) -> Result<(), String> {
        self.default.state_restorable(name, declared, recorded)
    }
    fn describe_entry(&self, state: &str, key: &[u8], value: &[u8]) -> Option<serde_json::Value> {
        self.default.describe_entry(state, key, value)
    }
    fn create(&self, ctx: &PlanContext<'_>, subtask: SubtaskInfo) -> Result<Instance, PlanError> {
        self.with_args(ctx)?.create(ctx, subtask)
    }
}
