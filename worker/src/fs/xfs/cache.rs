//! A small bounded cache: two generations of hash maps. Lookups promote
//! from the old generation; when the young one fills, the old one is
//! dropped. Approximately LRU, never more than `2 × half` entries.

use std::collections::HashMap;
use std::hash::Hash;

/// A bounded key–value cache.
#[derive(Debug)]
pub(super) struct Cache<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
    half: usize,
}

impl<K: Hash + Eq + Copy, V: Clone> Cache<K, V> {
    /// A cache of at most `2 × half` entries.
    pub(super) fn new(half: usize) -> Self {
        Self {
            young: HashMap::new(),
            old: HashMap::new(),
            half: half.max(1),
        }
    }

    /// The value for `key`, if cached.
    pub(super) fn get(&mut self, key: &K) -> Option<V> {
        if let Some(value) = self.young.get(key) {
            return Some(value.clone());
        }
        let value = self.old.remove(key)?;
        self.insert(*key, value.clone());
        Some(value)
    }

    /// Cache `value` for `key`.
    pub(super) fn insert(&mut self, key: K, value: V) {
        if self.young.len() >= self.half {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
    }
}
