//! Weir's config file, `weir.yaml`: one section per process kind
//! (`jobmanager`, `taskmanager`, `client`, and `security`, which every
//! process reads). Each process reads its own
//! section strictly (unknown keys are errors) and ignores the others, so one
//! file can configure a whole cluster. Flags and environment variables
//! override the file; see `docs/configuration.md`.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

/// Sections a `weir.yaml` may hold.
pub const SECTIONS: [&str; 4] = ["jobmanager", "taskmanager", "client", "security"];

/// Reads section `name` of the config file at `path`; a missing section is
/// the section's default.
pub fn load_section<T: for<'de> Deserialize<'de> + Default>(path: &Path, name: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    parse_section(&text, name).with_context(|| format!("config file {}", path.display()))
}

/// Reads section `name` of config text.
pub fn parse_section<T: for<'de> Deserialize<'de> + Default>(text: &str, name: &str) -> anyhow::Result<T> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).context("not valid YAML")?;
    let map = match doc {
        serde_yaml_ng::Value::Mapping(m) => m,
        serde_yaml_ng::Value::Null => return Ok(T::default()),
        _ => bail!("the file must be a mapping of sections ({})", SECTIONS.join(", ")),
    };
    for key in map.keys() {
        let k = key.as_str().unwrap_or("");
        if !SECTIONS.contains(&k) {
            bail!("unknown section `{k}`; expected one of {}", SECTIONS.join(", "));
        }
    }
    match map.get(name) {
        None | Some(serde_yaml_ng::Value::Null) => Ok(T::default()),
        Some(v) => serde_yaml_ng::from_value(v.clone()).with_context(|| format!("section `{name}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct S {
        slots: Option<u32>,
    }

    #[test]
    fn reads_its_own_section_and_rejects_unknowns() {
        let s: S = parse_section("jobmanager: {rpc_addr: x}\ntaskmanager: {slots: 3}\n", "taskmanager").unwrap();
        assert_eq!(s.slots, Some(3));
        let s: S = parse_section("jobmanager: {}\n", "taskmanager").unwrap();
        assert_eq!(s, S::default());
        let e = parse_section::<S>("taskmanager: {slot: 3}\n", "taskmanager").unwrap_err();
        assert!(format!("{e:#}").contains("unknown field `slot`"), "{e:#}");
        let e = parse_section::<S>("tasks: {}\n", "taskmanager").unwrap_err();
        assert!(e.to_string().contains("unknown section `tasks`"), "{e}");
    }
}
