//! Weir's gRPC services and messages, generated from `proto/weir.proto`, and
//! the conversions between them and the runtime's domain types.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("weir.v1");
}

mod convert;

pub use convert::{graph_from_proto, graph_to_proto};
pub use v1::*;
