//! The api-cache demo: the reference multi-tenant messaging API (templates, contacts,
//! analytics dashboard, broadcasts, drip campaigns, conversations, organization
//! settings, profiles) on a database seeded at start-up (an embedded SQLite by
//! default, or PostgreSQL), with every
//! read `#[cached]` and every mutation `#[invalidates]` per the reference rollout plan.
//!
//! The server binary (`--bin server`) and the rollout report (`--bin report`) both start
//! it through [`start_demo`]; tests do too, on a free port.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use examples::{start_demo, DemoConfig};
//!
//! let cache = cache_runtime::Cache::from_env().await?;
//! let demo = start_demo(DemoConfig::default(), cache, "127.0.0.1:0".parse()?).await?;
//! println!("listening on {}", demo.url());
//! demo.shutdown().await;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod db;
pub mod error;
pub mod extract;
pub mod report;
pub mod routes;
pub mod seed;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use cache_runtime::Cache;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use crate::auth::{Auth, Tokens};
pub use crate::db::{Db, DbError, DbStats};
pub use crate::error::ApiError;
pub use crate::routes::resource_of;
pub use crate::seed::{token, SeedConfig, SeedSummary};

/// What every API handler gets as `State`.
#[derive(Clone)]
pub struct AppState {
    /// The database (with its query counter).
    pub db: Db,
    /// `--incomplete-invalidation`: `POST /api/contacts` forgets to invalidate
    /// `contacts`, to show shadow mode catching a missing annotation.
    pub incomplete_invalidation: bool,
}

/// How to build the demo.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// What to seed.
    pub seed: SeedConfig,
    /// Database connections (SQLite: concurrent readers). Default 8.
    pub db_connections: usize,
    /// A database shared with other instances (`DATABASE_URL`): the first instance to
    /// open it seeds it, the others use its data. `None` (the default): a temporary
    /// SQLite file of this instance alone, seeded afresh and removed at exit.
    pub database: Option<Database>,
    /// A deliberate bug for the shadow-mode demonstration: a new contact does not
    /// invalidate `contacts` (the lists keep the old values). Default false.
    pub incomplete_invalidation: bool,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            seed: SeedConfig::default(),
            db_connections: 8,
            database: None,
            incomplete_invalidation: false,
        }
    }
}

/// Failure to start the demo.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Creating or seeding the database failed.
    #[error("database: {0}")]
    Db(#[from] DbError),
    /// Binding or serving the socket failed.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
}

/// The built application: its router and what it is built on.
pub struct Demo {
    /// Serve this.
    pub router: Router,
    /// The database and its query counter.
    pub db: Db,
    /// The response cache.
    pub cache: Cache,
    /// What was seeded.
    pub seed: Arc<SeedSummary>,
}

/// How long an instance waits for another to finish seeding a shared database.
const SHARED_SEED_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// The database a demo instance runs on, from `DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file, shared with the other instances that open it.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://...` or `postgresql://...`).
    Postgres(String),
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "SQLite file {}", path.display()),
            Database::Postgres(url) => write!(f, "PostgreSQL {url}"),
        }
    }
}

/// Parses `DATABASE_URL`: `postgres://...` or `postgresql://...` for PostgreSQL;
/// `sqlite://<path>`, `sqlite:<path>` or a bare path for a SQLite file.
///
/// ```
/// use examples::{parse_database_url, Database};
///
/// let sqlite = parse_database_url("sqlite:///tmp/demo.sqlite3").unwrap();
/// assert_eq!(sqlite, Database::Sqlite("/tmp/demo.sqlite3".into()));
/// let postgres = parse_database_url("postgres:///demo?host=/var/run/postgresql").unwrap();
/// assert!(matches!(postgres, Database::Postgres(_)));
/// assert!(parse_database_url("mysql://localhost/demo").is_err());
/// ```
pub fn parse_database_url(url: &str) -> Result<Database, String> {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Database::Postgres(url.to_owned()));
    }
    let path = if let Some(rest) = url.strip_prefix("sqlite://") {
        rest
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        rest
    } else if url.contains("://") {
        return Err(format!(
            "DATABASE_URL={url:?}: the demo runs on SQLite (sqlite://<path> or a path) \
             or PostgreSQL (postgres://...)"
        ));
    } else {
        url
    };
    if path.is_empty() {
        return Err("DATABASE_URL names no file".to_owned());
    }
    Ok(Database::Sqlite(PathBuf::from(path)))
}

/// Creates and seeds a fresh database (or opens the shared one) and builds the router
/// around `cache`.
pub async fn build_demo(config: &DemoConfig, cache: Cache) -> Result<Demo, StartupError> {
    let (db, summary) = match &config.database {
        None => {
            let db = Db::create_temp(config.db_connections)?;
            let summary = db.seed(&config.seed, extract::now()).await?;
            (db, summary)
        }
        Some(Database::Sqlite(path)) => {
            let db = Db::open_file(path, config.db_connections)?;
            let summary = db
                .seed_shared(&config.seed, extract::now(), SHARED_SEED_WAIT)
                .await?;
            (db, summary)
        }
        Some(Database::Postgres(url)) => {
            let db = Db::connect_postgres(url, config.db_connections).await?;
            let summary = db
                .seed_shared(&config.seed, extract::now(), SHARED_SEED_WAIT)
                .await?;
            (db, summary)
        }
    };
    let seed = Arc::new(summary);
    let tokens = Tokens::load(&db).await?;
    let state = AppState {
        db: db.clone(),
        incomplete_invalidation: config.incomplete_invalidation,
    };
    let router = routes::router(state, tokens, cache.clone(), Arc::clone(&seed));
    Ok(Demo {
        router,
        db,
        cache,
        seed,
    })
}

/// A demo serving on a socket. Dropping it stops the server (without waiting).
pub struct RunningDemo {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The database and its query counter.
    pub db: Db,
    /// The response cache.
    pub cache: Cache,
    /// What was seeded.
    pub seed: Arc<SeedSummary>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Builds the demo and serves it on `addr` (port 0: a free port).
pub async fn start_demo(
    config: DemoConfig,
    cache: Cache,
    addr: SocketAddr,
) -> Result<RunningDemo, StartupError> {
    let demo = build_demo(&config, cache).await?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, demo.router)
            .with_graceful_shutdown(async move {
                // Either a stop signal or the handle was dropped: stop in both cases.
                let _ = stopped.await;
            })
            .await
    });
    Ok(RunningDemo {
        addr,
        db: demo.db,
        cache: demo.cache,
        seed: demo.seed,
        stop: Some(stop),
        task: Some(task),
    })
}

impl RunningDemo {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections and waits for in-flight requests to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!(error = %err, "demo server stopped with an error"),
                Err(err) => tracing::warn!(error = %err, "demo server task failed"),
            }
        }
    }

    /// Waits until the server stops (it stops only on [`RunningDemo::shutdown`] or drop,
    /// so the server binary waits here for ever).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        match self.task.as_mut() {
            Some(task) => {
                let result = task.await.map_err(std::io::Error::other)?;
                self.task = None;
                result
            }
            None => Ok(()),
        }
    }
}

impl Drop for RunningDemo {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
