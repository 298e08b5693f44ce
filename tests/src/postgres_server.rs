//! A private PostgreSQL server owned by one test.
//!
//! `initdb` makes a fresh cluster in a temporary directory and `postgres` serves it on a
//! Unix socket in that directory only (no TCP), with durability off; stopped (immediate
//! shutdown) and removed when dropped. The machine's binaries are used
//! (`/usr/lib/postgresql/<version>/bin`, the newest, or `PG_BIN_DIR`; `scripts/setup.sh`
//! installs them). PostgreSQL refuses to run as root, so as root the server runs as the
//! `postgres` system user (which the Debian package creates). Nothing here depends on a
//! server someone started by hand.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One PostgreSQL server process (the postmaster) and its data directory.
pub struct PostgresServer {
    port: u16,
    /// The cluster (`data/`) and the socket; removed when the server is dropped.
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// `Some((uid, gid))`: the user the server runs as (the test runs as root).
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PostgresServer {
    /// Initialises a cluster and starts a server on it, and waits until it accepts
    /// connections (a few seconds).
    pub fn start() -> PostgresServer {
        let bin = bin_dir();
        let run_as = unprivileged_user();
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix(&format!("api-cache-postgres-{port}-"))
            .tempdir()
            .expect("create the server's directory");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("hand the server's directory to the postgres user");
        }
        let data = dir.path().join("data");
        let output = command(&bin.join("initdb"), run_as)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .output()
            .expect("run initdb (the README's test command installs PostgreSQL)");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut server = PostgresServer {
            port,
            dir,
            bin,
            run_as,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = command(&self.bin.join("postgres"), self.run_as)
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses="])
            // A test's data need not survive a crash: no fsync, no full-page writes.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=100"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn postgres");
        self.child = Some(child);
        self.wait_until_ready();
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .arg("-h")
                .arg(self.dir.path())
                .arg("-p")
                .arg(self.port.to_string())
                .args(["-U", "postgres", "-d", "postgres"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("postgres exited before accepting connections: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "postgres on {} did not start",
                self.socket_dir().display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The directory holding the server's socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The port that names the socket (`.s.PGSQL.<port>`; nothing listens on TCP).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres:///<database>?host=<socket dir>&port=<port>&user=postgres`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres:///{database}?host={}&port={}&user=postgres",
            self.socket_dir().display(),
            self.port
        )
    }

    /// The URL of the `postgres` database, which every cluster has.
    pub fn server_url(&self) -> String {
        self.url("postgres")
    }

    /// Runs `sql` with `psql` on `database` and returns its unaligned, tuples-only
    /// output (one row a line, columns separated by `|`).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(self.socket_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", database, "-X", "-A", "-t", "-v"])
            .arg("ON_ERROR_STOP=1")
            .arg("-c")
            .arg(sql)
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGQUIT: immediate shutdown; the postmaster stops its backends and releases
        // its shared memory, which a SIGKILL would leave behind.
        let _ = Command::new("kill")
            .args(["-QUIT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// `PG_BIN_DIR`, else the newest `/usr/lib/postgresql/<version>/bin` with `initdb`.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL binaries in /usr/lib/postgresql/*/bin (scripts/setup.sh installs them), or PG_BIN_DIR")
}

/// As root, the `postgres` user's uid and gid (from /etc/passwd); otherwise `None`: the
/// server runs as the test's own user.
fn unprivileged_user() -> Option<(u32, u32)> {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    if !is_root {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let fields: Vec<&str> = passwd
        .lines()
        .find(|line| line.starts_with("postgres:"))
        .expect("a postgres user to run PostgreSQL as (the postgresql package creates it)")
        .split(':')
        .collect();
    let id = |i: usize| fields.get(i).and_then(|f| f.parse().ok());
    Some((
        id(2).expect("the postgres user's uid"),
        id(3).expect("the postgres user's gid"),
    ))
}

fn command(program: &Path, run_as: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(program);
    if let Some((uid, gid)) = run_as {
        // Group first: once the uid is dropped, setgid is no longer allowed.
        command.gid(gid).uid(uid);
        // Its HOME stays root's, which it cannot read; PostgreSQL does not need one.
        command.current_dir("/");
    }
    command
}
