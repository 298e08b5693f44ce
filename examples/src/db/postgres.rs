//! The PostgreSQL backend: tokio-postgres connections in a deadpool pool, statements
//! prepared once per connection. Route code stays synchronous (one closure per request,
//! the same for SQLite): the closure runs on tokio's blocking pool and waits there for
//! each statement, whose I/O the async driver does on the runtime. Translates SQLite's
//! `?N` placeholders to `$N`; every other dialect difference is written portably in the
//! SQL itself. Counting is [`super::Sql`]'s job, not this module's.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;

use tokio_postgres::NoTls;

use super::{DbError, Value};

pub(super) struct PgPool {
    pool: Pool,
    /// `dbname on host:port` (or the socket directory), for start-up lines.
    pub(super) describe: String,
}

impl PgPool {
    /// Connects to `url` (`postgres://user@host:port/db`, `postgres:///db?host=/run/postgresql`)
    /// with up to `pool_size` connections; fails now when the server cannot be reached.
    pub(super) async fn connect(url: &str, pool_size: usize) -> Result<PgPool, DbError> {
        let config: tokio_postgres::Config = url.parse()?;
        let describe = describe(&config);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .build()
            .map_err(|e| DbError::Pool(e.to_string()))?;
        let pool = PgPool { pool, describe };
        drop(pool.get().await?);
        Ok(pool)
    }

    async fn get(&self) -> Result<Object, DbError> {
        self.pool
            .get()
            .await
            .map_err(|e| DbError::Pool(e.to_string()))
    }

    /// Runs `f` on a pooled connection; `write`: in one transaction, rolled back when
    /// `f` fails.
    pub(super) async fn run<T, F>(&self, write: bool, f: F) -> Result<T, DbError>
    where
        F: FnOnce(PgConn<'_>) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let client = self.get().await?;
        let runtime = Handle::current();
        tokio::task::spawn_blocking(move || {
            let conn = PgConn {
                client: &client,
                runtime: &runtime,
            };
            if !write {
                return f(conn);
            }
            conn.batch("BEGIN")?;
            let result = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
                Ok(result) => result,
                Err(panic) => {
                    // Never hand a connection inside an open transaction back to the
                    // pool: closing it makes the server roll back.
                    drop(Object::take(client));
                    resume_unwind(panic);
                }
            };
            let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
            match conn.batch(end) {
                Ok(()) => result,
                Err(err) => {
                    drop(Object::take(client));
                    result.and(Err(err))
                }
            }
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Runs `f` on a connection of its own in async code: schema creation and seeding.
    pub(super) async fn setup(&self) -> Result<Object, DbError> {
        self.get().await
    }
}

fn describe(config: &tokio_postgres::Config) -> String {
    let db = config.get_dbname().unwrap_or("(user's default)");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(dir)) => dir.display().to_string(),
        None => "the default socket".to_owned(),
    };
    match config.get_ports().first() {
        Some(port) => format!("database {db} on {host}:{port}"),
        None => format!("database {db} on {host}"),
    }
}

/// `url` with its database name replaced by `name`, keeping user, host, port and the
/// query parameters (`postgres:///x?host=/run/postgresql` keeps its socket directory).
pub(crate) fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, Some(query)),
        None => (rest, None),
    };
    let authority = location.split_once('/').map_or(location, |(a, _)| a);
    match query {
        Some(query) => format!("{scheme}://{authority}/{name}?{query}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

/// Connects once, outside any pool, and runs `sql` (CREATE/DROP DATABASE cannot run in
/// a transaction or a pooled session that might be in one).
pub(super) async fn admin(url: &str, sql: &str) -> Result<(), DbError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let driver = tokio::spawn(connection);
    let result = client.batch_execute(sql).await;
    drop(client);
    // The connection ends with the client; its own error, if any, says no more.
    let _ = driver.await;
    Ok(result?)
}

/// One pooled connection, used from a blocking thread.
#[derive(Clone, Copy)]
pub(super) struct PgConn<'c> {
    client: &'c Object,
    runtime: &'c Handle,
}

impl PgConn<'_> {
    fn batch(&self, sql: &str) -> Result<(), DbError> {
        Ok(self.runtime.block_on(self.client.batch_execute(sql))?)
    }

    pub(super) fn query(
        &self,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<tokio_postgres::Row>, DbError> {
        let sql = dollar_placeholders(sql);
        let params: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        self.runtime.block_on(async {
            let statement = self.client.prepare_cached(&sql).await?;
            Ok(self.client.query(&statement, &params).await?)
        })
    }

    pub(super) fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let sql = dollar_placeholders(sql);
        let params: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        self.runtime.block_on(async {
            let statement = self.client.prepare_cached(&sql).await?;
            Ok(self.client.execute(&statement, &params).await?)
        })
    }
}

/// SQLite's placeholders in PostgreSQL's spelling: `?N` becomes `$N`, and a bare `?`
/// takes the number after the largest so far (SQLite's rule). Quoted text and
/// identifiers are left alone.
pub(crate) fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut largest = 0_u32;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '?') => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    chars.next();
                }
                let number = match digits.parse::<u32>() {
                    Ok(n) => n,
                    Err(_) => largest + 1,
                };
                largest = largest.max(number);
                out.push('$');
                out.push_str(&number.to_string());
                continue;
            }
            (None, _) => {}
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::dollar_placeholders;

    #[test]
    fn placeholders_are_renumbered_outside_quotes() {
        assert_eq!(
            dollar_placeholders("a = ?1 AND (?2 IS NULL OR b = ?2) AND c LIKE '?' ESCAPE '\\'"),
            "a = $1 AND ($2 IS NULL OR b = $2) AND c LIKE '?' ESCAPE '\\'"
        );
        assert_eq!(
            dollar_placeholders("id = ? AND x IN (?, ?)"),
            "id = $1 AND x IN ($2, $3)"
        );
        assert_eq!(
            dollar_placeholders("LIMIT ?10 OFFSET ?"),
            "LIMIT $10 OFFSET $11"
        );
    }

    #[test]
    fn database_name_is_replaced_keeping_the_rest() {
        use super::with_database;
        assert_eq!(
            with_database("postgres:///test?host=/var/run/postgresql", "run1"),
            "postgres:///run1?host=/var/run/postgresql"
        );
        assert_eq!(
            with_database("postgresql://me:pw@db:5433", "run1"),
            "postgresql://me:pw@db:5433/run1"
        );
        assert_eq!(
            with_database("postgres://me@localhost/app?sslmode=disable", "run1"),
            "postgres://me@localhost/run1?sslmode=disable"
        );
    }
}
