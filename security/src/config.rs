//! The `security:` section of `weir.yaml`, the `--tls-*` flags, and the
//! resolved [`Security`] a process checks its callers with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::paths::AllowedPaths;
use crate::roles::{Grants, Role, RoleList, Roles};
use crate::serve::PeerInfo;
use crate::tls::{Tls, TlsError, TlsFiles};
use crate::tokens::Tokens;

/// The `security:` section, read by every process of a cluster.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySection {
    /// Mutual TLS for every gRPC connection.
    #[serde(default)]
    pub tls: TlsSection,
    /// Certificate subjects and their roles (`read`, `admin`, `taskmanager`,
    /// `jobmanager`). Without entries, any certificate of the CA holds every
    /// role.
    #[serde(default)]
    pub roles: BTreeMap<String, RoleList>,
    /// Roots under which jobs may read and write local files (default: the
    /// system temp directory and `/var/lib/weir`; `weir local`: the working
    /// directory and the temp directory). `["/"]` allows everything.
    pub allowed_paths: Option<Vec<PathBuf>>,
    /// Largest parallelism a submitted job may give an operator (default 1024).
    pub max_parallelism: Option<u32>,
    /// Most operators a submitted job may have (default 1000).
    pub max_operators: Option<usize>,
}

/// What one submission may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmitLimits {
    /// Largest parallelism of any operator.
    pub max_parallelism: u32,
    /// Most operators in one job.
    pub max_operators: usize,
}

impl Default for SubmitLimits {
    fn default() -> Self {
        SubmitLimits { max_parallelism: 1024, max_operators: 1000 }
    }
}

/// `security.tls`: all three files, or none (no TLS).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM bundle of the CA that signs every peer's certificate.
    pub ca: Option<PathBuf>,
    /// PEM certificate chain of this process.
    pub cert: Option<PathBuf>,
    /// PEM private key of that certificate.
    pub key: Option<PathBuf>,
}

/// The TLS flags every Weir binary takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM bundle of the CA whose certificates peers must present; with
    /// --tls-cert and --tls-key, every gRPC connection is mutual TLS and
    /// addresses are written https://.
    #[arg(long, env = "WEIR_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate chain this process presents.
    #[arg(long, env = "WEIR_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "WEIR_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

/// Why security settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// Some TLS files are given, not all.
    #[error("TLS needs all of security.tls.ca, .cert and .key (--tls-ca, --tls-cert, --tls-key); missing: {0}")]
    Incomplete(String),
    /// The TLS files do not load.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// `security.roles` is malformed.
    #[error("security.roles: {0}")]
    Roles(String),
    /// `security.allowed_paths` is malformed.
    #[error("security.allowed_paths: {0}")]
    AllowedPaths(String),
    /// A limit of zero would refuse every job.
    #[error("security.max_parallelism and security.max_operators must be at least 1")]
    Limits,
}

impl SecuritySection {
    /// Flags (and their environment variables) over the file.
    pub fn apply(&mut self, args: &TlsArgs) {
        let t = &mut self.tls;
        t.ca = args.tls_ca.clone().or(t.ca.take());
        t.cert = args.tls_cert.clone().or(t.cert.take());
        t.key = args.tls_key.clone().or(t.key.take());
    }

    /// The TLS material, loaded and checked; `None` without TLS settings.
    pub fn tls(&self) -> Result<Option<Arc<Tls>>, SecurityError> {
        let t = &self.tls;
        match (&t.ca, &t.cert, &t.key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => {
                Ok(Some(Tls::load(TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() })?))
            }
            _ => {
                let missing: Vec<_> = [("ca", t.ca.is_none()), ("cert", t.cert.is_none()), ("key", t.key.is_none())]
                    .into_iter()
                    .filter(|(_, m)| *m)
                    .map(|(n, _)| n)
                    .collect();
                Err(SecurityError::Incomplete(missing.join(", ")))
            }
        }
    }

    /// Everything a server checks its callers with.
    pub fn resolve(&self, tokens: Option<Arc<Tokens>>) -> Result<Security, SecurityError> {
        let allowed_paths = match &self.allowed_paths {
            Some(roots) => AllowedPaths::new(roots).map_err(SecurityError::AllowedPaths)?,
            None => AllowedPaths::cluster_default(),
        };
        let d = SubmitLimits::default();
        let limits = SubmitLimits {
            max_parallelism: self.max_parallelism.unwrap_or(d.max_parallelism),
            max_operators: self.max_operators.unwrap_or(d.max_operators),
        };
        if limits.max_parallelism == 0 || limits.max_operators == 0 {
            return Err(SecurityError::Limits);
        }
        Ok(Security {
            tls: self.tls()?,
            roles: Roles::new(&self.roles).map_err(SecurityError::Roles)?,
            tokens,
            allowed_paths,
            limits,
        })
    }
}

/// How a server knows its callers: their certificates (with TLS) mapped to
/// roles, and bearer tokens. Without TLS, the internal calls between job
/// manager and task managers are open (the network is the boundary), and
/// job control is open unless tokens are configured.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// TLS material, when every connection is TLS.
    pub tls: Option<Arc<Tls>>,
    /// Certificate subjects and their roles.
    pub roles: Roles,
    /// Bearer tokens (the job manager's token file).
    pub tokens: Option<Arc<Tokens>>,
    /// Where jobs may read and write local files (checked by the job manager).
    pub allowed_paths: AllowedPaths,
    /// What one submission may ask for (checked by the job manager).
    pub limits: SubmitLimits,
}

impl Security {
    /// What the caller of `req` may do, and how it is known.
    pub fn caller<T>(&self, req: &tonic::Request<T>) -> Caller {
        let subject = req.extensions().get::<PeerInfo>().and_then(|p| p.subject.clone());
        let mut caller = match (&self.tls, subject) {
            (Some(_), Some(subject)) => Caller {
                grants: self.roles.grants(&subject),
                who: format!("certificate `{subject}`"),
                anonymous: false,
            },
            (Some(_), None) => Caller::anonymous(Grants::NONE, "a caller without a certificate"),
            (None, _) if self.tokens.is_none() => Caller::anonymous(Grants::ALL, "any caller"),
            (None, _) => Caller::anonymous(
                Grants::of(Role::TaskManager).union(Grants::of(Role::JobManager)),
                "a caller without a token",
            ),
        };
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        if let (Some(tokens), Some(h)) = (&self.tokens, header) {
            let by_token = tokens.grants_of_header(h);
            caller.anonymous = false;
            if by_token != Grants::NONE {
                caller.grants = caller.grants.union(by_token);
                caller.who = "this token".to_string();
            } else {
                caller.who = "an unknown token".to_string();
            }
        }
        caller
    }

    /// Refuses `req` unless its caller holds `need`; `what` names the call.
    /// A caller with no credential is `UNAUTHENTICATED`, one whose
    /// credential is too weak `PERMISSION_DENIED`.
    pub fn check<T>(&self, req: &tonic::Request<T>, need: Role, what: &str) -> Result<(), tonic::Status> {
        let caller = self.caller(req);
        if caller.grants.allows(need) {
            return Ok(());
        }
        let hint = match need {
            Role::Read | Role::Admin if self.tokens.is_some() => {
                " (present a token with --token-file or WEIR_TOKEN, or a certificate mapped to it in security.roles)"
            }
            Role::Read | Role::Admin => " (map the certificate's subject to it in security.roles)",
            Role::TaskManager | Role::JobManager => " (only a Weir process's certificate may)",
        };
        let msg = format!("{} may not {what}: that needs role `{need}`{hint}", caller.who);
        Err(if caller.anonymous { tonic::Status::unauthenticated(msg) } else { tonic::Status::permission_denied(msg) })
    }
}

/// Who called, as far as a server can tell.
#[derive(Debug, Clone)]
pub struct Caller {
    /// What it may do.
    pub grants: Grants,
    /// How it is known, for messages: its certificate's subject, "this
    /// token", "a caller without a token".
    pub who: String,
    /// It presented no credential at all.
    pub anonymous: bool,
}

impl Caller {
    fn anonymous(grants: Grants, who: &str) -> Caller {
        Caller { grants, who: who.to_string(), anonymous: true }
    }
}

/// Logs, once per port, that `addr` is served beyond loopback without TLS.
pub fn warn_if_plaintext(addr: SocketAddr, tls: bool, what: &str) {
    if !tls && !addr.ip().is_loopback() {
        tracing::warn!(%addr, port = what, "serving beyond loopback without TLS: anyone who reaches this port can talk to it (see --tls-ca, --tls-cert, --tls-key)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_needs_all_three_files_and_flags_override_the_file() {
        let section: SecuritySection = serde_json::from_str(
            r#"{"tls": {"ca": "/etc/ca.crt"}, "roles": {"CN=weir-cluster": ["jobmanager", "taskmanager"]}}"#,
        )
        .unwrap();
        let e = section.tls().unwrap_err().to_string();
        assert!(e.contains("missing: cert, key"), "{e}");
        let mut with_flags = section.clone();
        with_flags.apply(&TlsArgs {
            tls_ca: Some("/flag/ca.crt".into()),
            tls_cert: Some("/flag/tls.crt".into()),
            tls_key: None,
        });
        assert_eq!(with_flags.tls.ca.as_deref(), Some(std::path::Path::new("/flag/ca.crt")));
        assert!(with_flags.tls().unwrap_err().to_string().contains("missing: key"));
        assert!(SecuritySection::default().tls().unwrap().is_none(), "no settings: no TLS");
        let security = SecuritySection { tls: TlsSection::default(), ..section }.resolve(None).unwrap();
        assert!(security.roles.grants("CN=weir-cluster").allows(Role::TaskManager));
        assert!(serde_json::from_str::<SecuritySection>(r#"{"tls": {"cafile": "x"}}"#).is_err(), "unknown keys");
        assert_eq!(security.limits, SubmitLimits::default());
        let zero: SecuritySection = serde_json::from_str(r#"{"max_parallelism": 0}"#).unwrap();
        assert!(zero.resolve(None).unwrap_err().to_string().contains("at least 1"));
    }

    #[test]
    fn without_tls_internal_calls_are_open_and_job_control_needs_a_token_when_tokens_exist() {
        let open = Security::default();
        let req = tonic::Request::new(());
        assert!(open.check(&req, Role::Admin, "submit jobs").is_ok());
        let tokens = Arc::new(Tokens::parse("admin-0123456789abcdef admin\n").unwrap());
        let guarded = Security { tokens: Some(tokens), ..Security::default() };
        assert!(guarded.check(&req, Role::TaskManager, "register").is_ok(), "the network is the boundary");
        let refused = guarded.check(&req, Role::Read, "list jobs").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(refused.message().contains("a caller without a token may not list jobs"), "{}", refused.message());
        let mut with = tonic::Request::new(());
        with.metadata_mut().insert("authorization", "Bearer admin-0123456789abcdef".parse().unwrap());
        assert!(guarded.check(&with, Role::Admin, "submit jobs").is_ok());
        let mut wrong = tonic::Request::new(());
        wrong.metadata_mut().insert("authorization", "Bearer nope-0123456789abcdef".parse().unwrap());
        let refused = guarded.check(&wrong, Role::Read, "list jobs").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(refused.message().contains("an unknown token"), "{}", refused.message());
    }
}
