//! The helpers built on the trait: leaser, round, check. Time is tokio's
//! paused clock, so waits are instant and exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use lease_core::{
    Acquire, Capabilities, Claim, DynLeaseStore, Fence, Grant, Holder, LeaseError, LeaseKey,
    LeaseRecord, LeaseStore, Leaser, LostReason, MemoryStore, Op, Round,
};
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(3);

fn key(text: &str) -> LeaseKey {
    LeaseKey::new(text).unwrap()
}

fn holder(id: &str) -> Holder {
    Holder::new(id, "1").unwrap()
}

/// A store whose renewals can be made to hang forever or fail transiently.
#[derive(Debug, Default)]
struct Flaky {
    inner: MemoryStore,
    hang_renewals: AtomicBool,
    failing_renewals: AtomicUsize,
    renewals: AtomicUsize,
    /// `renew_many` calls.
    batches: AtomicUsize,
    /// How long each `renew_many` call takes, in ms.
    batch_delay_ms: AtomicU64,
    /// How long each `renew_many` reply takes after it was applied, in ms.
    reply_delay_ms: AtomicU64,
}

#[async_trait]
impl LeaseStore for Flaky {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn claim(&self, k: &LeaseKey, h: &Holder, ttl: Duration) -> Result<Claim, LeaseError> {
        self.inner.claim(k, h, ttl).await
    }
    async fn reclaim(&self, o: &Fence, h: &Holder, ttl: Duration) -> Result<Claim, LeaseError> {
        self.inner.reclaim(o, h, ttl).await
    }
    async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Grant, LeaseError> {
        self.renewals.fetch_add(1, Ordering::SeqCst);
        if self.hang_renewals.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let failing = self.failing_renewals.load(Ordering::SeqCst);
        if failing > 0 {
            self.failing_renewals.store(failing - 1, Ordering::SeqCst);
            return Err(LeaseError::Timeout {
                op: Op::Renew,
                key: fence.key.clone(),
                after: Duration::from_millis(100),
            });
        }
        self.inner.renew(fence, ttl).await
    }
    async fn renew_many(&self, renewals: &[(Fence, Duration)]) -> Vec<Result<Grant, LeaseError>> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        let delay = self.batch_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let mut results = Vec::new();
        for (fence, ttl) in renewals {
            results.push(self.renew(fence, *ttl).await);
        }
        let delay = self.reply_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        results
    }
    async fn release(&self, fence: &Fence) -> Result<bool, LeaseError> {
        self.inner.release(fence).await
    }
    async fn inspect(&self, k: &LeaseKey) -> Result<Option<LeaseRecord>, LeaseError> {
        self.inner.inspect(k).await
    }
    async fn put_marker(&self, k: &LeaseKey, v: &str) -> Result<(), LeaseError> {
        self.inner.put_marker(k, v).await
    }
    async fn delete_marker(&self, k: &LeaseKey, v: &str) -> Result<bool, LeaseError> {
        self.inner.delete_marker(k, v).await
    }
    async fn get_marker(&self, k: &LeaseKey) -> Result<Option<String>, LeaseError> {
        self.inner.get_marker(k).await
    }
    async fn guarded_write(&self, f: &Fence, t: &LeaseKey, v: &[u8]) -> Result<(), LeaseError> {
        self.inner.guarded_write(f, t, v).await
    }
    async fn read_guarded(&self, t: &LeaseKey) -> Result<Option<Vec<u8>>, LeaseError> {
        self.inner.read_guarded(t).await
    }
    async fn wait_free(&self, k: &LeaseKey, timeout: Duration) -> Result<bool, LeaseError> {
        self.inner.wait_free(k, timeout).await
    }
}

async fn hold(leaser: &Leaser, k: &LeaseKey) -> lease_core::HeldLease {
    match leaser.try_acquire(k).await.unwrap() {
        Acquire::Held(lease) => lease,
        Acquire::Busy(record) => panic!("busy: {record:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn leaser_keeps_the_lease_alive() {
    let store = Arc::new(Flaky::default());
    let leaser = Leaser::new(store.clone(), holder("a"), TTL);
    let k = key("k");
    let lease = hold(&leaser, &k).await;
    tokio::time::sleep(TTL * 10).await;
    assert!(!lease.is_lost());
    assert!(store.check(lease.fence()).await.unwrap());
    assert!(lease.deadline() > Instant::now() + TTL / 2);
    let renewals = store.renewals.load(Ordering::SeqCst);
    assert!(
        (28..=31).contains(&renewals),
        "renewed every ttl/3: {renewals}"
    );
}

/// Replies that take 40 % of the TTL (applied at once, answered late):
/// renewals are scheduled from when they were sent, not from when their
/// reply came, so the lease keeps a period's margin and is never lost.
#[tokio::test(start_paused = true)]
async fn slow_replies_lose_no_lease() {
    let store = Arc::new(Flaky::default());
    store
        .reply_delay_ms
        .store(TTL.as_millis() as u64 * 2 / 5, Ordering::SeqCst);
    let leaser = Leaser::new(store.clone(), holder("a"), TTL);
    let lease = hold(&leaser, &key("k")).await;
    tokio::time::sleep(TTL * 10).await;
    assert!(!lease.is_lost(), "{:?}", lease.lost_reason());
    assert!(store.check(lease.fence()).await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn lost_fires_when_renewal_is_refused() {
    let store = Arc::new(Flaky::default());
    let leaser = Leaser::new(store.clone(), holder("a"), TTL);
    let k = key("k");
    let lease = hold(&leaser, &k).await;
    let thief = store
        .reclaim(lease.fence(), &holder("b"), TTL)
        .await
        .unwrap()
        .acquired()
        .unwrap();
    let taken_at = Instant::now();
    lease.lost().cancelled().await;
    assert!(
        Instant::now() - taken_at <= TTL / 3,
        "noticed at the next renewal"
    );
    match lease.lost_reason() {
        Some(LostReason::Refused(Some(record))) => assert_eq!(record.fence(), thief.fence),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn lost_fires_by_the_deadline_when_the_store_hangs() {
    let store = Arc::new(Flaky::default());
    let leaser = Leaser::new(store.clone(), holder("a"), TTL);
    let lease = hold(&leaser, &key("k")).await;
    let deadline = lease.deadline();
    store.hang_renewals.store(true, Ordering::SeqCst);
    lease.lost().cancelled().await;
    assert_eq!(Instant::now(), deadline, "fires at the deadline, not later");
    assert_eq!(lease.lost_reason(), Some(LostReason::DeadlinePassed));
}

#[tokio::test(start_paused = true)]
async fn transient_renewal_failures_are_retried() {
    let store = Arc::new(Flaky::default());
    let leaser = Leaser::new(store.clone(), holder("a"), TTL);
    let lease = hold(&leaser, &key("k")).await;
    store.failing_renewals.store(3, Ordering::SeqCst);
    tokio::time::sleep(TTL * 4).await;
    assert!(!lease.is_lost());
    assert!(store.check(lease.fence()).await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn release_frees_the_key_and_ends_the_lease() {
    let store: DynLeaseStore = Arc::new(MemoryStore::new());
    let leaser = Leaser::new(store.clone(), holder("a"), TTL);
    let k = key("k");
    let lease = hold(&leaser, &k).await;
    let lost = lease.lost();
    assert!(lease.release().await.unwrap());
    assert!(lost.is_cancelled(), "work under the lease is told to stop");
    assert_eq!(store.inspect(&k).await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn dropping_stops_renewal() {
    let store: DynLeaseStore = Arc::new(MemoryStore::new());
    let leaser = Leaser::new(store.clone(), holder("a"), TTL);
    let k = key("k");
    let lease = hold(&leaser, &k).await;
    let lost = lease.lost();
    drop(lease);
    assert!(lost.is_cancelled());
    assert!(store.inspect(&k).await.unwrap().is_some(), "not released");
    tokio::time::sleep(TTL).await;
    assert_eq!(store.inspect(&k).await.unwrap(), None, "ran out by its TTL");
}

#[tokio::test(start_paused = true)]
async fn acquire_waits_for_release() {
    let store: DynLeaseStore = Arc::new(MemoryStore::new());
    let k = key("k");
    let first = hold(&Leaser::new(store.clone(), holder("a"), TTL), &k).await;
    let second = Leaser::new(store.clone(), holder("b"), TTL);
    assert!(matches!(
        second.acquire(&k, Duration::from_secs(1)).await.unwrap(),
        Acquire::Busy(_)
    ));
    let waiter = tokio::spawn({
        let k = k.clone();
        async move { second.acquire(&k, Duration::from_secs(60)).await }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let released_at = Instant::now();
    first.release().await.unwrap();
    let lease = waiter.await.unwrap().unwrap().held().expect("b gets it");
    assert_eq!(
        Instant::now(),
        released_at,
        "woken by the release, not a poll"
    );
    assert_eq!(lease.fence().holder, holder("b"));
}

#[tokio::test(start_paused = true)]
async fn one_winner_per_round() {
    let store: DynLeaseStore = Arc::new(MemoryStore::new());
    let k = key("export/round");
    let rounds: Vec<_> = (0..8)
        .map(|i| Round::new(store.clone(), k.clone(), holder(&format!("r{i}")), TTL))
        .collect();
    let mut last_token = None;
    for _ in 0..3 {
        let mut winners = Vec::new();
        for round in &rounds {
            if let Some(grant) = round.try_win().await.unwrap() {
                winners.push(grant);
            }
        }
        for round in &rounds {
            assert!(
                round.try_win().await.unwrap().is_none(),
                "nobody wins twice"
            );
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        assert!(Some(winners[0].token()) > last_token);
        last_token = Some(winners[0].token());
        let current = rounds[0].current().await.unwrap().unwrap();
        assert_eq!(current.fence(), winners[0].fence);
        assert!(
            current.remaining <= TTL,
            "the winner did not stretch its round"
        );
        tokio::time::sleep(TTL).await;
    }
}

#[tokio::test(start_paused = true)]
async fn round_repairs_a_corrupt_record() {
    let memory = MemoryStore::new();
    let store: DynLeaseStore = Arc::new(memory.clone());
    let k = key("export/round");
    let round = Round::new(store, k.clone(), holder("a"), TTL);
    memory.plant_corrupt_record(&k, "{{{");
    assert!(matches!(
        round.current().await,
        Err(LeaseError::Corrupt { .. })
    ));
    assert!(round.try_win().await.unwrap().is_some());
    assert!(round.current().await.unwrap().is_some());
}

#[tokio::test(start_paused = true)]
async fn a_leaser_holds_a_key_once() {
    let store: DynLeaseStore = Arc::new(MemoryStore::new());
    let k = key("k");
    let leaser = Leaser::new(store.clone(), holder("a"), TTL);
    let lease = hold(&leaser, &k).await;
    tokio::time::sleep(TTL / 2).await;
    let again = leaser
        .clone()
        .with_ttl(TTL * 10)
        .try_acquire(&k)
        .await
        .unwrap();
    let Acquire::Busy(record) = again else {
        panic!("a second HeldLease for one grant would release it twice")
    };
    assert_eq!(record.fence(), *lease.fence());
    assert!(record.remaining <= TTL, "the held grant was not refreshed");
    lease.release().await.unwrap();
    assert!(leaser.try_acquire(&k).await.unwrap().held().is_some());
}

#[tokio::test(start_paused = true)]
async fn many_leases_share_batched_renewals() {
    let store = Arc::new(Flaky::default());
    let leaser = Leaser::new(store.clone(), holder("a"), TTL);
    let mut leases = Vec::new();
    // Acquired over half a renewal period: they still share batches.
    for i in 0..1200 {
        leases.push(hold(&leaser, &key(&format!("many/{i}"))).await);
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
    let before = store.batches.load(Ordering::SeqCst);
    tokio::time::sleep(TTL * 3).await;
    let calls = store.batches.load(Ordering::SeqCst) - before;
    let renewals = store.renewals.load(Ordering::SeqCst);
    assert!(leases.iter().all(|l| !l.is_lost()), "a lease was lost");
    // 9 renewal periods; the leases fall in at most two groups a quarter
    // period apart, each of at most ceil(600 / 512) = 2 calls. A keeper
    // renewing each lease on its own would make 10,800 calls.
    assert!(
        calls <= 9 * 4 + 4,
        "{calls} renew_many calls for 1200 leases over 9 periods"
    );
    assert!(
        (1200 * 9..=1200 * 13).contains(&renewals),
        "{renewals} renewals for 1200 leases over 9 periods"
    );
    let stats = leaser.stats();
    assert_eq!(stats.held, 1200, "{stats:?}");
    assert!(
        stats.most_calls_in_flight <= lease_core::MAX_IN_FLIGHT,
        "{stats:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refusal_inside_a_batch_loses_only_that_lease() {
    let store = Arc::new(Flaky::default());
    let leaser = Leaser::new(store.clone(), holder("a"), TTL);
    let mut leases = Vec::new();
    for i in 0..5 {
        leases.push(hold(&leaser, &key(&format!("batch/{i}"))).await);
    }
    let thief = store
        .reclaim(leases[2].fence(), &holder("b"), TTL)
        .await
        .unwrap()
        .acquired()
        .unwrap();
    leases[2].lost().cancelled().await;
    match leases[2].lost_reason() {
        Some(LostReason::Refused(Some(record))) => assert_eq!(record.fence(), thief.fence),
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(TTL * 2).await;
    for (i, lease) in leases.iter().enumerate().filter(|(i, _)| *i != 2) {
        assert!(!lease.is_lost(), "lease {i} was lost with lease 2");
        assert!(store.check(lease.fence()).await.unwrap());
    }
    let stats = leaser.stats();
    assert_eq!((stats.held, stats.lost_refused), (4, 1), "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn each_lease_fires_at_its_own_deadline_inside_a_batch() {
    let store = Arc::new(Flaky::default());
    let leaser = Leaser::new(store.clone(), holder("a"), TTL);
    let mut leases = Vec::new();
    for i in 0..3 {
        leases.push(hold(&leaser, &key(&format!("deadline/{i}"))).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.hang_renewals.store(true, Ordering::SeqCst);
    for lease in &leases {
        let deadline = lease.deadline();
        lease.lost().cancelled().await;
        assert_eq!(Instant::now(), deadline, "fires at its own deadline");
        assert_eq!(lease.lost_reason(), Some(LostReason::DeadlinePassed));
    }
    assert_eq!(leaser.stats().lost_deadline, 3);
}

#[tokio::test(start_paused = true)]
async fn a_slow_store_sees_a_bounded_number_of_calls() {
    let store = Arc::new(Flaky::default());
    // Each call takes a fifth of the TTL: calls pile up unless bounded.
    store.batch_delay_ms.store(600, Ordering::SeqCst);
    let leaser = Leaser::new(store.clone(), holder("a"), TTL);
    let mut leases = Vec::new();
    for i in 0..3000 {
        leases.push(hold(&leaser, &key(&format!("slow/{i}"))).await);
    }
    tokio::time::sleep(TTL * 3).await;
    let stats = leaser.stats();
    assert!(
        stats.most_calls_in_flight <= lease_core::MAX_IN_FLIGHT,
        "{stats:?}"
    );
    assert!(
        leases.iter().all(|l| !l.is_lost()),
        "a lease was lost: {stats:?}"
    );
}
