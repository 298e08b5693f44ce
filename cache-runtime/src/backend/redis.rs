//! The Redis backend, through redis-rs's `ConnectionManager` (one multiplexed connection,
//! reconnecting by itself). Commands are plain (MGET, SET, ROLE, WAIT), so a Redis restart
//! loses no script cache, and every key of one call shares the tenant's hash tag, so the
//! same commands work on Redis Cluster. Generation keys are always written with their
//! TTL. It never sends a command twice: timeouts and the circuit breaker are applied by
//! the cache layer above. (A command that found the connection refused was never sent;
//! it is sent once on the connection re-established since: see `send`.)

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;

use super::{EntrySlot, RawLookup};
use crate::config::{CacheConfig, WaitReplicas};
use crate::entry::Entry;
use crate::error::BackendError;
use crate::generation::Generation;
use crate::key::CacheKey;

pub(crate) struct RedisBackend {
    /// Shared by every command. A `WAIT` holds it on the server until the replicas
    /// answer (one replica round trip when they are healthy, at most `wait_budget`), so
    /// commands sent meanwhile queue behind it. A second connection for invalidations
    /// would avoid that, but would be found dead only by the first invalidation after a
    /// Redis restart, which would then fail and go pending.
    manager: ConnectionManager,
    wait_replicas: WaitReplicas,
    /// Bound of one `WAIT`, counted from the start of the invalidation: half the response
    /// timeout, so that the cache layer's timer (the whole response timeout) does not
    /// fire and count a slow replica as a Redis failure.
    wait_budget: Duration,
    generation_ttl_ms: u64,
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
    pub(crate) fn new(url: &str, config: &CacheConfig) -> Result<Self, redis::RedisError> {
        let connect_timeout = config.connect_timeout;
        let client = if url.starts_with("rediss://") {
            tls_client(url)?
        } else {
            redis::Client::open(url)?
        };
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            // No response timeout of redis-rs's own: the cache layer bounds every
            // operation (connection wait included) with one timer, and a second one per
            // command was measurable on the hit path (BENCHMARKS.md, hot path 4).
            .set_response_timeout(None)
            // One quick attempt per reconnection; the circuit breaker paces the rest.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        Ok(RedisBackend {
            manager,
            wait_replicas: config.wait_replicas,
            wait_budget: (config.response_timeout / 2).max(Duration::from_millis(1)),
            generation_ttl_ms: millis(config.generation_ttl),
            url_for_logs: crate::config::redact(url),
        })
    }

    pub(crate) fn url_for_logs(&self) -> &str {
        &self.url_for_logs
    }

    /// Sends `command` on the shared connection. If the connection it finds is one that
    /// could not be established (refused: the command was never sent), sends it once
    /// more, on the connection the manager began re-establishing at that error. Without
    /// this, the first command after Redis comes back would always fail on the attempt
    /// made while it was down: a probe would keep the circuit open for another, doubled,
    /// back-off, and a redelivery would wait for its next turn (2 s). While Redis is
    /// down the second try is refused too, within the manager's reconnection delay
    /// (10 to 20 ms). A command that reached a server is never sent again.
    async fn send<T, F, Fut>(&self, command: F) -> redis::RedisResult<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match command(self.manager.clone()).await {
            Err(err) if err.is_connection_refusal() => command(self.manager.clone()).await,
            result => result,
        }
    }

    pub(crate) async fn lookup(&self, key: &CacheKey) -> Result<RawLookup, BackendError> {
        let mut cmd = redis::cmd("MGET");
        cmd.arg(&key.generation_keys).arg(&key.entry_key);
        let cmd = &cmd;
        let values: Vec<Value> = self
            .send(|mut connection| async move { cmd.query_async(&mut connection).await })
            .await?;
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
            pipe.cmd("SET")
                .arg(*key)
                .arg(token.as_str())
                .arg("NX")
                .arg("PX")
                .arg(self.generation_ttl_ms);
            pipe.cmd("GET").arg(*key);
        }
        let pipe = &pipe;
        let values: Vec<Value> = self
            .send(|mut connection| async move { pipe.query_async(&mut connection).await })
            .await?;
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
                foreign
                    .cmd("SET")
                    .arg(*key)
                    .arg(ours.as_str())
                    .arg("PX")
                    .arg(self.generation_ttl_ms)
                    .ignore();
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
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key.entry_key)
            .arg(entry.encode().as_ref())
            .arg("PX")
            .arg(millis(ttl));
        let cmd = &cmd;
        self.send(|mut connection| async move { cmd.query_async::<()>(&mut connection).await })
            .await?;
        Ok(())
    }

    /// Sets a fresh token with the generation TTL on every key, in one round trip; then,
    /// when the server is a primary with connected replicas and waiting is on, waits for
    /// their acknowledgement (a second round trip, bounded by `wait_budget`). Fewer
    /// acknowledgements than wanted is [`BackendError::NotReplicated`].
    pub(crate) async fn bump(&self, generation_keys: &[String]) -> Result<(), BackendError> {
        if generation_keys.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        // SET PX per key rather than one MSET, which cannot set a TTL; pipelined, it is
        // still one round trip, and a refused SET (OOM, READONLY) fails the call.
        let mut pipe = redis::pipe();
        for key in generation_keys {
            pipe.cmd("SET")
                .arg(key)
                .arg(Generation::fresh().as_str())
                .arg("PX")
                .arg(self.generation_ttl_ms)
                .ignore();
        }
        if self.wait_replicas == WaitReplicas::Off {
            let pipe = &pipe;
            self.send(
                |mut connection| async move { pipe.query_async::<()>(&mut connection).await },
            )
            .await?;
            return Ok(());
        }
        pipe.cmd("ROLE");
        let pipe = &pipe;
        let mut replies: Vec<Value> = self
            .send(|mut connection| async move { pipe.query_async(&mut connection).await })
            .await?;
        let role = replies.pop().unwrap_or(Value::Nil);
        let connected = match connected_replicas(&role) {
            Some(connected) => connected,
            None => {
                // A writable replica took the write, but its writes never reach the
                // primary that other instances read: not delivered.
                return Err(BackendError::Refused(
                    "ROLE says this server is not a primary: invalidations written here do not reach the others".into(),
                ));
            }
        };
        let wanted = self.wait_replicas.wanted(connected);
        if wanted == 0 {
            return Ok(());
        }
        // What is left of the budget; at least 1 ms, since `WAIT n 0` blocks forever.
        let timeout = self
            .wait_budget
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        let acknowledged: u64 = redis::cmd("WAIT")
            .arg(wanted)
            .arg(millis(timeout))
            .query_async(&mut self.manager.clone())
            .await?;
        let wanted = wanted as u64;
        if acknowledged < wanted {
            return Err(BackendError::NotReplicated {
                acknowledged,
                wanted,
            });
        }
        Ok(())
    }

    pub(crate) async fn try_lease(
        &self,
        lease_key: &str,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(lease_key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        let cmd = &cmd;
        let reply: Value = self
            .send(|mut connection| async move { cmd.query_async(&mut connection).await })
            .await?;
        Ok(!matches!(reply, Value::Nil))
    }

    pub(crate) async fn ping(&self) -> Result<(), BackendError> {
        let cmd = &redis::cmd("PING");
        self.send(|mut connection| async move { cmd.query_async::<String>(&mut connection).await })
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

/// A duration in whole milliseconds for `PX` and `WAIT`: at least 1 (0 is an error for
/// `PX` and means "forever" for `WAIT`).
fn millis(duration: Duration) -> u64 {
    duration.as_millis().clamp(1, u128::from(u64::MAX)) as u64
}

/// The replicas a `ROLE` reply lists (connected ones: Redis lists no other), or `None`
/// when the server is not a primary. `["master", offset, [[ip, port, offset], ...]]`.
fn connected_replicas(role: &Value) -> Option<usize> {
    let Value::Array(fields) = role else {
        return None;
    };
    let is_master = match fields.first() {
        Some(Value::BulkString(name)) => name.as_slice() == b"master",
        Some(Value::SimpleString(name)) => name == "master",
        _ => false,
    };
    if !is_master {
        return None;
    }
    match fields.get(2) {
        Some(Value::Array(replicas)) => Some(replicas.len()),
        _ => Some(0),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk_str(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn role_replies_give_the_connected_replicas() {
        let master = |replicas: Vec<Value>| {
            Value::Array(vec![
                bulk_str("master"),
                Value::Int(3129659),
                Value::Array(replicas),
            ])
        };
        assert_eq!(connected_replicas(&master(vec![])), Some(0));
        let replica = Value::Array(vec![
            bulk_str("127.0.0.1"),
            bulk_str("9001"),
            bulk_str("3129242"),
        ]);
        assert_eq!(
            connected_replicas(&master(vec![replica.clone(), replica])),
            Some(2)
        );
        let slave = Value::Array(vec![
            bulk_str("slave"),
            bulk_str("127.0.0.1"),
            Value::Int(9000),
            bulk_str("connected"),
            Value::Int(3167038),
        ]);
        assert_eq!(connected_replicas(&slave), None);
        assert_eq!(connected_replicas(&Value::Nil), None);
    }
}
