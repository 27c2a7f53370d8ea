//! Renewals applied in the order their client sent them, as
//! [`lease_core::Stamp`] describes for any network backend: the client
//! stamps each renewal when it sends it, and what the server keeps per
//! fence (the stamp of the last renewal it applied) lives here, beside the
//! served store. A renewal that arrives after a later one of its client
//! was applied changes nothing and is answered with the grant's time left.

use std::collections::HashMap;
use std::time::Duration;

use lease_core::{DynLeaseStore, Fence, Grant, LeaseError, Op, Sequencer, Stamp};
use tokio::time::Instant;

/// One client's renewal order: its sequencer, and per fence the stamp of
/// the last renewal of it the server applied. Unenforced, stale renewals
/// are applied as they arrive ([`super::Wire::unordered`]).
#[derive(Debug)]
pub(super) struct RenewalOrder {
    sequencer: Sequencer,
    applied: tokio::sync::Mutex<HashMap<Fence, Stamp>>,
    enforced: bool,
}

impl RenewalOrder {
    pub fn new(enforced: bool) -> Self {
        Self {
            sequencer: Sequencer::new(),
            applied: tokio::sync::Mutex::default(),
            enforced,
        }
    }

    /// Whether a renewal of `fence` stamped `stamp` is to change nothing.
    fn stale(&self, applied: &HashMap<Fence, Stamp>, fence: &Fence, stamp: &Stamp) -> bool {
        self.enforced
            && applied
                .get(fence)
                .is_some_and(|last| stamp.is_stale_after(last))
    }

    /// The stamp of a renewal about to be sent.
    pub fn stamp(&self) -> Stamp {
        self.sequencer.next()
    }

    /// Runs, on the server, the renewal of `fence` stamped `stamp`.
    pub async fn renew(
        &self,
        store: &DynLeaseStore,
        fence: &Fence,
        ttl: Duration,
        stamp: Stamp,
    ) -> Result<Grant, LeaseError> {
        let mut applied = self.applied.lock().await;
        if self.stale(&applied, fence, &stamp) {
            return kept(store, fence).await;
        }
        let answer = store.renew(fence, ttl).await;
        if answer.is_ok() {
            applied.insert(fence.clone(), stamp);
        }
        answer
    }

    /// Runs, on the server, a batch of stamped renewals: the stale ones
    /// answered as kept, the rest renewed in one call.
    pub async fn renew_many(
        &self,
        store: &DynLeaseStore,
        batch: &[(Fence, Duration, Stamp)],
    ) -> Vec<Result<Grant, LeaseError>> {
        let mut applied = self.applied.lock().await;
        let mut answers: Vec<Option<Result<Grant, LeaseError>>> = Vec::with_capacity(batch.len());
        let mut current = Vec::new();
        for (i, (fence, ttl, stamp)) in batch.iter().enumerate() {
            if self.stale(&applied, fence, stamp) {
                answers.push(Some(kept(store, fence).await));
            } else {
                answers.push(None);
                current.push((i, (fence.clone(), *ttl)));
            }
        }
        let renewals: Vec<_> = current.iter().map(|(_, renewal)| renewal.clone()).collect();
        let renewed = store.renew_many(&renewals).await;
        for ((i, (fence, _)), answer) in current.into_iter().zip(renewed) {
            if answer.is_ok() {
                applied.insert(fence, batch[i].2);
            }
            answers[i] = Some(answer);
        }
        answers
            .into_iter()
            .zip(batch)
            .map(|(answer, (fence, _, _))| {
                answer.unwrap_or_else(|| {
                    Err(LeaseError::Backend {
                        backend: store.capabilities().backend,
                        op: Op::Renew,
                        key: fence.key.clone(),
                        indeterminate: true,
                        source: "the store answered fewer renewals than it was given".into(),
                    })
                })
            })
            .collect()
    }
}

/// The answer to a stale renewal: the grant as it stands, if the fence
/// still holds it.
async fn kept(store: &DynLeaseStore, fence: &Fence) -> Result<Grant, LeaseError> {
    let now = Instant::now();
    match store.inspect(&fence.key).await? {
        Some(record) if record.holder == fence.holder && record.token == fence.token => {
            Ok(Grant::new(fence.clone(), record.remaining, now, false))
        }
        current => Err(LeaseError::lost(fence, current)),
    }
}
