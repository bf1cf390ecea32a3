//! Keyed state of the typed API: handles a function declares when it opens
//! ([`States`]) and reads and writes through its context, scoped to the
//! key of the record (or timer) at hand.
//!
//! ```ignore
//! #[derive(Default)]
//! struct Rewards {
//!     points: ValueState<Points>,
//!     seen: MapState<String, i64>,
//! }
//!
//! impl KeyedProcessFunction for Rewards {
//!     // ...
//!     fn open(&mut self, states: &mut States) {
//!         self.points = states.value("points");
//!         self.seen = states.map_with_ttl("seen", Ttl::after(Duration::from_secs(86_400)));
//!     }
//! }
//! ```
//!
//! Values are stored in MessagePack with named fields, so a type that gains
//! an optional field (or a field with a `#[serde(default)]`) reads what an
//! older version wrote; a restore into a type that cannot is refused at
//! submission, naming the state and both types ([`crate::evolution`]).
//! State is snapshotted by the job's state backend (heap or RocksDB), in key
//! groups, like every built-in operator's, and restored by operator uid.

mod store;

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use store::KeyedStore;
pub(crate) use store::{decode_value as store_decode, encode as store_encode};

use crate::evolution;

/// How long an entry lives after it was last written (or read, with
/// [`Ttl::refresh_on_read`]), in processing time. Expired entries are never
/// returned and are dropped from state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl {
    /// Time to live.
    pub after: Duration,
    /// Whether reading an entry renews it too.
    pub refresh_on_read: bool,
}

impl Ttl {
    /// Entries expire `after` their last write.
    pub fn after(after: Duration) -> Self {
        Self { after, refresh_on_read: false }
    }

    /// Reading an entry renews it as well.
    pub fn refresh_on_read(mut self) -> Self {
        self.refresh_on_read = true;
        self
    }
}

/// Kinds of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Value,
    List,
    Map,
}

/// One declared state: name, kind, time to live, and its type's shape
/// (recorded in savepoints and checked on restore).
pub(crate) struct StateSpec {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) ttl: Option<Ttl>,
    pub(crate) type_desc: String,
    /// Whether what this declaration reads can be read from data of a
    /// recorded type description.
    pub(crate) reads: fn(&str) -> Result<(), String>,
}

impl std::fmt::Debug for StateSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSpec").field("name", &self.name).field("kind", &self.kind).finish()
    }
}

/// The states a function declares when it opens.
#[derive(Debug, Default)]
pub struct States {
    pub(crate) specs: Vec<StateSpec>,
}

/// A type state can hold.
pub trait StateValue: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> StateValue for T {}

impl States {
    fn declare(
        &mut self,
        name: &str,
        kind: Kind,
        ttl: Option<Ttl>,
        type_desc: String,
        reads: fn(&str) -> Result<(), String>,
    ) -> usize {
        assert!(
            !self.specs.iter().any(|s| s.name == name),
            "state `{name}` is declared twice: every state of a function needs its own name"
        );
        self.specs.push(StateSpec { name: name.to_string(), kind, ttl, type_desc, reads });
        self.specs.len() - 1
    }

    /// A value per key.
    pub fn value<V: StateValue>(&mut self, name: &str) -> ValueState<V> {
        ValueState::at(self.declare(name, Kind::Value, None, evolution::describe::<V>("value"), evolution::reads::<V>))
    }

    /// A value per key that expires.
    pub fn value_with_ttl<V: StateValue>(&mut self, name: &str, ttl: Ttl) -> ValueState<V> {
        ValueState::at(self.declare(
            name,
            Kind::Value,
            Some(ttl),
            evolution::describe::<V>("value"),
            evolution::reads::<V>,
        ))
    }

    /// A list per key.
    pub fn list<V: StateValue>(&mut self, name: &str) -> ListState<V> {
        ListState::at(self.declare(
            name,
            Kind::List,
            None,
            evolution::describe::<Vec<V>>("list"),
            evolution::reads::<Vec<V>>,
        ))
    }

    /// A list per key that expires as a whole.
    pub fn list_with_ttl<V: StateValue>(&mut self, name: &str, ttl: Ttl) -> ListState<V> {
        ListState::at(self.declare(
            name,
            Kind::List,
            Some(ttl),
            evolution::describe::<Vec<V>>("list"),
            evolution::reads::<Vec<V>>,
        ))
    }

    /// A map per key.
    pub fn map<K: StateValue, V: StateValue>(&mut self, name: &str) -> MapState<K, V> {
        MapState::at(self.declare(
            name,
            Kind::Map,
            None,
            evolution::describe_map::<K, V>(),
            evolution::reads_map::<K, V>,
        ))
    }

    /// A map per key whose entries expire one by one.
    pub fn map_with_ttl<K: StateValue, V: StateValue>(&mut self, name: &str, ttl: Ttl) -> MapState<K, V> {
        MapState::at(self.declare(
            name,
            Kind::Map,
            Some(ttl),
            evolution::describe_map::<K, V>(),
            evolution::reads_map::<K, V>,
        ))
    }
}

/// What a state handle needs of the context it is used in: the store and
/// the current key.
pub trait KeyedScope {
    /// The store, the current key's bytes and key group, and the processing time (ms).
    #[doc(hidden)]
    fn scope(&mut self) -> (&mut KeyedStore, &[u8], u32, i64);
}

/// Errors of state access (a value that does not decode).
pub type StateResult<T> = Result<T, crate::UserError>;

macro_rules! handle {
    ($name:ident, $($p:ident),+) => {
        impl<$($p),+> Default for $name<$($p),+> {
            /// A handle not declared yet (every use panics until `open` declares it).
            fn default() -> Self {
                Self { id: usize::MAX, _t: PhantomData }
            }
        }
        impl<$($p),+> Clone for $name<$($p),+> {
            fn clone(&self) -> Self {
                Self { id: self.id, _t: PhantomData }
            }
        }
        impl<$($p),+> std::fmt::Debug for $name<$($p),+> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.id)
            }
        }
        impl<$($p),+> $name<$($p),+> {
            fn at(id: usize) -> Self {
                Self { id, _t: PhantomData }
            }
        }
    };
}

/// One value per key.
pub struct ValueState<V> {
    id: usize,
    _t: PhantomData<fn() -> V>,
}
handle!(ValueState, V);

impl<V: StateValue> ValueState<V> {
    /// The current key's value.
    pub fn value(&self, ctx: &mut impl KeyedScope) -> StateResult<Option<V>> {
        let (store, key, _, now) = ctx.scope();
        store.get(self.id, key, None, now)
    }

    /// Sets the current key's value.
    pub fn update(&self, ctx: &mut impl KeyedScope, value: &V) -> StateResult<()> {
        let (store, key, kg, now) = ctx.scope();
        store.put(self.id, key, None, kg, value, now)
    }

    /// Removes the current key's value.
    pub fn clear(&self, ctx: &mut impl KeyedScope) {
        let (store, key, _, _) = ctx.scope();
        store.remove(self.id, key, None);
    }
}

/// A list per key.
pub struct ListState<V> {
    id: usize,
    _t: PhantomData<fn() -> V>,
}
handle!(ListState, V);

impl<V: StateValue> ListState<V> {
    /// The current key's list (empty if none).
    pub fn get(&self, ctx: &mut impl KeyedScope) -> StateResult<Vec<V>> {
        let (store, key, _, now) = ctx.scope();
        Ok(store.get::<Vec<V>>(self.id, key, None, now)?.unwrap_or_default())
    }

    /// Appends to the current key's list.
    pub fn add(&self, ctx: &mut impl KeyedScope, value: V) -> StateResult<()> {
        let mut list = self.get(ctx)?;
        list.push(value);
        self.update(ctx, &list)
    }

    /// Replaces the current key's list.
    pub fn update(&self, ctx: &mut impl KeyedScope, list: &[V]) -> StateResult<()> {
        let (store, key, kg, now) = ctx.scope();
        store.put(self.id, key, None, kg, &list, now)
    }

    /// Removes the current key's list.
    pub fn clear(&self, ctx: &mut impl KeyedScope) {
        let (store, key, _, _) = ctx.scope();
        store.remove(self.id, key, None);
    }
}

/// A map per key.
pub struct MapState<K, V> {
    id: usize,
    _t: PhantomData<fn() -> (K, V)>,
}
handle!(MapState, K, V);

impl<K: StateValue, V: StateValue> MapState<K, V> {
    /// The value of `user_key` in the current key's map.
    pub fn get(&self, ctx: &mut impl KeyedScope, user_key: &K) -> StateResult<Option<V>> {
        let uk = store::encode(user_key)?;
        let (store, key, _, now) = ctx.scope();
        store.get(self.id, key, Some(&uk), now)
    }

    /// Sets `user_key` to `value` in the current key's map.
    pub fn put(&self, ctx: &mut impl KeyedScope, user_key: &K, value: &V) -> StateResult<()> {
        let uk = store::encode(user_key)?;
        let (store, key, kg, now) = ctx.scope();
        store.put(self.id, key, Some(&uk), kg, value, now)
    }

    /// Removes `user_key` from the current key's map.
    pub fn remove(&self, ctx: &mut impl KeyedScope, user_key: &K) -> StateResult<()> {
        let uk = store::encode(user_key)?;
        let (store, key, _, _) = ctx.scope();
        store.remove(self.id, key, Some(&uk));
        Ok(())
    }

    /// Whether the current key's map holds `user_key`.
    pub fn contains(&self, ctx: &mut impl KeyedScope, user_key: &K) -> StateResult<bool> {
        Ok(self.get(ctx, user_key)?.is_some())
    }

    /// Every entry of the current key's map, in the order of the encoded user keys.
    pub fn entries(&self, ctx: &mut impl KeyedScope) -> StateResult<Vec<(K, V)>> {
        let (store, key, _, now) = ctx.scope();
        store.entries(self.id, key, now)
    }

    /// Removes the current key's whole map.
    pub fn clear(&self, ctx: &mut impl KeyedScope) {
        let (store, key, _, _) = ctx.scope();
        store.clear_map(self.id, key);
    }
}
