//! What the keeper keeps per lease, and what it reports: a held lease's
//! entry, why a lease was lost, the keeper's counts.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Fence, Grant, LeaseRecord};

/// Why a held lease was lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LostReason {
    /// The store refused a renewal: the grant was released, expired or
    /// superseded. Carries the record the store holds now.
    Refused(Option<LeaseRecord>),
    /// The deadline came before any renewal succeeded (the store did not
    /// answer, or only with errors).
    DeadlinePassed,
}

/// What a keeper has done so far, and holds now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeeperStats {
    /// Leases held and kept alive now.
    pub held: usize,
    /// `renew_many` calls under way now (at most [`MAX_IN_FLIGHT`](super::MAX_IN_FLIGHT)).
    pub calls_in_flight: usize,
    /// The most calls that were ever under way at once.
    pub most_calls_in_flight: usize,
    /// `renew_many` calls made.
    pub calls: u64,
    /// Renewals sent, over all calls.
    pub renewals: u64,
    /// Renewals that failed transiently (and were retried).
    pub renewals_failed: u64,
    /// Leases lost because the store refused their renewal.
    pub lost_refused: u64,
    /// Leases lost because their deadline passed without a renewal.
    pub lost_deadline: u64,
    /// How long the last `renew_many` call took.
    pub last_call: Duration,
    /// How long the slowest `renew_many` call took.
    pub longest_call: Duration,
}

/// One held lease, as the keeper sees it.
pub(crate) struct Entry {
    pub fence: Fence,
    pub ttl: Duration,
    pub renew_every: Duration,
    pub retry_every: Duration,
    pub deadline: watch::Sender<Instant>,
    pub lost: CancellationToken,
    pub reason: Arc<Mutex<Option<LostReason>>>,
    /// When it should be renewed next.
    pub(super) due: Instant,
    /// Transient failures in a row.
    pub(super) failures: u32,
    /// In a call under way.
    pub(super) sending: bool,
}

impl Entry {
    pub fn new(
        fence: Fence,
        ttl: Duration,
        renew_every: Duration,
        retry_every: Duration,
        grant: &Grant,
    ) -> (Self, watch::Receiver<Instant>) {
        let (deadline, watched) = watch::channel(grant.deadline);
        let entry = Self {
            fence,
            ttl,
            renew_every,
            retry_every,
            deadline,
            lost: CancellationToken::new(),
            reason: Arc::default(),
            due: Instant::now() + renew_every,
            failures: 0,
            sending: false,
        };
        (entry, watched)
    }

    pub(super) fn lose(&self, reason: LostReason, leaser: &str) {
        let now = Instant::now();
        let deadline = *self.deadline.borrow();
        let label = match reason {
            LostReason::Refused(_) => "refused",
            LostReason::DeadlinePassed => "deadline",
        };
        // How the loss stands against the deadline the holder was told:
        // refused with time left, or found past it (late by how much the
        // keeper itself was slow to notice).
        tracing::warn!(
            leaser,
            fence = %self.fence,
            reason = label,
            ?reason,
            left_ms = deadline.saturating_duration_since(now).as_millis() as u64,
            late_ms = now.saturating_duration_since(deadline).as_millis() as u64,
            "lease lost"
        );
        metrics::counter!(
            "lease_keeper_lost_total",
            "leaser" => leaser.to_owned(),
            "reason" => label
        )
        .increment(1);
        *lock(&self.reason) = Some(reason);
        self.lost.cancel();
    }
}

/// Every lock here guards a value a panic cannot leave half-written.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
