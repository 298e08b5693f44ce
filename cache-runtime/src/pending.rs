//! Invalidations that could not be delivered to Redis yet.
//!
//! While one is pending, this instance serves every entry guarded by that generation key
//! uncached (the tenant's data may have changed and Redis does not know yet). A
//! background task redelivers until Redis accepts. The set lives in process memory: a
//! restart of the instance forgets it, and then the entries' TTL bounds the staleness
//! other readers can see. The lookup path checks one atomic when nothing is pending.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub(crate) struct Pending {
    count: AtomicUsize,
    /// generation key -> (tenant tag, version); the version tells a redelivery whether
    /// the key was deferred again meanwhile.
    keys: Mutex<HashMap<String, (String, u64)>>,
    next_version: AtomicUsize,
}

impl Pending {
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// True when any of these generation keys has an undelivered invalidation.
    pub(crate) fn blocks(&self, generation_keys: &[String]) -> bool {
        if self.len() == 0 {
            return false;
        }
        match self.keys.lock() {
            Ok(keys) => generation_keys.iter().any(|k| keys.contains_key(k)),
            // A poisoned lock: be safe, serve uncached.
            Err(_) => true,
        }
    }

    pub(crate) fn add(&self, tenant_tag: &str, generation_keys: &[String]) {
        let version = self.next_version.fetch_add(1, Ordering::Relaxed) as u64;
        if let Ok(mut keys) = self.keys.lock() {
            for key in generation_keys {
                keys.insert(key.clone(), (tenant_tag.to_owned(), version));
            }
            self.count.store(keys.len(), Ordering::Release);
        }
    }

    /// Drops these keys because a later invalidation of them was delivered.
    pub(crate) fn delivered(&self, generation_keys: &[String]) {
        if self.len() == 0 {
            return;
        }
        if let Ok(mut keys) = self.keys.lock() {
            for key in generation_keys {
                keys.remove(key);
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
