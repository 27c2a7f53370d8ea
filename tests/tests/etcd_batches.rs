//! Concurrent claims and releases on etcd share transactions: each is still
//! decided as if it ran alone, a key claimed twice in one batch is written
//! once per transaction, and a batch that meets an expired lease falls back
//! to claims of their own.
//!
//! The tests run on one thread, so tasks started together run in the order
//! started: a first call goes out alone, and the calls made while it is
//! under way queue and go out together.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;

use lease_core::{Claim, Fence, Holder, LeaseKey, LeaseStore};
use lease_etcd::{EtcdConfig, EtcdStore};
use lease_tests::{EtcdCluster, or_skip};

const TTL: Duration = Duration::from_secs(30);

fn key(text: &str) -> LeaseKey {
    LeaseKey::new(text).unwrap()
}

async fn connect(cluster: &EtcdCluster) -> EtcdStore {
    EtcdStore::connect(EtcdConfig::new(cluster.endpoints().to_vec()))
        .await
        .expect("etcd answers")
}

/// A claim of a key of its own goes out first, alone; then the claims of
/// `keys` by `holders`, started together behind it.
async fn claims_behind_another(
    store: &EtcdStore,
    keys: Vec<LeaseKey>,
    holders: Vec<Holder>,
) -> Vec<(LeaseKey, Holder, Claim)> {
    let first = {
        let store = store.clone();
        tokio::spawn(async move {
            let holder = Holder::new("first", "1").unwrap();
            store.claim(&key("first"), &holder, TTL).await.unwrap()
        })
    };
    tokio::task::yield_now().await;
    let calls: Vec<_> = keys
        .into_iter()
        .zip(holders)
        .map(|(k, holder)| {
            let store = store.clone();
            tokio::spawn(async move {
                let claim = store.claim(&k, &holder, TTL).await.expect("claim");
                (k, holder, claim)
            })
        })
        .collect();
    let mut claims = Vec::new();
    for call in calls {
        claims.push(call.await.unwrap());
    }
    assert!(
        first.await.unwrap().acquired().is_some(),
        "first is its own key"
    );
    claims
}

/// Claims sent in shared transactions by `store` so far.
fn claim_batches(store: &EtcdStore) -> (u64, u64) {
    let (claims, _) = store.batch_stats();
    (claims.calls, claims.batches)
}

#[tokio::test(flavor = "current_thread")]
async fn claims_at_once_share_transactions_and_each_gets_its_own_grant() {
    let Some(cluster) = or_skip("etcd", EtcdCluster::start().await) else {
        return;
    };
    let store = connect(&cluster).await;
    let other = connect(&cluster).await;
    let keys: Vec<_> = (0..64).map(|i| key(&format!("many/{i}"))).collect();
    let holders = (0..64)
        .map(|i| Holder::new(format!("h{i}"), "1").unwrap())
        .collect();
    // Every take from the pool in the first round comes after this.
    let first_round = Instant::now();
    let claims = claims_behind_another(&store, keys.clone(), holders).await;
    let (calls, batches) = claim_batches(&store);
    assert_eq!(calls, 65);
    assert!(batches <= 3, "65 claims went out in {batches} transactions");
    let mut fences = Vec::new();
    for (k, holder, claim) in claims {
        let grant = claim.acquired().unwrap_or_else(|| panic!("{k} was free"));
        assert!(grant.fresh);
        assert_eq!((&grant.fence.key, &grant.fence.holder), (&k, &holder));
        // Another client sees each grant, with its token.
        let shown = other.inspect(&k).await.unwrap().expect("held");
        assert_eq!((shown.holder, shown.token), (holder, grant.fence.token));
        fences.push(grant.fence);
    }

    // Released at once: each release reports itself, every key is free,
    // and each lease went back to the pool (none left to expire).
    let releases: Vec<_> = fences
        .iter()
        .cloned()
        .map(|fence| {
            let store = store.clone();
            tokio::spawn(async move { store.release(&fence).await.expect("release") })
        })
        .collect();
    for release in releases {
        assert!(release.await.unwrap(), "a release was refused");
    }
    let (_, releases) = store.batch_stats();
    assert!(
        releases.batches < releases.calls,
        "no release shared a transaction: {releases:?}"
    );
    let shown = futures::future::join_all(fences.iter().map(|f| other.inspect(&f.key))).await;
    for (fence, shown) in fences.iter().zip(shown) {
        assert_eq!(shown.unwrap(), None, "{} is still held", fence.key);
    }
    let counts = store.lease_counts();
    assert_eq!(
        counts.leases_in_use, 1,
        "{counts:?}: only `first` holds one"
    );

    // Claimed again at once: fresh grants, higher tokens, on the pool's
    // leases.
    let holders = (0..64)
        .map(|i| Holder::new(format!("again{i}"), "1").unwrap())
        .collect();
    let again = claims_behind_another(&store, keys, holders).await;
    // Idle leases of a TTL nobody claimed for the pool's grace are
    // revoked, counted from the last take: reuse is certain only if the
    // second round ended within the grace of the first round's start. A
    // runner slower than that says nothing about reuse.
    let between = first_round.elapsed();
    for ((_, _, claim), old) in again.into_iter().zip(&fences) {
        let grant = claim.acquired().expect("free");
        assert!(grant.fresh && grant.fence.token > old.token);
    }
    // The pool held 64 idle leases for 65 claims (`first`'s is taken and
    // given back once it finds its key held).
    let granted = store.lease_counts().leases_granted - counts.leases_granted;
    if between < lease_etcd::POOL_IDLE_GRACE {
        assert!(
            granted <= 1,
            "the second round granted {granted} leases instead of reusing the pool's"
        );
    } else {
        eprintln!(
            "inconclusive: both rounds took {between:?}, past the pool's idle grace of {:?}: reuse not judged ({granted} granted anew)",
            lease_etcd::POOL_IDLE_GRACE
        );
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn claims_at_once_of_free_and_held_keys_each_get_their_own_answer() {
    let Some(cluster) = or_skip("etcd", EtcdCluster::start().await) else {
        return;
    };
    let store = connect(&cluster).await;
    let keys: Vec<_> = (0..32).map(|i| key(&format!("mixed/{i}"))).collect();
    let owner = Holder::new("owner", "1").unwrap();
    let mut held = std::collections::HashMap::new();
    for k in keys.iter().step_by(2) {
        let grant = store.claim(k, &owner, TTL).await.unwrap();
        held.insert(k.clone(), grant.acquired().expect("free").fence);
    }
    let holders = (0..32)
        .map(|i| Holder::new(format!("h{i}"), "1").unwrap())
        .collect();
    let (_, batches_before) = claim_batches(&store);
    let claims = claims_behind_another(&store, keys, holders).await;
    let (_, batches_after) = claim_batches(&store);
    assert!(
        batches_after - batches_before <= 3,
        "33 claims went out in {} transactions",
        batches_after - batches_before
    );
    for (k, holder, claim) in claims {
        match (claim, held.get(&k)) {
            (Claim::Busy(record), Some(fence)) => assert!(record.is(fence), "{k}: {record:?}"),
            (Claim::Acquired(grant), None) => {
                assert_eq!((&grant.fence.key, &grant.fence.holder), (&k, &holder));
                let shown = store.inspect(&k).await.unwrap().expect("held");
                assert_eq!((shown.holder, shown.token), (holder, grant.fence.token));
            }
            (claim, owner) => panic!("{k} (held: {owner:?}) was answered {claim:?}"),
        }
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn claims_of_one_key_in_one_batch_are_decided_in_order() {
    let Some(cluster) = or_skip("etcd", EtcdCluster::start().await) else {
        return;
    };
    let store = connect(&cluster).await;

    // Rivals: exactly one wins, every other is told who holds it.
    let rivals = (0..32)
        .map(|i| Holder::new(format!("rival{i}"), "1").unwrap())
        .collect();
    let claims = claims_behind_another(&store, vec![key("one"); 32], rivals).await;
    let (_, batches) = claim_batches(&store);
    assert!(batches < 33, "the rivals' claims never shared a batch");
    let winners: Vec<Fence> = claims
        .iter()
        .filter_map(|(_, _, claim)| claim.clone().acquired().map(|g| g.fence))
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{} rivals acquired one key",
        winners.len()
    );
    for (_, holder, claim) in &claims {
        if let Claim::Busy(record) = claim {
            assert_ne!(holder, &winners[0].holder);
            assert_eq!(
                (&record.holder, record.token),
                (&winners[0].holder, winners[0].token)
            );
        }
    }

    // One holder at once: one grant for all, one of them fresh.
    let same = vec![Holder::new("same", "1").unwrap(); 16];
    let claims = claims_behind_another(&store, vec![key("two"); 16], same).await;
    let grants: Vec<_> = claims
        .into_iter()
        .map(|(_, _, claim)| claim.acquired().expect("its own key"))
        .collect();
    assert_eq!(grants.iter().filter(|g| g.fresh).count(), 1);
    assert!(grants.iter().all(|g| g.fence == grants[0].fence));

    // Releases of one fence at once, behind a release of another key: one
    // of them releases.
    let holder = Holder::new("other", "1").unwrap();
    let other = store.claim(&key("other"), &holder, TTL).await.unwrap();
    let other = other.acquired().expect("free").fence;
    let before = store.batch_stats().1;
    let first = {
        let store = store.clone();
        tokio::spawn(async move { store.release(&other).await.expect("release") })
    };
    tokio::task::yield_now().await;
    let releases: Vec<_> = (0..8)
        .map(|_| {
            let (store, fence) = (store.clone(), grants[0].fence.clone());
            tokio::spawn(async move { store.release(&fence).await.expect("release") })
        })
        .collect();
    let mut released = 0;
    for release in releases {
        released += usize::from(release.await.unwrap());
    }
    assert!(first.await.unwrap());
    let after = store.batch_stats().1;
    assert!(
        after.batches - before.batches <= 3,
        "9 releases went out in {} transactions",
        after.batches - before.batches
    );
    assert_eq!(released, 1, "one fence was released {released} times");
    cluster.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_that_meets_an_expired_lease_grants_every_claim_on_another() {
    let Some(cluster) = or_skip("etcd", EtcdCluster::start().await) else {
        return;
    };
    let store = connect(&cluster).await;
    // Fill the pool: 32 leases, idle after their grants' releases.
    let keys: Vec<_> = (0..32).map(|i| key(&format!("pool/{i}"))).collect();
    let holders: Vec<_> = (0..32)
        .map(|i| Holder::new(format!("h{i}"), "1").unwrap())
        .collect();
    for (_, _, claim) in claims_behind_another(&store, keys.clone(), holders.clone()).await {
        assert!(
            store
                .release(&claim.acquired().unwrap().fence)
                .await
                .unwrap()
        );
    }
    // etcd loses one of them (as when it expired while the store was
    // stalled): the next shared transaction that carries it is refused.
    let mut client = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    let leases = client.leases().await.unwrap();
    let ids: HashSet<i64> = leases.leases().iter().map(|l| l.id()).collect();
    let lost = *ids.iter().next().expect("the pool holds leases");
    client.lease_revoke(lost).await.unwrap();

    let claims = claims_behind_another(&store, keys, holders).await;
    for (k, holder, claim) in claims {
        let grant = claim
            .acquired()
            .unwrap_or_else(|| panic!("{k} was not granted"));
        let shown = store.inspect(&k).await.unwrap().expect("held");
        assert_eq!((shown.holder, shown.token), (holder, grant.fence.token));
    }
    // Every grant hangs on a live lease: none on the revoked one.
    let live: HashSet<i64> = client
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    assert!(!live.contains(&lost));
    let got = client
        .get("", Some(etcd_client::GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    for kv in got.kvs() {
        if kv.key_str().unwrap().contains("/lease/pool/") {
            assert!(
                live.contains(&kv.lease()),
                "{:?} hangs on a gone lease",
                kv.key_str()
            );
        }
    }
    cluster.stop().await;
}
