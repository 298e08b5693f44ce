//! The Redis backend, through redis-rs's `ConnectionManager` (one multiplexed connection,
//! reconnecting by itself). Commands are plain (MGET, SET, MSET), so a Redis restart
//! loses no script cache, and every key of one call shares the tenant's hash tag, so the
//! same commands work on Redis Cluster. It never retries on a request path: timeouts and
//! the circuit breaker are applied by the cache layer above.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;

use super::{EntrySlot, RawLookup};
use crate::entry::Entry;
use crate::error::BackendError;
use crate::generation::Generation;
use crate::key::CacheKey;

pub(crate) struct RedisBackend {
    manager: ConnectionManager,
    url_for_logs: String,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.url_for_logs)
            .finish()
    }
}

impl RedisBackend {
    /// Creates the backend without connecting: the first command connects, and a lost
    /// connection is re-established on the next command after an I/O error.
    pub(crate) fn new(url: &str, connect_timeout: Duration) -> Result<Self, redis::RedisError> {
        let client = if url.starts_with("rediss://") {
            tls_client(url)?
        } else {
            redis::Client::open(url)?
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            // No response timeout of redis-rs's own: the cache layer bounds every
            // operation (connection wait included) with one timer, and a second one per
            // command was measurable on the hit path (BENCHMARKS.md, hot path 4).
            .set_response_timeout(None)
            // One quick attempt per reconnection; the circuit breaker paces the rest.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let manager = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(RedisBackend {
            manager,
            url_for_logs: crate::config::redact(url),
        })
    }

    pub(crate) fn url_for_logs(&self) -> &str {
        &self.url_for_logs
    }

    pub(crate) async fn lookup(&self, key: &CacheKey) -> Result<RawLookup, BackendError> {
        let mut cmd = redis::cmd("MGET");
        cmd.arg(&key.generation_keys).arg(&key.entry_key);
        let values: Vec<Value> = cmd.query_async(&mut self.manager.clone()).await?;
        if values.len() != key.generation_keys.len() + 1 {
            return Err(BackendError::Refused(format!(
                "MGET returned {} values for {} keys",
                values.len(),
                key.generation_keys.len() + 1
            )));
        }
        let mut values = values.into_iter();
        let generations = values
            .by_ref()
            .take(key.generation_keys.len())
            .map(|v| bulk(v).and_then(Generation::from_bytes))
            .collect();
        let entry = match values.next().map(bulk_or_nil) {
            Some(Ok(None)) | None => EntrySlot::Absent,
            Some(Ok(Some(raw))) => match Entry::decode(raw) {
                Ok(entry) => EntrySlot::Present(Arc::new(entry)),
                Err(_) => EntrySlot::Corrupt,
            },
            Some(Err(())) => EntrySlot::Corrupt,
        };
        Ok(RawLookup { generations, entry })
    }

    pub(crate) async fn init_generations(
        &self,
        keys: &[&str],
    ) -> Result<Vec<Generation>, BackendError> {
        let mut pipe = redis::pipe();
        // Replies are judged one by one: a refused SET (out of memory, read-only replica)
        // fails the call, while a GET that finds no token of ours is repaired below.
        pipe.ignore_errors();
        let fresh: Vec<Generation> = keys.iter().map(|_| Generation::fresh()).collect();
        for (key, token) in keys.iter().zip(&fresh) {
            pipe.cmd("SET").arg(*key).arg(token.as_str()).arg("NX");
            pipe.cmd("GET").arg(*key);
        }
        let values: Vec<Value> = pipe.query_async(&mut self.manager.clone()).await?;
        if values.len() != 2 * keys.len() {
            return Err(BackendError::Refused(format!(
                "generation init returned {} replies for {} keys",
                values.len(),
                keys.len()
            )));
        }
        let mut generations = Vec::with_capacity(keys.len());
        let mut foreign = redis::pipe();
        let mut foreign_keys = Vec::new();
        for ((key, ours), replies) in keys.iter().zip(fresh).zip(values.chunks_exact(2)) {
            if let Value::ServerError(err) = &replies[0] {
                return Err(redis::RedisError::from(err.clone()).into());
            }
            let current = match &replies[1] {
                Value::BulkString(bytes) => Generation::from_bytes(Bytes::copy_from_slice(bytes)),
                // Evicted between our SET and GET: use the token we tried to set; whatever
                // is set next differs from it, so nothing stale can match.
                Value::Nil => Some(ours.clone()),
                // Another type under the key (WRONGTYPE), or another reply.
                _ => None,
            };
            if current.is_none() {
                foreign.cmd("SET").arg(*key).arg(ours.as_str()).ignore();
                foreign_keys.push(*key);
            }
            generations.push(current.unwrap_or(ours));
        }
        if !foreign_keys.is_empty() {
            // A value that is no token of ours (planted, corrupted, another program's key)
            // would make every lookup of these entries miss and never store. It is replaced
            // by a fresh token: a token never used before can only make entries miss, never
            // revive one. The caller must not store under it, though (see below).
            foreign.query_async::<()>(&mut self.manager.clone()).await?;
            tracing::warn!(target: "api_cache", keys = ?foreign_keys, "replaced generation values that were not ours");
            // The unconditional SET may have overwritten the token of an invalidation
            // that raced with it, and this lookup may have started before that
            // invalidation: what it computes must not be stored under the token it just
            // wrote. Fail the lookup (served uncached); the next one reads the repaired
            // key and caches normally.
            return Err(BackendError::Refused(format!(
                "generation keys held values that were not ours (repaired): {foreign_keys:?}"
            )));
        }
        Ok(generations)
    }

    pub(crate) async fn store(
        &self,
        key: &CacheKey,
        entry: &Entry,
        ttl: Duration,
    ) -> Result<(), BackendError> {
        let ttl_ms = ttl.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        redis::cmd("SET")
            .arg(&key.entry_key)
            .arg(entry.encode().as_ref())
            .arg("PX")
            .arg(ttl_ms)
            .query_async::<()>(&mut self.manager.clone())
            .await?;
        Ok(())
    }

    pub(crate) async fn bump(&self, generation_keys: &[String]) -> Result<(), BackendError> {
        if generation_keys.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("MSET");
        for key in generation_keys {
            cmd.arg(key).arg(Generation::fresh().as_str());
        }
        cmd.query_async::<()>(&mut self.manager.clone()).await?;
        Ok(())
    }

    pub(crate) async fn try_lease(
        &self,
        lease_key: &str,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let ttl_ms = ttl.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        let reply: Value = redis::cmd("SET")
            .arg(lease_key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut self.manager.clone())
            .await?;
        Ok(!matches!(reply, Value::Nil))
    }

    pub(crate) async fn ping(&self) -> Result<(), BackendError> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.manager.clone())
            .await?;
        Ok(())
    }
}

/// A client for `rediss://` that trusts the platform's roots (and `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`), handed to redis-rs explicitly: when another crate in the program
/// also enables redis-rs's native-tls feature, redis-rs builds its rustls configuration
/// with an empty root store, and every certificate would be refused.
#[cfg(feature = "tls")]
fn tls_client(url: &str) -> Result<redis::Client, redis::RedisError> {
    use base64::Engine as _;
    let roots = rustls_native_certs::load_native_certs();
    for error in &roots.errors {
        tracing::warn!(target: "api_cache", %error, "could not load some platform root certificates");
    }
    if roots.certs.is_empty() {
        return redis::Client::open(url);
    }
    let mut pem = Vec::new();
    for cert in &roots.certs {
        let encoded = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in encoded.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        },
    )
}

#[cfg(not(feature = "tls"))]
fn tls_client(url: &str) -> Result<redis::Client, redis::RedisError> {
    redis::Client::open(url)
}

fn bulk(value: Value) -> Option<Bytes> {
    match value {
        Value::BulkString(bytes) => Some(Bytes::from(bytes)),
        _ => None,
    }
}

/// `Ok(None)` for nil, `Err` for a value of the wrong type (a list under an entry key).
fn bulk_or_nil(value: Value) -> Result<Option<Bytes>, ()> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => Ok(Some(Bytes::from(bytes))),
        _ => Err(()),
    }
}
