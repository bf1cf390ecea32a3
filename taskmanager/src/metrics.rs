//! The task manager's Prometheus metrics: what every running task and its
//! operators did so far, read from their live counters at each scrape.
//! Names and labels are listed in `docs/metrics.md`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{SystemTime, UNIX_EPOCH};

use weir_telemetry::metrics::Exposition;

use crate::tasks::Tasks;

/// The exposition document of this task manager.
pub fn render(tasks: &Tasks, task_manager: &str, registered: bool) -> String {
    let mut e = Exposition::new();
    let tm = [("task_manager", task_manager)];
    e.gauge(
        "weir_taskmanager_registered",
        "1 while the task manager is registered with the job manager.",
        &tm,
        f64::from(u8::from(registered)),
    );
    let tasks = tasks.all();
    e.gauge("weir_taskmanager_tasks", "Tasks running on the task manager.", &tm, tasks.len() as f64);
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    for (id, t) in &tasks {
        let subtask = id.subtask.to_string();
        let labels = [("job_id", id.job.as_str()), ("task", t.name.as_str()), ("subtask", subtask.as_str())];
        let c = &t.counters;
        let counters: [(&'static str, &str, f64); 7] = [
            ("weir_task_records_in_total", "Rows that entered the task's chain.", c.records_in.load(Relaxed) as f64),
            ("weir_task_records_out_total", "Rows that left the task's chain.", c.records_out.load(Relaxed) as f64),
            (
                "weir_task_bytes_in_total",
                "In-memory bytes of the batches that entered the task's chain.",
                c.bytes_in.load(Relaxed) as f64,
            ),
            (
                "weir_task_bytes_out_total",
                "In-memory bytes of the batches that left the task's chain.",
                c.bytes_out.load(Relaxed) as f64,
            ),
            (
                "weir_task_backpressure_seconds_total",
                "Time the task waited for credits to send its output.",
                c.backpressure_ns.load(Relaxed) as f64 / 1e9,
            ),
            (
                "weir_task_sink_records_total",
                "Rows written to external systems by the task's sinks.",
                c.sink_records.load(Relaxed) as f64,
            ),
            (
                "weir_task_bad_records_total",
                "Records the task's source could not decode.",
                c.bad_records.load(Relaxed) as f64,
            ),
        ];
        for (name, help, value) in counters {
            e.counter(name, help, &labels, value);
        }
        let watermark = c.watermark.load(Relaxed);
        if watermark > i64::MIN && watermark < i64::MAX {
            e.gauge(
                "weir_task_watermark_lag_seconds",
                "Wall-clock time minus the task's last emitted watermark.",
                &labels,
                (now_ms - watermark) as f64 / 1000.0,
            );
        }
        e.gauge(
            "weir_task_state_bytes",
            "Size of the state the task's last completed checkpoint references.",
            &labels,
            c.state_bytes.load(Relaxed) as f64,
        );
        for op in t.rows.iter() {
            let labels = [("job_id", id.job.as_str()), ("operator", op.uid.as_str()), ("subtask", subtask.as_str())];
            let counters: [(&'static str, &str, &std::sync::atomic::AtomicU64); 4] = [
                ("weir_operator_records_in_total", "Rows the operator received.", &op.rows_in),
                ("weir_operator_records_out_total", "Rows the operator emitted.", &op.rows_out),
                ("weir_operator_bytes_in_total", "In-memory bytes of the batches the operator received.", &op.bytes_in),
                (
                    "weir_operator_bytes_out_total",
                    "In-memory bytes of the batches the operator emitted.",
                    &op.bytes_out,
                ),
            ];
            for (name, help, value) in counters {
                e.counter(name, help, &labels, value.load(Relaxed) as f64);
            }
        }
        let gauges = c.source_gauges.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for g in gauges {
            let mut l: Vec<(&str, &str)> = labels.to_vec();
            l.extend(g.labels.iter().map(|(k, v)| (*k, v.as_str())));
            e.gauge(g.name, "A source's gauge (see docs/metrics.md).", &l, g.value);
        }
    }
    e.finish()
}

/// What the probe and metrics routes read.
#[derive(Debug, Clone)]
pub(crate) struct Probes {
    pub(crate) tasks: Tasks,
    pub(crate) registered: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub(crate) id: String,
}

/// `/healthz` (the process answers), `/readyz` (registered with the job
/// manager) and `/metrics` (Prometheus).
pub(crate) fn router(probes: Probes) -> axum::Router {
    use axum::extract::State;
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    use std::sync::atomic::Ordering;
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(p): State<Probes>| async move {
                if p.registered.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not registered with the job manager\n")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(p): State<Probes>| async move {
                let text = render(&p.tasks, &p.id, p.registered.load(Ordering::Relaxed));
                ([(header::CONTENT_TYPE, weir_telemetry::METRICS_CONTENT_TYPE)], text)
            }),
        )
        .fallback(
            |uri: axum::http::Uri| async move { (StatusCode::NOT_FOUND, format!("no such path: {}\n", uri.path())) },
        )
        .with_state(probes)
}
