//! lease-redis on a real three-master Redis Cluster: a namespace's slot
//! migrating to another node while its leases are held and renewed, and a
//! cluster node named by a single-server URL.

use std::sync::Arc;
use std::time::Duration;

use lease_core::{DynLeaseStore, Holder, LeaseKey, LeaseStore, Leaser};
use lease_redis::{RedisConfig, RedisStore};
use lease_tests::{RedisCluster, acquire_all, or_skip};

async fn cluster() -> Option<RedisCluster> {
    or_skip("redis cluster", RedisCluster::start().await)
}

/// The slot of every key of `namespace`: its hash tag's.
async fn slot_of(cluster: &RedisCluster, namespace: &str) -> u16 {
    cluster
        .slot_of(&format!("{{{namespace}}}:x"))
        .await
        .expect("a slot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_their_slot_moving_to_another_node() {
    let Some(cluster) = cluster().await else {
        return;
    };
    if cluster.nodes().is_empty() {
        eprintln!("!!! NOT RUN: an external cluster cannot be resharded");
        return;
    }
    let namespace = format!("migrate-{}", rand::random::<u32>());
    let slot = slot_of(&cluster, &namespace).await;
    let store = RedisStore::connect(RedisConfig::new(cluster.url()).namespace(&namespace))
        .await
        .expect("connect");
    let store: DynLeaseStore = Arc::new(store);
    let ttl = Duration::from_secs(3);
    let leaser = Leaser::new(store.clone(), Holder::new("mover", "1").unwrap(), ttl)
        .renew_every(Duration::from_millis(300));
    let mut held = acquire_all(&leaser, "shard", 300).await;
    let from = cluster.owner(slot).await.expect("owner");
    assert_eq!(
        cluster.keys_in(slot, from).await.unwrap(),
        301,
        "300 records and the floor on the owner"
    );
    let to = (from + 1) % 3;
    // Renewals run all through the move: ten keys every 30 ms keep the
    // slot half moved for about a second, several renewal periods.
    let renewals_before = leaser.stats().renewals;
    let started = tokio::time::Instant::now();
    cluster
        .move_slot(slot, to, 10, Duration::from_millis(30))
        .await
        .expect("slot moved");
    assert!(
        started.elapsed() > Duration::from_millis(600),
        "the move was too quick to meet renewals: {:?}",
        started.elapsed()
    );
    assert_eq!(cluster.owner(slot).await.unwrap(), to, "the slot moved");
    assert_eq!(
        cluster.keys_in(slot, from).await.unwrap(),
        0,
        "keys left behind"
    );
    tokio::time::sleep(ttl).await;
    assert!(
        leaser.stats().renewals > renewals_before + 300,
        "renewals kept going"
    );
    let lost: Vec<_> = held
        .iter()
        .filter(|l| l.is_lost())
        .map(|l| l.fence().key.clone())
        .collect();
    assert!(lost.is_empty(), "leases lost across the move: {lost:?}");

    // On the new node: the records moved with their tokens, a rival is
    // refused, and the next grant of a released key gets a higher token.
    let rival = RedisStore::connect(RedisConfig::new(cluster.url()).namespace(&namespace))
        .await
        .expect("connect");
    for lease in &held[..10] {
        lease_tests::assert_shows(&rival, lease).await;
        let claim = rival
            .claim(&lease.fence().key, &Holder::new("rival", "1").unwrap(), ttl)
            .await
            .unwrap();
        assert!(
            claim.acquired().is_none(),
            "a rival got a held key after the move"
        );
    }
    let first = held.remove(0);
    let (key, token) = (first.fence().key.clone(), first.fence().token);
    assert!(first.release().await.unwrap());
    let next = rival
        .claim(&key, &Holder::new("rival", "1").unwrap(), ttl)
        .await
        .unwrap()
        .acquired()
        .expect("a released key is free");
    assert!(next.fence.token > token, "tokens increase across the move");
    for lease in held {
        assert!(lease.release().await.unwrap());
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_behind_a_single_server_url_is_named_as_such() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let Some(node) = cluster.nodes().first() else {
        return;
    };
    // A namespace whose slot another node owns, so the first node redirects.
    let mut namespace = String::new();
    for i in 0.. {
        namespace = format!("elsewhere-{i}");
        if cluster
            .owner(slot_of(&cluster, &namespace).await)
            .await
            .unwrap()
            != 0
        {
            break;
        }
    }
    let store = RedisStore::connect(RedisConfig::new(node.url()).namespace(&namespace))
        .await
        .expect("connect");
    let err = store
        .claim(
            &LeaseKey::new("k").unwrap(),
            &Holder::new("a", "1").unwrap(),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("redis+cluster://"), "{err}");
    cluster.stop().await;
}
