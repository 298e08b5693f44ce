//! The local tier's tracking connection (`API_CACHE_LOCAL_TIER=tracking`): a RESP3
//! connection of its own to the one Redis server, with `CLIENT TRACKING ON OPTIN`, through
//! which the tracked lookup reads generation keys (and only those: `CLIENT CACHING yes`
//! precedes the generations' `MGET` alone, the entry is read untracked in the same
//! pipeline). Redis then pushes an `invalidate` when one of them changes, expires or is
//! evicted; the push handler runs on redis-rs's reader task, in order with the replies,
//! and makes the [`GenerationView`] forget those keys. A lost connection (the library's
//! `Disconnection` push, or an I/O error on a command) and every new connection make it
//! forget everything before anything read through the new one is learned: a generation
//! that could have missed a push is never trusted. A `PING` every
//! `API_CACHE_LOCAL_TIER_PING_MS` that is not answered within the response timeout counts
//! as a lost connection too ([`TrackingConnection::ping`]): a connection that silently
//! stopped (a partition without FIN or RST, a paused server) is not trusted for longer
//! than that. It never reads entries for the view and never retries a command.
//!
//! On a Redis Cluster, `backend/tracking_cluster.rs` keeps one of these per master.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};

use super::connection::resp3_client;
use super::near::GenerationView;
use super::redis::parse_lookup;
use super::RawLookup;
use crate::error::BackendError;
use crate::key::CacheKey;

/// The `CLIENT SETNAME` of every tracking connection.
pub(crate) const CLIENT_NAME: &str = "api-cache-tracking";

pub(crate) struct TrackingConnection {
    client: redis::Client,
    connect_timeout: Duration,
    view: Arc<GenerationView>,
    current: Mutex<Option<Live>>,
    /// One connection attempt at a time; the others wait for its outcome.
    connecting: tokio::sync::Mutex<()>,
}

/// One established connection and whether it is still up (cleared by its
/// `Disconnection` push or an I/O error).
#[derive(Clone)]
struct Live {
    connection: MultiplexedConnection,
    up: Arc<AtomicBool>,
}

impl TrackingConnection {
    pub(crate) fn new(
        url: &str,
        connect_timeout: Duration,
        view: Arc<GenerationView>,
    ) -> Result<Self, redis::RedisError> {
        Ok(TrackingConnection {
            client: resp3_client(url)?,
            connect_timeout,
            view,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    fn live(&self) -> Option<Live> {
        let current = self.current.lock().ok()?;
        current
            .as_ref()
            .filter(|live| live.up.load(Ordering::Acquire))
            .cloned()
    }

    /// The connection, established (with tracking on) if there is none that is up.
    async fn connection(&self) -> Result<Live, BackendError> {
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(live) = self.live() {
            return Ok(live);
        }
        // Whatever was learned through an earlier connection may have missed pushes.
        self.view.forget_all();
        let up = Arc::new(AtomicBool::new(true));
        let (view, flag) = (self.view.clone(), up.clone());
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            // The cache layer bounds every operation with its own timer.
            .set_response_timeout(None)
            .set_push_sender(move |push: PushInfo| -> Result<(), ()> {
                on_push(&view, &flag, push);
                Ok(())
            });
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // Before the first generation read through it: a read before this is untracked.
        // The name lets an operator (and the tests) tell it apart in `CLIENT LIST`.
        redis::pipe()
            .cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("OPTIN")
            .ignore()
            .cmd("CLIENT")
            .arg("SETNAME")
            .arg(CLIENT_NAME)
            .ignore()
            .exec_async(&mut connection)
            .await?;
        let live = Live { connection, up };
        if let Ok(mut current) = self.current.lock() {
            *current = Some(live.clone());
        }
        Ok(live)
    }

    /// The lookup through the tracking connection, in one round trip: the generations
    /// (tracked) and the entry (not tracked). The generations read are learned by the
    /// view unless a push (or a lost connection) intervened since before the read.
    pub(crate) async fn lookup(&self, key: &CacheKey) -> Result<RawLookup, BackendError> {
        let live = self.connection().await?;
        let epoch = self.view.epoch();
        let mut pipe = redis::pipe();
        pipe.cmd("CLIENT").arg("CACHING").arg("yes").ignore();
        pipe.cmd("MGET").arg(&key.generation_keys);
        pipe.cmd("GET").arg(&key.entry_key);
        let reply: redis::RedisResult<(Vec<Value>, Value)> =
            pipe.query_async(&mut live.connection.clone()).await;
        let (mut values, entry) = match reply {
            Ok(reply) => reply,
            Err(err) => {
                if err.is_io_error() || err.is_unrecoverable_error() {
                    self.lost(&live);
                }
                return Err(err.into());
            }
        };
        values.push(entry);
        let raw = parse_lookup(key, values)?;
        self.view
            .learn(epoch, &key.generation_keys, &raw.generations);
        Ok(raw)
    }

    /// Marks `live` down and forgets every generation.
    fn lost(&self, live: &Live) {
        live.up.store(false, Ordering::Release);
        self.view.forget_all();
    }

    /// Whether a connection is established and up (stats, tests).
    pub(crate) fn is_up(&self) -> bool {
        self.live().is_some()
    }

    /// Sends a `PING` on the connection, if one is up: one not answered within
    /// `timeout` (or failing) marks it lost, which forgets every generation. Pushes
    /// arrive in order with replies, so an answered `PING` also means that every push
    /// Redis sent before it has been handled.
    pub(crate) async fn ping(&self, timeout: Duration) {
        let Some(live) = self.live() else {
            return;
        };
        let ping = redis::cmd("PING");
        let mut connection = live.connection.clone();
        match tokio::time::timeout(timeout, ping.query_async::<Value>(&mut connection)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                tracing::debug!(target: "api_cache", error = %err, "tracking connection: PING failed; every local generation is forgotten");
                self.lost(&live);
            }
            Err(_) => {
                tracing::debug!(target: "api_cache", ?timeout, "tracking connection: PING not answered in time; every local generation is forgotten");
                self.lost(&live);
            }
        }
    }

    /// Runs `command` on the connection if one is up (the cluster tier reads the slot
    /// map through it); `None` when none is.
    pub(crate) async fn query_if_up(&self, command: &redis::Cmd) -> Option<Value> {
        let live = self.live()?;
        command.query_async(&mut live.connection.clone()).await.ok()
    }
}

/// Runs on redis-rs's reader task for every push of the tracking connection.
fn on_push(view: &GenerationView, up: &AtomicBool, push: PushInfo) {
    match push.kind {
        PushKind::Invalidate => {
            for data in push.data {
                match data {
                    Value::Array(keys) | Value::Set(keys) => {
                        view.forget(keys.iter().filter_map(|key| match key {
                            Value::BulkString(bytes) => Some(bytes.as_slice()),
                            _ => None,
                        }));
                    }
                    // `FLUSHALL` / `FLUSHDB`: every key is invalid.
                    _ => view.forget_all(),
                }
            }
        }
        PushKind::Disconnection => {
            up.store(false, Ordering::Release);
            view.forget_all();
        }
        _ => {}
    }
}
