//! A `redis-server` child process owned by one test.
//!
//! Started on a free loopback port in its own temporary directory, with no persistence
//! unless asked ([`RedisServer::start_persistent`]); killed when dropped. The test may
//! stop it (SIGKILL), pause it (SIGSTOP / SIGCONT), restart it on the same port (all keys
//! gone, or all kept when persistent), bring it back as a read-only replica of its own
//! data, or reconfigure it. Nothing here depends on a server someone started by hand.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One redis-server process.
pub struct RedisServer {
    port: u16,
    /// Removed when the server is dropped.
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// Every write is in an append-only file, fsynced at once: a SIGKILL loses nothing.
    persistent: bool,
    /// TLS only: the plain port is closed and readiness is checked by the TLS port.
    tls: bool,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts a server that speaks TLS only, with a fresh certificate for 127.0.0.1 signed
    /// by a fresh CA (made with the `openssl` command); [`RedisServer::tls_url`] and
    /// [`RedisServer::certificate`] tell a client how to reach and trust it.
    pub fn start_tls() -> RedisServer {
        let port = free_port();
        let dir = Self::directory(port);
        // A throw-away CA and a server certificate it signs (rustls rejects a CA
        // certificate used as the server's own).
        let (ca, ca_key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        let (cert, key, csr) = (
            dir.path().join("cert.pem"),
            dir.path().join("key.pem"),
            dir.path().join("server.csr"),
        );
        let ext = dir.path().join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .expect("write the certificate extensions");
        let openssl = |args: &[&std::ffi::OsStr]| {
            let status = Command::new("openssl")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run openssl (the README's test command installs it)");
            assert!(status.success(), "openssl {args:?} failed");
        };
        let os = |s: &'static str| std::ffi::OsStr::new(s);
        openssl(&[
            os("req"),
            os("-x509"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-days"),
            os("1"),
            os("-subj"),
            os("/CN=api-cache test CA"),
            os("-keyout"),
            ca_key.as_os_str(),
            os("-out"),
            ca.as_os_str(),
        ]);
        openssl(&[
            os("req"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-subj"),
            os("/CN=127.0.0.1"),
            os("-keyout"),
            key.as_os_str(),
            os("-out"),
            csr.as_os_str(),
        ]);
        openssl(&[
            os("x509"),
            os("-req"),
            os("-in"),
            csr.as_os_str(),
            os("-CA"),
            ca.as_os_str(),
            os("-CAkey"),
            ca_key.as_os_str(),
            os("-CAcreateserial"),
            os("-days"),
            os("1"),
            os("-extfile"),
            ext.as_os_str(),
            os("-out"),
            cert.as_os_str(),
        ]);
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        let tls_args = vec![
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            path(&cert),
            "--tls-key-file".to_owned(),
            path(&key),
            "--tls-ca-cert-file".to_owned(),
            path(&ca),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ];
        let mut server = RedisServer {
            port,
            dir,
            child: None,
            extra_args: tls_args,
            persistent: false,
            tls: true,
        };
        server.spawn();
        server
    }

    /// `rediss://127.0.0.1:<port>/` for a server from [`RedisServer::start_tls`].
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.port)
    }

    /// The certificate of the CA that signed a TLS server's certificate.
    pub fn certificate(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn directory(port: u16) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("api-cache-redis-{port}-"))
            .tempdir()
            .expect("create the server's directory")
    }

    /// Starts a server with extra command-line arguments (e.g. `["--maxmemory", "1mb"]`).
    pub fn start_with(extra_args: &[&str]) -> RedisServer {
        let port = free_port();
        let mut server = RedisServer {
            port,
            dir: Self::directory(port),
            child: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            persistent: false,
            tls: false,
        };
        server.spawn();
        server
    }

    /// Starts a server that keeps every write in an append-only file fsynced at once, so
    /// that [`RedisServer::restart_keeping_data`] (SIGKILL, then start on the same
    /// directory) brings back exactly what it held.
    pub fn start_persistent() -> RedisServer {
        let mut server = Self::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
        server.persistent = true;
        server
    }

    fn spawn(&mut self) {
        self.spawn_with(&[]);
    }

    /// Spawns the server with its arguments and, for this run only, `run_args`.
    fn spawn_with(&mut self, run_args: &[&str]) {
        let plain_port = if self.tls { 0 } else { self.port };
        let child = Command::new(redis_server_binary())
            .arg("--port")
            .arg(plain_port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .args(&self.extra_args)
            .args(run_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (the README's test command installs it)");
        self.child = Some(child);
        self.wait_until_ready();
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        if self.tls {
            // No TLS client here: wait for the port to accept connections.
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                assert!(Instant::now() < deadline, "TLS redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            return;
        }
        loop {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200))
                {
                    if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A blocking connection for the test's own inspection and planting.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("client")
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connect to the test's redis-server")
    }

    /// Runs one command and returns its reply.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut self.connection()).expect("redis command")
    }

    /// Commands this server has been sent so far, by name (`mget`, `set`, ...): calls,
    /// plus those refused (`-OOM`, `-READONLY`) or failed. Commands sent to a frozen
    /// server wait in its socket and are counted once it thaws, so comparing two
    /// snapshots counts what a client sent in between, answered or not. Compared rather
    /// than reset with `CONFIG RESETSTAT`: with a reset in between, a full Redis 7.0 was
    /// seen to accept the next write.
    pub fn command_calls(&self) -> std::collections::HashMap<String, u64> {
        command_calls_in(&self.cmd::<String>(&["INFO", "commandstats"]))
    }

    /// The commands sent since `before` (a [`command_calls`](Self::command_calls)
    /// snapshot), leaving out connection bookkeeping (`HELLO`, `CLIENT ...`: handshakes,
    /// the test's own `CLIENT PAUSE`) and the `INFO` calls that took the snapshots.
    pub fn command_calls_since(
        &self,
        before: &std::collections::HashMap<String, u64>,
    ) -> std::collections::HashMap<String, u64> {
        self.command_calls()
            .into_iter()
            .filter(|(name, _)| name != "info" && name != "hello" && !name.starts_with("client|"))
            .map(|(name, n)| {
                let delta = n - before.get(&name).copied().unwrap_or(0);
                (name, delta)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// All keys matching `pattern` (test inspection only).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.cmd(&["KEYS", pattern])
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with nothing stored.
    pub fn restart(&mut self) {
        assert!(
            !self.persistent,
            "a persistent server comes back with its data: use restart_keeping_data"
        );
        self.kill();
        self.spawn();
    }

    /// Kills a server from [`RedisServer::start_persistent`] (SIGKILL: no shutdown save)
    /// and starts it again on the same port and directory: it loads its append-only file
    /// and holds every key it held, values and TTLs as they were.
    pub fn restart_keeping_data(&mut self) {
        assert!(self.persistent, "only a persistent server keeps its data");
        self.kill();
        self.spawn();
    }

    /// Starts a killed persistent server again with its data, as a read-only replica of
    /// a master that does not answer (like a replica about to be promoted): it serves
    /// reads of what it held and refuses every write (`-READONLY`) until
    /// [`RedisServer::promote`].
    pub fn start_again_as_replica(&mut self) {
        assert!(self.child.is_none(), "server still running");
        assert!(self.persistent, "only a persistent server keeps its data");
        let nobody = free_port().to_string();
        self.spawn_with(&["--replicaof", "127.0.0.1", &nobody]);
    }

    /// Promotes a replica to master (`REPLICAOF NO ONE`): writes are accepted again.
    pub fn promote(&self) {
        let _: () = self.cmd(&["REPLICAOF", "NO", "ONE"]);
    }

    /// Starts a killed server again on the same port.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "server still running");
        self.spawn();
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server must be thawed to die promptly.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
        }
        self.kill();
    }
}

fn redis_server_binary() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_owned())
}

/// Waits until `condition` holds, polling, or panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// [`wait_until`] for async tests whose condition needs the runtime to make progress
/// meanwhile (a proxy it runs, a background task): polls without blocking a worker.
pub async fn wait_until_async(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Commands by name (`mget`, `set`, ...) in an `INFO commandstats` reply: calls, plus
/// those refused (`-OOM`, `-READONLY`) or failed (see [`RedisServer::command_calls`]).
pub fn command_calls_in(info: &str) -> std::collections::HashMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("cmdstat_")?;
            let (name, fields) = rest.split_once(':')?;
            let total = fields
                .split(',')
                .filter_map(|f| f.split_once('='))
                .filter(|(k, _)| matches!(*k, "calls" | "rejected_calls" | "failed_calls"))
                .filter_map(|(_, v)| v.parse::<u64>().ok())
                .sum();
            Some((name.to_owned(), total))
        })
        .collect()
}
