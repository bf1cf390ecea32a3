//! One conformance suite for checkpoint storage, run against every backend:
//! memory and the local file system (and, through the same entry point, any
//! other object store URI).

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use weir_state::{CheckpointMetadata, CheckpointStorage, StorageError, TaskSnapshot, METADATA_VERSION};

const JOB: &str = "3f9a";

async fn checkpoint(s: &CheckpointStorage, id: u64, files: &[(&str, &'static [u8])]) -> CheckpointMetadata {
    let mut handles = Vec::new();
    for (name, bytes) in files {
        handles.push(s.write_file(JOB, id, name, Bytes::from_static(bytes)).await.unwrap());
    }
    let meta = CheckpointMetadata {
        version: METADATA_VERSION,
        job_id: JOB.into(),
        checkpoint_id: id,
        timestamp_ms: 1_700_000_000_000 + id as i64,
        tasks: vec![TaskSnapshot {
            operators: vec!["gen".into(), "ts".into()],
            subtask: 0,
            files: handles,
            inline: serde_json::json!({"position": id * 100}),
        }],
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
    assert_eq!(s.load(JOB, 1).await.unwrap(), one);
    let f = &one.tasks[0].files[0];
    assert_eq!(s.read_file(JOB, 1, f).await.unwrap(), Bytes::from_static(b"window state"));

    // Files without metadata are not a checkpoint.
    s.write_file(JOB, 2, "win-0", Bytes::from_static(b"in progress")).await.unwrap();
    assert_eq!(s.checkpoints(JOB).await.unwrap(), vec![1]);
    assert_eq!(s.latest_valid(JOB).await.unwrap().unwrap().checkpoint_id, 1);

    // A newer complete checkpoint wins.
    let three = checkpoint(&s, 3, &[("win-0", b"newer state")]).await;
    assert_eq!(s.checkpoints(JOB).await.unwrap(), vec![1, 3]);
    assert_eq!(s.latest_valid(JOB).await.unwrap().unwrap(), three);

    // A damaged file (same size) is caught by its checksum; an older checkpoint is used.
    overwrite(&s, &three.tasks[0].files[0].path, b"NEWER STATE".to_vec()).await;
    assert!(corrupt_reason(s.load(JOB, 3).await.unwrap_err()).contains("fails its checksum"));
    assert_eq!(s.latest_valid(JOB).await.unwrap().unwrap().checkpoint_id, 1);

    // A missing file.
    let four = checkpoint(&s, 4, &[("win-0", b"four")]).await;
    s.object_store().delete(&Path::from(four.tasks[0].files[0].path.as_str())).await.unwrap();
    assert!(corrupt_reason(s.load(JOB, 4).await.unwrap_err()).contains("is missing"));

    // A truncated file.
    let five = checkpoint(&s, 5, &[("win-0", b"five bytes")]).await;
    overwrite(&s, &five.tasks[0].files[0].path, b"five".to_vec()).await;
    assert!(corrupt_reason(s.load(JOB, 5).await.unwrap_err()).contains("has 4 bytes"));

    // Truncated and tampered metadata.
    checkpoint(&s, 6, &[("win-0", b"six")]).await;
    let meta_path = format!("{JOB}/chk-6/_metadata");
    let raw = s.object_store().get(&Path::from(meta_path.as_str())).await.unwrap().bytes().await.unwrap();
    overwrite(&s, &meta_path, raw[..raw.len() / 2].to_vec()).await;
    assert!(corrupt_reason(s.load(JOB, 6).await.unwrap_err()).contains("truncated"));
    let tampered = String::from_utf8(raw.to_vec()).unwrap().replace("\"subtask\": 0", "\"subtask\": 1");
    overwrite(&s, &meta_path, tampered.into_bytes()).await;
    assert!(corrupt_reason(s.load(JOB, 6).await.unwrap_err()).contains("metadata fails its checksum"));

    // Every newer checkpoint is unusable: the newest valid one is still 1.
    assert_eq!(s.latest_valid(JOB).await.unwrap().unwrap().checkpoint_id, 1);

    // Discarding removes metadata and files; it is idempotent.
    s.discard(JOB, 1).await.unwrap();
    s.discard(JOB, 1).await.unwrap();
    assert!(corrupt_reason(s.load(JOB, 1).await.unwrap_err()).contains("no metadata"));
    assert_eq!(s.checkpoints(JOB).await.unwrap(), vec![3, 4, 5, 6]);
    assert_eq!(s.latest_valid(JOB).await.unwrap(), None);
    for id in [2, 3, 4, 5, 6] {
        s.discard(JOB, id).await.unwrap();
    }
    assert_eq!(s.checkpoints(JOB).await.unwrap(), Vec::<u64>::new());
    assert_eq!(s.checkpoints("another-job").await.unwrap(), Vec::<u64>::new());
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
