//! The connection the Redis backend sends every command on: one server through
//! redis-rs's `ConnectionManager` (one multiplexed connection, reconnecting by itself),
//! or a Redis Cluster through its async cluster client (one multiplexed connection per
//! node, following `MOVED`/`ASK`), and how each is built (timeouts, retries, TLS roots).
//! Nothing here decides what to send.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::redis::millis;
use crate::config::CacheConfig;
use crate::error::BackendError;

/// The connection every command goes through. Cloning it is cheap (both kinds are
/// handles to a shared multiplexed connection).
#[derive(Clone)]
pub(super) enum Connection {
    Standalone(ConnectionManager),
    /// Routes each command or pipeline to the master owning its keys' slot, and a
    /// pipeline by its first keyed command: a pipeline of one tenant's keys is one
    /// round trip to one node, unkeyed commands in it (`ROLE`) included.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Standalone(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Standalone(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Standalone(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

impl Connection {
    /// Sends one command and returns its reply as the server gave it: a server error is
    /// a [`Value::ServerError`] in it, not an `Err` (the caller extracts it), which
    /// spares `Cmd::query_async`'s walk of the reply and its conversion. On the
    /// standalone connection it also calls the manager directly rather than through
    /// `ConnectionLike`'s boxed future.
    pub(super) async fn send_command(&mut self, cmd: &Cmd) -> redis::RedisResult<Value> {
        match self {
            Connection::Standalone(c) => c.send_packed_command(cmd).await,
            Connection::Cluster(c) => c.req_packed_command(cmd).await,
        }
    }

    /// `WAIT wanted timeout` on the server that took the writes to `key`. Sent alone,
    /// the cluster client would fan `WAIT` out to every master and return the smallest
    /// count; it is routed to the master of `key`'s slot instead, which is the node
    /// (and the multiplexed connection) the invalidation's pipeline went to.
    pub(super) async fn wait(
        &mut self,
        key: &str,
        wanted: usize,
        timeout: Duration,
    ) -> Result<u64, BackendError> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(wanted).arg(millis(timeout));
        match self {
            Connection::Standalone(c) => Ok(wait.query_async(c).await?),
            Connection::Cluster(c) => {
                let route = Route::with_key(key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                match c.route_command(wait, routing).await? {
                    Value::Int(acknowledged) => Ok(u64::try_from(acknowledged).unwrap_or(0)),
                    other => Err(BackendError::Refused(format!("WAIT answered {other:?}"))),
                }
            }
        }
    }
}

/// The standalone connection: one quick attempt per reconnection, no response timeout
/// of its own.
pub(super) fn standalone(
    url: &str,
    config: &CacheConfig,
) -> Result<ConnectionManager, redis::RedisError> {
    let client = if url.starts_with("rediss://") {
        tls_client(url)?
    } else {
        redis::Client::open(url)?
    };
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        // No response timeout of redis-rs's own: the cache layer bounds every
        // operation (connection wait included) with one timer, and a second one per
        // command was measurable on the hit path (BENCHMARKS.md, hot path 4).
        .set_response_timeout(None)
        // One quick attempt per reconnection; the circuit breaker paces the rest.
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(100));
    ConnectionManager::new_lazy_with_config(client, manager_config)
}

/// The cluster connection, connecting in the background. Reads go to masters only (no
/// read routing strategy is set). The client's retries exist to follow `MOVED`/`ASK`
/// (and `TRYAGAIN` while a slot migrates) and to reach a promoted replica: a few quick
/// ones, all within the cache layer's timer, which bounds the whole operation as for
/// the standalone connection.
pub(super) fn cluster(
    seeds: &[String],
    config: &CacheConfig,
) -> Result<ClusterConnection, redis::RedisError> {
    let mut builder = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
        .connection_timeout(config.connect_timeout)
        .retries(3)
        .min_retry_wait(5)
        .max_retry_wait(50)
        .retry_wait_formula(5, 2);
    if seeds.iter().any(|url| url.starts_with("rediss://")) {
        builder = with_native_roots(builder);
    }
    let client = builder.build()?;
    Ok(client.get_pending_async_connection_with_config(redis::cluster::ClusterConfig::new()))
}

/// A client for one server speaking RESP3 (which `CLIENT TRACKING` pushes need), with
/// the same TLS roots as [`standalone`]: the local tier's tracking connection.
pub(super) fn resp3_client(url: &str) -> Result<redis::Client, redis::RedisError> {
    use redis::IntoConnectionInfo;
    let info = url.into_connection_info()?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    let info = info.set_redis_settings(settings);
    if url.starts_with("rediss://") {
        tls_client(info)
    } else {
        redis::Client::open(info)
    }
}

/// A client for `rediss://` that trusts the platform's roots (and `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`), handed to redis-rs explicitly: when another crate in the program
/// also enables redis-rs's native-tls feature, redis-rs builds its rustls configuration
/// with an empty root store, and every certificate would be refused.
#[cfg(feature = "tls")]
fn tls_client(url: impl redis::IntoConnectionInfo) -> Result<redis::Client, redis::RedisError> {
    match native_roots_pem() {
        Some(pem) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            },
        ),
        None => redis::Client::open(url),
    }
}

#[cfg(not(feature = "tls"))]
fn tls_client(url: impl redis::IntoConnectionInfo) -> Result<redis::Client, redis::RedisError> {
    redis::Client::open(url)
}

/// [`tls_client`] for a cluster: every node connection trusts the platform's roots.
#[cfg(feature = "tls")]
fn with_native_roots(builder: ClusterClientBuilder) -> ClusterClientBuilder {
    match native_roots_pem() {
        Some(pem) => builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        }),
        None => builder,
    }
}

#[cfg(not(feature = "tls"))]
fn with_native_roots(builder: ClusterClientBuilder) -> ClusterClientBuilder {
    builder
}

/// The platform's root certificates as one PEM bundle; `None` when there are none.
#[cfg(feature = "tls")]
fn native_roots_pem() -> Option<Vec<u8>> {
    use base64::Engine as _;
    let roots = rustls_native_certs::load_native_certs();
    for error in &roots.errors {
        tracing::warn!(target: "api_cache", %error, "could not load some platform root certificates");
    }
    if roots.certs.is_empty() {
        return None;
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
    Some(pem)
}
