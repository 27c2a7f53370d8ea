//! The harness itself: each mode starts a Redis and an etcd that a store
//! can talk to, a paused server answers nothing until resumed, restarts
//! keep the port, and a three-member etcd cluster
//! survives a member's restart.

use std::sync::Arc;
use std::time::Duration;

use lease_core::{Claim, DynLeaseStore, Holder, LeaseKey};
use lease_etcd::{EtcdConfig, EtcdStore};
use lease_redis::{RedisConfig, RedisStore};
use lease_tests::{EtcdCluster, EtcdOptions, Mode, RedisOptions, RedisServer, or_skip};
use tokio::time::Instant;

fn key() -> LeaseKey {
    LeaseKey::new("harness/probe").unwrap()
}

/// Claims a fresh grant and releases it, retrying while a restarted server
/// comes back. Returns its token.
async fn fresh_token(store: &DynLeaseStore, holder: &str) -> u64 {
    let holder = Holder::unique(holder).unwrap();
    for _ in 0..100 {
        match store.claim(&key(), &holder, Duration::from_secs(30)).await {
            Ok(Claim::Acquired(grant)) => {
                // The release too may meet a member still coming back; it
                // is idempotent, so a retry after a lost reply says false.
                for _ in 0..100 {
                    match store.release(&grant.fence).await {
                        Ok(_) => return grant.token().0,
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                panic!("the release never went through");
            }
            Ok(Claim::Busy(record)) => panic!("busy after restart: {record:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("the store did not recover")
}

async fn redis_store(url: &str) -> DynLeaseStore {
    Arc::new(
        RedisStore::connect(RedisConfig::new(url))
            .await
            .expect("redis answers"),
    )
}

async fn etcd_store(endpoints: &[String]) -> DynLeaseStore {
    Arc::new(
        EtcdStore::connect(EtcdConfig::new(endpoints.to_vec()))
            .await
            .expect("etcd answers"),
    )
}

async fn servers_answer(mode: Mode) {
    let started = Instant::now();
    let Some(mut redis) = or_skip(
        "redis",
        RedisServer::start_in(mode, RedisOptions::default()).await,
    ) else {
        return;
    };
    eprintln!(
        "{mode:?}: redis at {} up in {:?}",
        redis.url(),
        started.elapsed()
    );
    let started = Instant::now();
    let Some(mut etcd) = or_skip(
        "etcd",
        EtcdCluster::start_in(mode, EtcdOptions::default()).await,
    ) else {
        return;
    };
    eprintln!(
        "{mode:?}: etcd at {:?} up in {:?}",
        etcd.endpoints(),
        started.elapsed()
    );

    let store = redis_store(redis.url()).await;
    let before = fresh_token(&store, "a").await;
    // A paused server (SIGSTOP, or a paused container) answers nothing
    // until resumed: what the freeze tests rely on, in either mode.
    redis.pause().await.expect("redis pauses");
    let frozen = tokio::time::timeout(Duration::from_secs(1), store.inspect(&key())).await;
    assert!(frozen.is_err(), "a paused redis answered: {frozen:?}");
    redis.resume().await.expect("redis resumes");
    fresh_token(&store, "a").await;
    let started = Instant::now();
    redis.restart().await.expect("redis restarts on its port");
    eprintln!("{mode:?}: redis restarted in {:?}", started.elapsed());
    let after = fresh_token(&store, "b").await;
    assert!(
        after > before,
        "redis token {after} after restart is not above {before}"
    );

    let store = etcd_store(etcd.endpoints()).await;
    let before = fresh_token(&store, "a").await;
    etcd.pause_member(0).await.expect("etcd pauses");
    let frozen = tokio::time::timeout(Duration::from_secs(1), store.inspect(&key())).await;
    assert!(frozen.is_err(), "a paused etcd answered: {frozen:?}");
    etcd.resume_member(0).await.expect("etcd resumes");
    fresh_token(&store, "a").await;
    etcd.restart_member(0)
        .await
        .expect("etcd restarts on its ports");
    let after = fresh_token(&store, "b").await;
    assert!(
        after > before,
        "etcd token {after} after restart is not above {before}"
    );
    redis.stop().await;
    etcd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_processes_answer_and_restart() {
    servers_answer(Mode::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_answer_and_restart() {
    let docker = std::process::Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !docker && std::env::var("LEASE_TEST_SERVERS").as_deref() != Ok("containers") {
        eprintln!("\n!!! NOT RUN: no Docker engine answers; containers mode is not tested here\n");
        return;
    }
    servers_answer(Mode::Containers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_endpoints_are_used_as_given_and_never_restarted() {
    let Some(local) = or_skip(
        "redis",
        RedisServer::start_in(Mode::Local, RedisOptions::default()).await,
    ) else {
        return;
    };
    let Some(cluster) = or_skip(
        "etcd",
        EtcdCluster::start_in(Mode::Local, EtcdOptions::default()).await,
    ) else {
        return;
    };
    let mut redis = RedisServer::external(local.url());
    let mut etcd = EtcdCluster::external(cluster.endpoints().iter().map(String::as_str));
    assert_eq!(redis.mode(), Mode::External);
    fresh_token(&redis_store(redis.url()).await, "a").await;
    fresh_token(&etcd_store(etcd.endpoints()).await, "a").await;
    assert!(
        redis.restart().await.is_err(),
        "an external server is not restarted"
    );
    assert!(
        etcd.restart_member(0).await.is_err(),
        "an external cluster is not restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_member_cluster_survives_a_member_restart() {
    let options = EtcdOptions {
        members: 3,
        ..EtcdOptions::default()
    };
    let Some(mut cluster) = or_skip(
        "etcd cluster",
        EtcdCluster::start_in(Mode::Local, options).await,
    ) else {
        return;
    };
    assert_eq!(cluster.endpoints().len(), 3);
    let store = etcd_store(cluster.endpoints()).await;
    let before = fresh_token(&store, "a").await;
    for member in 0..3 {
        cluster
            .restart_member(member)
            .await
            .expect("member restarts");
    }
    let after = fresh_token(&store, "b").await;
    assert!(
        after > before,
        "token {after} after rolling restart is not above {before}"
    );
}

/// `with-servers` with no server binaries on the PATH and no Docker.
fn without_servers(require: bool) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_with-servers"))
        .arg("/bin/true")
        .env("PATH", "/nonexistent")
        .env("LEASE_TEST_SERVERS", "local")
        .env(
            "LEASE_TEST_REQUIRE_SERVERS",
            if require { "1" } else { "0" },
        )
        .output()
        .expect("with-servers runs")
}

#[test]
fn missing_servers_fail_with_the_reason_when_required() {
    let output = without_servers(true);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("required server could not be started"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot start redis-server"), "{stderr}");
}

#[test]
fn missing_servers_are_reported_loudly_when_not_required() {
    let output = without_servers(false);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("!!! no server for LEASE_TEST_REDIS_URL"),
        "{stderr}"
    );
    assert!(
        stderr.contains("!!! no server for LEASE_TEST_ETCD_ENDPOINTS"),
        "{stderr}"
    );
}
