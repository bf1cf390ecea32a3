//! The web UI in a real headless Chromium (Debian's `chromium`, driven
//! through `chromedriver`'s WebDriver protocol), against real job manager
//! and task manager processes: the overview loads, a job is submitted
//! through the form, its page draws every operator of its graph and updates
//! its rates without a reload (agreeing with REST), a savepoint is taken
//! and the job cancelled with the page's buttons. A screenshot of the job
//! page is kept as a test artifact.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use serde_json::{json, Value};
use weir_tests::{free_port, http_json, spawn, wait_until, Cluster, Proc};

const LONG: Duration = Duration::from_secs(120);
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session.
struct Browser {
    base: String,
    session: String,
    _driver: Proc,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(logs: &std::path::Path) -> anyhow::Result<Browser> {
        let driver = std::env::var("WEIR_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let chromium = std::env::var("WEIR_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        if !std::path::Path::new(&driver).exists() {
            bail!("{driver} is missing: scripts/test.sh installs Debian's chromium and chromium-driver");
        }
        let port = free_port();
        let proc = spawn("chromedriver", Command::new(&driver).arg(format!("--port={port}")), logs)?;
        let base = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver", LONG, || {
            Ok(http_json("GET", &format!("{base}/status"), None).ok().filter(|(_, s)| s["value"]["ready"] == true))
        })?;
        let profile = tempfile::tempdir()?;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1440,1100", format!("--user-data-dir={}", profile.path().display()),
            ]}
        }}});
        let (status, s) =
            http_json("POST", &format!("{base}/session"), Some(("application/json", caps.to_string().into())))?;
        let session =
            s["value"]["sessionId"].as_str().with_context(|| format!("no session ({status}): {s}"))?.to_string();
        Ok(Browser { base, session, _driver: proc, _profile: profile })
    }

    fn call(&self, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let body = (method == "POST").then(|| ("application/json", body.to_string().into_bytes()));
        let (status, v) = http_json(method, &url, body)?;
        if status != 200 {
            bail!("WebDriver {method} {path} answered {status}: {v}");
        }
        Ok(v["value"].clone())
    }

    fn open(&self, url: &str) -> anyhow::Result<()> {
        self.call("POST", "/url", json!({"url": url})).map(drop)
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    fn js(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        self.call("POST", "/execute/sync", json!({"script": script, "args": args}))
    }

    fn click(&self, css: &str) -> anyhow::Result<()> {
        let el = self.call("POST", "/element", json!({"using": "css selector", "value": css}))?;
        let id = el[ELEMENT].as_str().with_context(|| format!("no element {css}"))?.to_string();
        self.call("POST", &format!("/element/{id}/click"), json!({})).map(drop)
    }

    /// Waits until `script` returns something other than null or false.
    fn wait_for(&self, what: &str, script: &str) -> anyhow::Result<Value> {
        wait_until(what, LONG, || {
            let v = self.js(script, json!([]))?;
            Ok((!v.is_null() && v != false).then_some(v))
        })
    }

    fn screenshot(&self, to: &std::path::Path) -> anyhow::Result<()> {
        let png = self.call("GET", "/screenshot", Value::Null)?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().context("no screenshot")?)?;
        std::fs::write(to, bytes)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http_json("DELETE", &format!("{}/session/{}", self.base, self.session), None);
    }
}

/// Where test artifacts go: `WEIR_TEST_ARTIFACTS`, or `target/test-artifacts`.
fn artifacts() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("WEIR_TEST_ARTIFACTS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-artifacts"),
    };
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn job(storage: &std::path::Path) -> String {
    format!(
        "name: clicks-in-the-browser
parallelism: 2
operators:
  - uid: bids
    kind: datagen
    config: {{rate: 20000, batch_size: 500}}
  - uid: timestamps
    kind: watermark
    config: {{timestamp_column: event_time_ms, interval: 50ms}}
  - uid: per-channel
    kind: window
    config:
      key: [channel]
      timestamp_column: event_time_ms
      window: {{type: tumbling, size: 1s}}
      aggregates: [{{fn: count, as: bids}}]
  - uid: sink
    kind: discard
    parallelism: 1
edges:
  - {{from: bids, to: timestamps}}
  - {{from: timestamps, to: per-channel, partition: hash, key: [channel]}}
  - {{from: per-channel, to: sink, partition: rebalance}}
checkpoints:
  interval: 500ms
  storage: file://{}
",
        storage.display()
    )
}

#[test]
fn the_web_ui_submits_shows_a_live_job_takes_a_savepoint_and_cancels() -> anyhow::Result<()> {
    let savepoints = tempfile::tempdir()?;
    let sp_dir = format!("file://{}", savepoints.path().display());
    let c = Cluster::start_with(2, 2, "5s", &["--savepoint-dir", &sp_dir])?;
    let b = Browser::start(c.dir.path())?;
    let root = format!("http://{}", c.rest);

    // The overview: both task managers, no jobs yet.
    b.open(&format!("{root}/"))?;
    b.wait_for("the overview's task managers", "return document.querySelectorAll('#tms tbody tr').length === 2")?;
    let cards = b.js("return document.querySelector('#cards').innerText", json!([]))?;
    assert!(cards.as_str().unwrap().to_lowercase().contains("task managers"), "{cards}");

    // Submit through the form: the page moves to the job.
    b.click("a[data-nav=submit]")?;
    b.wait_for("the submit form", "return document.querySelector('#job-text') !== null")?;
    b.js("document.querySelector('#job-text').value = arguments[0]", json!([job(&c.dir.path().join("storage"))]))?;
    b.click("#submit-button")?;
    let id = b.wait_for("the job page", "const m = location.hash.match(/^#\\/jobs\\/(.+)$/); return m && m[1]")?;
    let id = id.as_str().unwrap().to_string();
    b.wait_for(
        "RUNNING on the page",
        "const h = document.querySelector('#job-name'); return h && h.dataset.state === 'RUNNING'",
    )?;

    // Every operator of the job is drawn in the graph (SVG).
    let drawn = b.wait_for(
        "the graph",
        "const uids = [...document.querySelectorAll('#graph svg text.op')].map(t => t.dataset.uid); return uids.length ? uids : null",
    )?;
    assert_eq!(drawn, json!(["bids", "timestamps", "per-channel", "sink"]));

    // The source vertex's rate changes without a reload, and agrees with REST.
    let page_rate = "const t = document.querySelector('#graph text.rate[data-vertex=\"0\"]'); return t ? Number(t.dataset.rate) : null";
    b.js("window.__notReloaded = true", json!([]))?;
    // The first rate stays in the page and is compared there: a number sent
    // through JSON and back into a script may differ from it in the last bit.
    b.wait_for(
        "a first rate",
        &format!(
            "const r = (() => {{ {page_rate} }})(); if (r > 0) {{ window.__firstRate = r; return r; }} return null"
        ),
    )?;
    b.wait_for(
        "the rate to change",
        &format!("const r = (() => {{ {page_rate} }})(); return r > 0 && r !== window.__firstRate ? r : null"),
    )?;
    assert_eq!(b.js("return window.__notReloaded === true", json!([]))?, true, "the page was not reloaded");
    wait_until("the page and REST to agree within 10 %", LONG, || {
        let ui = b.js(page_rate, json!([]))?.as_f64().unwrap_or(0.0);
        let (_, d) = http_json("GET", &format!("{root}/v1/jobs/{id}"), None)?;
        let rest = d["vertices"][0]["records_out_per_second"].as_f64().unwrap_or(0.0);
        Ok((rest > 0.0 && (ui - rest).abs() <= rest * 0.1).then_some(()))
    })?;
    b.wait_for(
        "a completed checkpoint on the page",
        "return document.querySelector('#checkpoints .badge.COMPLETED') !== null",
    )?;
    b.screenshot(&artifacts()?.join("ui-job-page.png"))?;

    // A savepoint from the page, into the job manager's savepoint directory.
    b.click("#btn-savepoint")?;
    let location = b.wait_for(
        "the savepoint to complete",
        "return document.querySelector('#job-name').dataset.savepoint || null",
    )?;
    let location = location.as_str().unwrap();
    assert!(location.starts_with(&sp_dir), "{location}");
    assert!(std::path::Path::new(location.trim_start_matches("file://")).join("_metadata").exists());

    // Cancel from the page (confirming the dialog).
    b.click("#btn-cancel")?;
    b.call("POST", "/alert/accept", json!({}))?;
    wait_until("the job cancelled", LONG, || {
        let (_, d) = http_json("GET", &format!("{root}/v1/jobs/{id}"), None)?;
        Ok((d["state"] == "CANCELED").then_some(()))
    })?;
    b.wait_for("CANCELED on the page", "return document.querySelector('#job-name').dataset.state === 'CANCELED'")?;
    Ok(())
}

#[test]
fn behind_a_token_the_page_asks_for_one_and_then_shows_the_cluster() -> anyhow::Result<()> {
    let secrets = tempfile::tempdir()?;
    let file = secrets.path().join("tokens");
    std::fs::write(&file, "reader-5f0c1e2d3a4b5c6d read\n")?;
    let cli = vec![("WEIR_TOKEN".to_string(), "reader-5f0c1e2d3a4b5c6d".to_string())];
    let c = Cluster::start_secure(1, 2, "5s", &["--rest-token-file", file.to_str().unwrap()], Vec::new(), cli)?;
    let b = Browser::start(c.dir.path())?;
    b.open(&format!("http://{}/", c.rest))?;
    b.wait_for("the sign-in form", "return document.querySelector('#token-form') !== null")?;
    b.js("document.querySelector('#token').value = arguments[0]", json!(["reader-5f0c1e2d3a4b5c6d"]))?;
    b.click("#token-form button")?;
    b.wait_for("the overview's task manager", "return document.querySelectorAll('#tms tbody tr').length === 1")?;
    Ok(())
}
