//! The cache of unsealed keys: bounded by bytes, least recently used evicted
//! first. Eviction drops (and so frees and zeroes) the key; its sealed blob
//! stays in the host's store, so it can come back.
//!
//! Generic over the key handle so that it can be tested on the host without
//! BoringSSL; in the guest the handle is `boring::Key`.

use crate::codes::KeySpec;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// A key id: SHA-256 of the key's SubjectPublicKeyInfo DER.
pub(crate) type KeyId = [u8; 32];

/// Cache budget until the host sets one: 64 MiB.
pub(crate) const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Guest bytes a parsed key holds, by spec: BoringSSL's structures and
/// bignums (for RSA also the Montgomery contexts built on first use) plus
/// allocator overhead. P-256, P-384 and RSA-2048 checked against kc_stats'
/// memory growth over many keys (bench/keys); RSA-3072/4096 scaled from
/// RSA-2048 by modulus size. The budget is about memory, so these err high.
fn key_cost(spec: KeySpec) -> u64 {
    match spec {
        KeySpec::RSA_2048 => 6 * 1024 + 256,
        KeySpec::RSA_3072 => 9 * 1024 + 512,
        KeySpec::RSA_4096 => 12 * 1024 + 512,
        KeySpec::ECC_NIST_P256 => 768,
        KeySpec::ECC_NIST_P384 => 1024,
    }
}

/// The entry itself, its SPKI, and two B-tree slots.
const ENTRY_OVERHEAD: u64 = 192;

pub(crate) struct Entry<K> {
    pub(crate) spec: KeySpec,
    pub(crate) key: K,
    pub(crate) spki: Vec<u8>,
    tick: u64,
    cost: u64,
}

pub(crate) struct Cache<K> {
    keys: BTreeMap<KeyId, Entry<K>>,
    /// Ids by the tick of their last use: the first is the least recently used.
    order: BTreeMap<u64, KeyId>,
    tick: u64,
    bytes: u64,
    budget: u64,
    evictions: u64,
}

impl<K> Cache<K> {
    pub(crate) fn new(budget: u64) -> Cache<K> {
        Cache { keys: BTreeMap::new(), order: BTreeMap::new(), tick: 0, bytes: 0, budget, evictions: 0 }
    }

    /// Looks a key up and marks it most recently used.
    pub(crate) fn touch(&mut self, id: &KeyId) -> Option<&Entry<K>> {
        self.tick += 1;
        let tick = self.tick;
        let e = self.keys.get_mut(id)?;
        self.order.remove(&e.tick);
        e.tick = tick;
        self.order.insert(tick, *id);
        Some(e)
    }

    /// Looks a key up without marking it used.
    pub(crate) fn get(&self, id: &KeyId) -> Option<&Entry<K>> {
        self.keys.get(id)
    }

    /// Drops a key; false when it was not cached.
    pub(crate) fn remove(&mut self, id: &KeyId) -> bool {
        match self.keys.remove(id) {
            Some(e) => {
                self.order.remove(&e.tick);
                self.bytes -= e.cost;
                true
            }
            None => false,
        }
    }

    fn evict_for(&mut self, cost: u64) {
        while self.bytes + cost > self.budget {
            let oldest = match self.order.iter().next() {
                Some((_, id)) => *id,
                None => return,
            };
            self.remove(&oldest);
            self.evictions += 1;
        }
    }

    /// Caches a key as the most recently used, evicting others to stay in
    /// budget. The caller has checked that the id is not cached yet.
    pub(crate) fn insert(&mut self, id: KeyId, spec: KeySpec, key: K, spki: Vec<u8>) {
        let cost = key_cost(spec) + spki.len() as u64 + ENTRY_OVERHEAD;
        self.evict_for(cost);
        self.tick += 1;
        self.bytes += cost;
        self.order.insert(self.tick, id);
        self.keys.insert(id, Entry { spec, key, spki, tick: self.tick, cost });
    }

    /// Sets the budget, evicting down to it at once.
    pub(crate) fn set_budget(&mut self, bytes: u64) {
        self.budget = bytes;
        self.evict_for(0);
    }

    /// Spec and id of the cached keys, most recently used first.
    pub(crate) fn most_recent_first(&self) -> impl Iterator<Item = (KeySpec, &KeyId)> {
        self.order.values().rev().filter_map(move |id| self.keys.get(id).map(|e| (e.spec, id)))
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// `(accounted bytes, budget, evictions)`.
    pub(crate) fn counters(&self) -> (u64, u64, u64) {
        (self.bytes, self.budget, self.evictions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A key handle that counts how many handles were dropped.
    struct Handle(Rc<Cell<u32>>);

    impl Drop for Handle {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    fn id(n: u8) -> KeyId {
        [n; 32]
    }

    fn spki() -> Vec<u8> {
        alloc::vec![0x30; 91]
    }

    /// The accounted cost of one P-256 key with a 91-byte SPKI.
    const P256: u64 = 768 + 91 + ENTRY_OVERHEAD;

    fn ids(c: &Cache<Handle>) -> Vec<u8> {
        c.most_recent_first().map(|(_, id)| id[0]).collect()
    }

    #[test]
    fn evicts_the_least_recently_used_key_and_drops_it() {
        let dropped = Rc::new(Cell::new(0));
        let mut c = Cache::new(3 * P256);
        for n in 1..=3 {
            c.insert(id(n), KeySpec::ECC_NIST_P256, Handle(dropped.clone()), spki());
        }
        assert_eq!(ids(&c), [3, 2, 1]);
        assert!(c.touch(&id(1)).is_some());
        assert_eq!(ids(&c), [1, 3, 2]);

        c.insert(id(4), KeySpec::ECC_NIST_P256, Handle(dropped.clone()), spki());
        assert_eq!(ids(&c), [4, 1, 3]);
        assert!(c.get(&id(2)).is_none());
        assert_eq!(dropped.get(), 1);
        assert_eq!(c.counters(), (3 * P256, 3 * P256, 1));
    }

    #[test]
    fn accounts_each_spec_and_frees_on_remove() {
        let dropped = Rc::new(Cell::new(0));
        let mut c = Cache::new(DEFAULT_CACHE_BYTES);
        c.insert(id(1), KeySpec::RSA_4096, Handle(dropped.clone()), alloc::vec![0; 550]);
        c.insert(id(2), KeySpec::ECC_NIST_P384, Handle(dropped.clone()), alloc::vec![0; 120]);
        let want = (12 * 1024 + 512 + 550 + ENTRY_OVERHEAD) + (1024 + 120 + ENTRY_OVERHEAD);
        assert_eq!(c.counters().0, want);
        assert_eq!(c.get(&id(2)).map(|e| e.spec), Some(KeySpec::ECC_NIST_P384));

        assert!(c.remove(&id(1)));
        assert!(!c.remove(&id(1)));
        assert_eq!(dropped.get(), 1);
        assert_eq!(c.len(), 1);
        assert_eq!(c.counters(), (1024 + 120 + ENTRY_OVERHEAD, DEFAULT_CACHE_BYTES, 0));
    }

    #[test]
    fn lowering_the_budget_evicts_at_once() {
        let dropped = Rc::new(Cell::new(0));
        let mut c = Cache::new(DEFAULT_CACHE_BYTES);
        for n in 1..=5 {
            c.insert(id(n), KeySpec::ECC_NIST_P256, Handle(dropped.clone()), spki());
        }
        c.set_budget(2 * P256);
        assert_eq!(ids(&c), [5, 4]);
        assert_eq!(dropped.get(), 3);
        assert_eq!(c.counters(), (2 * P256, 2 * P256, 3));

        // A key bigger than the whole budget still goes in, alone.
        c.set_budget(P256 - 1);
        c.insert(id(9), KeySpec::ECC_NIST_P256, Handle(dropped.clone()), spki());
        assert_eq!(ids(&c), [9]);
        assert_eq!(dropped.get(), 5);
    }

    #[test]
    fn touching_a_missing_key_finds_nothing_and_changes_nothing() {
        let mut c: Cache<Handle> = Cache::new(DEFAULT_CACHE_BYTES);
        assert!(c.touch(&id(1)).is_none());
        assert_eq!(c.len(), 0);
        assert_eq!(c.counters(), (0, DEFAULT_CACHE_BYTES, 0));
    }

    #[test]
    fn dropping_the_cache_drops_every_key() {
        let dropped = Rc::new(Cell::new(0));
        let mut c = Cache::new(DEFAULT_CACHE_BYTES);
        for n in 1..=4 {
            c.insert(id(n), KeySpec::RSA_2048, Handle(dropped.clone()), spki());
        }
        drop(c);
        assert_eq!(dropped.get(), 4);
    }
}
