//! The Redis backend: one server through redis-rs's `ConnectionManager` (one multiplexed
//! connection, reconnecting by itself), or a Redis Cluster through redis-rs's async
//! cluster client (one multiplexed connection per node, following `MOVED`/`ASK`). Both
//! are driven by the same commands on one code path: they are plain (MGET, SET, ROLE,
//! WAIT), so a Redis restart loses no script cache, and every key of one call shares the
//! tenant's hash tag, so each call is one round trip to the master of one slot.
//! Generation keys are always written with their TTL. It never reads from replicas and
//! sends a command twice beyond following a redirection: timeouts and the circuit
//! breaker are applied by the cache layer above. (A command that found the standalone
//! connection refused was never sent; it is sent once on the connection re-established
//! since: see `send`.)

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::Value;

use super::connection::{cluster, standalone, Connection};
use super::{EntrySlot, RawLookup};
use crate::config::{CacheConfig, RedisTarget, WaitReplicas};
use crate::entry::Entry;
use crate::error::BackendError;
use crate::generation::Generation;
use crate::key::{CacheKey, GenerationKeys, KeyList};

pub(crate) struct RedisBackend {
    /// Shared by every command. A `WAIT` holds it on the server until the replicas
    /// answer (one replica round trip when they are healthy, at most `wait_budget`), so
    /// commands sent meanwhile queue behind it (on a cluster: those to the same node).
    /// A second connection for invalidations would avoid that, but would be found dead
    /// only by the first invalidation after a Redis restart, which would then fail and
    /// go pending.
    connection: Connection,
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
            .field("name", &self.name())
            .field("url", &self.url_for_logs)
            .finish()
    }
}

impl RedisBackend {
    /// Creates the backend without connecting: the first command connects, and a lost
    /// connection is re-established on the next command after an I/O error (on a
    /// cluster, the slot map is refreshed after a `MOVED` or a lost node).
    pub(crate) fn new(
        target: RedisTarget<'_>,
        config: &CacheConfig,
    ) -> Result<Self, redis::RedisError> {
        let connection = match target {
            RedisTarget::Standalone(url) => Connection::Standalone(standalone(url, config)?),
            RedisTarget::Cluster(seeds) => Connection::Cluster(cluster(seeds, config)?),
        };
        Ok(RedisBackend {
            connection,
            wait_replicas: config.wait_replicas,
            wait_budget: (config.response_timeout / 2).max(Duration::from_millis(1)),
            generation_ttl_ms: millis(config.generation_ttl),
            url_for_logs: target.for_logs(),
        })
    }

    /// `"redis"` or `"redis-cluster"`: the backend label of stats and metrics.
    pub(crate) fn name(&self) -> &'static str {
        match self.connection {
            Connection::Standalone(_) => "redis",
            Connection::Cluster(_) => "redis-cluster",
        }
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
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match command(self.connection.clone()).await {
            Err(err) if err.is_connection_refusal() => command(self.connection.clone()).await,
            result => result,
        }
    }

    pub(crate) async fn lookup(&self, key: &CacheKey) -> Result<RawLookup, BackendError> {
        let cmd = lookup_command(key);
        let cmd = &*cmd;
        // The reply as it came (`query_async` would walk it for errors and convert it
        // into a second vector): `parse_lookup_reply` takes the values out of it.
        let reply = self
            .send(|mut connection| async move { connection.send_command(cmd).await })
            .await?;
        parse_lookup_reply(key, reply)
    }

    /// The current generations of `key`, without its entry: the local tier's check
    /// (`validate` mode), one `MGET` of a few short tokens.
    pub(crate) async fn read_generations(
        &self,
        key: &CacheKey,
    ) -> Result<Vec<Option<Generation>>, BackendError> {
        let cmd = &mget(&key.generation_keys, None);
        let values: Vec<Value> = self
            .send(|mut connection| async move { cmd.query_async(&mut connection).await })
            .await?;
        if values.len() != key.generation_keys.len() {
            return Err(BackendError::Refused(format!(
                "MGET returned {} values for {} keys",
                values.len(),
                key.generation_keys.len()
            )));
        }
        Ok(values
            .into_iter()
            .map(|v| bulk(v).and_then(Generation::from_bytes))
            .collect())
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
            foreign
                .query_async::<()>(&mut self.connection.clone())
                .await?;
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
    pub(crate) async fn bump(
        &self,
        generation_keys: &(impl KeyList + ?Sized),
    ) -> Result<(), BackendError> {
        let Some(first) = generation_keys.key_iter().next() else {
            return Ok(());
        };
        let started = Instant::now();
        let mut connection = self.connection.clone();
        // SET PX per key rather than one MSET, which cannot set a TTL; pipelined, it is
        // still one round trip, and a refused SET (OOM, READONLY) fails the call.
        let mut pipe = redis::pipe();
        for key in generation_keys.key_iter() {
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
        let acknowledged = connection.wait(first, wanted, timeout).await?;
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

/// The lookup's `MGET` reply as the connection returned it, server errors not yet
/// extracted: an error (the whole reply, or one of its values) fails the lookup as
/// `query_async` would have; an array goes to [`parse_lookup`].
fn parse_lookup_reply(key: &CacheKey, reply: Value) -> Result<RawLookup, BackendError> {
    match reply {
        Value::Array(values) => {
            if let Some(Value::ServerError(err)) =
                values.iter().find(|v| matches!(v, Value::ServerError(_)))
            {
                return Err(redis::RedisError::from(err.clone()).into());
            }
            parse_lookup(key, values)
        }
        Value::ServerError(err) => Err(redis::RedisError::from(err).into()),
        other => Err(BackendError::Refused(format!(
            "MGET answered {other:?} instead of {} values",
            key.generation_keys.len() + 1
        ))),
    }
}

/// The lookup's replies, generations then entry, in the order of the key's generation
/// keys: shared by the lookup and the local tier's tracked lookup.
pub(super) fn parse_lookup(key: &CacheKey, values: Vec<Value>) -> Result<RawLookup, BackendError> {
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
        Some(Ok(Some(raw))) => match super::decoded::decode(key.table_hash, raw) {
            Ok(entry) => EntrySlot::Present(entry),
            Err(_) => EntrySlot::Corrupt,
        },
        Some(Err(())) => EntrySlot::Corrupt,
    };
    Ok(RawLookup { generations, entry })
}

/// Each generation key as one argument (`MGET`, tracked lookups, the benches' raw reads).
impl redis::ToRedisArgs for &GenerationKeys {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        for key in self.iter() {
            out.write_arg(key.as_bytes());
        }
    }

    fn num_of_args(&self) -> usize {
        self.len()
    }
}

/// `MGET` of `keys` (then `last`), its buffers sized once: built with `redis::cmd`, the
/// argument bytes of a lookup (three keys, over a hundred bytes in all) were reallocated
/// and copied at each doubling, about 1,600 instructions per hit (BENCHMARKS.md, "Redis
/// hit, second pass").
fn mget(keys: &GenerationKeys, last: Option<&str>) -> redis::Cmd {
    let bytes = "MGET".len() + keys.bytes() + last.map_or(0, str::len);
    let mut cmd = redis::Cmd::with_capacity(keys.len() + 2, bytes);
    cmd.arg("MGET").arg(keys);
    if let Some(last) = last {
        cmd.arg(last);
    }
    cmd
}

/// The lookup's `MGET` of `key` (generations, then entry), kept per worker thread for
/// the keys it looked up last: a hit's key is most often a memoized one, whose command
/// is the same every time, and building it is two allocations and a copy of every key
/// (about 450 instructions). A slot is used only for the very keys it was built from.
fn lookup_command(key: &CacheKey) -> std::sync::Arc<redis::Cmd> {
    use crate::thread_memo::{self, Slots};
    use std::cell::RefCell;
    use std::sync::Arc;

    const SLOTS: usize = 16;
    thread_local! {
        static COMMANDS: Slots<(CacheKey, Arc<redis::Cmd>)> = const { RefCell::new(Vec::new()) };
    }
    let index = (key.table_hash % SLOTS as u64) as usize;
    let found = thread_memo::find(&COMMANDS, index, |(built_for, cmd)| {
        let same = built_for.entry_key == key.entry_key
            && built_for.generation_keys == key.generation_keys;
        same.then(|| cmd.clone())
    });
    if let Some(cmd) = found {
        return cmd;
    }
    let cmd = Arc::new(mget(&key.generation_keys, Some(&key.entry_key)));
    thread_memo::keep(&COMMANDS, SLOTS, index, (key.clone(), cmd.clone()));
    cmd
}

/// A duration in whole milliseconds for `PX` and `WAIT`: at least 1 (0 is an error for
/// `PX` and means "forever" for `WAIT`).
pub(super) fn millis(duration: Duration) -> u64 {
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

    fn key() -> CacheKey {
        crate::key::KeyBuilder::new("t", crate::key::Tenant::Scoped("org_1"), "contacts")
            .unwrap()
            .request("GET", "/contacts", None)
            .build()
    }

    /// The kept command of a key is the one built for it; another key in the same slot
    /// (another tenant, another tag) gets its own.
    #[test]
    fn a_kept_lookup_command_is_only_ever_the_keys_own() {
        let build = |tenant: &str, tag: Option<&str>| {
            let mut builder =
                crate::key::KeyBuilder::new("t", crate::key::Tenant::Scoped(tenant), "contacts")
                    .unwrap();
            if let Some(tag) = tag {
                builder = builder.tag(tag).unwrap();
            }
            builder.request("GET", "/contacts", None).build()
        };
        let packed = |key: &CacheKey| lookup_command(key).get_packed_command();
        let fresh =
            |key: &CacheKey| mget(&key.generation_keys, Some(&key.entry_key)).get_packed_command();
        let first = build("org_1", None);
        let kept = lookup_command(&first);
        assert!(std::sync::Arc::ptr_eq(&kept, &lookup_command(&first)));
        for mut other in [build("org_2", None), build("org_1", Some("deals"))] {
            // Put it in the first key's slot.
            other.table_hash = first.table_hash;
            assert_eq!(packed(&other), fresh(&other));
            assert_ne!(packed(&other), fresh(&first));
        }
        assert_eq!(packed(&first), fresh(&first));
    }

    /// A reply as the server would send it, parsed by redis-rs (server errors included).
    fn reply(resp: &str) -> Value {
        redis::parse_redis_value(resp.as_bytes()).unwrap()
    }

    /// The lookup reads the raw reply (not through `query_async`, which extracts server
    /// errors): an error, whole or inside the array, still fails the lookup with the
    /// error `query_async` would have returned, classified the same way.
    #[test]
    fn a_lookup_reply_holding_a_server_error_fails_as_query_async_would() {
        let key = key();
        assert_eq!(key.generation_keys.len(), 2);
        let whole = parse_lookup_reply(&key, reply("-LOADING Redis is loading\r\n"));
        assert!(
            matches!(
                &whole,
                Err(BackendError::Connection(_)) | Err(BackendError::Refused(_))
            ),
            "{whole:?}"
        );
        let expected: Result<Vec<Value>, BackendError> = reply("-LOADING Redis is loading\r\n")
            .extract_error()
            .map_err(BackendError::from)
            .map(|_| Vec::new());
        assert_eq!(
            format!("{:?}", whole.as_ref().err()),
            format!("{:?}", expected.err())
        );
        let inside = parse_lookup_reply(&key, reply("*3\r\n$3\r\nabc\r\n-ERR boom\r\n$-1\r\n"));
        assert!(
            matches!(&inside, Err(BackendError::Refused(m)) if m.contains("boom")),
            "{inside:?}"
        );
        let not_an_array = parse_lookup_reply(&key, reply("$3\r\nabc\r\n"));
        assert!(
            matches!(&not_an_array, Err(BackendError::Refused(_))),
            "{not_an_array:?}"
        );
    }

    #[test]
    fn a_lookup_reply_gives_the_generations_and_the_entry_slot() {
        let key = key();
        let raw = parse_lookup_reply(&key, reply("*3\r\n$3\r\nabc\r\n$-1\r\n$-1\r\n")).unwrap();
        assert_eq!(raw.generations.len(), 2);
        assert_eq!(
            raw.generations[0].as_ref().map(Generation::as_str),
            Some("abc")
        );
        assert!(raw.generations[1].is_none());
        assert!(matches!(raw.entry, EntrySlot::Absent));
        let corrupt =
            parse_lookup_reply(&key, reply("*3\r\n$3\r\nabc\r\n$1\r\nx\r\n$1\r\nz\r\n")).unwrap();
        assert!(matches!(corrupt.entry, EntrySlot::Corrupt));
        let short = parse_lookup_reply(&key, reply("*2\r\n$3\r\nabc\r\n$-1\r\n"));
        assert!(matches!(short, Err(BackendError::Refused(_))));
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
