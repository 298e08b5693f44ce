//! A TCP proxy a test controls, for faults a process cannot produce by itself.
//!
//! Between a replica and its primary, [`TcpProxy::freeze`] stops replication without
//! either side noticing: both connections stay open, and every byte is read and
//! dropped, so the primary still lists the replica as connected while nothing reaches
//! it (a partition that TCP does not report). In front of a Redis, it is an endpoint
//! that follows a failover: [`TcpProxy::set_upstream`] points new connections at
//! another server and closes the open ones, as a managed Redis endpoint does.

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One listening proxy, forwarding to a loopback port; stopped when dropped.
pub struct TcpProxy {
    port: u16,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    upstream: AtomicU16,
    frozen: AtomicBool,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards each connection to
    /// `127.0.0.1:<upstream>`.
    pub async fn start(upstream: u16) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            upstream: AtomicU16::new(upstream),
            frozen: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
        });
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = accepting.clone();
                let connection = tokio::spawn(async move {
                    let upstream = shared.upstream.load(Ordering::SeqCst);
                    // An upstream that refuses: close the client, as the server would.
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        forward(client_read, server_write, &shared.frozen),
                        forward(server_read, client_write, &shared.frozen),
                    );
                });
                let mut connections = accepting.connections.lock().expect("connections");
                connections.retain(|c| !c.is_finished());
                connections.push(connection);
            }
        });
        TcpProxy {
            port,
            shared,
            accept,
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops forwarding, in both directions and for good: connections stay open, bytes
    /// are read and dropped, and a side that closes is not reported to the other.
    pub fn freeze(&self) {
        self.shared.frozen.store(true, Ordering::SeqCst);
    }

    /// Sends new connections to `127.0.0.1:<upstream>` and closes the open ones, so
    /// that clients reconnect there.
    pub fn set_upstream(&self, upstream: u16) {
        self.shared.upstream.store(upstream, Ordering::SeqCst);
        for connection in self
            .shared
            .connections
            .lock()
            .expect("connections")
            .drain(..)
        {
            connection.abort();
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(mut connections) = self.shared.connections.lock() {
            for connection in connections.drain(..) {
                connection.abort();
            }
        }
    }
}

/// Copies `from` to `to` until `from` closes; while `frozen`, drops what it reads.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: &AtomicBool,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                if !frozen.load(Ordering::SeqCst) {
                    let _ = to.shutdown().await;
                    return;
                }
                // Frozen: the other side must not learn that this one went away. Keep
                // the write half open until the connection is dropped.
                std::future::pending::<()>().await;
                return;
            }
            Ok(read) => read,
        };
        if frozen.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
