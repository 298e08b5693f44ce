//! Private Redis processes for the report: one `redis-server` (`--redis`) or a local
//! Redis Cluster of three masters (`--redis-cluster`, joined by `redis-cli --cluster
//! create`), on free loopback ports, in a temporary directory of their own.
//!
//! Dropping a [`LocalRedis`] kills its processes and removes the directory; a watchdog
//! shell does the same if the report process dies without dropping it (a signal, an
//! abort). It only launches and waits: it never touches a Redis it did not start. The
//! test suite has its own, richer launchers (`tests/src/redis_{server,cluster}.rs`);
//! this one is kept small and separate because the tests depend on this crate.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Masters of a local cluster (the smallest cluster `redis-cli --cluster create` builds).
const CLUSTER_MASTERS: usize = 3;

/// How long the processes get to come up and, for a cluster, to agree on the slot map.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Why a private Redis could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A program could not be run (not installed?).
    #[error("cannot run {program}: {source} (bash scripts/setup.sh installs redis-server and redis-tools)")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The temporary directory could not be made.
    #[error("temporary directory: {0}")]
    Dir(std::io::Error),
    /// No free port (pair) was found.
    #[error("no free loopback port for a Redis node")]
    NoPort,
    /// `redis-cli --cluster create` failed.
    #[error("redis-cli --cluster create failed: {0}")]
    Create(String),
    /// The processes did not become ready in time.
    #[error("{0} within {READY_WITHIN:?}")]
    NotReady(String),
}

/// Redis processes owned by the report. Killed, and their directory removed, on drop.
pub struct LocalRedis {
    dir: PathBuf,
    ports: Vec<u16>,
    children: Vec<Child>,
    watchdog: Option<Child>,
    cluster: bool,
}

fn server_binary() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_owned())
}

fn cli_binary() -> String {
    std::env::var("REDIS_CLI_BIN").unwrap_or_else(|_| "redis-cli".to_owned())
}

/// A free loopback port; for a cluster node, its bus port (+10000) is free too.
fn free_port(cluster_bus: bool) -> Result<u16, LaunchError> {
    for _ in 0..200 {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|_| LaunchError::NoPort)?;
        let port = listener
            .local_addr()
            .map_err(|_| LaunchError::NoPort)?
            .port();
        if !cluster_bus {
            return Ok(port);
        }
        if port <= 65535 - 10000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return Ok(port);
        }
    }
    Err(LaunchError::NoPort)
}

impl LocalRedis {
    /// One standalone `redis-server`, no persistence.
    pub fn standalone() -> Result<LocalRedis, LaunchError> {
        let mut redis = Self::empty("redis", false)?;
        redis.spawn_node(free_port(false)?)?;
        redis.start_watchdog();
        redis.wait(
            |port| query(port, &["PING"]).is_some(),
            "redis-server answers PING",
        )?;
        Ok(redis)
    }

    /// A cluster of three masters without replicas, ready (`cluster_state:ok` on every
    /// node, every slot served, every node known to every other).
    pub fn cluster() -> Result<LocalRedis, LaunchError> {
        let mut redis = Self::empty("cluster", true)?;
        for _ in 0..CLUSTER_MASTERS {
            let port = free_port(true)?;
            redis.spawn_node(port)?;
        }
        redis.start_watchdog();
        redis.wait(
            |port| query(port, &["PING"]).is_some(),
            "every cluster node answers PING",
        )?;
        let mut create = Command::new(cli_binary());
        create.args(["--cluster", "create"]);
        for port in &redis.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let output = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| LaunchError::Spawn {
                program: cli_binary(),
                source,
            })?;
        if !output.status.success() {
            return Err(LaunchError::Create(format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        let nodes = format!("cluster_known_nodes:{CLUSTER_MASTERS}");
        redis.wait(
            |port| {
                query(port, &["CLUSTER", "INFO"]).is_some_and(|info| {
                    info.contains("cluster_state:ok")
                        && info.contains("cluster_slots_ok:16384")
                        && info.contains(&nodes)
                })
            },
            "every cluster node says cluster_state:ok",
        )?;
        Ok(redis)
    }

    fn empty(kind: &str, cluster: bool) -> Result<LocalRedis, LaunchError> {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "api-cache-report-{kind}-{}-{millis}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(LaunchError::Dir)?;
        Ok(LocalRedis {
            dir,
            ports: Vec::new(),
            children: Vec::new(),
            watchdog: None,
            cluster,
        })
    }

    fn spawn_node(&mut self, port: u16) -> Result<(), LaunchError> {
        let node_dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).map_err(LaunchError::Dir)?;
        let mut command = Command::new(server_binary());
        command
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&node_dir);
        if self.cluster {
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                program: server_binary(),
                source,
            })?;
        self.ports.push(port);
        self.children.push(child);
        Ok(())
    }

    /// Kills the nodes and removes the directory once this process is gone, however it
    /// ends. Best effort: without `sh`, only drop cleans up.
    fn start_watchdog(&mut self) {
        let pids: Vec<String> = self.children.iter().map(|c| c.id().to_string()).collect();
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill -9 {pids} 2>/dev/null; rm -rf '{dir}'",
            parent = std::process::id(),
            pids = pids.join(" "),
            dir = self.dir.display()
        );
        self.watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
    }

    fn wait(&mut self, ready: impl Fn(u16) -> bool, what: &str) -> Result<(), LaunchError> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(index) = self
                .children
                .iter_mut()
                .position(|child| !matches!(child.try_wait(), Ok(None)))
            {
                return Err(LaunchError::NotReady(format!(
                    "redis-server on port {} exited",
                    self.ports[index]
                )));
            }
            if self.ports.iter().all(|&port| ready(port)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::NotReady(format!("not yet: {what}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis://127.0.0.1:<port>/` of the standalone server, or of the cluster's first
    /// node.
    pub fn url(&self) -> String {
        format!(
            "redis://127.0.0.1:{}/",
            self.ports.first().copied().unwrap_or(0)
        )
    }

    /// The URL of every node (the cluster's seed nodes).
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    /// What was started, for the report's header.
    pub fn describe(&self) -> String {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        if self.cluster {
            format!(
                "a local Redis Cluster of {} masters on ports {}",
                self.ports.len(),
                ports.join(", ")
            )
        } else {
            format!("a private redis-server on port {}", ports.join(", "))
        }
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One command on the node at `port`, with short timeouts; `None` on any failure.
fn query(port: u16, args: &[&str]) -> Option<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let (name, rest) = args.split_first()?;
    let mut command = redis::cmd(name);
    for arg in rest {
        command.arg(*arg);
    }
    command.query::<String>(&mut conn).ok()
}
