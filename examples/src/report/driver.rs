//! Runs one phase of the report: virtual users send the workload to a demo over HTTP for
//! a fixed time, every response is timed and checked, and progress is printed.
//!
//! With several demo instances, each request goes to one of them at random, as a load
//! balancer without affinity would send it: a write and the read that verifies it usually
//! land on different instances, and the browser cache stays the user's, not the
//! instance's.
//!
//! Each virtual user reads through a browser cache of its own per token
//! ([`BrowserCache`]): a fresh stored copy is shown without a request, a stale one is
//! revalidated, and a 304 shows the stored body. The checks judge the body the user is
//! shown, wherever it came from, so a browser lifetime that hides a write is caught.
//!
//! Checks on every body shown: a JSON body of tenant data whose `organization_id` (at any
//! depth) is not the caller's is a cross-tenant response; a profile whose user is not the
//! caller is a cross-user response; a verifying read that does not show the caller's own
//! write is a read-your-writes violation. On a route that declares a staleness bound
//! (`stale_after_invalidation`, learned from the program's registry) the write must show
//! within that bound instead: a verifying read that does not show it starts a probe that
//! reads again until it does, and a read sent after the bound that still does not show
//! it is the violation. Each probe records how long the write took to show. Probe reads
//! are checks, not workload: they are not in the samples or the figures.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;

use crate::report::browser::{BrowserCache, BrowserOutcome, Lookup, Shown};
use crate::report::workload::{Expectation, Method, Purpose, Request, Route, VirtualUser};
use crate::seed::OrgSummary;

/// What a response said about the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheOutcome {
    /// `X-Cache: HIT`
    Hit,
    /// `X-Cache: MISS`
    Miss,
    /// `X-Cache: BYPASS`
    Bypass,
    /// `X-Cache: STALE`: an entry no longer fresh, as the route allows, served while it
    /// is recomputed.
    Stale,
    /// No `X-Cache` header (writes, errors).
    None,
}

/// One request's record.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Milliseconds since the phase started, at send.
    pub at_ms: u32,
    /// Route.
    pub route: Route,
    /// Method.
    pub method: Method,
    /// Why it was sent.
    pub purpose: Purpose,
    /// HTTP status; 0 for a transport error. A 304 stays a 304 here (the status the
    /// server sent); a fresh browser copy has its stored status.
    pub status: u16,
    /// Send to last body byte, microseconds; for a fresh browser copy, the time the
    /// browser took to find it.
    pub latency_us: u32,
    /// `X-Cache` (`None` for a fresh browser copy: the server was not asked).
    pub cache: CacheOutcome,
    /// Where the body shown came from.
    pub browser: BrowserOutcome,
    /// Body bytes received from the server.
    pub body_bytes: u32,
    /// Body bytes shown from the browser's cache (a 304 or a fresh copy).
    pub saved_bytes: u32,
    /// Index of the demo instance the request was sent to (`None`: a fresh browser copy,
    /// nothing was sent).
    pub instance: Option<u16>,
}

/// A failed correctness check.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// `read_your_writes`, `cross_tenant`, `cross_user`, or `unusable_304` (a 304 that
    /// does not validate the browser's stored copy).
    pub kind: &'static str,
    /// The request.
    pub request: String,
    /// The caller's token.
    pub token: String,
    /// What was wrong.
    pub detail: String,
    /// `X-Cache` of the response (`None` for a fresh browser copy).
    pub cache: CacheOutcome,
    /// Where the body shown came from.
    pub browser: BrowserOutcome,
    /// Age of the browser's copy, seconds (a 304 or a fresh copy).
    pub browser_age_secs: Option<u64>,
    /// Index of the demo instance that answered (`None`: the browser's fresh copy).
    pub instance: Option<u16>,
}

/// Counts of checks made.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CheckCounts {
    /// Verifying reads checked for read-your-writes.
    pub read_your_writes: u64,
    /// JSON bodies checked for a foreign `organization_id`.
    pub tenant: u64,
    /// Profiles checked for a foreign user.
    pub profile: u64,
}

/// How long one write took to show on a route with a declared staleness bound.
#[derive(Debug, Clone, Serialize)]
pub struct BoundedCheck {
    /// The route read.
    pub route: Route,
    /// Its declared bound, seconds.
    pub bound_secs: u64,
    /// From the write's response to the first response showing it, ms (0: the
    /// verifying read showed it); `None` when it did not show before the probe gave up.
    pub shown_after_ms: Option<u64>,
}

/// Everything one phase measured.
pub struct PhaseRun {
    /// Wall time from the first request to the last response.
    pub elapsed: Duration,
    /// Every request.
    pub samples: Vec<Sample>,
    /// Failed checks.
    pub violations: Vec<Violation>,
    /// Checks made.
    pub checks: CheckCounts,
    /// First few unexpected responses (non-2xx or transport errors), for the log.
    pub unexpected: Vec<String>,
    /// The read-after-write checks of routes with a declared staleness bound.
    pub bounded: Vec<BoundedCheck>,
}

/// How to drive a phase.
#[derive(Debug, Clone)]
pub struct DriveConfig {
    /// Base URL of each demo instance (at least one); every request goes to one of
    /// them at random.
    pub urls: Vec<String>,
    /// Concurrent virtual users.
    pub users: usize,
    /// Mean think time between a user's requests.
    pub think: Duration,
    /// Share of requests that are writes.
    pub write_share: f64,
    /// Time before measuring starts (the workload runs; figures ignore it).
    pub warmup: Duration,
    /// Measured length, after the warm-up.
    pub duration: Duration,
    /// Random seed (the same in every phase, so both replay the same intentions).
    pub seed: u64,
    /// Label for progress lines.
    pub label: String,
    /// Print progress.
    pub progress: bool,
    /// The staleness bound each route declares (`stale_after_invalidation`); routes
    /// absent are strict.
    pub bounds: BTreeMap<Route, Duration>,
}

struct Shared {
    client: reqwest::Client,
    config: DriveConfig,
    orgs: Vec<OrgSummary>,
    started: Instant,
    deadline: Instant,
    requests: AtomicU64,
    latency_us: AtomicU64,
    hits: AtomicU64,
    lookups: AtomicU64,
    not_modified: AtomicU64,
    browser_hits: AtomicU64,
}

struct UserResult {
    samples: Vec<Sample>,
    violations: Vec<Violation>,
    checks: CheckCounts,
    unexpected: Vec<String>,
    /// Bounded checks: settled at once, or probes still reading.
    bounded: Vec<BoundedCheck>,
    probes: Vec<tokio::task::JoinHandle<(BoundedCheck, Option<Violation>)>>,
}

/// Runs the workload against `config.urls` for `config.duration`.
pub async fn drive(
    client: reqwest::Client,
    config: DriveConfig,
    orgs: Vec<OrgSummary>,
    max_seeded_contact: i64,
) -> PhaseRun {
    let started = Instant::now();
    let shared = Arc::new(Shared {
        client,
        deadline: started + config.warmup + config.duration,
        config,
        orgs,
        started,
        requests: AtomicU64::new(0),
        latency_us: AtomicU64::new(0),
        hits: AtomicU64::new(0),
        lookups: AtomicU64::new(0),
        not_modified: AtomicU64::new(0),
        browser_hits: AtomicU64::new(0),
    });
    let progress = tokio::spawn(progress_loop(Arc::clone(&shared)));
    let mut tasks = Vec::with_capacity(shared.config.users);
    for index in 0..shared.config.users {
        let rng = StdRng::seed_from_u64(
            shared
                .config
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(index as u64),
        );
        let user = VirtualUser::new(index, rng, max_seeded_contact);
        // The instance draws have a generator of their own, so the workload's choices
        // (the user's generator) are the same whatever the number of instances.
        let balancer = StdRng::seed_from_u64(
            shared
                .config
                .seed
                .wrapping_mul(0xD1B5_4A32_D192_ED03)
                .wrapping_add(index as u64),
        );
        tasks.push(tokio::spawn(user_loop(Arc::clone(&shared), user, balancer)));
    }
    let mut run = PhaseRun {
        elapsed: Duration::ZERO,
        samples: Vec::new(),
        violations: Vec::new(),
        checks: CheckCounts::default(),
        unexpected: Vec::new(),
        bounded: Vec::new(),
    };
    let mut probes = Vec::new();
    for task in tasks {
        match task.await {
            Ok(result) => {
                run.bounded.extend(result.bounded);
                probes.extend(result.probes);
                run.samples.extend(result.samples);
                run.violations.extend(result.violations);
                run.checks.read_your_writes += result.checks.read_your_writes;
                run.checks.tenant += result.checks.tenant;
                run.checks.profile += result.checks.profile;
                run.unexpected.extend(result.unexpected);
            }
            Err(err) => run
                .unexpected
                .push(format!("virtual user task failed: {err}")),
        }
    }
    // The phase ends with the last workload response; probes still reading after it are
    // awaited, outside the measured time.
    run.elapsed = started.elapsed();
    for probe in probes {
        match probe.await {
            Ok((check, violation)) => {
                run.bounded.push(check);
                run.violations.extend(violation);
            }
            Err(err) => run.unexpected.push(format!("probe task failed: {err}")),
        }
    }
    progress.abort();
    if shared.config.progress {
        print_progress(&shared, true);
    }
    run.samples.sort_by_key(|s| s.at_ms);
    run
}

async fn user_loop(shared: Arc<Shared>, mut user: VirtualUser, mut balancer: StdRng) -> UserResult {
    let mut result = UserResult {
        samples: Vec::new(),
        violations: Vec::new(),
        checks: CheckCounts::default(),
        unexpected: Vec::new(),
        bounded: Vec::new(),
        probes: Vec::new(),
    };
    // One browser cache per token: a person's browser, kept when the virtual user comes
    // back to the same user in a later session, never shared with another user.
    let mut browsers: HashMap<String, BrowserCache> = HashMap::new();
    // Arrivals follow a schedule (one think time after the previous arrival, not after
    // the previous response), so a slower server gets the same offered load: a user that
    // fell behind sends at once until it has caught up.
    let mean = shared.config.think.as_secs_f64();
    let mut next_at = Instant::now() + Duration::from_secs_f64(user.rng().random::<f64>() * mean);
    loop {
        if next_at >= shared.deadline {
            break;
        }
        tokio::time::sleep_until(next_at.into()).await;
        if Instant::now() >= shared.deadline {
            // Arrivals a saturated server could not take in time are not sent late.
            break;
        }
        next_at += think(&mut user, mean);
        let request = user.next_request(&shared.orgs, shared.config.write_share);
        let browser = browsers
            .entry(user.token.clone())
            .or_insert_with(|| BrowserCache::new(&user.token));
        let instance = pick_instance(&mut balancer, shared.config.urls.len());
        let Some(body) = send(
            &shared,
            &user,
            browser,
            &request,
            None,
            instance,
            &mut result,
        )
        .await
        else {
            continue;
        };
        if let Some((verify, expectation)) = user.after_success(&request, &body) {
            let written_at = Instant::now();
            // Drawn again: the verifying read goes wherever the balancer sends it.
            let instance = pick_instance(&mut balancer, shared.config.urls.len());
            let bound = shared.config.bounds.get(&verify.route).copied();
            let verified = send(
                &shared,
                &user,
                browser,
                &verify,
                Some(&(expectation.clone(), bound, written_at)),
                instance,
                &mut result,
            )
            .await;
            if let Some(body) = verified {
                user.after_success(&verify, &body);
            }
        }
    }
    result
}

fn pick_instance(balancer: &mut StdRng, instances: usize) -> usize {
    if instances <= 1 {
        0
    } else {
        balancer.random_range(0..instances)
    }
}

/// An exponentially distributed think time (arrivals of a Poisson process per user).
fn think(user: &mut VirtualUser, mean_secs: f64) -> Duration {
    use rand_distr::{Distribution, Exp};
    match Exp::new(1.0 / mean_secs) {
        Ok(exp) => Duration::from_secs_f64(exp.sample(user.rng())),
        // A zero mean (or a nonsensical one): no thinking.
        Err(_) => Duration::ZERO,
    }
}

/// Sends one request through the user's browser cache, records it, and checks the body
/// shown; returns that body as JSON when it is a 2xx.
async fn send(
    shared: &Arc<Shared>,
    user: &VirtualUser,
    browser: &mut BrowserCache,
    request: &Request,
    expectation: Option<&Verification>,
    instance: usize,
    result: &mut UserResult,
) -> Option<Value> {
    let at_ms = shared.started.elapsed().as_millis() as u32;
    let sent = Instant::now();
    let is_get = request.method == Method::Get;
    let conditional = if is_get {
        match browser.before_get(&request.path, SystemTime::now()) {
            Lookup::Fresh(shown) => {
                // What a browser does with a fresh copy: shows it, asks nobody.
                let latency_us = elapsed_us(sent);
                shared.browser_hits.fetch_add(1, Ordering::Relaxed);
                result.samples.push(Sample {
                    at_ms,
                    route: request.route,
                    method: request.method,
                    purpose: request.purpose,
                    status: shown.status.as_u16(),
                    latency_us,
                    cache: CacheOutcome::None,
                    browser: shown.outcome,
                    body_bytes: 0,
                    saved_bytes: saturating_u32(shown.saved_bytes),
                    instance: None,
                });
                return check_shown(
                    shared,
                    user,
                    request,
                    expectation,
                    &shown,
                    (CacheOutcome::None, None),
                    result,
                );
            }
            Lookup::Send(conditional) => conditional,
        }
    } else {
        http::HeaderMap::new()
    };
    let base = shared
        .config
        .urls
        .get(instance)
        .map(String::as_str)
        .unwrap_or_default();
    let url = format!("{base}{}", request.path);
    let builder = match request.method {
        Method::Get => shared.client.get(&url),
        Method::Post => shared.client.post(&url),
        Method::Put => shared.client.put(&url),
        Method::Delete => shared.client.delete(&url),
    };
    let builder = builder.bearer_auth(&user.token).headers(conditional);
    let builder = match &request.body {
        Some(body) if !body.is_null() => builder.json(body),
        _ => builder,
    };
    let outcome = match builder.send().await {
        Ok(response) => {
            let status = response.status();
            let headers = response.headers().clone();
            response.bytes().await.map(|bytes| (status, headers, bytes))
        }
        Err(err) => Err(err),
    };
    let latency_us = elapsed_us(sent);
    let sent_to = Some(u16::try_from(instance).unwrap_or(u16::MAX));
    let sample =
        |status: u16, cache: CacheOutcome, shown: Option<&Shown>, body_bytes: usize| Sample {
            at_ms,
            route: request.route,
            method: request.method,
            purpose: request.purpose,
            status,
            latency_us,
            cache,
            browser: shown.map_or(BrowserOutcome::Network, |s| s.outcome),
            body_bytes: saturating_u32(body_bytes),
            saved_bytes: shown.map_or(0, |s| saturating_u32(s.saved_bytes)),
            instance: sent_to,
        };
    let (status, headers, bytes) = match outcome {
        Ok(parts) => parts,
        Err(err) => {
            result.samples.push(sample(0, CacheOutcome::None, None, 0));
            if result.unexpected.len() < 5 {
                result
                    .unexpected
                    .push(format!("{}: {err}", describe(request)));
            }
            return None;
        }
    };
    let cache = match headers.get("x-cache").and_then(|v| v.to_str().ok()) {
        Some("HIT") => CacheOutcome::Hit,
        Some("MISS") => CacheOutcome::Miss,
        Some("BYPASS") => CacheOutcome::Bypass,
        Some("STALE") => CacheOutcome::Stale,
        _ => CacheOutcome::None,
    };
    shared.requests.fetch_add(1, Ordering::Relaxed);
    shared
        .latency_us
        .fetch_add(u64::from(latency_us), Ordering::Relaxed);
    if cache != CacheOutcome::None {
        shared.lookups.fetch_add(1, Ordering::Relaxed);
        if cache == CacheOutcome::Hit {
            shared.hits.fetch_add(1, Ordering::Relaxed);
        }
    }
    let body_bytes = bytes.len();
    let shown = if is_get {
        match browser.after_get(&request.path, status, &headers, bytes, SystemTime::now()) {
            Ok(shown) => shown,
            Err(err) => {
                // A browser shows its stored copy on any 304 to a conditional request, so
                // a 304 that does not validate what was stored is a server fault that
                // can show a user stale data: it fails the report like a stale body.
                result
                    .samples
                    .push(sample(status.as_u16(), cache, None, body_bytes));
                result.violations.push(Violation {
                    kind: "unusable_304",
                    request: describe(request),
                    token: user.token.clone(),
                    detail: err.to_string(),
                    cache,
                    browser: BrowserOutcome::NotModified,
                    browser_age_secs: None,
                    instance: sent_to,
                });
                return None;
            }
        }
    } else {
        browser.after_unsafe(&request.path, status);
        Shown {
            status,
            body: bytes,
            outcome: BrowserOutcome::Network,
            saved_bytes: 0,
            age: None,
        }
    };
    if shown.outcome == BrowserOutcome::NotModified {
        shared.not_modified.fetch_add(1, Ordering::Relaxed);
    }
    result
        .samples
        .push(sample(status.as_u16(), cache, Some(&shown), body_bytes));
    check_shown(
        shared,
        user,
        request,
        expectation,
        &shown,
        (cache, sent_to),
        result,
    )
}

/// What a verifying read must show, the route's declared staleness bound (`None`:
/// strict), and when the write it verifies returned.
type Verification = (Expectation, Option<Duration>, Instant);

fn describe(request: &Request) -> String {
    format!(
        "{} {}",
        format!("{:?}", request.method).to_uppercase(),
        request.path
    )
}

fn elapsed_us(since: Instant) -> u32 {
    since.elapsed().as_micros().min(u128::from(u32::MAX)) as u32
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Runs the checks on the body the user is shown; returns it as JSON when it is a 2xx.
fn check_shown(
    shared: &Arc<Shared>,
    user: &VirtualUser,
    request: &Request,
    expectation: Option<&Verification>,
    shown: &Shown,
    (cache, instance): (CacheOutcome, Option<u16>),
    result: &mut UserResult,
) -> Option<Value> {
    let status = shown.status.as_u16();
    let body: Value = serde_json::from_slice(&shown.body).unwrap_or(Value::Null);
    if !shown.status.is_success() {
        if result.unexpected.len() < 5 {
            result.unexpected.push(format!(
                "{} as {}: {status} {body}",
                describe(request),
                user.token
            ));
        }
        return None;
    }
    let mut violation = |kind: &'static str, detail: String| {
        result.violations.push(Violation {
            kind,
            request: describe(request),
            token: user.token.clone(),
            detail,
            cache,
            browser: shown.outcome,
            browser_age_secs: shown.age.map(|age| age.as_secs()),
            instance,
        });
    };
    result.checks.tenant += 1;
    if let Some(foreign) = foreign_organization(&body, user.org) {
        violation(
            "cross_tenant",
            format!(
                "organization_id {foreign} in a response to organization {}",
                user.org
            ),
        );
    }
    if request.route == Route::Profiles && request.method == Method::Get {
        result.checks.profile += 1;
        let seen = body.pointer("/user/id").and_then(Value::as_i64);
        if seen != Some(user.user_id) {
            violation(
                "cross_user",
                format!("profile of user {seen:?} served to user {}", user.user_id),
            );
        }
    }
    if let Some((expectation, bound, written_at)) = expectation {
        result.checks.read_your_writes += 1;
        let shown = expectation.check(&body);
        match (shown, bound) {
            (Ok(()), None) => {}
            (Err(detail), None) => violation("read_your_writes", detail),
            (Ok(()), Some(bound)) => result.bounded.push(BoundedCheck {
                route: request.route,
                bound_secs: bound.as_secs(),
                shown_after_ms: Some(0),
            }),
            (Err(_), Some(bound)) => result.probes.push(tokio::spawn(probe(
                Arc::clone(shared),
                user.token.clone(),
                request.clone(),
                expectation.clone(),
                *bound,
                *written_at,
            ))),
        }
    }
    Some(body)
}

/// Reads `request` again until its body shows the write (`expectation`) or a read sent
/// past `bound` after the write still does not, which is the violation. Reads go to the
/// instances in turn, about twenty per bound (between 0.1 s and 1 s apart).
async fn probe(
    shared: Arc<Shared>,
    token: String,
    request: Request,
    expectation: Expectation,
    bound: Duration,
    written_at: Instant,
) -> (BoundedCheck, Option<Violation>) {
    let every = (bound / 20).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut check = BoundedCheck {
        route: request.route,
        bound_secs: bound.as_secs(),
        shown_after_ms: None,
    };
    let urls = &shared.config.urls;
    for attempt in 0usize.. {
        tokio::time::sleep(every).await;
        let sent = Instant::now();
        let instance = attempt % urls.len().max(1);
        let base = urls.get(instance).map(String::as_str).unwrap_or_default();
        let response = shared
            .client
            .get(format!("{base}{}", request.path))
            .bearer_auth(&token)
            .send()
            .await;
        let (body, cache) = match response {
            Ok(response) if response.status().is_success() => {
                let cache = match response
                    .headers()
                    .get("x-cache")
                    .and_then(|v| v.to_str().ok())
                {
                    Some("HIT") => CacheOutcome::Hit,
                    Some("MISS") => CacheOutcome::Miss,
                    Some("BYPASS") => CacheOutcome::Bypass,
                    Some("STALE") => CacheOutcome::Stale,
                    _ => CacheOutcome::None,
                };
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (body, cache)
            }
            // An error answer shows nothing either way: read again, within the bound.
            _ => (Value::Null, CacheOutcome::None),
        };
        let shown = !body.is_null() && expectation.check(&body).is_ok();
        if shown {
            check.shown_after_ms = Some(written_at.elapsed().as_millis() as u64);
            return (check, None);
        }
        if sent.duration_since(written_at) > bound && !body.is_null() {
            let detail = format!(
                "not shown {:.1} s after the write (declared bound {} s)",
                sent.duration_since(written_at).as_secs_f64(),
                bound.as_secs()
            );
            let violation = Violation {
                kind: "read_your_writes",
                request: describe(&request),
                token,
                detail,
                cache,
                browser: BrowserOutcome::Network,
                browser_age_secs: None,
                instance: u16::try_from(instance).ok(),
            };
            return (check, Some(violation));
        }
        if sent.duration_since(written_at) > bound * 2 + Duration::from_secs(5) {
            // Only errors since the bound: give up without a verdict on the data.
            return (check, None);
        }
    }
    (check, None)
}

/// The first `organization_id` in `value` (at any depth) that is not `org`.
pub fn foreign_organization(value: &Value, org: i64) -> Option<i64> {
    match value {
        Value::Object(map) => {
            if let Some(id) = map.get("organization_id").and_then(Value::as_i64) {
                if id != org {
                    return Some(id);
                }
            }
            map.values().find_map(|v| foreign_organization(v, org))
        }
        Value::Array(items) => items.iter().find_map(|v| foreign_organization(v, org)),
        _ => None,
    }
}

async fn progress_loop(shared: Arc<Shared>) {
    if !shared.config.progress {
        return;
    }
    let interactive = std::io::stderr().is_terminal();
    let every = if interactive { 1 } else { 5 };
    let mut tick = tokio::time::interval(Duration::from_secs(every));
    tick.tick().await;
    loop {
        tick.tick().await;
        print_progress(&shared, false);
    }
}

fn print_progress(shared: &Shared, last: bool) {
    let interactive = std::io::stderr().is_terminal();
    let total = shared.config.warmup + shared.config.duration;
    let elapsed = shared
        .started
        .elapsed()
        .as_secs_f64()
        .min(total.as_secs_f64());
    let requests = shared.requests.load(Ordering::Relaxed);
    let avg_ms = if requests == 0 {
        0.0
    } else {
        shared.latency_us.load(Ordering::Relaxed) as f64 / requests as f64 / 1000.0
    };
    let not_modified = shared.not_modified.load(Ordering::Relaxed);
    let browser_hits = shared.browser_hits.load(Ordering::Relaxed);
    let lookups = shared.lookups.load(Ordering::Relaxed);
    let hit_rate = if lookups == 0 {
        0.0
    } else {
        shared.hits.load(Ordering::Relaxed) as f64 * 100.0 / lookups as f64
    };
    let line = format!(
        "[{}] {:>4.0}s/{}s{}  {:>6} requests ({:>4.0}/s)  avg {:>7.2} ms  hit rate {:>5.1}%  304s {:>5}  browser hits {:>5}",
        shared.config.label,
        elapsed,
        total.as_secs(),
        if elapsed < shared.config.warmup.as_secs_f64() {
            " warm-up"
        } else {
            "        "
        },
        requests,
        requests as f64 / elapsed.max(0.001),
        avg_ms,
        hit_rate,
        not_modified,
        browser_hits
    );
    let mut err = std::io::stderr().lock();
    let _ = if interactive && !last {
        write!(err, "\r{line}")
    } else if interactive {
        writeln!(err, "\r{line}")
    } else {
        writeln!(err, "{line}")
    };
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::foreign_organization;
    use serde_json::json;

    #[test]
    fn finds_another_tenants_id_at_any_depth() {
        let ok = json!({ "organization_id": 1, "items": [{ "organization_id": 1 }] });
        assert_eq!(foreign_organization(&ok, 1), None);
        let nested = json!({ "organization_id": 1, "items": [{ "organization_id": 2 }] });
        assert_eq!(foreign_organization(&nested, 1), Some(2));
        assert_eq!(
            foreign_organization(&json!({ "organization_id": 3 }), 1),
            Some(3)
        );
    }
}
