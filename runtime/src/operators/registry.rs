//! The operator registry: task managers instantiate operators by kind name.
//!
//! The built-in operators are always there. Connectors live in crates of
//! their own (which depend on this one), so a process adds their factories
//! once at start with [`install`]; the table is fixed from then on.

use std::sync::OnceLock;

use super::OperatorFactory;
use super::{datagen, join, project, sinks, values, watermark, window};

static FACTORIES: &[&dyn OperatorFactory] = &[
    &datagen::DatagenFactory,
    &values::ValuesFactory,
    &project::MapFactory,
    &project::ProjectFactory,
    &project::FilterFactory,
    &watermark::WatermarkFactory,
    &window::WindowFactory,
    &join::LookupJoinFactory,
    &sinks::DiscardFactory,
    &sinks::StdoutFactory,
    &sinks::JsonlFileFactory,
];

static INSTALLED: OnceLock<&'static [&'static dyn OperatorFactory]> = OnceLock::new();

/// Adds `factories` (connectors) to the registry. The first call wins;
/// later calls do nothing, so every entry point may call it.
pub fn install(factories: &'static [&'static dyn OperatorFactory]) {
    let _ = INSTALLED.set(factories);
}

fn all() -> impl Iterator<Item = &'static dyn OperatorFactory> {
    FACTORIES.iter().chain(INSTALLED.get().copied().unwrap_or_default().iter()).copied()
}

/// The factory for `kind`.
pub fn get(kind: &str) -> Option<&'static dyn OperatorFactory> {
    all().find(|f| f.kind() == kind)
}

/// Every registered kind, for error messages and docs.
pub fn kinds() -> Vec<&'static str> {
    all().map(|f| f.kind()).collect()
}
