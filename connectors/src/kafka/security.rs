//! TLS and SASL towards the brokers: the `security:` setting of
//! `kafka_source` and `kafka_sink`, what managed Kafka services (Confluent
//! Cloud, MSK, Aiven) require. Passwords are written inline, read from an
//! environment variable or from a file on the task manager, and never
//! appear in messages or in `Debug` output.

use rdkafka::config::ClientConfig;
use serde::Deserialize;

use crate::secret;

/// Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    /// No TLS, no authentication.
    #[default]
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    /// TLS (the brokers' certificates checked; a client certificate if given).
    #[serde(rename = "SSL")]
    Ssl,
    /// SASL authentication without TLS.
    #[serde(rename = "SASL_PLAINTEXT")]
    SaslPlaintext,
    /// SASL authentication over TLS.
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Plaintext => "PLAINTEXT",
            Protocol::Ssl => "SSL",
            Protocol::SaslPlaintext => "SASL_PLAINTEXT",
            Protocol::SaslSsl => "SASL_SSL",
        }
    }

    fn tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }

    fn sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }
}

/// SASL mechanisms librdkafka speaks without Kerberos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Mechanism {
    /// User name and password in the clear (use it over TLS only).
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl Mechanism {
    fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// `security:` of a Kafka source or sink.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSecurity {
    /// `PLAINTEXT` (default), `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`.
    #[serde(default)]
    pub protocol: Protocol,
    /// PEM bundle of the CAs the brokers' certificates are checked against
    /// (default: the system's).
    pub ca_file: Option<String>,
    /// PEM client certificate, for brokers that require one (mutual TLS).
    pub cert_file: Option<String>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<String>,
    /// Password of an encrypted `key_file`, inline.
    pub key_password: Option<String>,
    /// Environment variable holding that password.
    pub key_password_env: Option<String>,
    /// File holding that password.
    pub key_password_file: Option<String>,
    /// SASL authentication (with `SASL_PLAINTEXT` or `SASL_SSL`).
    pub sasl: Option<Sasl>,
}

/// SASL credentials.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: Mechanism,
    /// The user.
    pub username: String,
    /// The password, inline.
    pub password: Option<String>,
    /// Environment variable holding the password (on the task managers).
    pub password_env: Option<String>,
    /// File holding the password (on the task managers; a mounted secret).
    pub password_file: Option<String>,
}

impl std::fmt::Debug for KafkaSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSecurity")
            .field("protocol", &self.protocol)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("sasl", &self.sasl.as_ref().map(|s| (s.mechanism, &s.username)))
            .finish_non_exhaustive()
    }
}

impl KafkaSecurity {
    /// Checks the settings at plan time; the error names the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let p = self.protocol;
        let err = |field: &str, msg: String| Err((format!("config.security.{field}"), msg));
        match (&self.sasl, p.sasl()) {
            (None, true) => {
                return err("sasl", format!("{} needs `sasl: {{mechanism, username, password}}`", p.name()))
            }
            (Some(_), false) => {
                return err(
                    "sasl",
                    format!("SASL credentials need protocol SASL_SSL or SASL_PLAINTEXT, not {}", p.name()),
                )
            }
            _ => {}
        }
        let files = [("ca_file", &self.ca_file), ("cert_file", &self.cert_file), ("key_file", &self.key_file)];
        if let Some((field, _)) = files.iter().find(|(_, f)| f.is_some()).filter(|_| !p.tls()) {
            return err(field, format!("TLS files need protocol SSL or SASL_SSL, not {}", p.name()));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return err("cert_file", "a client certificate needs both cert_file and key_file".into());
        }
        let key_pw = [&self.key_password, &self.key_password_env, &self.key_password_file].map(Option::is_some);
        secret::check_sources(key_pw[0], key_pw[1], key_pw[2]).or_else(|e| err("key_password", e))?;
        if let Some(s) = &self.sasl {
            let pw = [&s.password, &s.password_env, &s.password_file].map(Option::is_some);
            secret::check_sources(pw[0], pw[1], pw[2]).or_else(|e| err("sasl.password", e))?;
            if !pw.contains(&true) {
                return err("sasl.password", "SASL needs password, password_env or password_file".into());
            }
            if s.username.is_empty() {
                return err("sasl.username", "the user name is empty".into());
            }
        }
        Ok(())
    }

    /// Sets librdkafka's properties for these settings, reading passwords
    /// from where they are (on the task manager).
    pub fn apply(&self, c: &mut ClientConfig) -> Result<(), String> {
        c.set("security.protocol", self.protocol.name());
        for (key, file) in [
            ("ssl.ca.location", &self.ca_file),
            ("ssl.certificate.location", &self.cert_file),
            ("ssl.key.location", &self.key_file),
        ] {
            if let Some(f) = file {
                c.set(key, f.strip_prefix("file://").unwrap_or(f));
            }
        }
        let key_pw = secret::read(
            self.key_password.as_deref(),
            self.key_password_env.as_deref(),
            self.key_password_file.as_deref(),
        )?;
        if let Some(pw) = key_pw {
            c.set("ssl.key.password", pw);
        }
        if let Some(s) = &self.sasl {
            let pw = secret::read(s.password.as_deref(), s.password_env.as_deref(), s.password_file.as_deref())?
                .unwrap_or_default();
            c.set("sasl.mechanisms", s.mechanism.name()).set("sasl.username", &s.username).set("sasl.password", pw);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> KafkaSecurity {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn settings_become_librdkafka_properties_with_passwords_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret-scram\n").unwrap();
        let s = parse(&format!(
            "protocol: SASL_SSL\nca_file: file:///etc/ca.pem\nsasl: {{mechanism: SCRAM-SHA-512, username: alice, password_file: {}}}",
            pw.display()
        ));
        s.validate().unwrap();
        let mut c = ClientConfig::new();
        s.apply(&mut c).unwrap();
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("ssl.ca.location"), Some("/etc/ca.pem"));
        assert_eq!(c.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.username"), Some("alice"));
        assert_eq!(c.get("sasl.password"), Some("s3cret-scram"), "the file's line, without its newline");
        assert!(!format!("{s:?}").contains("s3cret"), "never printed");
    }

    #[test]
    fn inconsistent_settings_are_refused_with_the_field() {
        let refused = |yaml: &str| parse(yaml).validate().unwrap_err();
        assert_eq!(refused("protocol: SASL_SSL").0, "config.security.sasl");
        assert!(refused("protocol: SSL\nsasl: {mechanism: PLAIN, username: u, password: p}").1.contains("not SSL"));
        assert_eq!(refused("ca_file: /ca.pem").0, "config.security.ca_file");
        assert_eq!(refused("protocol: SSL\ncert_file: /c.pem").0, "config.security.cert_file");
        let e = refused("protocol: SASL_PLAINTEXT\nsasl: {mechanism: PLAIN, username: u}");
        assert!(e.1.contains("needs password"), "{e:?}");
        let e = refused("protocol: SASL_SSL\nsasl: {mechanism: PLAIN, username: u, password: p, password_env: X}");
        assert!(e.1.contains("one way"), "{e:?}");
        assert!(serde_yaml_ng::from_str::<KafkaSecurity>("protocol: TLS").is_err());
        assert!(serde_yaml_ng::from_str::<KafkaSecurity>("sasl: {mechanism: GSSAPI, username: u}").is_err());
    }
}
