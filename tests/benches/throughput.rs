//! Claim + release cycles through the lease stores, against the cheapest
//! raw equivalent on the same backend in the same run, reported as a ratio.
//!
//! `cargo bench -p tests --bench throughput` (servers from the harness,
//! as for the tests; `BENCH_CYCLES` scales the runs).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use lease_core::{Holder, LeaseKey, LeaseStore, MemoryStore};
use lease_etcd::{EtcdConfig, EtcdStore};
use lease_redis::{RedisConfig, RedisStore};
use lease_tests::{EtcdCluster, RedisServer};
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(30);

/// Mean time per cycle of `cycles` runs of `cycle`.
async fn measure<F, Fut>(cycles: usize, mut cycle: F) -> Duration
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..cycles / 10 {
        cycle(usize::MAX - i).await; // warm up
    }
    let started = Instant::now();
    for i in 0..cycles {
        cycle(i).await;
    }
    started.elapsed() / u32::try_from(cycles).unwrap_or(u32::MAX)
}

fn report(backend: &str, lease: Duration, raw: Duration, raw_name: &str) {
    let ratio = lease.as_secs_f64() / raw.as_secs_f64();
    println!(
        "{backend:<7} claim+release {:>9.1} µs/cycle | raw {raw_name:<32} {:>9.1} µs/cycle | ratio {ratio:.2}",
        lease.as_secs_f64() * 1e6,
        raw.as_secs_f64() * 1e6,
    );
}

fn key(i: usize) -> LeaseKey {
    LeaseKey::new(format!("bench/{i}")).expect("valid")
}

async fn lease_cycles(store: &dyn LeaseStore, cycles: usize) -> Duration {
    let holder = Holder::new("bench", "1").expect("valid");
    measure(cycles, |i| {
        let holder = &holder;
        async move {
            let grant = store
                .claim(&key(i), holder, TTL)
                .await
                .expect("claim")
                .acquired()
                .expect("free");
            assert!(store.release(&grant.fence).await.expect("release"));
        }
    })
    .await
}

async fn memory(cycles: usize) {
    let store = MemoryStore::new();
    let lease = lease_cycles(&store, cycles).await;
    let map: Mutex<HashMap<String, (String, u64)>> = Mutex::default();
    let raw = measure(cycles, |i| {
        let map = &map;
        async move {
            let k = format!("bench/{i}");
            map.lock().unwrap().insert(k.clone(), ("bench".into(), 1));
            map.lock().unwrap().remove(&k);
        }
    })
    .await;
    report("memory", lease, raw, "HashMap insert + remove");
}

async fn redis(cycles: usize) {
    let Ok(server) = RedisServer::start().await else {
        println!("redis   (no server could be started)");
        return;
    };
    let store = RedisStore::connect(RedisConfig::new(server.url()))
        .await
        .expect("redis");
    let lease = lease_cycles(&store, cycles).await;
    let client = redis::Client::open(server.url()).expect("url");
    let connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let raw = measure(cycles, |i| {
        let mut connection = connection.clone();
        async move {
            let k = format!("raw/{i}");
            let _: Option<String> = redis::cmd("SET")
                .arg(&k)
                .arg("bench")
                .arg("NX")
                .arg("PX")
                .arg(30_000)
                .query_async(&mut connection)
                .await
                .expect("set");
            let _: u64 = redis::cmd("DEL")
                .arg(&k)
                .query_async(&mut connection)
                .await
                .expect("del");
        }
    })
    .await;
    report("redis", lease, raw, "SET NX PX + DEL");
    server.stop().await;
}

async fn etcd(cycles: usize) {
    let Ok(cluster) = EtcdCluster::start().await else {
        println!("etcd    (no server could be started)");
        return;
    };
    let store = EtcdStore::connect(EtcdConfig::new(cluster.endpoints().to_vec()))
        .await
        .expect("etcd");
    let lease = lease_cycles(&store, cycles).await;
    let client = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .expect("etcd");
    let raw = measure(cycles, |i| {
        let mut client = client.clone();
        async move {
            let k = format!("raw/{i}");
            let create = Txn::new()
                .when([Compare::create_revision(k.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(k.as_str(), "bench", None)]);
            client.txn(create).await.expect("txn");
            client.delete(k.as_str(), None).await.expect("delete");
        }
    })
    .await;
    report("etcd", lease, raw, "txn create-if-absent + delete");
    cluster.stop().await;
}

#[tokio::main]
async fn main() {
    let scale: usize = std::env::var("BENCH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    memory(100_000 * scale).await;
    redis(5_000 * scale).await;
    etcd(1_000 * scale).await;
}
