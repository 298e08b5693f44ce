//! Test support: a real `redis-server` per test (spawned on a free port, so a test can
//! kill, pause or restart it), a real Redis Cluster (`redis_cluster`), small helpers to drive an axum router, and a cached API
//! whose correct answers are known (`versioned_api`), and a TCP proxy a test can freeze or
//! re-point (`tcp_proxy`), and a private PostgreSQL server per test (`postgres_server`) for
//! the demo on PostgreSQL.

pub mod backends;
pub mod http;
pub mod lookups;
pub mod postgres_server;
pub mod redis_cluster;
pub mod redis_server;
pub mod tcp_proxy;
pub mod versioned_api;

pub use postgres_server::PostgresServer;
pub use redis_cluster::RedisCluster;
pub use redis_server::RedisServer;
