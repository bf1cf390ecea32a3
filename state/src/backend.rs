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
//!   the previous checkpoint (puts and deletes). A checkpoint writes those
//!   changes as a *change file* and names, besides it, the newest uploaded
//!   copy of the local RocksDB (the *base*) and the change files of the
//!   checkpoints since that copy. After the checkpoint's files are on their
//!   way, the backend applies the changes to the database and, in the
//!   background, uploads a new base: only its SST files that no earlier
//!   upload holds. Restoring opens the base and replays the change files in
//!   order. The database's work is so kept off the checkpoint's critical
//!   path, at the price of writing each change twice (once as a change
//!   file, once inside an SST) and of a short replay on restore.
//!
//!   Every file of a base and every change file lives under `<job>/shared/`
//!   and is referenced by every checkpoint that names it; the job manager
//!   deletes one when no retained checkpoint names it any more.
//!
//!   When the database holds changes that neither a base nor the change
//!   files have (after a savepoint, after a restore into another layout, or
//!   when a change file could not be written), the next checkpoint applies
//!   its changes and uploads the database itself, as its own base.
//!
//!   State of a subtask rather than of keys (sources' positions, sinks'
//!   transactions) stays out of RocksDB, in memory, and every checkpoint
//!   writes it whole in a small file of its own.
//!
//! Each checkpoint happens in parts: [`TaskBackend::snapshot`] takes the
//! operators' entries (heap: encodes them; RocksDB: encodes the changes);
//! [`Upload::run`] then writes the files; [`TaskBackend::apply`] hands the
//! changes to RocksDB and may start the upload of a new base. All of it runs
//! off the task's thread while the task goes on processing records.

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

/// First bytes of a RocksDB backend's change file.
const CHANGES_MAGIC: &[u8; 8] = b"WEIRCH01";

/// How a local name of a RocksDB snapshot's file ends if the file holds the
/// changes of one checkpoint (`<checkpoint>.changes`).
const CHANGES_SUFFIX: &str = ".changes";

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
    /// A file a checkpoint names depends on another that was not written.
    #[error("the change file {path} of an earlier checkpoint was not written")]
    Unwritten {
        /// The file.
        path: String,
    },
    /// A snapshot came before the changes of the previous one were applied.
    #[error("the changes of checkpoint {checkpoint} were not applied to the local database before the next snapshot")]
    Unapplied {
        /// The checkpoint whose changes are missing.
        checkpoint: u64,
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
    /// The newest uploaded copy of the database. `None` while the database
    /// holds changes that neither it nor [`Rocks::log`] has: the next
    /// checkpoint then uploads the database itself.
    base: Option<Base>,
    /// Change files of the checkpoints after the base's, oldest first.
    log: Vec<Change>,
    /// The checkpoint whose change file is written but whose changes the
    /// database does not have yet ([`TaskBackend::apply`]).
    unapplied: Option<u64>,
    /// No base of a checkpoint before this one may become [`Rocks::base`]:
    /// the database has changes since that no change file holds.
    floor: u64,
    /// Whether a base is being uploaded in the background.
    materializing: bool,
    /// Bytes of bases uploaded in the background since the last
    /// checkpoint: the next checkpoint is the first to name them.
    fresh_bytes: u64,
    /// Whether checkpoints write change files ([`TaskBackend::set_changelog`]).
    changelog: bool,
}

/// An uploaded copy of the database: the checkpoint whose changes it holds
/// last, and its files (local name, uploaded copy).
#[derive(Debug, Clone)]
struct Base {
    checkpoint: u64,
    files: Vec<(String, FileHandle)>,
}

/// The change file of one checkpoint.
#[derive(Debug)]
struct Change {
    local: String,
    handle: FileHandle,
    /// Whether the file was written (`Some(true)`); `None` once known to be.
    written: Option<Written>,
}

/// Whether a change file was written: `None` while its upload runs.
type Written = tokio::sync::watch::Receiver<Option<bool>>;

impl Change {
    /// Whether the file was written or may still be (its upload runs).
    fn usable(&self) -> bool {
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
const OPERATOR_STATE_FILE: &str = "operator.state";

fn is_operator_state(e: &StateEntry) -> bool {
    e.key_group == NON_KEYED || e.key_group == UNION
}

impl Rocks {
    /// Applies operators' changes, then hard-links a RocksDB checkpoint of
    /// the database into `name` under the working directory (`None` with no
    /// keyed state in the database: nothing to link).
    fn apply_and_link(&mut self, entries: &[StateEntry], name: &str) -> Result<Option<PathBuf>, BackendError> {
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
    fn apply(&mut self, entries: &[StateEntry]) -> Result<(), BackendError> {
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
    fn link(&mut self, name: &str) -> Result<Option<PathBuf>, BackendError> {
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
    fn base_files(&self, cp_dir: &FsPath, me: &TaskIdentity) -> Result<Vec<(String, Pending)>, BackendError> {
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
    fn applied(&self) -> Result<(), BackendError> {
        match self.unapplied {
            None => Ok(()),
            Some(checkpoint) => Err(BackendError::Unapplied { checkpoint }),
        }
    }

    /// The database now holds changes no base or change file has.
    fn diverged(&mut self, checkpoint: u64) {
        self.base = None;
        self.log.clear();
        self.floor = self.floor.max(checkpoint);
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
    fn adopt_operator_state(&mut self, entries: &[StateEntry], checkpoint: u64) -> Result<(), BackendError> {
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
        Ok(Uploaded { snapshot, uploaded_bytes, new_shared: Vec::new(), base: None, background: false })
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
    /// Bytes written earlier that this checkpoint is the first to name
    /// (a base uploaded in the background).
    earlier_bytes: u64,
    /// The checkpoint whose base this upload writes, if it writes one.
    base: Option<u64>,
    /// Whether it writes only a base, in the background (no checkpoint
    /// names it yet).
    background: bool,
}

#[derive(Debug)]
enum Pending {
    Bytes {
        name: String,
        bytes: Bytes,
        shared: bool,
    },
    File {
        path: PathBuf,
        name: String,
        shared: bool,
    },
    Reused(FileHandle),
    /// A change file of this checkpoint: whether it was written goes to
    /// the later checkpoints that name it too.
    Changes {
        name: String,
        bytes: Bytes,
        written: tokio::sync::watch::Sender<Option<bool>>,
    },
    /// A change file of an earlier checkpoint, maybe still being written.
    Earlier {
        handle: FileHandle,
        written: Option<Written>,
    },
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
    /// The checkpoint whose base this upload wrote, if it wrote one.
    pub base: Option<u64>,
    /// Whether it wrote only a base, in the background.
    pub background: bool,
}

impl Uploaded {
    /// Whether the backend must hear of this upload
    /// ([`TaskBackend::uploaded`]): it wrote files to reuse or a base.
    pub fn concerns_backend(&self) -> bool {
        !self.new_shared.is_empty() || self.base.is_some()
    }
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
                    // An empty database needs no files.
                    base: Some(Base { checkpoint: 0, files: Vec::new() }),
                    log: Vec::new(),
                    unapplied: None,
                    floor: 0,
                    materializing: false,
                    fresh_bytes: 0,
                    changelog: true,
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
    ///
    /// A RocksDB backend then wants the same entries in
    /// [`TaskBackend::apply`] before its next snapshot.
    pub fn snapshot(&mut self, checkpoint: u64, entries: &[StateEntry]) -> Result<Upload, BackendError> {
        let mut upload = Upload {
            storage: self.storage.clone(),
            me: self.me.clone(),
            checkpoint,
            kind: self.kind,
            files: Vec::new(),
            cleanup: None,
            spare: None,
            earlier_bytes: 0,
            base: None,
            background: false,
        };
        let me = &self.me;
        match &mut self.rocks {
            None => {
                if !entries.is_empty() {
                    let name = format!("v{}-{}.state", me.vertex, me.subtask);
                    let mut buf = self.spare.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
                    buf.clear();
                    encode_entries_into(entries, &mut buf);
                    let bytes = buf.freeze();
                    upload.spare = Some(self.spare.clone());
                    upload.files.push((name.clone(), Pending::Bytes { name, bytes, shared: false }));
                }
            }
            Some(r) => {
                r.applied()?;
                entries.iter().filter(|e| is_operator_state(e)).for_each(|e| r.apply_operator_state(e));
                let base = r.base.as_ref().filter(|_| r.changelog && r.log.iter().all(Change::usable));
                if let Some(base) = base {
                    // The base, the change files since, and this checkpoint's.
                    for (local, h) in &base.files {
                        upload.files.push((local.clone(), Pending::Reused(h.clone())));
                    }
                    for c in &r.log {
                        let pending = Pending::Earlier { handle: c.handle.clone(), written: c.written.clone() };
                        upload.files.push((c.local.clone(), pending));
                    }
                    upload.earlier_bytes = std::mem::take(&mut r.fresh_bytes);
                    if entries.iter().any(|e| !is_operator_state(e)) {
                        let local = format!("{checkpoint}{CHANGES_SUFFIX}");
                        let name = format!("v{}-{}-{}-{local}", me.vertex, me.subtask, uuid_like());
                        let bytes = encode_changes(entries);
                        let handle = self.storage.shared_handle(&me.job, &name, &bytes);
                        let (tx, rx) = tokio::sync::watch::channel(None);
                        upload.files.push((local.clone(), Pending::Changes { name, bytes, written: tx }));
                        r.log.push(Change { local, handle, written: Some(rx) });
                        r.unapplied = Some(checkpoint);
                    }
                } else {
                    // The database itself, with this checkpoint's changes.
                    r.apply(entries)?;
                    r.diverged(checkpoint);
                    if let Some(cp_dir) = r.link(&format!("chk-{checkpoint}"))? {
                        upload.files = r.base_files(&cp_dir, me)?;
                        upload.cleanup = Some(cp_dir);
                    }
                    upload.base = Some(checkpoint);
                }
                if let Some(bytes) = r.operator_state_file() {
                    let name = format!("v{}-{}-{OPERATOR_STATE_FILE}", me.vertex, me.subtask);
                    upload.files.push((OPERATOR_STATE_FILE.to_string(), Pending::Bytes { name, bytes, shared: false }));
                }
            }
        }
        Ok(upload)
    }

    /// The part of checkpoint `checkpoint` after its files are on their
    /// way: a RocksDB backend applies the changes its snapshot wrote as a
    /// change file (the same `entries`) to the database, and returns the
    /// upload of a new base unless one is under way. Report the upload's
    /// outcome with [`TaskBackend::uploaded`] or
    /// [`TaskBackend::base_failed`].
    pub fn apply(&mut self, checkpoint: u64, entries: &[StateEntry]) -> Result<Option<Upload>, BackendError> {
        let me = &self.me;
        let Some(r) = self.rocks.as_mut().filter(|r| r.unapplied == Some(checkpoint)) else { return Ok(None) };
        r.unapplied = None;
        r.apply(entries)?;
        if r.materializing {
            return Ok(None);
        }
        let Some(cp_dir) = r.link(&format!("base-{checkpoint}"))? else { return Ok(None) };
        r.materializing = true;
        Ok(Some(Upload {
            storage: self.storage.clone(),
            me: me.clone(),
            checkpoint,
            kind: self.kind,
            files: r.base_files(&cp_dir, me)?,
            cleanup: Some(cp_dir),
            spare: None,
            earlier_bytes: 0,
            base: Some(checkpoint),
            background: true,
        }))
    }

    /// Whether a RocksDB backend's checkpoints write change files (the
    /// default) or apply the changes and upload the database's new files
    /// before they are acknowledged: fewer bytes uploaded (the SSTs are
    /// compressed, the change files are not), longer checkpoints.
    pub fn set_changelog(&mut self, on: bool) {
        if let Some(r) = &mut self.rocks {
            r.changelog = on;
        }
    }

    /// Whether [`TaskBackend::apply`] wants the entries of the last snapshot.
    pub fn applies_later(&self) -> bool {
        self.rocks.as_ref().is_some_and(|r| r.unapplied.is_some())
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
                r.applied()?;
                let dir = r.apply_and_link(&entries, &format!("sp-{checkpoint}"))?;
                // No change file holds these changes.
                r.diverged(checkpoint);
                SavepointSource::RocksDb(dir, r.operator_state.values().cloned().collect())
            }
        };
        Ok(SavepointUpload { target, me: self.me.clone(), source })
    }

    /// Records what an upload of this backend produced: RocksDB reuses its
    /// SST files in later uploads, and a base it wrote becomes the one later
    /// checkpoints name, unless a newer one already is. Returns the files of
    /// a base written in the background that no checkpoint will name (it
    /// came too late): the caller deletes them.
    pub fn uploaded(&mut self, done: &Uploaded) -> Vec<FileHandle> {
        let Some(r) = &mut self.rocks else { return Vec::new() };
        if done.background {
            r.materializing = false;
        }
        let accepted = done.base.is_some_and(|checkpoint| {
            checkpoint >= r.floor && r.base.as_ref().is_none_or(|b| b.checkpoint < checkpoint)
        });
        if done.background && !accepted {
            return done.new_shared.iter().map(|(_, h)| h.clone()).collect();
        }
        r.uploaded.extend(done.new_shared.iter().filter(|(n, _)| n.ends_with(".sst")).cloned());
        let Some(checkpoint) = done.base.filter(|_| accepted) else { return Vec::new() };
        let files = done
            .snapshot
            .local_names
            .iter()
            .zip(&done.snapshot.files)
            .filter(|(n, _)| *n != OPERATOR_STATE_FILE)
            .map(|(n, f)| (n.clone(), f.clone()))
            .collect();
        r.base = Some(Base { checkpoint, files });
        // The base holds the changes up to its checkpoint.
        r.log.retain(|c| change_checkpoint(&c.local).is_some_and(|id| id > checkpoint));
        if done.background {
            r.fresh_bytes += done.uploaded_bytes;
        }
        Vec::new()
    }

    /// The storage checkpoints of this backend go to.
    pub fn storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    /// A base uploaded in the background was not written: the change files
    /// go on until the next one is.
    pub fn base_failed(&mut self) {
        if let Some(r) = &mut self.rocks {
            r.materializing = false;
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
                Pending::Changes { name, bytes, written } => {
                    uploaded_bytes += bytes.len() as u64;
                    let h = self.write(&name, bytes, true).await;
                    // Dropping `written` unsent (an error above) tells later
                    // checkpoints that the file is missing.
                    let _ = written.send(Some(h.is_ok()));
                    h?
                }
                Pending::Earlier { handle, written: None } => handle,
                Pending::Earlier { handle, written: Some(mut written) } => {
                    // A later checkpoint must not complete naming a file that is not there.
                    let ok = written.wait_for(Option::is_some).await.ok().and_then(|w| *w).unwrap_or(false);
                    if !ok {
                        return Err(BackendError::Unwritten { path: handle.path });
                    }
                    handle
                }
            };
            snapshot.files.push(handle);
            snapshot.local_names.push(local);
        }
        if let Some(dir) = self.cleanup.take() {
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
        uploaded_bytes += self.earlier_bytes;
        Ok(Uploaded { snapshot, uploaded_bytes, new_shared, base: self.base, background: self.background })
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
        put_entry(b, e, e.value.as_deref().unwrap_or_default());
    }
}

/// Appends `e` with `value` as its value bytes (the layout
/// [`decode_entry`] reads).
fn put_entry(b: &mut BytesMut, e: &StateEntry, value: &[u8]) {
    b.put_u16(e.operator.len() as u16);
    b.put_slice(e.operator.as_bytes());
    b.put_u16(e.state.len() as u16);
    b.put_slice(e.state.as_bytes());
    b.put_u32(e.key_group);
    b.put_u32(e.key.len() as u32);
    b.put_slice(&e.key);
    b.put_u32(value.len() as u32);
    b.put_slice(value);
}

/// Encodes the changes of keyed state among `entries` (operator state is
/// skipped) as a change file: puts, deletions and range deletions, in order.
fn encode_changes(entries: &[StateEntry]) -> Bytes {
    let keyed = || entries.iter().filter(|e| !is_operator_state(e));
    let size: usize = keyed()
        .map(|e| {
            let value = e.value.as_ref().or(e.delete_to.as_ref()).map_or(0, Vec::len);
            17 + e.operator.len() + e.state.len() + e.key.len() + value
        })
        .sum();
    let mut b = BytesMut::with_capacity(size + 16);
    b.put_slice(CHANGES_MAGIC);
    b.put_u64(keyed().count() as u64);
    for e in keyed() {
        let (kind, value) = match (&e.value, &e.delete_to) {
            (Some(v), _) => (0u8, v.as_slice()),
            (None, None) => (1, &[][..]),
            (None, Some(to)) => (2, to.as_slice()),
        };
        b.put_u8(kind);
        put_entry(&mut b, e, value);
    }
    b.freeze()
}

/// Decodes a change file.
fn decode_changes(mut b: Bytes) -> Result<Vec<StateEntry>, String> {
    let magic = take(&mut b, 8, "the header")?;
    if magic.as_ref() != CHANGES_MAGIC {
        return Err("not a change file (bad magic)".into());
    }
    let n = take(&mut b, 8, "the header")?.get_u64();
    let mut out = Vec::with_capacity(n.min(1 << 20) as usize);
    for _ in 0..n {
        let kind = take(&mut b, 1, "a change's kind")?.get_u8();
        let mut e = decode_entry(&mut b)?;
        match kind {
            0 => {}
            1 => e.value = None,
            2 => e.delete_to = e.value.take(),
            k => return Err(format!("unknown change kind {k}")),
        }
        out.push(e);
    }
    if b.has_remaining() {
        return Err(format!("{} bytes after the last change", b.remaining()));
    }
    Ok(out)
}

/// The checkpoint a change file's local name is of.
fn change_checkpoint(local: &str) -> Option<u64> {
    local.strip_suffix(CHANGES_SUFFIX)?.parse().ok()
}

fn take(b: &mut Bytes, n: usize, what: &str) -> Result<Bytes, String> {
    if b.remaining() < n {
        return Err(format!("truncated in {what}"));
    }
    Ok(b.split_to(n))
}

/// An encoded entry (its value bytes as `value`).
fn decode_entry(b: &mut Bytes) -> Result<StateEntry, String> {
    let text = |b: Bytes, what: &str| String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not UTF-8"));
    let len = take(b, 2, "an operator name")?.get_u16() as usize;
    let operator = text(take(b, len, "an operator name")?, "an operator name")?;
    let len = take(b, 2, "a state name")?.get_u16() as usize;
    let state = text(take(b, len, "a state name")?, "a state name")?;
    let key_group = take(b, 4, "a key group")?.get_u32();
    let len = take(b, 4, "a key")?.get_u32() as usize;
    let key = take(b, len, "a key")?.to_vec();
    let len = take(b, 4, "a value")?.get_u32() as usize;
    let value = Some(take(b, len, "a value")?.to_vec());
    Ok(StateEntry { operator, state, key_group, key, value, delete_to: None })
}

/// Decodes a heap snapshot file.
pub fn decode_entries(mut b: Bytes) -> Result<Vec<StateEntry>, String> {
    let magic = take(&mut b, 8, "the header")?;
    if magic.as_ref() != HEAP_MAGIC {
        return Err("not a state file (bad magic)".into());
    }
    let n = take(&mut b, 8, "the header")?.get_u64();
    let mut out = Vec::with_capacity(n.min(1 << 20) as usize);
    for _ in 0..n {
        out.push(decode_entry(&mut b)?);
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

    /// Checkpoint `id`, then its changes applied and a new base uploaded
    /// (as the task manager does).
    async fn checkpoint(b: &mut TaskBackend, id: u64, entries: Vec<StateEntry>) -> Uploaded {
        let up = unbased(b, id, &entries).await;
        if let Some(base) = b.apply(id, &entries).unwrap() {
            let done = base.run().await.unwrap();
            assert!(b.uploaded(&done).is_empty());
        }
        up
    }

    /// Checkpoint `id` with its changes applied but no new base uploaded.
    async fn unbased(b: &mut TaskBackend, id: u64, entries: &[StateEntry]) -> Uploaded {
        let up = b.snapshot(id, entries).unwrap().run().await.unwrap();
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
        let mut b = TaskBackend::open(BackendKind::RocksDb, storage.clone(), me(0), dir.path()).unwrap();
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
        let first: Vec<StateEntry> =
            (0..1000u32).map(|i| entry("a", i % 128, &i.to_be_bytes(), Some(&noise()))).collect();
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
        let mut r = TaskBackend::open(BackendKind::RocksDb, storage.clone(), me(0), dir.path()).unwrap();
        let all = r.restore(&storage, 3, std::slice::from_ref(&c3.snapshot), 0..128, true).await.unwrap();
        assert_eq!(all.len(), 998);
        let c4 = checkpoint(&mut r, 4, vec![]).await;
        for f in &sst1 {
            assert!(c4.snapshot.files.contains(f), "a restored backend keeps referencing the uploaded files");
        }
        assert!(names(&c4).contains(&"3.changes"), "and the change files since its base");
        // A heap backend reads the RocksDB snapshot too (backend-independent restore).
        let mut h = TaskBackend::open(BackendKind::Heap, storage.clone(), me(0), dir.path()).unwrap();
        let part = h.restore(&storage, 3, &[c3.snapshot], 0..64, false).await.unwrap();
        assert!(part.iter().all(|e| e.key_group < 64));
        assert_eq!(part.len(), (0..1000u32).filter(|i| i % 128 < 64 && *i != 5 && *i != 6).count());
    }

    #[tokio::test]
    async fn change_files_chain_until_a_base_is_uploaded_and_a_lost_one_makes_the_next_checkpoint_whole() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::from_uri("memory://").unwrap();
        let mut b = TaskBackend::open(BackendKind::RocksDb, storage.clone(), me(0), dir.path()).unwrap();
        let key = |i: i64| i.to_be_bytes().to_vec();
        let put = |i: i64, v: &[u8]| entry("a", 3, &key(i), Some(v));
        let restored = |snap: &TaskSnapshot, id: u64| {
            let (storage, dir, snap) = (storage.clone(), dir.path().to_path_buf(), snap.clone());
            async move {
                let mut r = TaskBackend::open(BackendKind::RocksDb, storage.clone(), me(0), &dir).unwrap();
                r.restore(&storage, id, &[snap], 0..128, true).await.unwrap()
            }
        };
        let changes1: Vec<StateEntry> = (0..10).map(|i| put(i, b"1")).collect();
        let c1 = unbased(&mut b, 1, &changes1).await;
        assert_eq!(names(&c1), ["1.changes"]);
        // While a base is under way, the change files chain.
        let pending = b.apply(1, &changes1).unwrap().expect("a base of checkpoint 1 is due");
        let changes2 = vec![put(1, b"2"), entry("a", 3, &key(2), None)];
        unbased(&mut b, 2, &changes2).await;
        assert!(b.apply(2, &changes2).unwrap().is_none(), "one base at a time");
        let changes3 = vec![StateEntry { delete_to: Some(key(6)), ..entry("a", 3, &key(4), None) }, put(11, b"3")];
        let c3 = unbased(&mut b, 3, &changes3).await;
        assert!(b.apply(3, &changes3).unwrap().is_none(), "one base at a time");
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
        let upload5 = b.snapshot(5, &lost).unwrap();
        drop(b.apply(5, &lost).unwrap().expect("a base of checkpoint 5 is due"));
        b.base_failed();
        let c5 = b.snapshot(55, &[]).unwrap();
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
        let mut b = TaskBackend::open(BackendKind::RocksDb, storage.clone(), me(0), dir.path()).unwrap();
        b.set_changelog(false);
        let c1 = checkpoint(&mut b, 1, vec![entry("a", 1, b"k", Some(b"1")), entry("a", 2, b"j", Some(b"1"))]).await;
        assert!(!b.applies_later(), "the changes are in the database already");
        let c2 = checkpoint(&mut b, 2, vec![entry("a", 1, b"k", None)]).await;
        for c in [&c1, &c2] {
            assert!(names(c).iter().any(|n| n.ends_with(".sst")) && names(c).iter().all(|n| !n.ends_with(".changes")));
        }
        let sst1: Vec<_> = c1.snapshot.files.iter().filter(|f| f.path.ends_with(".sst")).collect();
        assert!(sst1.iter().all(|f| c2.snapshot.files.contains(f)), "unchanged SSTs are named again");
        let mut r = TaskBackend::open(BackendKind::RocksDb, storage.clone(), me(0), dir.path()).unwrap();
        let got = r.restore(&storage, 2, &[c2.snapshot], 0..128, true).await.unwrap();
        assert_eq!(got, vec![entry("a", 2, b"j", Some(b"1"))]);
    }

    #[tokio::test]
    async fn a_base_overtaken_by_a_savepoint_hands_back_its_files_for_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::from_uri("memory://").unwrap();
        let mut b = TaskBackend::open(BackendKind::RocksDb, storage.clone(), me(0), dir.path()).unwrap();
        let changes = vec![entry("a", 1, b"k", Some(b"1"))];
        unbased(&mut b, 1, &changes).await;
        let late = b.apply(1, &changes).unwrap().expect("a base of checkpoint 1 is due");
        // A savepoint applies changes no change file holds: the base of 1 would miss them.
        let target = CheckpointStorage::from_uri("memory://").unwrap();
        b.savepoint(2, vec![entry("a", 1, b"j", Some(b"2"))], target).unwrap().run().await.unwrap();
        let done = late.run().await.unwrap();
        let orphans = b.uploaded(&done);
        assert!(!orphans.is_empty() && orphans.iter().all(CheckpointStorage::is_shared));
        storage.delete_shared(&orphans).await.unwrap();
        // The next checkpoint holds the whole database, savepoint's change included.
        let c3 = checkpoint(&mut b, 3, vec![]).await;
        assert!(names(&c3).iter().all(|n| !n.ends_with(".changes")));
        let mut r = TaskBackend::open(BackendKind::RocksDb, storage.clone(), me(0), dir.path()).unwrap();
        assert_eq!(r.restore(&storage, 3, &[c3.snapshot], 0..128, true).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_snapshot_before_the_previous_changes_are_applied_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::from_uri("memory://").unwrap();
        let mut b = TaskBackend::open(BackendKind::RocksDb, storage.clone(), me(0), dir.path()).unwrap();
        let changes = vec![entry("a", 1, b"k", Some(b"v"))];
        unbased(&mut b, 1, &changes).await;
        assert!(b.applies_later());
        assert!(matches!(b.snapshot(2, &[]), Err(BackendError::Unapplied { checkpoint: 1 })));
        assert!(matches!(b.savepoint(2, vec![], storage.clone()), Err(BackendError::Unapplied { checkpoint: 1 })));
        b.apply(1, &changes).unwrap();
        assert!(!b.applies_later());
        assert!(b.snapshot(2, &[]).is_ok());
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
        assert!(c3.snapshot.local_names.iter().any(|n| n.ends_with(".sst") || n.ends_with(CHANGES_SUFFIX)));
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
        let r = b.rocks.as_mut().unwrap();
        r.db.put(rocks_key(&pos), b"9").unwrap();
        r.diverged(0);
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
