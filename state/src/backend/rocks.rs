//! The RocksDB side of a backend: the local database, its uploaded copies
//! (bases) and the change files of the checkpoints since, and operator
//! state kept apart from it.

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};

use bytes::{Buf, BufMut, Bytes};

use super::upload::Pending;
use crate::codec::encode_entries;
use weir_types::CheckpointId;

use super::{io, BackendError, StateEntry, TaskIdentity, NON_KEYED, UNION};
use crate::FileHandle;

pub(super) struct Rocks {
    pub(super) db: rocksdb::DB,
    /// The options the database was opened with (SST files written for it use them too).
    pub(super) opts: rocksdb::Options,
    pub(super) dir: PathBuf,
    /// SST file name -> its uploaded copy.
    pub(super) uploaded: HashMap<String, FileHandle>,
    /// State of the subtask rather than of keys ([`NON_KEYED`] and
    /// [`UNION`]: sources' positions, sinks' transactions), by RocksDB key.
    /// It stays out of the database, as in Flink, where operator state never
    /// goes to RocksDB: it is small, and a task with nothing else (a source)
    /// then checkpoints without touching RocksDB at all. Every checkpoint
    /// writes it whole, in the heap layout, as [`OPERATOR_STATE_FILE`].
    pub(super) operator_state: std::collections::BTreeMap<Vec<u8>, StateEntry>,
    /// Whether keyed state ever reached the database (if not, checkpoints
    /// link no database files).
    pub(super) keyed: bool,
    /// The newest uploaded copy of the database. `None` while the database
    /// holds changes that neither it nor [`Rocks::log`] has: the next
    /// checkpoint then uploads the database itself.
    pub(super) base: Option<Base>,
    /// Change files of the checkpoints after the base's, oldest first.
    pub(super) log: Vec<Change>,
    /// The checkpoint whose change file is written but whose changes the
    /// database does not have yet ([`TaskBackend::apply`]).
    pub(super) unapplied: Option<CheckpointId>,
    /// No base of a checkpoint before this one may become [`Rocks::base`]:
    /// the database has changes since that no change file holds.
    pub(super) floor: CheckpointId,
    /// Whether a base is being uploaded in the background.
    pub(super) materializing: bool,
    /// Bytes of bases uploaded in the background since the last
    /// checkpoint: the next checkpoint is the first to name them.
    pub(super) fresh_bytes: u64,
    /// Whether checkpoints write change files ([`TaskBackend::set_changelog`]).
    pub(super) changelog: bool,
}

/// An uploaded copy of the database: the checkpoint whose changes it holds
/// last, and its files (local name, uploaded copy).
#[derive(Debug, Clone)]
pub(super) struct Base {
    pub(super) checkpoint: CheckpointId,
    pub(super) files: Vec<(String, FileHandle)>,
}

/// The change file of one checkpoint.
#[derive(Debug)]
pub(super) struct Change {
    pub(super) local: String,
    pub(super) handle: FileHandle,
    /// Whether the file was written (`Some(true)`); `None` once known to be.
    pub(super) written: Option<Written>,
}

/// Whether a change file was written: `None` while its upload runs.
pub(super) type Written = tokio::sync::watch::Receiver<Option<bool>>;

impl Change {
    /// Whether the file was written or may still be (its upload runs).
    pub(super) fn usable(&self) -> bool {
        match &self.written {
            None => true,
            Some(w) => match *w.borrow() {
                Some(ok) => ok,
                // An upload dropped before it ran never writes the file.
                None => w.has_changed().is_ok(),
            },
        }
    }
}

/// Local name, in a RocksDB backend's snapshot, of the file holding its
/// operator state (every other file belongs to the database).
pub(super) const OPERATOR_STATE_FILE: &str = "operator.state";

pub(super) fn is_operator_state(e: &StateEntry) -> bool {
    e.key_group == NON_KEYED || e.key_group == UNION
}

impl Rocks {
    /// Applies operators' changes, then hard-links a RocksDB checkpoint of
    /// the database into `name` under the working directory (`None` with no
    /// keyed state in the database: nothing to link).
    pub(super) fn apply_and_link(
        &mut self,
        entries: &[StateEntry],
        name: &str,
    ) -> Result<Option<PathBuf>, BackendError> {
        entries.iter().filter(|e| is_operator_state(e)).for_each(|e| self.apply_operator_state(e));
        self.apply(entries)?;
        self.link(name)
    }

    /// Applies operators' changes of keyed state to the database (operator
    /// state is [`Rocks::operator_state`]'s, and skipped).
    ///
    /// The changes do not go through the memtable: they are sorted by key
    /// and written once, straight into an SST file that the database then
    /// ingests (moved in, not copied). A write batch would copy them into
    /// the memtable and a flush would write them out again. Within one file
    /// every entry gets the same sequence number, so a change must not
    /// depend on another of the same checkpoint: the last write of a key
    /// wins, and range deletions only ever cover keys the same checkpoint
    /// does not write.
    pub(super) fn apply(&mut self, entries: &[StateEntry]) -> Result<(), BackendError> {
        let started = std::time::Instant::now();
        let mut points: Vec<(Vec<u8>, Option<&[u8]>)> = Vec::with_capacity(entries.len());
        let mut ranges: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for e in entries.iter().filter(|e| !is_operator_state(e)) {
            match &e.delete_to {
                None => points.push((rocks_key(e), e.value.as_deref())),
                Some(to) => ranges.push((rocks_key(e), rocks_key_of(e, to))),
            }
        }
        if points.is_empty() && ranges.is_empty() {
            return Ok(());
        }
        // Stable: of several writes of a key, the last one stays.
        points.sort_by(|a, b| a.0.cmp(&b.0));
        let mut last: Vec<(Vec<u8>, Option<&[u8]>)> = Vec::with_capacity(points.len());
        for p in points {
            match last.last_mut() {
                Some(l) if l.0 == p.0 => *l = p,
                _ => last.push(p),
            }
        }
        self.keyed = true;
        let path = self.dir.join(format!("{}-changes.sst", uuid_like()));
        let mut writer = rocksdb::SstFileWriter::create(&self.opts);
        writer.open(&path)?;
        for (k, v) in &last {
            match v {
                Some(v) => writer.put(k, v)?,
                None => writer.delete(k)?,
            }
        }
        for (from, to) in &ranges {
            writer.delete_range(from, to)?;
        }
        writer.finish()?;
        let mut ingest = rocksdb::IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        self.db.ingest_external_file_opts(&ingest, vec![&path])?;
        tracing::debug!(entries = entries.len(), took = ?started.elapsed(), "rocksdb changes applied");
        Ok(())
    }

    /// Hard-links a RocksDB checkpoint of the database into `name` under the
    /// working directory (`None` if no keyed state ever reached it).
    pub(super) fn link(&mut self, name: &str) -> Result<Option<PathBuf>, BackendError> {
        if !self.keyed {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let cp_dir = self.dir.join(name);
        if cp_dir.exists() {
            std::fs::remove_dir_all(&cp_dir).map_err(|e| io(&cp_dir, e))?;
        }
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(&cp_dir)?;
        tracing::debug!(took = ?started.elapsed(), "rocksdb checkpoint linked");
        Ok(Some(cp_dir))
    }

    /// The files of a linked checkpoint directory, to upload as a base:
    /// SST files some earlier upload holds are named again, not uploaded.
    pub(super) fn base_files(
        &self,
        cp_dir: &FsPath,
        me: &TaskIdentity,
    ) -> Result<Vec<(String, Pending)>, BackendError> {
        let mut names: Vec<String> = std::fs::read_dir(cp_dir)
            .map_err(|e| io(cp_dir, e))?
            .filter_map(|d| d.ok().and_then(|d| d.file_name().into_string().ok()))
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .map(|name| {
                let pending = match self.uploaded.get(&name) {
                    Some(h) if name.ends_with(".sst") => Pending::Reused(h.clone()),
                    // Every file of a base is shared: later checkpoints name it too.
                    _ => Pending::File {
                        path: cp_dir.join(&name),
                        name: format!("v{}-{}-{}-{name}", me.vertex, me.subtask, uuid_like()),
                        shared: true,
                    },
                };
                (name, pending)
            })
            .collect())
    }

    /// Fails if the database misses the changes of an earlier checkpoint
    /// ([`TaskBackend::apply`] was not called): changes must apply in order.
    pub(super) fn applied(&self) -> Result<(), BackendError> {
        match self.unapplied {
            None => Ok(()),
            Some(checkpoint) => Err(BackendError::Unapplied { checkpoint }),
        }
    }

    /// The database now holds changes no base or change file has.
    pub(super) fn diverged(&mut self, checkpoint: CheckpointId) {
        self.base = None;
        self.log.clear();
        self.floor = self.floor.max(checkpoint);
    }

    /// Applies a change of operator state (in the order handed over: the
    /// last write of a key wins).
    pub(super) fn apply_operator_state(&mut self, e: &StateEntry) {
        let key = rocks_key(e);
        match (&e.value, &e.delete_to) {
            (Some(_), _) => {
                self.operator_state.insert(key, StateEntry { delete_to: None, ..e.clone() });
            }
            (None, None) => {
                self.operator_state.remove(&key);
            }
            (None, Some(to)) => {
                let end = rocks_key_of(e, to);
                if key < end {
                    let gone: Vec<Vec<u8>> = self.operator_state.range(key..end).map(|(k, _)| k.clone()).collect();
                    for k in gone {
                        self.operator_state.remove(&k);
                    }
                }
            }
        }
    }

    /// The operator state, as a file in the heap layout (`None` if empty).
    pub(super) fn operator_state_file(&self) -> Option<Bytes> {
        if self.operator_state.is_empty() {
            return None;
        }
        let entries: Vec<StateEntry> = self.operator_state.values().cloned().collect();
        Some(encode_entries(&entries))
    }

    /// Keeps restored operator state out of the database: entries of it
    /// found in a database (checkpoints written before operator state was
    /// kept apart) move to [`Rocks::operator_state`].
    pub(super) fn adopt_operator_state(
        &mut self,
        entries: &[StateEntry],
        checkpoint: CheckpointId,
    ) -> Result<(), BackendError> {
        let mut batch = rocksdb::WriteBatch::default();
        for e in entries.iter().filter(|e| is_operator_state(e)) {
            batch.delete(rocks_key(e));
            self.apply_operator_state(e);
        }
        if !batch.is_empty() {
            self.db.write(batch)?;
            // The uploaded copy still has them.
            self.diverged(checkpoint);
        }
        Ok(())
    }
}

/// Every entry of a RocksDB directory (a checkpoint of the working database).
pub(super) fn read_rocks_dir(dir: &FsPath) -> Result<Vec<StateEntry>, BackendError> {
    let db = rocksdb::DB::open_for_read_only(&rocks_options(), dir, false)?;
    rocks_entries(&db, dir)
}

/// Every entry of an open database.
pub(super) fn rocks_entries(db: &rocksdb::DB, dir: &FsPath) -> Result<Vec<StateEntry>, BackendError> {
    let mut out = Vec::new();
    for item in db.iterator(rocksdb::IteratorMode::Start) {
        let (k, v) = item?;
        let mut e = decode_rocks_key(&k).ok_or_else(|| BackendError::Malformed {
            path: dir.display().to_string(),
            reason: "a key does not decode".into(),
        })?;
        e.value = Some(v.to_vec());
        out.push(e);
    }
    Ok(out)
}

/// Flush threads of the process's RocksDB environment (shared by every
/// backend): subtasks checkpoint at the same moment, and each flushes its
/// memtable then, so with a single thread they would queue behind each other.
/// Flushes are on a checkpoint's critical path and keep the process's CPU
/// priority; compactions are not, and run at the lowest priority, below
/// the task threads (see the task manager's `task_nice`).
const FLUSH_THREADS: i32 = 4;

pub(super) fn rocks_options() -> rocksdb::Options {
    let mut o = rocksdb::Options::default();
    if let Ok(mut env) = rocksdb::Env::new() {
        env.set_high_priority_background_threads(FLUSH_THREADS);
        env.lower_thread_pool_cpu_priority();
        o.set_env(&env);
    }
    o.set_max_background_jobs(FLUSH_THREADS);
    o.create_if_missing(true);
    o.set_compression_type(rocksdb::DBCompressionType::Lz4);
    o
}

pub(super) fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}{:x}{:x}", std::process::id(), nanos as u64, SEQ.fetch_add(1, Ordering::Relaxed))
}

pub(super) fn rocks_key(e: &StateEntry) -> Vec<u8> {
    rocks_key_of(e, &e.key)
}

/// The RocksDB key of `key` in `e`'s operator, state and key group.
pub(super) fn rocks_key_of(e: &StateEntry, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + e.operator.len() + e.state.len() + key.len());
    k.put_u16(e.operator.len() as u16);
    k.extend_from_slice(e.operator.as_bytes());
    k.put_u16(e.state.len() as u16);
    k.extend_from_slice(e.state.as_bytes());
    k.put_u32(e.key_group);
    k.extend_from_slice(key);
    k
}

pub(super) fn decode_rocks_key(mut k: &[u8]) -> Option<StateEntry> {
    let string = |k: &mut &[u8]| -> Option<String> {
        if k.len() < 2 {
            return None;
        }
        let n = k.get_u16() as usize;
        if k.len() < n {
            return None;
        }
        let s = String::from_utf8(k[..n].to_vec()).ok()?;
        k.advance(n);
        Some(s)
    };
    let operator = string(&mut k)?;
    let state = string(&mut k)?;
    if k.len() < 4 {
        return None;
    }
    let key_group = k.get_u32();
    Some(StateEntry { operator, state, key_group, key: k.to_vec(), value: None, delete_to: None })
}
