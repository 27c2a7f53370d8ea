//! Every etcd grant ends by etcd's clock, whatever the client loses: replies
//! lost or delayed by a proxy after etcd applied the request, futures
//! dropped mid-call, connections reset, a holder killed.
//!
//! Each test first makes sure its fault really happened (another client
//! sees the grant the lost reply created), then that another client can
//! claim the key by `last possible write + TTL + slack` — and not before the
//! old holder's deadline — and that the old fence is refused afterwards.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use lease_core::{
    Acquire, Claim, DynLeaseStore, Fence, Grant, Holder, LeaseError, LeaseKey, LeaseStore, Leaser,
};
use lease_etcd::{EtcdConfig, EtcdStore};
use lease_tests::{EtcdCluster, Fault, FaultProxy, or_skip};
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(2);
/// Polling and one claim's round trip, on top of TTL + slack.
const TOLERANCE: Duration = Duration::from_millis(500);

struct Rig {
    cluster: EtcdCluster,
    proxy: FaultProxy,
    /// The client under test, through the proxy.
    a: EtcdStore,
    /// Another client, straight to etcd.
    b: EtcdStore,
    slack: Duration,
}

async fn rig() -> Option<Rig> {
    let cluster = or_skip("etcd", EtcdCluster::start().await)?;
    let proxy = FaultProxy::start(&cluster.endpoints()[0]).await.unwrap();
    let a = EtcdStore::connect(
        EtcdConfig::new([proxy.endpoint()]).call_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    let b = EtcdStore::connect(EtcdConfig::new(cluster.endpoints().to_vec()))
        .await
        .unwrap();
    let slack = b.capabilities().expiry_slack;
    Some(Rig {
        cluster,
        proxy,
        a,
        b,
        slack,
    })
}

fn key(text: &str) -> LeaseKey {
    LeaseKey::new(text).unwrap()
}

fn holder(id: &str) -> Holder {
    Holder::new(id, "1").unwrap()
}

impl Rig {
    /// Polls `b`'s claim of `key` until acquired: not before `not_before`
    /// (the old holder may still act until then), and by `by`.
    async fn next_holder(&self, key: &LeaseKey, not_before: Instant, by: Instant) -> Grant {
        loop {
            let sent = Instant::now();
            let claim = self.b.claim(key, &holder("b"), TTL).await;
            if let Ok(Claim::Acquired(grant)) = claim {
                // b owns the key from its reply on.
                let at = Instant::now();
                assert!(
                    at >= not_before,
                    "b was granted {key} {:?} before the old holder's deadline",
                    not_before - at
                );
                eprintln!(
                    "{key}: next holder {:?} before the bound",
                    by.saturating_duration_since(sent)
                );
                return grant;
            }
            // Busy is wrong only for a claim sent after the bound.
            assert!(
                sent <= by,
                "{key} was still held past last write + TTL + slack: {claim:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `b` sees `key` held by `a` (the lost reply's request was applied).
    async fn held_by_a(&self, key: &LeaseKey) -> Fence {
        let record = self.b.inspect(key).await.unwrap();
        let record = record.unwrap_or_else(|| panic!("{key} is free: the fault did not happen"));
        assert_eq!(record.holder, holder("a"));
        Fence {
            key: key.clone(),
            holder: record.holder,
            token: record.token,
        }
    }

    /// After `b` holds the key, `a` (healed) is refused with `old`.
    async fn old_fence_refused(&self, old: &Fence) {
        self.proxy.heal();
        let renewed = retry_transient(|| self.a.renew(old, TTL)).await;
        assert!(
            matches!(renewed, Err(LeaseError::Lost { .. })),
            "renew with the old fence gave {renewed:?}"
        );
        let target = key("faults/guarded");
        let written = retry_transient(|| self.a.guarded_write(old, &target, b"late")).await;
        assert!(
            matches!(written, Err(LeaseError::Lost { .. })),
            "a guarded write with the old fence gave {written:?}"
        );
        assert_eq!(self.b.read_guarded(&target).await.unwrap(), None);
    }
}

/// Calls again while the answer is a connection error (after a reset).
async fn retry_transient<T, F: Future<Output = Result<T, LeaseError>>>(
    mut call: impl FnMut() -> F,
) -> Result<T, LeaseError> {
    for _ in 0..20 {
        match call().await {
            Err(LeaseError::Backend { .. } | LeaseError::Timeout { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
    call().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_whose_reply_is_lost_ends_by_etcds_clock() {
    let Some(rig) = rig().await else {
        return;
    };
    let k = key("faults/renewal");
    let grant = rig
        .a
        .claim(&k, &holder("a"), TTL)
        .await
        .unwrap()
        .acquired()
        .unwrap();
    // Renew late in the grant, so that a renewal etcd did not apply would
    // let b in before `renewed + TTL`.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rig.proxy
        .set(Fault::DelayReplies(Duration::from_millis(400)));
    let renewed = Instant::now();
    // The read comes back at 400 ms; the keep-alive reaches etcd and its
    // reply would come at 800 ms: the caller gives up at 600 ms.
    let outcome =
        tokio::time::timeout(Duration::from_millis(600), rig.a.renew(&grant.fence, TTL)).await;
    assert!(outcome.is_err(), "the renewal was not cut off: {outcome:?}");
    let gave_up = Instant::now();
    rig.proxy.set(Fault::LoseReplies);
    let next = rig
        .next_holder(&k, renewed + TTL, gave_up + TTL + rig.slack + TOLERANCE)
        .await;
    assert!(next.token() > grant.token());
    rig.old_fence_refused(&grant.fence).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_reply_is_lost_ends_by_etcds_clock() {
    let Some(rig) = rig().await else {
        return;
    };
    // A lease in the pool, so the claim is one transaction.
    let warm = rig
        .a
        .claim(&key("faults/warm"), &holder("a"), TTL)
        .await
        .unwrap()
        .acquired()
        .unwrap();
    assert!(rig.a.release(&warm.fence).await.unwrap());
    let k = key("faults/claim");
    rig.proxy.set(Fault::LoseReplies);
    let sent = Instant::now();
    let claimed = rig.a.claim(&k, &holder("a"), TTL).await;
    let gave_up = Instant::now();
    assert!(
        claimed.as_ref().is_err_and(LeaseError::is_indeterminate),
        "a claim without a reply gave {claimed:?}"
    );
    let fence = rig.held_by_a(&k).await;
    rig.next_holder(&k, sent + TTL, gave_up + TTL + rig.slack + TOLERANCE)
        .await;
    rig.old_fence_refused(&fence).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_dropped_while_its_renewal_is_in_flight_ends_by_etcds_clock() {
    let Some(rig) = rig().await else {
        return;
    };
    let k = key("faults/dropped");
    let store: DynLeaseStore = Arc::new(rig.a.clone());
    let leaser = Leaser::new(store, holder("a"), TTL);
    let Acquire::Held(lease) = leaser.try_acquire(&k).await.unwrap() else {
        panic!("{k} is free")
    };
    rig.proxy
        .set(Fault::DelayReplies(Duration::from_millis(400)));
    // Wait for a renewal's keep-alive to be on its way, then drop the lease.
    let started = Instant::now();
    while rig.a.lease_counts().keep_alives_in_flight == 0 {
        assert!(started.elapsed() < TTL * 2, "no renewal was sent");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let deadline = lease.deadline();
    let fence = lease.fence().clone();
    drop(lease);
    let dropped = Instant::now();
    drop(leaser);
    rig.proxy.set(Fault::LoseReplies);
    rig.next_holder(&k, deadline, dropped + TTL + rig.slack + TOLERANCE)
        .await;
    rig.old_fence_refused(&fence).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_cancelled_by_the_callers_timeout_ends_by_etcds_clock() {
    let Some(rig) = rig().await else {
        return;
    };
    let k = key("faults/cancelled");
    let store: DynLeaseStore = Arc::new(rig.a.clone());
    let leaser = Leaser::new(store, holder("a"), TTL);
    // The pool is empty: the lease grant comes back at 400 ms, the claim's
    // transaction is applied then, and its reply would come at 800 ms.
    rig.proxy
        .set(Fault::DelayReplies(Duration::from_millis(400)));
    let sent = Instant::now();
    let acquired = tokio::time::timeout(Duration::from_millis(600), leaser.acquire(&k, TTL)).await;
    assert!(
        acquired.is_err(),
        "the acquire was not cut off: {acquired:?}"
    );
    let gave_up = Instant::now();
    let fence = rig.held_by_a(&k).await;
    rig.next_holder(&k, sent + TTL, gave_up + TTL + rig.slack + TOLERANCE)
        .await;
    rig.old_fence_refused(&fence).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_blips_and_many_ttls_leave_no_stream_or_lease_behind() {
    let Some(rig) = rig().await else {
        return;
    };
    let store: DynLeaseStore = Arc::new(rig.a.clone());
    let mut leases = Vec::new();
    for secs in 1..=4 {
        let leaser = Leaser::new(store.clone(), holder("a"), Duration::from_secs(secs));
        for i in 0..5 {
            let k = key(&format!("faults/blips/{secs}/{i}"));
            let Acquire::Held(lease) = leaser.try_acquire(&k).await.unwrap() else {
                panic!("{k} is free")
            };
            leases.push(lease);
        }
    }
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        rig.proxy.reset_connections();
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    for lease in leases {
        // Lost or not, each ends; a release may fail on a reset connection.
        let _ = lease.release().await;
    }
    // Past the pool's grace and the longest lease's expiry.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let counts = rig.a.lease_counts();
    assert_eq!(counts.keep_alive_streams, 0, "{counts:?}");
    assert!(counts.idle_leases <= 1, "{counts:?}");
    assert_eq!(counts.leases_in_use, 0, "{counts:?}");
    let mut client = Client::connect(rig.cluster.endpoints(), None)
        .await
        .unwrap();
    let alive = client.leases().await.unwrap().leases().len();
    assert!(
        alive <= 1,
        "{alive} etcd leases alive after every grant ended ({counts:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_is_replaced_within_ttl_and_slack() {
    use tokio::io::AsyncBufReadExt;
    let Some(rig) = rig().await else {
        return;
    };
    let k = key("faults/killed");
    let target = format!("etcd://{}", rig.cluster.endpoints()[0]);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hold-lease"))
        .args([&target, k.as_str(), &TTL.as_millis().to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("the holder reports within 10 s")
        .unwrap()
        .expect("the holder prints a line");
    let token: u64 = line
        .strip_prefix("held ")
        .and_then(|t| t.parse().ok())
        .unwrap();
    // Let it renew a few times first.
    tokio::time::sleep(TTL * 2).await;
    child.start_kill().unwrap();
    let killed = Instant::now();
    child.wait().await.unwrap();
    let next = rig
        .next_holder(&k, killed, killed + TTL + rig.slack + TOLERANCE)
        .await;
    assert!(next.token().0 > token);
    eprintln!(
        "killed holder replaced after {:?} (TTL {TTL:?})",
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_leases_outlive_replies_delayed_for_a_third_of_the_ttl() {
    let Some(rig) = rig().await else {
        return;
    };
    // Through the proxy, with a call timeout the delay stays inside.
    let store = EtcdStore::connect(
        EtcdConfig::new([rig.proxy.endpoint()]).call_timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    let ttl = Duration::from_secs(6);
    let watched = store.clone();
    let most_in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sampler = {
        let most = most_in_flight.clone();
        tokio::spawn(async move {
            loop {
                let now = watched.lease_counts().keep_alives_in_flight;
                most.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let seen = lease_tests::hold_through_a_stall(
        Arc::new(store.clone()),
        Arc::new(rig.b.clone()),
        10_000,
        ttl,
        |length| {
            rig.proxy.set(Fault::DelayReplies(length));
            async {}
        },
        || async { rig.proxy.set(Fault::None) },
    )
    .await;
    sampler.abort();
    let most_in_flight = most_in_flight.load(std::sync::atomic::Ordering::Relaxed);
    seen.assert_survived();
    // Keep-alives under way stay within what the keeper's calls carry.
    assert!(
        most_in_flight <= lease_core::MAX_IN_FLIGHT * lease_core::MAX_BATCH,
        "{most_in_flight} keep-alives in flight at once"
    );
}
