//! etcd specifics: renewals without raft writes, one RPC per claim, watch
//! latency, authentication, and a frozen member.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Permission};
use futures::StreamExt;
use lease_core::{
    Acquire, Claim, DynLeaseStore, Fence, Holder, LeaseError, LeaseKey, LeaseStore, Leaser,
    LostReason,
};
use lease_etcd::{EtcdConfig, EtcdStore};
use lease_tests::{EtcdCluster, gauges, or_skip};
use tokio::time::Instant;

fn key(text: &str) -> LeaseKey {
    LeaseKey::new(text).unwrap()
}

async fn cluster() -> Option<EtcdCluster> {
    or_skip("etcd", EtcdCluster::start().await)
}

async fn connect(cluster: &EtcdCluster) -> EtcdStore {
    EtcdStore::connect(EtcdConfig::new(cluster.endpoints().to_vec()))
        .await
        .expect("etcd answers")
}

/// Renews every fence, many at once; every renewal must succeed. Each
/// grant was last renewed (or claimed) no earlier than `since`: a grant
/// found ended is a broken rule only if every renewal was sent within the
/// TTL of that; later, the runner was too slow to keep it, and the try is
/// inconclusive (`Err`, with why).
async fn renew_all(
    store: &EtcdStore,
    fences: &[Fence],
    ttl: Duration,
    since: Instant,
) -> Result<(), String> {
    let failed: Vec<_> = futures::stream::iter(fences)
        .map(|fence| store.renew(fence, ttl))
        .buffer_unordered(64)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await;
    if failed.is_empty() {
        return Ok(());
    }
    let took = since.elapsed();
    assert!(
        took >= ttl,
        "renewals failed, all sent within {took:?} of the last, inside the {ttl:?} TTL: {:?}",
        &failed[..failed.len().min(3)]
    );
    Err(format!(
        "{} renewals failed, the last sent {took:?} after the previous round began, past the {ttl:?} TTL: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    ))
}

/// The fences among `fences` that are not live, or (with `release`) that
/// their release did not end: many calls at once.
async fn at_once(store: &EtcdStore, fences: &[Fence], release: bool) -> Vec<Fence> {
    futures::stream::iter(fences)
        .map(|fence| async move {
            let ok = store.check(fence).await.unwrap()
                && (!release || store.release(fence).await.unwrap());
            (!ok).then(|| fence.clone())
        })
        .buffer_unordered(64)
        .filter_map(std::future::ready)
        .collect()
        .await
}

/// A runner too slow to renew 1,000 grants within a 6 s TTL makes the
/// first try inconclusive; the second has twice the TTL, the same checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_renewals_make_no_raft_proposal_and_leave_nothing_behind() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let ttl = Duration::from_secs(6);
    if let Err(why) = thousand_renewals(&cluster, "bulk", ttl).await {
        eprintln!(
            "inconclusive, trying again with a TTL of {:?}: {why}",
            ttl * 2
        );
        if let Err(why) = thousand_renewals(&cluster, "bulk2", ttl * 2).await {
            panic!(
                "INCONCLUSIVE on both tries: the runner was too slow; nothing is said about etcd: {why}"
            );
        }
    }
}

/// Claims 1,000 grants under `prefix`, renews them past two TTLs counting
/// raft proposals, releases half and checks the rest survive, then that
/// nothing stays behind. `Err` when the runner was too slow to judge.
async fn thousand_renewals(
    cluster: &EtcdCluster,
    prefix: &str,
    ttl: Duration,
) -> Result<(), String> {
    let endpoint = &cluster.endpoints()[0];
    let store = connect(cluster).await;
    let holder = Holder::new("bulk", "1").unwrap();
    let claimed = Instant::now();
    let claims = futures::stream::iter(0..1000)
        .map(|i| {
            let (store, holder) = (&store, &holder);
            async move {
                store
                    .claim(&key(&format!("{prefix}/{i}")), holder, ttl)
                    .await
            }
        })
        .buffer_unordered(32);
    let fences: Vec<_> = claims
        .map(|claim| claim.unwrap().acquired().expect("a free key").fence)
        .collect()
        .await;
    assert_eq!(
        store.lease_counts().leases_in_use,
        1000,
        "one etcd lease per grant"
    );
    // Keep them past two TTLs by renewing, many at once; count the raft
    // proposals the renewals cost.
    let started = Instant::now();
    let mut proposals = 0;
    let mut since = claimed;
    while started.elapsed() < ttl * 2 {
        let before = metric(endpoint, "etcd_server_proposals_committed_total").await;
        let round = Instant::now();
        renew_all(&store, &fences, ttl, since).await?;
        since = round;
        proposals += metric(endpoint, "etcd_server_proposals_committed_total").await - before;
        tokio::time::sleep(ttl / 4).await;
    }
    // A handful of pool refreshes aside, renewals propose nothing: with a
    // raft write per renewal this would be thousands.
    assert!(
        proposals < 50,
        "renewing 1000 grants repeatedly made {proposals} raft proposals"
    );
    // A last renewal, then the checks and releases at once: 1,500 calls
    // one after another could outlast the TTL on a slow runner.
    let renewed = Instant::now();
    renew_all(&store, &fences, ttl, since).await?;
    // Releasing some grants never drops the others' keys.
    let lost = at_once(&store, &fences[..500], true).await;
    let dropped = at_once(&store, &fences[500..], false).await;
    let unreleased = at_once(&store, &fences[500..], true).await;
    if renewed.elapsed() >= ttl {
        return Err(format!(
            "the checks and releases took {:?}, longer than the {ttl:?} TTL",
            renewed.elapsed()
        ));
    }
    assert!(
        lost.is_empty(),
        "{} renewed grants could not be released: {:?}",
        lost.len(),
        &lost[..lost.len().min(3)]
    );
    assert!(
        dropped.is_empty(),
        "{} grants were dropped by others' releases: {:?}",
        dropped.len(),
        &dropped[..dropped.len().min(3)]
    );
    assert!(
        unreleased.is_empty(),
        "{} grants could not be released: {:?}",
        unreleased.len(),
        &unreleased[..unreleased.len().min(3)]
    );
    // Once nothing is claimed, the pool revokes its leases within a short
    // grace, and no stream stays open. Counted on etcd, and by the store:
    // a lease forgotten instead of revoked goes too, at the end of its own
    // TTL (7 s), but into etcd's rate-limited expiry queue.
    let ended = Instant::now();
    let mut client = Client::connect(cluster.endpoints(), None).await.unwrap();
    let alive = loop {
        let alive = client.leases().await.unwrap().leases().len();
        if alive <= 1 || ended.elapsed() > Duration::from_secs(10) {
            break alive;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "{alive} etcd leases left {:?} after every grant ended",
        ended.elapsed()
    );
    assert!(
        alive <= 1,
        "{alive} etcd leases left {:?} after every grant ended",
        ended.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = store.lease_counts();
    assert!(
        counts.idle_leases <= 1 && counts.keep_alive_streams == 0,
        "{counts:?}"
    );
    assert!(
        counts.leases_revoked + 1 >= counts.leases_granted,
        "leases left to expire instead of revoked: {counts:?}"
    );
    Ok(())
}

/// The sum of every sample of the metric `name` etcd exports.
async fn metric(endpoint: &str, name: &str) -> u64 {
    gauges::metric_sum(&metrics_text(endpoint).await, name) as u64
}

async fn metrics_text(endpoint: &str) -> String {
    gauges::etcd_metrics(endpoint).await
}

/// Requests etcd received (`grpc_server_msg_received_total`: one per unary
/// call, one per message on a stream), by method.
async fn rpc_counts(endpoint: &str) -> std::collections::BTreeMap<String, u64> {
    let text = metrics_text(endpoint).await;
    let mut counts = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("grpc_server_msg_received_total{"))
    {
        let method = line
            .split("grpc_method=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default();
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *counts.entry(method.to_owned()).or_insert(0) += value as u64;
    }
    counts
}

/// The methods called between two counts, with how often.
fn rpc_delta(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> Vec<(String, u64)> {
    after
        .iter()
        .filter_map(|(method, n)| {
            let d = n - before.get(method).copied().unwrap_or(0);
            (d > 0).then(|| (method.clone(), d))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_in_steady_state_is_one_rpc() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let store = connect(&cluster).await;
    let endpoint = &cluster.endpoints()[0];
    let ttl = Duration::from_secs(30);
    // The first claim and release give the pool a lease to reuse.
    let warm = store
        .claim(&key("rpc/warm"), &Holder::new("a", "1").unwrap(), ttl)
        .await
        .unwrap()
        .acquired()
        .unwrap();
    assert!(store.release(&warm.fence).await.unwrap());
    let mut per_claim = Vec::new();
    for i in 0..5 {
        // Each claim keeps its lease; give the pool one back first.
        let spare = store
            .claim(&key("rpc/spare"), &Holder::new("a", "1").unwrap(), ttl)
            .await
            .unwrap()
            .acquired()
            .unwrap();
        assert!(store.release(&spare.fence).await.unwrap());
        let before = rpc_counts(endpoint).await;
        let claim = store
            .claim(
                &key(&format!("rpc/{i}")),
                &Holder::new("a", "1").unwrap(),
                ttl,
            )
            .await
            .unwrap();
        assert!(claim.grant().is_some());
        let after = rpc_counts(endpoint).await;
        let delta = rpc_delta(&before, &after);
        per_claim.push(delta);
    }
    for delta in &per_claim {
        assert_eq!(
            delta,
            &[("Txn".to_owned(), 1)],
            "a claim issued {per_claim:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_is_one_read_and_one_keep_alive_with_no_raft_proposal() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let store = connect(&cluster).await;
    let endpoint = &cluster.endpoints()[0];
    let ttl = Duration::from_secs(30);
    let grant = store
        .claim(&key("rpc/renew"), &Holder::new("a", "1").unwrap(), ttl)
        .await
        .unwrap()
        .acquired()
        .unwrap();
    for _ in 0..3 {
        let (rpcs, proposals) = (
            rpc_counts(endpoint).await,
            metric(endpoint, "etcd_server_proposals_committed_total").await,
        );
        store.renew(&grant.fence, ttl).await.unwrap();
        let after = rpc_counts(endpoint).await;
        let delta = rpc_delta(&rpcs, &after);
        assert_eq!(
            delta,
            [("LeaseKeepAlive".to_owned(), 1), ("Range".to_owned(), 1)],
            "a renewal issued {delta:?}"
        );
        let proposed = metric(endpoint, "etcd_server_proposals_committed_total").await - proposals;
        assert_eq!(proposed, 0, "a renewal made {proposed} raft proposals");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watching_waiter_wakes_within_milliseconds_of_a_release() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let store: DynLeaseStore = Arc::new(connect(&cluster).await);
    let mut latencies = Vec::new();
    for i in 0..20 {
        let k = key(&format!("watch/{i}"));
        let grant = store
            .claim(&k, &Holder::new("a", "1").unwrap(), Duration::from_secs(30))
            .await
            .unwrap();
        let grant = grant.acquired().unwrap();
        let waiter = tokio::spawn({
            let (store, k) = (store.clone(), k.clone());
            async move {
                let woke = store.wait_free(&k, Duration::from_secs(20)).await;
                (woke, Instant::now())
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let released = Instant::now();
        assert!(store.release(&grant.fence).await.unwrap());
        let (woke, at) = waiter.await.unwrap();
        assert!(woke.unwrap());
        latencies.push(at - released);
    }
    latencies.sort();
    let (median, max) = (
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
    );
    eprintln!(
        "etcd wait wake-up after release: median {median:?}, max {max:?} over {} releases",
        latencies.len()
    );
    // A poll wakes near the 1 s re-check every time; a stalled runner
    // delays a few wake-ups, not the median of twenty.
    assert!(
        median < Duration::from_millis(200),
        "waiters woke a median {median:?} after the release (max {max:?}): a poll, not the watch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_users_work_and_wrong_credentials_are_told_so() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let mut admin = Client::connect(cluster.endpoints(), None).await.unwrap();
    admin.user_add("root", "rootpw", None).await.unwrap();
    admin.role_add("root").await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.role_add("leaser").await.unwrap();
    admin
        .role_grant_permission("leaser", Permission::read_write("apps/").with_prefix())
        .await
        .unwrap();
    admin.user_add("app", "app-secret", None).await.unwrap();
    admin.user_grant_role("app", "leaser").await.unwrap();
    admin.auth_enable().await.unwrap();

    let config = EtcdConfig::new(cluster.endpoints().to_vec())
        .prefix("apps/billing")
        .credentials("app", "app-secret");
    let store = EtcdStore::connect(config)
        .await
        .expect("the app user connects");
    let k = key("auth/lease");
    let grant = store
        .claim(&k, &Holder::new("a", "1").unwrap(), Duration::from_secs(10))
        .await
        .unwrap();
    let grant = grant.acquired().expect("free key");
    store
        .renew(&grant.fence, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(store.release(&grant.fence).await.unwrap());

    let config = EtcdConfig::new(cluster.endpoints().to_vec()).credentials("app", "wrong");
    let refused = EtcdStore::connect(config).await.unwrap_err();
    let message = refused.to_string();
    assert!(matches!(refused, LeaseError::Connect { .. }), "{message}");
    assert!(message.contains("authentication failed"), "{message}");
    assert!(!message.contains("wrong"), "the password leaked: {message}");

    // Outside its prefix, the user is refused with the reason.
    let config = EtcdConfig::new(cluster.endpoints().to_vec())
        .prefix("other")
        .credentials("app", "app-secret");
    let outside = EtcdStore::connect(config).await.unwrap_err();
    assert!(
        outside.to_string().contains("permission denied"),
        "{outside}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_cluster_ends_the_lease_by_its_deadline() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let config =
        EtcdConfig::new(cluster.endpoints().to_vec()).call_timeout(Duration::from_millis(300));
    let store: DynLeaseStore = Arc::new(EtcdStore::connect(config).await.unwrap());
    let ttl = Duration::from_secs(2);
    let leaser = Leaser::new(store.clone(), Holder::new("a", "1").unwrap(), ttl);
    let Acquire::Held(lease) = leaser.try_acquire(&key("freeze/lease")).await.unwrap() else {
        panic!("free key")
    };
    cluster.pause_member(0).await.expect("pause");
    let deadline = lease.deadline();
    lease.lost().cancelled().await;
    let late = Instant::now().saturating_duration_since(deadline);
    // Stay frozen past the grant's etcd lease.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.resume_member(0).await.expect("resume");
    assert!(
        late < Duration::from_millis(50),
        "lost fired {late:?} after the deadline"
    );
    assert_eq!(lease.lost_reason(), Some(LostReason::DeadlinePassed));
    // After the thaw, another client sees the old grant end (etcd ends it,
    // though a's store is alive) and gets a newer one.
    let other = connect(&cluster).await;
    let mut next = None;
    for _ in 0..100 {
        match other
            .claim(&key("freeze/lease"), &Holder::new("b", "1").unwrap(), ttl)
            .await
        {
            Ok(Claim::Acquired(grant)) => {
                next = Some(grant);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let next = next.expect("b gets the lease once the old grant ends");
    assert!(next.token() > lease.fence().token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_works() {
    let certs =
        lease_tests::TestCertificates::generate().expect("openssl makes the test certificates");
    let options = lease_tests::EtcdOptions {
        tls: Some((certs.cert(), certs.key())),
        ..Default::default()
    };
    let Some(cluster) = or_skip("etcd with TLS", EtcdCluster::start_with(options).await) else {
        return;
    };
    assert!(cluster.endpoints()[0].starts_with("https://"));
    let store = EtcdStore::connect(
        EtcdConfig::new(cluster.endpoints().to_vec()).tls_root_ca(certs.ca_pem()),
    )
    .await
    .expect("TLS connects");
    let grant = store
        .claim(
            &key("tls/lease"),
            &Holder::new("a", "1").unwrap(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(
        store
            .release(&grant.acquired().unwrap().fence)
            .await
            .unwrap()
    );
}

/// etcd reports a lease's time to live in whole seconds, rounded down: 0
/// in its last second. `inspect` must not call such a key free, or the
/// holder could still renew a grant it said had ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_a_grant_until_etcd_deletes_its_key() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let store = connect(&cluster).await;
    let mut client = Client::connect(cluster.endpoints(), None).await.unwrap();
    let holder = Holder::new("ending", "1").unwrap();
    let k = key("ending/inspect");
    let etcd_key = lease_etcd::testing::record_key(&store, &k);
    store
        .claim(&k, &holder, Duration::from_secs(1))
        .await
        .unwrap()
        .acquired()
        .expect("a free key");
    let started = Instant::now();
    let mut reads = 0;
    loop {
        let shown = store.inspect(&k).await.unwrap();
        reads += 1;
        if shown.is_none() {
            // What inspect read cannot come back once etcd deleted it.
            let left = client.get(etcd_key.as_str(), None).await.unwrap();
            assert!(
                left.kvs().is_empty(),
                "inspect called the key free after {:?} ({reads} reads), yet etcd still holds it",
                started.elapsed()
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the grant never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_suite_passes_on_a_three_member_cluster() {
    use lease_conformance::{Outcome, all_cases, run_cases};
    use lease_etcd::testing::EtcdFactory;
    let options = lease_tests::EtcdOptions {
        members: 3,
        ..Default::default()
    };
    let Some(cluster) = or_skip(
        "a three-member etcd cluster",
        EtcdCluster::start_with(options).await,
    ) else {
        return;
    };
    let target = Arc::new(EtcdFactory::new(EtcdConfig::new(
        cluster.endpoints().to_vec(),
    )));
    // etcd extends every lease when its leader changes (see lease-etcd's
    // docs): a failure with elections under way says so.
    let leader_changes = || async {
        let mut seen = 0;
        for endpoint in cluster.endpoints() {
            seen += metric(endpoint, "etcd_server_leader_changes_seen_total").await;
        }
        seen
    };
    let elections_before = leader_changes().await;
    // Two at a time: three members share this machine with the other tests.
    let reports = run_cases(target, all_cases(), 2, |_| {}).await;
    let elections = leader_changes().await - elections_before;
    let failed: Vec<_> = reports
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Passed => None,
            // A cluster someone else runs is not restarted by the suite.
            Outcome::NotRun(_) if r.name == "tokens_increase_across_server_restart" => None,
            other => Some(format!("{}: {other:?}\n  rule: {}", r.name, r.rule)),
        })
        .collect();
    assert!(
        failed.is_empty(),
        "on a three-member cluster, with {elections} leader changes seen by its members during the run:\n{}",
        failed.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_of_six_thousand_renewals_keeps_keep_alives_in_flight_bounded() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let store = connect(&cluster).await;
    let ttl = Duration::from_secs(30);
    let holder = Holder::new("batch", "1").unwrap();
    let claims = futures::stream::iter(0..6000)
        .map(|i| {
            let (store, holder) = (&store, &holder);
            async move {
                store
                    .claim(&key(&format!("batch/{i}")), holder, ttl)
                    .await
                    .unwrap()
                    .acquired()
                    .unwrap()
            }
        })
        .buffer_unordered(64);
    let grants: Vec<_> = claims.collect().await;
    let batch: Vec<_> = grants.iter().map(|g| (g.fence.clone(), ttl)).collect();
    let watched = store.clone();
    let sampler = tokio::spawn(async move {
        let mut most = 0;
        loop {
            most = most.max(watched.lease_counts().keep_alives_in_flight);
            tokio::time::sleep(Duration::from_millis(1)).await;
            if most > 4096 {
                return most;
            }
        }
    });
    // More keep-alives than the stream takes at once, in one call: it
    // neither stalls nor lets them all out together.
    let results = tokio::time::timeout(Duration::from_secs(60), store.renew_many(&batch))
        .await
        .expect("the batch stalled");
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} renewals failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(
        !sampler.is_finished(),
        "more than 4096 keep-alives were in flight at once"
    );
    sampler.abort();
}
