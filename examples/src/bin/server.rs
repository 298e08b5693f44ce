//! The demo API server alone.
//!
//! ```text
//! cargo run --release -p examples --bin server
//! PORT=8080 REDIS_URL=redis://127.0.0.1:6379 cargo run --release -p examples --bin server
//! ```
//!
//! Environment: `PORT` (default 3000; listens on 127.0.0.1), `REDIS_URL` or
//! `REDIS_CLUSTER_URLS` (seed nodes; both unset: the in-memory cache), `DATABASE_URL` (unset: a temporary SQLite file of this process;
//! `sqlite:///path/demo.sqlite3`: a file shared with other instances, seeded by the
//! first; `postgres://user@host/db` or `postgres:///db?host=/var/run/postgresql`: a
//! PostgreSQL database, seeded by the first instance when it has no demo tables yet), `DEMO_SEED` (default 42), `DEMO_SCALE` (default 1.0: data volume), `RUST_LOG`
//! (default `info`: one line per request), `DEMO_INCOMPLETE_INVALIDATION=1` (or the
//! argument `--incomplete-invalidation`: a contact creation forgets to invalidate
//! `contacts`, a deliberate bug that shadow mode detects; see the README's rollout).
//!
//! Two instances on one database and one Redis, as behind a load balancer:
//!
//! ```text
//! export REDIS_URL=redis://127.0.0.1:6379/ DATABASE_URL=sqlite:///tmp/demo.sqlite3
//! PORT=3001 cargo run --release -p examples --bin server &
//! PORT=3002 cargo run --release -p examples --bin server &
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use examples::{start_demo, DemoConfig, SeedConfig};
use tracing_subscriber::EnvFilter;

/// How long shutdown waits for Redis to take the invalidations still pending.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(raw) => raw
            .parse()
            .map_err(|_| format!("{name}={raw:?} is not a valid value")),
        Err(_) => Ok(default),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("server: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = env_or("PORT", 3000)?;
    let seed = SeedConfig {
        seed: env_or("DEMO_SEED", 42)?,
        scale: env_or("DEMO_SCALE", 1.0)?,
        ..SeedConfig::default()
    };
    let backend = if std::env::var_os("REDIS_CLUSTER_URLS").is_some() {
        "Redis Cluster (REDIS_CLUSTER_URLS)"
    } else if std::env::var_os("REDIS_URL").is_some() {
        "Redis (REDIS_URL)"
    } else {
        "in-memory (set REDIS_URL or REDIS_CLUSTER_URLS for Redis)"
    };
    let cache = cache_runtime::Cache::from_env().await?;
    // One cache per process here: make it the process-wide one too, so cached plain
    // functions and `invalidate::` calls made outside a request use it. Requests already
    // run their handlers in the router's cache. Nothing has read the global yet, so this
    // cannot find one installed; if it did, that one would serve code outside requests.
    if cache.clone().install_global().is_err() {
        tracing::warn!("a process-wide cache was already installed; keeping it");
    }
    let database = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(examples::parse_database_url(&url)?),
        _ => None,
    };
    if database.is_some() && cache.backend_name() == "memory" {
        tracing::warn!(
            "DATABASE_URL is shared but REDIS_URL is unset: each instance's in-memory cache \
             cannot see the others' invalidations, so they will serve each other's stale data"
        );
    }
    let incomplete_invalidation = env_or("DEMO_INCOMPLETE_INVALIDATION", 0u8)? != 0
        || std::env::args().any(|arg| arg == "--incomplete-invalidation");
    if incomplete_invalidation {
        tracing::warn!(
            "--incomplete-invalidation: POST /api/contacts does not invalidate \
             `contacts` (a deliberate bug, for shadow mode to catch)"
        );
    }
    let config = DemoConfig {
        seed,
        database,
        incomplete_invalidation,
        ..DemoConfig::default()
    };
    let cache_at_exit = cache.clone();
    let mut demo = start_demo(config, cache, SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    let totals = &demo.seed.totals;
    tracing::info!(
        "seeded {} organizations, {} users, {} contacts, {} conversations, {} messages in {:.1}s",
        demo.seed.organizations.len(),
        totals.users,
        totals.contacts,
        totals.conversations,
        totals.messages,
        demo.seed.seconds
    );
    tracing::info!("cache: {backend}");
    tracing::info!("database: {}", demo.db.describe());
    tracing::info!("listening on {}", demo.url());
    tracing::info!(
        "try: curl -i {}/api/templates -H 'Authorization: Bearer tok_org1_user1'",
        demo.url()
    );
    tokio::select! {
        result = shutdown_signal() => {
            result?;
            tracing::info!("shutting down");
            // Also removes the temporary database file (a shared one is kept).
            demo.shutdown().await;
        }
        result = demo.wait() => result?,
    }
    // Requests have drained (axum's graceful shutdown): deliver the invalidations Redis
    // has not taken yet, or other instances could serve what they drop until it expires.
    if cache_at_exit.flush_pending(SHUTDOWN_FLUSH).await {
        tracing::info!("no cache invalidation left pending");
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM (as `kill` and service managers send).
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
