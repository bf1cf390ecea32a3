//! State backends: how a subtask's operator state becomes checkpoint files
//! and comes back on restore.
//!
//! Operators keep their working state in memory, in whatever layout is
//! fastest for them (columnar accumulators for windows), and hand it to the
//! backend as [`StateEntry`]s at a barrier — never per record. The backend
//! decides what a checkpoint costs:
//!
//! - [`BackendKind::Heap`]: every checkpoint is a full snapshot — one file
//!   per subtask holding every entry.
//! - [`BackendKind::RocksDb`]: operators hand over only what changed since
//!   the previous checkpoint (puts and deletes); the backend applies them to
//!   a local RocksDB, flushes it and uploads only the SST files that no
//!   earlier checkpoint uploaded. SST files live under `<job>/shared/` and
//!   are referenced by every checkpoint that contains them; the job manager
//!   deletes one when no retained checkpoint names it any more.
//!
//!   State of a subtask rather than of keys (sources' positions, sinks'
//!   transactions) stays out of RocksDB, in memory, and every checkpoint
//!   writes it whole in a small file of its own.
//!
//! Each checkpoint happens in two parts: [`TaskBackend::snapshot`] takes the
//! operators' entries (heap: encodes them; RocksDB: writes the changes into
//! an SST the database ingests, and hard-links a checkpoint directory);
//! [`Upload::run`] then writes the files. Both run off the task's thread
//! while the task goes on processing records.

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{CheckpointStorage, FileHandle, StorageError, TaskSnapshot};

/// Key group of state that belongs to a subtask rather than to a key (source
/// positions, broadcast tables): restored by subtask index.
pub const NON_KEYED: u32 = u32::MAX;

/// Key group of union state: restored to every subtask (the runtime's
/// `weir_runtime::state::UNION`).
pub const UNION: u32 = u32::MAX - 1;

const HEAP_MAGIC: &[u8; 8] = b"WEIRST01";

/// One piece of operator state. The same shape as the runtime's
/// `weir_runtime::state::StateEntry`: the runtime stays free of storage
/// crates and this crate free of the runtime, so the task manager moves
/// entries from one to the other at the boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    /// Operator uid.
    pub operator: String,
    /// State name within the operator.
    pub state: String,
    /// Key group, or [`NON_KEYED`].
    pub key_group: u32,
    /// Key bytes (namespace and key, as the operator encodes them).
    pub key: Vec<u8>,
    /// Value bytes; `None` deletes the entry (incremental snapshots only).
    pub value: Option<Vec<u8>>,
    /// With `value: None`, the end (exclusive) of a range of keys of this
    /// state and key group, from `key` on, to delete at once.
    pub delete_to: Option<Vec<u8>>,
}

/// Which backend a job uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// Full snapshots of in-memory state.
    #[default]
    Heap,
    /// Incremental snapshots through a local RocksDB.
    RocksDb,
}

impl BackendKind {
    /// The name used in job files and metadata.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Heap => "heap",
            BackendKind::RocksDb => "rocksdb",
        }
    }

    /// Parses `heap` or `rocksdb`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "heap" | "hashmap" => Some(BackendKind::Heap),
            "rocksdb" => Some(BackendKind::RocksDb),
            _ => None,
        }
    }
}

/// Errors of a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Storage failed or a file is damaged.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// RocksDB failed.
    #[error("rocksdb: {0}")]
    RocksDb(#[from] rocksdb::Error),
    /// Local disk failed.
    #[error("local state directory {path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A state file does not decode.
    #[error("state file {path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

fn io(path: &FsPath, source: std::io::Error) -> BackendError {
    BackendError::Io { path: path.display().to_string(), source }
}

/// Where a subtask's state goes.
#[derive(Debug, Clone)]
pub struct TaskIdentity {
    /// Job id.
    pub job: String,
    /// Vertex index.
    pub vertex: u32,
    /// Subtask index.
    pub subtask: u32,
    /// Operator uids of the chain.
    pub operators: Vec<String>,
}

/// The backend of one subtask.
pub struct TaskBackend {
    kind: BackendKind,
    storage: CheckpointStorage,
    me: TaskIdentity,
    rocks: Option<Rocks>,
    spare: Spare,
}

/// The buffer of the last heap file, handed back by the upload that wrote
/// it: the next checkpoint encodes into memory that is already mapped. A
/// fresh buffer of several MiB costs one page fault per 4 KiB, milliseconds
/// on every checkpoint. It holds about one heap file per subtask.
type Spare = std::sync::Arc<std::sync::Mutex<Option<BytesMut>>>;

impl std::fmt::Debug for TaskBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskBackend").field("kind", &self.kind).field("storage", &self.storage).finish()
    }
}

struct Rocks {
    db: rocksdb::DB,
    /// The options the database was opened with (SST files written for it use them too).
    opts: rocksdb::Options,
    dir: PathBuf,
    /// SST file name -> its uploaded copy.
    uploaded: HashMap<String, FileHandle>,
    /// State of the subtask rather than of keys ([`NON_KEYED`] and
    /// [`UNION`]: sources' positions, sinks' transactions), by RocksDB key.
    /// It stays out of the database, as in Flink, where operator state never
    /// goes to RocksDB: it is small, and a task with nothing else (a source)
    /// then checkpoints without touching RocksDB at all. Every checkpoint
    /// writes it whole, in the heap layout, as [`OPERATOR_STATE_FILE`].
    operator_state: std::collections::BTreeMap<Vec<u8>, StateEntry>,
    /// Whether keyed state ever reached the database (if not, checkpoints
    /// link no database files).
    keyed: bool,
}

/// Local name, in a RocksDB backend's snapshot, of the file holding its
/// operator state (every other file belongs to the database).
const OPERATOR_STATE_FILE: &str = "operator.state";

fn is_operator_state(e: &StateEntry) -> bool {
    e.key_group == NON_KEYED || e.key_group == UNION
}

impl Rocks {
    /// Applies operators' changes, then hard-links a RocksDB checkpoint of
    /// the database into `name` under the working directory.
    ///
    /// The changes do not go through the memtable: they are sorted by key
    /// and written once, straight into an SST file that the database then
    /// ingests (moved in, not copied). A write batch would copy them into
    /// the memtable and a flush would write them out again, two more passes
    /// on the checkpoint's critical path. Within one file every entry gets
    /// the same sequence number, so a change must not depend on another of
    /// the same checkpoint: the last write of a key wins, and range
    /// deletions only ever cover keys the same checkpoint does not write.
    ///
    /// Operator state goes to [`Rocks::operator_state`] instead; with no
    /// keyed state in the database there is nothing to link (`None`).
    fn apply_and_link(&mut self, entries: &[StateEntry], name: &str) -> Result<Option<PathBuf>, BackendError> {
        let started = std::time::Instant::now();
        let mut points: Vec<(Vec<u8>, Option<&[u8]>)> = Vec::with_capacity(entries.len());
        let mut ranges: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for e in entries {
            if is_operator_state(e) {
                self.apply_operator_state(e);
                continue;
            }
            match &e.delete_to {
                None => points.push((rocks_key(e), e.value.as_deref())),
                Some(to) => ranges.push((rocks_key(e), rocks_key_of(e, to))),
            }
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
        if !last.is_empty() || !ranges.is_empty() {
            self.keyed = true;
            let path = self.dir.join(format!("{name}-changes.sst"));
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
        }
        if !self.keyed {
            return Ok(None);
        }
        let applied = started.elapsed();
        let cp_dir = self.dir.join(name);
        if cp_dir.exists() {
            std::fs::remove_dir_all(&cp_dir).map_err(|e| io(&cp_dir, e))?;
        }
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(&cp_dir)?;
        tracing::debug!(entries = entries.len(), apply = ?applied, link = ?(started.elapsed() - applied), "rocksdb checkpoint linked");
        Ok(Some(cp_dir))
    }

    /// Applies a change of operator state (in the order handed over: the
    /// last write of a key wins).
    fn apply_operator_state(&mut self, e: &StateEntry) {
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
    fn operator_state_file(&self) -> Option<Bytes> {
        if self.operator_state.is_empty() {
            return None;
        }
        let entries: Vec<StateEntry> = self.operator_state.values().cloned().collect();
        Some(encode_entries(&entries))
    }

    /// Keeps restored operator state out of the database: entries of it
    /// found in a database (checkpoints written before operator state was
    /// kept apart) move to [`Rocks::operator_state`].
    fn adopt_operator_state(&mut self, entries: &[StateEntry]) -> Result<(), BackendError> {
        let mut batch = rocksdb::WriteBatch::default();
        for e in entries.iter().filter(|e| is_operator_state(e)) {
            batch.delete(rocks_key(e));
            self.apply_operator_state(e);
        }
        if !batch.is_empty() {
            self.db.write(batch)?;
        }
        Ok(())
    }
}

/// Every entry of a RocksDB directory (a checkpoint of the working database).
fn read_rocks_dir(dir: &FsPath) -> Result<Vec<StateEntry>, BackendError> {
    let db = rocksdb::DB::open_for_read_only(&rocks_options(), dir, false)?;
    rocks_entries(&db, dir)
}

/// Every entry of an open database.
fn rocks_entries(db: &rocksdb::DB, dir: &FsPath) -> Result<Vec<StateEntry>, BackendError> {
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

/// The asynchronous part of a savepoint.
#[derive(Debug)]
pub struct SavepointUpload {
    target: CheckpointStorage,
    me: TaskIdentity,
    source: SavepointSource,
}

#[derive(Debug)]
enum SavepointSource {
    Entries(Vec<StateEntry>),
    /// A hard-linked RocksDB checkpoint to read every entry from, then
    /// delete (none if the database never held keyed state), and the
    /// operator state kept apart from it.
    RocksDb(Option<PathBuf>, Vec<StateEntry>),
}

impl SavepointUpload {
    /// Writes one canonical file per operator of the chain that has state;
    /// returns the subtask's part (file paths relative to the savepoint).
    pub async fn run(self) -> Result<Uploaded, BackendError> {
        let entries = match self.source {
            SavepointSource::Entries(e) => e,
            SavepointSource::RocksDb(None, operator_state) => operator_state,
            SavepointSource::RocksDb(Some(dir), operator_state) => {
                let read = {
                    let at = dir.clone();
                    tokio::task::spawn_blocking(move || read_rocks_dir(&at))
                        .await
                        .map_err(|e| BackendError::Malformed { path: dir.display().to_string(), reason: e.to_string() })
                };
                let _ = tokio::fs::remove_dir_all(&dir).await;
                let mut entries = read??;
                entries.extend(operator_state);
                entries
            }
        };
        let mut by_operator: std::collections::BTreeMap<&str, Vec<&StateEntry>> = Default::default();
        for e in entries.iter().filter(|e| e.value.is_some()) {
            by_operator.entry(e.operator.as_str()).or_default().push(e);
        }
        let mut snapshot = TaskSnapshot {
            operators: self.me.operators.clone(),
            subtask: self.me.subtask,
            files: Vec::new(),
            inline: serde_json::Value::Null,
            backend: "savepoint".into(),
            local_names: Vec::new(),
            file_operators: Vec::new(),
            parallelism: 0,
        };
        let mut uploaded_bytes = 0;
        for (uid, list) in by_operator {
            let owned: Vec<StateEntry> = list.into_iter().cloned().collect();
            let bytes = encode_entries(&owned);
            uploaded_bytes += bytes.len() as u64;
            let name = crate::savepoint::state_file_name(uid, self.me.subtask);
            snapshot.files.push(self.target.write_relative(&name, bytes).await?);
            snapshot.file_operators.push(uid.to_string());
        }
        Ok(Uploaded { snapshot, uploaded_bytes, new_shared: Vec::new() })
    }
}

/// The asynchronous part of a checkpoint: files to write.
#[derive(Debug)]
pub struct Upload {
    storage: CheckpointStorage,
    me: TaskIdentity,
    checkpoint: u64,
    kind: BackendKind,
    /// (local name, file to upload or an already uploaded handle).
    files: Vec<(String, Pending)>,
    /// A directory to delete once uploaded (RocksDB checkpoint hard links).
    cleanup: Option<PathBuf>,
    /// Where the heap file's buffer goes once written.
    spare: Option<Spare>,
}

#[derive(Debug)]
enum Pending {
    Bytes { name: String, bytes: Bytes, shared: bool },
    File { path: PathBuf, name: String, shared: bool },
    Reused(FileHandle),
}

/// What an upload produced.
#[derive(Debug)]
pub struct Uploaded {
    /// The subtask's part of the checkpoint.
    pub snapshot: TaskSnapshot,
    /// Bytes written by this checkpoint.
    pub uploaded_bytes: u64,
    /// Newly uploaded shared files (so the backend can reuse them).
    pub new_shared: Vec<(String, FileHandle)>,
}

impl TaskBackend {
    /// A backend for one subtask. `local_dir` holds RocksDB's working files.
    pub fn open(
        kind: BackendKind,
        storage: CheckpointStorage,
        me: TaskIdentity,
        local_dir: &FsPath,
    ) -> Result<Self, BackendError> {
        let rocks = match kind {
            BackendKind::Heap => None,
            BackendKind::RocksDb => {
                let dir = local_dir.join(format!("{}-v{}-{}-{}", me.job, me.vertex, me.subtask, uuid_like()));
                std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
                let opts = rocks_options();
                let db = rocksdb::DB::open(&opts, dir.join("db"))?;
                Some(Rocks {
                    db,
                    opts,
                    dir,
                    uploaded: HashMap::new(),
                    operator_state: Default::default(),
                    keyed: false,
                })
            }
        };
        Ok(Self { kind, storage, me, rocks, spare: Spare::default() })
    }

    /// Whether operators must hand over all their state at every checkpoint
    /// (heap) or only what changed since the previous one (RocksDB).
    pub fn wants_full_snapshots(&self) -> bool {
        self.kind == BackendKind::Heap
    }

    /// The synchronous part of checkpoint `checkpoint`. The entries stay
    /// the caller's, who can free them when it suits (large window state
    /// is tens of thousands of allocations, milliseconds to free).
    pub fn snapshot(&mut self, checkpoint: u64, entries: &[StateEntry]) -> Result<Upload, BackendError> {
        let mut upload = Upload {
            storage: self.storage.clone(),
            me: self.me.clone(),
            checkpoint,
            kind: self.kind,
            files: Vec::new(),
            cleanup: None,
            spare: None,
        };
        match &mut self.rocks {
            None => {
                if !entries.is_empty() {
                    let name = format!("v{}-{}.state", self.me.vertex, self.me.subtask);
                    let mut buf = self.spare.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
                    buf.clear();
                    encode_entries_into(entries, &mut buf);
                    let bytes = buf.freeze();
                    upload.spare = Some(self.spare.clone());
                    upload.files.push((name.clone(), Pending::Bytes { name, bytes, shared: false }));
                }
            }
            Some(r) => {
                let cp_dir = r.apply_and_link(entries, &format!("chk-{checkpoint}"))?;
                if let Some(bytes) = r.operator_state_file() {
                    let name = format!("v{}-{}-{OPERATOR_STATE_FILE}", self.me.vertex, self.me.subtask);
                    upload.files.push((OPERATOR_STATE_FILE.to_string(), Pending::Bytes { name, bytes, shared: false }));
                }
                let Some(cp_dir) = cp_dir else { return Ok(upload) };
                let mut names: Vec<String> = std::fs::read_dir(&cp_dir)
                    .map_err(|e| io(&cp_dir, e))?
                    .filter_map(|d| d.ok().and_then(|d| d.file_name().into_string().ok()))
                    .collect();
                names.sort();
                for name in names {
                    let shared = name.ends_with(".sst");
                    let pending = match r.uploaded.get(&name) {
                        Some(h) if shared => Pending::Reused(h.clone()),
                        _ => Pending::File {
                            path: cp_dir.join(&name),
                            name: if shared {
                                format!("v{}-{}-{}-{name}", self.me.vertex, self.me.subtask, uuid_like())
                            } else {
                                format!("v{}-{}-{name}", self.me.vertex, self.me.subtask)
                            },
                            shared,
                        },
                    };
                    upload.files.push((name, pending));
                }
                upload.cleanup = Some(cp_dir);
            }
        }
        Ok(upload)
    }

    /// The synchronous part of a savepoint: operators' entries (heap: all of
    /// them; RocksDB: the changes, applied to the local database like a
    /// checkpoint's so that later checkpoints stay incremental) become a
    /// full, canonical copy of the subtask's state, one file per operator,
    /// written into `target` (the savepoint's directory) by
    /// [`SavepointUpload::run`].
    pub fn savepoint(
        &mut self,
        checkpoint: u64,
        entries: Vec<StateEntry>,
        target: CheckpointStorage,
    ) -> Result<SavepointUpload, BackendError> {
        let source = match &mut self.rocks {
            None => SavepointSource::Entries(entries),
            Some(r) => {
                let dir = r.apply_and_link(&entries, &format!("sp-{checkpoint}"))?;
                SavepointSource::RocksDb(dir, r.operator_state.values().cloned().collect())
            }
        };
        Ok(SavepointUpload { target, me: self.me.clone(), source })
    }

    /// Records what an upload of this backend produced (RocksDB reuses the
    /// shared files in later checkpoints).
    pub fn uploaded(&mut self, new_shared: Vec<(String, FileHandle)>) {
        if let Some(r) = &mut self.rocks {
            r.uploaded.extend(new_shared);
        }
    }

    /// Restores the state of this subtask from `snapshots` (every subtask of
    /// its vertex in the checkpoint, or every part of its operators in a
    /// savepoint), read from `from`: keyed entries in `key_groups`, and
    /// non-keyed entries of the snapshot with this subtask's index. Returns
    /// the entries for the operators; a RocksDB backend also rebuilds its
    /// local database from them, so that later checkpoints stay incremental.
    pub async fn restore(
        &mut self,
        from: &CheckpointStorage,
        checkpoint: u64,
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
                && snap.files.iter().all(|f| f.path.split('/').any(|part| part == self.me.job));
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
                    let mut db_files = 0;
                    for (i, f) in snap.files.iter().enumerate() {
                        let bytes = from.read_file(&self.me.job, checkpoint, f).await?;
                        let name = snap.local_names.get(i).ok_or_else(|| BackendError::Malformed {
                            path: f.path.clone(),
                            reason: "the snapshot does not name its local file".into(),
                        })?;
                        if name == OPERATOR_STATE_FILE {
                            operator_state = decode_entries(bytes)
                                .map_err(|reason| BackendError::Malformed { path: f.path.clone(), reason })?;
                            continue;
                        }
                        let p = dir.join(name);
                        std::fs::write(&p, &bytes).map_err(|e| io(&p, e))?;
                        db_files += 1;
                    }
                    let mut from_db = Vec::new();
                    if db_files > 0 {
                        let db = rocksdb::DB::open(&rocks_options(), &dir)?;
                        from_db = rocks_entries(&db, &dir)?;
                        match &mut self.rocks {
                            Some(r) if adopt => {
                                // Continue from the restored database: its SST files are already uploaded.
                                drop(std::mem::replace(&mut r.db, db));
                                let _ = std::fs::remove_dir_all(r.dir.join("db"));
                                r.uploaded = snap
                                    .files
                                    .iter()
                                    .zip(&snap.local_names)
                                    .filter(|(_, n)| n.ends_with(".sst"))
                                    .map(|(f, n)| (n.clone(), f.clone()))
                                    .collect();
                                r.keyed = true;
                            }
                            _ => drop(db),
                        }
                    }
                    if !adopt || db_files == 0 {
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                    if let (Some(r), true) = (&mut self.rocks, adopt) {
                        r.adopt_operator_state(&from_db)?;
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
                }
            }
        }
        Ok(out)
    }
}

impl Drop for TaskBackend {
    fn drop(&mut self) {
        if let Some(r) = self.rocks.take() {
            let dir = r.dir.clone();
            drop(r);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Upload {
    /// Writes the files; returns the subtask's part of the checkpoint.
    pub async fn run(mut self) -> Result<Uploaded, BackendError> {
        let mut snapshot = TaskSnapshot {
            operators: self.me.operators.clone(),
            subtask: self.me.subtask,
            files: Vec::new(),
            inline: serde_json::Value::Null,
            backend: self.kind.name().to_string(),
            local_names: Vec::new(),
            file_operators: Vec::new(),
            parallelism: 0,
        };
        let mut uploaded_bytes = 0;
        let mut new_shared = Vec::new();
        let files = std::mem::take(&mut self.files);
        for (local, pending) in files {
            let handle = match pending {
                Pending::Reused(h) => h,
                Pending::Bytes { name, bytes, shared } => {
                    uploaded_bytes += bytes.len() as u64;
                    let written = self.write(&name, bytes.clone(), shared).await?;
                    // The store let go of its copy: the buffer is ours again.
                    if let (Some(spare), Ok(mut buf)) = (&self.spare, bytes.try_into_mut()) {
                        buf.clear();
                        *spare.lock().unwrap_or_else(|e| e.into_inner()) = Some(buf);
                    }
                    written
                }
                Pending::File { path, name, shared } => {
                    let bytes = tokio::fs::read(&path).await.map_err(|e| io(&path, e))?;
                    uploaded_bytes += bytes.len() as u64;
                    let h = self.write(&name, Bytes::from(bytes), shared).await?;
                    if shared {
                        new_shared.push((local.clone(), h.clone()));
                    }
                    h
                }
            };
            snapshot.files.push(handle);
            snapshot.local_names.push(local);
        }
        if let Some(dir) = self.cleanup.take() {
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
        Ok(Uploaded { snapshot, uploaded_bytes, new_shared })
    }

    async fn write(&self, name: &str, bytes: Bytes, shared: bool) -> Result<FileHandle, StorageError> {
        if shared {
            self.storage.write_shared_file(&self.me.job, name, bytes).await
        } else {
            self.storage.write_file(&self.me.job, self.checkpoint, name, bytes).await
        }
    }
}

/// Flush threads of the process's RocksDB environment (shared by every
/// backend): subtasks checkpoint at the same moment, and each flushes its
/// memtable then, so with a single thread they would queue behind each other.
/// Flushes are on a checkpoint's critical path and keep the process's CPU
/// priority; compactions are not, and run at the lowest priority, below
/// the task threads (see the task manager's `task_nice`).
const FLUSH_THREADS: i32 = 4;

fn rocks_options() -> rocksdb::Options {
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

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}{:x}{:x}", std::process::id(), nanos as u64, SEQ.fetch_add(1, Ordering::Relaxed))
}

fn rocks_key(e: &StateEntry) -> Vec<u8> {
    rocks_key_of(e, &e.key)
}

/// The RocksDB key of `key` in `e`'s operator, state and key group.
fn rocks_key_of(e: &StateEntry, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + e.operator.len() + e.state.len() + key.len());
    k.put_u16(e.operator.len() as u16);
    k.extend_from_slice(e.operator.as_bytes());
    k.put_u16(e.state.len() as u16);
    k.extend_from_slice(e.state.as_bytes());
    k.put_u32(e.key_group);
    k.extend_from_slice(key);
    k
}

fn decode_rocks_key(mut k: &[u8]) -> Option<StateEntry> {
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

/// Encodes entries as a heap snapshot file.
pub fn encode_entries(entries: &[StateEntry]) -> Bytes {
    let mut b = BytesMut::new();
    encode_entries_into(entries, &mut b);
    b.freeze()
}

/// Appends the heap snapshot file of `entries` to `b`.
fn encode_entries_into(entries: &[StateEntry], b: &mut BytesMut) {
    let size: usize = entries
        .iter()
        .map(|e| 16 + e.operator.len() + e.state.len() + e.key.len() + e.value.as_ref().map_or(0, Vec::len))
        .sum();
    b.reserve(size + 16);
    b.put_slice(HEAP_MAGIC);
    b.put_u64(entries.len() as u64);
    for e in entries {
        b.put_u16(e.operator.len() as u16);
        b.put_slice(e.operator.as_bytes());
        b.put_u16(e.state.len() as u16);
        b.put_slice(e.state.as_bytes());
        b.put_u32(e.key_group);
        b.put_u32(e.key.len() as u32);
        b.put_slice(&e.key);
        let v = e.value.as_deref().unwrap_or_default();
        b.put_u32(v.len() as u32);
        b.put_slice(v);
    }
}

/// Decodes a heap snapshot file.
pub fn decode_entries(mut b: Bytes) -> Result<Vec<StateEntry>, String> {
    fn take(b: &mut Bytes, n: usize, what: &str) -> Result<Bytes, String> {
        if b.remaining() < n {
            return Err(format!("truncated in {what}"));
        }
        Ok(b.split_to(n))
    }
    let magic = take(&mut b, 8, "the header")?;
    if magic.as_ref() != HEAP_MAGIC {
        return Err("not a state file (bad magic)".into());
    }
    let n = take(&mut b, 8, "the header")?.get_u64();
    let mut out = Vec::with_capacity(n.min(1 << 20) as usize);
    let text = |b: Bytes, what: &str| String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not UTF-8"));
    for _ in 0..n {
        let len = take(&mut b, 2, "an operator name")?.get_u16() as usize;
        let operator = text(take(&mut b, len, "an operator name")?, "an operator name")?;
        let len = take(&mut b, 2, "a state name")?.get_u16() as usize;
        let state = text(take(&mut b, len, "a state name")?, "a state name")?;
        let key_group = take(&mut b, 4, "a key group")?.get_u32();
        let len = take(&mut b, 4, "a key")?.get_u32() as usize;
        let key = take(&mut b, len, "a key")?.to_vec();
        let len = take(&mut b, 4, "a value")?.get_u32() as usize;
        let value = Some(take(&mut b, len, "a value")?.to_vec());
        out.push(StateEntry { operator, state, key_group, key, value, delete_to: None });
    }
    if b.has_remaining() {
        return Err(format!("{} bytes after the last entry", b.remaining()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        TaskIdentity { job: "job".into(), vertex: 1, subtask, operators: vec!["a".into()] }
    }

    async fn checkpoint(b: &mut TaskBackend, id: u64, entries: Vec<StateEntry>) -> Uploaded {
        let up = b.snapshot(id, &entries).unwrap().run().await.unwrap();
        b.uploaded(up.new_shared.clone());
        up
    }

    #[tokio::test]
    async fn rocksdb_uploads_only_new_files_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::from_uri("memory://").unwrap();
        let mut b = TaskBackend::open(BackendKind::RocksDb, storage.clone(), me(0), dir.path()).unwrap();
        let first: Vec<StateEntry> =
            (0..1000u32).map(|i| entry("a", i % 128, &i.to_be_bytes(), Some(&[7u8; 100]))).collect();
        let c1 = checkpoint(&mut b, 1, first).await;
        assert!(c1.uploaded_bytes > 0);
        let sst1: Vec<_> = c1.snapshot.files.iter().filter(|f| f.path.contains("/shared/")).cloned().collect();
        assert_eq!(sst1.len(), 1, "{:?}", c1.snapshot.local_names);
        // A small change uploads a small new SST and reuses the first.
        let c2 = checkpoint(&mut b, 2, vec![entry("a", 5, &5u32.to_be_bytes(), None)]).await;
        for f in &sst1 {
            assert!(c2.snapshot.files.contains(f), "unchanged SSTs are referenced, not uploaded again");
        }
        let new_sst: u64 =
            c2.snapshot.files.iter().filter(|f| !sst1.contains(f) && f.path.contains("/shared/")).map(|f| f.size).sum();
        assert!(new_sst < sst1[0].size / 4, "the increment ({new_sst} B) is much smaller than the base");
        // Restore into a fresh backend: 999 entries, key groups filtered.
        let mut r = TaskBackend::open(BackendKind::RocksDb, storage.clone(), me(0), dir.path()).unwrap();
        let all = r.restore(&storage, 2, std::slice::from_ref(&c2.snapshot), 0..128, true).await.unwrap();
        assert_eq!(all.len(), 999);
        let c3 = checkpoint(&mut r, 3, vec![]).await;
        for f in &sst1 {
            assert!(c3.snapshot.files.contains(f), "a restored backend keeps referencing the uploaded files");
        }
        // A heap backend reads the RocksDB snapshot too (backend-independent restore).
        let mut h = TaskBackend::open(BackendKind::Heap, storage.clone(), me(0), dir.path()).unwrap();
        let part = h.restore(&storage, 2, &[c2.snapshot], 0..64, false).await.unwrap();
        assert!(part.iter().all(|e| e.key_group < 64));
        assert_eq!(part.len(), (0..1000u32).filter(|i| i % 128 < 64 && *i != 5).count());
    }

    #[tokio::test]
    async fn range_deletions_remove_only_their_keys_of_their_operator_state_and_key_group() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::from_uri("memory://").unwrap();
        let mut b = TaskBackend::open(BackendKind::RocksDb, storage.clone(), me(0), dir.path()).unwrap();
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
        let left = r.restore(&storage, 2, &[c2.snapshot], 0..128, false).await.unwrap();
        let gone: Vec<i64> = (0..10)
            .filter(|&i| !left.iter().any(|e| e.operator == "a" && e.key_group == 3 && e.key == key(i)))
            .collect();
        assert_eq!(gone, [2, 3, 4, 5, 6]);
        assert_eq!(left.len(), 40 - 5, "other operators and key groups keep every key");
    }

    #[tokio::test]
    async fn savepoints_are_full_canonical_files_per_operator_whatever_the_backend() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::from_uri("memory://").unwrap();
        let mut b = TaskBackend::open(BackendKind::RocksDb, storage.clone(), me(0), dir.path()).unwrap();
        checkpoint(&mut b, 1, vec![entry("a", 1, b"x", Some(b"1")), entry("b", 2, b"y", Some(b"2"))]).await;
        // The savepoint gets only a change from the operators, and still holds everything.
        let target = CheckpointStorage::from_uri("memory://").unwrap();
        let sp = b.savepoint(2, vec![entry("a", 3, b"z", Some(b"3"))], target.clone()).unwrap().run().await.unwrap();
        assert_eq!(sp.snapshot.backend, "savepoint");
        assert_eq!(sp.snapshot.file_operators, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(sp.snapshot.files[0].path, "a-0.state", "paths are relative to the savepoint");
        // A heap backend restores it, reading from the savepoint's storage.
        let mut h = TaskBackend::open(BackendKind::Heap, storage.clone(), me(0), dir.path()).unwrap();
        let got = h.restore(&target, 2, std::slice::from_ref(&sp.snapshot), 0..128, false).await.unwrap();
        assert_eq!(got.len(), 3);
        // The RocksDB backend went on incrementally: the savepoint's change is in the next checkpoint.
        let c3 = checkpoint(&mut b, 3, vec![]).await;
        let mut r = TaskBackend::open(BackendKind::Heap, storage.clone(), me(0), dir.path()).unwrap();
        assert_eq!(r.restore(&storage, 3, &[c3.snapshot], 0..128, true).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn rocksdb_keeps_operator_state_out_of_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::from_uri("memory://").unwrap();
        let mut b = TaskBackend::open(BackendKind::RocksDb, storage.clone(), me(0), dir.path()).unwrap();
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
        let got = h.restore(&storage, 2, std::slice::from_ref(&c2.snapshot), 0..128, true).await.unwrap();
        assert_eq!(got, vec![entry("a", UNION, b"t3", Some(b"open")), pos(b"3")]);
        // Keyed state goes to the database; the operator state file comes along.
        let c3 = checkpoint(&mut b, 3, vec![entry("a", 7, b"k", Some(b"v"))]).await;
        assert!(c3.snapshot.local_names.iter().any(|n| n.ends_with(".sst")));
        assert!(c3.snapshot.local_names.iter().any(|n| n == OPERATOR_STATE_FILE));
        // A RocksDB backend restores both and goes on from them.
        let mut r = TaskBackend::open(BackendKind::RocksDb, storage.clone(), me(0), dir.path()).unwrap();
        let got = r.restore(&storage, 3, std::slice::from_ref(&c3.snapshot), 0..128, true).await.unwrap();
        assert_eq!(got.len(), 3);
        let c4 = checkpoint(&mut r, 4, vec![pos(b"4")]).await;
        let got = h.restore(&storage, 4, std::slice::from_ref(&c4.snapshot), 0..128, true).await.unwrap();
        assert_eq!(got, vec![entry("a", 7, b"k", Some(b"v")), entry("a", UNION, b"t3", Some(b"open")), pos(b"4")]);
    }

    #[tokio::test]
    async fn operator_state_inside_an_older_database_moves_out_on_restore() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::from_uri("memory://").unwrap();
        let mut b = TaskBackend::open(BackendKind::RocksDb, storage.clone(), me(0), dir.path()).unwrap();
        // Checkpoints written before operator state was kept apart held it in the database.
        let pos = entry("a", NON_KEYED, b"pos", Some(b"9"));
        b.rocks.as_ref().unwrap().db.put(rocks_key(&pos), b"9").unwrap();
        let c1 = checkpoint(&mut b, 1, vec![entry("a", 7, b"k", Some(b"v"))]).await;
        assert_eq!(c1.snapshot.local_names.iter().filter(|n| *n == OPERATOR_STATE_FILE).count(), 0);
        let mut r = TaskBackend::open(BackendKind::RocksDb, storage.clone(), me(0), dir.path()).unwrap();
        let got = r.restore(&storage, 1, std::slice::from_ref(&c1.snapshot), 0..128, true).await.unwrap();
        assert_eq!(got.len(), 2);
        // The position is now operator state; an update of it leaves no stale copy behind.
        let c2 = checkpoint(&mut r, 2, vec![entry("a", NON_KEYED, b"pos", Some(b"10"))]).await;
        let mut h = TaskBackend::open(BackendKind::Heap, storage.clone(), me(0), dir.path()).unwrap();
        let got = h.restore(&storage, 2, std::slice::from_ref(&c2.snapshot), 0..128, true).await.unwrap();
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
        assert_eq!(r.restore(&storage, 1, &[first.snapshot], 0..128, true).await.unwrap(), big);
        assert_eq!(r.restore(&storage, 2, &[second.snapshot], 0..128, true).await.unwrap(), small);
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
        let got = other.restore(&storage, 4, std::slice::from_ref(&up.snapshot), 0..64, false).await.unwrap();
        assert_eq!(got, vec![entry("a", 1, b"x", Some(b"1"))], "non-keyed state stays with its subtask index");
        let mut same = TaskBackend::open(BackendKind::Heap, storage.clone(), me(1), dir.path()).unwrap();
        assert_eq!(same.restore(&storage, 4, &[up.snapshot], 64..128, false).await.unwrap().len(), 2);
    }
}
