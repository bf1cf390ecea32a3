//! One conformance suite for checkpoint storage, run against every backend:
//! memory, the local file system and a real S3-compatible server (`s3s-fs`,
//! installed by `scripts/test.sh`, started here on 127.0.0.1).

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use weir_state::{CheckpointMetadata, CheckpointStorage, StorageError, TaskSnapshot, METADATA_VERSION};
use weir_types::{CheckpointId, JobId};

fn job() -> JobId {
    JobId::new("3f9a")
}

async fn checkpoint(s: &CheckpointStorage, n: u64, files: &[(&str, &'static [u8])]) -> CheckpointMetadata {
    let mut handles = Vec::new();
    for (name, bytes) in files {
        handles.push(s.write_file(&job(), CheckpointId(n), name, Bytes::from_static(bytes)).await.unwrap());
    }
    let meta = CheckpointMetadata {
        version: METADATA_VERSION,
        job_id: job(),
        checkpoint_id: CheckpointId(n),
        timestamp_ms: 1_700_000_000_000 + n as i64,
        tasks: vec![TaskSnapshot {
            operators: vec!["gen".into(), "ts".into()],
            subtask: 0,
            files: handles,
            backend: "heap".into(),
            local_names: Vec::new(),
            file_operators: Vec::new(),
            parallelism: 0,
        }],
        finished: Vec::new(),
        max_parallelism: 128,
    };
    s.complete(&meta).await.unwrap();
    meta
}

fn corrupt_reason(e: StorageError) -> String {
    match e {
        StorageError::Corrupt { reason, .. } => reason,
        other => panic!("expected a corrupt checkpoint, got {other}"),
    }
}

async fn overwrite(s: &CheckpointStorage, path: &str, bytes: Vec<u8>) {
    s.object_store().put(&Path::from(path), PutPayload::from(bytes)).await.unwrap();
}

async fn suite(s: CheckpointStorage) {
    // Round trip.
    let one = checkpoint(&s, 1, &[("win-0", b"window state"), ("gen-0", b"")]).await;
    assert_eq!(s.load(&job(), CheckpointId(1)).await.unwrap(), one);
    let f = &one.tasks[0].files[0];
    assert_eq!(s.read_file(&job(), CheckpointId(1), f).await.unwrap(), Bytes::from_static(b"window state"));

    // Files without metadata are not a checkpoint.
    s.write_file(&job(), CheckpointId(2), "win-0", Bytes::from_static(b"in progress")).await.unwrap();
    assert_eq!(s.checkpoints(&job()).await.unwrap(), vec![CheckpointId(1)]);
    assert_eq!(s.latest_valid(&job()).await.unwrap().unwrap().checkpoint_id, CheckpointId(1));

    // A newer complete checkpoint wins.
    let three = checkpoint(&s, 3, &[("win-0", b"newer state")]).await;
    assert_eq!(s.checkpoints(&job()).await.unwrap(), vec![CheckpointId(1), CheckpointId(3)]);
    assert_eq!(s.latest_valid(&job()).await.unwrap().unwrap(), three);

    // A damaged file (same size) is caught by its checksum; an older checkpoint is used.
    overwrite(&s, &three.tasks[0].files[0].path, b"NEWER STATE".to_vec()).await;
    assert!(corrupt_reason(s.load(&job(), CheckpointId(3)).await.unwrap_err()).contains("fails its checksum"));
    assert_eq!(s.latest_valid(&job()).await.unwrap().unwrap().checkpoint_id, CheckpointId(1));

    // A missing file.
    let four = checkpoint(&s, 4, &[("win-0", b"four")]).await;
    s.object_store().delete(&Path::from(four.tasks[0].files[0].path.as_str())).await.unwrap();
    assert!(corrupt_reason(s.load(&job(), CheckpointId(4)).await.unwrap_err()).contains("is missing"));

    // A truncated file.
    let five = checkpoint(&s, 5, &[("win-0", b"five bytes")]).await;
    overwrite(&s, &five.tasks[0].files[0].path, b"five".to_vec()).await;
    assert!(corrupt_reason(s.load(&job(), CheckpointId(5)).await.unwrap_err()).contains("has 4 bytes"));

    // Truncated and tampered metadata.
    let six = checkpoint(&s, 6, &[("win-0", b"six")]).await;
    // Next to the checkpoint's files (under the storage's prefix, if any).
    let meta_path = format!("{}/_metadata", six.tasks[0].files[0].path.rsplit_once('/').unwrap().0);
    let raw = s.object_store().get(&Path::from(meta_path.as_str())).await.unwrap().bytes().await.unwrap();
    overwrite(&s, &meta_path, raw[..raw.len() / 2].to_vec()).await;
    assert!(corrupt_reason(s.load(&job(), CheckpointId(6)).await.unwrap_err()).contains("truncated"));
    let tampered = String::from_utf8(raw.to_vec()).unwrap().replace("\"subtask\": 0", "\"subtask\": 1");
    overwrite(&s, &meta_path, tampered.into_bytes()).await;
    assert!(corrupt_reason(s.load(&job(), CheckpointId(6)).await.unwrap_err()).contains("metadata fails its checksum"));

    // Every newer checkpoint is unusable: the newest valid one is still 1.
    assert_eq!(s.latest_valid(&job()).await.unwrap().unwrap().checkpoint_id, CheckpointId(1));

    // Discarding removes metadata and files; it is idempotent.
    s.discard(&job(), CheckpointId(1)).await.unwrap();
    s.discard(&job(), CheckpointId(1)).await.unwrap();
    assert!(corrupt_reason(s.load(&job(), CheckpointId(1)).await.unwrap_err()).contains("no metadata"));
    assert_eq!(
        s.checkpoints(&job()).await.unwrap(),
        vec![CheckpointId(3), CheckpointId(4), CheckpointId(5), CheckpointId(6)]
    );
    assert_eq!(s.latest_valid(&job()).await.unwrap(), None);
    for id in [2, 3, 4, 5, 6] {
        s.discard(&job(), CheckpointId(id)).await.unwrap();
    }
    assert_eq!(s.checkpoints(&job()).await.unwrap(), Vec::<CheckpointId>::new());
    assert_eq!(s.checkpoints(&JobId::new("another-job")).await.unwrap(), Vec::<CheckpointId>::new());

    // Shared files outlive the checkpoint that wrote them until deleted by reference counting.
    let shared = s.write_shared_file(&job(), "v1-0-000009.sst", Bytes::from_static(b"sst bytes")).await.unwrap();
    assert!(CheckpointStorage::is_shared(&shared), "{}", shared.path);
    s.discard(&job(), CheckpointId(7)).await.unwrap();
    assert_eq!(s.read_file(&job(), CheckpointId(7), &shared).await.unwrap(), Bytes::from_static(b"sst bytes"));
    s.delete_shared(std::slice::from_ref(&shared)).await.unwrap();
    assert!(corrupt_reason(s.read_file(&job(), CheckpointId(7), &shared).await.unwrap_err()).contains("is missing"));
    // A large file goes through intact.
    let big: Vec<u8> = (0..6_000_000u32).map(|i| (i % 251) as u8).collect();
    let h = s.write_file(&job(), CheckpointId(8), "big", Bytes::from(big.clone())).await.unwrap();
    assert_eq!(s.read_file(&job(), CheckpointId(8), &h).await.unwrap().as_ref(), &big[..]);
    s.discard(&job(), CheckpointId(8)).await.unwrap();
}

#[tokio::test]
async fn memory() {
    suite(CheckpointStorage::from_uri("memory://").unwrap()).await;
}

#[tokio::test]
async fn local_files() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("file://{}", dir.path().join("checkpoints").display());
    suite(CheckpointStorage::from_uri(&uri).unwrap()).await;
    // What was discarded is gone from the disk too.
    let left: Vec<_> = walk(&dir.path().join("checkpoints"));
    assert!(left.is_empty(), "{left:?}");
}

/// A real S3-compatible server on 127.0.0.1 for the duration of a test.
struct S3Server {
    child: std::process::Child,
    port: u16,
    _root: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3s_fs() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("WEIR_S3S_FS") {
        return p.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    for c in [format!("{home}/.cache/weir/tools/bin/s3s-fs"), format!("{home}/.cargo/bin/s3s-fs")] {
        if std::path::Path::new(&c).exists() {
            return c.into();
        }
    }
    panic!("s3s-fs is not installed: run scripts/test.sh (it installs it) or set WEIR_S3S_FS");
}

fn start_s3() -> S3Server {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("weir-bucket")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = std::process::Command::new(s3s_fs())
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            "weirkey",
            "--secret-key",
            "weirsecret",
        ])
        .arg(root.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting s3s-fs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "s3s-fs did not listen on port {port}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    S3Server { child, port, _root: root }
}

fn s3_options(port: u16, secret: &str) -> weir_state::S3Options {
    weir_state::S3Options {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: Some("us-east-1".into()),
        access_key_id: Some("weirkey".into()),
        secret_access_key: Some(secret.into()),
        path_style: Some(true),
    }
}

#[tokio::test]
async fn s3_compatible_server() {
    let server = start_s3();
    let s = CheckpointStorage::from_uri_with("s3://weir-bucket/checkpoints", &s3_options(server.port, "weirsecret"))
        .unwrap();
    suite(s).await;
    // Wrong credentials are an error of the store, not a corrupt checkpoint, and name no secret.
    let bad = CheckpointStorage::from_uri_with("s3://weir-bucket/x", &s3_options(server.port, "wrong")).unwrap();
    let e = bad.checkpoints(&job()).await.unwrap_err();
    assert!(matches!(e, StorageError::Store(_)), "{e}");
    assert!(!e.to_string().contains("wrong"), "{e}");
    assert!(!format!("{:?}", s3_options(1, "hidden")).contains("hidden"));
    // Savepoints are self-contained there too.
    let opts = s3_options(server.port, "weirsecret");
    savepoint_moves("s3://weir-bucket/savepoints/sp-1", "s3://weir-bucket/elsewhere/sp-1", &opts).await;
}

/// A savepoint written at `a`, copied object by object to `b` (another
/// prefix), loads there on its own; disposing of it removes it.
async fn savepoint_moves(a: &str, b: &str, s3: &weir_state::S3Options) {
    use weir_state::backend::{encode_entries, StateEntry};
    use weir_state::savepoint::*;
    let at = CheckpointStorage::from_uri_with(a, s3).unwrap();
    let entry = StateEntry {
        operator: "w".into(),
        state: "s".into(),
        key_group: 1,
        key: vec![1],
        value: Some(vec![2]),
        delete_to: None,
    };
    let file = at.write_relative(&state_file_name("w", 0), encode_entries(&[entry])).await.unwrap();
    let meta = SavepointMetadata {
        format: SAVEPOINT_FORMAT.into(),
        version: SAVEPOINT_VERSION,
        job_id: job(),
        job_name: "job".into(),
        checkpoint_id: CheckpointId(3),
        timestamp_ms: 0,
        max_parallelism: 128,
        backend: "heap".into(),
        stopped: false,
        operators: vec![SavepointOperator {
            uid: "w".into(),
            kind: "window".into(),
            parallelism: 1,
            states: Vec::new(),
            subtasks: vec![SavepointSubtask { subtask: 0, key_groups: [0, 128], file: Some(file) }],
        }],
    };
    Savepoint::write_metadata(&at, &meta).await.unwrap();
    let to = CheckpointStorage::from_uri_with(b, s3).unwrap();
    for name in at.list_objects("").await.unwrap() {
        to.put_object(&name, at.get_object(&name).await.unwrap().unwrap()).await.unwrap();
    }
    let moved = Savepoint::load(b, s3).await.unwrap();
    assert_eq!(moved.entries_by_operator().await.unwrap()["w"].len(), 1);
    assert_eq!(Savepoint::dispose(b, s3).await.unwrap(), 2);
    assert!(to.list_objects("").await.unwrap().is_empty());
    let gone = Savepoint::load(b, s3).await.unwrap_err().to_string();
    assert!(gone.contains("no _metadata") || gone.contains("no such directory"), "{gone}");
}

#[tokio::test]
async fn savepoints_relocate_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (format!("file://{}/a/sp", dir.path().display()), format!("file://{}/b/sp", dir.path().display()));
    savepoint_moves(&a, &b, &weir_state::S3Options::default()).await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn bad_uris_are_configuration_errors() {
    for uri in ["file://relative/dir", "ftp://x", "s4://bucket"] {
        let e = CheckpointStorage::from_uri(uri).unwrap_err();
        assert!(matches!(e, StorageError::Uri(_)), "{uri}: {e}");
        assert!(!e.is_transient());
    }
}
