//! Every seed's and recipe's story in memory and on real Redis and etcd
//! servers from the harness: the same demos the examples print, each line
//! that matters checked.

use std::sync::Arc;

use futures::future::BoxFuture;
use lease_core::{DynLeaseStore, LeaseError};
use lease_etcd::{EtcdConfig, EtcdStore};
use lease_examples::{recipes, seeds};
use lease_redis::{RedisConfig, RedisStore};
use lease_tests::{EtcdCluster, RedisServer, or_skip};

type Demo = fn(DynLeaseStore) -> BoxFuture<'static, Result<Vec<String>, LeaseError>>;

/// Each seed's demo and lines its story must contain, in order.
fn stories() -> Vec<(&'static str, Demo, Vec<&'static str>)> {
    vec![
        (
            "export_lease",
            |s| Box::pin(seeds::export_lease::demo(s)),
            vec![
                "round 1: replica-1 exports",
                "round 2: replica-1 exports",
                "round 3: replica-1 exports",
            ],
        ),
        (
            "fenced_writer",
            |s| Box::pin(seeds::fenced_writer::demo(s)),
            vec![
                "accepted: a: entry 1",
                "accepted: b: entry 2",
                "refused:  fenced write refused",
            ],
        ),
        (
            "ftl_leaser",
            |s| Box::pin(seeds::ftl_leaser::demo(s)),
            vec![
                "holding system/runner",
                "short TTL refused",
                "second acquire: conflict",
                "runner-2 took it over: yes",
                "context cancelled: Some(true)",
            ],
        ),
        (
            "juju_claimer",
            |s| Box::pin(seeds::juju_claimer::demo(s)),
            vec![
                "unit/0 leads",
                "unit/1 claims: Err(Denied)",
                "token(unit/0): Ok(())",
                "snapshot: app-leadership held by unit/0",
                "unit/1 claims: Ok(\"ok\")",
            ],
        ),
        (
            "poison_store",
            |s| Box::pin(seeds::poison_store::demo(s)),
            vec![
                "alter-7 started",
                "alter-8 refused: alter-7 is in progress",
                "table/42 is None",
            ],
        ),
        (
            "leader_election",
            |s| Box::pin(recipes::leader_election::demo(s)),
            vec![
                "c1 leads with term",
                "c1 resigned:",
                "taken over when its TTL ran out",
                "refused",
                "observer saw",
            ],
        ),
        (
            "counting_leases",
            |s| Box::pin(recipes::counting_leases::demo(s)),
            vec![
                "9 workers done with 4 permits",
                "freed when its TTL ran out",
                "5 late callers, 4 hold a permit",
            ],
        ),
        (
            "session_execution_lease_store",
            |s| Box::pin(seeds::session_execution_lease_store::demo(s)),
            vec![
                "boot-1 claimed s-42",
                "boot-2 is busy",
                "boot-2 reclaimed s-42",
                "boot-1's late renewal: lease lost",
                "late release left the lane alone",
            ],
        ),
    ]
}

/// Runs every story at once, each on a store from `open`.
async fn every_story<F>(backend: &str, open: F)
where
    F: Fn(String) -> BoxFuture<'static, DynLeaseStore>,
{
    let runs = stories().into_iter().map(|(name, demo, expected)| {
        let store = open(format!("examples-{name}-{}", std::process::id()));
        async move {
            let lines = demo(store.await)
                .await
                .unwrap_or_else(|e| panic!("{backend}: {name} failed: {e}"));
            let mut rest = lines.iter();
            for want in expected {
                assert!(
                    rest.any(|line| line.contains(want)),
                    "{backend}: {name} never said {want:?} (in order); it said {lines:#?}"
                );
            }
        }
    });
    futures::future::join_all(runs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_story_runs_in_memory() {
    every_story("memory", |_| {
        Box::pin(async { Arc::new(lease_core::MemoryStore::new()) as DynLeaseStore })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_story_runs_on_redis() {
    let Some(server) = or_skip("redis", RedisServer::start().await) else {
        return;
    };
    let url = server.url().to_owned();
    every_story("redis", |namespace| {
        let url = url.clone();
        Box::pin(async move {
            let store = RedisStore::connect(RedisConfig::new(url).namespace(namespace));
            Arc::new(store.await.expect("redis")) as DynLeaseStore
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_story_runs_on_etcd() {
    let Some(cluster) = or_skip("etcd", EtcdCluster::start().await) else {
        return;
    };
    let endpoints = cluster.endpoints().to_vec();
    every_story("etcd", |prefix| {
        let endpoints = endpoints.clone();
        Box::pin(async move {
            let store = EtcdStore::connect(EtcdConfig::new(endpoints).prefix(prefix));
            Arc::new(store.await.expect("etcd")) as DynLeaseStore
        })
    })
    .await;
}
