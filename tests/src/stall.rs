//! Many leases held through a stalled server: the same check for every
//! backend.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use lease_conformance::lag::Lag;
use lease_core::{
    Acquire, DynLeaseStore, HeldLease, Holder, KeeperStats, LeaseKey, LeaseStore, Leaser,
};
use tokio::time::Instant;

/// What [`hold_through_a_stall`] saw, on its last try.
#[derive(Debug)]
pub struct Stalled {
    /// The keeper's counts at the end.
    pub stats: KeeperStats,
    /// Leases lost.
    pub lost: usize,
    /// The TTL of the try.
    pub ttl: Duration,
    /// Leases held on the try.
    pub held: usize,
    /// The longest this process's runtime was kept from running during
    /// the try ([`Lag`]): the machine starving the test, not the backend.
    pub starved: Duration,
    /// For leases lost before the stall: the slowest renewal call until
    /// then. No fault is injected yet, so a call that slow was slowed by
    /// the machine (the server or this process short of CPU), which
    /// starves the test as surely as a runtime kept from running.
    pub slow_before: Duration,
    /// The slowest answer of the server, asked directly (not through the
    /// store under test or the fault) to inspect a key every 100 ms,
    /// outside the stall: a server short of CPU on a busy machine renews
    /// late for every backend alike.
    pub server_slow: Duration,
    /// Tries made: a second, with twice the TTL, after a first that lost
    /// leases while starved.
    pub tries: u32,
}

impl Stalled {
    /// Whether the runner was starved enough to lose leases by itself: a
    /// stall of a twelfth of the TTL eats most of a renewal's margin.
    fn starved(&self) -> bool {
        self.starved.max(self.slow_before).max(self.server_slow) >= self.ttl / 12
    }

    /// Asserts the stall was felt (a renewal call waited on it; they take
    /// milliseconds otherwise), no lease was lost, and the keeper never had
    /// more calls under way than its bound. Leases lost while the runner
    /// itself was starved (on both tries) say nothing about the backend:
    /// the test ends `INCONCLUSIVE`, as a suite case does — never a pass,
    /// never a broken rule.
    pub fn assert_survived(&self) {
        assert!(
            self.lost == 0 || !self.starved(),
            "INCONCLUSIVE: {} leases lost while this test's runtime was kept from running for up to {:?}, or before any fault with renewal calls as slow as {:?}, or with the server taking {:?} to answer directly outside the stall (TTL {:?}, try {}): the machine starved the test; nothing is said about the backend. {self:?}",
            self.lost,
            self.starved,
            self.slow_before,
            self.server_slow,
            self.ttl,
            self.tries
        );
        assert_eq!(
            self.lost,
            0,
            "leases lost that did not have to be, the runtime never kept from running for {:?} or more, nor a call that slow before the stall, nor the server that slow to answer directly: {self:?}",
            self.ttl / 12
        );
        assert!(
            self.stats.longest_call >= self.ttl / 12,
            "no call felt the stall: {self:?}"
        );
        assert!(
            self.stats.most_calls_in_flight <= lease_core::MAX_IN_FLIGHT,
            "{self:?}"
        );
    }
}

/// Holds `n` leases of `ttl` with one leaser on `store` (`direct`: another
/// store on the same server, not through any fault, to time the server's
/// answers), stalls the server
/// with `stall(length)` for a third of the TTL while renewals are due, lets
/// it go with `resume`, watches two more renewal periods, and releases
/// them all. A try that lost leases while this process was starved is
/// made once more with twice the TTL (and twice the stall): more room for
/// a slow runner, the same test of the backend. When the leases were lost
/// before the stall, to renewal calls the machine slowed with no fault
/// injected yet, the machine cannot carry `n` leases at all: the second
/// try holds a quarter of them, still in full batches, through the same
/// fault.
pub async fn hold_through_a_stall<S, R>(
    store: DynLeaseStore,
    direct: DynLeaseStore,
    n: usize,
    ttl: Duration,
    stall: impl Fn(Duration) -> S,
    resume: impl Fn() -> R,
) -> Stalled
where
    S: Future<Output = ()>,
    R: Future<Output = ()>,
{
    let lag = Lag::default();
    let ticker = tokio::spawn(lag.clone().tick_in(lag.register()));
    let mut seen = try_once(&store, &direct, n, ttl, &lag, &stall, &resume).await;
    if seen.lost > 0 && seen.starved() {
        eprintln!(
            "{} of {} leases lost while the runtime was starved for {:?} (calls before the stall: up to {:?}; the server's direct answers: up to {:?}): trying again with a TTL of {:?}{}",
            seen.lost,
            seen.held,
            seen.starved,
            seen.slow_before,
            seen.server_slow,
            ttl * 2,
            if seen.slow_before >= ttl / 12 {
                ", a quarter of the leases"
            } else {
                ""
            }
        );
        // Lost before the stall: more than the machine carries.
        let n = if seen.slow_before >= ttl / 12 {
            n / 4
        } else {
            n
        };
        seen = try_once(&store, &direct, n, ttl * 2, &lag, &stall, &resume).await;
        seen.tries = 2;
    }
    ticker.abort();
    seen
}

async fn try_once<S, R>(
    store: &DynLeaseStore,
    direct: &DynLeaseStore,
    n: usize,
    ttl: Duration,
    lag: &Lag,
    stall: &impl Fn(Duration) -> S,
    resume: &impl Fn() -> R,
) -> Stalled
where
    S: Future<Output = ()>,
    R: Future<Output = ()>,
{
    let leaser = Leaser::new(store.clone(), Holder::unique("stall").expect("valid"), ttl);
    let leases = acquire_all(&leaser, &format!("stall/{}", rand::random::<u32>()), n).await;
    let from = Instant::now();
    let answers = Answers::default();
    let prober = tokio::spawn(answers.clone().probe(direct.clone(), ttl));
    // Two renewal periods of steady state, then the stall.
    tokio::time::sleep(ttl * 2 / 3).await;
    let before = leaser.stats();
    if before.held != n {
        // Lost in the steady state, before any stall: judged like losses
        // after it — a starved runtime, or renewal calls slowed by the
        // machine with no fault injected, make it inconclusive.
        eprintln!("lost before the stall: {before:?}");
        let lost = leases.iter().filter(|l| l.is_lost()).count();
        let starved = lag.worst(from, Instant::now());
        prober.abort();
        release_all(leases).await;
        return Stalled {
            server_slow: answers.slowest_outside(None),
            slow_before: before.longest_call,
            stats: before,
            lost,
            ttl,
            held: n,
            starved,
            tries: 1,
        };
    }
    let stall_began = Instant::now();
    stall(ttl / 3).await;
    let stalled = Instant::now();
    tokio::time::sleep(ttl / 3).await;
    resume().await;
    let stall_ended = Instant::now();
    eprintln!("stalled for {:?}", stalled.elapsed());
    tokio::time::sleep(ttl * 2 / 3).await;
    let stats = leaser.stats();
    let lost = leases.iter().filter(|l| l.is_lost()).count();
    let starved = lag.worst(from, Instant::now());
    eprintln!("the runtime was kept from running for up to {starved:?}");
    prober.abort();
    let server_slow = answers.slowest_outside(Some((stall_began, stall_ended)));
    eprintln!("the server answered directly within {server_slow:?} outside the stall");
    release_all(leases).await;
    Stalled {
        stats,
        lost,
        ttl,
        held: n,
        starved,
        slow_before: Duration::ZERO,
        server_slow,
        tries: 1,
    }
}

/// When each direct inspect of the server was sent, and how long it took.
#[derive(Clone, Default)]
struct Answers(std::sync::Arc<std::sync::Mutex<Vec<(Instant, Duration)>>>);

impl Answers {
    /// Inspects a key on `direct` every 100 ms, noting each answer's time
    /// (at most `limit` each), until aborted.
    async fn probe(self, direct: DynLeaseStore, limit: Duration) {
        let key = LeaseKey::new("stall/probe").expect("valid");
        loop {
            let sent = Instant::now();
            let _ = tokio::time::timeout(limit, direct.inspect(&key)).await;
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((sent, sent.elapsed()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The slowest answer of those not under way during `window`.
    fn slowest_outside(&self, window: Option<(Instant, Instant)>) -> Duration {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(sent, took)| {
                window.is_none_or(|(from, to)| *sent + *took < from || *sent > to)
            })
            .map(|(_, took)| *took)
            .max()
            .unwrap_or_default()
    }
}

async fn release_all(leases: Vec<HeldLease>) {
    futures::stream::iter(leases)
        .for_each_concurrent(64, |lease| async move {
            let _ = lease.release().await;
        })
        .await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(lost: usize, starved: Duration) -> Stalled {
        let mut stats = KeeperStats::default();
        stats.longest_call = Duration::from_secs(2);
        Stalled {
            stats,
            lost,
            ttl: Duration::from_secs(6),
            held: 10_000,
            starved,
            slow_before: Duration::ZERO,
            server_slow: Duration::ZERO,
            tries: 2,
        }
    }

    fn verdict(seen: &Stalled) -> Option<String> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| seen.assert_survived()))
            .err()
            .map(|e| *e.downcast::<String>().expect("a formatted message"))
    }

    #[test]
    fn losses_while_starved_are_inconclusive_and_others_fail() {
        assert_eq!(verdict(&seen(0, Duration::from_secs(1))), None);
        let starved = verdict(&seen(3, Duration::from_millis(500))).expect("not a pass");
        assert!(starved.starts_with("INCONCLUSIVE"), "{starved}");
        // Lost before the stall with calls slowed by the machine.
        let slow = Stalled {
            slow_before: Duration::from_millis(900),
            ..seen(3, Duration::from_millis(60))
        };
        let starved = verdict(&slow).expect("not a pass");
        assert!(starved.starts_with("INCONCLUSIVE"), "{starved}");
        // The server, asked directly outside the stall, slow to answer.
        let slow_server = Stalled {
            server_slow: Duration::from_millis(700),
            ..seen(3, Duration::from_millis(60))
        };
        let starved = verdict(&slow_server).expect("not a pass");
        assert!(starved.starts_with("INCONCLUSIVE"), "{starved}");
        let broken = verdict(&seen(3, Duration::from_millis(60))).expect("not a pass");
        assert!(
            broken.starts_with("assertion") && broken.contains("leases lost"),
            "{broken}"
        );
    }
}
