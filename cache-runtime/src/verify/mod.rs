//! Rolling a resource out without fear: its mode ([`ResourceMode`]: `off`, `shadow`,
//! `on`), the share of hits re-verified in `on`, the bound on background verification
//! work, and what a detected mismatch is reported as ([`Mismatch`]: counted, logged at
//! WARN once per key per interval, kept in a short list for the dashboard). The
//! comparison itself is `diff.rs`; the shadow and verification runs are
//! `cache/shadow.rs` (engine) and `axum/shadow.rs` (requests). Nothing here performs
//! I/O, and nothing here ever holds a response body.

pub(crate) mod diff;

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// How a resource's `#[cached]` routes are served.
///
/// ```
/// use cache_runtime::ResourceMode;
///
/// assert_eq!("shadow".parse::<ResourceMode>(), Ok(ResourceMode::Shadow));
/// assert_eq!(ResourceMode::On.as_str(), "on");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceMode {
    /// Served uncached (`X-Cache: BYPASS`), as with `API_CACHE_DISABLED_RESOURCES`.
    Off,
    /// Served uncached by the handler (`X-Cache: BYPASS`); in the background the cache
    /// does what `on` would (lookup, store) and compares would-be hits with the fresh
    /// response. Cached plain functions of a shadowed resource are served uncached.
    Shadow,
    /// Cached; a share of hits may be re-verified (`API_CACHE_VERIFY`).
    #[default]
    On,
}

impl ResourceMode {
    /// `off`, `shadow` or `on`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceMode::Off => "off",
            ResourceMode::Shadow => "shadow",
            ResourceMode::On => "on",
        }
    }
}

impl FromStr for ResourceMode {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, ()> {
        match value.trim().to_ascii_lowercase().as_str() {
            "off" | "disabled" => Ok(ResourceMode::Off),
            "shadow" => Ok(ResourceMode::Shadow),
            "on" | "enabled" => Ok(ResourceMode::On),
            _ => Err(()),
        }
    }
}

/// Per-resource modes and verification shares, changeable at run time. The usual
/// request (every resource `on`, nothing verified) reads two atomics and takes no lock.
#[derive(Debug, Default)]
pub(crate) struct Rollout {
    /// Resources whose mode is not `on`.
    modes: RwLock<HashMap<String, ResourceMode>>,
    any_mode: AtomicBool,
    /// Resources with a verification share above 0.
    shares: RwLock<HashMap<String, f64>>,
    any_share: AtomicBool,
}

impl Rollout {
    pub(crate) fn new(
        modes: impl IntoIterator<Item = (String, ResourceMode)>,
        shares: impl IntoIterator<Item = (String, f64)>,
    ) -> Self {
        let rollout = Rollout::default();
        for (resource, mode) in modes {
            rollout.set_mode(&resource, mode);
        }
        for (resource, share) in shares {
            rollout.set_share(&resource, share);
        }
        rollout
    }

    pub(crate) fn mode(&self, resource: &str) -> ResourceMode {
        if !self.any_mode.load(Ordering::Relaxed) {
            return ResourceMode::On;
        }
        self.modes
            .read()
            .map(|modes| modes.get(resource).copied().unwrap_or(ResourceMode::On))
            // A poisoned lock: serve uncached, which is always correct.
            .unwrap_or(ResourceMode::Off)
    }

    pub(crate) fn set_mode(&self, resource: &str, mode: ResourceMode) {
        if let Ok(mut modes) = self.modes.write() {
            if mode == ResourceMode::On {
                modes.remove(resource);
            } else {
                modes.insert(resource.to_owned(), mode);
            }
            self.any_mode.store(!modes.is_empty(), Ordering::Relaxed);
        }
    }

    pub(crate) fn share(&self, resource: &str) -> f64 {
        if !self.any_share.load(Ordering::Relaxed) {
            return 0.0;
        }
        self.shares
            .read()
            .ok()
            .and_then(|shares| shares.get(resource).copied())
            .unwrap_or(0.0)
    }

    pub(crate) fn set_share(&self, resource: &str, share: f64) {
        let share = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        if let Ok(mut shares) = self.shares.write() {
            if share > 0.0 {
                shares.insert(resource.to_owned(), share);
            } else {
                shares.remove(resource);
            }
            self.any_share.store(!shares.is_empty(), Ordering::Relaxed);
        }
    }
}

/// A fresh response that differs from the entry the cache held (or would have served)
/// under unchanged generations: a write the resource's `#[invalidates]` did not
/// announce. Never holds either body.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    /// The entry's resource.
    pub resource: String,
    /// The `#[cached]` function (`module::name`).
    pub function: String,
    /// The request path (without the query).
    pub path: String,
    /// The tenant as stored in the key (`{t.org_1}`, or `{global}`).
    pub tenant: String,
    /// The entry's key.
    pub key: String,
    /// How long the entry had been stored, seconds.
    pub age_secs: u64,
    /// What differs: the first differing JSON path, or sizes and the first differing byte.
    pub difference: String,
    /// `shadow` (a would-be hit) or `verify` (a sampled hit in `on`).
    pub found_by: &'static str,
}

/// How many keys the WARN limiter remembers, and how many mismatches stay listed.
const WARNED_KEYS: usize = 1024;
const RECENT: usize = 32;

/// Mismatch reports: WARN once per key per interval (a bounded map of the keys warned
/// about), and the last few kept for the dashboard and tests.
#[derive(Debug)]
pub(crate) struct Reports {
    interval: Duration,
    warned: Mutex<HashMap<String, Instant>>,
    recent: Mutex<VecDeque<Mismatch>>,
}

impl Reports {
    pub(crate) fn new(interval: Duration) -> Self {
        Reports {
            interval,
            warned: Mutex::default(),
            recent: Mutex::default(),
        }
    }

    pub(crate) fn report(&self, mismatch: Mismatch) {
        if self.should_warn(&mismatch.key, Instant::now()) {
            tracing::warn!(
                target: "api_cache",
                resource = %mismatch.resource,
                function = %mismatch.function,
                path = %mismatch.path,
                tenant = %mismatch.tenant,
                key = %mismatch.key,
                age_s = mismatch.age_secs,
                difference = %mismatch.difference,
                found_by = mismatch.found_by,
                "cached response differs from a fresh one under unchanged generations: \
                 a write to this resource is not invalidated (missing #[invalidates]?)"
            );
        }
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(mismatch);
        }
    }

    pub(crate) fn recent(&self) -> Vec<Mismatch> {
        self.recent
            .lock()
            .map(|recent| recent.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `key` was not warned about within the interval; remembers it if so.
    fn should_warn(&self, key: &str, now: Instant) -> bool {
        let Ok(mut warned) = self.warned.lock() else {
            return false;
        };
        if let Some(last) = warned.get(key) {
            if now.duration_since(*last) < self.interval {
                return false;
            }
        }
        if warned.len() >= WARNED_KEYS && !warned.contains_key(key) {
            let interval = self.interval;
            warned.retain(|_, last| now.duration_since(*last) < interval);
            if warned.len() >= WARNED_KEYS {
                // Still full of recent keys: forget one (any), so the map stays bounded;
                // that key may be warned about again early, which is the lesser harm.
                if let Some(victim) = warned.keys().next().cloned() {
                    warned.remove(&victim);
                }
            }
        }
        warned.insert(key.to_owned(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_default_to_on() {
        let rollout = Rollout::new([("contacts".to_owned(), ResourceMode::Shadow)], []);
        assert_eq!(rollout.mode("contacts"), ResourceMode::Shadow);
        assert_eq!(rollout.mode("templates"), ResourceMode::On);
        rollout.set_mode("contacts", ResourceMode::On);
        assert_eq!(rollout.mode("contacts"), ResourceMode::On);
        assert!(!rollout.any_mode.load(Ordering::Relaxed));
        assert_eq!("SHADOW".parse(), Ok(ResourceMode::Shadow));
        assert!("sometimes".parse::<ResourceMode>().is_err());
        rollout.set_share("contacts", 7.0);
        assert_eq!(rollout.share("contacts"), 1.0);
        rollout.set_share("contacts", f64::NAN);
        assert_eq!(rollout.share("contacts"), 0.0);
    }

    #[test]
    fn warns_once_per_key_per_interval_and_stays_bounded() {
        let reports = Reports::new(Duration::from_secs(60));
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        assert!(reports.should_warn("k1", at(0)));
        assert!(!reports.should_warn("k1", at(0)));
        assert!(reports.should_warn("k2", at(1)));
        assert!(!reports.should_warn("k1", at(59)));
        assert!(reports.should_warn("k1", at(60)));
        // Many keys within one interval: every one is new and warned about, and the map
        // never holds more than its bound.
        for i in 0..WARNED_KEYS * 3 {
            assert!(reports.should_warn(&format!("many{i}"), at(61)));
        }
        let remembered = reports.warned.lock().unwrap().len();
        assert!(remembered <= WARNED_KEYS, "{remembered}");
        assert_eq!(remembered, WARNED_KEYS);
    }
}
