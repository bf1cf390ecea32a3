//! Who may talk to a Weir process, and how.
//!
//! - [`tls`](Tls): a process's CA bundle, certificate and key, followed
//!   through rotations; every gRPC connection of a cluster with TLS settings
//!   is mutual TLS: each side proves a certificate of the CA.
//! - [`incoming`]: accepted connections for a tonic server, with the peer's
//!   certificate; [`channel`]/[`lazy_channel`]: connections to `https://`
//!   addresses presenting this process's certificate.
//! - [`Roles`], [`Tokens`], [`Security::check`]: what a certificate's
//!   subject or a bearer token may do (`read`, `admin`, `taskmanager`,
//!   `jobmanager`), checked by each call.
//! - [`AllowedPaths`]: where jobs may read and write local files.
//!
//! It depends on no other Weir crate: the job manager, the task manager and
//! the CLI all use it, and nothing of theirs reaches in.

mod config;
mod connect;
mod follow;
mod https;
mod paths;
mod roles;
mod serve;
mod tls;
mod tokens;

pub use config::{
    warn_if_plaintext, Caller, Security, SecurityError, SecuritySection, SubmitLimits, TlsArgs, TlsSection,
};
pub use connect::{channel, check_address, explain, lazy_channel, ConnectError};
pub use https::HttpsListener;
pub use paths::{local_paths, AllowedPaths};
pub use roles::{subject_of, Grants, Role, RoleList, Roles};
pub use serve::{incoming, Conn, PeerInfo};
pub use tls::{Tls, TlsError, TlsFiles};
pub use tokens::Tokens;
