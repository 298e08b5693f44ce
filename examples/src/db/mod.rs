//! The demo's database and the query counter: SQLite (a temporary file by default, or a
//! file shared by several instances) or PostgreSQL (`DATABASE_URL=postgres://...`).
//!
//! Route code sees one synchronous query API whatever the backend: [`Db::read`] and
//! [`Db::write`] run a closure on tokio's blocking pool with a [`Sql`] handle, whose
//! statements are written once, with `?N` placeholders and SQL both databases accept,
//! and whose rows are read through [`Row::get`]. Every statement a request runs goes
//! through [`Sql`], which counts it: the counter is the report's "database queries"
//! figure, so nothing may bypass it. Seeding runs before the counter starts and is not
//! counted. Nothing here caches or retries.

mod postgres;
mod sqlite;
mod value;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use self::value::{FromValue, ToValue, Value};
use crate::seed::{SeedConfig, SeedSummary};

/// A database failure. Never shown to an HTTP client in detail (see [`crate::error`]).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL (or the connection to it) reported an error.
    #[error("postgres: {}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be had from the pool.
    #[error("postgres pool: {0}")]
    Pool(String),
    /// A query expected to return a row returned none.
    #[error("the query returned no rows")]
    NoRows,
    /// A column's value does not convert to the type asked for.
    #[error("column {index}: {reason}")]
    Column {
        /// Zero-based column index.
        index: usize,
        /// What did not fit.
        reason: String,
    },
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

/// The server's own message (tokio-postgres' Display says only "db error").
fn postgres_message(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => err.to_string(),
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    backend: Arc<Backend>,
    queries: Arc<AtomicU64>,
}

enum Backend {
    Sqlite(sqlite::SqlitePool),
    Postgres(postgres::PgPool),
}

/// Counts of database work so far, as served on `/debug/db`.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct DbStats {
    /// SQL statements run by request handlers since start-up (seeding excluded).
    pub queries: u64,
}

impl Db {
    /// Creates an empty SQLite database file in the system temp directory, removed again
    /// when the last handle is dropped, with `pool_size` connections.
    pub fn create_temp(pool_size: usize) -> Result<Db, DbError> {
        Ok(Db::with(Backend::Sqlite(sqlite::SqlitePool::create_temp(
            pool_size,
        )?)))
    }

    /// Opens (creating if needed) the SQLite file at `path`, shared with any other
    /// process that opens it: WAL mode lets their readers run alongside one writer, and
    /// SQLite's own file locks order the writers of all processes. The file is kept.
    pub fn open_file(path: impl Into<PathBuf>, pool_size: usize) -> Result<Db, DbError> {
        Ok(Db::with(Backend::Sqlite(sqlite::SqlitePool::open_file(
            path.into(),
            pool_size,
        )?)))
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://user@host:port/db`;
    /// `postgres:///db?host=/var/run/postgresql` for a local socket) with up to
    /// `pool_size` connections. Fails now if the server cannot be reached.
    pub async fn connect_postgres(url: &str, pool_size: usize) -> Result<Db, DbError> {
        Ok(Db::with(Backend::Postgres(
            postgres::PgPool::connect(url, pool_size).await?,
        )))
    }

    fn with(backend: Backend) -> Db {
        Db {
            backend: Arc::new(backend),
            queries: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `SQLite` or `PostgreSQL`, with the database the PostgreSQL pool connects to.
    pub fn describe(&self) -> String {
        match &*self.backend {
            Backend::Sqlite(_) => "SQLite".to_owned(),
            Backend::Postgres(pool) => format!("PostgreSQL ({})", pool.describe),
        }
    }

    /// Creates the schema and seeds it (the database must be empty).
    pub async fn seed(&self, config: &SeedConfig, now: i64) -> Result<SeedSummary, DbError> {
        let config = config.clone();
        match &*self.backend {
            Backend::Sqlite(pool) => {
                pool.setup(move |conn| crate::seed::seed(conn, &config, now))
                    .await
            }
            Backend::Postgres(pool) => {
                let client = pool.setup().await?;
                crate::seed::seed_postgres(&client, &config, now).await
            }
        }
    }

    /// Seeds a database shared by several instances once: the first to claim it seeds,
    /// the others wait up to `wait` for its summary (see [`crate::seed::seed_shared`]).
    pub async fn seed_shared(
        &self,
        config: &SeedConfig,
        now: i64,
        wait: std::time::Duration,
    ) -> Result<SeedSummary, DbError> {
        let config = config.clone();
        match &*self.backend {
            Backend::Sqlite(pool) => {
                pool.setup(move |conn| crate::seed::seed_shared(conn, &config, now, wait))
                    .await
            }
            Backend::Postgres(pool) => {
                let client = pool.setup().await?;
                crate::seed::seed_shared_postgres(&client, &config, now, wait).await
            }
        }
    }

    /// Runs read-only work `f` on a pooled connection.
    pub async fn read<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&Sql<'_>) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        self.run(false, Some(Arc::clone(&self.queries)), f).await
    }

    /// Like [`Db::read`], but not counted: for start-up work such as loading tokens.
    pub async fn read_uncounted<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&Sql<'_>) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        self.run(false, None, f).await
    }

    /// Runs `f` in one write transaction (SQLite: BEGIN IMMEDIATE, one writer at a
    /// time); an error rolls back.
    pub async fn write<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&Sql<'_>) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        self.run(true, Some(Arc::clone(&self.queries)), f).await
    }

    /// Statements run so far.
    pub fn stats(&self) -> DbStats {
        DbStats {
            queries: self.queries.load(Ordering::Relaxed),
        }
    }

    async fn run<T, F>(
        &self,
        write: bool,
        counter: Option<Arc<AtomicU64>>,
        f: F,
    ) -> Result<T, DbError>
    where
        F: FnOnce(&Sql<'_>) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let scratch = AtomicU64::new(0);
        match &*self.backend {
            Backend::Sqlite(pool) => {
                pool.run(write, move |conn| {
                    let queries = counter.as_deref().unwrap_or(&scratch);
                    f(&Sql {
                        conn: Conn::Sqlite(conn),
                        queries,
                    })
                })
                .await
            }
            Backend::Postgres(pool) => {
                pool.run(write, move |conn| {
                    let queries = counter.as_deref().unwrap_or(&scratch);
                    f(&Sql {
                        conn: Conn::Postgres(conn),
                        queries,
                    })
                })
                .await
            }
        }
    }
}

/// A PostgreSQL database made for one run (a report phase, a test) on a server the
/// caller names, so that the run starts from a known state; dropped again by
/// [`ScratchDatabase::drop_database`]. Only a database this created is ever dropped.
#[derive(Debug)]
pub struct ScratchDatabase {
    server_url: String,
    name: String,
    /// The URL of the new database (the server URL with its database name replaced).
    pub url: String,
}

impl ScratchDatabase {
    /// Creates the database `name` (letters, digits and `_` only) on the server at
    /// `server_url` (`postgres://...`; its own database is only used to connect). Fails
    /// if `name` exists already: that database is someone else's.
    pub async fn create(server_url: &str, name: &str) -> Result<ScratchDatabase, DbError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(DbError::Shared(format!(
                "{name:?} is not a plain database name (a-z, 0-9, _)"
            )));
        }
        postgres::admin(server_url, &format!("CREATE DATABASE {name}")).await?;
        Ok(ScratchDatabase {
            server_url: server_url.to_owned(),
            name: name.to_owned(),
            url: postgres::with_database(server_url, name),
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database, closing any session still connected to it (the demo's pool
    /// may not have closed every connection yet).
    pub async fn drop_database(self) -> Result<(), DbError> {
        postgres::admin(
            &self.server_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )
        .await
    }
}

/// A connection whose every statement is counted. Handlers only ever see this.
///
/// Statements use `?1`, `?2`, ... (or bare `?`) placeholders and SQL that SQLite and
/// PostgreSQL both accept: `COUNT(CASE WHEN ... THEN 1 END)` rather than summing a
/// comparison, `INSERT ... ON CONFLICT DO NOTHING`, `LOWER(x) LIKE LOWER(?)`, and
/// `CAST(?2 AS TEXT) IS NULL` where a parameter's only other use cannot give
/// PostgreSQL its type.
pub struct Sql<'c> {
    conn: Conn<'c>,
    queries: &'c AtomicU64,
}

enum Conn<'c> {
    Sqlite(&'c rusqlite::Connection),
    Postgres(postgres::PgConn<'c>),
}

/// One result row; read its columns with [`Row::get`].
pub struct Row<'r>(RowRef<'r>);

enum RowRef<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r tokio_postgres::Row),
}

impl Row<'_> {
    /// The value of column `index` (zero-based) as a `T`.
    pub fn get<T: FromValue>(&self, index: usize) -> Result<T, DbError> {
        let column = |reason: String| DbError::Column { index, reason };
        let value = match &self.0 {
            RowRef::Sqlite(row) => Value::from_sqlite(row.get_ref(index)?).map_err(column)?,
            RowRef::Postgres(row) => row.try_get::<_, Value>(index)?,
        };
        T::from_value(value).map_err(column)
    }
}

impl Sql<'_> {
    fn count(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs a query expected to return exactly one row.
    pub fn one<T>(
        &self,
        sql: &str,
        params: &[Value],
        map: impl FnOnce(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.optional(sql, params, map)?.ok_or(DbError::NoRows)
    }

    /// Runs a query returning zero or one row.
    pub fn optional<T>(
        &self,
        sql: &str,
        params: &[Value],
        map: impl FnOnce(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Option<T>, DbError> {
        self.count();
        match &self.conn {
            Conn::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
                match rows.next()? {
                    Some(row) => map(&Row(RowRef::Sqlite(row))).map(Some),
                    None => Ok(None),
                }
            }
            Conn::Postgres(conn) => match conn.query(sql, params)?.first() {
                Some(row) => map(&Row(RowRef::Postgres(row))).map(Some),
                None => Ok(None),
            },
        }
    }

    /// Runs a query and maps every row.
    pub fn all<T>(
        &self,
        sql: &str,
        params: &[Value],
        mut map: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        self.count();
        match &self.conn {
            Conn::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(map(&Row(RowRef::Sqlite(row)))?);
                }
                Ok(out)
            }
            Conn::Postgres(conn) => conn
                .query(sql, params)?
                .iter()
                .map(|row| map(&Row(RowRef::Postgres(row))))
                .collect(),
        }
    }

    /// Runs an INSERT, UPDATE or DELETE; returns the number of rows changed.
    pub fn execute(&self, sql: &str, params: &[Value]) -> Result<usize, DbError> {
        self.count();
        match &self.conn {
            Conn::Sqlite(conn) => Ok(conn
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(params))?),
            Conn::Postgres(conn) => {
                Ok(usize::try_from(conn.execute(sql, params)?).unwrap_or(usize::MAX))
            }
        }
    }

    /// Runs an INSERT into a table with an `id` column and returns the new row's id
    /// (`RETURNING id` is appended: both databases support it).
    pub fn insert(&self, sql: &str, params: &[Value]) -> Result<i64, DbError> {
        self.one(&format!("{sql} RETURNING id"), params, |row| row.get(0))
    }
}
