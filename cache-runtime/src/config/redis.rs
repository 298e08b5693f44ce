//! The Redis side of the configuration: where the backend connects, which replicas
//! confirm an invalidation, and URLs made fit for logs.

/// Which replicas must acknowledge an invalidation (Redis `WAIT`), read from
/// `API_CACHE_WAIT_REPLICAS`.
///
/// The invalidation is written, pipelined with `ROLE` (one round trip); when `ROLE` says
/// the server is a primary with connected replicas, `WAIT` asks for the acknowledgements,
/// bounded by half the response timeout. With no replicas (or `Off`) there is no extra
/// round trip.
///
/// ```
/// use cache_runtime::{CacheConfig, WaitReplicas};
///
/// let config = CacheConfig::from_lookup(|name| {
///     (name == "API_CACHE_WAIT_REPLICAS").then(|| "1".to_owned())
/// })
/// .unwrap();
/// assert_eq!(config.wait_replicas, WaitReplicas::AtLeast(1));
/// assert_eq!(WaitReplicas::AtLeast(1).wanted(3), 1);
/// assert_eq!(WaitReplicas::All.wanted(3), 3);
/// assert_eq!(CacheConfig::default().with_wait_replicas(WaitReplicas::Off).wait_replicas.wanted(3), 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReplicas {
    /// Do not wait: an invalidation the primary accepted is delivered (it is lost if
    /// the primary fails before replicating it).
    Off,
    /// Every replica `ROLE` lists as connected.
    All,
    /// This many replicas, or every connected one when fewer are connected.
    AtLeast(u32),
}

impl WaitReplicas {
    /// How many acknowledgements to wait for when `connected` replicas are connected.
    pub fn wanted(self, connected: usize) -> usize {
        match self {
            WaitReplicas::Off => 0,
            WaitReplicas::All => connected,
            WaitReplicas::AtLeast(n) => connected.min(usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }
}

/// Where the Redis backend connects: one server (or a primary behind one address), or
/// a cluster through its seed nodes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RedisTarget<'a> {
    Standalone(&'a str),
    Cluster(&'a [String]),
}

impl RedisTarget<'_> {
    pub(crate) fn uses_tls(self) -> bool {
        match self {
            RedisTarget::Standalone(url) => url.starts_with("rediss://"),
            RedisTarget::Cluster(seeds) => seeds.iter().any(|url| url.starts_with("rediss://")),
        }
    }

    /// The URL(s) with passwords replaced, for logs and errors.
    pub(crate) fn for_logs(self) -> String {
        match self {
            RedisTarget::Standalone(url) => redact(url),
            RedisTarget::Cluster(seeds) => seeds
                .iter()
                .map(|url| redact(url))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// A URL with its password replaced, fit for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
