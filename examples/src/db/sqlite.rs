//! The SQLite backend: one file in WAL mode (so readers run concurrently with each other
//! and with the single writer), a small pool of connections used from tokio's blocking
//! pool. It runs statements; counting them is [`super::Sql`]'s job.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::Semaphore;

use super::DbError;

pub(super) struct SqlitePool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    path: PathBuf,
    /// A temporary database's directory (the file, its `-wal` and `-shm`): removed with
    /// the last handle. `None` for a shared file, which is kept.
    _temp_dir: Option<tempfile::TempDir>,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    /// SQLite has one writer at a time; queueing writers here keeps them off the
    /// blocking pool (and out of SQLITE_BUSY) while they wait.
    writer: tokio::sync::Mutex<()>,
}

impl SqlitePool {
    pub(super) fn create_temp(pool_size: usize) -> Result<SqlitePool, DbError> {
        let dir = tempfile::Builder::new()
            .prefix("api-cache-demo-")
            .tempdir()?;
        let path = dir.path().join("demo.sqlite3");
        SqlitePool::with_pool(path, pool_size, Some(dir))
    }

    pub(super) fn open_file(path: PathBuf, pool_size: usize) -> Result<SqlitePool, DbError> {
        SqlitePool::with_pool(path, pool_size, None)
    }

    fn with_pool(
        path: PathBuf,
        pool_size: usize,
        temp_dir: Option<tempfile::TempDir>,
    ) -> Result<SqlitePool, DbError> {
        let pool_size = pool_size.max(1);
        let mut idle = Vec::with_capacity(pool_size);
        for _ in 0..pool_size {
            idle.push(open(&path)?);
        }
        Ok(SqlitePool {
            inner: Arc::new(PoolInner {
                path,
                _temp_dir: temp_dir,
                idle: Mutex::new(idle),
                permits: Arc::new(Semaphore::new(pool_size)),
                writer: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Runs `f` on a fresh connection with durability off: for schema creation and
    /// seeding.
    pub(super) async fn setup<T, F>(&self, f: F) -> Result<T, DbError>
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

    /// Runs `f` on a pooled connection; `write`: in one write transaction (BEGIN
    /// IMMEDIATE ... COMMIT), rolled back when `f` fails.
    pub(super) async fn run<T, F>(&self, write: bool, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let _writer = if write {
            Some(self.inner.writer.lock().await)
        } else {
            None
        };
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| DbError::Closed)?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = inner.checkout()?;
            let result = if write {
                transaction(&mut conn, f)
            } else {
                f(&conn)
            };
            inner.checkin(conn);
            result
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }
}

fn transaction<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

impl PoolInner {
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

impl Drop for PoolInner {
    fn drop(&mut self) {
        self.idle
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
        // The connections are closed now; `_temp_dir` then removes the files.
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
