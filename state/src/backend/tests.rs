//! Tests of the backends: file layouts, incremental RocksDB checkpoints,
//! savepoints and restores.

use bytes::Bytes;

use super::rocks::{decode_rocks_key, rocks_key};
use super::*;
use crate::codec::decode_changes;
use crate::TaskSnapshot;

fn cp(n: u64) -> CheckpointId {
    CheckpointId(n)
}

fn entry(op: &str, kg: u32, key: &[u8], value: Option<&[u8]>) -> StateEntry {
    StateEntry {
        operator: op.into(),
        state: "s".into(),
        key_group: kg,
        key: key.to_vec(),
        value: value.map(<[u8]>::to_vec),
        delete_to: None,
    }
}

#[test]
fn heap_files_round_trip_and_reject_damage() {
    let entries = vec![entry("a", 3, b"k", Some(b"v")), entry("b", NON_KEYED, b"", Some(b"xyz"))];
    let bytes = encode_entries(&entries);
    assert_eq!(decode_entries(bytes.clone()).unwrap(), entries);
    let cut = bytes.slice(..bytes.len() - 2);
    assert!(decode_entries(cut).unwrap_err().contains("truncated"));
    assert!(decode_entries(Bytes::from_static(b"nonsense-and-more")).unwrap_err().contains("magic"));
}

#[test]
fn rocks_keys_round_trip() {
    let e = entry("window", 77, b"\x00\x01key", None);
    assert_eq!(decode_rocks_key(&rocks_key(&e)).unwrap(), e);
}

fn me(subtask: u32) -> TaskIdentity {
    TaskIdentity { job: JobId::new("job"), vertex: 1, subtask, operators: vec!["a".into()] }
}

/// Checkpoint `id`, then its changes applied and a new base uploaded
/// (as the task manager does).
async fn checkpoint(b: &mut TaskBackend, id: u64, entries: Vec<StateEntry>) -> Uploaded {
    let up = unbased(b, id, &entries).await;
    if let Some(base) = b.apply(cp(id), &entries).unwrap() {
        let done = base.run().await.unwrap();
        assert!(b.uploaded(&done).is_empty());
    }
    up
}

/// Checkpoint `id` with its changes applied but no new base uploaded.
async fn unbased(b: &mut TaskBackend, id: u64, entries: &[StateEntry]) -> Uploaded {
    let up = b.snapshot(cp(id), entries).unwrap().run().await.unwrap();
    assert!(b.uploaded(&up).is_empty());
    up
}

fn names(up: &Uploaded) -> Vec<&str> {
    up.snapshot.local_names.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn rocksdb_uploads_only_new_files_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_uri("memory://").unwrap();
    let mut b = TaskBackend::open(BackendKind::Rocksdb, storage.clone(), me(0), dir.path()).unwrap();
    // Values that do not compress, so that file sizes compare.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = || -> Vec<u8> {
        (0..100)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let first: Vec<StateEntry> = (0..1000u32).map(|i| entry("a", i % 128, &i.to_be_bytes(), Some(&noise()))).collect();
    // The first checkpoint is a change file on an empty base.
    let c1 = checkpoint(&mut b, 1, first).await;
    assert_eq!(names(&c1), ["1.changes"]);
    // The next names the base uploaded since (its bytes count here) and its own changes.
    let c2 = checkpoint(&mut b, 2, vec![entry("a", 5, &5u32.to_be_bytes(), None)]).await;
    let sst1: Vec<_> = c2.snapshot.files.iter().filter(|f| f.path.ends_with(".sst")).cloned().collect();
    assert_eq!(sst1.len(), 1, "{:?}", names(&c2));
    assert!(names(&c2).contains(&"2.changes") && !names(&c2).contains(&"1.changes"));
    assert!(c2.uploaded_bytes > sst1[0].size, "the base is counted where it is first named");
    assert!(c2.snapshot.files.iter().all(|f| f.path.contains("/shared/")));
    // Then a small change: unchanged SSTs are named again, not uploaded again.
    let c3 = checkpoint(&mut b, 3, vec![entry("a", 6, &6u32.to_be_bytes(), None)]).await;
    for f in &sst1 {
        assert!(c3.snapshot.files.contains(f), "unchanged SSTs are referenced, not uploaded again");
    }
    assert!(c3.uploaded_bytes < sst1[0].size / 2, "the increment ({} B) is much smaller", c3.uploaded_bytes);
    // Restore into a fresh backend: 998 entries, key groups filtered.
    let mut r = TaskBackend::open(BackendKind::Rocksdb, storage.clone(), me(0), dir.path()).unwrap();
    let all = r.restore(&storage, cp(3), std::slice::from_ref(&c3.snapshot), 0..128, true).await.unwrap();
    assert_eq!(all.len(), 998);
    let c4 = checkpoint(&mut r, 4, vec![]).await;
    for f in &sst1 {
        assert!(c4.snapshot.files.contains(f), "a restored backend keeps referencing the uploaded files");
    }
    assert!(names(&c4).contains(&"3.changes"), "and the change files since its base");
    // A heap backend reads the RocksDB snapshot too (backend-independent restore).
    let mut h = TaskBackend::open(BackendKind::Heap, storage.clone(), me(0), dir.path()).unwrap();
    let part = h.restore(&storage, cp(3), &[c3.snapshot], 0..64, false).await.unwrap();
    assert!(part.iter().all(|e| e.key_group < 64));
    assert_eq!(part.len(), (0..1000u32).filter(|i| i % 128 < 64 && *i != 5 && *i != 6).count());
}

#[tokio::test]
async fn change_files_chain_until_a_base_is_uploaded_and_a_lost_one_makes_the_next_checkpoint_whole() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_uri("memory://").unwrap();
    let mut b = TaskBackend::open(BackendKind::Rocksdb, storage.clone(), me(0), dir.path()).unwrap();
    let key = |i: i64| i.to_be_bytes().to_vec();
    let put = |i: i64, v: &[u8]| entry("a", 3, &key(i), Some(v));
    let restored = |snap: &TaskSnapshot, id: u64| {
        let (storage, dir, snap) = (storage.clone(), dir.path().to_path_buf(), snap.clone());
        async move {
            let mut r = TaskBackend::open(BackendKind::Rocksdb, storage.clone(), me(0), &dir).unwrap();
            r.restore(&storage, cp(id), &[snap], 0..128, true).await.unwrap()
        }
    };
    let changes1: Vec<StateEntry> = (0..10).map(|i| put(i, b"1")).collect();
    let c1 = unbased(&mut b, 1, &changes1).await;
    assert_eq!(names(&c1), ["1.changes"]);
    // While a base is under way, the change files chain.
    let pending = b.apply(cp(1), &changes1).unwrap().expect("a base of checkpoint 1 is due");
    let changes2 = vec![put(1, b"2"), entry("a", 3, &key(2), None)];
    unbased(&mut b, 2, &changes2).await;
    assert!(b.apply(cp(2), &changes2).unwrap().is_none(), "one base at a time");
    let changes3 = vec![StateEntry { delete_to: Some(key(6)), ..entry("a", 3, &key(4), None) }, put(11, b"3")];
    let c3 = unbased(&mut b, 3, &changes3).await;
    assert!(b.apply(cp(3), &changes3).unwrap().is_none(), "one base at a time");
    assert_eq!(names(&c3), ["1.changes", "2.changes", "3.changes"]);
    let mut want: Vec<StateEntry> = [0, 1, 3, 6, 7, 8, 9, 11]
        .into_iter()
        .map(|i| {
            put(
                i,
                if i == 1 {
                    b"2"
                } else if i == 11 {
                    b"3"
                } else {
                    b"1"
                },
            )
        })
        .collect();
    assert_eq!(restored(&c3.snapshot, 3).await, want);
    // The base of checkpoint 1 arrives: later checkpoints name it and the changes after it.
    let done = pending.run().await.unwrap();
    assert!(b.uploaded(&done).is_empty());
    let c4 = checkpoint(&mut b, 4, vec![put(12, b"4")]).await;
    assert!(names(&c4).iter().any(|n| n.ends_with(".sst")));
    assert!(names(&c4).ends_with(&["2.changes", "3.changes", "4.changes"]), "{:?}", names(&c4));
    want.push(put(12, b"4"));
    assert_eq!(restored(&c4.snapshot, 4).await, want);
    // A change file that is never written (its upload dropped) and no
    // base after it: a checkpoint naming it would fail, so the next one
    // holds the whole database.
    let lost = vec![put(13, b"5")];
    let upload5 = b.snapshot(cp(5), &lost).unwrap();
    drop(b.apply(cp(5), &lost).unwrap().expect("a base of checkpoint 5 is due"));
    b.base_failed();
    let c5 = b.snapshot(cp(55), &[]).unwrap();
    drop(upload5);
    assert!(matches!(c5.run().await, Err(BackendError::Unwritten { .. })));
    let c6 = checkpoint(&mut b, 6, vec![put(14, b"6")]).await;
    assert!(names(&c6).iter().all(|n| !n.ends_with(".changes")), "{:?}", names(&c6));
    assert!(c6.snapshot.files.iter().all(|f| f.path.contains("/shared/")), "a base is shared");
    want.extend([put(13, b"5"), put(14, b"6")]);
    assert_eq!(restored(&c6.snapshot, 6).await, want);
    let c7 = checkpoint(&mut b, 7, vec![put(15, b"7")]).await;
    assert_eq!(names(&c7).iter().filter(|n| n.ends_with(".changes")).collect::<Vec<_>>(), [&"7.changes"]);
    want.push(put(15, b"7"));
    assert_eq!(restored(&c7.snapshot, 7).await, want);
}

#[tokio::test]
async fn without_a_changelog_every_checkpoint_uploads_the_database_s_new_files() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_uri("memory://").unwrap();
    let mut b = TaskBackend::open(BackendKind::Rocksdb, storage.clone(), me(0), dir.path()).unwrap();
    b.set_changelog(false);
    let c1 = checkpoint(&mut b, 1, vec![entry("a", 1, b"k", Some(b"1")), entry("a", 2, b"j", Some(b"1"))]).await;
    assert!(!b.applies_later(), "the changes are in the database already");
    let c2 = checkpoint(&mut b, 2, vec![entry("a", 1, b"k", None)]).await;
    for c in [&c1, &c2] {
        assert!(names(c).iter().any(|n| n.ends_with(".sst")) && names(c).iter().all(|n| !n.ends_with(".changes")));
    }
    let sst1: Vec<_> = c1.snapshot.files.iter().filter(|f| f.path.ends_with(".sst")).collect();
    assert!(sst1.iter().all(|f| c2.snapshot.files.contains(f)), "unchanged SSTs are named again");
    let mut r = TaskBackend::open(BackendKind::Rocksdb, storage.clone(), me(0), dir.path()).unwrap();
    let got = r.restore(&storage, cp(2), &[c2.snapshot], 0..128, true).await.unwrap();
    assert_eq!(got, vec![entry("a", 2, b"j", Some(b"1"))]);
}

#[tokio::test]
async fn a_base_overtaken_by_a_savepoint_hands_back_its_files_for_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_uri("memory://").unwrap();
    let mut b = TaskBackend::open(BackendKind::Rocksdb, storage.clone(), me(0), dir.path()).unwrap();
    let changes = vec![entry("a", 1, b"k", Some(b"1"))];
    unbased(&mut b, 1, &changes).await;
    let late = b.apply(cp(1), &changes).unwrap().expect("a base of checkpoint 1 is due");
    // A savepoint applies changes no change file holds: the base of 1 would miss them.
    let target = CheckpointStorage::from_uri("memory://").unwrap();
    b.savepoint(cp(2), vec![entry("a", 1, b"j", Some(b"2"))], target).unwrap().run().await.unwrap();
    let done = late.run().await.unwrap();
    let orphans = b.uploaded(&done);
    assert!(!orphans.is_empty() && orphans.iter().all(CheckpointStorage::is_shared));
    storage.delete_shared(&orphans).await.unwrap();
    // The next checkpoint holds the whole database, savepoint's change included.
    let c3 = checkpoint(&mut b, 3, vec![]).await;
    assert!(names(&c3).iter().all(|n| !n.ends_with(".changes")));
    let mut r = TaskBackend::open(BackendKind::Rocksdb, storage.clone(), me(0), dir.path()).unwrap();
    assert_eq!(r.restore(&storage, cp(3), &[c3.snapshot], 0..128, true).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_snapshot_before_the_previous_changes_are_applied_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_uri("memory://").unwrap();
    let mut b = TaskBackend::open(BackendKind::Rocksdb, storage.clone(), me(0), dir.path()).unwrap();
    let changes = vec![entry("a", 1, b"k", Some(b"v"))];
    unbased(&mut b, 1, &changes).await;
    assert!(b.applies_later());
    assert!(matches!(b.snapshot(cp(2), &[]), Err(BackendError::Unapplied { checkpoint: CheckpointId(1) })));
    assert!(matches!(
        b.savepoint(cp(2), vec![], storage.clone()),
        Err(BackendError::Unapplied { checkpoint: CheckpointId(1) })
    ));
    b.apply(cp(1), &changes).unwrap();
    assert!(!b.applies_later());
    assert!(b.snapshot(cp(2), &[]).is_ok());
}

#[test]
fn change_files_round_trip_and_reject_damage() {
    let changes = vec![
        entry("a", 1, b"k", Some(b"v")),
        entry("a", 1, b"gone", None),
        StateEntry { delete_to: Some(b"z".to_vec()), ..entry("b", 2, b"m", None) },
    ];
    let mut with_operator_state = changes.clone();
    with_operator_state.push(entry("a", NON_KEYED, b"pos", Some(b"1")));
    let bytes = encode_changes(&with_operator_state);
    assert_eq!(decode_changes(bytes.clone()).unwrap(), changes);
    assert!(decode_changes(bytes.slice(..bytes.len() - 1)).unwrap_err().contains("truncated"));
    assert!(decode_changes(encode_entries(&changes)).unwrap_err().contains("bad magic"));
}

#[tokio::test]
async fn range_deletions_remove_only_their_keys_of_their_operator_state_and_key_group() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_uri("memory://").unwrap();
    let mut b = TaskBackend::open(BackendKind::Rocksdb, storage.clone(), me(0), dir.path()).unwrap();
    let key = |i: i64| i.to_be_bytes().to_vec();
    let mut first = Vec::new();
    for kg in [3, 4] {
        for op in ["a", "b"] {
            first.extend((0..10).map(|i| entry(op, kg, &key(i), Some(b"v"))));
        }
    }
    checkpoint(&mut b, 1, first).await;
    let range = StateEntry { delete_to: Some(key(7)), ..entry("a", 3, &key(2), None) };
    let c2 = checkpoint(&mut b, 2, vec![range]).await;
    let mut r = TaskBackend::open(BackendKind::Heap, storage.clone(), me(0), dir.path()).unwrap();
    let left = r.restore(&storage, cp(2), &[c2.snapshot], 0..128, false).await.unwrap();
    let gone: Vec<i64> =
        (0..10).filter(|&i| !left.iter().any(|e| e.operator == "a" && e.key_group == 3 && e.key == key(i))).collect();
    assert_eq!(gone, [2, 3, 4, 5, 6]);
    assert_eq!(left.len(), 40 - 5, "other operators and key groups keep every key");
}

#[tokio::test]
async fn savepoints_are_full_canonical_files_per_operator_whatever_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_uri("memory://").unwrap();
    let mut b = TaskBackend::open(BackendKind::Rocksdb, storage.clone(), me(0), dir.path()).unwrap();
    checkpoint(&mut b, 1, vec![entry("a", 1, b"x", Some(b"1")), entry("b", 2, b"y", Some(b"2"))]).await;
    // The savepoint gets only a change from the operators, and still holds everything.
    let target = CheckpointStorage::from_uri("memory://").unwrap();
    let sp = b.savepoint(cp(2), vec![entry("a", 3, b"z", Some(b"3"))], target.clone()).unwrap().run().await.unwrap();
    assert_eq!(sp.snapshot.backend, "savepoint");
    assert_eq!(sp.snapshot.file_operators, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(sp.snapshot.files[0].path, "a-0.state", "paths are relative to the savepoint");
    // A heap backend restores it, reading from the savepoint's storage.
    let mut h = TaskBackend::open(BackendKind::Heap, storage.clone(), me(0), dir.path()).unwrap();
    let got = h.restore(&target, cp(2), std::slice::from_ref(&sp.snapshot), 0..128, false).await.unwrap();
    assert_eq!(got.len(), 3);
    // The RocksDB backend went on incrementally: the savepoint's change is in the next checkpoint.
    let c3 = checkpoint(&mut b, 3, vec![]).await;
    let mut r = TaskBackend::open(BackendKind::Heap, storage.clone(), me(0), dir.path()).unwrap();
    assert_eq!(r.restore(&storage, cp(3), &[c3.snapshot], 0..128, true).await.unwrap().len(), 3);
}

#[tokio::test]
async fn rocksdb_keeps_operator_state_out_of_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_uri("memory://").unwrap();
    let mut b = TaskBackend::open(BackendKind::Rocksdb, storage.clone(), me(0), dir.path()).unwrap();
    // A source: only its position. No database file is linked or uploaded.
    let pos = |v: &[u8]| entry("a", NON_KEYED, b"pos", Some(v));
    let c1 = checkpoint(&mut b, 1, vec![pos(b"1"), entry("a", UNION, b"t1", Some(b"open"))]).await;
    assert_eq!(c1.snapshot.local_names, [OPERATOR_STATE_FILE]);
    // Changes apply in order: the last write wins, deletions (also of ranges) remove.
    let c2 = checkpoint(
        &mut b,
        2,
        vec![
            pos(b"2"),
            pos(b"3"),
            entry("a", UNION, b"t2", Some(b"open")),
            entry("a", UNION, b"t3", Some(b"open")),
            StateEntry { delete_to: Some(b"t3".to_vec()), ..entry("a", UNION, b"t1", None) },
        ],
    )
    .await;
    let mut h = TaskBackend::open(BackendKind::Heap, storage.clone(), me(0), dir.path()).unwrap();
    let got = h.restore(&storage, cp(2), std::slice::from_ref(&c2.snapshot), 0..128, true).await.unwrap();
    assert_eq!(got, vec![entry("a", UNION, b"t3", Some(b"open")), pos(b"3")]);
    // Keyed state goes to the database; the operator state file comes along.
    let c3 = checkpoint(&mut b, 3, vec![entry("a", 7, b"k", Some(b"v"))]).await;
    assert!(c3.snapshot.local_names.iter().any(|n| n.ends_with(".sst") || n.ends_with(CHANGES_SUFFIX)));
    assert!(c3.snapshot.local_names.iter().any(|n| n == OPERATOR_STATE_FILE));
    // A RocksDB backend restores both and goes on from them.
    let mut r = TaskBackend::open(BackendKind::Rocksdb, storage.clone(), me(0), dir.path()).unwrap();
    let got = r.restore(&storage, cp(3), std::slice::from_ref(&c3.snapshot), 0..128, true).await.unwrap();
    assert_eq!(got.len(), 3);
    let c4 = checkpoint(&mut r, 4, vec![pos(b"4")]).await;
    let got = h.restore(&storage, cp(4), std::slice::from_ref(&c4.snapshot), 0..128, true).await.unwrap();
    assert_eq!(got, vec![entry("a", 7, b"k", Some(b"v")), entry("a", UNION, b"t3", Some(b"open")), pos(b"4")]);
}

#[tokio::test]
async fn operator_state_inside_an_older_database_moves_out_on_restore() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_uri("memory://").unwrap();
    let mut b = TaskBackend::open(BackendKind::Rocksdb, storage.clone(), me(0), dir.path()).unwrap();
    // Checkpoints written before operator state was kept apart held it in the database.
    let pos = entry("a", NON_KEYED, b"pos", Some(b"9"));
    let r = b.rocks.as_mut().unwrap();
    r.db.put(rocks_key(&pos), b"9").unwrap();
    r.diverged(cp(0));
    let c1 = checkpoint(&mut b, 1, vec![entry("a", 7, b"k", Some(b"v"))]).await;
    assert_eq!(c1.snapshot.local_names.iter().filter(|n| *n == OPERATOR_STATE_FILE).count(), 0);
    let mut r = TaskBackend::open(BackendKind::Rocksdb, storage.clone(), me(0), dir.path()).unwrap();
    let got = r.restore(&storage, cp(1), std::slice::from_ref(&c1.snapshot), 0..128, true).await.unwrap();
    assert_eq!(got.len(), 2);
    // The position is now operator state; an update of it leaves no stale copy behind.
    let c2 = checkpoint(&mut r, 2, vec![entry("a", NON_KEYED, b"pos", Some(b"10"))]).await;
    let mut h = TaskBackend::open(BackendKind::Heap, storage.clone(), me(0), dir.path()).unwrap();
    let got = h.restore(&storage, cp(2), std::slice::from_ref(&c2.snapshot), 0..128, true).await.unwrap();
    assert_eq!(got, vec![entry("a", 7, b"k", Some(b"v")), entry("a", NON_KEYED, b"pos", Some(b"10"))]);
}

#[tokio::test]
async fn heap_files_reuse_their_buffer_and_keep_each_checkpoint_intact() {
    let dir = tempfile::tempdir().unwrap();
    let at = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_uri(&format!("file://{}", at.path().display())).unwrap();
    let mut b = TaskBackend::open(BackendKind::Heap, storage.clone(), me(0), dir.path()).unwrap();
    let big = vec![entry("a", 1, b"x", Some(&[7u8; 100_000])), entry("a", 2, b"y", Some(b"2"))];
    let first = checkpoint(&mut b, 1, big.clone()).await;
    let spare = b.spare.lock().unwrap().as_ref().map_or(0, BytesMut::capacity);
    assert!(spare >= 100_000, "the written file's buffer comes back for the next checkpoint ({spare} bytes)");
    let small = vec![entry("a", 3, b"z", Some(b"3"))];
    let second = checkpoint(&mut b, 2, small.clone()).await;
    let mut r = TaskBackend::open(BackendKind::Heap, storage.clone(), me(0), dir.path()).unwrap();
    assert_eq!(r.restore(&storage, cp(1), &[first.snapshot], 0..128, true).await.unwrap(), big);
    assert_eq!(r.restore(&storage, cp(2), &[second.snapshot], 0..128, true).await.unwrap(), small);
}

#[tokio::test]
async fn heap_snapshots_are_full_and_filtered_on_restore() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::from_uri("memory://").unwrap();
    let mut b = TaskBackend::open(BackendKind::Heap, storage.clone(), me(1), dir.path()).unwrap();
    let up = checkpoint(
        &mut b,
        4,
        vec![
            entry("a", 1, b"x", Some(b"1")),
            entry("a", 100, b"y", Some(b"2")),
            entry("a", NON_KEYED, b"", Some(b"pos")),
        ],
    )
    .await;
    let mut other = TaskBackend::open(BackendKind::Heap, storage.clone(), me(0), dir.path()).unwrap();
    let got = other.restore(&storage, cp(4), std::slice::from_ref(&up.snapshot), 0..64, false).await.unwrap();
    assert_eq!(got, vec![entry("a", 1, b"x", Some(b"1"))], "non-keyed state stays with its subtask index");
    let mut same = TaskBackend::open(BackendKind::Heap, storage.clone(), me(1), dir.path()).unwrap();
    assert_eq!(same.restore(&storage, cp(4), &[up.snapshot], 64..128, false).await.unwrap().len(), 2);
}
