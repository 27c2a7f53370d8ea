//! lease-redis on a primary under Sentinel: a failover while leases are
//! held and renewed.

use std::sync::Arc;
use std::time::Duration;

use lease_core::{Claim, DynLeaseStore, Holder, LeaseKey, LeaseStore, Leaser};
use lease_redis::{RedisConfig, RedisStore};
use lease_tests::{RedisSentinel, acquire_all, or_skip};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_keeps_tokens_increasing_and_every_lease_either_survives_or_is_told() {
    failover(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_a_failover_never_lets_two_holders_overlap() {
    failover(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_a_write_no_replica_acknowledged_fails_as_indeterminate() {
    let Some(mut deployment) = or_skip("redis sentinel", RedisSentinel::start().await) else {
        return;
    };
    let store = RedisStore::connect(
        RedisConfig::new(deployment.url())
            .namespace("wait")
            .wait_for_replicas(1, Duration::from_millis(200)),
    )
    .await
    .expect("connect");
    let a = Holder::new("a", "1").unwrap();
    let k = LeaseKey::new("k").unwrap();
    let grant = store
        .claim(&k, &a, Duration::from_secs(5))
        .await
        .unwrap()
        .acquired()
        .unwrap();
    deployment.kill_replica().await.unwrap();
    let err = store
        .renew(&grant.fence, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.is_indeterminate(), "{err}");
    assert!(
        err.to_string().contains("reached 0 of the 1 replicas"),
        "{err}"
    );
    let refused = RedisStore::connect(
        RedisConfig::new("redis+cluster://127.0.0.1:1")
            .wait_for_replicas(1, Duration::from_millis(200)),
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("not a cluster"), "{refused}");
}

/// Leases held and renewed through a failover, a rival claiming all along.
/// With `wait`, every write waits for a replica, and there are two, so the
/// new primary still has one.
async fn failover(wait: bool) {
    let replicas = if wait { 2 } else { 1 };
    let Some(mut deployment) = or_skip(
        "redis sentinel",
        RedisSentinel::start_with_replicas(replicas).await,
    ) else {
        return;
    };
    let connect = || async {
        let mut config = RedisConfig::new(deployment.url())
            .namespace("failover")
            .call_timeout(Duration::from_millis(500));
        if wait {
            config = config.wait_for_replicas(1, Duration::from_millis(200));
        }
        RedisStore::connect(config).await.expect("connect")
    };
    let store: DynLeaseStore = Arc::new(connect().await);
    let rival = connect().await;
    let ttl = Duration::from_secs(4);
    let leaser = Leaser::new(store.clone(), Holder::new("a", "1").unwrap(), ttl)
        .renew_every(Duration::from_millis(300));
    let held = acquire_all(&leaser, "job", 50).await;
    let highest = held.iter().map(|l| l.fence().token).max().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let old = deployment.primary_port().await.unwrap();
    let killed = Instant::now();
    deployment.kill_primary().await.unwrap();
    // A rival claims every key all through the failover.
    let b = Holder::new("b", "1").unwrap();
    let mut granted = vec![None; held.len()];
    let new = deployment
        .wait_for_new_primary(old, Duration::from_secs(20))
        .await
        .expect("failover");
    let failed_over = killed.elapsed();
    // The rival claims for two TTLs, then on while a lease the holder lost
    // is still not granted: with `wait`, writes (the rival's too) fail
    // until Sentinel has attached a replica to the new primary, which may
    // take longer than a TTL — unavailable, not unsafe.
    let settled = Instant::now() + ttl * 2;
    let give_up = settled + Duration::from_secs(30);
    loop {
        let now = Instant::now();
        let pending = held
            .iter()
            .zip(&granted)
            .any(|(lease, g)| g.is_none() && lease.is_lost());
        if now >= give_up || (now >= settled && !pending) {
            break;
        }
        let claims = held.iter().zip(&granted).map(|(lease, g)| {
            let (rival, b) = (&rival, &b);
            async move {
                match g {
                    None => match rival.claim(&lease.fence().key, b, ttl).await {
                        Ok(Claim::Acquired(grant)) => Some((Instant::now(), grant)),
                        _ => None,
                    },
                    Some(_) => None,
                }
            }
        });
        let answers = futures::future::join_all(claims).await;
        for (slot, answer) in granted.iter_mut().zip(answers) {
            if slot.is_none() {
                *slot = answer;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let lost = held.iter().filter(|l| l.is_lost()).count();
    let overlaps = held
        .iter()
        .zip(&granted)
        .filter(|(lease, g)| g.as_ref().is_some_and(|(at, _)| *at < lease.deadline()))
        .count();
    eprintln!(
        "failover (wait {wait}) from :{old} to :{new} in {failed_over:?}; of {} leases {lost} fired lost, {} survived; {} granted to a rival, {overlaps} inside the old holder's deadline",
        held.len(),
        held.len() - lost,
        granted.iter().filter(|g| g.is_some()).count(),
    );
    if wait {
        assert_eq!(
            overlaps, 0,
            "a rival was granted a key inside its old holder's deadline"
        );
    }
    for (lease, g) in held.iter().zip(&granted) {
        match g {
            // A rival got it: only after the holder was told, with a higher token.
            Some((_, grant)) => {
                assert!(
                    lease.is_lost(),
                    "{} granted to a rival while its holder still holds it",
                    lease.fence().key
                );
                assert!(
                    grant.fence.token > highest,
                    "token {} after the failover is not above {highest}",
                    grant.fence.token
                );
            }
            // Nobody else got it: the holder still has it, on the new primary.
            None => {
                assert!(
                    !lease.is_lost(),
                    "{} lost, yet nobody else could claim it",
                    lease.fence().key
                );
                lease_tests::assert_shows(&rival, lease).await;
            }
        }
    }
    let fresh = rival
        .claim(&LeaseKey::new("after").unwrap(), &b, ttl)
        .await
        .unwrap()
        .acquired()
        .unwrap();
    assert!(
        fresh.fence.token > highest,
        "tokens increase across the failover"
    );
}
