//! Who gets in: a cluster started with TLS settings on every process
//! refuses, on every port it opens, whoever lacks a certificate of its CA;
//! certificate subjects map to roles, so a task manager's certificate
//! cannot submit jobs; rotated certificates take effect without a restart;
//! and bearer tokens guard the job manager's gRPC API as they guard REST.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use weir_tests::pki::{Ca, Files};
use weir_tests::{bin, job_file, wait_until, Cluster};

const LONG: Duration = Duration::from_secs(120);

/// An unbounded, rate-limited job over two task managers (hash exchange).
fn endless_job() -> String {
    job_file("w2-tumble.yaml", &[("events: 20000000", "rate: 20000"), ("name: w2-tumble", "name: endless")])
}

/// Opens a raw TLS connection to `addr` trusting `ca`, presenting `client`
/// (or no certificate), and sends the HTTP/2 preface. `Ok` when the server
/// answers; `Err` with the reason when it refuses.
fn probe(addr: &str, ca: &Path, client: Option<&Files>) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(f) => {
            let chain = CertificateDer::pem_file_iter(&f.cert).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(&f.key).unwrap()).unwrap()
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let conn = rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("127.0.0.1").unwrap())
        .map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 9];
    match tls.read(&mut buf) {
        Ok(n) if n > 0 => Ok(()),
        Ok(_) => Err("closed".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs `weir ARGS` against `url` with `env` only (no certificate unless
/// given); returns success and stderr.
fn weir_as(url: &str, env: &[(String, String)], args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("weir"))
        .args(args)
        .args(["--jobmanager", url])
        .env_remove("WEIR_TLS_CA")
        .env_remove("WEIR_TLS_CERT")
        .env_remove("WEIR_TLS_KEY")
        .envs(env.iter().cloned())
        .output()
        .expect("running weir");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `GET url` over HTTPS trusting `ca`: the status and body.
fn https_get(url: &str, ca: &Path) -> anyhow::Result<(u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(ca)?)?;
        let client = reqwest::Client::builder().add_root_certificate(ca).no_proxy().build()?;
        let res = client.get(url).timeout(Duration::from_secs(10)).send().await?;
        Ok((res.status().as_u16(), res.text().await?))
    })
}

fn tls_env(files: &Files, extra: &[(&str, &Path)]) -> Vec<(String, String)> {
    let mut env = files.env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.display().to_string())));
    env
}

#[test]
fn a_cluster_with_tls_refuses_every_stranger_and_gives_each_certificate_only_its_role() -> anyhow::Result<()> {
    let pki = tempfile::tempdir()?;
    let ca = Ca::new(pki.path(), "weir-ca")?;
    let other = Ca::new(pki.path(), "other-ca")?;
    let cluster_cert = ca.issue("weir-cluster")?;
    let alice = ca.issue("alice")?;
    let dashboards = ca.issue("dashboards")?;
    let expired = ca.issue_expired("alice")?;
    // Mallory's certificate is of another CA; she trusts both CAs, so only
    // the cluster's refusal stands between her and the job manager.
    let bundle = pki.path().join("both-cas.crt");
    std::fs::write(&bundle, [std::fs::read(&ca.cert)?, std::fs::read(&other.cert)?].concat())?;
    let mallory = Files { ca: bundle.clone(), ..other.issue("mallory")? };
    let config = pki.path().join("weir.yaml");
    std::fs::write(
        &config,
        "security:\n  roles:\n    CN=weir-cluster: [jobmanager, taskmanager]\n    CN=alice: admin\n    CN=dashboards: read\n    CN=mallory: admin\n",
    )?;
    let env = tls_env(&cluster_cert, &[("WEIR_CONFIG", &config)]);
    let cluster = Cluster::start_secure(2, 2, "5s", &[], env.clone(), tls_env(&alice, &[]))?;
    let url = cluster.url.clone();
    assert!(url.starts_with("https://"), "{url}");
    let jm_addr = url.trim_start_matches("https://").to_string();

    // Alice (admin) runs a job across both task managers: deployment, the
    // data exchange and every report travel over mutual TLS.
    let job = cluster.write("endless.yaml", &endless_job());
    let id = cluster.submit(&job, &["--parallelism", "4"])?;
    wait_until("every task to run", LONG, || {
        let s = cluster.weir_json(&["status", &id])?;
        let tasks = s["tasks"].as_array().cloned().unwrap_or_default();
        Ok((tasks.len() == 8 && tasks.iter().all(|t| t["state"] == "RUNNING")).then_some(()))
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs()))?;

    // Every port refuses a handshake without a certificate, with one of
    // another CA, and with an expired one.
    let tms = cluster.weir_json(&["taskmanagers"])?;
    let mut ports = vec![jm_addr.clone()];
    for t in tms["task_managers"].as_array().unwrap() {
        let address = t["address"].as_str().unwrap();
        assert!(address.starts_with("https://"), "task managers advertise TLS addresses: {address}");
        ports.push(address.trim_start_matches("https://").to_string());
    }
    assert_eq!(ports.len(), 3);
    for port in &ports {
        probe(port, &ca.cert, Some(&alice)).map_err(|e| anyhow::anyhow!("{port} refused a good certificate: {e}"))?;
        // What the client sees of a refusal depends on timing (the server's
        // alert, or a reset); the server's log says exactly why.
        assert!(probe(port, &ca.cert, None).is_err(), "{port}: no certificate must be refused");
        assert!(probe(port, &bundle, Some(&mallory)).is_err(), "{port}: another CA's certificate must be refused");
        assert!(probe(port, &ca.cert, Some(&expired)).is_err(), "{port}: an expired certificate must be refused");
    }
    let processes = std::iter::once(("jobmanager", &cluster.jobmanager))
        .chain(cluster.taskmanagers.iter().map(|(id, p)| (id.as_str(), p)));
    for (name, process) in processes {
        for reason in ["peer sent no certificates", "UnknownIssuer", "certificate expired"] {
            wait_until(&format!("{name} to log a refusal: {reason}"), LONG, || {
                Ok(process.log().contains(reason).then_some(()))
            })
            .map_err(|e| anyhow::anyhow!("{e}\n{}", process.log()))?;
        }
    }

    // REST is HTTPS with the same certificate; plain HTTP gets no answer.
    let (status, body) = https_get(&format!("https://{}/v1/jobs", cluster.rest), &ca.cert)?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&id), "{body}");
    assert!(weir_tests::http_get(&cluster.rest, "/healthz").map(|(s, _)| s != 200).unwrap_or(true));

    // The CLI says why it is refused.
    let (ok, err) = weir_as(&url, &[], &["list"]);
    assert!(!ok && err.contains("no TLS settings are given"), "{err}");
    let (ok, err) = weir_as(&url.replace("https", "http"), &[], &["list"]);
    assert!(!ok && err.contains("addressed as https://"), "a plaintext client gets nowhere: {err}");
    for (who, files) in [("another CA's", &mallory), ("an expired", &expired)] {
        let (ok, err) = weir_as(&url, &files.env(), &["list"]);
        assert!(
            !ok && (err.contains("refused this process's certificate") || err.contains("refuses a client certificate")),
            "{who} certificate: {err}"
        );
    }
    let refusals = cluster.jobmanager.log();
    assert!(refusals.contains("UnknownCA") || refusals.contains("UnknownIssuer"), "{refusals}");
    assert!(refusals.contains("certificate expired"), "the job manager logs why: {refusals}");

    // Roles: the task managers' certificate may not submit or even list
    // jobs; a reader may list but not cancel.
    let (ok, err) = weir_as(&url, &cluster_cert.env(), &["run", job.to_str().unwrap()]);
    assert!(!ok && err.contains("`CN=weir-cluster` may not submit jobs") && err.contains("role `admin`"), "{err}");
    let (ok, err) = weir_as(&url, &cluster_cert.env(), &["list"]);
    assert!(!ok && err.contains("role `read`"), "{err}");
    let (ok, err) = weir_as(&url, &dashboards.env(), &["list"]);
    assert!(ok, "{err}");
    let (ok, err) = weir_as(&url, &dashboards.env(), &["cancel", &id]);
    assert!(!ok && err.contains("`CN=dashboards` may not cancel jobs"), "{err}");

    // A task manager without TLS cannot join.
    let mut fake = weir_tests::spawn(
        "tm-fake",
        Command::new(bin("weir-taskmanager"))
            .args(["--jobmanager", &url.replace("https", "http"), "--id", "tm-fake"])
            .arg("--state-dir")
            .arg(cluster.dir.path().join("state"))
            .env_remove("WEIR_CONFIG"),
        cluster.dir.path(),
    )?;
    wait_until("the plaintext task manager to fail registering", LONG, || {
        Ok(fake.log().contains("registering with the job manager failed").then_some(()))
    })?;
    let tms = cluster.weir_json(&["taskmanagers"])?;
    assert_eq!(tms["task_managers"].as_array().unwrap().len(), 2, "{tms}");
    fake.kill9();

    // Rotation: the CA bundle now trusts the other CA too. New connections
    // take it without a restart, and the job runs on untouched.
    std::fs::write(&ca.cert, std::fs::read(&bundle)?)?;
    wait_until("the job manager to accept the other CA", LONG, || {
        Ok(weir_as(&url, &mallory.env(), &["list"]).0.then_some(()))
    })?;
    let s = cluster.weir_json(&["status", &id])?;
    assert_eq!(s["state"], "RUNNING", "{s:#}");
    assert_eq!(s["restarts"], 0, "{s:#}");
    let r = cluster.weir_json(&["cancel", &id])?;
    assert!(r["state"] == "CANCELLING" || r["state"] == "CANCELED", "{r}");
    cluster.wait_state(&id, &["CANCELED"], LONG)?;
    assert!(!cluster.logs().contains("BEGIN PRIVATE KEY"), "keys are never logged");
    Ok(())
}

#[test]
fn the_cli_presents_tokens_and_the_job_manager_checks_their_role() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "reader-0123456789abcdef read\nadmin-0123456789abcdef admin\n")?;
    let admin_file = dir.path().join("admin-token");
    std::fs::write(&admin_file, "admin-0123456789abcdef\n")?;
    let admin = vec![("WEIR_TOKEN_FILE".to_string(), admin_file.display().to_string())];
    let cluster =
        Cluster::start_secure(1, 2, "5s", &["--rest-token-file", tokens.to_str().unwrap()], Vec::new(), admin.clone())?;
    let url = cluster.url.clone();
    let job = cluster.write("endless.yaml", &endless_job());

    let (ok, err) = weir_as(&url, &[], &["list"]);
    assert!(!ok && err.contains("a caller without a token may not list jobs"), "{err}");
    let reader = [("WEIR_TOKEN".to_string(), "reader-0123456789abcdef".to_string())];
    assert!(weir_as(&url, &reader, &["list"]).0);
    let (ok, err) = weir_as(&url, &reader, &["run", job.to_str().unwrap()]);
    assert!(!ok && err.contains("may not submit jobs: that needs role `admin`"), "{err}");
    let wrong = [("WEIR_TOKEN".to_string(), "admin-0123456789abcdeX".to_string())];
    let (ok, err) = weir_as(&url, &wrong, &["list"]);
    assert!(!ok && err.contains("an unknown token"), "{err}");
    assert_eq!(cluster.weir_json(&["list"])?.as_array().map(|a| a.len()), Some(0), "nothing was scheduled");

    let id = cluster.submit(&job, &[])?;
    cluster.wait_state(&id, &["RUNNING"], LONG)?;
    cluster.weir_json(&["cancel", &id])?;
    cluster.wait_state(&id, &["CANCELED"], LONG)?;
    let logs = cluster.logs();
    assert!(!logs.contains("admin-0123456789abcdef") && !logs.contains("reader-0123456789abcdef"), "{logs}");
    Ok(())
}

#[test]
fn jobs_may_only_name_local_paths_under_the_allowed_roots() -> anyhow::Result<()> {
    let cluster = Cluster::start(1, 2, "5s")?;
    let outside = tempfile::tempdir_in("/var/tmp").or_else(|_| tempfile::tempdir_in(std::env::current_dir()?))?;
    std::os::unix::fs::symlink(outside.path(), cluster.dir.path().join("escape"))?;
    let scratch = cluster.dir.path().display().to_string();
    let job_to = |path: &str| job_file("enrich.yaml", &[("/tmp/weir-enrich-events", path)]);
    let refused = |path: &str| -> anyhow::Result<String> {
        let job = cluster.write("job.yaml", &job_to(path));
        let out = cluster.weir(&["run", job.to_str().unwrap()])?;
        assert!(!out.status.success(), "{path} was accepted");
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let err = refused("/etc/weir-sandbox")?;
    assert!(err.contains("field `config.path`: `/etc/weir-sandbox` is outside the paths jobs may use"), "{err}");
    assert!(err.contains("security.allowed_paths"), "{err}");
    let err = refused(&format!("{scratch}/../../etc"))?;
    assert!(err.contains("`..` is not allowed"), "{err}");
    let err = refused(&format!("{scratch}/escape/out"))?;
    assert!(err.contains("it leads to"), "a symlink out of the temp directory: {err}");
    assert_eq!(cluster.weir_json(&["list"])?.as_array().map(|a| a.len()), Some(0), "nothing was scheduled");

    // Inside the temp directory the same job runs; a savepoint target
    // outside is refused like a path in a job.
    let id = cluster.submit(&cluster.write("ok.yaml", &job_to(&format!("{scratch}/out"))), &[])?;
    let out = cluster.weir(&["savepoint", &id, "--target", "file:///etc/weir-savepoints"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("savepoint target: `file:///etc/weir-savepoints`"), "{err}");
    cluster.wait_state(&id, &["FINISHED"], LONG)?;

    // `weir local` allows the working directory and the temp directory.
    let local = Command::new(bin("weir"))
        .arg("local")
        .arg(cluster.write("local.yaml", &job_to(&outside.path().join("out").display().to_string())))
        .current_dir(cluster.dir.path())
        .output()?;
    let err = String::from_utf8_lossy(&local.stderr);
    assert!(!local.status.success() && err.contains("is outside the paths jobs may use"), "{err}");
    Ok(())
}

#[test]
fn a_submission_asking_for_more_than_the_limits_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("weir.yaml");
    std::fs::write(&config, "security:\n  max_parallelism: 2\n  max_operators: 4\n")?;
    let cluster = Cluster::start_with_env(1, 2, "5s", &[], &[("WEIR_CONFIG", config.to_str().unwrap())])?;
    let w2 = cluster.write("w2.yaml", &job_file("w2-tumble.yaml", &[("events: 20000000", "events: 1000")]));
    let out = cluster.weir(&["run", w2.to_str().unwrap(), "--parallelism", "3"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("asks for parallelism 3; this cluster allows at most 2"), "{err}");
    let enrich = cluster.write("enrich.yaml", &job_file("enrich.yaml", &[]));
    let out = cluster.weir(&["run", enrich.to_str().unwrap()])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("this cluster takes at most 4 (security.max_operators)"), "{err}");
    assert_eq!(cluster.weir_json(&["list"])?.as_array().map(|a| a.len()), Some(0), "nothing was scheduled");
    let id = cluster.submit(&w2, &["--parallelism", "2"])?;
    assert_eq!(cluster.wait_state(&id, &["FINISHED", "FAILED"], LONG)?["state"], "FINISHED");
    Ok(())
}

/// Secrets in every place a job takes them — the S3 key pair of checkpoint
/// storage, a database password inline in a job, a wrong one that fails a
/// job, the REST/CLI token — appear in no output: every process's log at
/// `debug`, `weir status` and `weir checkpoints` of both jobs, `weir list`,
/// the REST job details and exceptions, and the CLI's error messages.
#[test]
fn secrets_appear_in_no_output() -> anyhow::Result<()> {
    use weir_tests::databases::{shared, Flavor, MARIADB_PASSWORD, MARIADB_USER};
    const WRONG: &str = "wr0ng-Pa55-91xq";
    const TOKEN: &str = "admin-7d1f0c9e4b2a6c83";
    let s3 = weir_tests::s3::shared_s3();
    let db = shared(Flavor::MariaDb);
    let name = weir_tests::unique("leaks", '_');
    db.create_database(&name)?;
    db.execute(&name, "CREATE TABLE people (id BIGINT PRIMARY KEY, name VARCHAR(32))")?;
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN} admin\n"))?;
    let mut env: Vec<(String, String)> = s3.env().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    env.push(("AWS_ENDPOINT_URL".into(), s3.endpoint()));
    env.push(("WEIR_LOG".into(), "debug".into()));
    let cli = vec![("WEIR_TOKEN".to_string(), TOKEN.to_string())];
    let cluster = Cluster::start_secure(1, 2, "5s", &["--rest-token-file", tokens.to_str().unwrap()], env, cli)?;
    let job = |password: &str| {
        format!(
            "name: people
operators:
  - uid: people
    kind: values
    config:
      schema: [{{name: id, type: int64}}, {{name: name, type: string}}]
      rows: [{{id: 1, name: ada}}, {{id: 2, name: bob}}]
  - uid: db
    kind: jdbc_sink
    config:
      url: {url}
      username: {MARIADB_USER}
      password: {password}
      table: people
      key: [id]
edges:
  - {{from: people, to: db}}
checkpoints:
  interval: 200ms
  storage: s3://weir-lake/{prefix}
  restart: {{strategy: none}}
",
            url = db.url(&name),
            prefix = weir_tests::unique("leaks", '-'),
        )
    };
    let good = cluster.submit(&cluster.write("good.yaml", &job(MARIADB_PASSWORD)), &[])?;
    let bad = cluster.submit(&cluster.write("bad.yaml", &job(WRONG)), &[])?;
    assert_eq!(cluster.wait_state(&good, &["FINISHED", "FAILED"], LONG)?["state"], "FINISHED", "{}", cluster.logs());
    let failed = cluster.wait_state(&bad, &["FINISHED", "FAILED"], LONG)?;
    assert_eq!(failed["state"], "FAILED", "{failed:#}");
    assert!(failed.to_string().contains("Access denied"), "the failure says why: {failed:#}");
    assert_eq!(db.execute(&name, "SELECT COUNT(*) FROM people")?, "2\n");

    let mut outputs = vec![cluster.logs(), cluster.weir_json(&["list"])?.to_string()];
    for id in [&good, &bad] {
        outputs.push(cluster.weir_json(&["status", id])?.to_string());
        outputs.push(cluster.weir_json(&["checkpoints", id])?.to_string());
        for path in
            [format!("/v1/jobs/{id}"), format!("/v1/jobs/{id}/exceptions"), format!("/v1/jobs/{id}/checkpoints")]
        {
            let url = format!("http://{}{path}", cluster.rest);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            outputs.push(rt.block_on(async {
                let r = reqwest::Client::new().get(&url).bearer_auth(TOKEN).send().await?;
                anyhow::Ok(r.text().await?)
            })?);
        }
    }
    let refused = Command::new(bin("weir"))
        .args(["list", "--jobmanager", &cluster.url])
        .env("WEIR_TOKEN", "admin-7d1f0c9e4b2a6c8X")
        .output()?;
    outputs.push(String::from_utf8_lossy(&refused.stderr).into_owned());
    let all = outputs.join("\n");
    assert!(all.contains("DEBUG"), "the logs are at debug level");
    for secret in [MARIADB_PASSWORD, WRONG, weir_tests::s3::SECRET_KEY, TOKEN, "admin-7d1f0c9e4b2a6c8X"] {
        assert!(!all.contains(secret), "`{secret}` leaked into the output");
    }
    Ok(())
}
