//! The environment a typed job is built in: it collects the operators and
//! edges of the job graph and the operator kinds of the job's own
//! functions.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;

use arrow::datatypes::DataType;
use serde_json::json;
use weir_runtime::builder::JobBuilder;
use weir_runtime::checkpointing::CheckpointConfig;
use weir_runtime::graph::{JobGraph, Partitioning};
use weir_runtime::operators::Registry;
use weir_runtime::PlanError;

use weir_cli::JobArgs;

use crate::connectors::Source;
use crate::ops::FnFactory;
use crate::record::{fields_of, Record};
use crate::stream::DataStream;

/// Where a typed job is built: sources come from it, and it becomes a
/// [`JobGraph`] (plus the operator kinds of the job's functions).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use weir::{StreamEnvironment, Sink};
///
/// #[derive(Serialize, Deserialize)]
/// struct Payment { key: String, amount: i64 }
///
/// let env = StreamEnvironment::new("payments");
/// env.from_values("payments", vec![Payment { key: "unknown".into(), amount: 3 }])
///     .filter("unknown-only", |p: &Payment| p.key == "unknown")
///     .sink("out", Sink::discard());
/// let graph = env.graph().unwrap();
/// assert_eq!(graph.operators.len(), 3);
/// ```
#[derive(Clone)]
pub struct StreamEnvironment {
    pub(crate) inner: Rc<RefCell<EnvInner>>,
}

impl std::fmt::Debug for StreamEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamEnvironment").field("job", &self.inner.borrow().job).finish()
    }
}

pub(crate) struct EnvInner {
    pub(crate) job: String,
    pub(crate) builder: JobBuilder,
    pub(crate) factories: Vec<Arc<FnFactory>>,
    pub(crate) uids: BTreeSet<String>,
    /// The arguments the job is built with.
    pub(crate) args: JobArgs,
    /// The first mistake made while building (reported by [`StreamEnvironment::graph`]).
    pub(crate) error: Option<PlanError>,
}

impl EnvInner {
    /// The operator kind of a typed operator of this job.
    pub(crate) fn kind(&self, uid: &str) -> String {
        format!("{}/{uid}", self.job)
    }

    /// Records `e` unless an earlier mistake is recorded.
    pub(crate) fn fail(&mut self, e: PlanError) {
        self.error.get_or_insert(e);
    }

    /// Claims `uid` for a new operator.
    pub(crate) fn claim(&mut self, uid: &str) -> bool {
        if self.uids.insert(uid.to_string()) {
            true
        } else {
            self.fail(PlanError::operator(uid, 0, "duplicate uid: every operator needs its own").field("uid"));
            false
        }
    }

    /// A uid derived from `base` that no operator has yet.
    pub(crate) fn derived(&mut self, base: &str, suffix: &str) -> String {
        let mut uid = format!("{base}.{suffix}");
        let mut n = 1;
        while self.uids.contains(&uid) {
            n += 1;
            uid = format!("{base}.{suffix}{n}");
        }
        self.uids.insert(uid.clone());
        uid
    }

    /// Adds a typed operator with its factory (not connected yet). Its
    /// configuration is the job's arguments, so that a process that built
    /// the job without them rebuilds it with them ([`crate::Application`]).
    pub(crate) fn add_factory(&mut self, uid: &str, factory: FnFactory) {
        let config = if self.args.is_empty() { json!({}) } else { json!({ "args": self.args.to_map() }) };
        self.builder.operator(uid, &factory.kind, config);
        self.factories.push(Arc::new(factory));
    }

    /// Adds a typed operator with its factory, fed by `from`.
    pub(crate) fn add_typed<T>(
        &mut self,
        uid: &str,
        factory: FnFactory,
        from: &DataStream<T>,
        partitioning: Partitioning,
    ) {
        self.add_factory(uid, factory);
        self.connect(from, uid, partitioning, &[], 0);
    }

    /// An edge from `from` (its operator and output) into input `input` of `to`.
    pub(crate) fn connect<T>(
        &mut self,
        from: &DataStream<T>,
        to: &str,
        partitioning: Partitioning,
        key: &[&str],
        input: u32,
    ) {
        if from.output.is_empty() {
            self.builder.edge(&from.uid, to, partitioning, key, input);
        } else {
            self.builder.side_output(&from.uid, &from.output, to, partitioning, key, input);
        }
    }
}

impl StreamEnvironment {
    /// An environment for the job called `job` (the name prefixes the
    /// kinds of its operators: keep it stable across versions of the job).
    pub fn new(job: &str) -> Self {
        Self::with_args(job, JobArgs::default())
    }

    /// An environment for the job called `job` built with `args` (what
    /// `--arg KEY=VALUE` passes to an application's job).
    pub fn with_args(job: &str, args: JobArgs) -> Self {
        Self {
            inner: Rc::new(RefCell::new(EnvInner {
                job: job.to_string(),
                builder: JobBuilder::new(job),
                factories: Vec::new(),
                uids: BTreeSet::new(),
                args,
                error: None,
            })),
        }
    }

    /// The job's name.
    pub fn job_name(&self) -> String {
        self.inner.borrow().job.clone()
    }

    /// The arguments the job is built with.
    pub fn args(&self) -> JobArgs {
        self.inner.borrow().args.clone()
    }

    /// Parallelism of operators that set none.
    pub fn set_parallelism(&self, parallelism: u32) -> &Self {
        let mut inner = self.inner.borrow_mut();
        if parallelism == 0 {
            inner.fail(PlanError::job("parallelism must be at least 1").field("parallelism"));
        } else {
            inner.builder.default_parallelism(parallelism);
        }
        drop(inner);
        self
    }

    /// Number of key groups (the upper bound of any operator's parallelism).
    pub fn set_max_parallelism(&self, max_parallelism: u32) -> &Self {
        self.inner.borrow_mut().builder.max_parallelism(max_parallelism);
        self
    }

    /// Checkpoints (and restarts) of the job.
    pub fn enable_checkpointing(&self, config: CheckpointConfig) -> &Self {
        self.inner.borrow_mut().builder.checkpoints(config);
        self
    }

    /// A stream of records of type `T` read by `source`.
    pub fn source<T: Record>(&self, uid: &str, source: Source) -> DataStream<T> {
        let mut inner = self.inner.borrow_mut();
        let fields = match fields_of::<T>() {
            Ok(f) => f,
            Err(e) => {
                inner.fail(e);
                Vec::new()
            }
        };
        match source.config(&fields) {
            Ok((kind, config)) => {
                if inner.claim(uid) {
                    inner.builder.operator(uid, &kind, config);
                }
            }
            Err(e) => inner.fail(PlanError::operator(uid, 0, e)),
        }
        drop(inner);
        DataStream::new(self.inner.clone(), uid, fields, false)
    }

    /// A bounded stream of `values` (flat records of integers, floats,
    /// booleans and strings), carried in the job graph itself.
    pub fn from_values<T: Record>(&self, uid: &str, values: Vec<T>) -> DataStream<T> {
        let fields = fields_of::<T>().unwrap_or_default();
        let schema: Result<Vec<serde_json::Value>, String> = fields
            .iter()
            .map(|f| {
                let ty = match f.data_type() {
                    DataType::Boolean => "boolean",
                    DataType::Int8 => "int8",
                    DataType::Int16 => "int16",
                    DataType::Int32 => "int32",
                    DataType::Int64 => "int64",
                    DataType::UInt8 => "uint8",
                    DataType::UInt16 => "uint16",
                    DataType::UInt32 => "uint32",
                    DataType::UInt64 => "uint64",
                    DataType::Float32 => "float32",
                    DataType::Float64 => "float64",
                    DataType::Utf8 | DataType::LargeUtf8 => "string",
                    other => return Err(format!("field `{}` has type {other}, which values cannot hold", f.name())),
                };
                Ok(json!({"name": f.name(), "type": ty, "nullable": f.is_nullable()}))
            })
            .collect();
        let rows: Result<Vec<serde_json::Value>, String> =
            values.iter().map(|v| serde_json::to_value(v).map_err(|e| e.to_string())).collect();
        let source = match (schema, rows) {
            (Ok(schema), Ok(rows)) => Source::raw("values", json!({"schema": schema, "rows": rows})),
            (Err(e), _) | (_, Err(e)) => Source::invalid(e),
        };
        self.source(uid, source)
    }

    /// The job graph built so far, or the first mistake made building it.
    pub fn graph(&self) -> Result<JobGraph, PlanError> {
        let inner = self.inner.borrow();
        match &inner.error {
            Some(e) => Err(e.clone()),
            None => Ok(inner.builder.build()),
        }
    }

    /// What a cluster needs to run this job: the built-in operators, the
    /// connectors and the kinds of the job's own functions.
    pub fn registry(&self) -> Registry {
        let mut r = weir_connectors::registry();
        for f in self.typed_factories() {
            r.register_shared(f).expect("typed kinds have a `/`, stock kinds none");
        }
        r
    }

    /// The factories of the job's own functions.
    pub(crate) fn typed_factories(&self) -> Vec<Arc<FnFactory>> {
        self.inner.borrow().factories.clone()
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::Sink;

    #[derive(Serialize, Deserialize)]
    struct Row {
        a: i64,
    }

    #[test]
    fn a_parallelism_of_zero_is_refused() {
        let env = StreamEnvironment::new("j");
        env.set_parallelism(0);
        env.from_values("v", vec![Row { a: 1 }]).sink("out", Sink::discard());
        let e = env.graph().unwrap_err();
        assert_eq!(e.field.as_deref(), Some("parallelism"), "{e}");

        let env = StreamEnvironment::new("j");
        env.from_values("v", vec![Row { a: 1 }]).set_parallelism(0).sink("out", Sink::discard());
        let e = env.graph().unwrap_err();
        assert_eq!((e.operator.as_deref(), e.field.as_deref()), (Some("v"), Some("parallelism")), "{e}");
    }
}
