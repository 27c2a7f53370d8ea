//! Every rule of the contract on the in-memory store, on a manual clock: no
//! sleeps, no flakiness.

use std::sync::Arc;
use std::time::Duration;

use lease_core::{
    Capabilities, Claim, Fence, FencingToken, Grant, Holder, LeaseError, LeaseKey, LeaseStore,
    ManualClock, MemoryStore,
};

const TTL: Duration = Duration::from_secs(10);

fn setup() -> (MemoryStore, ManualClock) {
    let clock = ManualClock::new();
    (MemoryStore::with_clock(Arc::new(clock.clone())), clock)
}

fn key(text: &str) -> LeaseKey {
    LeaseKey::new(text).unwrap()
}

fn holder(id: &str, incarnation: &str) -> Holder {
    Holder::new(id, incarnation).unwrap()
}

async fn acquire(store: &MemoryStore, k: &LeaseKey, h: &Holder) -> Grant {
    match store.claim(k, h, TTL).await.unwrap() {
        Claim::Acquired(grant) => grant,
        Claim::Busy(record) => panic!("{h} expected to acquire {k}, busy with {record:?}"),
    }
}

#[tokio::test]
async fn claim_grants_a_free_key_and_reports_busy_otherwise() {
    let (store, _) = setup();
    let (k, a, b) = (key("jobs/a"), holder("a", "1"), holder("b", "1"));
    let grant = acquire(&store, &k, &a).await;
    assert!(grant.fresh);
    assert_eq!(grant.ttl, TTL);
    assert_eq!(grant.fence.holder, a);
    let Claim::Busy(record) = store.claim(&k, &b, TTL).await.unwrap() else {
        panic!("b must be busy");
    };
    assert_eq!(record.fence(), grant.fence);
    assert_eq!(record.remaining, TTL);
}

#[tokio::test]
async fn same_id_other_incarnation_is_busy() {
    let (store, _) = setup();
    let k = key("k");
    acquire(&store, &k, &holder("w", "boot-1")).await;
    let outcome = store.claim(&k, &holder("w", "boot-2"), TTL).await.unwrap();
    assert!(outcome.busy().is_some(), "{outcome:?}");
}

#[tokio::test]
async fn same_holder_reclaim_keeps_token_and_refreshes_ttl() {
    let (store, clock) = setup();
    let (k, a) = (key("k"), holder("a", "1"));
    let first = acquire(&store, &k, &a).await;
    clock.advance(Duration::from_secs(8));
    let again = acquire(&store, &k, &a).await;
    assert!(!again.fresh);
    assert_eq!(again.token(), first.token());
    clock.advance(Duration::from_secs(5));
    let record = store
        .inspect(&k)
        .await
        .unwrap()
        .expect("refreshed grant still live");
    assert_eq!(record.remaining, Duration::from_secs(5));
}

#[tokio::test]
async fn tokens_increase_across_release_expiry_reclaim_and_repair() {
    let (store, clock) = setup();
    let k = key("k");
    let (a, b, c) = (holder("a", "1"), holder("b", "1"), holder("c", "1"));
    let mut tokens = vec![acquire(&store, &k, &a).await.token()];
    // release
    let released = acquire(&store, &k, &a).await.fence;
    assert!(store.release(&released).await.unwrap());
    tokens.push(acquire(&store, &k, &b).await.token());
    // expiry
    clock.advance(TTL);
    let after_expiry = acquire(&store, &k, &c).await;
    tokens.push(after_expiry.token());
    // reclaim of a live grant
    let taken = store.reclaim(&after_expiry.fence, &a, TTL).await.unwrap();
    tokens.push(taken.acquired().expect("reclaim wins").token());
    // a corrupt record, repaired by the takeover
    store.plant_corrupt_record(&k, "garbage");
    tokens.push(acquire(&store, &k, &b).await.token());
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
}

#[tokio::test]
async fn grant_expires_by_the_store_clock() {
    let (store, clock) = setup();
    let k = key("k");
    acquire(&store, &k, &holder("a", "1")).await;
    clock.advance(TTL - Duration::from_millis(1));
    assert!(store.inspect(&k).await.unwrap().is_some());
    clock.advance(Duration::from_millis(1));
    assert_eq!(store.inspect(&k).await.unwrap(), None);
}

#[tokio::test]
async fn renew_keeps_token_and_extends() {
    let (store, clock) = setup();
    let k = key("k");
    let grant = acquire(&store, &k, &holder("a", "1")).await;
    clock.advance(Duration::from_secs(9));
    let renewed = store
        .renew(&grant.fence, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(renewed.fence, grant.fence);
    assert!(!renewed.fresh);
    assert_eq!(renewed.ttl, Duration::from_secs(20));
    clock.advance(Duration::from_secs(19));
    assert!(store.check(&grant.fence).await.unwrap());
}

#[tokio::test]
async fn renew_never_revives_an_expired_grant() {
    let (store, clock) = setup();
    let k = key("k");
    let grant = acquire(&store, &k, &holder("a", "1")).await;
    clock.advance(TTL);
    let err = store.renew(&grant.fence, TTL).await.unwrap_err();
    assert!(
        matches!(err, LeaseError::Lost { current: None, .. }),
        "{err}"
    );
    assert_eq!(store.inspect(&k).await.unwrap(), None, "nothing revived");
}

#[tokio::test]
async fn renew_refuses_released_superseded_and_unknown_fences() {
    let (store, _) = setup();
    let k = key("k");
    let old = acquire(&store, &k, &holder("a", "1")).await.fence;
    store.release(&old).await.unwrap();
    let err = store.renew(&old, TTL).await.unwrap_err();
    assert!(
        matches!(err, LeaseError::Lost { current: None, .. }),
        "{err}"
    );

    let newer = acquire(&store, &k, &holder("b", "1")).await;
    let err = store.renew(&old, TTL).await.unwrap_err();
    match err {
        LeaseError::Lost { fence, current } => {
            assert_eq!(*fence, old);
            assert_eq!(current.unwrap().fence(), newer.fence);
        }
        other => panic!("{other}"),
    }
    let unknown = Fence {
        token: FencingToken(999),
        ..newer.fence.clone()
    };
    assert!(store.renew(&unknown, TTL).await.unwrap_err().is_lost());
}

#[tokio::test]
async fn release_is_idempotent_and_never_clears_a_newer_grant() {
    let (store, clock) = setup();
    let k = key("k");
    let old = acquire(&store, &k, &holder("a", "1")).await.fence;
    assert!(store.release(&old).await.unwrap());
    assert!(
        !store.release(&old).await.unwrap(),
        "second release is a no-op"
    );

    let expired = acquire(&store, &k, &holder("a", "1")).await.fence;
    clock.advance(TTL);
    let newer = acquire(&store, &k, &holder("b", "1")).await;
    assert!(!store.release(&expired).await.unwrap());
    assert!(!store.release(&old).await.unwrap());
    assert_eq!(
        store.inspect(&k).await.unwrap().unwrap().fence(),
        newer.fence
    );
}

#[tokio::test]
async fn reclaim_is_a_compare_and_swap() {
    let (store, _) = setup();
    let k = key("k");
    let (a, b, c) = (holder("a", "1"), holder("b", "1"), holder("c", "1"));
    let observed = acquire(&store, &k, &a).await.fence;
    // b and c both saw a's grant; b takes over first.
    let b_grant = store
        .reclaim(&observed, &b, TTL)
        .await
        .unwrap()
        .acquired()
        .unwrap();
    assert!(b_grant.fresh && b_grant.token() > observed.token);
    let lost_race = store.reclaim(&observed, &c, TTL).await.unwrap();
    assert_eq!(
        lost_race.busy().unwrap().fence(),
        b_grant.fence,
        "c sees the newer grant"
    );
    // b retrying its reclaim (reply lost) gets its own grant back.
    let retry = store
        .reclaim(&observed, &b, TTL)
        .await
        .unwrap()
        .acquired()
        .unwrap();
    assert_eq!((retry.token(), retry.fresh), (b_grant.token(), false));
}

#[tokio::test]
async fn reclaim_of_a_free_key_acquires() {
    let (store, clock) = setup();
    let k = key("k");
    let observed = acquire(&store, &k, &holder("a", "1")).await.fence;
    clock.advance(TTL);
    let grant = store
        .reclaim(&observed, &holder("b", "1"), TTL)
        .await
        .unwrap();
    assert!(grant.acquired().unwrap().token() > observed.token);
}

#[tokio::test]
async fn inspect_tells_corrupt_from_never_claimed() {
    let (store, _) = setup();
    let k = key("k");
    assert_eq!(store.inspect(&k).await.unwrap(), None);
    store.plant_corrupt_record(&k, "\u{0}\u{1}");
    match store.inspect(&k).await.unwrap_err() {
        LeaseError::Corrupt { key, .. } => assert_eq!(key, k),
        other => panic!("{other}"),
    }
    // check() sees no live grant in a corrupt record.
    let fence = Fence {
        key: k.clone(),
        holder: holder("a", "1"),
        token: FencingToken(1),
    };
    assert!(!store.check(&fence).await.unwrap());
}

#[tokio::test]
async fn markers_put_if_absent_or_equal_delete_if_equal() {
    let (store, _) = setup();
    let k = key("poison/table-1");
    store.put_marker(&k, "proc-1").await.unwrap();
    store.put_marker(&k, "proc-1").await.unwrap();
    match store.put_marker(&k, "proc-2").await.unwrap_err() {
        LeaseError::Conflict { key, existing } => {
            assert_eq!((key, existing.as_str()), (k.clone(), "proc-1"))
        }
        other => panic!("{other}"),
    }
    assert!(matches!(
        store.delete_marker(&k, "proc-2").await,
        Err(LeaseError::Conflict { .. })
    ));
    assert_eq!(
        store.get_marker(&k).await.unwrap().as_deref(),
        Some("proc-1")
    );
    assert!(store.delete_marker(&k, "proc-1").await.unwrap());
    assert!(
        !store.delete_marker(&k, "proc-1").await.unwrap(),
        "absent is fine"
    );
    assert_eq!(store.get_marker(&k).await.unwrap(), None);
}

#[tokio::test]
async fn markers_and_leases_do_not_collide() {
    let (store, _) = setup();
    let k = key("shared-name");
    store.put_marker(&k, "v").await.unwrap();
    acquire(&store, &k, &holder("a", "1")).await;
    assert_eq!(store.get_marker(&k).await.unwrap().as_deref(), Some("v"));
}

#[tokio::test]
async fn guarded_write_only_with_the_live_fence() {
    let (store, clock) = setup();
    let (k, target) = (key("k"), key("data/x"));
    let grant = acquire(&store, &k, &holder("a", "1")).await;
    store
        .guarded_write(&grant.fence, &target, b"one")
        .await
        .unwrap();
    assert_eq!(
        store.read_guarded(&target).await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    clock.advance(TTL);
    let err = store
        .guarded_write(&grant.fence, &target, b"two")
        .await
        .unwrap_err();
    assert!(err.is_lost(), "{err}");
    let newer = acquire(&store, &k, &holder("b", "1")).await;
    assert!(
        store
            .guarded_write(&grant.fence, &target, b"three")
            .await
            .is_err()
    );
    store
        .guarded_write(&newer.fence, &target, b"four")
        .await
        .unwrap();
    assert_eq!(
        store.read_guarded(&target).await.unwrap().as_deref(),
        Some(&b"four"[..])
    );
}

#[tokio::test]
async fn wait_free_wakes_on_release_and_on_expiry_and_times_out() {
    let (store, clock) = setup();
    let k = key("k");
    assert!(
        store.wait_free(&k, Duration::ZERO).await.unwrap(),
        "never claimed is free"
    );

    let grant = acquire(&store, &k, &holder("a", "1")).await;
    let waiter = tokio::spawn({
        let (store, k) = (store.clone(), k.clone());
        async move { store.wait_free(&k, Duration::from_secs(3600)).await }
    });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    store.release(&grant.fence).await.unwrap();
    assert!(waiter.await.unwrap().unwrap());

    acquire(&store, &k, &holder("a", "1")).await;
    let waiter = tokio::spawn({
        let (store, k) = (store.clone(), k.clone());
        async move { store.wait_free(&k, Duration::from_secs(3600)).await }
    });
    tokio::task::yield_now().await;
    clock.advance(TTL);
    assert!(
        waiter.await.unwrap().unwrap(),
        "silent expiry wakes the waiter"
    );

    acquire(&store, &k, &holder("a", "1")).await;
    assert!(!store.wait_free(&k, Duration::from_millis(5)).await.unwrap());
}

#[tokio::test]
async fn invalid_ttls_name_the_key_and_rule() {
    let clock = ManualClock::new();
    let caps = Capabilities::new("memory")
        .with_min_ttl(Duration::from_secs(1))
        .with_max_ttl(Duration::from_secs(60))
        .with_ttl_granularity(Duration::from_secs(1));
    let store = MemoryStore::with_clock_and_capabilities(Arc::new(clock), caps);
    let (k, a) = (key("jobs/x"), holder("a", "1"));
    for (ttl, rule) in [
        (Duration::ZERO, "greater than zero"),
        (Duration::from_millis(999), "minimum"),
        (Duration::from_secs(61), "maximum"),
    ] {
        match store.claim(&k, &a, ttl).await.unwrap_err() {
            LeaseError::InvalidTtl {
                key,
                ttl: t,
                rule: r,
            } => {
                assert_eq!((key, t), (k.clone(), ttl));
                assert!(r.contains(rule), "{r}");
            }
            other => panic!("{other}"),
        }
    }
    let grant = acquire_with(&store, &k, &a, Duration::from_millis(1500)).await;
    assert_eq!(grant.ttl, Duration::from_secs(2), "rounded up, reported");
    assert!(store.renew(&grant.fence, Duration::ZERO).await.is_err());
    assert!(
        store
            .put_marker(&k, &"x".repeat(64 * 1024 + 1))
            .await
            .is_err()
    );
}

async fn acquire_with(store: &MemoryStore, k: &LeaseKey, h: &Holder, ttl: Duration) -> Grant {
    store.claim(k, h, ttl).await.unwrap().acquired().unwrap()
}

#[tokio::test]
async fn ended_records_are_swept() {
    let (store, clock) = setup();
    let a = holder("a", "1");
    for i in 0..10_000 {
        let k = key(&format!("k/{i}"));
        let grant = acquire(&store, &k, &a).await;
        if i % 2 == 0 {
            store.release(&grant.fence).await.unwrap();
        } else {
            clock.advance(TTL);
        }
    }
    assert!(store.records_kept() <= 128, "kept {}", store.records_kept());
}

#[tokio::test]
async fn store_is_usable_as_a_trait_object() {
    let store: lease_core::DynLeaseStore = Arc::new(MemoryStore::new());
    let k = key("k");
    let grant = store
        .claim(&k, &holder("a", "1"), TTL)
        .await
        .unwrap()
        .acquired()
        .unwrap();
    assert!(store.check(&grant.fence).await.unwrap());
    assert_eq!(store.capabilities().backend, "memory");
}
