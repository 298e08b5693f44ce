//! A real Redis Cluster of `redis-server --cluster-enabled yes` processes owned by a test.
//!
//! Three masters (optionally one replica each) on free loopback ports, joined by
//! `redis-cli --cluster create`, each node in its own directory under one temporary
//! directory. Ready when every node says `cluster_state:ok`, knows every other node and
//! (with replicas) every master has its replica connected. Dropping it kills the
//! processes and removes the directory; a watchdog process does the same if the test
//! process dies first, so that a cluster shared by a whole test binary
//! ([`RedisCluster::shared`]) never outlives it. A test may kill a node, and find which
//! master serves a key. Nothing here depends on a cluster someone started by hand.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::redis_server::{command_calls_in, wait_until};

/// How to build a cluster.
#[derive(Debug, Clone, Copy)]
pub struct ClusterOptions {
    /// Replicas per master: 0 or 1.
    pub replicas_per_master: usize,
    /// `cluster-node-timeout`: how long a node may be unreachable before it is failed
    /// (and its replica promoted).
    pub node_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            replicas_per_master: 0,
            node_timeout: Duration::from_millis(1000),
        }
    }
}

const MASTERS: usize = 3;

/// One node process.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// A running cluster.
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
    options: ClusterOptions,
    watchdog: Option<Child>,
}

/// A port whose cluster-bus port (port + 10000) is free too.
fn free_cluster_port() -> u16 {
    for _ in 0..200 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local addr").port();
        if port > 65535 - 10000 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair for a cluster node");
}

fn binary(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.to_owned())
}

impl RedisCluster {
    /// Three masters, no replicas.
    pub fn start() -> RedisCluster {
        Self::start_with(ClusterOptions::default())
    }

    /// Three masters with one replica each (for failover).
    pub fn start_with_replicas() -> RedisCluster {
        Self::start_with(ClusterOptions {
            replicas_per_master: 1,
            ..ClusterOptions::default()
        })
    }

    /// One cluster (three masters, no replicas) for the whole test binary, started on
    /// first use and removed when the process exits. Tests that share it must keep to
    /// their own keys (a distinct prefix) and must not kill or reconfigure its nodes.
    pub fn shared() -> &'static RedisCluster {
        static SHARED: OnceLock<RedisCluster> = OnceLock::new();
        SHARED.get_or_init(RedisCluster::start)
    }

    /// Starts the nodes, joins them and waits until the cluster is ready.
    pub fn start_with(options: ClusterOptions) -> RedisCluster {
        assert!(
            options.replicas_per_master <= 1,
            "0 or 1 replica per master"
        );
        let count = MASTERS * (1 + options.replicas_per_master);
        let ports: Vec<u16> = (0..count).map(|_| free_cluster_port()).collect();
        let dir = std::env::temp_dir().join(format!(
            "api-cache-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        std::fs::create_dir_all(&dir).expect("create the cluster's directory");
        let mut cluster = RedisCluster {
            dir,
            nodes: ports
                .iter()
                .map(|&port| Node { port, child: None })
                .collect(),
            options,
            watchdog: None,
        };
        for index in 0..count {
            cluster.spawn(index);
        }
        cluster.start_watchdog();
        for node in &cluster.nodes {
            wait_until(
                Duration::from_secs(10),
                "a cluster node answers PING",
                || ping(node.port),
            );
        }
        let mut create = Command::new(binary("REDIS_CLI_BIN", "redis-cli"));
        create.arg("--cluster").arg("create");
        for port in &ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let output = create
            .args([
                "--cluster-replicas",
                &options.replicas_per_master.to_string(),
            ])
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create (scripts/setup.sh installs redis-tools)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_until_ready(Duration::from_secs(30));
        cluster
    }

    fn spawn(&mut self, index: usize) {
        let port = self.nodes[index].port;
        let node_dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).expect("create a node's directory");
        let child = Command::new(binary("REDIS_SERVER_BIN", "redis-server"))
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .arg("--cluster-node-timeout")
            .arg(self.options.node_timeout.as_millis().to_string())
            // A replica takes over however long it was cut off from its master: the
            // tests kill masters on purpose.
            .args(["--cluster-replica-validity-factor", "0"])
            .arg("--dir")
            .arg(&node_dir)
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (scripts/setup.sh installs it)");
        self.nodes[index].child = Some(child);
    }

    /// Kills every node and removes the directory once this process is gone, whatever
    /// way it ends (a shared cluster is never dropped).
    fn start_watchdog(&mut self) {
        let pids: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(|c| c.id().to_string()))
            .collect();
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

    /// Waits until every live node reports `cluster_state:ok`, knows every node, and
    /// (with replicas) each master has a connected replica.
    pub fn wait_until_ready(&self, timeout: Duration) {
        let live = self.live_ports();
        wait_until(timeout, "every cluster node says cluster_state:ok", || {
            live.iter().all(|&port| {
                let Some(info) = try_cmd::<String>(port, &["CLUSTER", "INFO"]) else {
                    return false;
                };
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && info.contains(&format!("cluster_known_nodes:{}", self.nodes.len()))
            })
        });
        if self.options.replicas_per_master > 0 {
            wait_until(timeout, "every master has its replica connected", || {
                let masters = self.masters();
                masters.len() == MASTERS
                    && masters
                        .iter()
                        .all(|&port| self.connected_replicas(port) >= 1)
            });
        }
    }

    /// The seed URLs a client is configured with (every node).
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect()
    }

    /// Ports of the nodes whose process runs.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// The hash slot of `key` (asked of a live node).
    pub fn slot_of(&self, key: &str) -> u16 {
        self.cmd_any(&["CLUSTER", "KEYSLOT", key])
    }

    /// The port of the master serving `slot`, per `CLUSTER SLOTS` of a live node.
    pub fn master_of_slot(&self, slot: u16) -> u16 {
        let ranges: Vec<redis::Value> = self.cmd_any(&["CLUSTER", "SLOTS"]);
        for range in ranges {
            let redis::Value::Array(fields) = range else {
                continue;
            };
            let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end))) =
                (fields.first(), fields.get(1))
            else {
                continue;
            };
            if !(*start..=*end).contains(&i64::from(slot)) {
                continue;
            }
            if let Some(redis::Value::Array(master)) = fields.get(2) {
                if let Some(redis::Value::Int(port)) = master.get(1) {
                    return *port as u16;
                }
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// The port of the master serving `key`.
    pub fn master_of_key(&self, key: &str) -> u16 {
        self.master_of_slot(self.slot_of(key))
    }

    /// Ports of the live nodes that are masters now (per `ROLE`).
    pub fn masters(&self) -> Vec<u16> {
        self.live_ports()
            .into_iter()
            .filter(|&port| self.is_master(port))
            .collect()
    }

    /// Replicas `ROLE` lists on the master at `port`.
    pub fn connected_replicas(&self, port: u16) -> usize {
        match try_cmd::<redis::Value>(port, &["ROLE"]) {
            Some(redis::Value::Array(fields)) => match fields.get(2) {
                Some(redis::Value::Array(replicas)) => replicas.len(),
                _ => 0,
            },
            _ => 0,
        }
    }

    /// The replica of the master at `port` (a live node whose `ROLE` names it).
    pub fn replica_of(&self, master: u16) -> Option<u16> {
        self.live_ports().into_iter().find(|&port| {
            matches!(try_cmd::<redis::Value>(port, &["ROLE"]), Some(redis::Value::Array(fields))
                if matches!(fields.first(), Some(redis::Value::BulkString(b)) if b == b"slave")
                    && matches!(fields.get(2), Some(redis::Value::Int(p)) if *p == i64::from(master)))
        })
    }

    /// The node id of the node at `port`.
    pub fn node_id(&self, port: u16) -> String {
        cmd(port, &["CLUSTER", "MYID"])
    }

    /// Runs one command on the node at `port`.
    pub fn cmd<T: redis::FromRedisValue>(&self, port: u16, args: &[&str]) -> T {
        cmd(port, args)
    }

    /// Commands the node at `port` has been sent, by name (see
    /// [`RedisServer::command_calls`](crate::RedisServer::command_calls)).
    pub fn command_calls(&self, port: u16) -> std::collections::HashMap<String, u64> {
        command_calls_in(&self.cmd::<String>(port, &["INFO", "commandstats"]))
    }

    /// A move of `slot` from its master to another one, not started yet.
    pub fn slot_migration(&self, slot: u16) -> SlotMigration {
        let source = self.master_of_slot(slot);
        let target = *self
            .masters()
            .iter()
            .find(|&&port| port != source)
            .expect("another master");
        SlotMigration {
            slot: slot.to_string(),
            source,
            target,
            source_id: self.node_id(source),
            target_id: self.node_id(target),
        }
    }

    fn cmd_any<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        for port in self.live_ports() {
            if let Some(reply) = try_cmd(port, args) {
                return reply;
            }
        }
        panic!("no live cluster node answered {args:?}");
    }

    /// Keys matching `pattern` on every live master (test inspection only).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys = Vec::new();
        for port in self.masters() {
            keys.extend(cmd::<Vec<String>>(port, &["KEYS", pattern]));
        }
        keys.sort();
        keys
    }

    /// Kills the node at `port` (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"));
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the node at `port` (SIGSTOP): connections stay open, nothing answers.
    /// Keep it shorter than the node timeout unless a failover is wanted.
    pub fn pause(&self, port: u16) {
        self.signal(port, "-STOP");
    }

    /// Thaws a paused node (SIGCONT).
    pub fn resume(&self, port: u16) {
        self.signal(port, "-CONT");
    }

    fn signal(&self, port: u16, signal: &str) {
        let pid = self
            .nodes
            .iter()
            .find(|n| n.port == port)
            .and_then(|n| n.child.as_ref())
            .unwrap_or_else(|| panic!("no running node on port {port}"))
            .id();
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Whether every live node reports `cluster_state:ok`.
    pub fn state_ok(&self) -> bool {
        self.live_ports().iter().all(|&port| {
            try_cmd::<String>(port, &["CLUSTER", "INFO"])
                .is_some_and(|info| info.contains("cluster_state:ok"))
        })
    }

    /// Whether the node at `port` is a master now.
    pub fn is_master(&self, port: u16) -> bool {
        matches!(try_cmd::<redis::Value>(port, &["ROLE"]), Some(redis::Value::Array(fields))
            if matches!(fields.first(), Some(redis::Value::BulkString(b)) if b == b"master"))
    }

    /// Kills every node.
    pub fn kill_all(&mut self) {
        for port in self.live_ports() {
            self.kill(port);
        }
    }

    /// Starts every killed node again from its `nodes.conf` (its keys are gone: no
    /// persistence), so the cluster re-forms with the same slot map.
    pub fn start_killed_again(&mut self) {
        for index in 0..self.nodes.len() {
            if self.nodes[index].child.is_none() {
                self.spawn(index);
            }
        }
        // The watchdog knows the old process ids: replace it.
        if let Some(mut old) = self.watchdog.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        self.start_watchdog();
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        // A paused node must be thawed to die promptly.
        for node in &self.nodes {
            if let Some(child) = &node.child {
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(child.id().to_string())
                    .status();
            }
        }
        self.kill_all();
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn connection(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))?
        .get_connection_with_timeout(Duration::from_millis(500))
}

fn ping(port: u16) -> bool {
    try_cmd::<String>(port, &["PING"]).is_some()
}

fn try_cmd<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Option<T> {
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    let mut conn = connection(port).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    command.query(&mut conn).ok()
}

fn cmd<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        match connection(port).and_then(|mut conn| command.query(&mut conn)) {
            Ok(reply) => return reply,
            // A node briefly unreachable (starting, busy): try again until the deadline.
            Err(err)
                if (err.is_io_error() || err.is_connection_refusal())
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(err) => panic!("{args:?} on cluster node {port}: {err}"),
        }
    }
}

/// A slot moved from one master to another as `redis-cli --cluster reshard` does it, in
/// its three steps so that a test can look in between: [`mark`](Self::mark) both
/// sides, [`move_keys`](Self::move_keys) (the source answers `ASK` from then on),
/// [`assign`](Self::assign) the slot to the target (the source answers `MOVED`).
#[derive(Debug)]
pub struct SlotMigration {
    slot: String,
    pub source: u16,
    pub target: u16,
    source_id: String,
    target_id: String,
}

impl SlotMigration {
    /// The target importing the slot, the source migrating it.
    pub fn mark(&self, cluster: &RedisCluster) {
        let _: () = cluster.cmd(
            self.target,
            &[
                "CLUSTER",
                "SETSLOT",
                &self.slot,
                "IMPORTING",
                &self.source_id,
            ],
        );
        let _: () = cluster.cmd(
            self.source,
            &[
                "CLUSTER",
                "SETSLOT",
                &self.slot,
                "MIGRATING",
                &self.target_id,
            ],
        );
    }

    /// Moves every key of the slot to the target, a hundred at a time, until none is
    /// left on the source (writes may still land there meanwhile: they are moved too,
    /// for up to 20 s).
    pub fn move_keys(&self, cluster: &RedisCluster) {
        let started = Instant::now();
        let target_port = self.target.to_string();
        loop {
            let keys: Vec<String> = cluster.cmd(
                self.source,
                &["CLUSTER", "GETKEYSINSLOT", &self.slot, "100"],
            );
            if keys.is_empty() {
                return;
            }
            let mut args = vec![
                "MIGRATE",
                "127.0.0.1",
                &target_port,
                "",
                "0",
                "5000",
                "KEYS",
            ];
            args.extend(keys.iter().map(String::as_str));
            let _: redis::Value = cluster.cmd(self.source, &args);
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "keys keep coming back"
            );
        }
    }

    /// The slot is the target's, on every master.
    pub fn assign(&self, cluster: &RedisCluster) {
        for port in cluster.masters() {
            let _: () = cluster.cmd(
                port,
                &["CLUSTER", "SETSLOT", &self.slot, "NODE", &self.target_id],
            );
        }
    }
}
