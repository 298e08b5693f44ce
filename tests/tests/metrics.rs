//! The Prometheus endpoint (issue 8): after a scripted sequence of requests through a
//! real router, `/metrics` holds the exact counter and histogram values expected, in
//! both exposition formats, and each parses under a strict checker of the format
//! (below, with its own tests). Runs against a private redis-server and the in-memory
//! backend; a Redis outage shows in the errors, the circuit gauges and its counter.

mod observe_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use cache_runtime::Cache;
use cache_tests::backends::TestBackend;
use cache_tests::both_backends;
use cache_tests::http::{get, post, send};
use http::Request;
use observe_support::{app, deterministic, wait_for};
use serde_json::json;

const OPENMETRICS_ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

async fn scrape(app: &Router, accept: Option<&str>) -> (String, String) {
    let mut request = Request::get("/metrics");
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let reply = send(app, request.body(Body::empty()).expect("request")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    (reply.header("content-type").to_owned(), reply.text())
}

/// The script: what each step does and what the client must see.
async fn run_script(app: &Router, cache: &Cache) {
    let steps: [(&str, Request<Body>, &str); 11] = [
        ("first read", get("/api/templates", Some("org_1")), "MISS"),
        ("second read", get("/api/templates", Some("org_1")), "HIT"),
        ("third read", get("/api/templates", Some("org_1")), "HIT"),
        ("no tenant", get("/api/templates", None), "BYPASS"),
        (
            "invalidating write",
            post("/api/templates", Some("org_1"), json!({"name": "promo"})),
            "",
        ),
        (
            "read after write",
            get("/api/templates", Some("org_1")),
            "MISS",
        ),
        ("read again", get("/api/templates", Some("org_1")), "HIT"),
        (
            "contacts of org_1",
            get("/api/contacts", Some("org_1")),
            "MISS",
        ),
        (
            "contacts of org_2",
            get("/api/contacts", Some("org_2")),
            "MISS",
        ),
        (
            "contacts of org_1 again",
            get("/api/contacts", Some("org_1")),
            "HIT",
        ),
        ("failing report", get("/api/reports", Some("org_1")), "MISS"),
    ];
    let mut stores = 0;
    for (what, request, expected) in steps {
        let reply = send(app, request).await;
        assert_eq!(reply.x_cache(), expected, "{what}: {}", reply.text());
        if expected == "MISS" && reply.status.is_success() {
            // With Redis the store lands off the request path: wait for it, so that
            // the next read is decided by the store and not by timing.
            stores += 1;
            wait_for(Duration::from_secs(10), "the store to land", || {
                cache.stats().totals.stores == stores
            })
            .await;
        }
    }
    // A failed mutation invalidates nothing.
    let reply = send(app, post("/api/templates", Some("org_1"), json!({}))).await;
    assert_eq!(reply.status, 400);
}

async fn exact_values_after_a_script(backend: TestBackend) {
    let cache = Cache::new(deterministic(backend.config()))
        .await
        .expect("cache");
    let app = app(&cache);
    run_script(&app, &cache).await;

    let (content_type, text) = scrape(&app, Some(OPENMETRICS_ACCEPT)).await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let metrics = parse_exposition(&text, Format::OpenMetrics)
        .unwrap_or_else(|err| panic!("invalid OpenMetrics text: {err}\n{text}"));

    // The families and their types are the documented contract (README, Observability).
    let mut expected_families: Vec<(&str, &str)> = vec![
        ("api_cache_requests", "counter"),
        ("api_cache_errors", "counter"),
        ("api_cache_invalidations", "counter"),
        ("api_cache_stores", "counter"),
        ("api_cache_not_stored", "counter"),
        ("api_cache_coalesced", "counter"),
        ("api_cache_early_refreshes", "counter"),
        ("api_cache_corrupt_values", "counter"),
        ("api_cache_local_hits", "counter"),
        ("api_cache_would_be_hits", "counter"),
        ("api_cache_would_be_misses", "counter"),
        ("api_cache_verifications", "counter"),
        ("api_cache_mismatches", "counter"),
        ("api_cache_verification_races", "counter"),
        ("api_cache_shadow_skipped", "counter"),
        ("api_cache_revalidations", "counter"),
        ("api_cache_misses_cold", "counter"),
        ("api_cache_misses_expired", "counter"),
        ("api_cache_misses_invalidated", "counter"),
        ("api_cache_ttl_seconds", "gauge"),
        ("api_cache_resource_mode", "gauge"),
        ("api_cache_resource_enabled", "gauge"),
        ("api_cache_lookup_duration_seconds", "histogram"),
        ("api_cache_handler_duration_seconds", "histogram"),
        ("api_cache_circuit_state", "gauge"),
        ("api_cache_circuit_opened", "counter"),
        ("api_cache_pending_invalidations", "gauge"),
        ("api_cache_enabled", "gauge"),
        ("api_cache_backend", "info"),
    ];
    if backend.server().is_none() {
        expected_families.push(("api_cache_memory_entries", "gauge"));
        expected_families.push(("api_cache_memory_size_bytes", "gauge"));
    }
    let families: BTreeMap<&str, &str> = metrics
        .families
        .iter()
        .map(|(name, family)| (name.as_str(), family.kind.as_str()))
        .collect();
    assert_eq!(families, expected_families.into_iter().collect());

    let expect = |name: &str, labels: &[(&str, &str)], value: f64| {
        assert_eq!(
            metrics.value(name, labels),
            Some(value),
            "{name}{labels:?}\n{text}"
        );
    };
    let requests = "api_cache_requests_total";
    for (resource, hit, miss, bypass) in [
        ("templates", 3.0, 2.0, 1.0),
        ("contacts", 1.0, 2.0, 0.0),
        ("reports", 0.0, 1.0, 0.0),
    ] {
        let r = ("resource", resource);
        expect(requests, &[r, ("outcome", "hit")], hit);
        expect(requests, &[r, ("outcome", "miss")], miss);
        expect(requests, &[r, ("outcome", "bypass")], bypass);
        expect("api_cache_errors_total", &[r], 0.0);
        expect("api_cache_coalesced_total", &[r], 0.0);
        expect("api_cache_early_refreshes_total", &[r], 0.0);
        expect("api_cache_corrupt_values_total", &[r], 0.0);
        expect("api_cache_resource_enabled", &[r], 1.0);
    }
    let templates = [("resource", "templates")];
    let contacts = [("resource", "contacts")];
    let reports = [("resource", "reports")];
    expect("api_cache_invalidations_total", &templates, 1.0);
    expect("api_cache_invalidations_total", &contacts, 0.0);
    expect("api_cache_stores_total", &templates, 2.0);
    expect("api_cache_stores_total", &contacts, 2.0);
    expect("api_cache_stores_total", &reports, 0.0);
    expect("api_cache_not_stored_total", &reports, 1.0);
    expect("api_cache_not_stored_total", &templates, 0.0);
    expect("api_cache_ttl_seconds", &templates, 1800.0);
    expect("api_cache_ttl_seconds", &contacts, 300.0);
    expect("api_cache_ttl_seconds", &reports, 60.0);
    // Lookups: hits and misses. Handler runs: misses and bypasses.
    for (labels, lookups, handler_runs) in [
        (templates, 5.0, 3.0),
        (contacts, 3.0, 2.0),
        (reports, 1.0, 1.0),
    ] {
        expect("api_cache_lookup_duration_seconds_count", &labels, lookups);
        expect(
            "api_cache_handler_duration_seconds_count",
            &labels,
            handler_runs,
        );
        let inf = [labels[0], ("le", "+Inf")];
        expect("api_cache_lookup_duration_seconds_bucket", &inf, lookups);
        expect(
            "api_cache_handler_duration_seconds_bucket",
            &inf,
            handler_runs,
        );
        assert!(
            metrics
                .value("api_cache_lookup_duration_seconds_sum", &labels)
                .is_some_and(|sum| sum > 0.0),
            "lookup time is measured"
        );
    }
    let redis = backend.server().is_some();
    let closed = if redis { 1.0 } else { 0.0 };
    expect("api_cache_circuit_state", &[("state", "closed")], closed);
    expect("api_cache_circuit_state", &[("state", "open")], 0.0);
    expect("api_cache_circuit_state", &[("state", "half_open")], 0.0);
    expect("api_cache_circuit_opened_total", &[], 0.0);
    expect("api_cache_pending_invalidations", &[], 0.0);
    expect("api_cache_enabled", &[], 1.0);
    let backend_name = if redis { "redis" } else { "memory" };
    expect("api_cache_backend_info", &[("backend", backend_name)], 1.0);
    if !redis {
        // templates of org_1 (rewritten after the invalidation), contacts of two tenants.
        expect("api_cache_memory_entries", &[], 3.0);
    }

    // The same figures in the classic text format, which is what a plain GET gets.
    let (content_type, classic) = scrape(&app, None).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let classic = parse_exposition(&classic, Format::Text004)
        .unwrap_or_else(|err| panic!("invalid Prometheus text: {err}\n{classic}"));
    assert_eq!(canonical(&classic), canonical(&metrics));
}

/// The samples with `le` bounds as numbers: OpenMetrics writes `1.0` where 0.0.4 writes `1`.
fn canonical(exposition: &Exposition) -> BTreeMap<(String, Vec<(String, String)>), String> {
    exposition
        .samples
        .iter()
        .map(|((name, labels), value)| {
            let labels = labels
                .iter()
                .map(|(k, v)| match (k.as_str(), parse_value(v)) {
                    ("le", Ok(bound)) => (k.clone(), bound.to_string()),
                    _ => (k.clone(), v.clone()),
                })
                .collect();
            ((name.clone(), labels), value.to_string())
        })
        .collect()
}

both_backends!(exact_values_after_a_script, exact_values_after_a_script);

/// Redis dies: lookups fail (errors), the circuit opens (state, counter), requests
/// bypass while it is open; it comes back and the circuit closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_shows_in_errors_and_circuit_metrics() {
    let mut backend = TestBackend::redis();
    let config = deterministic(backend.config())
        .with_response_timeout(Duration::from_millis(200))
        .with_circuit(2, Duration::from_millis(300));
    let cache = Cache::new(config).await.expect("cache");
    let app = app(&cache);
    assert_eq!(
        send(&app, get("/api/contacts", Some("org_1")))
            .await
            .x_cache(),
        "MISS"
    );
    // Let the store land before Redis goes: a failed store would count as well.
    wait_for(Duration::from_secs(10), "the store to land", || {
        cache.stats().totals.stores == 1
    })
    .await;

    let server = match &mut backend {
        TestBackend::Redis(server) => server,
        TestBackend::Memory | TestBackend::Cluster { .. } => unreachable!(),
    };
    server.kill();
    // Two failed lookups (served uncached, X-Cache: MISS) open the circuit; the third
    // request bypasses without trying.
    for expected in ["MISS", "MISS", "BYPASS"] {
        let reply = send(&app, get("/api/contacts", Some("org_1"))).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.x_cache(), expected);
    }
    let (_, text) = scrape(&app, Some(OPENMETRICS_ACCEPT)).await;
    let metrics = parse_exposition(&text, Format::OpenMetrics).expect("valid exposition");
    let contacts = [("resource", "contacts")];
    assert_eq!(
        metrics.value("api_cache_errors_total", &contacts),
        Some(2.0)
    );
    assert_eq!(
        metrics.value("api_cache_circuit_opened_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        metrics.value("api_cache_circuit_state", &[("state", "open")]),
        Some(1.0)
    );
    assert_eq!(
        metrics.value("api_cache_circuit_state", &[("state", "closed")]),
        Some(0.0)
    );
    assert_eq!(
        metrics.value(
            "api_cache_requests_total",
            &[contacts[0], ("outcome", "bypass")]
        ),
        Some(1.0)
    );

    server.start_again();
    // The next request after the open period probes Redis and closes the circuit.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        send(&app, get("/api/contacts", Some("org_1"))).await;
        let (_, text) = scrape(&app, Some(OPENMETRICS_ACCEPT)).await;
        if text.contains("api_cache_circuit_state{state=\"closed\"} 1\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the circuit did not close:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// A strict checker of the two exposition formats: the Prometheus text format 0.0.4 and
// OpenMetrics 1.0 text, as far as the exporter uses them. It rejects what a scraper
// would reject (and a little more), and returns every sample.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    OpenMetrics,
    Text004,
}

#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: bool,
}

type Labels = BTreeSet<(String, String)>;

#[derive(Debug, Default)]
struct Exposition {
    families: BTreeMap<String, Family>,
    samples: BTreeMap<(String, Labels), f64>,
}

impl Exposition {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if text
            .chars()
            .all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) =>
        {
            text.parse::<f64>()
                .map_err(|_| format!("not a number: {text:?}"))
        }
        _ => Err(format!("not a number: {text:?}")),
    }
}

/// `{a="x",b="y"}` (already without the braces) into a label set.
fn parse_labels(mut text: &str) -> Result<Labels, String> {
    let mut labels = Labels::new();
    let mut names = BTreeSet::new();
    while !text.is_empty() {
        let (name, rest) = text
            .split_once("=\"")
            .ok_or_else(|| format!("label without =\": {text:?}"))?;
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated label value in {text:?}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in {text:?}")),
                },
                Some((_, '\n')) => return Err("newline in a label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if !names.insert(name.to_owned()) {
            return Err(format!("label {name:?} twice"));
        }
        labels.insert((name.to_owned(), value));
        text = &rest[end + 1..];
        if let Some(after_comma) = text.strip_prefix(',') {
            if after_comma.is_empty() {
                return Err("trailing comma in labels".into());
            }
            text = after_comma;
        } else if !text.is_empty() {
            return Err(format!("expected , between labels: {text:?}"));
        }
    }
    Ok(labels)
}

/// HELP text escapes `\\` and `\n`; OpenMetrics also `\"`, and allows no bare `"`.
fn check_help_escapes(help: &str, format: Format) -> Result<(), String> {
    let mut chars = help.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\\' | 'n') => {}
                Some('"') if format == Format::OpenMetrics => {}
                other => return Err(format!("bad escape {other:?} in HELP")),
            },
            '"' if format == Format::OpenMetrics => {
                return Err("unescaped \" in an OpenMetrics HELP".into())
            }
            _ => {}
        }
    }
    Ok(())
}

/// The sample names a family of `kind` named `family` may hold, in `format`.
fn sample_names(format: Format, family: &str, kind: &str) -> Result<Vec<String>, String> {
    let with = |suffixes: &[&str]| suffixes.iter().map(|s| format!("{family}{s}")).collect();
    Ok(match (format, kind) {
        (Format::OpenMetrics, "counter") => with(&["_total", "_created"]),
        (Format::OpenMetrics, "info") => with(&["_info"]),
        (Format::OpenMetrics, "gauge" | "unknown") => with(&[""]),
        (Format::Text004, "counter" | "gauge" | "untyped") => with(&[""]),
        (_, "histogram") => with(&["_bucket", "_sum", "_count", "_created"]),
        _ => return Err(format!("type {kind:?} is not valid in {format:?}")),
    })
}

fn parse_exposition(text: &str, format: Format) -> Result<Exposition, String> {
    let body = text
        .strip_suffix('\n')
        .ok_or("the exposition must end with a newline")?;
    let mut lines: Vec<&str> = body.split('\n').collect();
    if format == Format::OpenMetrics && lines.pop() != Some("# EOF") {
        return Err("OpenMetrics must end with # EOF".into());
    }
    let mut exposition = Exposition::default();
    let mut current: Option<String> = None;
    let mut allowed: Vec<String> = Vec::new();
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut histograms: BTreeMap<(String, Labels), Vec<(f64, f64)>> = BTreeMap::new();

    for (number, line) in lines.iter().enumerate() {
        let at = |msg: String| format!("line {}: {msg}: {line:?}", number + 1);
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let keyword = parts.next().unwrap_or_default();
            let name = parts
                .next()
                .ok_or_else(|| at("metadata without a name".into()))?;
            let rest = parts.next().unwrap_or_default();
            if !is_metric_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            if current.as_deref() != Some(name) {
                if let Some(previous) = current.take() {
                    closed.insert(previous);
                }
                if closed.contains(name) || exposition.families.contains_key(name) {
                    return Err(at(format!("family {name:?} described twice")));
                }
                current = Some(name.to_owned());
                exposition
                    .families
                    .insert(name.to_owned(), Family::default());
                allowed.clear();
            }
            let family = exposition
                .families
                .get_mut(name)
                .ok_or_else(|| at("no family".into()))?;
            match keyword {
                "HELP" => {
                    if family.help || !family.kind.is_empty() && format == Format::OpenMetrics {
                        return Err(at("HELP twice or after TYPE".into()));
                    }
                    if rest.is_empty() {
                        return Err(at("empty HELP".into()));
                    }
                    check_help_escapes(rest, format).map_err(&at)?;
                    family.help = true;
                }
                "TYPE" => {
                    if !family.kind.is_empty() {
                        return Err(at("TYPE twice".into()));
                    }
                    allowed = sample_names(format, name, rest).map_err(&at)?;
                    family.kind = rest.to_owned();
                }
                "UNIT" if format == Format::OpenMetrics => {
                    if rest.is_empty() || !name.ends_with(&format!("_{rest}")) {
                        return Err(at("the family name must end with its unit".into()));
                    }
                }
                _ => return Err(at(format!("unexpected comment {keyword:?}"))),
            }
            continue;
        }
        // A sample.
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| at("sample without a value".into()))?;
        let value = parse_value(value).map_err(&at)?;
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .ok_or_else(|| at("unclosed labels".into()))?;
                (name, parse_labels(labels).map_err(&at)?)
            }
            None => (series, Labels::new()),
        };
        if !is_metric_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let family_name = current
            .clone()
            .ok_or_else(|| at("sample before any TYPE".into()))?;
        if !allowed.iter().any(|n| n == name) {
            return Err(at(format!(
                "sample {name:?} outside its family {family_name:?}"
            )));
        }
        let kind = exposition.families[&family_name].kind.clone();
        if matches!(kind.as_str(), "counter" | "histogram") && (value.is_nan() || value < 0.0) {
            return Err(at("negative or NaN counter".into()));
        }
        if name.ends_with("_bucket") && kind == "histogram" {
            let le = labels
                .iter()
                .find(|(k, _)| k == "le")
                .ok_or_else(|| at("bucket without le".into()))?;
            let bound = parse_value(&le.1).map_err(&at)?;
            let mut group = labels.clone();
            group.retain(|(k, _)| k != "le");
            histograms
                .entry((family_name.clone(), group))
                .or_default()
                .push((bound, value));
        }
        if exposition
            .samples
            .insert((name.to_owned(), labels), value)
            .is_some()
        {
            return Err(at("the same series twice".into()));
        }
    }

    for ((family, labels), buckets) in histograms {
        let what = format!("histogram {family}{labels:?}");
        if buckets
            .windows(2)
            .any(|w| w[0].0.partial_cmp(&w[1].0) != Some(std::cmp::Ordering::Less))
        {
            return Err(format!("{what}: bucket bounds not ascending"));
        }
        if buckets.windows(2).any(|w| w[0].1 > w[1].1) {
            return Err(format!("{what}: buckets not cumulative"));
        }
        let last = buckets.last().ok_or(format!("{what}: no bucket"))?;
        if last.0 != f64::INFINITY {
            return Err(format!("{what}: no +Inf bucket"));
        }
        let count = exposition
            .samples
            .get(&(format!("{family}_count"), labels.clone()))
            .ok_or(format!("{what}: no _count"))?;
        if *count != last.1 {
            return Err(format!("{what}: +Inf bucket {} != count {count}", last.1));
        }
        if !exposition
            .samples
            .contains_key(&(format!("{family}_sum"), labels.clone()))
        {
            return Err(format!("{what}: no _sum"));
        }
    }
    for (name, family) in &exposition.families {
        if family.kind.is_empty() || !family.help {
            return Err(format!("family {name} lacks TYPE or HELP"));
        }
    }
    Ok(exposition)
}

/// The checker accepts a well-formed exposition and rejects each kind of defect, so the
/// test above cannot pass on an exposition a scraper would refuse.
#[test]
fn the_checker_rejects_malformed_expositions() {
    let good = "# HELP a_seconds Help.\n# TYPE a_seconds histogram\n# UNIT a_seconds seconds\n\
                a_seconds_sum{r=\"x\"} 0.5\na_seconds_count{r=\"x\"} 2\n\
                a_seconds_bucket{r=\"x\",le=\"0.1\"} 1\na_seconds_bucket{r=\"x\",le=\"+Inf\"} 2\n\
                # HELP b Help.\n# TYPE b counter\nb_total{q=\"a\\\"b\\\\c\"} 3\n# EOF\n";
    let parsed = parse_exposition(good, Format::OpenMetrics).expect("well-formed");
    assert_eq!(parsed.value("b_total", &[("q", "a\"b\\c")]), Some(3.0));
    let bad = [
        ("no EOF", good.replace("# EOF\n", "")),
        ("no final newline", good.trim_end().to_owned()),
        (
            "not cumulative",
            good.replace("le=\"+Inf\"} 2", "le=\"+Inf\"} 0"),
        ),
        (
            "count mismatch",
            good.replace("_count{r=\"x\"} 2", "_count{r=\"x\"} 3"),
        ),
        ("bad label", good.replace("{q=", "{9q=")),
        ("bad escape", good.replace("\\\"b", "\\tb")),
        ("unquoted value", good.replace("\"a\\\"b\\\\c\"", "abc")),
        ("outside family", good.replace("b_total{", "c_total{")),
        ("counter without _total", good.replace("b_total{", "b{")),
        (
            "unit not in name",
            good.replace("UNIT a_seconds seconds", "UNIT a_seconds bytes"),
        ),
        (
            "duplicate series",
            good.replace("# EOF", "b_total{q=\"a\\\"b\\\\c\"} 4\n# EOF"),
        ),
        ("not a number", good.replace("} 3\n", "} three\n")),
        ("negative counter", good.replace("} 3\n", "} -3\n")),
        ("unknown comment", good.replace("# HELP b", "# NOTE b")),
        (
            "quote in HELP",
            good.replace("# HELP b Help.", "# HELP b The \"b\"."),
        ),
        (
            "family twice",
            good.replace("# EOF", "# TYPE a_seconds histogram\n# EOF"),
        ),
    ];
    for (what, text) in bad {
        assert_ne!(text, good, "{what}: the mutation did not apply");
        assert!(
            parse_exposition(&text, Format::OpenMetrics).is_err(),
            "{what} was accepted:\n{text}"
        );
    }
    assert!(
        parse_exposition(good, Format::Text004).is_err(),
        "UNIT and EOF are not 0.0.4"
    );
}
