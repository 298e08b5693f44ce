//! The cache's `tracing` events (issue 8): one DEBUG event per lookup and per
//! invalidation, with the documented fields, emitted inside the app's own request span;
//! nothing at INFO or above while all is well; WARN when Redis fails, once per state
//! change rather than per request.

mod observe_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use cache_runtime::Cache;
use cache_tests::backends::TestBackend;
use cache_tests::http::{get, post, send};
use observe_support::{app, deterministic, wait_for};
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::{Instrument, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

#[derive(Debug, Clone)]
struct Captured {
    level: Level,
    target: String,
    message: String,
    fields: BTreeMap<String, String>,
    /// Names of the spans the event was in, outermost first.
    spans: Vec<String>,
}

/// A layer recording every event with its fields and span scope.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Captured>>>);

struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or_default();
        let spans = ctx
            .event_scope(event)
            .map(|scope| scope.from_root().map(|s| s.name().to_owned()).collect())
            .unwrap_or_default();
        self.0.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            message,
            fields: fields.0,
            spans,
        });
    }
}

impl Recorder {
    /// Everything the cache logged since the last call.
    fn take(&self) -> Vec<Captured> {
        std::mem::take(&mut *self.0.lock().unwrap())
            .into_iter()
            .filter(|e| e.target == "api_cache")
            .collect()
    }
}

/// The app's own request span, as `tower_http::trace::TraceLayer` would open it.
async fn request_span(request: Request, next: Next) -> Response {
    let span = tracing::info_span!("request", method = %request.method(), uri = %request.uri());
    next.run(request).instrument(span).await
}

fn traced_app(cache: &Cache) -> Router {
    app(cache).layer(middleware::from_fn(request_span))
}

/// The only cache event of one request: the lookup.
fn lookup_event(events: Vec<Captured>) -> Captured {
    assert_eq!(events.len(), 1, "one event per lookup: {events:#?}");
    let event = events.into_iter().next().unwrap();
    assert_eq!(event.level, Level::DEBUG, "{event:?}");
    assert_eq!(event.message, "cache lookup");
    assert_eq!(event.spans, ["request"], "inside the app's request span");
    assert_eq!(event.fields["resource"], "templates");
    assert!(
        event.fields["function"].ends_with("::list_templates"),
        "{event:?}"
    );
    event
}

fn has(event: &Captured, field: &str) -> bool {
    event.fields.contains_key(field)
}

fn micros(event: &Captured, field: &str) -> u64 {
    event.fields[field]
        .parse()
        .unwrap_or_else(|_| panic!("{field} is a number of microseconds: {event:?}"))
}

#[tokio::test]
async fn lookups_and_invalidations_are_debug_events_in_the_request_span() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let cache = Cache::new(deterministic(TestBackend::Memory.config()))
        .await
        .expect("cache");
    // Building the cache says once which backend it is; requests log nothing else.
    let startup = recorder.take();
    assert_eq!(startup.len(), 1, "{startup:#?}");
    assert_eq!(startup[0].level, Level::INFO);
    assert!(startup[0].message.contains("per process"), "{startup:?}");
    let app = traced_app(&cache);

    send(&app, get("/api/templates", Some("org_1"))).await;
    let miss = lookup_event(recorder.take());
    assert_eq!(miss.fields["outcome"], "MISS");
    assert!(
        has(&miss, "lookup_us") && has(&miss, "handler_us"),
        "{miss:?}"
    );
    assert!(!has(&miss, "age_s") && !has(&miss, "reason"), "{miss:?}");
    micros(&miss, "lookup_us");
    micros(&miss, "handler_us");

    send(&app, get("/api/templates", Some("org_1"))).await;
    let hit = lookup_event(recorder.take());
    assert_eq!(hit.fields["outcome"], "HIT");
    assert_eq!(hit.fields["age_s"], "0");
    micros(&hit, "lookup_us");
    assert!(!has(&hit, "handler_us"), "the handler did not run: {hit:?}");

    send(&app, get("/api/templates", None)).await;
    let bypass = lookup_event(recorder.take());
    assert_eq!(bypass.fields["outcome"], "BYPASS");
    assert_eq!(bypass.fields["reason"], "no-scope");
    micros(&bypass, "handler_us");
    assert!(
        !has(&bypass, "lookup_us"),
        "nothing was looked up: {bypass:?}"
    );

    cache.set_resource_enabled("templates", false);
    send(&app, get("/api/templates", Some("org_1"))).await;
    let switched_off = lookup_event(recorder.take());
    assert_eq!(switched_off.fields["outcome"], "BYPASS");
    assert_eq!(switched_off.fields["reason"], "resource-disabled");
    assert!(!has(&switched_off, "lookup_us"), "{switched_off:?}");
    cache.set_resource_enabled("templates", true);

    let reply = send(
        &app,
        post("/api/templates", Some("org_1"), json!({"name": "promo"})),
    )
    .await;
    assert_eq!(reply.status, 201);
    let events = recorder.take();
    assert_eq!(events.len(), 1, "one event per invalidation: {events:#?}");
    let invalidation = &events[0];
    assert_eq!(invalidation.level, Level::DEBUG);
    assert_eq!(invalidation.message, "cache invalidation");
    assert_eq!(invalidation.spans, ["request"]);
    assert_eq!(invalidation.fields["tenant"], "{t.org_1}");
    assert_eq!(invalidation.fields["resources"], "templates");
    micros(invalidation, "elapsed_us");
}

/// Redis killed: failed lookups are `ERROR` lookups (still DEBUG, still in the request
/// span), the circuit opening is one WARN, and later requests bypass quietly; a
/// mutation's invalidation that cannot be delivered is a WARN with its tenant.
#[tokio::test]
async fn a_redis_outage_warns_once_per_state_change() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut backend = TestBackend::redis();
    let config = deterministic(backend.config())
        .with_response_timeout(Duration::from_millis(200))
        .with_circuit(2, Duration::from_secs(30));
    let cache = Cache::new(config).await.expect("cache");
    let app = traced_app(&cache);
    send(&app, get("/api/templates", Some("org_1"))).await;
    wait_for(Duration::from_secs(10), "the store to land", || {
        cache.stats().totals.stores == 1
    })
    .await;
    let events = recorder.take();
    assert!(
        events
            .iter()
            .all(|e| e.level >= Level::DEBUG || e.message == "connected to Redis"),
        "nothing above DEBUG while all is well, but: {events:#?}"
    );

    match &mut backend {
        TestBackend::Redis(server) => server.kill(),
        TestBackend::Memory | TestBackend::Cluster { .. } => unreachable!(),
    }
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        let reply = send(&app, get("/api/templates", Some("org_1"))).await;
        assert_eq!(reply.status, 200);
        outcomes.push(reply.x_cache().to_owned());
    }
    assert_eq!(outcomes, ["MISS", "MISS", "BYPASS", "BYPASS"]);
    let events = recorder.take();
    let lookups: Vec<&Captured> = events
        .iter()
        .filter(|e| e.message == "cache lookup")
        .collect();
    let logged: Vec<(&str, Option<&str>)> = lookups
        .iter()
        .map(|e| {
            (
                e.fields["outcome"].as_str(),
                e.fields.get("reason").map(String::as_str),
            )
        })
        .collect();
    assert_eq!(
        logged,
        [
            ("ERROR", None),
            ("ERROR", None),
            ("BYPASS", Some("circuit-open")),
            ("BYPASS", Some("circuit-open")),
        ]
    );
    for lookup in &lookups {
        assert_eq!(lookup.level, Level::DEBUG);
        assert_eq!(lookup.spans, ["request"]);
    }
    micros(lookups[0], "lookup_us");
    micros(lookups[0], "handler_us");
    let warnings: Vec<&Captured> = events.iter().filter(|e| e.level <= Level::INFO).collect();
    assert_eq!(warnings.len(), 1, "one state change: {warnings:#?}");
    assert_eq!(warnings[0].level, Level::WARN);
    assert!(
        warnings[0].message.contains("circuit opened"),
        "{warnings:?}"
    );

    let reply = send(
        &app,
        post("/api/templates", Some("org_1"), json!({"name": "promo"})),
    )
    .await;
    assert_eq!(reply.status, 201, "the mutation stands");
    let events = recorder.take();
    let deferred: Vec<&Captured> = events.iter().filter(|e| e.level == Level::WARN).collect();
    assert_eq!(deferred.len(), 1, "{events:#?}");
    assert!(deferred[0].message.starts_with("invalidation deferred"));
    assert_eq!(deferred[0].fields["tenant"], "{t.org_1}");
    assert_eq!(deferred[0].fields["resources"], "templates");
    assert_eq!(deferred[0].spans, ["request"]);
}

#[cache_runtime::cached(resource = "reports", ttl = 60, key = (org), scope = org)]
async fn report_total(org: i64) -> u64 {
    org as u64 * 10
}

#[tokio::test]
async fn cached_plain_functions_emit_the_same_lookup_event() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let cache = Cache::new(deterministic(TestBackend::Memory.config()))
        .await
        .expect("cache");
    let outcomes: Vec<(String, bool)> = cache
        .run_with(async {
            let mut seen = Vec::new();
            for _ in 0..2 {
                assert_eq!(report_total(7).await, 70);
                let events: Vec<Captured> = recorder
                    .take()
                    .into_iter()
                    .filter(|e| e.message == "cache lookup")
                    .collect();
                assert_eq!(events.len(), 1, "{events:#?}");
                let event = &events[0];
                assert_eq!(event.level, Level::DEBUG);
                assert_eq!(event.fields["resource"], "reports");
                assert!(event.fields["function"].ends_with("::report_total"));
                micros(event, "elapsed_us");
                seen.push((event.fields["outcome"].clone(), has(event, "age_s")));
            }
            seen
        })
        .await;
    assert_eq!(
        outcomes,
        [("MISS".to_owned(), false), ("HIT".to_owned(), true)]
    );
}
