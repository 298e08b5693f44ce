//! The registry of every `#[cached]` and `#[invalidates]` in the program, filled at link
//! time by the attributes (through `inventory`), and a check over it that catches wrong
//! resource names before production: run [`check_resources`] in a test.

use std::collections::{BTreeMap, BTreeSet};

use crate::spec::Registration;

inventory::collect!(Registration);

/// Every registration in the program.
pub(crate) fn registrations() -> impl Iterator<Item = &'static Registration> {
    inventory::iter::<Registration>.into_iter()
}

/// The staleness bound each resource's routes declare (`stale_after_invalidation`), the
/// longest when several do; resources whose routes are all strict are absent. For tools
/// that check read-your-writes from outside, like the demo's report.
///
/// ```
/// // In a program without bounded routes, every resource is strict.
/// assert!(cache_runtime::registry::staleness_bounds().is_empty());
/// ```
pub fn staleness_bounds() -> BTreeMap<&'static str, u32> {
    let mut bounds = BTreeMap::new();
    for registration in registrations() {
        if let Registration::Cached {
            resource,
            stale_after_invalidation_secs,
            ..
        } = registration
        {
            if *stale_after_invalidation_secs > 0 {
                let bound = bounds.entry(*resource).or_insert(0);
                *bound = (*bound).max(*stale_after_invalidation_secs);
            }
        }
    }
    bounds
}

/// A likely mistake in resource names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceProblem {
    /// `#[invalidates("x")]` where no `#[cached]` uses `x` as resource or tag: a typo, or
    /// an invalidation that does nothing.
    InvalidatesUnknown {
        /// The resource name.
        resource: &'static str,
        /// The invalidating functions.
        functions: Vec<&'static str>,
    },
    /// A cached resource that nothing invalidates, cached for an hour or more: writes
    /// will be invisible for that long.
    NeverInvalidated {
        /// The resource name.
        resource: &'static str,
        /// The cached functions.
        functions: Vec<&'static str>,
        /// The longest TTL among them, seconds.
        ttl_secs: u32,
    },
}

impl std::fmt::Display for ResourceProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResourceProblem::InvalidatesUnknown {
                resource,
                functions,
            } => write!(
                f,
                "#[invalidates(\"{resource}\")] on {} matches no #[cached] resource or tag",
                functions.join(", ")
            ),
            ResourceProblem::NeverInvalidated {
                resource,
                functions,
                ttl_secs,
            } => write!(
                f,
                "resource \"{resource}\" ({}) is cached for {ttl_secs}s and nothing invalidates it",
                functions.join(", ")
            ),
        }
    }
}

/// TTLs below this are acceptable without an invalidation.
pub const UNINVALIDATED_TTL_LIMIT_SECS: u32 = 3600;

/// Checks every registration of the program.
///
/// ```
/// // In a test of your app:
/// let problems = cache_runtime::registry::check_resources();
/// assert!(problems.is_empty(), "{problems:#?}");
/// ```
pub fn check_resources() -> Vec<ResourceProblem> {
    check(registrations())
}

/// [`check_resources`] over any set of registrations.
pub(crate) fn check<'a>(
    registrations: impl IntoIterator<Item = &'a Registration>,
) -> Vec<ResourceProblem> {
    // resource -> (functions, longest TTL, tags)
    let mut cached: BTreeMap<&'static str, (Vec<&'static str>, u32, BTreeSet<&'static str>)> =
        BTreeMap::new();
    let mut cached_names: BTreeSet<&'static str> = BTreeSet::new();
    let mut invalidated: BTreeMap<&'static str, Vec<&'static str>> = BTreeMap::new();
    for registration in registrations {
        match registration {
            Registration::Cached {
                resource,
                tags,
                ttl_secs,
                function,
                ..
            } => {
                let slot = cached.entry(resource).or_default();
                slot.0.push(function);
                slot.1 = slot.1.max(*ttl_secs);
                slot.2.extend(tags.iter().copied());
                cached_names.insert(resource);
                cached_names.extend(tags.iter().copied());
            }
            Registration::Invalidates {
                resources,
                function,
            } => {
                for resource in resources.iter() {
                    invalidated.entry(resource).or_default().push(function);
                }
            }
        }
    }
    let mut problems = Vec::new();
    for (resource, functions) in &invalidated {
        if !cached_names.contains(resource) {
            problems.push(ResourceProblem::InvalidatesUnknown {
                resource,
                functions: functions.clone(),
            });
        }
    }
    for (resource, (functions, ttl_secs, tags)) in cached {
        let invalidated_somehow = invalidated.contains_key(resource)
            || tags.iter().any(|tag| invalidated.contains_key(tag));
        if ttl_secs >= UNINVALIDATED_TTL_LIMIT_SECS && !invalidated_somehow {
            problems.push(ResourceProblem::NeverInvalidated {
                resource,
                functions,
                ttl_secs,
            });
        }
    }
    problems
}
