//! The operator registry: the operator kinds a process can plan and run.
//!
//! A [`Registry`] is a value. Whoever starts a process builds it — the
//! built-in operators, the connectors the binary links, the functions of a
//! user's application — and hands it to planning ([`crate::plan::Plan::new`])
//! and, through the plan, to deployment. Nothing is global: two registries
//! in one process (an application's and a test's) never see each other's
//! kinds.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::OperatorFactory;
use super::{
    aggregate, datagen, join, limit, nexmark, normalize, over, project, replicate, sinks, top_n, values, watermark,
    window,
};

/// Operator kinds by name.
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<String, Arc<dyn OperatorFactory>>,
}

/// A kind registered twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operator kind `{0}` is registered twice")]
pub struct DuplicateKind(pub String);

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

impl Registry {
    /// A registry with no kind at all.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A registry with the built-in operators: `datagen`, `nexmark_source`, `values`, `map`,
    /// `project`, `filter`, `watermark`, `window`, `group_aggregate`, `top_n`, `limit`, `replicate`, `lookup_join`,
    /// `interval_join`, `regular_join`, `discard`, `stdout` and `jsonl_file`.
    pub fn builtins() -> Self {
        let mut r = Self::empty();
        let builtins: [Arc<dyn OperatorFactory>; 22] = [
            Arc::new(datagen::DatagenFactory),
            Arc::new(nexmark::NexmarkFactory),
            Arc::new(values::ValuesFactory),
            Arc::new(project::MapFactory),
            Arc::new(project::ProjectFactory),
            Arc::new(project::FilterFactory),
            Arc::new(watermark::WatermarkFactory),
            Arc::new(window::WindowFactory),
            Arc::new(window::WindowAssignFactory),
            Arc::new(aggregate::GroupAggregateFactory),
            Arc::new(top_n::TopNFactory),
            Arc::new(join::LookupJoinFactory),
            Arc::new(join::IntervalJoinFactory),
            Arc::new(join::RegularJoinFactory),
            Arc::new(join::TemporalJoinFactory),
            Arc::new(normalize::ChangelogNormalizeFactory),
            Arc::new(over::OverAggregateFactory),
            Arc::new(limit::LimitFactory),
            Arc::new(replicate::ReplicateFactory),
            Arc::new(sinks::DiscardFactory),
            Arc::new(sinks::StdoutFactory),
            Arc::new(sinks::JsonlFileFactory),
        ];
        for f in builtins {
            r.register_shared(f).expect("built-in kinds are distinct");
        }
        r
    }

    /// Adds a kind.
    pub fn register(&mut self, factory: impl OperatorFactory + 'static) -> Result<&mut Self, DuplicateKind> {
        self.register_shared(Arc::new(factory))
    }

    /// Adds a kind held elsewhere too.
    pub fn register_shared(&mut self, factory: Arc<dyn OperatorFactory>) -> Result<&mut Self, DuplicateKind> {
        let kind = factory.kind().to_string();
        if self.factories.contains_key(&kind) {
            return Err(DuplicateKind(kind));
        }
        self.factories.insert(kind, factory);
        Ok(self)
    }

    /// Adds every kind of `other`.
    pub fn extend(&mut self, other: &Registry) -> Result<&mut Self, DuplicateKind> {
        for f in other.factories.values() {
            self.register_shared(f.clone())?;
        }
        Ok(self)
    }

    /// The factory of `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn OperatorFactory>> {
        self.factories.get(kind)
    }

    /// Every registered kind, sorted (for error messages and docs).
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_independent_values() {
        let builtins = Registry::builtins();
        assert!(builtins.get("window").is_some());
        assert!(Registry::empty().get("window").is_none());
        let mut two = Registry::empty();
        two.extend(&builtins).unwrap();
        assert_eq!(two.kinds().count(), builtins.kinds().count());
        let err = two.register(window::WindowFactory).unwrap_err();
        assert_eq!(err, DuplicateKind("window".into()));
    }
}
