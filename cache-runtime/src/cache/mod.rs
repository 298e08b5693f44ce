//! The cache handle and its switches: construction from a configuration, the
//! process-wide and per-task "current" cache, the global and per-resource on/off
//! switches, stats, and the one gate every backend call goes through (response timeout
//! and circuit breaker). What a request does with it lives beside it: the read path in
//! `read.rs`, the miss path in `miss.rs`, invalidation in `invalidation.rs`. It knows
//! nothing of HTTP. No method here returns a store fault to a request path: faults
//! become misses or bypasses and are counted.

mod invalidation;
mod miss;
mod near;
mod read;
mod shadow;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::Either;
use futures_util::FutureExt as _;

use crate::backend::{memory::MemoryBackend, near::NearTier, redis::RedisBackend, Backend};
use crate::circuit::{Circuit, Permit, ProbeGuard};
use crate::config::{CacheConfig, LocalTier};
use crate::error::{BackendError, ConfigError};
use crate::flight::Flights;
use crate::key::{InvalidResource, KeyBuilder, Tenant};
use crate::pending::Pending;
use crate::stats::{CircuitSnapshot, Event, Stats, StatsSnapshot};
use crate::verify::{Mismatch, Reports, ResourceMode, Rollout};

pub(crate) use miss::Resolved;
#[cfg(feature = "testing")]
pub use read::MissTicket;
pub(crate) use read::Staleness;
pub use read::{BypassReason, Lookup};
pub(crate) use shadow::{Fresh, ShadowRoute};

/// A handle to the cache: cheap to clone, shared by every request.
///
/// ```
/// use cache_runtime::{Cache, CacheConfig};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// // In-memory unless REDIS_URL is set; Cache::from_env() reads the environment.
/// let cache = Cache::new(CacheConfig::default()).await.unwrap();
/// // Give it to the handlers of a router with `.layer(cache.extension())`; then, from a
/// // job or a script, outside any request:
/// cache.invalidate("org_1", &["templates"]).await.unwrap();
/// cache.set_resource_enabled("contacts", false); // a rollback without a deploy
/// assert_eq!(cache.stats().totals.invalidations, 1);
/// # });
/// ```
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    config: CacheConfig,
    backend: Backend,
    /// The local tier in front of Redis, when configured (`API_CACHE_LOCAL_TIER`).
    near: Option<NearTier>,
    enabled: AtomicBool,
    /// Per-resource modes and verification shares (`verify/`).
    rollout: Rollout,
    /// Bounds shadow and verification runs; a run that finds no permit is skipped.
    shadow_permits: Arc<tokio::sync::Semaphore>,
    /// Mismatch reports: WARN once per key per interval, the last few kept.
    reports: Reports,
    stats: Stats,
    circuit: Circuit,
    pending: Pending,
    flights: Arc<Flights>,
    redelivery_running: AtomicBool,
    /// Names this cache in the per-thread memo of keys (`key/memo.rs`).
    memo_id: u64,
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

/// The cache installed with [`Cache::install_global`].
static GLOBAL: OnceLock<Cache> = OnceLock::new();
/// The one [`Cache::global`] builds from the environment when none was installed, for
/// cached plain functions only: handlers never fall back to it.
static FROM_ENV: OnceLock<Cache> = OnceLock::new();

tokio::task_local! {
    /// The cache of the request (or [`Cache::run_with`]) being served on this task.
    static CURRENT: Cache;
}

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
        let (backend, near) = match config.redis_target() {
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
                let near = NearTier::new(&config, target).map_err(|err| {
                    ConfigError::RedisUrl(format!("{}: {err}", target.for_logs()))
                })?;
                (Backend::Redis(backend), near)
            }
            None => {
                tracing::info!(target: "api_cache", max_bytes = config.memory_max_bytes, "cache backend: in-memory, per process: several instances do not see each other's invalidations (set REDIS_URL for that)");
                if config.local_tier != LocalTier::Off {
                    tracing::warn!(target: "api_cache", "API_CACHE_LOCAL_TIER is for a Redis backend: ignored by the in-memory one");
                }
                let memory = MemoryBackend::new(config.memory_max_bytes, config.generation_ttl);
                (Backend::Memory(memory), None)
            }
        };
        Ok(Cache {
            inner: Arc::new(Inner {
                enabled: AtomicBool::new(config.enabled),
                rollout: Rollout::new(
                    config
                        .disabled_resources
                        .iter()
                        .map(|r| (r.clone(), ResourceMode::Off))
                        .chain(config.resource_modes.clone()),
                    config.verify_shares.clone(),
                ),
                shadow_permits: Arc::new(tokio::sync::Semaphore::new(
                    config
                        .shadow_concurrency
                        .min(tokio::sync::Semaphore::MAX_PERMITS),
                )),
                reports: Reports::new(config.mismatch_log_interval),
                circuit: Circuit::new(config.circuit_failures, config.circuit_open_for),
                stats: Stats::default(),
                pending: Pending::default(),
                flights: Arc::new(Flights::default()),
                redelivery_running: AtomicBool::new(false),
                memo_id: crate::key::memo::next_cache_id(),
                backend,
                near,
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
    /// `#[invalidates]` handler (or [`Cache::run_with`]) being run on this task, else
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
    /// let prefix = cache.run_with(async { Cache::current().config().prefix.clone() }).await;
    /// assert_eq!(prefix, "jobs");
    /// # });
    /// ```
    pub fn run_with<F: Future>(&self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self.clone(), future)
    }

    /// This cache as a request extension, to add to a router with `.layer(...)`: it
    /// hands the cache to the `#[cached]` and `#[invalidates]` handlers of the router it
    /// wraps (an `axum::Extension` is a layer that inserts a clone into each request).
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use cache_runtime::{Cache, CacheConfig};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = Cache::new(CacheConfig::default()).await.unwrap();
    /// let app: Router = Router::new().route("/", get(|| async { "hi" })).layer(cache.extension());
    /// # });
    /// ```
    pub fn extension(&self) -> axum::Extension<Cache> {
        axum::Extension(self.clone())
    }

    /// The former name of [`Cache::extension`].
    #[deprecated(
        since = "0.1.0",
        note = "renamed to `Cache::extension`: it is an `Extension`"
    )]
    pub fn layer(&self) -> axum::Extension<Cache> {
        self.extension()
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// `"redis"`, `"redis-cluster"` or `"memory"`.
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// Starts a key for `resource` of `tenant`, under this cache's prefix.
    pub(crate) fn key_builder(
        &self,
        tenant: Tenant<'_>,
        resource: &str,
    ) -> Result<KeyBuilder, InvalidResource> {
        KeyBuilder::new(&self.inner.config.prefix, tenant, resource)
    }

    /// This cache's name in the per-thread memo of keys.
    pub(crate) fn memo_id(&self) -> u64 {
        self.inner.memo_id
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

    /// Turns caching of one resource on or off at run time (a rollback without a deploy):
    /// [`set_resource_mode`](Self::set_resource_mode) with `On` or `Off`.
    pub fn set_resource_enabled(&self, resource: &str, enabled: bool) {
        let mode = if enabled {
            ResourceMode::On
        } else {
            ResourceMode::Off
        };
        self.set_resource_mode(resource, mode);
    }

    /// Whether `resource` is served from the cache (mode `on`; the global switch aside).
    pub fn is_resource_enabled(&self, resource: &str) -> bool {
        self.resource_mode(resource) == ResourceMode::On
    }

    /// Sets the mode of one resource at run time: `Off` (uncached), `Shadow` (uncached,
    /// the cache working and comparing in the background), `On` (cached). Entries stored
    /// in shadow are guarded by generations like any other, so switching to `on` serves
    /// them only while no invalidation has passed.
    ///
    /// ```
    /// use cache_runtime::{Cache, CacheConfig, ResourceMode};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = Cache::new(CacheConfig::default()).await.unwrap();
    /// cache.set_resource_mode("contacts", ResourceMode::Shadow);
    /// assert_eq!(cache.resource_mode("contacts"), ResourceMode::Shadow);
    /// assert!(!cache.is_resource_enabled("contacts"));
    /// cache.set_verify_share("contacts", 0.02); // once it is `on`: 2% of hits re-checked
    /// # });
    /// ```
    pub fn set_resource_mode(&self, resource: &str, mode: ResourceMode) {
        self.inner.rollout.set_mode(resource, mode);
    }

    /// The mode of `resource` (`On` unless set otherwise).
    pub fn resource_mode(&self, resource: &str) -> ResourceMode {
        self.inner.rollout.mode(resource)
    }

    /// Sets the share (0 to 1, clamped) of `resource`'s hits recomputed in the
    /// background and compared with the entry served, at run time.
    pub fn set_verify_share(&self, resource: &str, share: f64) {
        self.inner.rollout.set_share(resource, share);
    }

    /// The share of `resource`'s hits that are verified.
    pub fn verify_share(&self, resource: &str) -> f64 {
        self.inner.rollout.share(resource)
    }

    /// The last mismatches found (at most 32, oldest first): what differed, where, for
    /// which tenant and key; never the bodies. Also counted in stats and logged at WARN.
    pub fn recent_mismatches(&self) -> Vec<Mismatch> {
        self.inner.reports.recent()
    }

    /// A copy of every counter.
    pub fn stats(&self) -> StatsSnapshot {
        let circuit = if self.inner.backend.is_remote() {
            self.inner.circuit.snapshot()
        } else {
            CircuitSnapshot::NotApplicable
        };
        let mut snapshot = self.inner.stats.snapshot(circuit, self.inner.pending.len());
        snapshot.local_tier = self.local_tier_snapshot();
        snapshot
    }

    /// Hits as a percentage of lookups since start, like the reference's
    /// `getCacheHitRate()`. Kept beside [`stats`](Self::stats) because the design
    /// contract names it; it is `stats().hit_rate`.
    ///
    /// ```
    /// use cache_runtime::{Cache, CacheConfig};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = Cache::new(CacheConfig::default()).await.unwrap();
    /// assert_eq!(cache.hit_rate(), 0.0);
    /// # });
    /// ```
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

    /// Runs a handler (or a cached function's body) and records how long it ran.
    pub(crate) async fn run_handler<F: Future>(
        &self,
        resource: &str,
        handler: F,
    ) -> (F::Output, Duration) {
        let started = Instant::now();
        let output = handler.await;
        let elapsed = started.elapsed();
        self.inner.stats.record_handler_time(resource, elapsed);
        (output, elapsed)
    }

    pub(crate) fn record(&self, resource: Option<&str>, event: Event) {
        self.inner.stats.record(resource, event);
    }

    /// Runs one backend operation under the circuit breaker and the response timeout.
    ///
    /// Not an `async fn`: the permit is taken when the call is made (every caller awaits
    /// it at once), and the future returned holds `op` once, inside the timeout, with
    /// the outcome's bookkeeping as a closure after it. An `async fn` kept `op` twice
    /// (its argument, then the timeout holding it) and moved both along with every
    /// future that awaits a call: the lookup's call was 5,000 bytes, more than three
    /// times `op` (BENCHMARKS.md, "Redis hit, second pass"). Dropped before it is
    /// done, it hands back a half-open probe it held (the closure owns the guard).
    /// A large `op` (a read through redis-rs, 1.5 KB) comes boxed from where it is made:
    /// boxed in here it has been copied on its way already, and the caller's future
    /// holds it whole (a Redis hit spent 1,100 instructions more with the box here than
    /// with the box at the reads; BENCHMARKS.md, ninth pass).
    fn call<'a, T, F>(&'a self, op: F) -> impl Future<Output = Result<T, BackendError>> + 'a
    where
        T: 'a,
        F: Future<Output = Result<T, BackendError>> + 'a,
    {
        if !self.inner.backend.is_remote() {
            return Either::Left(Either::Left(op));
        }
        let permit = self.inner.circuit.permit();
        if permit == Permit::Denied {
            return Either::Left(Either::Right(std::future::ready(Err(
                BackendError::CircuitOpen,
            ))));
        }
        let probe = ProbeGuard::new(&self.inner.circuit, permit);
        let timeout = self.inner.config.response_timeout;
        Either::Right(tokio::time::timeout(timeout, op).map(move |outcome| {
            let result = outcome.unwrap_or_else(|_| Err(BackendError::Timeout(timeout)));
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
        }))
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
}
