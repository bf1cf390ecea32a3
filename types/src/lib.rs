//! The vocabulary every Weir crate shares, and nothing else: identifiers
//! ([`JobId`], [`VertexId`], [`CheckpointId`]), key groups and the hash that
//! assigns keys to them ([`keygroup`]), the unit of operator state that
//! checkpoints move ([`StateEntry`]), what a checkpoint is made of
//! ([`snapshot`]), state backend kinds ([`BackendKind`])
//! and the classes of errors ([`ErrorClass`]) that let a failure keep its
//! meaning from storage to the checkpoint coordinator. Test builds add
//! crash points ([`failpoint`]).
//!
//! It depends on serde only: the runtime, the state backends, the job
//! manager and the task manager all build on it, so it must stay free of
//! Arrow, gRPC, object stores and async runtimes.

mod backend;
mod error;
pub mod failpoint;
mod id;
pub mod keygroup;
pub mod snapshot;
mod state;

pub use backend::BackendKind;
pub use error::{Classify, ErrorClass, Failure};
pub use id::{CheckpointId, JobId, VertexId};
pub use snapshot::{CheckpointMetadata, FileHandle, TaskSnapshot, METADATA_VERSION};
pub use state::{StateEntry, NON_KEYED, UNION};
