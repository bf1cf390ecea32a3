//! `window_assign`: every row once per window it belongs to, with the
//! window's `window_start`, `window_end` and `window_time` (its last
//! instant) — Flink SQL's window table-valued functions read as a table,
//! the input of window joins and window Top-N. Tumbling, sliding and
//! cumulating windows, as the `window` operator assigns them; a session's
//! windows are known only later and are refused. Stateless.

use arrow::array::{ArrayRef, TimestampMillisecondArray, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::TimeUnit;

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignConfig {
    timestamp_column: String,
    window: WindowSpec,
}

/// The bounds of a row's windows: (start, end) pairs.
fn windows_of(window: &WindowSpec, t: i64, out: &mut Vec<(i64, i64)>) {
    let shift = |o: Option<Duration>| o.map_or(0, millis);
    match *window {
        WindowSpec::Tumbling { size, offset } => {
            let size = millis(size);
            let start = t - (t - shift(offset)).rem_euclid(size);
            out.push((start, start + size));
        }
        WindowSpec::Sliding { size, slide, offset } => {
            let (size, slide) = (millis(size), millis(slide));
            let mut start = t - (t - shift(offset)).rem_euclid(slide);
            while start + size > t {
                out.push((start, start + size));
                start -= slide;
            }
        }
        WindowSpec::Cumulate { step, size, offset } => {
            let (step, size) = (millis(step), millis(size));
            let start = t - (t - shift(offset)).rem_euclid(size);
            let mut end = start + size;
            while end > t {
                out.push((start, end));
                end -= step;
            }
        }
        WindowSpec::Session { .. } => {}
    }
}

/// Factory of `window_assign`.
#[derive(Debug)]
pub struct WindowAssignFactory;

fn plan_assign(ctx: &PlanContext<'_>) -> Result<(usize, WindowSpec, SchemaRef), PlanError> {
    let c: AssignConfig = ctx.config()?;
    let input = ctx.inputs[0].clone();
    let time = time_column(ctx, &input, &c.timestamp_column, "config.timestamp_column")?;
    let ok = match c.window {
        WindowSpec::Tumbling { size, .. } => size.as_millis() > 0,
        WindowSpec::Sliding { size, slide, .. } => {
            slide.as_millis() > 0 && size >= slide && millis(size) / millis(slide) <= 1000
        }
        WindowSpec::Cumulate { step, size, .. } => {
            step.as_millis() > 0
                && size >= step
                && millis(size) % millis(step) == 0
                && millis(size) / millis(step) <= 1000
        }
        WindowSpec::Session { .. } => {
            return Err(ctx
                .error("a session's windows are known only as rows come: aggregate them with `window`")
                .field("config.window"))
        }
    };
    if !ok {
        return Err(ctx
            .error("sizes must be at least 1ms, a slide or step at most the size (dividing it, for cumulate), at most 1000 windows per row")
            .field("config.window"));
    }
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    for name in ["window_start", "window_end", "window_time"] {
        if fields.iter().any(|f| f.name() == name) {
            return Err(ctx.error(format!("the input has a column `{name}` already")).field("config"));
        }
        fields.push(Field::new(name, DataType::Timestamp(TimeUnit::Millisecond, None), false));
    }
    Ok((time, c.window, Arc::new(Schema::new(fields))))
}

impl OperatorFactory for WindowAssignFactory {
    fn kind(&self) -> &str {
        "window_assign"
    }
    fn arity(&self) -> Arity {
        Arity::One
    }
    fn plan(&self, ctx: &PlanContext<'_>) -> Result<SchemaRef, PlanError> {
        Ok(plan_assign(ctx)?.2)
    }
    fn create(&self, ctx: &PlanContext<'_>, _: SubtaskInfo) -> Result<Instance, PlanError> {
        let (time, window, schema) = plan_assign(ctx)?;
        Ok(Instance::Operator(Box::new(WindowAssign { time, window, schema })))
    }
}

struct WindowAssign {
    time: usize,
    window: WindowSpec,
    schema: SchemaRef,
}

impl Operator for WindowAssign {
    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Collector) -> OpResult<()> {
        let times = event_times(&batch, self.time)?;
        let (mut rows, mut starts, mut ends) = (Vec::new(), Vec::new(), Vec::new());
        let mut windows = Vec::new();
        for r in 0..batch.num_rows() {
            windows.clear();
            windows_of(&self.window, times.value(r), &mut windows);
            for &(s, e) in &windows {
                rows.push(r as u32);
                starts.push(s);
                ends.push(e);
            }
        }
        let picks = UInt32Array::from(rows);
        let mut columns: Vec<ArrayRef> =
            batch.columns().iter().map(|c| take(c.as_ref(), &picks, None)).collect::<Result<_, _>>()?;
        let last: Vec<i64> = ends.iter().map(|e| e - 1).collect();
        for v in [starts, ends, last] {
            columns.push(Arc::new(TimestampMillisecondArray::from(v)));
        }
        out.emit(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }
}

#[cfg(test)]
mod tvf_tests {
    use super::*;

    fn windows(spec: serde_json::Value, t: i64) -> Vec<(i64, i64)> {
        let w: WindowSpec = serde_json::from_value(spec).unwrap();
        let mut out = Vec::new();
        windows_of(&w, t, &mut out);
        out.sort();
        out
    }

    #[test]
    fn each_row_gets_every_window_it_falls_in() {
        assert_eq!(windows(serde_json::json!({"type": "tumbling", "size": "10ms"}), 13), [(10, 20)]);
        assert_eq!(windows(serde_json::json!({"type": "tumbling", "size": "10ms", "offset": "3ms"}), 2), [(-7, 3)]);
        assert_eq!(
            windows(serde_json::json!({"type": "sliding", "size": "10ms", "slide": "5ms"}), 12),
            [(5, 15), (10, 20)]
        );
        assert_eq!(
            windows(serde_json::json!({"type": "sliding", "size": "10ms", "slide": "4ms"}), 9),
            [(0, 10), (4, 14), (8, 18)]
        );
        assert_eq!(
            windows(serde_json::json!({"type": "cumulate", "step": "5ms", "size": "15ms"}), 7),
            [(0, 10), (0, 15)]
        );
        assert_eq!(
            windows(serde_json::json!({"type": "cumulate", "step": "5ms", "size": "15ms"}), 16),
            [(15, 20), (15, 25), (15, 30)]
        );
    }
}
