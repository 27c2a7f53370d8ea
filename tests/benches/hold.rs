//! Holding many leases: what keeping 1,000 and 10,000 leases alive costs
//! per renewal period, on each backend.
//!
//! One `Leaser` (TTL 6 s, renewed every 2 s) holds N leases; after they
//! are acquired, the bench watches `BENCH_PERIODS` renewal periods
//! (default 3) and reports, per period: server calls (Redis
//! `INFO commandstats`, etcd's `grpc_server_msg_received_total`), server
//! CPU (`INFO cpu`, `process_cpu_seconds_total`), this process's CPU, the
//! keeper's `renew_many` calls and renewals, and leases lost. Redis calls
//! are the script calls clients made (`EVALSHA`), not the commands the
//! scripts run inside the server.
//!
//! `cargo bench -p tests --bench hold` (servers from the harness, as for
//! the tests). `BENCH_LEASES` sets the sizes (default `1000,10000`),
//! `BENCH_BACKENDS` the backends (`redis,etcd`).

use std::sync::Arc;
use std::time::Duration;

use lease_core::{DynLeaseStore, Holder, Leaser};
use lease_etcd::{EtcdConfig, EtcdStore};
use lease_redis::{RedisConfig, RedisStore};
use lease_tests::{EtcdCluster, RedisServer, acquire_all, gauges};
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(6);
const PERIOD: Duration = Duration::from_secs(2);

/// Reads (server calls so far, server CPU seconds so far).
type Gauge = Arc<dyn Fn() -> futures::future::BoxFuture<'static, (f64, f64)> + Send + Sync>;

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

async fn hold(backend: &str, store: DynLeaseStore, gauge: Gauge) {
    let periods: u32 = var("BENCH_PERIODS", "3").parse().unwrap_or(3);
    println!(
        "\n{backend}: holding leases (TTL {TTL:?}, renewed every {PERIOD:?}), per renewal period over {periods}"
    );
    println!(
        "{:>7}  {:>12}  {:>14}  {:>14}  {:>12}  {:>10}  {:>5}",
        "leases",
        "server calls",
        "server CPU ms",
        "client CPU ms",
        "batch calls",
        "renewals",
        "lost"
    );
    for n in var("BENCH_LEASES", "1000,10000")
        .split(',')
        .filter_map(|n| n.parse::<usize>().ok())
    {
        let holder = Holder::unique("bench").expect("valid");
        let leaser = Leaser::new(store.clone(), holder, TTL).renew_every(PERIOD);
        let run = format!("{n}-{}", rand::random::<u32>());
        let leases = acquire_all(&leaser, &format!("hold/{run}"), n).await;
        // Let the first renewals of the acquisition burst settle.
        tokio::time::sleep(PERIOD).await;
        let (calls, cpu) = gauge().await;
        let (client, stats) = (gauges::client_cpu(), leaser.stats());
        let started = Instant::now();
        tokio::time::sleep(PERIOD * periods).await;
        let per = started.elapsed().as_secs_f64() / PERIOD.as_secs_f64();
        let (calls_after, cpu_after) = gauge().await;
        let after = leaser.stats();
        let lost = leases.iter().filter(|l| l.is_lost()).count();
        println!(
            "{n:>7}  {:>12.0}  {:>14.1}  {:>14.1}  {:>12.1}  {:>10.0}  {lost:>5}",
            (calls_after - calls) / per,
            (cpu_after - cpu) * 1e3 / per,
            (gauges::client_cpu() - client) * 1e3 / per,
            (after.calls - stats.calls) as f64 / per,
            (after.renewals - stats.renewals) as f64 / per,
        );
        for lease in leases {
            let _ = lease.release().await;
        }
    }
}

async fn redis() {
    let Ok(server) = RedisServer::start().await else {
        println!("\nredis: no server could be started");
        return;
    };
    let url = server.url().to_owned();
    let store = RedisStore::connect(RedisConfig::new(&url))
        .await
        .expect("redis");
    let client = redis::Client::open(url.as_str()).expect("url");
    let connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let gauge: Gauge = Arc::new(move || {
        let mut connection = connection.clone();
        Box::pin(async move {
            // Calls clients made: the scripts, not the commands they run.
            let calls = gauges::redis_calls(&mut connection, "evalsha").await
                + gauges::redis_calls(&mut connection, "eval").await;
            (calls, gauges::redis_cpu(&mut connection).await)
        })
    });
    hold("redis", Arc::new(store), gauge).await;
}

async fn etcd() {
    let Ok(cluster) = EtcdCluster::start().await else {
        println!("\netcd: no server could be started");
        return;
    };
    let endpoint = cluster.endpoints()[0].clone();
    let store = EtcdStore::connect(EtcdConfig::new([endpoint.clone()]))
        .await
        .expect("etcd");
    let gauge: Gauge = Arc::new(move || {
        let endpoint = endpoint.clone();
        Box::pin(async move {
            let text = gauges::etcd_metrics(&endpoint).await;
            (
                gauges::metric_sum(&text, "grpc_server_msg_received_total"),
                gauges::metric_sum(&text, "process_cpu_seconds_total"),
            )
        })
    });
    hold("etcd", Arc::new(store.clone()), gauge).await;
    println!("lease-etcd: {:?}", store.lease_counts());
    cluster.stop().await;
}

#[tokio::main]
async fn main() {
    let only = var("BENCH_BACKENDS", "redis,etcd");
    if only.split(',').any(|b| b == "redis") {
        redis().await;
    }
    if only.split(',').any(|b| b == "etcd") {
        etcd().await;
    }
}
