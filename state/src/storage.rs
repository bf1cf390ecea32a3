//! Checkpoints of all jobs under one root of an object store: their files,
//! shared files, metadata, and the small objects of the job manager's
//! records.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use weir_types::{CheckpointId, JobId};

use crate::{checked_body, crc32, with_checksum, CheckpointMetadata, FileHandle, StorageError, METADATA_VERSION};

const METADATA: &str = "_metadata";
const SHARED: &str = "shared";

trait JoinPath {
    fn join_path(self, rel: &str) -> Path;
}

impl JoinPath for Path {
    fn join_path(self, rel: &str) -> Path {
        rel.split('/').filter(|p| !p.is_empty()).fold(self, |p, part| p.join(part))
    }
}

/// Checkpoints of all jobs under one root of an object store.
#[derive(Clone)]
pub struct CheckpointStorage {
    store: Arc<dyn ObjectStore>,
    root: Path,
    uri: String,
}

impl fmt::Debug for CheckpointStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointStorage").field("uri", &self.uri).finish()
    }
}

/// What [`CheckpointStorage::sweep`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Files deleted.
    pub files: usize,
}

/// Deletes what writers on the local file system cut short under `dir`:
/// `object_store` writes a file as `<name>#<n>` and renames it when done,
/// and its listings skip such files, so nothing else would find them.
/// Directories left empty go too, up to `root`. Returns how many files.
fn delete_staged(root: &std::path::Path, dir: &std::path::Path) -> usize {
    let staged =
        |name: &str| name.rsplit_once('#').is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let mut deleted = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if staged(&e.file_name().to_string_lossy()) && std::fs::remove_file(&path).is_ok() {
                deleted += 1;
                let mut parent = path.parent();
                while let Some(p) = parent.filter(|p| *p != root && std::fs::remove_dir(p).is_ok()) {
                    parent = p.parent();
                }
            }
        }
    }
    deleted
}

impl CheckpointStorage {
    /// Storage in `store` under `root` (`uri` names it in messages).
    pub fn new(store: Arc<dyn ObjectStore>, root: &str, uri: &str) -> Self {
        Self { store, root: Path::from(root), uri: uri.to_string() }
    }

    /// The URI this storage was opened with.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn dir(&self, job: &JobId, checkpoint: CheckpointId) -> Path {
        self.root.clone().join(job.as_str()).join(format!("chk-{checkpoint}"))
    }

    fn corrupt(job: &JobId, checkpoint: CheckpointId, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt { job: job.clone(), checkpoint, reason: reason.into() }
    }

    /// Writes a state file of checkpoint `checkpoint`; returns its handle for the metadata.
    pub async fn write_file(
        &self,
        job: &JobId,
        checkpoint: CheckpointId,
        name: &str,
        bytes: Bytes,
    ) -> Result<FileHandle, StorageError> {
        let path = self.dir(job, checkpoint).join(name);
        let handle = FileHandle { path: path.to_string(), size: bytes.len() as u64, crc32: crc32(&bytes) };
        self.store.put(&path, PutPayload::from_bytes(bytes)).await?;
        Ok(handle)
    }

    /// Writes a file shared between checkpoints (RocksDB's files, change
    /// files), under `<job>/shared/`.
    pub async fn write_shared_file(&self, job: &JobId, name: &str, bytes: Bytes) -> Result<FileHandle, StorageError> {
        let handle = self.shared_handle(job, name, &bytes);
        self.store.put(&Path::from(handle.path.as_str()), PutPayload::from_bytes(bytes)).await?;
        Ok(handle)
    }

    /// The handle [`CheckpointStorage::write_shared_file`] returns for these
    /// bytes, known before they are written: a later checkpoint can name the
    /// file while it is still being written.
    pub fn shared_handle(&self, job: &JobId, name: &str, bytes: &[u8]) -> FileHandle {
        let path = self.root.clone().join(job.as_str()).join(SHARED).join(name);
        FileHandle { path: path.to_string(), size: bytes.len() as u64, crc32: crc32(bytes) }
    }

    /// Whether a file lives in the shared area (its lifetime is decided by reference counting).
    pub fn is_shared(handle: &FileHandle) -> bool {
        handle.path.split('/').rev().nth(1) == Some(SHARED)
    }

    /// Deletes shared files that no retained checkpoint references any more.
    pub async fn delete_shared(&self, files: &[FileHandle]) -> Result<(), StorageError> {
        for f in files.iter().filter(|f| Self::is_shared(f)) {
            match self.store.delete(&Path::from(f.path.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Reads a file named by a metadata, checking its size and checksum.
    pub async fn read_file(
        &self,
        job: &JobId,
        checkpoint: CheckpointId,
        handle: &FileHandle,
    ) -> Result<Bytes, StorageError> {
        let bytes = match self.store.get(&Path::from(handle.path.as_str())).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Self::corrupt(job, checkpoint, format!("file {} is missing", handle.path)))
            }
            Err(e) => return Err(e.into()),
        };
        if bytes.len() as u64 != handle.size {
            return Err(Self::corrupt(
                job,
                checkpoint,
                format!("file {} has {} bytes, the metadata says {}", handle.path, bytes.len(), handle.size),
            ));
        }
        if crc32(&bytes) != handle.crc32 {
            return Err(Self::corrupt(job, checkpoint, format!("file {} fails its checksum", handle.path)));
        }
        Ok(bytes)
    }

    /// Writes a file at `name` relative to the root (savepoints name their
    /// files relative to their own directory, so that they can be moved).
    pub async fn write_relative(&self, name: &str, bytes: Bytes) -> Result<FileHandle, StorageError> {
        let handle = FileHandle { path: name.to_string(), size: bytes.len() as u64, crc32: crc32(&bytes) };
        self.store.put(&self.root.clone().join_path(name), PutPayload::from_bytes(bytes)).await?;
        Ok(handle)
    }

    /// Reads a file written by [`CheckpointStorage::write_relative`],
    /// checking its size and checksum; `what` names the snapshot in errors.
    pub async fn read_relative(&self, what: &str, handle: &FileHandle) -> Result<Bytes, StorageError> {
        let unusable = |reason: String| StorageError::Unusable { what: what.to_string(), reason };
        let bytes = match self.store.get(&self.root.clone().join_path(&handle.path)).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(unusable(format!("file {} is missing", handle.path)))
            }
            Err(e) => return Err(e.into()),
        };
        if bytes.len() as u64 != handle.size {
            return Err(unusable(format!(
                "file {} has {} bytes, the metadata says {}",
                handle.path,
                bytes.len(),
                handle.size
            )));
        }
        if crc32(&bytes) != handle.crc32 {
            return Err(unusable(format!("file {} fails its checksum", handle.path)));
        }
        Ok(bytes)
    }

    /// Makes a checkpoint complete by writing its metadata (last).
    pub async fn complete(&self, meta: &CheckpointMetadata) -> Result<(), StorageError> {
        let body = with_checksum(meta);
        let path = self.dir(&meta.job_id, meta.checkpoint_id).join(METADATA);
        self.store.put(&path, PutPayload::from(body)).await?;
        Ok(())
    }

    /// Loads a checkpoint's metadata, verifying it and every file it names.
    pub async fn load(&self, job: &JobId, checkpoint: CheckpointId) -> Result<CheckpointMetadata, StorageError> {
        let path = self.dir(job, checkpoint).join(METADATA);
        let raw = match self.store.get(&path).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Self::corrupt(job, checkpoint, "it has no metadata"))
            }
            Err(e) => return Err(e.into()),
        };
        let body = checked_body(&raw).map_err(|reason| Self::corrupt(job, checkpoint, reason))?;
        let meta: CheckpointMetadata = serde_json::from_str(body)
            .map_err(|e| Self::corrupt(job, checkpoint, format!("its metadata does not parse: {e}")))?;
        if meta.version > METADATA_VERSION {
            return Err(Self::corrupt(
                job,
                checkpoint,
                format!("metadata version {} is newer than this build understands ({METADATA_VERSION})", meta.version),
            ));
        }
        if meta.job_id != *job || meta.checkpoint_id != checkpoint {
            return Err(Self::corrupt(job, checkpoint, "its metadata belongs to another checkpoint"));
        }
        for f in meta.files() {
            self.read_file(job, checkpoint, f).await?;
        }
        Ok(meta)
    }

    /// Splits the URI of one checkpoint's directory,
    /// `<storage root>/<job id>/chk-<id>`, into the storage root's URI, the
    /// job id and the checkpoint id (`None`: not such a URI).
    pub fn split_checkpoint_uri(uri: &str) -> Option<(String, JobId, CheckpointId)> {
        let uri = uri.trim_end_matches('/');
        let (rest, dir) = uri.rsplit_once('/')?;
        let id: u64 = dir.strip_prefix("chk-")?.parse().ok()?;
        let (root, job) = rest.rsplit_once('/')?;
        if job.is_empty() || root.ends_with(':') || root.ends_with(":/") {
            return None;
        }
        Some((root.to_string(), JobId::new(job), CheckpointId(id)))
    }

    /// Ids of the checkpoints of `job` that have metadata, oldest first.
    pub async fn checkpoints(&self, job: &JobId) -> Result<Vec<CheckpointId>, StorageError> {
        let prefix = self.root.clone().join(job.as_str());
        let listing = self.store.list_with_delimiter(Some(&prefix)).await?;
        let mut ids: Vec<CheckpointId> = Vec::new();
        for dir in listing.common_prefixes {
            let Some(id) = dir.filename().and_then(|n| n.strip_prefix("chk-")).and_then(|n| n.parse().ok()) else {
                continue;
            };
            match self.store.head(&dir.clone().join(METADATA)).await {
                Ok(_) => ids.push(CheckpointId(id)),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// The newest checkpoint of `job` that loads and verifies; newer ones
    /// that do not are logged with the reason and skipped.
    pub async fn latest_valid(&self, job: &JobId) -> Result<Option<CheckpointMetadata>, StorageError> {
        for id in self.checkpoints(job).await?.into_iter().rev() {
            match self.load(job, id).await {
                Ok(meta) => return Ok(Some(meta)),
                Err(e @ StorageError::Corrupt { .. }) => {
                    tracing::warn!(job_id = %job, checkpoint = %id, error = %e, "skipping an unusable checkpoint");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Deletes every file of a checkpoint (complete or not).
    pub async fn discard(&self, job: &JobId, checkpoint: CheckpointId) -> Result<(), StorageError> {
        let dir = self.dir(job, checkpoint);
        let paths: Vec<Path> = self.store.list(Some(&dir)).map_ok(|m| m.location).try_collect().await?;
        // The metadata goes first, so that a partly deleted checkpoint is never taken for complete.
        let (meta, rest): (Vec<Path>, Vec<Path>) = paths.into_iter().partition(|p| p.filename() == Some(METADATA));
        for p in meta.into_iter().chain(rest) {
            match self.store.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Deletes the files of `job` that no retained checkpoint needs: every
    /// file of a checkpoint without metadata (failed, aborted, or cut short
    /// by a crash), every file of a complete checkpoint older than the
    /// `keep` newest readable ones (subsumed, but a crash came before it was
    /// deleted, or a new job manager never knew it), and every shared file
    /// that no kept checkpoint names. Kept checkpoints stay whole, damaged
    /// ones newer than those included; if a kept one's metadata cannot be
    /// read, shared files are left alone. Call it only while none of the
    /// job's checkpoints is being written: the job manager sweeps before it
    /// deploys a restarted job and after a job ended.
    pub async fn sweep(&self, job: &JobId, keep: usize) -> Result<Swept, StorageError> {
        let prefix = self.root.clone().join(job.as_str());
        let all: Vec<Path> = self.store.list(Some(&prefix)).map_ok(|m| m.location).try_collect().await?;
        // Each object as (its first part under the job: `chk-<n>` or `shared`, its path).
        let parts: Vec<(String, Path)> = all
            .into_iter()
            .filter_map(|p| {
                let first = p.prefix_match(&prefix)?.next()?.as_ref().to_string();
                Some((first, p))
            })
            .collect();
        let mut complete: Vec<(u64, &str)> = parts
            .iter()
            .filter(|(_, p)| p.filename() == Some(METADATA))
            .filter_map(|(dir, _)| Some((dir.strip_prefix("chk-")?.parse().ok()?, dir.as_str())))
            .collect();
        complete.sort_unstable_by(|a, b| b.cmp(a));
        // Newest first: kept until `keep` of them were read.
        let (mut kept, mut named, mut readable) = (std::collections::BTreeSet::new(), HashSet::new(), 0);
        let mut all_read = true;
        for (_, dir) in complete {
            if readable >= keep.max(1) {
                break;
            }
            kept.insert(dir);
            let meta = self.store.get(&prefix.clone().join(dir).join(METADATA)).await?.bytes().await?;
            let parsed = checked_body(&meta).ok().and_then(|b| serde_json::from_str::<CheckpointMetadata>(b).ok());
            match parsed {
                Some(m) => {
                    named.extend(m.files().map(|f| f.path.clone()));
                    readable += 1;
                }
                None => all_read = false,
            }
        }
        let garbage: Vec<&Path> = parts
            .iter()
            .filter(|(dir, path)| {
                if dir == SHARED {
                    all_read && !named.contains(path.as_ref())
                } else {
                    dir.starts_with("chk-") && !kept.contains(dir.as_str())
                }
            })
            .map(|(_, path)| path)
            .collect();
        // Metadata first, so that a checkpoint never looks complete with files missing.
        let (meta, rest): (Vec<&Path>, Vec<&Path>) = garbage.into_iter().partition(|p| p.filename() == Some(METADATA));
        let mut swept = Swept::default();
        for path in meta.into_iter().chain(rest) {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => swept.files += 1,
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(dir) = self.uri.strip_prefix("file://") {
            let (root, job) = (std::path::PathBuf::from(dir), job.as_str().to_string());
            swept.files +=
                tokio::task::spawn_blocking(move || delete_staged(&root, &root.join(job))).await.map_err(|e| {
                    StorageError::Store(object_store::Error::Generic { store: "file", source: Box::new(e) })
                })?;
        }
        Ok(swept)
    }

    /// Writes a small object under the root (job manager records).
    pub async fn put_object(&self, path: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.store.put(&self.root.clone().join_path(path), PutPayload::from_bytes(bytes)).await?;
        Ok(())
    }

    /// Reads an object written by [`CheckpointStorage::put_object`] (`None` if absent).
    pub async fn get_object(&self, path: &str) -> Result<Option<Bytes>, StorageError> {
        match self.store.get(&self.root.clone().join_path(path)).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an object (absent is fine).
    pub async fn delete_object(&self, path: &str) -> Result<(), StorageError> {
        match self.store.delete(&self.root.clone().join_path(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Names of the objects directly under `dir` (relative to the root).
    pub async fn list_objects(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        let prefix = self.root.clone().join_path(dir);
        let listing = self.store.list_with_delimiter(Some(&prefix)).await?;
        Ok(listing.objects.into_iter().filter_map(|o| o.location.filename().map(str::to_string)).collect())
    }

    /// The underlying store (for tests that damage checkpoints on purpose).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskSnapshot;

    async fn names(s: &CheckpointStorage, job: &JobId) -> Vec<String> {
        let prefix = Path::from(job.as_str());
        let mut all: Vec<String> = s
            .store
            .list(Some(&prefix))
            .map_ok(|m| {
                m.location.prefix_match(&prefix).unwrap().map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/")
            })
            .try_collect()
            .await
            .unwrap();
        all.sort();
        all
    }

    #[tokio::test]
    async fn a_sweep_keeps_complete_checkpoints_and_what_they_name() {
        let s = CheckpointStorage::from_uri("memory://").unwrap();
        let job = JobId::new("j");
        let shared = s.write_shared_file(&job, "a.sst", Bytes::from_static(b"a")).await.unwrap();
        s.write_shared_file(&job, "orphan.sst", Bytes::from_static(b"o")).await.unwrap();
        let own = s.write_file(&job, CheckpointId(1), "v0-0.state", Bytes::from_static(b"s")).await.unwrap();
        let meta = CheckpointMetadata {
            version: METADATA_VERSION,
            job_id: job.clone(),
            checkpoint_id: CheckpointId(1),
            timestamp_ms: 0,
            tasks: vec![TaskSnapshot { files: vec![shared, own], ..Default::default() }],
            max_parallelism: 0,
            finished: Vec::new(),
        };
        s.complete(&meta).await.unwrap();
        // Checkpoint 2 never completed; another job's files are not this job's business.
        s.write_file(&job, CheckpointId(2), "v0-0.state", Bytes::from_static(b"t")).await.unwrap();
        s.write_shared_file(&JobId::new("k"), "b.sst", Bytes::from_static(b"b")).await.unwrap();

        assert_eq!(s.sweep(&job, 1).await.unwrap(), Swept { files: 2 });
        assert_eq!(names(&s, &job).await, ["chk-1/_metadata", "chk-1/v0-0.state", "shared/a.sst"]);
        assert_eq!(names(&s, &JobId::new("k")).await, ["shared/b.sst"]);
        s.load(&job, CheckpointId(1)).await.expect("the kept checkpoint is whole");
        assert_eq!(s.sweep(&job, 1).await.unwrap(), Swept { files: 0 }, "nothing left to sweep");

        // Unreadable metadata: shared files might be named by it, so they stay.
        s.write_shared_file(&job, "maybe.sst", Bytes::from_static(b"m")).await.unwrap();
        s.store.put(&Path::from("j/chk-3/_metadata"), PutPayload::from_static(b"garbage")).await.unwrap();
        assert_eq!(s.sweep(&job, 1).await.unwrap(), Swept { files: 0 });
        assert!(names(&s, &job).await.contains(&"shared/maybe.sst".to_string()));
    }

    #[tokio::test]
    async fn a_sweep_on_local_disk_deletes_half_written_files_and_empty_directories() {
        let dir = tempfile::tempdir().unwrap();
        let s = CheckpointStorage::from_uri(&format!("file://{}", dir.path().display())).unwrap();
        let job = JobId::new("j");
        let own = s.write_file(&job, CheckpointId(1), "v0-0.state", Bytes::from_static(b"s")).await.unwrap();
        complete(&s, &job, 1, vec![own]).await;
        // A writer killed while writing checkpoint 2, and a file of checkpoint 3 the sweep deletes.
        std::fs::create_dir_all(dir.path().join("j/chk-2")).unwrap();
        std::fs::write(dir.path().join("j/chk-2/v0-0.state#1"), b"half").unwrap();
        s.write_file(&job, CheckpointId(3), "v0-0.state", Bytes::from_static(b"t")).await.unwrap();

        assert_eq!(s.sweep(&job, 1).await.unwrap(), Swept { files: 2 });
        let mut left: Vec<String> = std::fs::read_dir(dir.path().join("j"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["chk-1"], "no directory of a deleted checkpoint stays");
        s.discard(&job, CheckpointId(1)).await.unwrap();
        assert!(!dir.path().join("j").exists(), "the last file takes the job's directory with it");
        assert!(dir.path().exists(), "but never the storage's root");
    }

    /// A complete checkpoint of `job` naming `files`.
    async fn complete(s: &CheckpointStorage, job: &JobId, id: u64, files: Vec<FileHandle>) {
        let meta = CheckpointMetadata {
            version: METADATA_VERSION,
            job_id: job.clone(),
            checkpoint_id: CheckpointId(id),
            timestamp_ms: 0,
            tasks: vec![TaskSnapshot { files, ..Default::default() }],
            max_parallelism: 0,
            finished: Vec::new(),
        };
        s.complete(&meta).await.unwrap();
    }

    #[tokio::test]
    async fn a_sweep_deletes_complete_checkpoints_older_than_the_retained_ones() {
        let s = CheckpointStorage::from_uri("memory://").unwrap();
        let job = JobId::new("j");
        let base = s.write_shared_file(&job, "base.sst", Bytes::from_static(b"b")).await.unwrap();
        let old = s.write_shared_file(&job, "old.sst", Bytes::from_static(b"o")).await.unwrap();
        for id in 1..=4 {
            let own = s.write_file(&job, CheckpointId(id), "v0-0.state", Bytes::from_static(b"s")).await.unwrap();
            let mut files = vec![base.clone(), own];
            if id == 1 {
                files.push(old.clone());
            }
            complete(&s, &job, id, files).await;
        }
        // Checkpoints 1 and 2 were subsumed, but a crash kept them from being deleted.
        assert_eq!(s.sweep(&job, 2).await.unwrap(), Swept { files: 5 });
        let left = names(&s, &job).await;
        assert_eq!(
            left,
            ["chk-3/_metadata", "chk-3/v0-0.state", "chk-4/_metadata", "chk-4/v0-0.state", "shared/base.sst"]
        );
        s.load(&job, CheckpointId(3)).await.expect("a kept checkpoint is whole");

        // A damaged newest checkpoint does not count: the one before stays to restore from.
        s.store.put(&Path::from("j/chk-5/_metadata"), PutPayload::from_static(b"garbage")).await.unwrap();
        assert_eq!(s.sweep(&job, 1).await.unwrap(), Swept { files: 2 }, "checkpoint 3 goes");
        assert!(names(&s, &job).await.contains(&"chk-4/_metadata".to_string()));
        assert_eq!(s.latest_valid(&job).await.unwrap().map(|m| m.checkpoint_id), Some(CheckpointId(4)));
    }
}
