//! The cache handle: lookup, store, invalidation and the miss path (single flight,
//! lease, early refresh) over either backend, with timeouts, the circuit breaker,
//! pending invalidations and stats applied uniformly. It knows nothing of HTTP; the axum
//! glue and the plain-function support sit on top. No method here returns a store fault
//! to a request path: faults become misses or bypasses and are counted.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::backend::{memory::MemoryBackend, redis::RedisBackend, Backend, EntrySlot};
use crate::circuit::{Circuit, Permit, ProbeGuard};
use crate::config::CacheConfig;
use crate::entry::{now_ms, CachedResponse, Entry};
use crate::error::{BackendError, ConfigError, InvalidationError};
use crate::flight::{Flights, Join};
use crate::generation::Generation;
use crate::key::{self, CacheKey, InvalidResource, KeyBuilder, Tenant};
use crate::pending::Pending;
use crate::stats::{CircuitSnapshot, Event, Outcome, Stats, StatsSnapshot};
use tracing::Instrument;

/// A handle to the cache: cheap to clone, shared by every request.
///
/// ```
/// use std::time::Duration;
/// use cache_runtime::{key::Tenant, Cache, CacheConfig, CachedResponse, Lookup};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// // In-memory unless REDIS_URL is set; Cache::from_env() reads the environment.
/// let cache = Cache::new(CacheConfig::default()).await.unwrap();
/// let key = cache.key(Tenant::Scoped("org_1"), "templates").unwrap()
///     .request("GET", "/api/templates", None)
///     .build();
///
/// let Lookup::Miss(ticket) = cache.lookup(&key).await else { unreachable!() };
/// cache.store(ticket, CachedResponse::ok("[]"), Duration::from_secs(1800)).await.unwrap();
/// assert!(matches!(cache.lookup(&key).await, Lookup::Hit(_)));
///
/// cache.invalidate("org_1", &["templates"]).await.unwrap();
/// assert!(matches!(cache.lookup(&key).await, Lookup::Miss(_)));
/// # });
/// ```
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    config: CacheConfig,
    backend: Backend,
    enabled: AtomicBool,
    disabled_resources: RwLock<HashSet<String>>,
    /// Whether `disabled_resources` has any: read first, so that the usual request (none
    /// switched off) does not take the lock, whose count every worker would write.
    any_resource_disabled: AtomicBool,
    stats: Stats,
    circuit: Circuit,
    pending: Pending,
    flights: Arc<Flights>,
    redelivery_running: AtomicBool,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &self.inner.backend)
            .field("prefix", &self.inner.config.prefix)
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

/// The result of [`Cache::lookup`].
#[derive(Debug)]
pub enum Lookup {
    /// A valid entry: serve it.
    Hit(Arc<Entry>),
    /// No valid entry: compute, then [`Cache::store`] with this ticket.
    Miss(MissTicket),
    /// The cache is not consulted for this key now; compute and do not store.
    Bypass(BypassReason),
}

/// Why a request was served without the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// The global switch is off.
    Disabled,
    /// This resource is switched off.
    ResourceDisabled,
    /// An invalidation of this tenant and resource has not reached Redis yet.
    PendingInvalidation,
    /// Redis is failing; the circuit breaker stops trying for a while.
    CircuitOpen,
    /// The request carries no tenant scope (and the route is not `scope = global`).
    NoScope,
    /// `vary = user` and the request's scope has no user.
    NoUser,
    /// Only GET and HEAD are cached.
    Method,
    /// The route says `skip_cache`.
    SkipCache,
}

impl BypassReason {
    /// A short name for logs and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            BypassReason::Disabled => "disabled",
            BypassReason::ResourceDisabled => "resource-disabled",
            BypassReason::PendingInvalidation => "pending-invalidation",
            BypassReason::CircuitOpen => "circuit-open",
            BypassReason::NoScope => "no-scope",
            BypassReason::NoUser => "no-user",
            BypassReason::Method => "method",
            BypassReason::SkipCache => "skip-cache",
        }
    }
}

/// Proof of a miss: the key and the generations read *before* computing, which the
/// stored entry will carry. An invalidation after the lookup makes the entry stale on
/// arrival, so a slow computation can never be served after a newer write.
#[derive(Debug)]
pub struct MissTicket {
    key: CacheKey,
    /// `None` when the lookup failed: the result must not be stored.
    generations: Option<Vec<Generation>>,
    started: Instant,
    /// The still-valid entry when this miss is an early refresh (XFetch): what to serve
    /// if another request is already refreshing it.
    refreshing: Option<Arc<Entry>>,
}

impl MissTicket {
    /// The key that missed.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// False when the lookup itself failed (Redis unreachable): a result computed under
    /// this ticket will not be stored, since its generations are unknown.
    pub fn can_store(&self) -> bool {
        self.generations.is_some()
    }

    /// True when the entry was valid but chosen for early refresh (XFetch).
    pub fn is_early_refresh(&self) -> bool {
        self.refreshing.is_some()
    }
}

/// What [`Cache::resolve`] ended in.
pub(crate) enum Resolved<T, Fut> {
    /// Served from an entry; `compute` was not polled and is handed back.
    Entry { entry: Arc<Entry>, compute: Fut },
    /// Computed here.
    Computed {
        value: T,
        outcome: Outcome,
        /// The bypass reason when `outcome` is `Bypass`.
        bypass: Option<BypassReason>,
        /// Whether the result was (or is being) stored.
        stored: bool,
        /// The lookup itself failed (a store fault): served uncached, counted as an error.
        lookup_failed: bool,
    },
}

/// The cache installed with [`Cache::install_global`].
static GLOBAL: OnceLock<Cache> = OnceLock::new();
/// The one [`Cache::global`] builds from the environment when none was installed, for
/// cached plain functions only: handlers never fall back to it.
static FROM_ENV: OnceLock<Cache> = OnceLock::new();

tokio::task_local! {
    /// The cache of the request (or [`Cache::scope`]) being served on this task.
    static CURRENT: Cache;
}

/// The least time one redelivery attempt gets, whatever the response timeout: it is off
/// the request path, and a short timeout would keep failing on a loaded server.
const REDELIVERY_TIMEOUT_MIN: Duration = Duration::from_millis(100);

/// How long a finished flight stays visible after its entry reached Redis.
const FLIGHT_GRACE: Duration = Duration::from_millis(500);

/// Makes rustls usable for `rediss://`: installs the ring provider as the process default
/// unless the application installed one already.
#[cfg(feature = "tls")]
fn prepare_tls(_url: &str) -> Result<(), ConfigError> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: a provider is then installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    Ok(())
}

#[cfg(not(feature = "tls"))]
fn prepare_tls(url: &str) -> Result<(), ConfigError> {
    Err(ConfigError::RedisUrl(format!(
        "{}: rediss:// needs cache-runtime's `tls` feature",
        crate::config::redact(url)
    )))
}

/// Waits for a flight's leader to publish. A separate function so that the channel's read
/// guard (not `Send`) never lives across an await of the caller.
async fn wait_for_flight(
    mut receiver: tokio::sync::watch::Receiver<Option<crate::flight::FlightResult>>,
    wait: Duration,
) -> Option<Arc<Entry>> {
    match tokio::time::timeout(wait, receiver.wait_for(Option::is_some)).await {
        Ok(Ok(result)) => result.clone().flatten(),
        _ => None,
    }
}

impl Cache {
    /// Builds a cache from `config`. With a Redis URL it connects lazily and pings once
    /// within the connect timeout; an unreachable Redis is logged, not an error: requests
    /// are served uncached until it answers. Only an unusable configuration fails.
    pub async fn new(config: CacheConfig) -> Result<Cache, ConfigError> {
        let cache = Cache::build(config)?;
        if let Backend::Redis(redis) = &cache.inner.backend {
            let wait = cache.inner.config.connect_timeout + cache.inner.config.response_timeout;
            match tokio::time::timeout(wait, redis.ping()).await {
                Ok(Ok(())) => {
                    tracing::info!(target: "api_cache", url = redis.url_for_logs(), "connected to Redis")
                }
                Ok(Err(err)) => {
                    tracing::warn!(target: "api_cache", url = redis.url_for_logs(), error = %err, "Redis unavailable: serving uncached until it answers")
                }
                Err(_) => {
                    tracing::warn!(target: "api_cache", url = redis.url_for_logs(), "Redis did not answer in time: serving uncached until it answers")
                }
            }
        }
        Ok(cache)
    }

    /// [`Cache::new`] with [`CacheConfig::from_env`].
    pub async fn from_env() -> Result<Cache, ConfigError> {
        Cache::new(CacheConfig::from_env()?).await
    }

    fn build(config: CacheConfig) -> Result<Cache, ConfigError> {
        config.validate()?;
        let backend = match config.redis_target() {
            Some(target) => {
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(ConfigError::NoRuntime);
                }
                if target.uses_tls() {
                    prepare_tls(&target.for_logs())?;
                }
                let backend = RedisBackend::new(target, &config).map_err(|err| {
                    ConfigError::RedisUrl(format!("{}: {err}", target.for_logs()))
                })?;
                Backend::Redis(backend)
            }
            None => {
                tracing::info!(target: "api_cache", max_bytes = config.memory_max_bytes, "cache backend: in-memory, per process: several instances do not see each other's invalidations (set REDIS_URL for that)");
                Backend::Memory(MemoryBackend::new(
                    config.memory_max_bytes,
                    config.generation_ttl,
                ))
            }
        };
        Ok(Cache {
            inner: Arc::new(Inner {
                enabled: AtomicBool::new(config.enabled),
                disabled_resources: RwLock::new(config.disabled_resources.clone()),
                any_resource_disabled: AtomicBool::new(!config.disabled_resources.is_empty()),
                circuit: Circuit::new(config.circuit_failures, config.circuit_open_for),
                stats: Stats::default(),
                pending: Pending::default(),
                flights: Arc::new(Flights::default()),
                redelivery_running: AtomicBool::new(false),
                backend,
                config,
            }),
        })
    }

    /// Makes this the process-wide cache used by cached plain functions and by handlers
    /// whose request carries no [`Cache`] extension. Fails (returning it) if one is set.
    pub fn install_global(self) -> Result<(), Cache> {
        GLOBAL.set(self)
    }

    /// The cache installed with [`Cache::install_global`], if any.
    pub(crate) fn installed() -> Option<Cache> {
        GLOBAL.get().cloned()
    }

    /// The process-wide cache for cached plain functions called outside any request: the
    /// installed one, else one built from the environment on first use (a configuration
    /// error is logged and yields a switched-off cache, so the app still answers,
    /// uncached). `#[cached]` and `#[invalidates]` handlers never use the one built
    /// here: without the router's layer or an installed cache they serve uncached.
    pub fn global() -> &'static Cache {
        if let Some(installed) = GLOBAL.get() {
            return installed;
        }
        FROM_ENV.get_or_init(|| {
            let config = CacheConfig::from_env().unwrap_or_else(|err| {
                tracing::error!(target: "api_cache", error = %err, "invalid cache configuration: caching is off");
                CacheConfig::default().with_enabled(false)
            });
            Cache::build(config.clone()).unwrap_or_else(|err| {
                tracing::error!(target: "api_cache", error = %err, "cannot create the cache: caching is off");
                // The default in-memory configuration always builds.
                Cache::build(CacheConfig::default().with_enabled(false)).unwrap_or_else(|_| unreachable!())
            })
        })
    }

    /// The cache cached plain functions use here: the one of the `#[cached]` or
    /// `#[invalidates]` handler (or [`Cache::scope`]) being run on this task, else
    /// [`Cache::global`].
    pub fn current() -> Cache {
        CURRENT
            .try_with(Cache::clone)
            .unwrap_or_else(|_| Cache::global().clone())
    }

    /// Runs `future` with this cache as [`Cache::current`]: cached plain functions it
    /// calls (and invalidations through [`crate::invalidate`]) use this cache. Handlers
    /// under `#[cached]` / `#[invalidates]` are run this way already.
    ///
    /// ```
    /// use cache_runtime::{Cache, CacheConfig};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = Cache::new(CacheConfig::default().with_prefix("jobs")).await.unwrap();
    /// let prefix = cache.scope(async { Cache::current().config().prefix.clone() }).await;
    /// assert_eq!(prefix, "jobs");
    /// # });
    /// ```
    pub fn scope<F: Future>(&self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self.clone(), future)
    }

    /// An axum layer (`Extension`) that hands this cache to `#[cached]` and
    /// `#[invalidates]` handlers of the router it wraps.
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use cache_runtime::{Cache, CacheConfig};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = Cache::new(CacheConfig::default()).await.unwrap();
    /// let app: Router = Router::new().route("/", get(|| async { "hi" })).layer(cache.layer());
    /// # });
    /// ```
    pub fn layer(&self) -> axum::Extension<Cache> {
        axum::Extension(self.clone())
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// `"redis"`, `"redis-cluster"` or `"memory"`.
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// Starts a key for `resource` of `tenant`.
    pub fn key(&self, tenant: Tenant<'_>, resource: &str) -> Result<KeyBuilder, InvalidResource> {
        KeyBuilder::new(&self.inner.config.prefix, tenant, resource)
    }

    /// Turns caching on or off for every resource at run time. Invalidations are
    /// delivered either way.
    pub fn set_enabled(&self, enabled: bool) {
        self.inner.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Whether the global switch is on.
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled.load(Ordering::Relaxed)
    }

    /// Turns caching of one resource on or off at run time (a rollback without a deploy).
    pub fn set_resource_enabled(&self, resource: &str, enabled: bool) {
        if let Ok(mut disabled) = self.inner.disabled_resources.write() {
            if enabled {
                disabled.remove(resource);
            } else {
                disabled.insert(resource.to_owned());
            }
            self.inner
                .any_resource_disabled
                .store(!disabled.is_empty(), Ordering::Relaxed);
        }
    }

    /// Whether `resource` is cached (the global switch aside).
    pub fn is_resource_enabled(&self, resource: &str) -> bool {
        if !self.inner.any_resource_disabled.load(Ordering::Relaxed) {
            return true;
        }
        self.inner
            .disabled_resources
            .read()
            .map(|d| d.is_empty() || !d.contains(resource))
            .unwrap_or(false)
    }

    /// A copy of every counter.
    pub fn stats(&self) -> StatsSnapshot {
        let circuit = if self.inner.backend.is_remote() {
            self.inner.circuit.snapshot()
        } else {
            CircuitSnapshot::NotApplicable
        };
        self.inner.stats.snapshot(circuit, self.inner.pending.len())
    }

    /// Hits as a percentage of lookups since start, like the reference's `getCacheHitRate()`.
    pub fn hit_rate(&self) -> f64 {
        self.stats().hit_rate
    }

    /// Whether the store answers now: a ping bounded by the response timeout. Never hangs.
    pub async fn is_available(&self) -> bool {
        let timeout = self
            .inner
            .config
            .response_timeout
            .max(Duration::from_millis(1));
        match tokio::time::timeout(timeout, self.inner.backend.ping()).await {
            Ok(Ok(())) => {
                self.inner.circuit.on_success();
                true
            }
            _ => false,
        }
    }

    /// Entries held by the in-memory backend (`None` for Redis).
    pub fn memory_entry_count(&self) -> Option<u64> {
        match &self.inner.backend {
            Backend::Memory(m) => Some(m.entry_count()),
            Backend::Redis(_) => None,
        }
    }

    /// Bytes held by the in-memory backend, as weighed for its bound (`None` for Redis).
    pub fn memory_weighted_size(&self) -> Option<u64> {
        match &self.inner.backend {
            Backend::Memory(m) => Some(m.weighted_size()),
            Backend::Redis(_) => None,
        }
    }

    pub(crate) fn note_ttl(&self, resource: &str, ttl_secs: u32) {
        self.inner.stats.note_ttl(resource, ttl_secs);
    }

    /// Counts a hit of a route whose TTL is `ttl_secs`.
    pub(crate) fn record_hit(&self, resource: &str, ttl_secs: u32) {
        self.inner.stats.record_hit(resource, ttl_secs);
    }

    pub(crate) fn record_handler_time(&self, resource: &str, elapsed: Duration) {
        self.inner.stats.record_handler_time(resource, elapsed);
    }

    pub(crate) fn record(&self, resource: Option<&str>, event: Event) {
        self.inner.stats.record(resource, event);
    }

    /// Runs one backend operation under the circuit breaker and the response timeout.
    async fn call<T>(
        &self,
        op: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        if !self.inner.backend.is_remote() {
            return op.await;
        }
        let permit = self.inner.circuit.permit();
        if permit == Permit::Denied {
            return Err(BackendError::CircuitOpen);
        }
        let probe = ProbeGuard::new(&self.inner.circuit, permit);
        let timeout = self.inner.config.response_timeout;
        let result = match tokio::time::timeout(timeout, op).await {
            Ok(result) => result,
            Err(_) => Err(BackendError::Timeout(timeout)),
        };
        match &result {
            Err(err) if err.is_unavailability() => {
                if self.inner.circuit.on_failure(permit == Permit::Probe) {
                    self.inner.stats.record_circuit_opened();
                }
            }
            _ => self.inner.circuit.on_success(),
        }
        probe.settled();
        result
    }

    fn bypass_reason(&self, key: &CacheKey) -> Option<BypassReason> {
        if !self.is_enabled() {
            return Some(BypassReason::Disabled);
        }
        if !self.is_resource_enabled(&key.resource) {
            return Some(BypassReason::ResourceDisabled);
        }
        if self.inner.pending.blocks(&key.generation_keys) {
            return Some(BypassReason::PendingInvalidation);
        }
        None
    }

    /// Looks `key` up: one round trip for the generations and the entry (a second only
    /// when a generation does not exist yet). Counts the outcome.
    pub async fn lookup(&self, key: &CacheKey) -> Lookup {
        let lookup = self.lookup_uncounted(key).await;
        let event = match &lookup {
            Lookup::Hit(_) => Event::Hit,
            Lookup::Miss(ticket) => {
                if ticket.is_early_refresh() {
                    self.record(Some(&key.resource), Event::EarlyRefresh);
                }
                Event::Miss
            }
            Lookup::Bypass(_) => Event::Bypass,
        };
        self.record(Some(&key.resource), event);
        lookup
    }

    pub(crate) async fn lookup_uncounted(&self, key: &CacheKey) -> Lookup {
        if let Some(reason) = self.bypass_reason(key) {
            return Lookup::Bypass(reason);
        }
        let started = Instant::now();
        let miss = |generations, refreshing| {
            Lookup::Miss(MissTicket {
                key: key.clone(),
                generations,
                started,
                refreshing,
            })
        };
        let (generations, entry) = match &self.inner.backend {
            // In process there is nothing to await. The remote read is boxed so that its
            // state is not part of every caller's future, which is moved into place on
            // every request.
            Backend::Memory(memory) => memory.read(key),
            Backend::Redis(redis) => match Box::pin(self.read_remote(redis, key)).await {
                Ok(read) => read,
                Err(Some(reason)) => return Lookup::Bypass(reason),
                Err(None) => return miss(None, None),
            },
        };
        self.inner
            .stats
            .record_lookup_time(&key.resource, started.elapsed());
        match entry {
            EntrySlot::Present(entry) if entry.digest != key.digest => {
                self.corrupt(&key.resource, "value stored under another key");
                miss(Some(generations), None)
            }
            EntrySlot::Present(entry)
                if entry.generations == generations && !entry.is_expired(now_ms()) =>
            {
                if self.refresh_early(&entry) {
                    // Counted as an early refresh where it is computed, not here: a
                    // request that finds a refresh already under way is served `entry`.
                    miss(Some(generations), Some(entry))
                } else {
                    Lookup::Hit(entry)
                }
            }
            EntrySlot::Corrupt => {
                self.corrupt(&key.resource, "value does not decode");
                miss(Some(generations), None)
            }
            EntrySlot::Present(_) | EntrySlot::Absent => miss(Some(generations), None),
        }
    }

    /// The current generations (created where missing) and the entry, from the remote
    /// store. A fault is counted and logged here; the error is the bypass reason when the
    /// circuit turned the lookup away, `None` when the lookup failed.
    async fn read_remote(
        &self,
        redis: &RedisBackend,
        key: &CacheKey,
    ) -> Result<(Vec<Generation>, EntrySlot), Option<BypassReason>> {
        let raw = match self.call(redis.lookup(key)).await {
            Ok(raw) => raw,
            Err(BackendError::CircuitOpen) => return Err(Some(BypassReason::CircuitOpen)),
            Err(err) => {
                self.fault(&key.resource, "lookup", &err);
                return Err(None);
            }
        };
        let generations = self
            .complete_generations(redis, key, raw.generations)
            .await
            .map_err(|err| {
                self.fault(&key.resource, "generation init", &err);
                None
            })?;
        Ok((generations, raw.entry))
    }

    /// Fills generations that do not exist with fresh tokens.
    async fn complete_generations(
        &self,
        redis: &RedisBackend,
        key: &CacheKey,
        read: Vec<Option<Generation>>,
    ) -> Result<Vec<Generation>, BackendError> {
        if read.iter().all(Option::is_some) {
            return Ok(read.into_iter().flatten().collect());
        }
        let missing: Vec<&str> = key
            .generation_keys
            .iter()
            .zip(&read)
            .filter(|(_, g)| g.is_none())
            .map(|(k, _)| k.as_str())
            .collect();
        let mut created = self
            .call(redis.init_generations(&missing))
            .await?
            .into_iter();
        read.into_iter()
            .map(|g| g.or_else(|| created.next()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| BackendError::Refused("generation init returned too few values".into()))
    }

    /// XFetch: recompute before expiry with a probability that rises as expiry nears and
    /// with the computation's cost, so one request refreshes a popular entry early.
    fn refresh_early(&self, entry: &Entry) -> bool {
        let beta = self.inner.config.early_refresh_beta;
        if beta <= 0.0 || entry.compute_ms == 0 {
            return false;
        }
        let random = self.inner.config.early_refresh_random.draw();
        let head_start_ms = f64::from(entry.compute_ms) * beta * -random.ln();
        now_ms() as f64 + head_start_ms >= entry.expires_at_ms() as f64
    }

    fn fault(&self, resource: &str, operation: &'static str, err: &BackendError) {
        self.record(Some(resource), Event::Error);
        tracing::debug!(target: "api_cache", resource, operation, error = %err, "cache fault: serving uncached");
    }

    fn corrupt(&self, resource: &str, what: &'static str) {
        self.record(Some(resource), Event::Error);
        self.record(Some(resource), Event::Corrupt);
        tracing::warn!(target: "api_cache", resource, what, "ignoring a stored value that is not a valid entry; it will be overwritten");
    }

    /// Stores `response` for the ticket's key with `ttl`. Returns whether it was stored:
    /// nothing is stored after a failed lookup, for a response over the size bound, or
    /// while an invalidation of the key is pending.
    pub async fn store(
        &self,
        ticket: MissTicket,
        response: CachedResponse,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let compute = ticket.started.elapsed();
        let Some(entry) = self.make_entry(&ticket, response, ttl, compute) else {
            return Ok(false);
        };
        self.store_entry(&ticket.key, entry, ttl)
            .await
            .map(|()| true)
    }

    fn make_entry(
        &self,
        ticket: &MissTicket,
        response: CachedResponse,
        ttl: Duration,
        compute: Duration,
    ) -> Option<Arc<Entry>> {
        let generations = ticket.generations.clone()?;
        if response.body.len() > self.inner.config.max_entry_bytes || ttl.is_zero() {
            self.record(Some(&ticket.key.resource), Event::NotStored);
            return None;
        }
        Some(Arc::new(Entry {
            digest: ticket.key.digest,
            generations,
            stored_at_ms: now_ms(),
            ttl_ms: ttl.as_millis().min(u128::from(u64::MAX)) as u64,
            compute_ms: compute.as_millis().min(u128::from(u32::MAX)) as u32,
            response,
        }))
    }

    async fn store_entry(
        &self,
        key: &CacheKey,
        entry: Arc<Entry>,
        ttl: Duration,
    ) -> Result<(), BackendError> {
        if self.inner.pending.blocks(&key.generation_keys) {
            return Ok(());
        }
        match self.call(self.inner.backend.store(key, entry, ttl)).await {
            Ok(()) => {
                self.record(Some(&key.resource), Event::Store);
                Ok(())
            }
            Err(err) => {
                if !matches!(err, BackendError::CircuitOpen) {
                    self.fault(&key.resource, "store", &err);
                }
                Err(err)
            }
        }
    }

    /// The whole read path for one key: lookup; on a miss, join or lead the key's single
    /// flight (and the cross-instance lease when configured), compute, publish to
    /// waiters, and store off the request path. `compute` yields the caller's value and,
    /// when storable, its cacheable form. Counts the final outcome.
    pub(crate) async fn resolve<T, Fut>(
        &self,
        key: &CacheKey,
        ttl: Duration,
        compute: Fut,
    ) -> Resolved<T, Fut>
    where
        Fut: Future<Output = (T, Option<CachedResponse>)>,
    {
        let looked_up = self.lookup_uncounted(key).await;
        self.resolve_lookup(key, ttl, looked_up, compute).await
    }

    /// [`Cache::resolve`] after its lookup, for a caller that answers hits itself.
    pub(crate) async fn resolve_lookup<T, Fut>(
        &self,
        key: &CacheKey,
        ttl: Duration,
        looked_up: Lookup,
        compute: Fut,
    ) -> Resolved<T, Fut>
    where
        Fut: Future<Output = (T, Option<CachedResponse>)>,
    {
        let resource = key.resource.as_str();
        let ticket = match looked_up {
            Lookup::Hit(entry) => {
                self.record(Some(resource), Event::Hit);
                return Resolved::Entry { entry, compute };
            }
            Lookup::Bypass(reason) => {
                let value = self.run_uncached(resource, Event::Bypass, compute).await;
                return Resolved::Computed {
                    value,
                    outcome: Outcome::Bypass,
                    bypass: Some(reason),
                    stored: false,
                    lookup_failed: false,
                };
            }
            Lookup::Miss(ticket) => ticket,
        };
        let Some(generations) = &ticket.generations else {
            let value = self.run_uncached(resource, Event::Miss, compute).await;
            return Resolved::Computed {
                value,
                outcome: Outcome::Miss,
                bypass: None,
                stored: false,
                lookup_failed: true,
            };
        };
        let mut flight_key = String::with_capacity(key.entry_key.len() + 32 * generations.len());
        flight_key.push_str(&key.entry_key);
        for generation in generations {
            flight_key.push('#');
            flight_key.push_str(generation.as_str());
        }
        let guard = match self.inner.flights.join(flight_key) {
            Join::Leader(guard) => guard,
            Join::Follower(receiver) => {
                if let Some(valid) = &ticket.refreshing {
                    // Another request of this instance is refreshing this entry (or just
                    // has): serve its result if published, else the still-valid entry.
                    // Waiting would turn the hit that XFetch protects into a stall.
                    let entry = receiver.borrow().clone().flatten();
                    let entry = entry.unwrap_or_else(|| valid.clone());
                    self.record(Some(resource), Event::Hit);
                    return Resolved::Entry { entry, compute };
                }
                let shared = wait_for_flight(receiver, self.inner.config.flight_wait).await;
                if let Some(entry) = shared {
                    self.record(Some(resource), Event::Hit);
                    self.record(Some(resource), Event::Coalesced);
                    return Resolved::Entry { entry, compute };
                }
                // The leader failed, was cancelled, produced nothing storable, or is too
                // slow: compute here, uncoordinated, which is always correct.
                return self.compute_and_store(ticket, ttl, compute, None).await;
            }
        };
        if let (Some(lease), true) = (self.inner.config.lease, self.inner.backend.is_remote()) {
            let refreshing = ticket.refreshing.as_ref();
            if let Some(entry) = self.follow_lease(key, generations, lease, refreshing).await {
                self.record(Some(resource), Event::Hit);
                if refreshing.is_none() {
                    guard.publish(Some(entry.clone()));
                    self.record(Some(resource), Event::Coalesced);
                }
                return Resolved::Entry { entry, compute };
            }
        }
        if ticket.refreshing.is_some() {
            self.record(Some(resource), Event::EarlyRefresh);
        }
        self.compute_and_store(ticket, ttl, compute, Some(guard))
            .await
    }

    async fn run_uncached<T, Fut>(&self, resource: &str, event: Event, compute: Fut) -> T
    where
        Fut: Future<Output = (T, Option<CachedResponse>)>,
    {
        self.record(Some(resource), event);
        let started = Instant::now();
        let (value, _) = compute.await;
        self.inner
            .stats
            .record_handler_time(resource, started.elapsed());
        value
    }

    async fn compute_and_store<T, Fut>(
        &self,
        ticket: MissTicket,
        ttl: Duration,
        compute: Fut,
        guard: Option<crate::flight::FlightGuard>,
    ) -> Resolved<T, Fut>
    where
        Fut: Future<Output = (T, Option<CachedResponse>)>,
    {
        let resource = ticket.key.resource.clone();
        self.record(Some(&resource), Event::Miss);
        let started = Instant::now();
        let (value, cacheable) = compute.await;
        let compute_time = started.elapsed();
        self.inner
            .stats
            .record_handler_time(&resource, compute_time);
        let entry = match cacheable {
            Some(response) => self.make_entry(&ticket, response, ttl, compute_time),
            None => {
                self.record(Some(&resource), Event::NotStored);
                None
            }
        };
        if let Some(guard) = &guard {
            guard.publish(entry.clone());
        }
        let stored = entry.is_some();
        if let Some(entry) = entry {
            if self.inner.backend.is_remote() {
                // Off the request path: the flight (kept until the store lands) answers
                // this instance's readers meanwhile.
                let cache = self.clone();
                let key = ticket.key;
                // Its own root span, linked to the request's: a child would hold the
                // request's span open until the store lands.
                let store_span = tracing::debug_span!(target: "api_cache", parent: None, "api_cache_store", resource = %key.resource);
                store_span.follows_from(tracing::Span::current());
                tokio::spawn(async move {
                    let keep_flight_until_stored = guard;
                    let _ = cache
                        .store_entry(&key, entry, ttl)
                        .instrument(store_span)
                        .await;
                    // A reader whose lookup missed just before the store landed joins the
                    // flight just after: keep it visible a moment longer so that reader
                    // is answered from it rather than recomputing.
                    tokio::time::sleep(FLIGHT_GRACE.min(ttl / 2)).await;
                    drop(keep_flight_until_stored);
                });
            } else {
                let _ = self.store_entry(&ticket.key, entry, ttl).await;
            }
        }
        Resolved::Computed {
            value,
            outcome: Outcome::Miss,
            bypass: None,
            stored,
            lookup_failed: false,
        }
    }

    /// With the lease on: take it, or wait (polling) for its holder's entry. Returns the
    /// entry when another instance produced it in time. An early refresh (`refreshing`)
    /// does not wait: when another instance holds the lease, the valid entry is returned.
    async fn follow_lease(
        &self,
        key: &CacheKey,
        generations: &[Generation],
        lease: Duration,
        refreshing: Option<&Arc<Entry>>,
    ) -> Option<Arc<Entry>> {
        let lease_key = key.lease_key(&self.inner.config.prefix, generations);
        match self
            .call(self.inner.backend.try_lease(&lease_key, lease))
            .await
        {
            Ok(false) => {}
            // Taken by us, or Redis failing: compute.
            _ => return None,
        }
        if let Some(valid) = refreshing {
            return Some(valid.clone());
        }
        let deadline = Instant::now() + lease;
        let poll = (lease / 20).clamp(Duration::from_millis(5), Duration::from_millis(50));
        while Instant::now() < deadline {
            tokio::time::sleep(poll).await;
            match self.lookup_uncounted(key).await {
                Lookup::Hit(entry) => return Some(entry),
                // A valid entry that drew an early refresh is still a valid entry.
                Lookup::Miss(MissTicket {
                    refreshing: Some(entry),
                    ..
                }) => return Some(entry),
                Lookup::Miss(ticket) if ticket.generations.as_deref() == Some(generations) => {
                    continue
                }
                // Generations moved on, or Redis failing: stop waiting.
                _ => return None,
            }
        }
        None
    }

    /// Invalidates `resources` of `tenant`: one round trip whatever the number of
    /// entries. Entries tagged with any of them are dropped too.
    pub async fn invalidate(
        &self,
        tenant: &str,
        resources: &[&str],
    ) -> Result<(), InvalidationError> {
        self.invalidate_scoped(Tenant::Scoped(tenant), resources)
            .await
    }

    /// Invalidates `resources` of `scope = global` data.
    pub async fn invalidate_global(&self, resources: &[&str]) -> Result<(), InvalidationError> {
        self.invalidate_scoped(Tenant::Global, resources).await
    }

    /// Drops everything cached for `tenant`, in one round trip.
    pub async fn invalidate_all(&self, tenant: &str) -> Result<(), InvalidationError> {
        let tag = key::tenant_tag(Tenant::Scoped(tenant));
        let keys = vec![key::all_generation_key(&self.inner.config.prefix, &tag)];
        self.deliver(tag, keys, &["*"]).await
    }

    pub(crate) async fn invalidate_scoped(
        &self,
        tenant: Tenant<'_>,
        resources: &[&str],
    ) -> Result<(), InvalidationError> {
        for resource in resources {
            key::validate_resource(resource)?;
        }
        let tag = key::tenant_tag(tenant);
        let keys: Vec<String> = resources
            .iter()
            .map(|r| key::generation_key(&self.inner.config.prefix, &tag, r))
            .collect();
        self.deliver(tag, keys, resources).await
    }

    /// Invalidates without waiting, for a mutation whose future was dropped after its
    /// handler started (the client hung up). This instance serves the resources
    /// uncached from now until the invalidation is delivered, which a spawned task does
    /// at once (and the redelivery loop after it if Redis is failing).
    pub(crate) fn invalidate_detached(
        &self,
        tenant: Tenant<'_>,
        resources: &'static [&'static str],
    ) {
        let tag = key::tenant_tag(tenant);
        let keys: Vec<String> = resources
            .iter()
            .filter(|r| key::validate_resource(r).is_ok())
            .map(|r| key::generation_key(&self.inner.config.prefix, &tag, r))
            .collect();
        if keys.is_empty() {
            return;
        }
        self.inner.pending.add(&tag, &keys);
        tracing::debug!(target: "api_cache", tenant = %tag, resources = %resources.join(","), "mutation dropped after its handler started: invalidating in the background");
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to deliver on (it is shutting down): the pending set keeps the
            // invalidation for `flush_pending` or a later redelivery.
            return;
        };
        let cache = self.clone();
        runtime.spawn(async move {
            let _ = cache.deliver(tag, keys, resources).await;
        });
    }

    async fn deliver(
        &self,
        tenant_tag: String,
        keys: Vec<String>,
        resources: &[&str],
    ) -> Result<(), InvalidationError> {
        if keys.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        for resource in resources {
            self.record(Some(resource), Event::Invalidation);
        }
        // Taken before sending: only deferrals older than this delivery may be dropped
        // when it succeeds (see Pending::delivered).
        let mark = self.inner.pending.mark();
        match self.call(self.inner.backend.bump(&keys)).await {
            Ok(()) => {
                self.inner.pending.delivered(&keys, mark);
                tracing::debug!(target: "api_cache", tenant = %tenant_tag, resources = %resources.join(","), elapsed_us = started.elapsed().as_micros() as u64, "cache invalidation");
                Ok(())
            }
            Err(err) => {
                for resource in resources {
                    self.record(Some(resource), Event::Error);
                }
                tracing::warn!(target: "api_cache", tenant = %tenant_tag, resources = %resources.join(","), error = %err, "invalidation deferred: serving these uncached on this instance until Redis takes it");
                self.inner.pending.add(&tenant_tag, &keys);
                self.ensure_redelivery();
                Err(InvalidationError::Deferred(err))
            }
        }
    }

    /// Tries now to deliver every pending invalidation, for at most `within`, and tells
    /// whether none is left pending. Call it on graceful shutdown, after the server
    /// stopped taking requests: an invalidation still pending when the process exits is
    /// lost, and other instances may then serve the entries it should have dropped until
    /// they expire. What is left is logged (`WARN`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_runtime::{Cache, CacheConfig};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = Cache::new(CacheConfig::default()).await.unwrap();
    /// // axum::serve(listener, app).with_graceful_shutdown(signal).await?; then:
    /// let delivered = cache.flush_pending(Duration::from_secs(2)).await;
    /// assert!(delivered, "nothing was pending");
    /// # });
    /// ```
    pub async fn flush_pending(&self, within: Duration) -> bool {
        const RETRY_AFTER: Duration = Duration::from_millis(20);
        let deadline = Instant::now() + within;
        let attempt_timeout = self
            .inner
            .config
            .response_timeout
            .max(REDELIVERY_TIMEOUT_MIN);
        loop {
            if self.inner.pending.len() == 0 {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // Cancelling a redelivery mid-way is safe: what it did not confirm stays
            // pending.
            if let Ok(true) =
                tokio::time::timeout(left, self.redeliver_pending(attempt_timeout)).await
            {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(RETRY_AFTER.min(left)).await;
        }
        let left = self.inner.pending.len();
        if left == 0 {
            return true;
        }
        tracing::warn!(target: "api_cache", pending = left, within_ms = within.as_millis() as u64, "invalidations still pending: other instances may serve the entries they drop until these expire");
        false
    }

    /// One attempt to deliver every pending invalidation, each tenant's bounded by
    /// `timeout`. True when nothing is pending after it.
    async fn redeliver_pending(&self, timeout: Duration) -> bool {
        for (tenant, keys) in self.inner.pending.snapshot() {
            let names: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
            match tokio::time::timeout(timeout, self.inner.backend.bump(&names)).await {
                Ok(Ok(())) => {
                    self.inner.pending.redelivered(&keys);
                    self.inner.circuit.on_success();
                    tracing::info!(target: "api_cache", tenant = %tenant, keys = names.len(), "pending invalidation delivered");
                }
                Ok(Err(err)) => {
                    tracing::debug!(target: "api_cache", tenant = %tenant, error = %err, "pending invalidation not delivered yet");
                }
                Err(_) => {
                    tracing::debug!(target: "api_cache", tenant = %tenant, timeout_ms = timeout.as_millis() as u64, "pending invalidation not delivered yet: timed out");
                }
            }
        }
        self.inner.pending.len() == 0
    }

    /// Starts the background redelivery of pending invalidations, unless it runs.
    fn ensure_redelivery(&self) {
        if self.inner.redelivery_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner
                .redelivery_running
                .store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            const FIRST: Duration = Duration::from_millis(50);
            const MAX: Duration = Duration::from_secs(2);
            let mut delay = FIRST;
            loop {
                tokio::time::sleep(delay).await;
                let Some(inner) = weak.upgrade() else { return };
                let cache = Cache { inner };
                let pending = cache.inner.pending.snapshot();
                if pending.is_empty() {
                    cache
                        .inner
                        .redelivery_running
                        .store(false, Ordering::Release);
                    // An invalidation deferred between the snapshot and the flag store
                    // saw the flag still set; take the job back if so.
                    if cache.inner.pending.len() == 0
                        || cache.inner.redelivery_running.swap(true, Ordering::AcqRel)
                    {
                        return;
                    }
                    continue;
                }
                let timeout = cache
                    .inner
                    .config
                    .response_timeout
                    .max(REDELIVERY_TIMEOUT_MIN);
                let all_delivered = cache.redeliver_pending(timeout).await;
                delay = if all_delivered {
                    FIRST
                } else {
                    (delay * 2).min(MAX)
                };
            }
        });
    }
}
