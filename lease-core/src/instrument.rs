//! A span and metrics for every store call, on any backend.
//!
//! [`Instrumented`] wraps any [`LeaseStore`] — memory, Redis, etcd or a
//! custom backend — and gives each call a `tracing` span and a few
//! metrics through the `metrics` facade, written once here rather than in
//! each adapter. Without a subscriber or a recorder installed the cost is
//! a few relaxed atomic loads per call; the throughput bench measures it.
//! Every name is listed on [`Instrumented`], the one table of them.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use metrics::{Counter, Histogram};
use tokio::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;

use crate::{
    Capabilities, Claim, Cursor, DynLeaseStore, Fence, Grant, Holder, LeaseError, LeaseKey,
    LeaseRecord, LeaseStore, Listed, Op, Page,
};

/// A store whose every call is traced and measured. Cheap to clone.
///
#[doc = include_str!("observability.md")]
///
/// Metric handles are registered with the recorder installed at a
/// series' first use and kept: install the recorder before the first
/// call (a handle kept costs an atomic add; looking one up per call cost
/// several times that).
#[derive(Debug, Clone)]
pub struct Instrumented {
    inner: DynLeaseStore,
    backend: &'static str,
    handles: Arc<Handles>,
}

/// Calls `$then!` with every operation's name: the one list of them, for
/// the span callsites and the metric handles alike.
macro_rules! operations {
    ($then:ident) => {
        $then!(
            "claim",
            "reclaim",
            "renew",
            "renew_many",
            "release",
            "inspect",
            "check",
            "put_marker",
            "delete_marker",
            "get_marker",
            "guarded_write",
            "read_guarded",
            "wait_free",
            "list",
            "list_markers"
        )
    };
}

macro_rules! array_of {
    ($($op:literal),*) => {
        [$($op),*]
    };
}

/// Every operation a span and the metrics name.
const OPERATIONS: &[&str] = &operations!(array_of);

/// Every outcome label.
const OUTCOMES: [&str; 18] = [
    "acquired",
    "busy",
    "renewed",
    "released",
    "not_held",
    "held",
    "free",
    "timed_out",
    "ok",
    "lost",
    "conflict",
    "corrupt",
    "invalid",
    "unsupported",
    "timeout",
    "unknown",
    "error",
    "partly_renewed",
];

fn operation_index(operation: &str) -> Option<usize> {
    OPERATIONS.iter().position(|o| *o == operation)
}

fn outcome_index(outcome: &str) -> Option<usize> {
    OUTCOMES.iter().position(|o| *o == outcome)
}

/// The metric handles of one store, each registered at first use.
#[derive(Debug, Default)]
struct Handles {
    calls: [[OnceLock<Counter>; OUTCOMES.len()]; OPERATIONS.len()],
    durations: [OnceLock<Histogram>; OPERATIONS.len()],
    batch_size: OnceLock<Histogram>,
}

impl Instrumented {
    /// `inner`, instrumented.
    pub fn new(inner: DynLeaseStore) -> Self {
        let backend = inner.capabilities().backend;
        Self {
            inner,
            backend,
            handles: Arc::default(),
        }
    }

    /// The store underneath.
    pub fn inner(&self) -> &DynLeaseStore {
        &self.inner
    }

    /// Runs `call` in `span`, then records its outcome and duration.
    async fn traced<T>(
        &self,
        operation: &'static str,
        span: tracing::Span,
        call: impl Future<Output = Result<T, LeaseError>>,
        outcome: impl FnOnce(&T) -> &'static str,
    ) -> Result<T, LeaseError> {
        let started = Instant::now();
        let result = call.instrument(span.clone()).await;
        let label = match &result {
            Ok(value) => outcome(value),
            Err(error) => {
                span.record("error.unknown", error.is_indeterminate());
                span.record("error.message", tracing::field::display(error));
                error_outcome(error)
            }
        };
        span.record("lease.outcome", label);
        self.count(operation, label, 1);
        self.took(operation, started.elapsed());
        result
    }

    fn count(&self, operation: &'static str, outcome: &'static str, n: u64) {
        let (Some(op), Some(out)) = (operation_index(operation), outcome_index(outcome)) else {
            return;
        };
        self.handles.calls[op][out]
            .get_or_init(|| {
                metrics::counter!(
                    "lease_store_calls_total",
                    "backend" => self.backend,
                    "operation" => operation,
                    "outcome" => outcome
                )
            })
            .increment(n);
    }

    fn took(&self, operation: &'static str, took: Duration) {
        let Some(op) = operation_index(operation) else {
            return;
        };
        self.handles.durations[op]
            .get_or_init(|| {
                metrics::histogram!(
                    "lease_store_call_duration_seconds",
                    "backend" => self.backend,
                    "operation" => operation
                )
            })
            .record(took.as_secs_f64());
    }

    fn span(&self, operation: &'static str, key: &LeaseKey) -> tracing::Span {
        // A span's name is fixed where it is made: one callsite per name.
        macro_rules! spans {
            ($($op:literal),*) => {
                match operation {
                    $($op => tracing::debug_span!(
                        concat!("lease.", $op),
                        lease.backend = self.backend,
                        lease.key = %key,
                        lease.holder = Empty,
                        lease.token = Empty,
                        lease.batch_size = Empty,
                        lease.outcome = Empty,
                        error.unknown = Empty,
                        error.message = Empty,
                    ),)*
                    _ => tracing::Span::none(),
                }
            };
        }
        operations!(spans)
    }

    fn fence_span(&self, operation: &'static str, fence: &Fence) -> tracing::Span {
        let span = self.span(operation, &fence.key);
        span.record("lease.holder", tracing::field::display(&fence.holder));
        span.record("lease.token", fence.token.0);
        span
    }
}

/// The outcome label of an error.
fn error_outcome(error: &LeaseError) -> &'static str {
    match error {
        LeaseError::Lost { .. } | LeaseError::StaleFence { .. } => "lost",
        LeaseError::Conflict { .. } => "conflict",
        LeaseError::Corrupt { .. } => "corrupt",
        LeaseError::InvalidKey { .. }
        | LeaseError::InvalidHolder { .. }
        | LeaseError::InvalidTtl { .. }
        | LeaseError::InvalidValue { .. }
        | LeaseError::InvalidConfig { .. } => "invalid",
        LeaseError::Unsupported { .. } => "unsupported",
        LeaseError::Timeout { .. } => "timeout",
        other if other.is_indeterminate() => "unknown",
        _ => "error",
    }
}

fn claim_outcome(span: &tracing::Span) -> impl FnOnce(&Claim) -> &'static str + '_ {
    move |claim| match claim {
        Claim::Acquired(grant) => {
            span.record("lease.token", grant.fence.token.0);
            "acquired"
        }
        Claim::Busy(record) => {
            span.record("lease.token", record.token.0);
            "busy"
        }
    }
}

fn held_or_free<T>(value: &Option<T>) -> &'static str {
    if value.is_some() { "held" } else { "free" }
}

#[async_trait]
impl LeaseStore for Instrumented {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn claim(
        &self,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError> {
        let span = self.span(Op::Claim.name(), key);
        span.record("lease.holder", tracing::field::display(holder));
        let call = self.inner.claim(key, holder, ttl);
        self.traced(Op::Claim.name(), span.clone(), call, claim_outcome(&span))
            .await
    }

    async fn reclaim(
        &self,
        observed: &Fence,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError> {
        let span = self.span(Op::Reclaim.name(), &observed.key);
        span.record("lease.holder", tracing::field::display(holder));
        let call = self.inner.reclaim(observed, holder, ttl);
        self.traced(Op::Reclaim.name(), span.clone(), call, claim_outcome(&span))
            .await
    }

    async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Grant, LeaseError> {
        let span = self.fence_span(Op::Renew.name(), fence);
        let call = self.inner.renew(fence, ttl);
        self.traced(Op::Renew.name(), span, call, |_| "renewed")
            .await
    }

    async fn renew_many(&self, renewals: &[(Fence, Duration)]) -> Vec<Result<Grant, LeaseError>> {
        const OPERATION: &str = "renew_many";
        let first = renewals.first().map(|(fence, _)| &fence.key);
        let span = match first {
            Some(key) => self.span(OPERATION, key),
            None => return Vec::new(),
        };
        span.record("lease.batch_size", renewals.len());
        self.handles
            .batch_size
            .get_or_init(|| {
                metrics::histogram!(
                    "lease_store_batch_size",
                    "backend" => self.backend,
                    "operation" => OPERATION
                )
            })
            .record(renewals.len() as f64);
        let started = Instant::now();
        let results = self
            .inner
            .renew_many(renewals)
            .instrument(span.clone())
            .await;
        let mut renewed = 0;
        for result in &results {
            match result {
                Ok(_) => renewed += 1,
                Err(error) => self.count(OPERATION, error_outcome(error), 1),
            }
        }
        if renewed > 0 {
            self.count(OPERATION, "renewed", renewed);
        }
        span.record(
            "lease.outcome",
            if renewed == results.len() as u64 {
                "renewed"
            } else {
                "partly_renewed"
            },
        );
        self.took(OPERATION, started.elapsed());
        results
    }

    async fn release(&self, fence: &Fence) -> Result<bool, LeaseError> {
        let span = self.fence_span(Op::Release.name(), fence);
        let call = self.inner.release(fence);
        self.traced(Op::Release.name(), span, call, |released| {
            if *released { "released" } else { "not_held" }
        })
        .await
    }

    async fn inspect(&self, key: &LeaseKey) -> Result<Option<LeaseRecord>, LeaseError> {
        let span = self.span(Op::Inspect.name(), key);
        let call = self.inner.inspect(key);
        let seen = span.clone();
        self.traced(Op::Inspect.name(), span, call, move |record| {
            if let Some(record) = record {
                seen.record("lease.holder", tracing::field::display(&record.holder));
                seen.record("lease.token", record.token.0);
            }
            held_or_free(record)
        })
        .await
    }

    async fn put_marker(&self, key: &LeaseKey, value: &str) -> Result<(), LeaseError> {
        let span = self.span(Op::PutMarker.name(), key);
        let call = self.inner.put_marker(key, value);
        self.traced(Op::PutMarker.name(), span, call, |()| "ok")
            .await
    }

    async fn delete_marker(&self, key: &LeaseKey, value: &str) -> Result<bool, LeaseError> {
        let span = self.span(Op::DeleteMarker.name(), key);
        let call = self.inner.delete_marker(key, value);
        self.traced(Op::DeleteMarker.name(), span, call, |_| "ok")
            .await
    }

    async fn get_marker(&self, key: &LeaseKey) -> Result<Option<String>, LeaseError> {
        let span = self.span(Op::GetMarker.name(), key);
        let call = self.inner.get_marker(key);
        self.traced(Op::GetMarker.name(), span, call, |_| "ok")
            .await
    }

    async fn guarded_write(
        &self,
        fence: &Fence,
        target: &LeaseKey,
        value: &[u8],
    ) -> Result<(), LeaseError> {
        let span = self.fence_span(Op::GuardedWrite.name(), fence);
        let call = self.inner.guarded_write(fence, target, value);
        self.traced(Op::GuardedWrite.name(), span, call, |()| "ok")
            .await
    }

    async fn read_guarded(&self, target: &LeaseKey) -> Result<Option<Vec<u8>>, LeaseError> {
        let span = self.span(Op::ReadGuarded.name(), target);
        let call = self.inner.read_guarded(target);
        self.traced(Op::ReadGuarded.name(), span, call, |_| "ok")
            .await
    }

    async fn wait_free(&self, key: &LeaseKey, timeout: Duration) -> Result<bool, LeaseError> {
        let span = self.span(Op::Wait.name(), key);
        let call = self.inner.wait_free(key, timeout);
        self.traced(Op::Wait.name(), span, call, |free| {
            if *free { "free" } else { "timed_out" }
        })
        .await
    }

    async fn list(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Listed>, LeaseError> {
        let span = self.span(Op::List.name(), prefix);
        let call = self.inner.list(prefix, from, limit);
        self.traced(Op::List.name(), span, call, |_| "ok").await
    }

    async fn list_markers(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<(LeaseKey, String)>, LeaseError> {
        let span = self.span(Op::ListMarkers.name(), prefix);
        let call = self.inner.list_markers(prefix, from, limit);
        self.traced(Op::ListMarkers.name(), span, call, |_| "ok")
            .await
    }

    async fn check(&self, fence: &Fence) -> Result<bool, LeaseError> {
        let span = self.fence_span("check", fence);
        let call = self.inner.check(fence);
        self.traced(
            "check",
            span,
            call,
            |live| {
                if *live { "held" } else { "free" }
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Enables every span and keeps nothing.
    struct Everything;

    impl tracing::Subscriber for Everything {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {}
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn every_operation_has_a_span_and_every_outcome_a_series() {
        let store = Instrumented::new(Arc::new(crate::MemoryStore::new()));
        let key = LeaseKey::new("k").unwrap();
        tracing::subscriber::with_default(Everything, || {
            for operation in OPERATIONS {
                let span = store.span(operation, &key);
                let name = span.metadata().map(|m| m.name());
                assert_eq!(name, Some(format!("lease.{operation}").as_str()));
            }
        });
        let errors = [
            LeaseError::Timeout {
                op: Op::Claim,
                key: key.clone(),
                after: Duration::from_secs(1),
            },
            LeaseError::Unsupported {
                backend: "memory",
                op: Op::List,
            },
        ];
        for error in &errors {
            assert!(outcome_index(error_outcome(error)).is_some());
        }
    }
}
