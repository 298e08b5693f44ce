//! Test support: a real `redis-server` per test (spawned on a free port, so a test can
//! kill, pause or restart it), and small helpers to drive an axum router.

pub mod backends;
pub mod http;
pub mod redis_server;

pub use redis_server::RedisServer;
