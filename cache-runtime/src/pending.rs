//! Invalidations that could not be delivered to Redis yet.
//!
//! While one is pending, this instance serves every entry guarded by that generation key
//! uncached (the tenant's data may have changed and Redis does not know yet). A
//! background task redelivers until Redis accepts. The set lives in process memory: a
//! restart of the instance forgets it, and then the entries' TTL bounds the staleness
//! other readers can see. The lookup path checks one atomic when nothing is pending.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::key::KeyList;

#[derive(Debug, Default)]
pub(crate) struct Pending {
    count: AtomicUsize,
    /// generation key -> (tenant tag, version); the version tells a redelivery whether
    /// the key was deferred again meanwhile.
    keys: Mutex<HashMap<String, (String, u64)>>,
    next_version: AtomicU64,
}

impl Pending {
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// True when any of these generation keys has an undelivered invalidation.
    pub(crate) fn blocks(&self, generation_keys: &(impl KeyList + ?Sized)) -> bool {
        if self.len() == 0 {
            return false;
        }
        match self.keys.lock() {
            Ok(keys) => generation_keys.key_iter().any(|k| keys.contains_key(k)),
            // A poisoned lock: be safe, serve uncached.
            Err(_) => true,
        }
    }

    /// The version the next deferral will get. Taken before an invalidation is sent, it
    /// tells [`delivered`](Self::delivered) which deferrals that delivery covers: those
    /// made before it was sent (their fresh tokens were written before ours).
    pub(crate) fn mark(&self) -> u64 {
        self.next_version.load(Ordering::SeqCst)
    }

    pub(crate) fn add(&self, tenant_tag: &str, generation_keys: &(impl KeyList + ?Sized)) {
        let version = self.next_version.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut keys) = self.keys.lock() {
            for key in generation_keys.key_iter() {
                keys.insert(key.to_owned(), (tenant_tag.to_owned(), version));
            }
            self.count.store(keys.len(), Ordering::Release);
        }
    }

    /// Drops these keys because an invalidation of them, sent after `mark` was taken
    /// ([`mark`](Self::mark)), was delivered. A deferral made while that invalidation was
    /// in flight (version `mark` or later) stays: its own write may have been lost, and
    /// nothing says ours reached Redis after it.
    pub(crate) fn delivered(&self, generation_keys: &(impl KeyList + ?Sized), mark: u64) {
        if self.len() == 0 {
            return;
        }
        if let Ok(mut keys) = self.keys.lock() {
            for key in generation_keys.key_iter() {
                if keys.get(key).is_some_and(|(_, version)| *version < mark) {
                    keys.remove(key);
                }
            }
            self.count.store(keys.len(), Ordering::Release);
        }
    }

    /// The pending keys grouped by tenant tag (one hash slot each), with versions.
    pub(crate) fn snapshot(&self) -> HashMap<String, Vec<(String, u64)>> {
        let mut by_tenant: HashMap<String, Vec<(String, u64)>> = HashMap::new();
        if let Ok(keys) = self.keys.lock() {
            for (key, (tenant, version)) in keys.iter() {
                by_tenant
                    .entry(tenant.clone())
                    .or_default()
                    .push((key.clone(), *version));
            }
        }
        by_tenant
    }

    /// Drops the keys a redelivery covered, unless they were deferred again since.
    pub(crate) fn redelivered(&self, delivered: &[(String, u64)]) {
        if let Ok(mut keys) = self.keys.lock() {
            for (key, version) in delivered {
                if keys.get(key).map(|(_, v)| v) == Some(version) {
                    keys.remove(key);
                }
            }
            self.count.store(keys.len(), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_delivery_drops_deferrals_made_before_it_was_sent() {
        let pending = Pending::default();
        let contacts = keys(&["g:contacts"]);
        pending.add("t.org_1", &contacts);
        let mark = pending.mark();
        pending.delivered(&contacts, mark);
        assert!(!pending.blocks(&contacts));
        assert_eq!(pending.len(), 0);
    }

    /// The lost-invalidation bug: an MSET is in flight, another invalidation of the same
    /// key fails meanwhile and is deferred, then the first MSET succeeds. The deferral
    /// must survive: nothing says its write reached Redis.
    #[test]
    fn a_deferral_made_while_a_delivery_was_in_flight_survives_it() {
        let pending = Pending::default();
        let contacts = keys(&["g:contacts", "g:analytics"]);
        let mark = pending.mark(); // the first invalidation is sent
        pending.add("t.org_1", &contacts[..1]); // a second one fails and is deferred
        pending.delivered(&contacts, mark); // the first one's MSET succeeds
        assert!(pending.blocks(&contacts[..1]), "the deferral was lost");
        assert_eq!(pending.len(), 1);
        // A delivery sent after that deferral covers it.
        let later = pending.mark();
        pending.delivered(&contacts, later);
        assert!(!pending.blocks(&contacts));
    }

    #[test]
    fn a_redelivery_keeps_keys_deferred_again_since_its_snapshot() {
        let pending = Pending::default();
        let contacts = keys(&["g:contacts"]);
        pending.add("t.org_1", &contacts);
        let snapshot = pending.snapshot().remove("t.org_1").unwrap();
        pending.add("t.org_1", &contacts);
        pending.redelivered(&snapshot);
        assert!(pending.blocks(&contacts));
        let snapshot = pending.snapshot().remove("t.org_1").unwrap();
        pending.redelivered(&snapshot);
        assert!(!pending.blocks(&contacts));
    }
}
