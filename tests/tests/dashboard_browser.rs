//! The dashboard in a real browser (issue 8): an axum server on a free port with the
//! observability routes mounted as an app mounts them, headless Chromium showing
//! `/cache/dashboard`, requests driven over HTTP, and the page's displayed hit rates
//! and counts changing to the expected values by themselves (no reload). Leaves a
//! screenshot at `target/test-output/dashboard.png`.
//!
//! Needs Debian's `chromium` (see `chromium/mod.rs`) and `redis-server`.

mod chromium;
mod observe_support;

use std::path::PathBuf;
use std::time::Duration;

use cache_runtime::Cache;
use cache_tests::backends::TestBackend;
use chromium::{Browser, Page};
use observe_support::{app, deterministic};
use serde_json::{json, Value};

/// What the page shows, read from the DOM as a person reads it.
const DISPLAYED: &str = r#"(() => {
  const text = (id) => document.getElementById(id).textContent.trim();
  const row = (resource) => {
    const tr = document.querySelector(`tr[data-resource="${resource}"]`);
    if (!tr) return null;
    const cell = (field) => tr.querySelector(`[data-field="${field}"]`).textContent.trim();
    const fields = ["ttl", "hit_rate", "requests", "hits", "misses", "bypasses", "errors", "invalidations"];
    return Object.fromEntries(fields.map((f) => [f, cell(f)]));
  };
  return {
    status: document.getElementById("status").className,
    hit_rate: text("total-hit-rate"),
    requests: text("total-requests"),
    hits: text("total-hits"),
    misses: text("total-misses"),
    bypasses: text("total-bypasses"),
    errors: text("total-errors"),
    invalidations: text("total-invalidations"),
    circuit: text("circuit"),
    no_resources_shown: getComputedStyle(document.getElementById("no-resources")).display !== "none",
    templates: row("templates"),
    contacts: row("contacts"),
  };
})()"#;

/// Whether every field of `expected` has that value in `actual` (recursively).
fn shows(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => expected
            .iter()
            .all(|(k, v)| actual.get(k).is_some_and(|a| shows(a, v))),
        _ => actual == expected,
    }
}

/// Waits until the page, refreshing by itself, shows `expected`.
async fn wait_for_display(browser: &mut Browser, page: &Page, expected: Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let displayed = browser.evaluate(page, DISPLAYED).await;
        if shows(&displayed, &expected) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dashboard did not come to show\n{expected:#}\nit shows\n{displayed:#}\n\
             Chromium's stderr:\n{}",
            browser.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn get(&self, path: &str, tenant: Option<&str>) -> String {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(tenant) = tenant {
            request = request.header("x-tenant", tenant);
        }
        let response = request.send().await.expect("GET");
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }

    async fn create_template(&self, tenant: &str) {
        let response = self
            .http
            .post(format!("{}/api/templates", self.base))
            .header("x-tenant", tenant)
            .json(&json!({ "name": "promo" }))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 201);
    }
}

fn screenshot_path() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|target| target.join("test-output"))
        .unwrap_or_else(|| PathBuf::from("test-output"))
        .join("dashboard.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_hit_rates_and_counts() {
    let backend = TestBackend::redis();
    let cache = Cache::new(deterministic(backend.config()))
        .await
        .expect("cache");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let app = app(&cache);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client {
        http: reqwest::Client::new(),
        base: base.clone(),
    };

    let mut browser = Browser::launch().await;
    let page = browser
        .open(&format!("{base}/cache/dashboard"), 1280, 900)
        .await;
    // Marks this document: if the page reloaded, the mark would be gone.
    browser.evaluate(&page, "window.__testMark = 42").await;
    wait_for_display(
        &mut browser,
        &page,
        json!({
            "status": "live", "requests": "0", "hit_rate": "—", "circuit": "circuit closed",
            "no_resources_shown": true, "templates": null,
        }),
    )
    .await;

    // Traffic spread over three seconds, so the chart has a few samples to draw (the
    // pauses pace the traffic; no assertion depends on them).
    for i in 0..30u32 {
        let expected = if i == 0 { "MISS" } else { "HIT" };
        assert_eq!(client.get("/api/templates", Some("org_1")).await, expected);
        if i.is_multiple_of(3) {
            let tenant = if i.is_multiple_of(2) {
                "org_1"
            } else {
                "org_2"
            };
            let expected = if i < 6 { "MISS" } else { "HIT" };
            assert_eq!(client.get("/api/contacts", Some(tenant)).await, expected);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 37 hits of 40 lookups; templates 29 of 30, contacts 8 of 10.
    wait_for_display(
        &mut browser,
        &page,
        json!({
            "status": "live", "hit_rate": "92.5%", "requests": "40", "hits": "37",
            "misses": "3", "bypasses": "0", "errors": "0", "no_resources_shown": false,
            "templates": {
                "ttl": "30 min", "hit_rate": "96.7%", "requests": "30", "hits": "29",
                "misses": "1", "bypasses": "0", "errors": "0", "invalidations": "0",
            },
            "contacts": {
                "ttl": "5 min", "hit_rate": "80.0%", "requests": "10", "hits": "8",
                "misses": "2",
            },
        }),
    )
    .await;

    // A write invalidates templates: the next read misses, then hits again; a request
    // without a tenant bypasses.
    client.create_template("org_1").await;
    assert_eq!(client.get("/api/templates", Some("org_1")).await, "MISS");
    assert_eq!(client.get("/api/templates", Some("org_1")).await, "HIT");
    assert_eq!(client.get("/api/templates", Some("org_1")).await, "HIT");
    assert_eq!(client.get("/api/templates", None).await, "BYPASS");
    // 39 hits of 43 lookups; templates 31 of 33.
    wait_for_display(
        &mut browser,
        &page,
        json!({
            "hit_rate": "90.7%", "requests": "44", "hits": "39", "misses": "4",
            "bypasses": "1", "invalidations": "1",
            "templates": {
                "hit_rate": "93.9%", "requests": "34", "hits": "31", "misses": "2",
                "bypasses": "1", "invalidations": "1",
            },
            "contacts": { "hit_rate": "80.0%", "requests": "10" },
        }),
    )
    .await;
    assert_eq!(
        browser.evaluate(&page, "window.__testMark").await,
        json!(42),
        "the figures changed without a reload"
    );
    // The chart keeps a history: several samples, and a request rate shown.
    let samples = browser
        .evaluate(&page, "Number(document.body.dataset.samples)")
        .await;
    assert!(
        samples.as_u64().is_some_and(|n| n >= 3),
        "samples: {samples}"
    );
    let rate = browser
        .evaluate(&page, "document.getElementById('request-rate').textContent")
        .await;
    assert!(
        rate.as_str().is_some_and(|r| r.ends_with("/s")),
        "rate: {rate}"
    );

    let path = screenshot_path();
    let png = browser.screenshot(&page, &path).await;
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "a real PNG"
    );
    eprintln!("screenshot: {}", path.display());

    browser.close().await;
    server.abort();
}
