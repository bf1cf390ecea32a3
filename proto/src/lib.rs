//! Weir's gRPC services and messages, generated from `proto/weir.proto`, and
//! the conversions between them and the runtime's domain types.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("weir.v1");
}

mod convert;
mod snapshot;

pub use convert::{graph_from_proto, graph_to_proto};
pub use snapshot::{class_from_proto, class_to_proto, failure_from_proto, snapshot_from_proto, snapshot_to_proto};
pub use v1::*;
