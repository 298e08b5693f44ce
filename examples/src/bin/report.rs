//! The rollout report: the reference's success table for the demo, cache off vs on.
//!
//! ```text
//! cargo run --release -p examples --bin report
//! cargo run --release -p examples --bin report -- --duration 60 --users 64 --write-share 0.1
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release -p examples --bin report
//! cargo run --release -p examples --bin report -- --url http://127.0.0.1:3000
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release -p examples --bin report -- --fault-pause-redis 5
//! cargo run --release -p examples --bin report -- --instances 3 --redis-cluster
//! cargo run --release -p examples --bin report -- --instances 3 --redis
//! cargo run --release -p examples --bin report -- --database postgres:///postgres?host=/var/run/postgresql
//! ```
//!
//! Exits 0 when every correctness check held, 1 when one failed, 2 on bad arguments or
//! when the report could not run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use examples::report::local_redis::LocalRedis;
use examples::report::{run_report, ReportConfig};
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
usage: report [options]

Replays a workload against the demo API twice, cache off then cache on (a fresh,
identically seeded demo each time), prints the reference's success table side by side,
and writes report.json, report.svg and report.md.

options:
  --duration SECS      measured length of each run (default 25)
  --warmup SECS        workload before measuring starts, in each run (default 5)
  --users N            concurrent virtual users (default 32)
  --think MS           mean time between a user's requests (default 400)
  --write-share F      share of requests that are writes, 0-1 (default 0.05)
  --seed N             seed of the data and the workload (default 42)
  --scale F            data volume; 1.0 = largest tenant ~40k contacts, ~300k messages (default 1.0)
  --url URL            use a running demo server instead of in-process ones
                       (its cache is switched off and on through PUT /debug/cache)
  --database URL       run the in-process demos on the PostgreSQL server at URL
                       (postgres://user@host:port/db, postgres:///db?host=/var/run/postgresql):
                       each run creates, seeds and at its end drops its own database
                       api_cache_report_<pid>_<off|on>; default: DATABASE_URL when it is
                       a postgres:// URL, else SQLite (a temporary file per run)
  --instances N        in-process demo instances per run (default 1), on one shared
                       database and one cache store, each with its own cache handle;
                       every request goes to a random instance. Needs Redis when N > 1
  --allow-per-process-cache
                       run N > 1 instances on the in-memory cache anyway (each instance
                       its own cache): shows the stale reads that follow, and fails
  --local-tier MODE    the in-process demos' local tier in front of Redis: off,
                       tracking or validate (default: API_CACHE_LOCAL_TIER); the
                       report then shows the split of hits between the tiers
  --redis              use REDIS_URL, or when it is unset start a private redis-server
                       (on a free port, in a temporary directory) for the run
  --redis-cluster      start a local Redis Cluster (3 masters, redis-server and
                       redis-cli --cluster create, free ports, a temporary directory)
                       and use it; stopped and removed when the report ends
  --fault-pause-redis SECS
                       freeze Redis (CLIENT PAUSE ALL) for SECS in the middle of the
                       cache-on run; needs REDIS_URL or --redis
  --mode shadow        a third run with every resource in shadow mode (served by the
                       handlers; the cache looks up, stores and compares in the
                       background): would-be hit rate next to the real one, mismatches
  --incomplete-invalidation
                       the demo's contact creation forgets to invalidate `contacts`
                       (a deliberate bug): the shadow run reports it as mismatches
  --out DIR            output directory (default report-output)
  --no-output          write no files
  --quiet              no progress lines
  -h, --help           this text

environment: REDIS_URL (or REDIS_CLUSTER_URLS) selects Redis for the in-process demos
(default: in-memory cache; --redis-cluster overrides both); DATABASE_URL=postgres://...
selects PostgreSQL like --database; RUST_LOG controls the
demo's logs (default: warnings only).";

/// The Redis the report starts for itself, if asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnRedis {
    None,
    Standalone,
    Cluster,
}

fn parse_args() -> Result<(ReportConfig, OwnRedis), String> {
    let mut config = ReportConfig::default();
    let mut own_redis = OwnRedis::None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        fn num<T: std::str::FromStr>(name: &str, raw: String) -> Result<T, String> {
            raw.parse()
                .map_err(|_| format!("{name}: {raw:?} is not a valid number"))
        }
        match arg.as_str() {
            "--duration" => {
                config.duration = Duration::from_secs_f64(
                    num::<f64>("--duration", value("--duration")?)?.max(1.0),
                )
            }
            "--warmup" => {
                config.warmup =
                    Duration::from_secs_f64(num::<f64>("--warmup", value("--warmup")?)?.max(0.0))
            }
            "--users" => config.users = num::<usize>("--users", value("--users")?)?.max(1),
            "--think" => config.think = Duration::from_millis(num("--think", value("--think")?)?),
            "--write-share" => {
                let share: f64 = num("--write-share", value("--write-share")?)?;
                if !(0.0..=1.0).contains(&share) {
                    return Err("--write-share must be between 0 and 1".into());
                }
                config.write_share = share;
            }
            "--seed" => config.seed = num("--seed", value("--seed")?)?,
            "--scale" => {
                let scale: f64 = num("--scale", value("--scale")?)?;
                if !(scale > 0.0 && scale <= 10.0) {
                    return Err("--scale must be in (0, 10]".into());
                }
                config.scale = scale;
            }
            "--url" => config.url = Some(value("--url")?),
            "--database" => config.database = Some(postgres_server(&value("--database")?)?),
            "--instances" => {
                let n: usize = num("--instances", value("--instances")?)?;
                if !(1..=64).contains(&n) {
                    return Err("--instances must be between 1 and 64".into());
                }
                config.instances = n;
            }
            "--allow-per-process-cache" => config.allow_per_process_cache = true,
            "--local-tier" => {
                config.local_tier = Some(match value("--local-tier")?.as_str() {
                    "off" => cache_runtime::LocalTier::Off,
                    "tracking" => cache_runtime::LocalTier::Tracking,
                    "validate" => cache_runtime::LocalTier::Validate,
                    other => {
                        return Err(format!(
                            "--local-tier {other:?}: expected off, tracking or validate"
                        ))
                    }
                });
            }
            "--redis" | "--redis-cluster" => {
                let wanted = if arg == "--redis" {
                    OwnRedis::Standalone
                } else {
                    OwnRedis::Cluster
                };
                if own_redis != OwnRedis::None && own_redis != wanted {
                    return Err("--redis and --redis-cluster exclude each other".into());
                }
                own_redis = wanted;
            }
            "--fault-pause-redis" => {
                let secs: f64 = num("--fault-pause-redis", value("--fault-pause-redis")?)?;
                if !(secs > 0.0 && secs <= 600.0) {
                    return Err("--fault-pause-redis must be in (0, 600] seconds".into());
                }
                config.fault_pause_redis = Some(Duration::from_secs_f64(secs));
            }
            "--mode" => match value("--mode")?.as_str() {
                "shadow" => config.shadow = true,
                "default" => config.shadow = false,
                other => return Err(format!("--mode {other}: expected `shadow` or `default`")),
            },
            "--incomplete-invalidation" => config.incomplete_invalidation = true,
            "--out" => config.out_dir = Some(PathBuf::from(value("--out")?)),
            "--no-output" => config.out_dir = None,
            "--quiet" => config.progress = false,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if config.database.is_none() {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            if !url.trim().is_empty() {
                config.database = Some(postgres_server(&url)?);
            }
        }
    }
    if config.database.is_some() && config.url.is_some() {
        return Err("--database (or DATABASE_URL) is for in-process demos, not --url".into());
    }
    if own_redis != OwnRedis::None && config.url.is_some() {
        return Err("--redis and --redis-cluster are for in-process demos, not --url".into());
    }
    Ok((config, own_redis))
}

/// The PostgreSQL server the report makes its databases on.
fn postgres_server(url: &str) -> Result<String, String> {
    match examples::parse_database_url(url)? {
        examples::Database::Postgres(url) => Ok(url),
        examples::Database::Sqlite(_) => Err(format!(
            "database {url:?}: the report makes its own SQLite files; --database and \
             DATABASE_URL take a postgres:// server URL"
        )),
    }
}

/// Starts the Redis asked for and points `config` at it. `Ok(None)`: nothing to start.
fn start_own_redis(
    config: &mut ReportConfig,
    own_redis: OwnRedis,
) -> Result<Option<LocalRedis>, String> {
    let redis_url_set = std::env::var("REDIS_URL").is_ok_and(|url| !url.trim().is_empty());
    let started = match own_redis {
        OwnRedis::None => return Ok(None),
        OwnRedis::Standalone if redis_url_set => {
            if config.progress {
                eprintln!("--redis: using REDIS_URL");
            }
            return Ok(None);
        }
        OwnRedis::Standalone => LocalRedis::standalone(),
        OwnRedis::Cluster => LocalRedis::cluster(),
    }
    .map_err(|err| err.to_string())?;
    if config.progress {
        eprintln!("started {}", started.describe());
    }
    match own_redis {
        OwnRedis::Cluster => config.redis_cluster_urls = started.urls(),
        _ => config.redis_url = Some(started.url()),
    }
    config.redis_note = Some(started.describe());
    Ok(Some(started))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let (mut config, own_redis) = match parse_args() {
        Ok(parsed) => parsed,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("report: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Dropped (its processes stopped, its directory removed) whichever way main returns;
    // its watchdog cleans up if the process is killed instead.
    let _own_redis = match start_own_redis(&mut config, own_redis) {
        Ok(started) => started,
        Err(err) => {
            eprintln!("report: {err}");
            return ExitCode::from(2);
        }
    };
    let out_dir = config.out_dir.clone();
    let outcome = tokio::select! {
        outcome = run_report(config) => outcome,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("report: interrupted");
            return ExitCode::from(130);
        }
    };
    let report = match outcome {
        Ok(report) => report,
        Err(err) => {
            eprintln!("report: {err}");
            return ExitCode::from(2);
        }
    };
    println!("\n{}", report.text());
    if let Some(dir) = out_dir {
        match report.write(&dir) {
            Ok(files) => {
                let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                println!("wrote {}", names.join(", "));
            }
            Err(err) => {
                eprintln!("report: {err}");
                return ExitCode::from(2);
            }
        }
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
