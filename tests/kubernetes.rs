//! The Helm chart's wiring, exercised with the real binaries (there is no
//! Kubernetes cluster here): the chart is rendered with `helm template`, and
//! the job manager's, the task managers' and the submission Job's commands,
//! arguments, environment and config file are run exactly as rendered, on
//! loopback. The only changes are those a cluster would make: the job
//! manager Service's name resolves to 127.0.0.1, each pod's ports get a free
//! local port (pods share one host here), the pod IP is 127.0.0.1, and the
//! ConfigMaps' mount paths become files in a scratch directory. Then the
//! rendered probes are hit, the job is submitted by the rendered Job, and
//! `/metrics` is scraped.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use weir_tests::chart::{find, render, strings, Local, Pod};
use weir_tests::{bin, free_ports, http_get, metric_values, wait_until, Proc};

const LONG: Duration = Duration::from_secs(60);

#[test]
fn the_rendered_chart_runs_a_job_with_probes_and_metrics() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let job_file = dir.path().join("job-source.yaml");
    std::fs::write(
        &job_file,
        "name: from-helm
parallelism: 2
operators:
  - uid: gen
    kind: datagen
    config: {events: 400000, rate: 100000, batch_size: 1000}
  - uid: timestamps
    kind: watermark
    config: {timestamp_column: event_time_ms, interval: 50ms}
  - uid: tumble
    kind: window
    config:
      key: [auction]
      timestamp_column: event_time_ms
      window: {type: tumbling, size: 10s}
      aggregates: [{fn: count, as: count}]
  - uid: out
    kind: discard
edges:
  - {from: gen, to: timestamps}
  - {from: timestamps, to: tumble, partition: hash, key: [auction]}
  - {from: tumble, to: out}
checkpoints:
  interval: 200ms
",
    )?;
    let checkpoints = format!("storage.checkpoints=file://{}", dir.path().join("checkpoints").display());
    let docs = render(&[
        "--set",
        &checkpoints,
        "--set",
        "taskmanager.replicas=2",
        "--set",
        "job.enabled=true",
        "--set-file",
        &format!("job.file={}", job_file.display()),
    ])?;

    // ConfigMaps become files.
    let config = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["data"]["weir.yaml"].is_string())
        .context("the ConfigMap holding weir.yaml")?;
    let weir_yaml = config["data"]["weir.yaml"].as_str().unwrap_or_default();
    let state = dir.path().join("state");
    let config_path = dir.path().join("weir.yaml");
    std::fs::write(&config_path, weir_yaml.replace("/var/lib/weir/state", &state.display().to_string()))?;
    let job_cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["data"]["job.yaml"].is_string())
        .context("the job file's ConfigMap")?;
    let job_path = dir.path().join("job.yaml");
    std::fs::write(&job_path, job_cm["data"]["job.yaml"].as_str().unwrap())?;

    let jm_workload = find(&docs, "Deployment", "jobmanager")?;
    assert_eq!(jm_workload["spec"]["replicas"], 1);
    assert_eq!(jm_workload["spec"]["strategy"]["type"], "Recreate");
    let mut local = Local {
        jm_url: String::new(), // known once the job manager's ports are
        mounts: vec![
            ("/etc/weir/weir.yaml".into(), config_path.display().to_string()),
            ("/etc/weir/job/job.yaml".into(), job_path.display().to_string()),
        ],
    };
    let mut free = free_ports(16);
    let jm = Pod::from(jm_workload, "weir-jobmanager-0", &local, &mut free);
    local.jm_url = format!("http://{}", jm.addr("rpc"));
    let mut jm_proc = jm.start("jobmanager", dir.path())?;
    jm.probe("livenessProbe", &mut jm_proc)?;
    jm.probe("readinessProbe", &mut jm_proc)?;

    let tm_workload = find(&docs, "StatefulSet", "taskmanager")?;
    let replicas = tm_workload["spec"]["replicas"].as_u64().unwrap();
    let tms: Vec<Pod> =
        (0..replicas).map(|i| Pod::from(tm_workload, &format!("weir-taskmanager-{i}"), &local, &mut free)).collect();
    let mut tm_procs: Vec<Proc> = tms
        .iter()
        .enumerate()
        .map(|(i, t)| t.start(&format!("taskmanager-{i}"), dir.path()))
        .collect::<Result<_, _>>()?;
    for (t, p) in tms.iter().zip(&mut tm_procs) {
        t.probe("livenessProbe", p)?;
        t.probe("readinessProbe", p)?; // registered with the job manager
    }

    // The submission Job: its init container's wait, then `weir run`.
    let submit = find(&docs, "Job", "submit")?;
    let pod = &submit["spec"]["template"]["spec"];
    let no_ports = HashMap::new();
    for init in pod["initContainers"].as_array().into_iter().flatten() {
        let cmd: Vec<String> = strings(&init["command"]).iter().map(|a| local.fix(a, &no_ports)).collect();
        let out = Command::new(&cmd[0])
            .args(&cmd[1..])
            .env("PATH", format!("{}:{}", bin("weir").parent().unwrap().display(), std::env::var("PATH")?))
            .output()?;
        assert!(out.status.success(), "init container: {}", String::from_utf8_lossy(&out.stderr));
    }
    let main = &pod["containers"][0];
    let args: Vec<String> = strings(&main["args"]).iter().map(|a| local.fix(a, &no_ports)).collect();
    let out =
        Command::new(bin(strings(&main["command"])[0].as_str())).args(&args).args(["--output", "json"]).output()?;
    assert!(out.status.success(), "submission: {}", String::from_utf8_lossy(&out.stderr));
    let id = serde_json::from_slice::<Value>(&out.stdout)?["job_id"].as_str().unwrap().to_string();

    // Metrics from the rendered metrics ports while the job runs.
    let jm_metrics = jm.addr("metrics");
    wait_until("a checkpoint in the job manager's metrics", LONG, || {
        let (_, text) = http_get(&jm_metrics, "/metrics")?;
        Ok(metric_values(&text, "weir_checkpoints_completed_total", &[("job_id", &id)])
            .first()
            .is_some_and(|n| *n >= 1.0)
            .then_some(()))
    })?;
    let rows: f64 = tms
        .iter()
        .map(|t| {
            let (_, text) = http_get(&t.addr("metrics"), "/metrics").unwrap();
            metric_values(&text, "weir_task_records_in_total", &[("job_id", &id)]).iter().sum::<f64>()
        })
        .sum();
    assert!(rows > 0.0, "the task managers' metrics count records");
    let status = wait_until("the job to finish", LONG, || {
        let out = Command::new(bin("weir"))
            .args(["status", &id, "--jobmanager", &local.jm_url, "--output", "json"])
            .output()?;
        let s: Value = serde_json::from_slice(&out.stdout)?;
        Ok((s["state"] == "FINISHED" || s["state"] == "FAILED").then_some(s))
    })?;
    assert_eq!(status["state"], "FINISHED", "{status:#}");
    let on: Vec<&str> = status["tasks"].as_array().unwrap().iter().filter_map(|t| t["task_manager"].as_str()).collect();
    assert!(
        on.iter().all(|tm| tm.starts_with("weir-taskmanager-")),
        "task managers are named after their pods: {on:?}"
    );
    Ok(())
}

/// A token Secret puts the REST API behind bearer tokens: the file is
/// mounted from the Secret and named on the job manager's command line.
#[test]
fn a_token_secret_guards_the_rest_api() -> anyhow::Result<()> {
    let docs = render(&["--set", "jobmanager.rest.tokenSecret=weir-rest"])?;
    let jm = find(&docs, "Deployment", "jobmanager")?;
    let pod = &jm["spec"]["template"]["spec"];
    let args = strings(&pod["containers"][0]["args"]);
    let at = args.iter().position(|a| a == "--rest-token-file").expect("the flag is passed");
    assert_eq!(args[at + 1], "/etc/weir-rest/tokens");
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "rest-tokens").expect("a volume");
    assert_eq!(volume["secret"]["secretName"], "weir-rest");
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| m["name"] == "rest-tokens" && m["mountPath"] == "/etc/weir-rest"));
    // Without one, nothing of it is rendered.
    let docs = render(&[])?;
    let args = strings(&find(&docs, "Deployment", "jobmanager")?["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(!args.iter().any(|a| a == "--rest-token-file"), "{args:?}");
    Ok(())
}

/// A TLS Secret reaches every pod: mounted, named by the `WEIR_TLS_*`
/// variables, gRPC addresses in https://, task managers advertised by the
/// pod names the certificate can name; roles land in weir.yaml; and the
/// NetworkPolicies let only the release's pods reach the gRPC ports.
#[test]
fn a_tls_secret_and_network_policies_close_the_cluster() -> anyhow::Result<()> {
    let docs = render(&["-f", weir_tests::repo().join("helm/weir/ci/tls-and-network-policy.yaml").to_str().unwrap()])?;
    for (kind, name) in [("Deployment", "jobmanager"), ("StatefulSet", "taskmanager"), ("Job", "submit")] {
        let pod = &find(&docs, kind, name)?["spec"]["template"]["spec"];
        let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "tls").expect("a tls volume");
        assert_eq!(volume["secret"]["secretName"], "weir-tls", "{kind}");
        let containers: Vec<&Value> = pod["containers"]
            .as_array()
            .unwrap()
            .iter()
            .chain(pod["initContainers"].as_array().into_iter().flatten())
            .collect();
        for c in containers {
            let mounts = c["volumeMounts"].as_array().unwrap();
            assert!(mounts.iter().any(|m| m["name"] == "tls" && m["mountPath"] == "/etc/weir-tls"), "{kind}: {c}");
            let env = c["env"].as_array().unwrap();
            for (k, v) in [("WEIR_TLS_CA", "ca.crt"), ("WEIR_TLS_CERT", "tls.crt"), ("WEIR_TLS_KEY", "tls.key")] {
                let value = format!("/etc/weir-tls/{v}");
                assert!(env.iter().any(|e| e["name"] == k && e["value"] == value.as_str()), "{kind}: {k}");
            }
            let text = c.to_string();
            assert!(!text.contains("http://"), "every address is https: {kind}: {text}");
        }
    }
    let jm = &find(&docs, "Deployment", "jobmanager")?["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(jm["readinessProbe"]["httpGet"]["scheme"], "HTTPS", "REST is HTTPS with TLS: {jm}");
    let tm = &find(&docs, "StatefulSet", "taskmanager")?["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&tm["args"]);
    assert!(args.contains(&"https://weir-jobmanager:6123".to_string()), "{args:?}");
    let advertised = tm["env"].as_array().unwrap().iter().find(|e| e["name"] == "WEIR_TASKMANAGER_ADVERTISED_ADDRESS");
    assert_eq!(advertised.unwrap()["value"], "https://$(POD_NAME).weir-taskmanager:6124");
    let config = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "weir-config")
        .context("the config map")?["data"]["weir.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&config)?;
    assert_eq!(config["security"]["roles"]["CN=dashboards"], "read", "{config:?}");
    assert_eq!(config["security"]["allowed_paths"][0], "/var/lib/weir/out", "{config:?}");
    assert_eq!(config["security"]["max_parallelism"], 8, "{config:?}");
    assert_eq!(config["security"]["max_operators"], 1000, "{config:?}");
    for name in ["jobmanager", "taskmanager"] {
        let policy = find(&docs, "NetworkPolicy", name)?;
        let rpc = policy["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["ports"][0]["port"] == "rpc")
            .expect("a rule for gRPC")
            .clone();
        assert_eq!(rpc["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"], "weir", "{rpc}");
    }
    // Without them, nothing of it is rendered.
    let docs = render(&[])?;
    assert!(find(&docs, "NetworkPolicy", "jobmanager").is_err());
    let jm = find(&docs, "Deployment", "jobmanager")?.to_string();
    assert!(!jm.contains("WEIR_TLS") && !jm.contains("https://"), "{jm}");
    Ok(())
}
