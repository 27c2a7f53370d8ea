//! Concurrent claims and releases on Redis share script calls: each is
//! still decided as if it ran alone, and a caller that gives up before its
//! call is sent sends nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lease_core::{Claim, Fence, FencingToken, Holder, LeaseKey, LeaseStore};
use lease_redis::{CALLS_IN_FLIGHT, RedisConfig, RedisStore};
use lease_tests::{RedisServer, or_skip};
use tokio::sync::Barrier;

const TTL: Duration = Duration::from_secs(30);

fn key(text: &str) -> LeaseKey {
    LeaseKey::new(text).unwrap()
}

async fn store(server: &RedisServer, namespace: &str) -> RedisStore {
    RedisStore::connect(RedisConfig::new(server.url()).namespace(namespace))
        .await
        .expect("redis answers")
}

/// Claims started together, the i-th by `holders[i]` on `keys[i]`.
async fn claims_at_once(
    store: RedisStore,
    keys: Vec<LeaseKey>,
    holders: Vec<Holder>,
) -> Vec<(LeaseKey, Holder, Claim)> {
    let start = Arc::new(Barrier::new(keys.len()));
    let calls: Vec<_> = keys
        .into_iter()
        .zip(holders)
        .map(|(k, holder)| {
            let (store, start) = (store.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let claim = store.claim(&k, &holder, TTL).await.expect("claim");
                (k, holder, claim)
            })
        })
        .collect();
    let mut claims = Vec::new();
    for call in calls {
        claims.push(call.await.unwrap());
    }
    claims
}

/// Runs `work` while the server is frozen behind a claim and a release of
/// a key of their own: the claims and releases `work` makes go out beside
/// those, in shared script calls, and reach the server together when it
/// runs again.
async fn behind_a_frozen_call<T: Send + 'static>(
    server: &RedisServer,
    store: &RedisStore,
    work: impl Future<Output = T> + Send + 'static,
) -> T {
    server.pause().await.expect("pause");
    let holder = Holder::new("blocker", "1").unwrap();
    let blockers = {
        let store = store.clone();
        let fence = Fence {
            key: key("blocker/released"),
            holder: holder.clone(),
            token: FencingToken(1),
        };
        tokio::spawn(async move {
            let blocked = key("blocker");
            let claim = store.claim(&blocked, &holder, TTL);
            let _ = futures::join!(claim, store.release(&fence));
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let work = tokio::spawn(work);
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.resume().await.expect("resume");
    blockers.await.unwrap();
    work.await.unwrap()
}

/// Runs `work` and says how many claims and releases it sent, and in how
/// many script calls.
async fn counted<T>(store: &RedisStore, work: impl Future<Output = T>) -> (T, [u64; 4]) {
    let (claims, releases) = store.batch_stats();
    let out = work.await;
    let (claims_after, releases_after) = store.batch_stats();
    (
        out,
        [
            claims_after.calls - claims.calls,
            claims_after.batches - claims.batches,
            releases_after.calls - releases.calls,
            releases_after.batches - releases.batches,
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_of_many_keys_at_once_share_calls_and_each_gets_its_own_fresh_grant() {
    let Some(server) = or_skip("redis", RedisServer::start().await) else {
        return;
    };
    let store = store(&server, "batches").await;
    let keys = (0..64).map(|i| key(&format!("many/{i}"))).collect();
    let holders = (0..64)
        .map(|i| Holder::new(format!("h{i}"), "1").unwrap())
        .collect();
    let (claims, [claimed, claim_calls, ..]) =
        counted(&store, claims_at_once(store.clone(), keys, holders)).await;
    assert_eq!(claimed, 64);
    assert!(
        claim_calls < 64,
        "64 claims at once went out in {claim_calls} script calls: none were shared"
    );
    let mut tokens = HashSet::new();
    let mut fences = Vec::new();
    for (k, holder, claim) in claims {
        let grant = claim.acquired().unwrap_or_else(|| panic!("{k} was free"));
        assert!(grant.fresh, "{k}: a first claim is fresh");
        assert_eq!((&grant.fence.key, &grant.fence.holder), (&k, &holder));
        assert!(tokens.insert(grant.fence.token), "two grants share a token");
        let shown = store.inspect(&k).await.unwrap().expect("held");
        assert_eq!((shown.holder, shown.token), (holder, grant.fence.token));
        fences.push(grant.fence);
    }

    // Released at once, each by its own fence: each reports its release
    // and every key is free after. The tasks start inside the counted
    // window: started before it, they could send releases uncounted.
    let releases = {
        let (store, fences) = (store.clone(), fences.clone());
        async move {
            let start = Arc::new(Barrier::new(fences.len()));
            let releases: Vec<_> = fences
                .into_iter()
                .map(|fence| {
                    let (store, start) = (store.clone(), start.clone());
                    tokio::spawn(async move {
                        start.wait().await;
                        store.release(&fence).await.expect("release")
                    })
                })
                .collect();
            futures::future::join_all(releases).await
        }
    };
    let (released, [.., releases_sent, release_calls]) = counted(&store, releases).await;
    assert_eq!(releases_sent, 64);
    assert!(release_calls < 64, "no release call was shared");
    assert!(
        released.into_iter().all(|r| r.unwrap()),
        "a release was refused"
    );
    for fence in &fences {
        assert_eq!(
            store.inspect(&fence.key).await.unwrap(),
            None,
            "{} held",
            fence.key
        );
    }
    server.stop().await;
}

// One thread: the tasks a test starts at once run in the order started,
// each queueing its call before the collector takes the queue, so calls
// on one key share one script call.
#[tokio::test(flavor = "current_thread")]
async fn claims_of_one_key_in_one_call_are_decided_in_order() {
    let Some(server) = or_skip("redis", RedisServer::start().await) else {
        return;
    };
    let store = store(&server, "batches").await;

    // Rivals: exactly one wins, and every other is told who holds it.
    let rivals = (0..64)
        .map(|i| Holder::new(format!("rival{i}"), "1").unwrap())
        .collect();
    let work = claims_at_once(store.clone(), vec![key("one"); 64], rivals);
    let (claims, [_, calls, ..]) =
        counted(&store, behind_a_frozen_call(&server, &store, work)).await;
    assert!(calls <= 2, "the rivals' claims went out in {calls} calls");
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
    let winner = &winners[0];
    for (_, holder, claim) in &claims {
        match claim {
            Claim::Busy(record) => {
                assert_ne!(holder, &winner.holder);
                assert_eq!(
                    (&record.holder, record.token),
                    (&winner.holder, winner.token)
                );
            }
            Claim::Acquired(grant) => assert_eq!(grant.fence, *winner),
        }
    }

    // One holder claiming at once: every claim gets the one grant, one of
    // them fresh.
    let same = vec![Holder::new("same", "1").unwrap(); 32];
    let work = claims_at_once(store.clone(), vec![key("two"); 32], same);
    let (claims, [_, calls, ..]) =
        counted(&store, behind_a_frozen_call(&server, &store, work)).await;
    assert!(calls <= 2, "the holder's claims went out in {calls} calls");
    let grants: Vec<_> = claims
        .into_iter()
        .map(|(_, _, claim)| claim.acquired().expect("its own key"))
        .collect();
    assert_eq!(grants.iter().filter(|g| g.fresh).count(), 1);
    assert!(grants.iter().all(|g| g.fence == grants[0].fence));

    // Releases of one fence at once: one of them releases.
    let fence = grants[0].fence.clone();
    let (releaser, released_fence) = (store.clone(), fence.clone());
    let work = async move {
        let releases = (0..16).map(|_| {
            let (store, fence) = (releaser.clone(), released_fence.clone());
            tokio::spawn(async move { store.release(&fence).await.expect("release") })
        });
        futures::future::join_all(releases).await
    };
    let (released, [.., sent, calls]) =
        counted(&store, behind_a_frozen_call(&server, &store, work)).await;
    // The blocker's release, alone, then the sixteen together.
    assert_eq!(sent, 17);
    assert!(calls <= 2, "17 releases went out in {calls} calls");
    let released = released
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(released, 1, "one fence was released {released} times");

    // A claim after all that is fresh, with a higher token.
    let next = store
        .claim(&key("two"), &Holder::new("next", "1").unwrap(), TTL)
        .await
        .unwrap()
        .acquired()
        .expect("free");
    assert!(next.fresh && next.fence.token > fence.token);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_given_up_while_waiting_for_its_call_is_never_sent() {
    let Some(server) = or_skip("redis", RedisServer::start().await) else {
        return;
    };
    let store = RedisStore::connect(
        RedisConfig::new(server.url())
            .namespace("batches")
            .call_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let holder = Holder::new("a", "1").unwrap();
    // Warm: the scripts are loaded.
    let warm = store.claim(&key("warm"), &holder, TTL).await.unwrap();
    store
        .release(&warm.acquired().unwrap().fence)
        .await
        .unwrap();

    // With the server frozen, every call a store may have under way is
    // taken by claims that hang; the next claim waits for one of them to
    // end, and its caller gives up first.
    server.pause().await.expect("pause");
    let mut hung = Vec::new();
    for i in 0..CALLS_IN_FLIGHT {
        let (store, holder) = (store.clone(), holder.clone());
        hung.push(tokio::spawn(async move {
            store.claim(&key(&format!("hung/{i}")), &holder, TTL).await
        }));
        // Each goes out in a call of its own before the next is made.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (claims, _) = store.batch_stats();
    assert_eq!(claims.batches, 1 + CALLS_IN_FLIGHT as u64, "{claims:?}");
    let given_up = tokio::time::timeout(
        Duration::from_millis(50),
        store.claim(&key("second"), &holder, TTL),
    )
    .await;
    assert!(
        given_up.is_err(),
        "a claim answered while the server was frozen"
    );
    server.resume().await.expect("resume");
    // The hung ones were sent: each answers once the server runs again, or
    // ends by its timeout with its outcome unknown.
    for call in hung {
        match call.await.unwrap() {
            Ok(claim) => assert!(claim.acquired().is_some()),
            Err(e) => assert!(e.is_indeterminate(), "a hung call: {e:?}"),
        }
    }
    // The second never left the client.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store.inspect(&key("second")).await.unwrap(),
        None,
        "a claim whose caller gave up before it was sent was granted"
    );
    let (claims, _) = store.batch_stats();
    assert_eq!(
        claims.calls,
        1 + CALLS_IN_FLIGHT as u64,
        "sent: the warm-up claim and the hung ones; not the second"
    );
    server.stop().await;
}

/// Renewals and releases send the record they expect and the scripts
/// compare text: the record a claim writes, alone or in a shared call,
/// must be byte for byte the one the client builds from the fence, or
/// every renewal would be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_by_claims_are_the_ones_renewals_send() {
    let Some(server) = or_skip("a Redis server", RedisServer::start().await) else {
        return;
    };
    let store = store(&server, "records").await;
    let holder = Holder::new("wörker 7", "boot #3").unwrap();
    let alone = store.claim(&key("alone"), &holder, TTL).await.unwrap();
    let mut grants = vec![alone.acquired().expect("a free key")];
    let keys: Vec<_> = (0..8).map(|i| key(&format!("shared/{i}"))).collect();
    let holders = vec![holder.clone(); keys.len()];
    for (_, _, claim) in claims_at_once(store.clone(), keys, holders).await {
        grants.push(claim.acquired().expect("a free key"));
    }
    for grant in &grants {
        let stored = lease_redis::testing::stored_record(&store, &grant.fence.key)
            .await
            .unwrap();
        let sent = lease_redis::testing::fence_record(&grant.fence);
        assert_eq!(
            stored.as_deref(),
            Some(sent.as_str()),
            "the record of {}",
            grant.fence
        );
    }
    server.stop().await;
}
