//! Restoring a subtask's state from a checkpoint or a savepoint.

use super::rocks::{
    rocks_entries, rocks_key, rocks_key_of, rocks_options, uuid_like, Base, Change, OPERATOR_STATE_FILE,
};
use crate::codec::{decode_changes, decode_entries, CHANGES_SUFFIX};
use weir_types::CheckpointId;

use super::{io, is_operator_state, BackendError, StateEntry, TaskBackend, NON_KEYED, UNION};
use crate::{CheckpointStorage, TaskSnapshot};

impl TaskBackend {
    /// Restores the state of this subtask from `snapshots` (every subtask of
    /// its vertex in the checkpoint, or every part of its operators in a
    /// savepoint), read from `from`: keyed entries in `key_groups`, and
    /// non-keyed entries of the snapshot with this subtask's index. Returns
    /// the entries for the operators; a RocksDB backend also rebuilds its
    /// local database from them, so that later checkpoints stay incremental.
    pub async fn restore(
        &mut self,
        from: &CheckpointStorage,
        checkpoint: CheckpointId,
        snapshots: &[TaskSnapshot],
        key_groups: std::ops::Range<u32>,
        same_layout: bool,
    ) -> Result<Vec<StateEntry>, BackendError> {
        let mut out = Vec::new();
        let mut adopted = false;
        for snap in snapshots {
            let mine = snap.subtask == self.me.subtask;
            // Only this job's own checkpoint can become the working database:
            // another job's shared files are not this job's to reference.
            let own = from.uri() == self.storage.uri()
                && snap.files.iter().all(|f| f.path.split('/').any(|part| part == self.me.job.as_str()));
            if same_layout && !mine {
                continue; // with unchanged parallelism a subtask's key groups are its own
            }
            let keep = |e: &StateEntry| {
                if e.key_group == NON_KEYED {
                    mine
                } else if e.key_group == UNION {
                    true
                } else {
                    key_groups.contains(&e.key_group)
                }
            };
            match snap.backend.as_str() {
                "rocksdb" => {
                    // Only this subtask's own snapshot of this job's own
                    // checkpoint, at the same layout, becomes the working state.
                    let adopt = self.rocks.is_some() && own && mine && same_layout && !adopted;
                    let dir = match &self.rocks {
                        Some(r) if adopt => r.dir.join(format!("restore-{checkpoint}")),
                        _ => std::env::temp_dir().join(format!("weir-restore-{}", uuid_like())),
                    };
                    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
                    let mut operator_state = Vec::new();
                    let mut base = Vec::new();
                    let mut changes = Vec::new();
                    for (i, f) in snap.files.iter().enumerate() {
                        let bytes = from.read_file(&self.me.job, checkpoint, f).await?;
                        let name = snap.local_names.get(i).ok_or_else(|| BackendError::Malformed {
                            path: f.path.clone(),
                            reason: "the snapshot does not name its local file".into(),
                        })?;
                        let malformed = |reason| BackendError::Malformed { path: f.path.clone(), reason };
                        if name == OPERATOR_STATE_FILE {
                            operator_state = decode_entries(bytes).map_err(malformed)?;
                        } else if name.ends_with(CHANGES_SUFFIX) {
                            changes.push((name.clone(), f.clone(), decode_changes(bytes).map_err(malformed)?));
                        } else {
                            let p = dir.join(name);
                            std::fs::write(&p, &bytes).map_err(|e| io(&p, e))?;
                            base.push((name.clone(), f.clone()));
                        }
                    }
                    let mut from_db = Vec::new();
                    if !base.is_empty() || !changes.is_empty() {
                        let db = rocksdb::DB::open(&rocks_options(), &dir)?;
                        // The change files since the base, oldest first.
                        for (_, _, entries) in &changes {
                            let mut batch = rocksdb::WriteBatch::default();
                            for e in entries {
                                match (&e.value, &e.delete_to) {
                                    (Some(v), _) => batch.put(rocks_key(e), v),
                                    (None, None) => batch.delete(rocks_key(e)),
                                    (None, Some(to)) => batch.delete_range(rocks_key(e), rocks_key_of(e, to)),
                                }
                            }
                            db.write(batch)?;
                        }
                        from_db = rocks_entries(&db, &dir)?;
                        match &mut self.rocks {
                            Some(r) if adopt => {
                                // Continue from the restored database: its
                                // files and the change files are uploaded.
                                drop(std::mem::replace(&mut r.db, db));
                                let _ = std::fs::remove_dir_all(r.dir.join("db"));
                                r.uploaded = base.iter().filter(|(n, _)| n.ends_with(".sst")).cloned().collect();
                                r.base = Some(Base { checkpoint, files: base.clone() });
                                r.log = changes
                                    .iter()
                                    .map(|(local, handle, _)| Change {
                                        local: local.clone(),
                                        handle: handle.clone(),
                                        written: None,
                                    })
                                    .collect();
                                r.floor = checkpoint;
                                r.keyed = true;
                                if base.iter().any(|(_, f)| !CheckpointStorage::is_shared(f)) {
                                    // Written before bases were shared: those files
                                    // go when their checkpoint does.
                                    r.diverged(checkpoint);
                                }
                            }
                            _ => drop(db),
                        }
                    }
                    if !adopt || (base.is_empty() && changes.is_empty()) {
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                    if let (Some(r), true) = (&mut self.rocks, adopt) {
                        r.adopt_operator_state(&from_db, checkpoint)?;
                        operator_state.iter().for_each(|e| r.apply_operator_state(e));
                        adopted = true;
                    }
                    out.extend(from_db.into_iter().chain(operator_state).filter(|e| keep(e)));
                }
                "savepoint" => {
                    let what = format!("savepoint {}", from.uri());
                    for f in &snap.files {
                        let bytes = from.read_relative(&what, f).await?;
                        let entries = decode_entries(bytes)
                            .map_err(|reason| BackendError::Malformed { path: f.path.clone(), reason })?;
                        out.extend(entries.into_iter().filter(|e| keep(e)));
                    }
                }
                _ => {
                    for f in &snap.files {
                        let bytes = from.read_file(&self.me.job, checkpoint, f).await?;
                        let entries = decode_entries(bytes)
                            .map_err(|reason| BackendError::Malformed { path: f.path.clone(), reason })?;
                        out.extend(entries.into_iter().filter(|e| keep(e)));
                    }
                }
            }
        }
        if let Some(r) = &mut self.rocks {
            if !adopted {
                // State from elsewhere (another backend or another layout) is
                // written into the local database as the base for increments.
                let mut batch = rocksdb::WriteBatch::default();
                for e in out.iter().filter(|e| e.value.is_some()) {
                    if is_operator_state(e) {
                        r.apply_operator_state(e);
                    } else if let Some(v) = &e.value {
                        batch.put(rocks_key(e), v);
                    }
                }
                if !batch.is_empty() {
                    r.keyed = true;
                    r.db.write(batch)?;
                    r.diverged(checkpoint);
                }
            }
        }
        Ok(out)
    }
}
