//! Memory of the in-memory backend per stored entry at 100,000 entries (BENCHMARKS.md §7).
//!
//! Each case runs in a fresh child process (this program re-executed with `--case`), so
//! one case's freed-but-retained heap never flatters the next. The child measures its
//! resident set (VmRSS) before and after storing 100,000 distinct responses, each with
//! its own body allocation as a handler's response would have, through the public API
//! (lookup, then store). It also prints the backend's own weighed size, which is what
//! `API_CACHE_MEMORY_MAX_BYTES` bounds, so the two can be compared.

mod support;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use cache_runtime::testing::Tenant;
use cache_runtime::testing::{CachedResponse, Lookup};
use cache_runtime::{Cache, CacheConfig};
use futures_util::FutureExt;

const ENTRIES: usize = 100_000;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// The child: stores `ENTRIES` responses of `body_len` bytes and prints one line.
fn run_case(body_len: usize) {
    let template = support::json_body(body_len.max(64));
    let template = template.slice(..body_len);
    let config = CacheConfig::default().with_memory_max_bytes(8 * 1024 * 1024 * 1024);
    let cache = Cache::new(config).now_or_never().unwrap().unwrap();
    // Build one key and store one entry first, so that lazily created statics, the
    // generation keys and the stats maps are not counted per entry.
    let store = |i: usize| {
        let key = cache
            .key(Tenant::Scoped("org_1"), "templates")
            .unwrap()
            .request("GET", "/api/templates", Some(&format!("page={i}")))
            .build();
        let Some(Lookup::Miss(ticket)) = cache.lookup(&key).now_or_never() else {
            panic!("expected an immediate miss");
        };
        let response = CachedResponse {
            status: http::StatusCode::OK,
            headers: vec![(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            )],
            body: Bytes::copy_from_slice(&template),
        };
        let stored = cache
            .store(ticket, response, Duration::from_secs(3600))
            .now_or_never()
            .unwrap()
            .unwrap();
        assert!(stored);
    };
    store(usize::MAX);
    let before = rss_bytes();
    for i in 0..ENTRIES {
        store(i);
    }
    let count = cache.memory_entry_count().unwrap();
    let weighed = cache.memory_weighted_size().unwrap();
    let after = rss_bytes();
    assert_eq!(count as usize, ENTRIES + 1, "nothing may be evicted");
    println!(
        "case body={body_len} entries={ENTRIES} rss_delta={} weighed={}",
        after - before,
        weighed
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        run_case(args[i + 1].parse().unwrap());
        return;
    }
    support::banner("memory");
    println!("\n== §7 in-memory backend, resident memory per stored entry at {ENTRIES} entries");
    for body_len in [2048usize, 256] {
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--case", &body_len.to_string()])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text.lines().find(|l| l.starts_with("case ")).unwrap();
        let field = |name: &str| -> u64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name))
                .unwrap()
                .parse()
                .unwrap()
        };
        let rss = field("rss_delta=") as f64 / ENTRIES as f64;
        let weighed = field("weighed=") as f64 / ENTRIES as f64;
        support::row(
            &format!("{body_len} B body + content-type"),
            &[
                ("rss_per_entry_B", format!("{rss:.0}")),
                ("over_body_B", format!("{:.0}", rss - body_len as f64)),
                ("weighed_per_entry_B", format!("{weighed:.0}")),
                ("rss/weighed", format!("{:.2}", rss / weighed)),
            ],
        );
    }
    println!("  load average at the end: {}", support::load_average());
}
