//! Many leases held through a stalled server: the same check for every
//! backend.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use lease_core::{
    Acquire, DynLeaseStore, HeldLease, Holder, KeeperStats, LeaseKey, LeaseStore, Leaser,
};
use tokio::time::Instant;

/// What [`hold_through_a_stall`] saw.
#[derive(Debug)]
pub struct Stalled {
    /// The keeper's counts at the end.
    pub stats: KeeperStats,
    /// Leases lost.
    pub lost: usize,
}

impl Stalled {
    /// Asserts the stall was felt (a renewal call waited on it; they take
    /// milliseconds otherwise), no lease was lost, and the keeper never had
    /// more calls under way than its bound.
    pub fn assert_survived(&self, ttl: Duration) {
        assert!(
            self.stats.longest_call >= ttl / 12,
            "no call felt the stall: {self:?}"
        );
        assert_eq!(
            self.lost, 0,
            "leases lost that did not have to be: {self:?}"
        );
        assert!(
            self.stats.most_calls_in_flight <= lease_core::MAX_IN_FLIGHT,
            "{self:?}"
        );
    }
}

/// Holds `n` leases of `ttl` with one leaser on `store`, stalls the server
/// with `stall` for `length` while renewals are due, lets it go with
/// `resume`, watches two more renewal periods, and releases them all.
pub async fn hold_through_a_stall<S, R>(
    store: DynLeaseStore,
    n: usize,
    ttl: Duration,
    length: Duration,
    stall: impl FnOnce() -> S,
    resume: impl FnOnce() -> R,
) -> Stalled
where
    S: Future<Output = ()>,
    R: Future<Output = ()>,
{
    let leaser = Leaser::new(store, Holder::unique("stall").expect("valid"), ttl);
    let leases = acquire_all(&leaser, &format!("stall/{}", rand::random::<u32>()), n).await;
    // Two renewal periods of steady state, then the stall.
    tokio::time::sleep(ttl * 2 / 3).await;
    let before = leaser.stats();
    assert_eq!(before.held, n, "{before:?}");
    assert_eq!(
        before.lost_deadline + before.lost_refused,
        0,
        "lost before the stall: {before:?}"
    );
    stall().await;
    let stalled = Instant::now();
    tokio::time::sleep(length).await;
    resume().await;
    eprintln!("stalled for {:?}", stalled.elapsed());
    tokio::time::sleep(ttl * 2 / 3).await;
    let stats = leaser.stats();
    let lost = leases.iter().filter(|l| l.is_lost()).count();
    futures::stream::iter(leases)
        .for_each_concurrent(64, |lease| async move {
            let _ = lease.release().await;
        })
        .await;
    Stalled { stats, lost }
}

/// Acquires `prefix/0` … `prefix/{n-1}` with `leaser`, 64 claims at a time;
/// panics if one is taken.
pub async fn acquire_all(leaser: &Leaser, prefix: &str, n: usize) -> Vec<HeldLease> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let key = LeaseKey::new(format!("{prefix}/{i}")).expect("valid");
            match leaser.try_acquire(&key).await.expect("claim") {
                Acquire::Held(lease) => lease,
                Acquire::Busy(record) => panic!("{key} is taken: {record:?}"),
            }
        })
        .buffer_unordered(64)
        .collect()
        .await
}

/// Panics unless `store` shows `lease`'s key held with `lease`'s token.
pub async fn assert_shows(store: &dyn LeaseStore, lease: &HeldLease) {
    let key = &lease.fence().key;
    let record = store.inspect(key).await.expect("inspect");
    assert!(
        record
            .as_ref()
            .is_some_and(|r| r.token == lease.fence().token),
        "{key} shows {record:?}, not {}",
        lease.fence()
    );
}
