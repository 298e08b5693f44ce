//! The demo's embedded database: one SQLite file in WAL mode (so readers run
//! concurrently with each other and with the single writer), a small pool of connections
//! used from tokio's blocking pool, and the query counter.
//!
//! Every statement a request runs goes through [`Sql`], which counts it: the counter is
//! the report's "database queries" figure, so nothing may bypass it. Seeding runs before
//! the counter starts and is not counted. Nothing here caches or retries.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, Params, Row, TransactionBehavior};
use tokio::sync::Semaphore;

/// A database failure. Never shown to an HTTP client in detail (see [`crate::error`]).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The blocking task running the statement panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(String),
    /// The pool was closed (the app is shutting down).
    #[error("database pool closed")]
    Closed,
    /// A database shared by several instances cannot be used as it is.
    #[error("shared database: {0}")]
    Shared(String),
    /// The temporary directory for the database file could not be created.
    #[error("temporary database directory: {0}")]
    TempDir(#[from] std::io::Error),
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

struct DbInner {
    path: PathBuf,
    /// A temporary database's directory (the file, its `-wal` and `-shm`): removed with
    /// the last handle. `None` for a shared file, which is kept.
    _temp_dir: Option<tempfile::TempDir>,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    /// SQLite has one writer at a time; queueing writers here keeps them off the
    /// blocking pool (and out of SQLITE_BUSY) while they wait.
    writer: tokio::sync::Mutex<()>,
    queries: AtomicU64,
}

/// Counts of database work so far, as served on `/debug/db`.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct DbStats {
    /// SQL statements run by request handlers since start-up (seeding excluded).
    pub queries: u64,
}

impl Db {
    /// Creates an empty database file in the system temp directory, removed again when
    /// the last handle is dropped, with `pool_size` connections.
    pub fn create_temp(pool_size: usize) -> Result<Db, DbError> {
        let dir = tempfile::Builder::new()
            .prefix("api-cache-demo-")
            .tempdir()?;
        let path = dir.path().join("demo.sqlite3");
        Db::with_pool(path, pool_size, Some(dir))
    }

    /// Opens (creating if needed) the SQLite file at `path`, shared with any other
    /// process that opens it: WAL mode lets their readers run alongside one writer, and
    /// SQLite's own file locks order the writers of all processes. The file is kept.
    pub fn open_file(path: impl Into<PathBuf>, pool_size: usize) -> Result<Db, DbError> {
        Db::with_pool(path.into(), pool_size, None)
    }

    fn with_pool(
        path: PathBuf,
        pool_size: usize,
        temp_dir: Option<tempfile::TempDir>,
    ) -> Result<Db, DbError> {
        let pool_size = pool_size.max(1);
        let mut idle = Vec::with_capacity(pool_size);
        for _ in 0..pool_size {
            idle.push(open(&path)?);
        }
        Ok(Db {
            inner: Arc::new(DbInner {
                path,
                _temp_dir: temp_dir,
                idle: Mutex::new(idle),
                permits: Arc::new(Semaphore::new(pool_size)),
                writer: tokio::sync::Mutex::new(()),
                queries: AtomicU64::new(0),
            }),
        })
    }

    /// Runs `f` on a fresh, uncounted connection: for schema creation and seeding.
    pub async fn setup<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let path = self.inner.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = open(&path)?;
            conn.pragma_update(None, "synchronous", "OFF")?;
            f(&mut conn)
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Runs read-only work `f` on a pooled connection.
    pub async fn read<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&Sql<'_>) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        self.with_conn(move |conn, queries| f(&Sql { conn, queries }))
            .await
    }

    /// Runs `f` in one write transaction (BEGIN IMMEDIATE ... COMMIT); an error rolls back.
    pub async fn write<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&Sql<'_>) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let _writer = self.inner.writer.lock().await;
        self.with_conn(move |conn, queries| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&Sql { conn: &tx, queries })?;
            tx.commit()?;
            Ok(value)
        })
        .await
    }

    /// Statements run so far.
    pub fn stats(&self) -> DbStats {
        DbStats {
            queries: self.inner.queries.load(Ordering::Relaxed),
        }
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut Connection, &AtomicU64) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| DbError::Closed)?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = inner.checkout()?;
            let result = f(&mut conn, &inner.queries);
            inner.checkin(conn);
            result
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }
}

impl DbInner {
    fn checkout(&self) -> Result<Connection, DbError> {
        // A poisoned lock only means another task panicked while pushing or popping;
        // the Vec itself is still valid.
        let popped = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        match popped {
            Some(conn) => Ok(conn),
            // A connection lost to a panicking closure is replaced on demand.
            None => open(&self.path),
        }
    }

    fn checkin(&self, conn: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(conn);
    }
}

impl Drop for DbInner {
    fn drop(&mut self) {
        self.idle
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
        // The connections are closed now; `_dir` then removes the files.
    }
}

fn open(path: &PathBuf) -> Result<Connection, DbError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -32_768)?;
    conn.pragma_update(None, "mmap_size", 512 * 1024 * 1024)?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    Ok(conn)
}

/// A connection whose every statement is counted. Handlers only ever see this.
pub struct Sql<'c> {
    conn: &'c Connection,
    queries: &'c AtomicU64,
}

impl Sql<'_> {
    fn count(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs a query expected to return exactly one row.
    pub fn one<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, DbError> {
        self.count();
        Ok(self.conn.prepare_cached(sql)?.query_row(params, map)?)
    }

    /// Runs a query returning zero or one row.
    pub fn optional<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, DbError> {
        self.count();
        match self.conn.prepare_cached(sql)?.query_row(params, map) {
            Ok(value) => Ok(Some(value)),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Runs a query and maps every row.
    pub fn all<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, DbError> {
        self.count();
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, map)?;
        Ok(rows.collect::<rusqlite::Result<Vec<T>>>()?)
    }

    /// Runs an INSERT, UPDATE or DELETE; returns the number of rows changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize, DbError> {
        self.count();
        Ok(self.conn.prepare_cached(sql)?.execute(params)?)
    }

    /// Runs an INSERT and returns the new row's id.
    pub fn insert<P: Params>(&self, sql: &str, params: P) -> Result<i64, DbError> {
        self.execute(sql, params)?;
        Ok(self.conn.last_insert_rowid())
    }
}
