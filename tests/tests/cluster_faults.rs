//! Faults on a real Redis Cluster (issue 14): a master killed and its replica promoted
//! while requests flow, a busy tenant's slot migrated to another master while requests
//! flow (`ASK`, then `MOVED`), and the whole cluster unreachable. Two instances (two
//! caches on one database) serve a tenant while one writer mutates it; every answer is
//! checked: a 200 for the right tenant, never a version older than a mutation that had
//! returned before the read started (on the instance that mutated; on the other one,
//! older than a mutation whose invalidation had been delivered, which is the standalone
//! guarantee too: see README, Failure modes). Also: an invalidation waits for the
//! replica of the tenant's own master.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_runtime::error::{BackendError, InvalidationError};
use cache_runtime::stats::CircuitSnapshot;
use cache_runtime::{Cache, CacheConfig};
use cache_tests::http::{get, send};
use cache_tests::redis_cluster::{ClusterOptions, RedisCluster};
use cache_tests::versioned_api::{Api, Db, Page};

const TIMEOUT: Duration = Duration::from_millis(200);
const FAILURES: u32 = 3;
const OPEN_FOR: Duration = Duration::from_millis(500);
const TENANT: &str = "busy";
const RESOURCE: &str = "contacts";

fn config(cluster: &RedisCluster) -> CacheConfig {
    CacheConfig::default()
        .with_redis_cluster_urls(cluster.seed_urls())
        .with_response_timeout(TIMEOUT)
        .with_connect_timeout(TIMEOUT)
        .with_circuit(FAILURES, OPEN_FOR)
}

/// The hash-tagged part every key of `TENANT` shares: it decides the slot.
fn tenant_tag() -> String {
    format!("{{t.{TENANT}}}")
}

/// Polls `condition` without blocking the runtime, or panics after `timeout`.
async fn wait_for(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One answered read.
#[derive(Debug, Clone)]
struct ReadEvent {
    instance: &'static str,
    started: Instant,
    finished: Instant,
    x_cache: String,
}

/// One returned mutation.
#[derive(Debug, Clone)]
struct MutationEvent {
    returned: Instant,
    version: u64,
    /// Nothing was pending on the writing instance right after it returned: the
    /// invalidation was delivered (and confirmed by the replicas `WAIT` asked for).
    delivered: bool,
}

#[derive(Default)]
struct Log {
    reads: Mutex<Vec<ReadEvent>>,
    mutations: Mutex<Vec<MutationEvent>>,
    stale: Mutex<Vec<String>>,
}

impl Log {
    fn reads(&self) -> Vec<ReadEvent> {
        self.reads.lock().unwrap().clone()
    }

    fn mutations(&self) -> Vec<MutationEvent> {
        self.mutations.lock().unwrap().clone()
    }

    fn hits_since(&self, instance: &str, since: Instant) -> usize {
        self.reads
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.instance == instance && r.started >= since && r.x_cache == "HIT")
            .count()
    }
}

/// Requests flowing: one writer through instance A, one reader on each instance.
struct Flow {
    stop: Arc<AtomicBool>,
    log: Arc<Log>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Flow {
    fn start(cache_a: &Cache, api_a: &Api, api_b: &Api) -> Flow {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Log::default());
        // The newest version each instance must not answer below, for reads starting now.
        let floor_a = Arc::new(AtomicU64::new(api_a.db.version(TENANT, RESOURCE)));
        let floor_b = Arc::new(AtomicU64::new(api_a.db.version(TENANT, RESOURCE)));
        let mut tasks = Vec::new();
        {
            let (stop, log, cache, api) =
                (stop.clone(), log.clone(), cache_a.clone(), api_a.clone());
            let (floor_a, floor_b) = (floor_a.clone(), floor_b.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let version = api.change(TENANT, RESOURCE).await;
                    let returned = Instant::now();
                    floor_a.store(version, Ordering::SeqCst);
                    let delivered = cache.stats().pending_invalidations == 0;
                    if delivered {
                        floor_b.store(version, Ordering::SeqCst);
                    }
                    log.mutations.lock().unwrap().push(MutationEvent {
                        returned,
                        version,
                        delivered,
                    });
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            }));
        }
        for (instance, api, floor) in [("A", api_a.clone(), floor_a), ("B", api_b.clone(), floor_b)]
        {
            let (stop, log) = (stop.clone(), log.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let floor = floor.load(Ordering::SeqCst);
                    let started = Instant::now();
                    let reply = send(&api.app, get(&format!("/{RESOURCE}"), Some(TENANT))).await;
                    let finished = Instant::now();
                    assert_eq!(reply.status, http::StatusCode::OK, "{reply:?}");
                    let page: Page = serde_json::from_slice(&reply.body).expect("a page");
                    assert_eq!((page.tenant.as_str(), page.resource.as_str()), (TENANT, RESOURCE));
                    if page.version < floor {
                        log.stale.lock().unwrap().push(format!(
                            "instance {instance} answered version {} ({}) after version {floor} was returned",
                            page.version,
                            reply.x_cache()
                        ));
                    }
                    log.reads.lock().unwrap().push(ReadEvent {
                        instance,
                        started,
                        finished,
                        x_cache: reply.x_cache().to_owned(),
                    });
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        Flow { stop, log, tasks }
    }

    /// Stops the traffic; a panic in it (a non-200, a wrong tenant) fails the test here.
    async fn stop(self) -> Arc<Log> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("a traffic task failed");
        }
        let stale = self.log.stale.lock().unwrap().clone();
        assert!(stale.is_empty(), "stale answers: {stale:#?}");
        self.log
    }
}

/// Two instances sharing a database, with `TENANT`'s `RESOURCE` cached and hit on both.
async fn two_instances(cluster: &RedisCluster) -> (Cache, Api, Cache, Api) {
    let db = Db::default();
    let cache_a = Cache::new(config(cluster)).await.unwrap();
    let cache_b = Cache::new(config(cluster)).await.unwrap();
    assert_eq!(cache_a.backend_name(), "redis-cluster");
    let api_a = Api::with_db(&cache_a, db.clone());
    let api_b = Api::with_db(&cache_b, db);
    for api in [&api_a, &api_b] {
        api.read_until_hit(TENANT, RESOURCE, None, Duration::from_secs(10))
            .await;
    }
    (cache_a, api_a, cache_b, api_b)
}

/// Error replies per kind (`MOVED`, `ASK`, ...) the node at `port` sent since it started.
fn error_replies(cluster: &RedisCluster, port: u16) -> HashMap<String, u64> {
    let info: String = cluster.cmd(port, &["INFO", "errorstats"]);
    info.lines()
        .filter_map(|line| {
            let (kind, count) = line.strip_prefix("errorstat_")?.split_once(":count=")?;
            Some((kind.to_owned(), count.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_waits_for_the_replica_of_the_tenants_own_master() {
    // Generous bounds: a replica of a busy machine may take a while to acknowledge, and
    // the pause below must stay well within the node timeout (no failover).
    let cluster = RedisCluster::start_with(ClusterOptions {
        replicas_per_master: 1,
        node_timeout: Duration::from_secs(5),
    });
    // A 4 s response timeout gives WAIT 2 s: a healthy replica of a machine busy with the
    // other cluster tests of this file still acknowledges in time (1 s flaked), and the
    // paused replica below still stays paused well within the node timeout.
    let cache = Cache::new(
        config(&cluster)
            .with_response_timeout(Duration::from_secs(4))
            .with_connect_timeout(Duration::from_secs(1))
            .with_circuit(1000, OPEN_FOR),
    )
    .await
    .unwrap();
    let master = cluster.master_of_key(&tenant_tag());
    let replica = cluster
        .replica_of(master)
        .expect("the master has a replica");
    // The replica is listed by ROLE as soon as it connects, but acknowledges nothing until
    // its initial sync is done (a while on a loaded machine): wait until it acknowledges
    // the master's current offset, as a healthy replica does.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cluster.cmd::<i64>(master, &["WAIT", "1", "200"]) < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica of {master} never caught up"
        );
    }
    let waits = |port| {
        cluster
            .command_calls(port)
            .get("wait")
            .copied()
            .unwrap_or(0)
    };
    let before: Vec<(u16, u64)> = cluster
        .masters()
        .into_iter()
        .map(|p| (p, waits(p)))
        .collect();

    let delivered = cache.invalidate(TENANT, &[RESOURCE, "templates"]).await;
    assert!(delivered.is_ok(), "{delivered:?}");
    assert_eq!(cache.stats().pending_invalidations, 0);
    // ROLE went with the SETs to the tenant's master, which listed its replica; WAIT went
    // there too, and nowhere else.
    for (port, waits_before) in before {
        let expected = waits_before + u64::from(port == master);
        assert_eq!(
            waits(port),
            expected,
            "WAIT calls on master {port} (the tenant's is {master})"
        );
    }

    // The replica stops answering (shorter than the node timeout: no failover): the
    // invalidation is written but not confirmed, so it stays pending.
    cluster.pause(replica);
    let result = cache.invalidate(TENANT, &[RESOURCE]).await;
    cluster.resume(replica);
    assert!(
        matches!(
            result,
            Err(InvalidationError::Deferred(BackendError::NotReplicated {
                acknowledged: 0,
                wanted: 1
            }))
        ),
        "{result:?}"
    );
    assert_eq!(cache.stats().pending_invalidations, 1);
    wait_for(
        Duration::from_secs(10),
        "the redelivery is confirmed",
        || cache.stats().pending_invalidations == 0,
    )
    .await;
    assert_eq!(
        cache.stats().circuit_opened,
        0,
        "a slow replica is no outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_and_its_replica_promoted_while_requests_flow() {
    let mut cluster = RedisCluster::start_with(ClusterOptions {
        replicas_per_master: 1,
        node_timeout: Duration::from_millis(1000),
    });
    let (cache_a, api_a, cache_b, api_b) = two_instances(&cluster).await;
    let master = cluster.master_of_key(&tenant_tag());
    let replica = cluster
        .replica_of(master)
        .expect("the master has a replica");

    let flow = Flow::start(&cache_a, &api_a, &api_b);
    let log = flow.log.clone();
    wait_for(Duration::from_secs(10), "traffic flows", || {
        log.reads().len() >= 20 && log.mutations().len() >= 3
    })
    .await;
    let errors_before = cache_a.stats().totals.errors + cache_b.stats().totals.errors;
    let killed = Instant::now();
    cluster.kill(master);
    wait_for(Duration::from_secs(30), "the replica is promoted", || {
        cluster.is_master(replica)
    })
    .await;
    let promoted = Instant::now();
    wait_for(Duration::from_secs(30), "the cluster is ok again", || {
        cluster.state_ok()
    })
    .await;
    // Caching resumes on the promoted replica, on both instances.
    wait_for(Duration::from_secs(30), "both instances hit again", || {
        log.hits_since("A", promoted) >= 3 && log.hits_since("B", promoted) >= 3
    })
    .await;
    let recovered = Instant::now();
    let log = flow.stop().await;

    // The risky case happened: requests were answered while the master was dead and
    // before its replica took over, and mutations returned meanwhile.
    let reads = log.reads();
    let during = reads
        .iter()
        .filter(|r| r.started >= killed && r.finished <= promoted)
        .count();
    let mutations_during = log
        .mutations()
        .iter()
        .filter(|m| m.returned >= killed && m.returned <= promoted)
        .count();
    assert!(during >= 5, "only {during} reads while the master was down");
    assert!(
        mutations_during >= 1,
        "no mutation returned during the failover"
    );
    let errors = cache_a.stats().totals.errors + cache_b.stats().totals.errors - errors_before;
    assert!(errors >= 1, "the caches never met the dead master");
    // After the failover, a confirmed mutation is never followed by an older answer,
    // and the last answers are the database's.
    let last = log.mutations().last().expect("mutations").version;
    assert_eq!(last, api_a.db.version(TENANT, RESOURCE));
    for api in [&api_a, &api_b] {
        api.read(TENANT, RESOURCE, None).await;
    }
    println!(
        "failover: promoted {:?} after the kill, both instances hitting {:?} after; \
         {during} reads and {mutations_during} mutations answered in between, {} reads in all, {errors} cache errors",
        promoted - killed,
        recovered - promoted,
        reads.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_tenants_slot_migrated_while_requests_flow() {
    let cluster = RedisCluster::start();
    let (cache_a, api_a, _cache_b, api_b) = two_instances(&cluster).await;
    let slot = cluster.slot_of(&tenant_tag());
    let migration = cluster.slot_migration(slot);
    let (source, target) = (migration.source, migration.target);

    let flow = Flow::start(&cache_a, &api_a, &api_b);
    let log = flow.log.clone();
    wait_for(Duration::from_secs(10), "traffic flows", || {
        log.reads().len() >= 20 && log.mutations().len() >= 3
    })
    .await;

    // Migration, as redis-cli --cluster reshard does it: mark both sides, move the keys.
    migration.mark(&cluster);
    let migrating = Instant::now();
    migration.move_keys(&cluster);
    // Every key is on the target now and the slot is still the source's: each command
    // is answered with ASK. Requests go on until both instances hit through it and a
    // mutation was delivered through it.
    let all_moved = Instant::now();
    wait_for(
        Duration::from_secs(20),
        "hits and a delivered mutation through ASK",
        || {
            log.hits_since("A", all_moved) >= 2
                && log.hits_since("B", all_moved) >= 2
                && log
                    .mutations()
                    .iter()
                    .any(|m| m.returned > all_moved && m.delivered)
        },
    )
    .await;
    let asked = Instant::now();
    migration.assign(&cluster);
    let moved = Instant::now();
    assert_eq!(cluster.master_of_slot(slot), target);
    // The instances still route the slot to the source, which now answers MOVED.
    wait_for(Duration::from_secs(20), "hits after the move", || {
        log.hits_since("A", moved) >= 3 && log.hits_since("B", moved) >= 3
    })
    .await;
    let log = flow.stop().await;

    let reads = log.reads();
    let during = reads
        .iter()
        .filter(|r| r.started >= migrating && r.finished <= moved)
        .count();
    assert!(during >= 5, "only {during} reads during the migration");
    // The redirections happened and were followed: the source answered ASK while the
    // slot was migrating and MOVED after, and the client sent ASKING to the target.
    let source_errors = error_replies(&cluster, source);
    assert!(
        source_errors.get("ASK").is_some_and(|&n| n >= 1),
        "{source_errors:?}"
    );
    assert!(
        source_errors.get("MOVED").is_some_and(|&n| n >= 1),
        "{source_errors:?}"
    );
    let asking = cluster
        .command_calls(target)
        .get("asking")
        .copied()
        .unwrap_or(0);
    assert!(asking >= 1, "the target never received ASKING");
    // The entries and generations live on the target now, and nothing of the tenant is
    // left on the source.
    let pattern = format!("api-cache:{}:*", tenant_tag());
    let on_target: Vec<String> = cluster.cmd(target, &["KEYS", &pattern]);
    let on_source: Vec<String> = cluster.cmd(source, &["KEYS", &pattern]);
    assert!(
        on_target.iter().any(|k| k.contains(":e:")) && on_target.iter().any(|k| k.contains(":g:")),
        "{on_target:?}"
    );
    assert!(on_source.is_empty(), "{on_source:?}");
    for api in [&api_a, &api_b] {
        api.read(TENANT, RESOURCE, None).await;
    }
    println!(
        "migration: keys moved in {:?}, ASK phase {:?}, {during} reads and {} mutations during it",
        all_moved - migrating,
        asked - all_moved,
        log.mutations()
            .iter()
            .filter(|m| m.returned >= migrating && m.returned <= moved)
            .count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cluster_unreachable_gives_uncached_answers_and_opens_the_circuit_once() {
    let mut cluster = RedisCluster::start();
    let cache = Cache::new(config(&cluster)).await.unwrap();
    let api = Api::new(&cache);
    api.read_until_hit(TENANT, RESOURCE, None, Duration::from_secs(10))
        .await;
    let runs_before = api.db.runs();
    let errors_before = cache.stats().totals.errors;

    cluster.kill_all();
    let mut outcomes = Vec::new();
    let outage = Instant::now();
    while outage.elapsed() < OPEN_FOR * 4 {
        // `read` checks every body against the database.
        let read = api.read(TENANT, RESOURCE, None).await;
        assert!(
            read.elapsed < TIMEOUT * 5,
            "a read took {:?} with the cluster down",
            read.elapsed
        );
        outcomes.push(read.x_cache().to_owned());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!outcomes.iter().any(|o| o == "HIT"), "{outcomes:?}");
    assert_eq!(
        api.db.runs() - runs_before,
        outcomes.len(),
        "every read ran the handler"
    );
    let first_bypass = outcomes
        .iter()
        .position(|o| o == "BYPASS")
        .expect("the circuit opened");
    assert!(first_bypass <= FAILURES as usize, "{outcomes:?}");
    let stats = cache.stats();
    assert_eq!(stats.circuit_opened, 1, "one outage opens the circuit once");
    assert_ne!(stats.circuit, CircuitSnapshot::Closed);
    assert!(stats.totals.errors - errors_before >= u64::from(FAILURES));

    // A mutation while down succeeds and its resource bypasses until delivered.
    assert_eq!(api.change(TENANT, RESOURCE).await, 2);
    assert_eq!(cache.stats().pending_invalidations, 1);
    assert_eq!(api.read(TENANT, RESOURCE, None).await.x_cache(), "BYPASS");

    // The nodes come back with their slot map (and no data): the client reconnects by
    // itself, delivers the pending invalidation and caches again.
    cluster.start_killed_again();
    wait_for(Duration::from_secs(30), "the cluster is ok again", || {
        cluster.state_ok()
    })
    .await;
    wait_for(
        Duration::from_secs(30),
        "the pending invalidation is delivered",
        || cache.stats().pending_invalidations == 0,
    )
    .await;
    api.read_until_hit(TENANT, RESOURCE, None, Duration::from_secs(30))
        .await;
    let stats = cache.stats();
    assert_eq!(stats.circuit, CircuitSnapshot::Closed);
    assert_eq!(stats.circuit_opened, 1);
}
