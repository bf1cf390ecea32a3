//! The Helm chart, rendered and run on loopback with the real binaries
//! (there is no Kubernetes cluster here): `helm template` renders it, and
//! each pod's main container runs exactly as rendered, with only the
//! changes a cluster would make — the job manager Service's name resolves
//! to 127.0.0.1, each pod's ports get a free local port (pods share one
//! host here), the pod IP is 127.0.0.1, and ConfigMaps' mount paths become
//! files in a scratch directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::{bin, http_get, repo, spawn, wait_until, Proc};

const LONG: Duration = Duration::from_secs(60);

/// `helm` as `scripts/helm.sh install` leaves it (or `WEIR_HELM`).
pub fn helm() -> PathBuf {
    let path = std::env::var_os("WEIR_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/weir/tools/bin/helm"));
    assert!(path.exists(), "{} is missing: run scripts/helm.sh install (scripts/test.sh does)", path.display());
    path
}

/// Every document `helm template` renders with `args`.
pub fn render(args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let out = Command::new(helm()).args(["template", "weir"]).arg(repo().join("helm/weir")).args(args).output()?;
    if !out.status.success() {
        bail!("helm template failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let mut docs = Vec::new();
    for doc in format!("\n{text}").split("\n---") {
        let v: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(doc).with_context(|| format!("a rendered document:\n{doc}"))?;
        if !v.is_null() {
            docs.push(serde_json::to_value(v)?);
        }
    }
    Ok(docs)
}

pub fn find<'a>(docs: &'a [Value], kind: &str, component: &str) -> anyhow::Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["labels"]["app.kubernetes.io/component"] == component)
        .with_context(|| format!("no {kind} of component {component} rendered"))
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().map(|s| s.as_str().expect("a string").to_string()).collect()
}

/// One pod's main container, localized.
pub struct Pod {
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Container port by name -> local port.
    pub ports: HashMap<String, u16>,
    pub container: Value,
}

impl Pod {
    /// `pod_name` is the pod's `metadata.name`.
    pub fn from(workload: &Value, pod_name: &str, local: &Local, free: &mut Vec<u16>) -> Pod {
        let container = workload["spec"]["template"]["spec"]["containers"][0].clone();
        let mut map: HashMap<u16, u16> = HashMap::new();
        let mut ports = HashMap::new();
        for p in container["ports"].as_array().into_iter().flatten() {
            let port = p["containerPort"].as_u64().expect("containerPort") as u16;
            let here = free.pop().expect("enough free ports");
            map.insert(port, here);
            ports.insert(p["name"].as_str().expect("port name").to_string(), here);
        }
        let fix = |s: &str| local.fix(s, &map);
        let mut env: Vec<(String, String)> = Vec::new();
        for e in container["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().expect("env name").to_string();
            let value = if let Some(v) = e["value"].as_str() {
                // Kubernetes expands $(VAR) from variables defined before.
                let mut v = v.to_string();
                for (k, val) in &env {
                    v = v.replace(&format!("$({k})"), val);
                }
                fix(&v)
            } else {
                match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("status.podIP") => "127.0.0.1".to_string(),
                    Some("metadata.name") => pod_name.to_string(),
                    other => panic!("env {name} comes from {other:?}, which this test does not provide"),
                }
            };
            env.push((name, value));
        }
        let command =
            strings(&container["command"]).iter().chain(strings(&container["args"]).iter()).map(|a| fix(a)).collect();
        Pod { command, env, ports, container }
    }

    pub fn start(&self, name: &str, dir: &Path) -> anyhow::Result<Proc> {
        let program = self.command[0].as_str();
        let mut cmd = Command::new(bin(program));
        cmd.args(&self.command[1..]).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        spawn(name, &mut cmd, dir)
    }

    /// Waits until the rendered probe answers 200 (`proc` must stay alive).
    pub fn probe(&self, which: &str, proc: &mut Proc) -> anyhow::Result<()> {
        let get = &self.container[which]["httpGet"];
        let path = get["path"].as_str().with_context(|| format!("{which} has no httpGet path"))?.to_string();
        let port = self.ports[get["port"].as_str().with_context(|| format!("{which} names no port"))?];
        let addr = format!("127.0.0.1:{port}");
        wait_until(&format!("{which} {path} on {addr}"), LONG, || {
            if let Some(status) = proc.exited() {
                bail!("{} exited ({status}):\n{}", proc.name, proc.log());
            }
            Ok((http_get(&addr, &path)?.0 == 200).then_some(()))
        })
        .with_context(|| proc.log())
    }

    pub fn addr(&self, port: &str) -> String {
        format!("127.0.0.1:{}", self.ports[port])
    }
}

/// What a cluster provides: the Service name, mounts.
pub struct Local {
    pub jm_url: String,
    pub mounts: Vec<(String, String)>,
}

impl Local {
    pub fn fix(&self, s: &str, ports: &HashMap<u16, u16>) -> String {
        let mut s = s.replace("http://weir-jobmanager:6123", &self.jm_url);
        for (from, to) in &self.mounts {
            s = s.replace(from.as_str(), to.as_str());
        }
        for (p, here) in ports {
            s = s.replace(&format!("0.0.0.0:{p}"), &format!("127.0.0.1:{here}"));
            s = s.replace(&format!("127.0.0.1:{p}"), &format!("127.0.0.1:{here}"));
        }
        s
    }
}
