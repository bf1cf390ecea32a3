//! The operators the typed API compiles to. Each is an ordinary operator
//! kind — registered, planned and deployed like a built-in one — whose
//! factory holds the user's closures or function; its kind is the job's
//! name and the operator's uid (`job/uid`), so every process that builds
//! the same job registers the same kinds.
//!
//! - [`stateless`]: map, flat_map, filter, timestamps, keys;
//! - [`process`]: keyed process functions of one and two inputs;
//! - [`window`]: keyed event-time windows with aggregate functions.

pub(crate) mod process;
pub(crate) mod stateless;
pub(crate) mod window;

use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{FieldRef, SchemaRef};
use weir_runtime::error::{OpResult, OperatorError};
use weir_runtime::operators::{Arity, Collector, Instance, OperatorFactory, PlanContext, SubtaskInfo};
use weir_runtime::PlanError;

use crate::functions::{SideBuffer, SideBuffers};
use crate::record::{stream_schema, to_batch, Record};

/// Plans an operator: its output schema from its inputs.
type PlanFn = Box<dyn Fn(&PlanContext<'_>) -> Result<SchemaRef, PlanError> + Send + Sync>;
/// Creates a subtask's operator; gets the side outputs declared by then.
type CreateFn = Box<dyn Fn(&PlanContext<'_>, SubtaskInfo, &[SideOutput]) -> Result<Instance, PlanError> + Send + Sync>;

/// A state an operator declares: name, description, and (typed states) a
/// check that data recorded with another description can be read.
#[derive(Clone)]
pub(crate) struct StateDecl {
    pub(crate) name: String,
    pub(crate) desc: String,
    pub(crate) reads: Option<Reads>,
}

/// Whether data recorded with a description can be read (the error says why not).
pub(crate) type Reads = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

impl StateDecl {
    /// A state read only by data of the same description.
    pub(crate) fn fixed(name: &str, desc: &str) -> Self {
        Self { name: name.to_string(), desc: desc.to_string(), reads: None }
    }

    /// The declarations of a keyed function's states (what `open`
    /// declares), its timers and its key.
    pub(crate) fn keyed<K: crate::functions::Key>(states: &crate::state::States) -> Vec<Self> {
        let mut decls: Vec<Self> = states
            .specs
            .iter()
            .map(|s| {
                let reads = s.reads;
                Self { name: s.name.clone(), desc: s.type_desc.clone(), reads: Some(Arc::new(reads)) }
            })
            .collect();
        decls.push(Self::fixed(process::EVENT_TIMERS, "timers"));
        decls.push(Self::fixed(process::PROCESSING_TIMERS, "timers"));
        decls.push(Self {
            name: KEY_STATE.into(),
            desc: crate::evolution::describe::<K>("key"),
            reads: Some(Arc::new(crate::evolution::reads::<K>)),
        });
        decls
    }
}

/// The pseudo-state that records a keyed operator's key type (it holds no
/// entries): a restore into a key type that cannot read it is refused.
pub(crate) const KEY_STATE: &str = "__key";

/// The kind of state (value, list, map, window, key) a description names.
fn state_kind(desc: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(desc).ok()?;
    v.get("state")?.as_str().map(str::to_string)
}

/// A side output some stream reads: its name, record fields, and how to
/// buffer its values.
#[derive(Clone)]
pub(crate) struct SideOutput {
    pub(crate) name: String,
    pub(crate) fields: Vec<FieldRef>,
    pub(crate) timestamped: bool,
    pub(crate) buffer: Arc<dyn Fn() -> Box<dyn SideBuffer> + Send + Sync>,
}

impl SideOutput {
    /// A side output of records of type `X`.
    pub(crate) fn of<X: Record>(name: &str, fields: Vec<FieldRef>, timestamped: bool) -> Self {
        let (f, ts) = (fields.clone(), timestamped);
        let buffer: Arc<dyn Fn() -> Box<dyn SideBuffer> + Send + Sync> = Arc::new(move || {
            Box::new(TypedSide::<X> {
                fields: f.clone(),
                schema: stream_schema(&f, ts),
                timestamped: ts,
                items: Vec::new(),
                ts: Vec::new(),
            })
        });
        Self { name: name.to_string(), fields, timestamped, buffer }
    }
}

/// A side output's values of type `X`.
struct TypedSide<X> {
    fields: Vec<FieldRef>,
    schema: SchemaRef,
    timestamped: bool,
    items: Vec<X>,
    ts: Vec<i64>,
}

impl<X: Record> SideBuffer for TypedSide<X> {
    fn push(&mut self, value: Box<dyn std::any::Any>, timestamp: Option<i64>) {
        if let Ok(v) = value.downcast::<X>() {
            self.items.push(*v);
            self.ts.push(timestamp.unwrap_or(i64::MIN));
        }
    }
    fn len(&self) -> usize {
        self.items.len()
    }
    fn take(&mut self) -> OpResult<RecordBatch> {
        let items = std::mem::take(&mut self.items);
        let ts = std::mem::take(&mut self.ts);
        to_batch(&self.schema, &self.fields, &items, self.timestamped.then_some(ts))
    }
}

/// Buffers for the side outputs declared, and their ports.
pub(crate) fn side_buffers(sides: &[SideOutput]) -> (SideBuffers, Vec<(String, u32)>) {
    let mut buffers = SideBuffers::default();
    let mut ports = Vec::new();
    for (i, s) in sides.iter().enumerate() {
        buffers.by_name.insert(s.name.clone(), (s.buffer)());
        ports.push((s.name.clone(), i as u32 + 1));
    }
    (buffers, ports)
}

/// Emits what the side buffers hold.
pub(crate) fn flush_sides(side: &mut SideBuffers, ports: &[(String, u32)], out: &mut Collector) -> OpResult<()> {
    for (name, port) in ports {
        if let Some(buf) = side.by_name.get_mut(name) {
            if buf.len() > 0 {
                out.emit_side(*port, buf.take()?);
            }
        }
    }
    Ok(())
}

/// The factory of a typed operator: closures over the user's code.
pub(crate) struct FnFactory {
    pub(crate) kind: String,
    pub(crate) arity: Arity,
    pub(crate) plan: PlanFn,
    pub(crate) create: CreateFn,
    pub(crate) states: Vec<StateDecl>,
    /// Side outputs, added while the job is built (streams that read them).
    pub(crate) sides: Mutex<Vec<SideOutput>>,
    /// The side output of records too late for a window (they keep the
    /// input's columns).
    pub(crate) late: Option<String>,
}

impl std::fmt::Debug for FnFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnFactory").field("kind", &self.kind).finish()
    }
}

impl FnFactory {
    pub(crate) fn new(kind: String, arity: Arity, plan: PlanFn, create: CreateFn) -> Self {
        Self { kind, arity, plan, create, states: Vec::new(), sides: Mutex::new(Vec::new()), late: None }
    }

    pub(crate) fn sides(&self) -> Vec<SideOutput> {
        self.sides.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl OperatorFactory for FnFactory {
    fn kind(&self) -> &str {
        &self.kind
    }
    fn arity(&self) -> Arity {
        self.arity
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        (self.plan)(ctx)
    }
    fn side_outputs(&self, ctx: &PlanContext<'_>) -> Result<Vec<(String, SchemaRef)>, PlanError> {
        if let Some(late) = &self.late {
            return Ok(vec![(late.clone(), ctx.inputs[0].clone())]);
        }
        Ok(self.sides().into_iter().map(|s| (s.name.clone(), stream_schema(&s.fields, s.timestamped))).collect())
    }
    fn state_types(&self, _ctx: &PlanContext<'_>) -> Vec<(String, String)> {
        self.states.iter().map(|s| (s.name.clone(), s.desc.clone())).collect()
    }
    fn state_restorable(&self, name: &str, declared: &str, recorded: &str) -> Result<(), String> {
        if state_kind(declared) != state_kind(recorded) {
            return Err(format!(
                "a {} state does not restore as a {} state",
                state_kind(recorded).unwrap_or_else(|| "built-in".into()),
                state_kind(declared).unwrap_or_else(|| "built-in".into())
            ));
        }
        match self.states.iter().find(|s| s.name == name).and_then(|s| s.reads.clone()) {
            Some(reads) => reads(recorded),
            None if declared == recorded => Ok(()),
            None => Err("the two are different".into()),
        }
    }
    fn create(&self, ctx: &PlanContext<'_>, subtask: SubtaskInfo) -> Result<Instance, PlanError> {
        (self.create)(ctx, subtask, &self.sides())
    }
}

/// A user function's error as an operator error.
pub(crate) fn user(e: anyhow::Error) -> OperatorError {
    OperatorError::User(format!("{e:#}"))
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
