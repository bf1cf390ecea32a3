//! Roles, and who holds them: what a certificate's subject or a bearer
//! token may do.
//!
//! Four roles: `read` (list and inspect jobs), `admin` (also submit, cancel,
//! savepoint and stop), `taskmanager` (register, heartbeat, report tasks and
//! checkpoints to the job manager, and send records to other task managers)
//! and `jobmanager` (deploy and cancel tasks, trigger checkpoints on task
//! managers). Each call checks the one role it needs.

use std::collections::BTreeMap;
use std::fmt;

use rustls_pki_types::CertificateDer;
use serde::Deserialize;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// List and inspect jobs and the cluster.
    Read,
    /// Everything `read` may, and submit, cancel, savepoint and stop jobs.
    Admin,
    /// What a task manager does: register and report to the job manager,
    /// send records to other task managers.
    #[serde(rename = "taskmanager")]
    TaskManager,
    /// What a job manager does: deploy, cancel and checkpoint tasks.
    #[serde(rename = "jobmanager")]
    JobManager,
}

impl Role {
    /// The name used in configuration and messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
            Role::TaskManager => "taskmanager",
            Role::JobManager => "jobmanager",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Role::Read => 1,
            Role::Admin => 2,
            Role::TaskManager => 4,
            Role::JobManager => 8,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of roles.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Grants(u8);

impl Grants {
    /// No role.
    pub const NONE: Grants = Grants(0);
    /// Every role.
    pub const ALL: Grants = Grants(15);

    /// The roles `role` stands for (`admin` includes `read`).
    pub fn of(role: Role) -> Grants {
        match role {
            Role::Admin => Grants(Role::Admin.bit() | Role::Read.bit()),
            r => Grants(r.bit()),
        }
    }

    /// Both sets.
    pub fn union(self, other: Grants) -> Grants {
        Grants(self.0 | other.0)
    }

    /// Whether `role` is among them.
    pub fn allows(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }
}

impl fmt::Debug for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = [Role::Read, Role::Admin, Role::TaskManager, Role::JobManager]
            .into_iter()
            .filter(|r| self.allows(*r))
            .map(Role::name)
            .collect();
        write!(f, "{{{}}}", names.join(", "))
    }
}

/// One role or several, as written in `security.roles`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RoleList {
    /// `admin`
    One(Role),
    /// `[jobmanager, taskmanager]`
    Many(Vec<Role>),
}

/// Certificate subjects and their roles (`security.roles`). A subject is
/// written whole (`CN=alice,O=ops`) or as its common name alone
/// (`CN=alice`). Without any entry, every certificate of the CA holds every
/// role: the CA is then the only boundary, as in a cluster whose processes
/// share one certificate.
#[derive(Debug, Clone, Default)]
pub struct Roles(Vec<(String, Grants)>);

impl Roles {
    /// Roles from the configuration's map.
    pub fn new(map: &BTreeMap<String, RoleList>) -> Result<Roles, String> {
        let mut out = Vec::new();
        for (subject, roles) in map {
            let norm = normalize(subject);
            if !norm.contains('=') {
                return Err(format!(
                    "`{subject}` is not a certificate subject (write it as `CN=name` or `CN=name,O=org`)"
                ));
            }
            let grants = match roles {
                RoleList::One(r) => Grants::of(*r),
                RoleList::Many(rs) => rs.iter().fold(Grants::NONE, |g, r| g.union(Grants::of(*r))),
            };
            out.push((norm, grants));
        }
        Ok(Roles(out))
    }

    /// Whether subjects are mapped at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What the holder of a certificate with `subject` may do.
    pub fn grants(&self, subject: &str) -> Grants {
        if self.0.is_empty() {
            return Grants::ALL;
        }
        let subject = normalize(subject);
        let cn = subject.split(',').find(|p| p.starts_with("CN=")).unwrap_or("");
        self.0
            .iter()
            .filter(|(s, _)| *s == subject || (!cn.is_empty() && s == cn))
            .fold(Grants::NONE, |g, (_, r)| g.union(*r))
    }
}

/// `CN=a, O=b` → `CN=a,O=b`.
fn normalize(subject: &str) -> String {
    subject.split(',').map(str::trim).filter(|p| !p.is_empty()).collect::<Vec<_>>().join(",")
}

/// The subject of a DER certificate, as `CN=…, O=…`.
pub fn subject_of(cert: &CertificateDer<'_>) -> Result<String, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| e.to_string())?;
    Ok(parsed.subject().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(yaml: &[(&str, RoleList)]) -> Roles {
        Roles::new(&yaml.iter().map(|(s, r)| (s.to_string(), r.clone())).collect()).unwrap()
    }

    #[test]
    fn subjects_map_to_roles_by_whole_subject_or_common_name() {
        let r = roles(&[
            ("CN=weir-jobmanager", RoleList::One(Role::JobManager)),
            ("CN=alice, O=ops", RoleList::One(Role::Admin)),
            ("CN=cluster", RoleList::Many(vec![Role::JobManager, Role::TaskManager])),
        ]);
        assert!(r.grants("CN=weir-jobmanager").allows(Role::JobManager));
        assert!(r.grants("CN=weir-jobmanager, O=anything").allows(Role::JobManager), "the CN alone matches");
        assert!(!r.grants("CN=weir-jobmanager").allows(Role::Admin));
        let alice = r.grants("CN=alice,O=ops");
        assert!(alice.allows(Role::Admin) && alice.allows(Role::Read) && !alice.allows(Role::TaskManager));
        assert_eq!(r.grants("CN=alice, O=elsewhere"), Grants::NONE, "a whole subject must match whole");
        let cluster = r.grants("CN=cluster");
        assert!(cluster.allows(Role::TaskManager) && cluster.allows(Role::JobManager) && !cluster.allows(Role::Read));
        assert_eq!(r.grants("CN=mallory"), Grants::NONE);
        assert_eq!(Roles::default().grants("CN=anyone"), Grants::ALL, "no map: the CA is the boundary");
        let bad = Roles::new(&[("alice".to_string(), RoleList::One(Role::Read))].into_iter().collect());
        assert!(bad.unwrap_err().contains("not a certificate subject"));
    }

    #[test]
    fn roles_read_from_configuration_by_name() {
        let m: BTreeMap<String, RoleList> =
            serde_json::from_str(r#"{"CN=a": "taskmanager", "CN=b": ["read", "jobmanager"]}"#).unwrap();
        let r = Roles::new(&m).unwrap();
        assert!(r.grants("CN=a").allows(Role::TaskManager));
        assert!(r.grants("CN=b").allows(Role::Read) && r.grants("CN=b").allows(Role::JobManager));
        assert!(serde_json::from_str::<RoleList>(r#""root""#).is_err());
        assert_eq!(format!("{:?}", Grants::of(Role::Admin)), "{read, admin}");
    }
}
