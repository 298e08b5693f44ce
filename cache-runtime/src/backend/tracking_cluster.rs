//! The local tier's tracking on a Redis Cluster (`API_CACHE_LOCAL_TIER=tracking` with
//! `REDIS_CLUSTER_URLS`). Tracking is per node: a node pushes `invalidate` only to the
//! connections that read a key *on that node*. So the tier keeps one
//! [`TrackingConnection`] per master (opened lazily, all feeding one
//! [`GenerationView`]) and its own slot map (`CLUSTER SLOTS`), and reads a tenant's
//! generations (one hash tag, one slot) on the master that owns the slot: a generation
//! is trusted only if it was read on a connection whose node will push its change.
//!
//! Anything that could break that forgets every generation before it matters: a lookup
//! that fails on a node (`MOVED`, `ASK`, `TRYAGAIN`, a lost connection: the slot map is
//! dropped and fetched again on the next lookup, and the request falls back to the shared
//! cluster connection unless the lookup timed out), any tracking connection lost or
//! replaced, and a slot map that changed or that two masters disagree on (checked on
//! every keepalive tick, so a failover or a migration that no lookup ran into is noticed
//! within one interval). A read is learned only under the same epoch rule as on one
//! server, so a forgetting between a read and its learning wins. It never follows a
//! redirection itself and never retries a command.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::Value;

use super::connection::resp3_client;
use super::near::GenerationView;
use super::tracking::TrackingConnection;
use super::RawLookup;
use crate::error::BackendError;
use crate::key::{hash_tag, CacheKey};

/// Slots in a Redis Cluster.
const SLOTS: u16 = 16384;

pub(crate) struct ClusterTracking {
    seeds: Vec<String>,
    connect_timeout: Duration,
    view: Arc<GenerationView>,
    /// The slot map the lookups route by; `None` until fetched, and after a failure.
    map: RwLock<Option<Arc<SlotMap>>>,
    /// The tracking connection of each master, by `host:port`.
    nodes: Mutex<HashMap<String, Arc<TrackingConnection>>>,
    /// One slot map fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

/// Which master serves each slot range, from `CLUSTER SLOTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotMap {
    /// `(first slot, last slot, master's host:port)`, sorted by first slot.
    ranges: Vec<(u16, u16, String)>,
}

impl SlotMap {
    fn master(&self, slot: u16) -> Option<&str> {
        let index = self.ranges.partition_point(|(first, _, _)| *first <= slot);
        let (first, last, node) = self.ranges.get(index.checked_sub(1)?)?;
        (*first..=*last).contains(&slot).then_some(node.as_str())
    }

    /// Parses a `CLUSTER SLOTS` reply; `asked` stands for a master whose address is
    /// empty (Redis answers that for the node it is asked on when it does not know its
    /// own address).
    fn parse(reply: Value, asked: &str) -> Option<SlotMap> {
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut map = Vec::with_capacity(ranges.len());
        for range in ranges {
            let Value::Array(fields) = range else {
                return None;
            };
            let mut fields = fields.into_iter();
            let first = int(fields.next()?)?;
            let last = int(fields.next()?)?;
            let Value::Array(master) = fields.next()? else {
                return None;
            };
            let mut master = master.into_iter();
            let host = text(master.next()?)?;
            let port = int(master.next()?)?;
            let node = if host.is_empty() || host == "?" {
                asked.to_owned()
            } else {
                host_port(&host, port)
            };
            map.push((first, last, node));
        }
        map.sort();
        Some(SlotMap { ranges: map })
    }
}

fn int(value: Value) -> Option<u16> {
    match value {
        Value::Int(n) => u16::try_from(n).ok(),
        _ => None,
    }
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its [`hash_tag`], modulo 16384.
/// redis-rs computes the same (`cluster_routing::Slot::for_key`) but does not expose the
/// number, which the slot map needs.
pub(crate) fn slot_of(key: &[u8]) -> u16 {
    crc16_xmodem(hash_tag(key)) % SLOTS
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// `seed` with its `host:port` replaced by `node` (scheme, credentials, database and
/// parameters kept).
fn node_url(seed: &str, node: &str) -> String {
    let Some((scheme, rest)) = seed.split_once("://") else {
        return format!("redis://{node}");
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://{}@{node}{tail}", &authority[..at]),
        None => format!("{scheme}://{node}{tail}"),
    }
}

fn authority_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_owned()
}

impl ClusterTracking {
    pub(crate) fn new(
        seeds: &[String],
        connect_timeout: Duration,
        view: Arc<GenerationView>,
    ) -> Result<Self, redis::RedisError> {
        for seed in seeds {
            resp3_client(seed)?;
        }
        Ok(ClusterTracking {
            seeds: seeds.to_vec(),
            connect_timeout,
            view,
            map: RwLock::new(None),
            nodes: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The tracked lookup on the master owning `key`'s slot. Any failure forgets every
    /// generation and drops the slot map; the caller falls back to the shared connection.
    pub(crate) async fn lookup(&self, key: &CacheKey) -> Result<RawLookup, BackendError> {
        let result = self.lookup_on_owner(key).await;
        if result.is_err() {
            self.distrust();
        }
        result
    }

    async fn lookup_on_owner(&self, key: &CacheKey) -> Result<RawLookup, BackendError> {
        let slot = slot_of(key.entry_key.as_bytes());
        let map = self.slot_map().await?;
        let owner = map
            .master(slot)
            .ok_or_else(|| BackendError::Refused(format!("slot {slot} has no master")))?;
        self.node(owner)?.lookup(key).await
    }

    /// Forgets every generation and the slot map (fetched again by the next lookup).
    fn distrust(&self) {
        self.view.forget_all();
        if let Ok(mut map) = self.map.write() {
            *map = None;
        }
    }

    fn current_map(&self) -> Option<Arc<SlotMap>> {
        self.map.read().ok()?.clone()
    }

    async fn slot_map(&self) -> Result<Arc<SlotMap>, BackendError> {
        if let Some(map) = self.current_map() {
            return Ok(map);
        }
        let _one_at_a_time = self.fetching.lock().await;
        if let Some(map) = self.current_map() {
            return Ok(map);
        }
        let fetched = Arc::new(self.fetch_map().await?);
        self.install(fetched.clone());
        Ok(fetched)
    }

    /// Installs `fetched`; a map that differs from the one it replaces (or from none
    /// after a failure) forgets every generation first, and the connections to nodes
    /// that are no longer masters in it are closed.
    fn install(&self, fetched: Arc<SlotMap>) {
        let Ok(mut map) = self.map.write() else {
            return;
        };
        if map.as_deref() == Some(&*fetched) {
            return;
        }
        self.view.forget_all();
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.retain(|node, _| fetched.ranges.iter().any(|(_, _, master)| master == node));
        }
        *map = Some(fetched);
    }

    /// `CLUSTER SLOTS` through a tracking connection that is up, else from each seed in
    /// turn on a connection of its own.
    async fn fetch_map(&self) -> Result<SlotMap, BackendError> {
        let command = redis::cmd("CLUSTER").arg("SLOTS").clone();
        for (node, connection) in self.connections() {
            if let Some(reply) = connection.query_if_up(&command).await {
                if let Some(map) = SlotMap::parse(reply, &node) {
                    return Ok(map);
                }
            }
        }
        let mut last_error = BackendError::NotConnected;
        for seed in &self.seeds {
            match self.fetch_map_from(seed, &command).await {
                Ok(map) => return Ok(map),
                Err(err) => last_error = err,
            }
        }
        Err(last_error)
    }

    async fn fetch_map_from(
        &self,
        seed: &str,
        command: &redis::Cmd,
    ) -> Result<SlotMap, BackendError> {
        let client = resp3_client(seed)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.connect_timeout));
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let reply: Value = command.query_async(&mut connection).await?;
        SlotMap::parse(reply, &authority_of(seed))
            .ok_or_else(|| BackendError::Refused("unexpected CLUSTER SLOTS reply".into()))
    }

    fn connections(&self) -> Vec<(String, Arc<TrackingConnection>)> {
        self.nodes
            .lock()
            .map(|nodes| {
                nodes
                    .iter()
                    .map(|(node, connection)| (node.clone(), connection.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The tracking connection to `node` (`host:port`), created on first use; it
    /// connects on its first lookup.
    fn node(&self, node: &str) -> Result<Arc<TrackingConnection>, BackendError> {
        let mut nodes = self.nodes.lock().map_err(|_| BackendError::NotConnected)?;
        if let Some(connection) = nodes.get(node) {
            return Ok(connection.clone());
        }
        let seed = self.seeds.first().ok_or(BackendError::NotConnected)?;
        let connection = Arc::new(TrackingConnection::new(
            &node_url(seed, node),
            self.connect_timeout,
            self.view.clone(),
        )?);
        nodes.insert(node.to_owned(), connection.clone());
        Ok(connection)
    }

    /// The keepalive tick: a `PING` on every tracking connection (see
    /// [`TrackingConnection::ping`]), then the slot map as each master sees it. All
    /// agreeing, that map is installed (forgetting everything if it changed); any two
    /// disagreeing (a failover or a migration under way, or a master cut off from the
    /// rest of the cluster that still believes it owns its slots), everything is
    /// forgotten and the map fetched again by the next lookup.
    pub(crate) async fn keepalive(&self, timeout: Duration) {
        let connections = self.connections();
        for (_, connection) in &connections {
            connection.ping(timeout).await;
        }
        if self.current_map().is_none() {
            return;
        }
        let command = redis::cmd("CLUSTER").arg("SLOTS").clone();
        let mut seen: Option<SlotMap> = None;
        for (node, connection) in &connections {
            let reply = tokio::time::timeout(timeout, connection.query_if_up(&command)).await;
            let Ok(Some(reply)) = reply else {
                continue;
            };
            let Some(map) = SlotMap::parse(reply, node) else {
                self.distrust();
                return;
            };
            match &seen {
                Some(other) if *other != map => {
                    self.distrust();
                    return;
                }
                Some(_) => {}
                None => seen = Some(map),
            }
        }
        if let Some(map) = seen {
            self.install(Arc::new(map));
        }
    }

    /// Whether at least one tracking connection is open and all of those are up.
    pub(crate) fn is_up(&self) -> bool {
        let connections = self.connections();
        !connections.is_empty() && connections.iter().all(|(_, c)| c.is_up())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    #[test]
    fn slots_are_redis_clusters() {
        // From the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
        for key in [
            "api-cache:{t.org_1}:e:contacts:abc",
            "p:{t.a}:g:*",
            "no tag",
            "{}",
            "x{}y",
            "{a}{b}",
        ] {
            assert_eq!(
                Slot::new(slot_of(key.as_bytes())),
                Some(Slot::for_key(key)),
                "{key}"
            );
        }
    }

    #[test]
    fn the_slot_map_finds_each_slot_s_master() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node("10.0.0.2", 7001),
            ]),
            Value::Array(vec![Value::Int(0), Value::Int(5460), node("", 7000)]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(16383),
                node("::1", 7002),
            ]),
        ]);
        let map = SlotMap::parse(reply, "seed:7000").unwrap();
        assert_eq!(map.master(0), Some("seed:7000"));
        assert_eq!(map.master(5461), Some("10.0.0.2:7001"));
        assert_eq!(map.master(16383), Some("[::1]:7002"));
        let gap = SlotMap {
            ranges: vec![(0, 10, "a:1".into())],
        };
        assert_eq!(gap.master(11), None);
    }

    #[test]
    fn node_urls_keep_the_seed_s_scheme_and_credentials() {
        assert_eq!(
            node_url("redis://127.0.0.1:7000", "10.0.0.2:7001"),
            "redis://10.0.0.2:7001"
        );
        assert_eq!(
            node_url("rediss://user:pw@host:7000/0?x=1", "h2:7001"),
            "rediss://user:pw@h2:7001/0?x=1"
        );
        assert_eq!(authority_of("rediss://user:pw@host:7000/0"), "host:7000");
    }
}
