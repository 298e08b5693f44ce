//! The rollout report: replays one workload against the demo with the cache off, then
//! on, and compares them with the reference's success table.
//!
//! Each run starts a fresh demo in-process (same seed, so the same data; a fresh cache
//! under a key prefix of its own, so a shared Redis holds nothing from earlier runs),
//! or uses a running server (`url`), switching its cache through `PUT /debug/cache`.
//! The database queries of a run are read from `/debug/db` before and after it.
//!
//! With `instances` above 1, each run starts that many demos in-process, each on its own
//! port with its own [`Cache`] handle built from the same configuration (its own single
//! flight, pending invalidations and circuit, as separate processes have), all on one
//! fresh SQLite file (the first seeds it) and one cache store; the virtual users send
//! each request to any of them ([`driver`]). Per-process in-memory caches cannot see each
//! other's invalidations, so that combination is refused unless asked for
//! (`allow_per_process_cache`), to show what goes wrong. [`local_redis`] starts a private
//! Redis or Redis Cluster for the report binary.
//!
//! See [`workload`] for what is replayed, [`browser`] for the virtual users' browser
//! cache, and [`driver`] for what is checked.

pub mod browser;
pub mod chart;
pub mod driver;
pub mod local_redis;
pub mod summary;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cache_runtime::{Cache, CacheConfig, LocalTier, ResourceMode};
use serde::Serialize;
use serde_json::Value;

use crate::db::{DbStats, ScratchDatabase};
use crate::report::browser::BrowserOutcome;
use crate::report::driver::{drive, BoundedCheck, CheckCounts, DriveConfig, PhaseRun, Violation};
use crate::report::summary::{phase_figures, InstanceFigures, PhaseFigures, Second};
use crate::report::workload::{Route, READ_MIX, WRITE_MIX};
use crate::seed::{SeedConfig, SeedSummary};
use crate::{start_demo, Database, DemoConfig, StartupError};

/// What to replay and how.
#[derive(Debug, Clone, Serialize)]
pub struct ReportConfig {
    /// Length of the measured part of each run (cache off, cache on).
    pub duration: Duration,
    /// Workload before measuring starts, in each run: the figures describe a cache in
    /// steady state, as in production (the per-second chart shows the warm-up too).
    pub warmup: Duration,
    /// Concurrent virtual users.
    pub users: usize,
    /// Mean think time between a user's requests.
    pub think: Duration,
    /// Share of requests that are writes (0-1).
    pub write_share: f64,
    /// Random seed of the data and the workload.
    pub seed: u64,
    /// Data volume (1.0: the demo's default).
    pub scale: f64,
    /// A running demo to use instead of in-process ones.
    pub url: Option<String>,
    /// Redis for the in-process demos; `None`: `REDIS_URL` from the environment (and
    /// the in-memory cache when that is unset too).
    pub redis_url: Option<String>,
    /// Redis Cluster seed nodes for the in-process demos (instead of `redis_url`);
    /// empty: `REDIS_CLUSTER_URLS` from the environment, if set.
    pub redis_cluster_urls: Vec<String>,
    /// What the Redis is, when the report started it (printed in the header).
    pub redis_note: Option<String>,
    /// A PostgreSQL server (`postgres://...`) for the in-process demos: each run creates
    /// a fresh database `api_cache_report_<pid>_<run>` on it, seeds it and drops it
    /// afterwards. `None`: SQLite (a temporary file per run).
    pub database: Option<String>,
    /// In-process demo instances per run, sharing one database and one cache store;
    /// every request goes to one of them at random.
    pub instances: usize,
    /// Run several instances on per-process in-memory caches anyway, to show the
    /// violations that follow (refused otherwise).
    pub allow_per_process_cache: bool,
    /// The local tier of the in-process demos' caches (`--local-tier`); `None`: the
    /// environment's `API_CACHE_LOCAL_TIER`.
    pub local_tier: Option<LocalTier>,
    /// Fault injection: freeze Redis (`CLIENT PAUSE <ms> ALL`) for this long in the
    /// middle of the cache-on run's measured window. Needs Redis (`redis_url` or
    /// `REDIS_URL`).
    pub fault_pause_redis: Option<Duration>,
    /// `--mode shadow`: a third run with every resource in shadow mode (served by the
    /// handlers; the cache looks up, stores and compares in the background), printed as
    /// the would-be hit rate next to the real one, and the mismatches found.
    pub shadow: bool,
    /// `--incomplete-invalidation`: the in-process demos' contact creation forgets to
    /// invalidate `contacts` (a deliberate bug, for the shadow run to catch).
    pub incomplete_invalidation: bool,
    /// Where to write report.json, report.svg and report.md (None: nowhere).
    pub out_dir: Option<PathBuf>,
    /// Print progress to stderr.
    pub progress: bool,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            duration: Duration::from_secs(25),
            warmup: Duration::from_secs(5),
            users: 32,
            think: Duration::from_millis(400),
            write_share: 0.05,
            seed: 42,
            scale: 1.0,
            url: None,
            redis_url: None,
            redis_cluster_urls: Vec::new(),
            redis_note: None,
            database: None,
            instances: 1,
            allow_per_process_cache: false,
            local_tier: None,
            fault_pause_redis: None,
            shadow: false,
            incomplete_invalidation: false,
            out_dir: Some(PathBuf::from("report-output")),
            progress: true,
        }
    }
}

/// Why the report could not run (failed checks are not errors: see [`Report::passed`]).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The cache could not be configured from the environment.
    #[error("cache configuration: {0}")]
    Cache(#[from] cache_runtime::ConfigError),
    /// The in-process demo did not start.
    #[error("demo: {0}")]
    Startup(#[from] StartupError),
    /// A debug endpoint did not answer.
    #[error("talking to the demo: {0}")]
    Http(#[from] reqwest::Error),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Io(#[from] std::io::Error),
    /// Encoding the output failed.
    #[error("encoding the output: {0}")]
    Json(#[from] serde_json::Error),
    /// The fault could not be injected.
    #[error("fault injection: {0}")]
    Fault(String),
    /// Several instances on the in-memory cache, not asked for.
    #[error(
        "{instances} instances on the in-memory cache: each instance would keep a cache of \
         its own and never see the others' invalidations, so a write through one instance \
         leaves stale entries on the others. Give them one Redis (REDIS_URL, \
         REDIS_CLUSTER_URLS, --redis or --redis-cluster), or pass --allow-per-process-cache \
         to run anyway and see the violations"
    )]
    PerProcessCache {
        /// The instances asked for.
        instances: usize,
    },
    /// Options that do not go together.
    #[error("{0}")]
    Options(String),
}

/// One run's outcome.
#[derive(Debug, Serialize)]
pub struct PhaseReport {
    /// `cache off`, `cache on` or `cache shadow`.
    pub name: &'static str,
    /// Whether the cache was on.
    pub cache_enabled: bool,
    /// Whether every resource was in shadow mode.
    pub shadow: bool,
    /// Seconds from the end of the warm-up to the last response.
    pub elapsed_seconds: f64,
    /// The figures.
    pub figures: PhaseFigures,
    /// Per-second figures.
    pub timeline: Vec<Second>,
    /// Checks made.
    pub checks: CheckCounts,
    /// Failed checks.
    pub violations: Vec<Violation>,
    /// Read-after-write checks on routes with a declared staleness bound: how long each
    /// write took to show.
    pub bounded: Vec<BoundedCheck>,
    /// Responses with a 5xx status.
    pub server_errors: u64,
    /// Requests that got no response.
    pub transport_errors: u64,
    /// Other non-2xx responses.
    pub client_errors: u64,
    /// The first few unexpected responses.
    pub unexpected: Vec<String>,
    /// The demo's `/debug/cache` after the run (the first instance's).
    pub cache_stats: Value,
    /// Each instance's share of the run, in instance order.
    pub instances: Vec<InstanceReport>,
    /// The fault injected during this run, if any.
    pub fault: Option<FaultReport>,
}

/// One demo instance in one run.
#[derive(Debug, Serialize)]
pub struct InstanceReport {
    /// Its base URL.
    pub url: String,
    /// The requests it answered and the queries it ran, in the measured window.
    pub share: InstanceFigures,
    /// Its `/debug/cache` after the run.
    pub cache_stats: Value,
}

/// A temporary directory removed on drop: the shared database of one run.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> std::io::Result<TempDir> {
        let dir = std::env::temp_dir().join(unique_prefix(label));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The cache configuration of the in-process demos: the environment's, with the
/// report's own Redis target (if any) in place of the environment's.
fn cache_config(config: &ReportConfig) -> Result<CacheConfig, ReportError> {
    let mut cache_config = CacheConfig::from_env()?;
    if !config.redis_cluster_urls.is_empty() {
        cache_config.redis_url = None;
        cache_config = cache_config.with_redis_cluster_urls(config.redis_cluster_urls.clone());
    } else if let Some(redis_url) = &config.redis_url {
        cache_config.redis_cluster_urls.clear();
        cache_config = cache_config.with_redis_url(redis_url.clone());
    }
    if let Some(mode) = config.local_tier {
        cache_config.local_tier = mode;
    }
    Ok(cache_config)
}

/// Whether the in-process demos would each keep a cache of their own (no Redis).
fn per_process_cache(config: &ReportConfig) -> Result<bool, ReportError> {
    let cache_config = cache_config(config)?;
    Ok(cache_config.redis_url.is_none() && cache_config.redis_cluster_urls.is_empty())
}

/// Refuses what cannot be run, before anything starts.
fn check_config(config: &ReportConfig) -> Result<(), ReportError> {
    if config.instances == 0 {
        return Err(ReportError::Options(
            "--instances must be at least 1".into(),
        ));
    }
    if (config.shadow || config.incomplete_invalidation) && config.url.is_some() {
        return Err(ReportError::Options(
            "--mode shadow and --incomplete-invalidation start in-process demos; they do not \
             go with --url (set API_CACHE_RESOURCE_MODES and DEMO_INCOMPLETE_INVALIDATION on \
             the server instead)"
                .into(),
        ));
    }
    if config.instances > 1 && config.url.is_some() {
        return Err(ReportError::Options(
            "--instances starts in-process demos; it does not go with --url".into(),
        ));
    }
    if config.url.is_none()
        && config.instances > 1
        && !config.allow_per_process_cache
        && per_process_cache(config)?
    {
        return Err(ReportError::PerProcessCache {
            instances: config.instances,
        });
    }
    Ok(())
}

/// A Redis pause injected into a run, and what the clients saw while it lasted.
#[derive(Debug, Serialize)]
pub struct FaultReport {
    /// What was done.
    pub what: String,
    /// When it started and ended, in ms since the run started (warm-up included).
    pub from_ms: u32,
    /// See `from_ms`.
    pub to_ms: u32,
    /// Figures of the requests sent while Redis was paused.
    pub during: summary::Figures,
    /// Requests sent while Redis was paused that got a 5xx or no response.
    pub failed_during: u64,
}

/// Freezes the Redis at `url` for `pause`, `after` from now: `CLIENT PAUSE <ms> ALL`
/// holds every client's commands (the connections stay open and nothing answers), the
/// worst case for a client, and ends by itself. Returns when the pause started and ended.
async fn pause_redis(
    url: String,
    after: Duration,
    pause: Duration,
) -> Result<(std::time::Instant, std::time::Instant), String> {
    let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(after).await;
    let started = std::time::Instant::now();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(pause.as_millis() as u64)
        .arg("ALL")
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(pause).await;
    Ok((started, std::time::Instant::now()))
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The configuration.
    pub config: ReportConfig,
    /// The workload's read weights (percent of reads).
    pub read_mix: BTreeMap<Route, u32>,
    /// The workload's write weights (percent of writes).
    pub write_mix: Vec<(workload::WriteKind, u32)>,
    /// What the demo was seeded with.
    pub seed: SeedSummary,
    /// Cache backend of in-process runs.
    pub backend: String,
    /// The database of in-process runs (`SQLite` or `PostgreSQL (...)`).
    pub database: String,
    /// Cache off, then on.
    pub phases: Vec<PhaseReport>,
    /// True when no check failed and nothing answered 5xx or not at all.
    pub passed: bool,
}

impl Report {
    /// Whether every correctness check held.
    pub fn passed(&self) -> bool {
        self.passed
    }

    /// Total violations of one kind over both runs.
    pub fn violations(&self, kind: &str) -> usize {
        self.phases
            .iter()
            .flat_map(|p| &p.violations)
            .filter(|v| v.kind == kind)
            .count()
    }
}

fn unique_prefix(label: &str) -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("report-{}-{millis}-{label}", std::process::id())
}

async fn run_phase(
    config: &ReportConfig,
    client: &reqwest::Client,
    name: &'static str,
    enabled: bool,
    shadow: bool,
    scratch: Option<&ScratchDatabase>,
) -> Result<(PhaseReport, SeedSummary, String, String), ReportError> {
    // Outlives the demos (declared first, dropped last): their shared database.
    let mut _database_dir = None;
    let mut demos = Vec::new();
    let mut backend = "the server's own".to_owned();
    let mut database_name = "the server's own".to_owned();
    let urls: Vec<String> = match &config.url {
        Some(url) => vec![url.trim_end_matches('/').to_owned()],
        None => {
            // One prefix per run, shared by the run's instances: one cache store.
            let cache_config =
                cache_config(config)?.with_prefix(unique_prefix(match (enabled, shadow) {
                    (true, true) => "shadow",
                    (true, false) => "on",
                    (false, _) => "off",
                }));
            let database = match &config.database {
                // `run_report` made `scratch` for this run.
                Some(_) => scratch.map(|db| Database::Postgres(db.url.clone())),
                None if config.instances > 1 => {
                    let dir = TempDir::new(if enabled { "db-on" } else { "db-off" })?;
                    let path = dir.0.join("demo.sqlite3");
                    _database_dir = Some(dir);
                    Some(Database::Sqlite(path))
                }
                None => None,
            };
            let mut urls = Vec::with_capacity(config.instances);
            for index in 0..config.instances {
                // A handle per instance, as each process builds its own.
                let cache = Cache::new(cache_config.clone()).await?;
                cache.set_enabled(enabled);
                if shadow {
                    for resource in DEMO_RESOURCES {
                        cache.set_resource_mode(resource, ResourceMode::Shadow);
                    }
                }
                backend = cache.backend_name().to_owned();
                let demo_config = DemoConfig {
                    seed: SeedConfig {
                        seed: config.seed,
                        scale: config.scale,
                        ..SeedConfig::default()
                    },
                    database: database.clone(),
                    incomplete_invalidation: config.incomplete_invalidation,
                    ..DemoConfig::default()
                };
                if config.progress {
                    if index == 0 {
                        eprintln!("[{name}] seeding a fresh demo database ...");
                    } else {
                        eprintln!(
                            "[{name}] starting instance {} on the same database",
                            index + 1
                        );
                    }
                }
                let running = start_demo(
                    demo_config,
                    cache,
                    SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                )
                .await?;
                database_name = running.db.describe();
                urls.push(running.url());
                demos.push(running);
            }
            urls
        }
    };
    // At least one: `--url`, or `instances` >= 1 (`check_config`).
    let url = urls[0].clone();
    for url in &urls {
        client
            .put(format!("{url}/debug/cache"))
            .json(&serde_json::json!({ "enabled": enabled }))
            .send()
            .await?
            .error_for_status()?;
    }
    let seed: SeedSummary = client
        .get(format!("{url}/debug/seed"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    // Each instance counts the statements it runs (they share the file, not a counter).
    let db = |client: reqwest::Client, urls: Vec<String>| async move {
        let mut queries = Vec::with_capacity(urls.len());
        for url in urls {
            let stats = client
                .get(format!("{url}/debug/db"))
                .send()
                .await?
                .error_for_status()?
                .json::<DbStats>()
                .await?;
            queries.push(stats.queries);
        }
        Ok::<_, reqwest::Error>(queries)
    };
    // The measured window's queries: read the counters when the warm-up ends.
    let before = tokio::spawn({
        let (client, urls, warmup) = (client.clone(), urls.clone(), config.warmup);
        async move {
            tokio::time::sleep(warmup).await;
            db(client, urls).await
        }
    });
    let fault = match (enabled, config.fault_pause_redis) {
        (true, Some(pause)) => {
            let redis_url = match &config.redis_url {
                Some(url) => Some(url.clone()),
                None => CacheConfig::from_env()?.redis_url,
            };
            let Some(redis_url) = redis_url else {
                return Err(ReportError::Fault(
                    "--fault-pause-redis needs Redis: set REDIS_URL".into(),
                ));
            };
            // Centred in the measured window.
            let after = (config.warmup + config.duration / 2).saturating_sub(pause / 2);
            if config.progress {
                eprintln!(
                    "[{name}] Redis will be paused for {:.1} s, {:.1} s into the run",
                    pause.as_secs_f64(),
                    after.as_secs_f64()
                );
            }
            Some((
                std::time::Instant::now(),
                pause,
                tokio::spawn(pause_redis(redis_url, after, pause)),
            ))
        }
        _ => None,
    };
    let drive_config = DriveConfig {
        urls: urls.clone(),
        users: config.users,
        think: config.think,
        write_share: config.write_share,
        warmup: config.warmup,
        duration: config.duration,
        seed: config.seed,
        label: name.to_owned(),
        progress: config.progress,
        bounds: route_bounds(),
    };
    let max_seeded_contact = seed.totals.contacts as i64;
    let run: PhaseRun = drive(
        client.clone(),
        drive_config,
        seed.organizations.clone(),
        max_seeded_contact,
    )
    .await;
    let after = db(client.clone(), urls.clone()).await?;
    let before = match before.await {
        Ok(stats) => stats?,
        Err(err) => return Err(ReportError::Io(std::io::Error::other(err))),
    };
    let queries: Vec<u64> = after
        .iter()
        .zip(&before)
        .map(|(after, before)| after.saturating_sub(*before))
        .collect();
    let mut instance_stats = Vec::with_capacity(urls.len());
    for url in &urls {
        let stats: Value = client
            .get(format!("{url}/debug/cache"))
            .send()
            .await?
            .json()
            .await?;
        instance_stats.push(stats);
    }
    for demo in demos {
        demo.shutdown().await;
    }
    let fault = match fault {
        None => None,
        Some((origin, pause, task)) => {
            let (from, to) = task
                .await
                .map_err(|e| ReportError::Fault(e.to_string()))?
                .map_err(ReportError::Fault)?;
            let ms =
                |at: std::time::Instant| at.saturating_duration_since(origin).as_millis() as u32;
            let (from_ms, to_ms) = (ms(from), ms(to));
            let during: Vec<_> = run
                .samples
                .iter()
                .filter(|s| (from_ms..to_ms).contains(&s.at_ms))
                .collect();
            Some(FaultReport {
                what: format!(
                    "Redis paused (CLIENT PAUSE ALL) for {:.1} s",
                    pause.as_secs_f64()
                ),
                from_ms,
                to_ms,
                during: summary::figures(during.iter().copied(), to.duration_since(from)),
                failed_during: during
                    .iter()
                    .filter(|s| s.status == 0 || s.status >= 500)
                    .count() as u64,
            })
        }
    };
    let warmup_ms = config.warmup.as_millis() as u32;
    let measured: Vec<_> = run
        .samples
        .iter()
        .filter(|s| s.at_ms >= warmup_ms)
        .cloned()
        .collect();
    let measured_elapsed = run.elapsed.saturating_sub(config.warmup);
    let figures = phase_figures(&measured, measured_elapsed, queries.iter().sum());
    let instances: Vec<InstanceReport> = urls
        .iter()
        .zip(instance_stats.iter().cloned())
        .zip(&queries)
        .enumerate()
        .map(
            |(index, ((url, cache_stats), &db_queries))| InstanceReport {
                url: url.clone(),
                share: InstanceFigures {
                    figures: summary::figures(
                        measured
                            .iter()
                            .filter(|s| s.instance.map(usize::from) == Some(index)),
                        measured_elapsed,
                    ),
                    db_queries,
                },
                cache_stats,
            },
        )
        .collect();
    let cache_stats = instance_stats.into_iter().next().unwrap_or(Value::Null);
    let count =
        |pred: &dyn Fn(u16) -> bool| run.samples.iter().filter(|s| pred(s.status)).count() as u64;
    let report = PhaseReport {
        name,
        cache_enabled: enabled,
        shadow,
        elapsed_seconds: run.elapsed.saturating_sub(config.warmup).as_secs_f64(),
        timeline: summary::timeline(&run.samples),
        figures,
        checks: run.checks,
        server_errors: count(&|s| s >= 500),
        transport_errors: count(&|s| s == 0),
        client_errors: count(&|s| (400..500).contains(&s)),
        violations: run.violations,
        bounded: run.bounded,
        unexpected: run.unexpected,
        cache_stats,
        instances,
        fault,
    };
    Ok((report, seed, backend, database_name))
}

/// Runs the report: cache off, then cache on.
pub async fn run_report(config: ReportConfig) -> Result<Report, ReportError> {
    check_config(&config)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.users + 4)
        .timeout(Duration::from_secs(60))
        .build()?;
    let scratch = scratch_database(&config, "off").await?;
    let off = run_phase(
        &config,
        &client,
        "cache off",
        false,
        false,
        scratch.as_ref(),
    )
    .await;
    drop_scratch_database(scratch).await;
    let (off, seed, backend, database) = off?;
    let scratch = scratch_database(&config, "on").await?;
    let on = run_phase(&config, &client, "cache on", true, false, scratch.as_ref()).await;
    drop_scratch_database(scratch).await;
    let (on, ..) = on?;
    let mut phases = vec![off, on];
    if config.shadow {
        let scratch = scratch_database(&config, "shadow").await?;
        let shadow = run_phase(
            &config,
            &client,
            "cache shadow",
            true,
            true,
            scratch.as_ref(),
        )
        .await;
        drop_scratch_database(scratch).await;
        let (shadow, ..) = shadow?;
        phases.push(shadow);
    }
    // A mismatch is a write some `#[invalidates]` does not announce: a failure.
    let passed = phases.iter().all(|p| {
        p.violations.is_empty()
            && p.server_errors == 0
            && p.transport_errors == 0
            && shadow_total(p, "mismatches") == 0
    });
    Ok(Report {
        read_mix: READ_MIX.iter().copied().collect(),
        write_mix: WRITE_MIX.to_vec(),
        config,
        seed,
        backend,
        database,
        phases,
        passed,
    })
}

/// The fresh PostgreSQL database of one run, when the report runs on PostgreSQL.
async fn scratch_database(
    config: &ReportConfig,
    run: &str,
) -> Result<Option<ScratchDatabase>, ReportError> {
    let (Some(server), None) = (&config.database, &config.url) else {
        return Ok(None);
    };
    let name = format!("api_cache_report_{}_{run}", std::process::id());
    if config.progress {
        eprintln!("[cache {run}] creating PostgreSQL database {name}");
    }
    Ok(Some(
        ScratchDatabase::create(server, &name)
            .await
            .map_err(StartupError::Db)?,
    ))
}

async fn drop_scratch_database(scratch: Option<ScratchDatabase>) {
    if let Some(scratch) = scratch {
        let name = scratch.name().to_owned();
        if let Err(err) = scratch.drop_database().await {
            eprintln!("warning: could not drop the report's database {name}: {err}");
        }
    }
}

/// The resources of the demo's `#[cached]` routes.
const DEMO_RESOURCES: [&str; 7] = [
    "templates",
    "contacts",
    "analytics",
    "campaigns",
    "conversations",
    "organization",
    "profiles",
];

/// The number at `pointer` (JSON pointer) in the phase's `/cache/stats`, summed over its
/// instances (0 where one has none).
fn stats_sum(phase: &PhaseReport, pointer: &str) -> u64 {
    phase
        .instances
        .iter()
        .filter_map(|i| i.cache_stats.pointer(pointer).and_then(Value::as_u64))
        .sum()
}

/// A counter of the phase's cache, summed over its instances (`totals.<name>`).
fn shadow_total(phase: &PhaseReport, name: &str) -> u64 {
    stats_sum(phase, &format!("/totals/{name}"))
}

/// One resource's counter in a phase, summed over its instances.
fn resource_total(phase: &PhaseReport, resource: &str, name: &str) -> u64 {
    stats_sum(phase, &format!("/resources/{resource}/{name}"))
}

/// `part` as a percentage of `whole`, or "–".
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".to_owned()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

impl Report {
    /// The shadow run's section: per resource, the real hit rate (cache on) next to the
    /// would-be one (shadow), and what the comparisons found.
    fn shadow_text(&self, on: &PhaseReport, shadow: &PhaseReport) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Shadow run (every resource in shadow mode: each request served by its handler; the cache looked up, stored and compared in the background)"
        );
        let _ = writeln!(
            out,
            "  {:<14} {:>14} {:>18} {:>13} {:>11} {:>7} {:>8}",
            "resource",
            "hit rate (on)",
            "would-be (shadow)",
            "comparisons",
            "mismatches",
            "raced",
            "skipped"
        );
        for resource in DEMO_RESOURCES {
            let get = |p: &PhaseReport, name: &str| resource_total(p, resource, name);
            let (hits, misses) = (get(on, "hits"), get(on, "misses"));
            let (would_hit, would_miss) =
                (get(shadow, "would_be_hits"), get(shadow, "would_be_misses"));
            if hits + misses + would_hit + would_miss == 0 {
                continue;
            }
            let _ = writeln!(
                out,
                "  {:<14} {:>14} {:>18} {:>13} {:>11} {:>7} {:>8}",
                resource,
                percent(hits, hits + misses),
                percent(would_hit, would_hit + would_miss),
                get(shadow, "verifications"),
                get(shadow, "mismatches"),
                get(shadow, "raced"),
                get(shadow, "shadow_skipped")
            );
        }
        let total = |p: &PhaseReport, name: &str| shadow_total(p, name);
        let _ = writeln!(
            out,
            "  all            {:>14} {:>18} {:>13} {:>11} {:>7} {:>8}",
            percent(total(on, "hits"), total(on, "hits") + total(on, "misses")),
            percent(
                total(shadow, "would_be_hits"),
                total(shadow, "would_be_hits") + total(shadow, "would_be_misses")
            ),
            total(shadow, "verifications"),
            total(shadow, "mismatches"),
            total(shadow, "raced"),
            total(shadow, "shadow_skipped")
        );
        let found: Vec<&Value> = shadow
            .instances
            .iter()
            .filter_map(|i| i.cache_stats.get("recent_mismatches"))
            .filter_map(Value::as_array)
            .flatten()
            .collect();
        for mismatch in found.iter().take(5) {
            let field = |name: &str| mismatch.get(name).and_then(Value::as_str).unwrap_or("?");
            let _ = writeln!(
                out,
                "  mismatch: {} {} tenant {} (entry {} s old): {}  key {}",
                field("resource"),
                field("path"),
                field("tenant"),
                mismatch
                    .get("age_secs")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                field("difference"),
                field("key")
            );
        }
        if self.config.incomplete_invalidation {
            let _ = writeln!(
                out,
                "  (--incomplete-invalidation: a new contact does not invalidate `contacts`; mismatches above are that bug, found while every response was served fresh)"
            );
        }
        out
    }
}

/// Per resource of the cache-on run: lookups, fresh hits, stale answers, and the misses
/// by cause (cold: no entry; expiry: past its TTL and grace; invalidation: generations
/// moved), summed over the instances' `/debug/cache`.
fn miss_table(on: &PhaseReport) -> String {
    const COLUMNS: [(&str, &str); 7] = [
        ("hits", "Hits"),
        ("stale", "Stale"),
        ("misses", "Misses"),
        ("misses_cold", "cold"),
        ("misses_expired", "expiry"),
        ("misses_invalidated", "invalidation"),
        ("early_refreshes", "early refresh"),
    ];
    let mut resources: BTreeMap<String, [u64; 7]> = BTreeMap::new();
    for instance in &on.instances {
        let Some(map) = instance
            .cache_stats
            .get("resources")
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (name, figures) in map {
            let row = resources.entry(name.clone()).or_default();
            for (slot, (field, _)) in row.iter_mut().zip(COLUMNS) {
                *slot += figures.get(field).and_then(Value::as_u64).unwrap_or(0);
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {:<14} {:>8} {:>8} {:>8} {:>8}   {:>6} {:>7} {:>12} {:>13}",
        "resource",
        "lookups",
        "hits",
        "stale",
        "misses",
        "cold",
        "expiry",
        "invalidation",
        "early refresh"
    );
    for (name, [hits, stale, misses, cold, expired, invalidated, early]) in resources {
        let lookups = hits + stale + misses;
        if lookups == 0 {
            continue;
        }
        let pct = |n: u64| n as f64 * 100.0 / lookups as f64;
        let _ = writeln!(
            out,
            "  {name:<14} {lookups:>8} {:>7.1}% {:>7.1}% {:>7.1}%   {cold:>6} {expired:>7} {invalidated:>12} {early:>13}",
            pct(hits),
            pct(stale),
            pct(misses)
        );
    }
    out
}

/// Per route with a declared staleness bound, per run: how many writes were checked, the
/// slowest to show, and the violations of the bound.
fn bounded_lines(phases: &[PhaseReport]) -> Vec<String> {
    let mut lines = Vec::new();
    for phase in phases {
        let mut routes: BTreeMap<Route, Vec<&BoundedCheck>> = BTreeMap::new();
        for check in &phase.bounded {
            routes.entry(check.route).or_default().push(check);
        }
        for (route, checks) in routes {
            let bound = checks.first().map_or(0, |c| c.bound_secs);
            let shown: Vec<u64> = checks.iter().filter_map(|c| c.shown_after_ms).collect();
            let later = shown.iter().filter(|&&ms| ms > 0).count();
            let max = shown.iter().max().copied().unwrap_or(0);
            let violations = phase
                .violations
                .iter()
                .filter(|v| v.kind == "read_your_writes" && v.request.contains(route.path()))
                .count();
            lines.push(format!(
                "  bounded {} ({}, declared {bound} s): {} writes checked, {} showed at once, {} later, slowest {:.1} s, {} not shown within the bound",
                route.path(),
                phase.name,
                checks.len(),
                shown.len() - later,
                later,
                max as f64 / 1000.0,
                violations
            ));
        }
    }
    lines
}

/// The cache resource a route's GET belongs to.
fn route_resource(route: Route) -> &'static str {
    match route {
        Route::Templates => "templates",
        Route::Contacts => "contacts",
        Route::Analytics => "analytics",
        Route::Broadcast | Route::DripCampaigns => "campaigns",
        Route::Conversations => "conversations",
        Route::Organization => "organization",
        Route::Profiles => "profiles",
    }
}

/// The staleness bound each route's resource declares (`stale_after_invalidation`), from
/// this program's registry: the demo's routes are linked into the report.
fn route_bounds() -> BTreeMap<Route, Duration> {
    let bounds = cache_runtime::registry::staleness_bounds();
    Route::ALL
        .iter()
        .filter_map(|&route| {
            bounds
                .get(route_resource(route))
                .map(|&secs| (route, Duration::from_secs(u64::from(secs))))
        })
        .collect()
}

fn route_ttls(stats: &Value) -> BTreeMap<Route, u64> {
    let resource = route_resource;
    Route::ALL
        .iter()
        .filter_map(|&route| {
            stats
                .pointer(&format!("/resources/{}/ttl_secs", resource(route)))
                .and_then(Value::as_u64)
                .map(|ttl| (route, ttl))
        })
        .collect()
}

impl Report {
    fn workload_line(&self) -> String {
        let c = &self.config;
        format!(
            "{} virtual users, think {} ms, {:.0}% writes, {} s measured per run after {} s warm-up, seed {}, {} organizations / {} messages",
            c.users,
            c.think.as_millis(),
            c.write_share * 100.0,
            c.duration.as_secs(),
            c.warmup.as_secs(),
            c.seed,
            self.seed.organizations.len(),
            self.seed.totals.messages
        )
    }

    /// The cache-on run's hits by tier, when a local tier was on: `hits - local_hits`
    /// came from Redis.
    fn local_tier_split(&self, on: &PhaseReport) -> Option<String> {
        let stats: Vec<&Value> = if on.instances.is_empty() {
            vec![&on.cache_stats]
        } else {
            on.instances.iter().map(|i| &i.cache_stats).collect()
        };
        let mode = stats
            .iter()
            .find_map(|s| s.pointer("/local_tier/mode").and_then(Value::as_str))?
            .to_owned();
        let sum = |path: &str| {
            stats
                .iter()
                .map(|s| s.pointer(path).and_then(Value::as_u64).unwrap_or(0))
                .sum::<u64>()
        };
        let (hits, local) = (sum("/totals/hits"), sum("/totals/local_hits"));
        let share = if hits == 0 {
            0.0
        } else {
            local as f64 * 100.0 / hits as f64
        };
        Some(format!(
            "Local tier ({mode}), cache-on run: {hits} hits, {local} from the local tier ({share:.1}%), {} from Redis; {} entries, {} KiB held at the end",
            hits - local.min(hits),
            sum("/local_tier/entries"),
            sum("/local_tier/bytes") / 1024
        ))
    }

    /// The tables and the correctness summary, as printed.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "api-cache rollout report");
        let _ = writeln!(out, "workload: {}", self.workload_line());
        let redis = self
            .config
            .redis_note
            .as_ref()
            .map(|note| format!(" ({note})"))
            .unwrap_or_default();
        let target = match &self.config.url {
            Some(url) => format!("the server at {url}"),
            None if self.config.instances > 1 => format!(
                "{} fresh in-process demo instances per run on one shared database, each with its own cache handle, {} cache{redis}; each request to a random instance",
                self.config.instances, self.backend
            ),
            None => format!("a fresh in-process demo per run, {} cache{redis}", self.backend),
        };
        let _ = writeln!(out, "target:   {target}");
        if self.config.url.is_none() {
            let _ = writeln!(out, "database: {}", self.database);
        }
        if self.config.instances > 1 && self.backend == "memory" {
            let _ = writeln!(
                out,
                "warning:  per-process in-memory caches (--allow-per-process-cache): no instance sees another's invalidations, violations are expected"
            );
        }
        let (Some(off), Some(on)) = (self.phases.first(), self.phases.get(1)) else {
            return out;
        };
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Success metrics, same workload with the cache off and on"
        );
        out.push_str(&summary::success_table(&off.figures, &on.figures));
        let _ = writeln!(out);
        let _ = writeln!(out, "Per route");
        out.push_str(&summary::route_table(
            &off.figures,
            &on.figures,
            &route_ttls(&on.cache_stats),
        ));
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Why the cache-on run's lookups were not fresh hits, per resource (server counters, all instances, warm-up included)"
        );
        out.push_str(&miss_table(on));
        // A read-your-writes violation across instances is expected only after a cache
        // fault (an invalidation that timed out stays pending on its own instance): say
        // whether there was one.
        let _ = writeln!(
            out,
            "  cache faults: {} errors (Redis calls failed or timed out), circuit opened {} times, {} invalidations pending at the end",
            shadow_total(on, "errors"),
            stats_sum(on, "/circuit_opened"),
            stats_sum(on, "/pending_invalidations"),
        );
        if self.config.instances > 1 {
            let share = |p: &PhaseReport| p.instances.iter().map(|i| i.share).collect::<Vec<_>>();
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "Per instance (DB queries: each instance's own counter, one shared database file)"
            );
            out.push_str(&summary::instance_table(
                &share(off),
                &share(on),
                &off.figures.all,
                &on.figures.all,
            ));
        }
        if let Some(split) = self.local_tier_split(on) {
            let _ = writeln!(out);
            let _ = writeln!(out, "{split}");
        }
        let _ = writeln!(out);
        let runs = if self.phases.len() > 2 {
            "all runs"
        } else {
            "both runs"
        };
        let _ = writeln!(out, "Correctness ({runs})");
        let sum = |f: &dyn Fn(&PhaseReport) -> u64| self.phases.iter().map(f).sum::<u64>();
        let _ = writeln!(
            out,
            "  read-your-writes: {} verifying reads after a write, {} violations",
            sum(&|p| p.checks.read_your_writes),
            self.violations("read_your_writes")
        );
        let _ = writeln!(
            out,
            "  cross-tenant:     {} responses checked, {} with another organization's data",
            sum(&|p| p.checks.tenant),
            self.violations("cross_tenant")
        );
        let _ = writeln!(
            out,
            "  cross-user:       {} profiles checked, {} of another user",
            sum(&|p| p.checks.profile),
            self.violations("cross_user")
        );
        for line in bounded_lines(&self.phases) {
            let _ = writeln!(out, "{line}");
        }
        let unusable = self.violations("unusable_304");
        if unusable > 0 {
            let _ = writeln!(
                out,
                "  304s that did not validate the browser's copy: {unusable}"
            );
        }
        for phase in self
            .phases
            .iter()
            .filter(|p| p.violations.iter().any(|v| v.kind == "read_your_writes"))
        {
            let by_browser = |outcome: BrowserOutcome| {
                phase
                    .violations
                    .iter()
                    .filter(|v| v.kind == "read_your_writes" && v.browser == outcome)
                    .count()
            };
            let _ = writeln!(
                out,
                "  read-your-writes, {}: {} shown from the browser's fresh copy, {} after a 304, {} from the server",
                phase.name,
                by_browser(BrowserOutcome::Fresh),
                by_browser(BrowserOutcome::NotModified),
                by_browser(BrowserOutcome::Network)
            );
        }
        let _ = writeln!(
            out,
            "  server errors (5xx): {}, no response: {}, other non-2xx: {}",
            sum(&|p| p.server_errors),
            sum(&|p| p.transport_errors),
            sum(&|p| p.client_errors)
        );
        for phase in &self.phases {
            for v in phase.violations.iter().take(10) {
                let age = v.browser_age_secs.unwrap_or(0);
                let shown = match v.browser {
                    BrowserOutcome::Fresh => {
                        format!("no request: the browser's copy, {age} s old")
                    }
                    BrowserOutcome::NotModified => {
                        format!(
                            "X-Cache {:?}, 304: the browser's copy, {age} s old",
                            v.cache
                        )
                    }
                    BrowserOutcome::Network => format!("X-Cache {:?}", v.cache),
                };
                let answered_by = match (self.config.instances > 1, v.instance) {
                    (true, Some(index)) => format!(", instance {}", index + 1),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "  [{}] {} {} as {} ({shown}{answered_by}): {}",
                    phase.name, v.kind, v.request, v.token, v.detail
                );
            }
            for u in phase.unexpected.iter().take(5) {
                let _ = writeln!(out, "  [{}] unexpected: {u}", phase.name);
            }
        }
        if let Some(shadow) = self.phases.iter().find(|p| p.shadow) {
            let _ = writeln!(out);
            out.push_str(&self.shadow_text(on, shadow));
        }
        if let Some(fault) = &on.fault {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "Fault: {}, from {:.1} s to {:.1} s of the cache-on run",
                fault.what,
                f64::from(fault.from_ms) / 1000.0,
                f64::from(fault.to_ms) / 1000.0
            );
            let _ = writeln!(
                out,
                "  requests sent during the pause: {}, failed (5xx or no response): {}",
                fault.during.requests, fault.failed_during
            );
            let _ = writeln!(
                out,
                "  p99: {} cache on with the fault (whole run), {} during the pause, {} cache off",
                summary::ms(on.figures.all.p99_ms),
                summary::ms(fault.during.p99_ms),
                summary::ms(off.figures.all.p99_ms)
            );
            let stat = |path: &str| stats_sum(on, path);
            let _ = writeln!(
                out,
                "  cache: {} errors, circuit opened {} time(s), {} bypasses, {} invalidations pending at the end",
                stat("/totals/errors"),
                stat("/circuit_opened"),
                stat("/totals/bypasses"),
                stat("/pending_invalidations")
            );
        }
        let _ = writeln!(out, "RESULT: {}", if self.passed { "PASS" } else { "FAIL" });
        out
    }

    /// Writes report.json, report.svg and report.md into `dir`.
    pub fn write(&self, dir: &std::path::Path) -> Result<Vec<PathBuf>, ReportError> {
        std::fs::create_dir_all(dir)?;
        let json = dir.join("report.json");
        std::fs::write(&json, serde_json::to_vec_pretty(self)?)?;
        let mut written = vec![json];
        if let (Some(off), Some(on)) = (self.phases.first(), self.phases.get(1)) {
            let svg = dir.join("report.svg");
            let data = chart::ChartData {
                off: &off.timeline,
                on: &on.timeline,
                routes_off: &off.figures.routes,
                routes_on: &on.figures.routes,
                warmup_s: self.config.warmup.as_secs_f64(),
                subtitle: self.workload_line(),
            };
            std::fs::write(&svg, chart::render(&data))?;
            written.push(svg);
        }
        let md = dir.join("report.md");
        std::fs::write(&md, format!("```text\n{}```\n", self.text()))?;
        written.push(md);
        Ok(written)
    }
}

/// Requests of a phase that were GETs of `route` (for tests and tools).
pub fn gets_of(phase: &PhaseReport, route: Route) -> u64 {
    phase
        .figures
        .routes
        .get(&route)
        .map(|f| f.requests)
        .unwrap_or(0)
}
