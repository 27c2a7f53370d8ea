//! What an operator sees: the spans and metrics of store calls through
//! `Instrumented` on memory, Redis and etcd — a claim, a renewal batch, a
//! refused renewal, a release, a call that times out — and the keeper
//! metrics of two named leasers in one process.
//!
//! One Prometheus recorder and one span-capturing subscriber serve the
//! whole binary; each test finds its own calls by key and backend.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use lease_conformance::{Factory, MemoryFactory};
use lease_core::{
    Acquire, Claim, Fence, FencingToken, Holder, Instrumented, LeaseError, LeaseKey, LeaseStore,
    Leaser,
};
use lease_tests::{EtcdServerFactory, Fault, FaultProxy, RedisServerFactory};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::span::{Attributes, Id, Record};
use tracing::{Subscriber, field::Field, field::Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span as it closed: its name and every field recorded on it.
#[derive(Clone, Debug)]
struct Closed {
    name: &'static str,
    fields: BTreeMap<String, String>,
}

struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// Keeps every closed span.
struct Capture(Arc<Mutex<Vec<Closed>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields(BTreeMap::new());
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<Fields>()
        {
            values.record(fields);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            let fields = span
                .extensions_mut()
                .remove::<Fields>()
                .map_or_else(BTreeMap::new, |f| f.0);
            self.0.lock().unwrap().push(Closed {
                name: span.name(),
                fields,
            });
        }
    }
}

struct Seen {
    metrics: PrometheusHandle,
    spans: Arc<Mutex<Vec<Closed>>>,
}

fn seen() -> &'static Seen {
    static SEEN: OnceLock<Seen> = OnceLock::new();
    SEEN.get_or_init(|| {
        let metrics = PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder");
        let spans = Arc::default();
        let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&spans)));
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        Seen { metrics, spans }
    })
}

/// Every sample of the Prometheus page: name, labels, value.
fn samples(page: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    page.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Some((name.to_owned(), labels, value.parse().ok()?))
        })
        .collect()
}

/// The value of the one sample of `name` carrying every label of `want`.
fn sample(page: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = samples(page)
        .into_iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).is_some_and(|l| l == v))
        })
        .map(|(_, _, value)| value)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{name} {want:?}: {} samples in\n{page}",
        found.len()
    );
    found[0]
}

/// The closed spans of `key`, in closing order.
fn spans_of(key: &LeaseKey) -> Vec<Closed> {
    seen()
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.fields.get("lease.key").map(String::as_str) == Some(key.as_str()))
        .cloned()
        .collect()
}

fn span<'a>(spans: &'a [Closed], name: &str) -> &'a Closed {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no {name} span among {spans:#?}"))
}

fn field<'a>(span: &'a Closed, name: &str) -> &'a str {
    span.fields
        .get(name)
        .unwrap_or_else(|| panic!("{} has no {name}: {:?}", span.name, span.fields))
}

/// The five calls on `factory`'s backend, and what they report.
async fn observe(factory: &dyn Factory, backend: &str) {
    let seen = seen();
    let subject = factory.open().await.expect("the backend opens");
    let store = Instrumented::new(subject.store.clone());
    let k = LeaseKey::new(format!("observed/{backend}/{}", rand::random::<u32>())).unwrap();
    let holder = Holder::new("observer", "1").unwrap();
    let ttl = Duration::from_secs(5);

    // A claim.
    let Claim::Acquired(grant) = store.claim(&k, &holder, ttl).await.unwrap() else {
        panic!("{k} was free");
    };
    // A batch: the live fence renewed, a made-up one refused.
    let stale = Fence {
        token: FencingToken(grant.fence.token.0 + 1000),
        ..grant.fence.clone()
    };
    let batch = store
        .renew_many(&[(grant.fence.clone(), ttl), (stale.clone(), ttl)])
        .await;
    assert!(batch[0].is_ok() && matches!(batch[1], Err(LeaseError::Lost { .. })));
    // A refused renewal.
    let refused = store.renew(&stale, ttl).await;
    assert!(
        matches!(refused, Err(LeaseError::Lost { .. })),
        "{refused:?}"
    );
    // A release.
    assert!(store.release(&grant.fence).await.unwrap());
    // A claim that times out: through a proxy that froze.
    let server = subject.hooks.server_address().await.expect("an address");
    let proxy = FaultProxy::start(&server).await.unwrap();
    let through = subject
        .hooks
        .store_through(&proxy.endpoint(), Duration::from_millis(300))
        .await
        .expect("a store through the proxy");
    let through = Instrumented::new(through);
    through.inspect(&k).await.expect("the proxy passes calls");
    proxy.set(Fault::Freeze);
    let timed_out = through.claim(&k, &holder, ttl).await;
    assert!(
        matches!(&timed_out, Err(e) if e.is_indeterminate()),
        "{timed_out:?}"
    );
    proxy.heal();

    let spans = spans_of(&k);
    let claim = span(&spans, "lease.claim");
    assert_eq!(field(claim, "lease.backend"), backend);
    assert_eq!(field(claim, "lease.outcome"), "acquired");
    assert_eq!(field(claim, "lease.holder"), holder.to_string());
    assert_eq!(field(claim, "lease.token"), grant.fence.token.0.to_string());
    let batch = span(&spans, "lease.renew_many");
    assert_eq!(field(batch, "lease.batch_size"), "2");
    assert_eq!(field(batch, "lease.outcome"), "partly_renewed");
    let renew = span(&spans, "lease.renew");
    assert_eq!(field(renew, "lease.outcome"), "lost");
    assert_eq!(field(renew, "error.unknown"), "false");
    assert!(field(renew, "error.message").contains(k.as_str()));
    let release = span(&spans, "lease.release");
    assert_eq!(field(release, "lease.outcome"), "released");
    let timed_out = spans
        .iter()
        .filter(|s| s.name == "lease.claim")
        .nth(1)
        .expect("the claim that timed out");
    assert_eq!(field(timed_out, "lease.outcome"), "timeout");
    assert_eq!(field(timed_out, "error.unknown"), "true");

    let page = seen.metrics.render();
    let calls = |operation, outcome| {
        sample(
            &page,
            "lease_store_calls_total",
            &[
                ("backend", backend),
                ("operation", operation),
                ("outcome", outcome),
            ],
        )
    };
    assert!(calls("claim", "acquired") >= 1.0);
    assert!(calls("claim", "timeout") >= 1.0);
    assert!(calls("renew_many", "renewed") >= 1.0);
    assert!(calls("renew_many", "lost") >= 1.0);
    assert!(calls("renew", "lost") >= 1.0);
    assert!(calls("release", "released") >= 1.0);
    let labels = [("backend", backend), ("operation", "claim")];
    assert!(sample(&page, "lease_store_call_duration_seconds_count", &labels) >= 2.0);
    let labels = [("backend", backend), ("operation", "renew_many")];
    assert!(sample(&page, "lease_store_batch_size_sum", &labels) >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_calls_are_traced_and_counted() {
    observe(&MemoryFactory, "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_calls_are_traced_and_counted() {
    observe(&RedisServerFactory::default(), "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_calls_are_traced_and_counted() {
    observe(&EtcdServerFactory, "etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_named_leasers_report_their_own_gauges_and_losses() {
    let seen = seen();
    let store: lease_core::DynLeaseStore = Arc::new(lease_core::MemoryStore::new());
    let ttl = Duration::from_millis(600);
    let alpha = Leaser::new(store.clone(), Holder::new("alpha", "1").unwrap(), ttl).named("alpha");
    let beta = Leaser::new(store.clone(), Holder::new("beta", "1").unwrap(), ttl).named("beta");
    let key = |k: &str| LeaseKey::new(format!("named/{k}")).unwrap();
    let held = |acquire: Acquire| match acquire {
        Acquire::Held(lease) => lease,
        Acquire::Busy(record) => panic!("busy: {record:?}"),
    };
    let a1 = held(alpha.try_acquire(&key("a1")).await.unwrap());
    let _a2 = held(alpha.try_acquire(&key("a2")).await.unwrap());
    let _b1 = held(beta.try_acquire(&key("b1")).await.unwrap());
    let page = seen.metrics.render();
    assert_eq!(
        sample(&page, "lease_keeper_leases_held", &[("leaser", "alpha")]),
        2.0
    );
    assert_eq!(
        sample(&page, "lease_keeper_leases_held", &[("leaser", "beta")]),
        1.0
    );

    // Someone takes a1 over: alpha's next renewal is refused.
    let thief = Holder::new("thief", "1").unwrap();
    let taken = store.reclaim(a1.fence(), &thief, ttl).await.unwrap();
    assert!(matches!(taken, Claim::Acquired(_)));
    tokio::time::timeout(ttl * 2, a1.lost().cancelled())
        .await
        .expect("alpha lost a1");
    let page = seen.metrics.render();
    assert_eq!(
        sample(
            &page,
            "lease_keeper_lost_total",
            &[("leaser", "alpha"), ("reason", "refused")]
        ),
        1.0
    );
    assert_eq!(
        sample(&page, "lease_keeper_leases_held", &[("leaser", "alpha")]),
        1.0
    );
    assert_eq!(
        sample(&page, "lease_keeper_leases_held", &[("leaser", "beta")]),
        1.0
    );
    assert!(!page.contains("leaser=\"beta\",reason="), "{page}");
}
