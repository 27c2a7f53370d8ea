//! `lease-admin` end to end, against real Redis and etcd servers from the
//! harness: list, inspect, release by token, markers, and bad input.

use std::sync::Arc;
use std::time::Duration;

use lease_core::{DynLeaseStore, Holder, LeaseKey};
use lease_etcd::{EtcdConfig, EtcdStore};
use lease_redis::{RedisConfig, RedisStore};
use lease_tests::{EtcdCluster, RedisServer, or_skip};

/// Runs the tool; its exit code and standard output and error.
fn admin(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lease-admin"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn key(text: &str) -> LeaseKey {
    LeaseKey::new(text).unwrap()
}

/// Everything an operator does in an incident, through the tool, checked
/// against the store the application uses. `target` and `space` are the
/// tool's first arguments.
async fn incident(store: DynLeaseStore, target: &[&str]) {
    let ttl = Duration::from_secs(60);
    let worker = Holder::new("worker-7", "boot-3").unwrap();
    let grant = store
        .claim(&key("jobs/nightly"), &worker, ttl)
        .await
        .unwrap()
        .acquired()
        .unwrap();
    let part = store
        .claim(
            &LeaseKey::from_segments(["jobs", "nightly", "part 1"]).unwrap(),
            &worker,
            ttl,
        )
        .await
        .unwrap();
    let beside = store.claim(&key("jobsbeside"), &worker, ttl).await.unwrap();
    assert!(part.grant().is_some() && beside.grant().is_some());
    let token = grant.token().0.to_string();
    let run = |extra: &[&str]| {
        let args: Vec<&str> = target.iter().chain(extra).copied().collect();
        admin(&args)
    };

    // Who holds what.
    let (code, out, err) = run(&["list", "jobs"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("jobs/nightly\theld by worker-7#boot-3") && out.contains(&token),
        "{out}"
    );
    assert!(out.contains("jobs/nightly/part%201"), "{out}");
    assert!(
        !out.contains("jobsbeside"),
        "a key beside the prefix was listed: {out}"
    );
    let (code, out, _) = run(&["--json", "list", "jobs"]);
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{out}");
    let (code, out, _) = run(&["--json", "inspect", "jobs/nightly"]);
    assert_eq!(code, 0);
    let record: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["token"].as_u64(), Some(grant.token().0), "{out}");
    assert_eq!(record["holder"]["id"], "worker-7");
    let (code, out, _) = run(&["inspect", "jobs/never"]);
    assert_eq!(code, 1, "{out}");

    // An election and a pool of permits list like other leases; the
    // leader shows with its term and value.
    let leaser =
        lease_core::Leaser::new(store.clone(), Holder::new("db-2", "boot-1").unwrap(), ttl);
    let election = lease_core::Election::new(leaser.clone(), key("elections/primary"));
    let leadership = election
        .campaign(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("leads");
    leadership.publish(b"10.0.0.2:5432").await.unwrap();
    let term = leadership.term().0.to_string();
    let permits = lease_core::Permits::new(leaser, &key("pools/exports"), 3).unwrap();
    let first = permits.try_acquire().await.unwrap().expect("a permit");
    let second = permits.try_acquire().await.unwrap().expect("a permit");
    let (code, out, err) = run(&["list", "elections"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("elections/primary\theld by db-2#boot-1") && out.contains(&term),
        "{out}"
    );
    let (code, out, err) = run(&["leader", "elections/primary"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("led by db-2#boot-1")
            && out.contains(&format!("term {term}"))
            && out.contains("value \"10.0.0.2:5432\""),
        "{out}"
    );
    let (code, out, _) = run(&["--json", "leader", "elections/primary"]);
    assert_eq!(code, 0);
    let led: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(led["term"].as_u64(), Some(leadership.term().0), "{out}");
    assert_eq!(led["value"], "10.0.0.2:5432", "{out}");
    let (code, out, _) = run(&["--json", "list", "pools/exports"]);
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut held: Vec<(String, u64)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_owned(),
                r["token"].as_u64().unwrap(),
            )
        })
        .collect();
    held.sort();
    let mut want = vec![
        (first.fence().key.as_str().to_owned(), first.fence().token.0),
        (
            second.fence().key.as_str().to_owned(),
            second.fence().token.0,
        ),
    ];
    want.sort();
    assert_eq!(held, want, "{out}");
    leadership.resign().await.unwrap();
    let (code, out, _) = run(&["leader", "elections/primary"]);
    assert_eq!((code, out.trim()), (1, "elections/primary: no leader"));
    first.release().await.unwrap();
    second.release().await.unwrap();

    // Release by token: another token is refused and changes nothing.
    let wrong = (grant.token().0 + 1).to_string();
    let (code, out, _) = run(&["release", "jobs/nightly", "--token", &wrong]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("nothing released"), "{out}");
    assert!(
        store.check(&grant.fence).await.unwrap(),
        "a wrong token released the grant"
    );
    let (code, out, _) = run(&["release", "jobs/nightly", "--token", &token]);
    assert_eq!(code, 0, "{out}");
    assert!(
        !store.check(&grant.fence).await.unwrap(),
        "the grant is still held"
    );
    let (code, _, _) = run(&["release", "jobs/nightly", "--token", &token]);
    assert_eq!(code, 1, "releasing twice");

    // A poisoned resource, recovered.
    store
        .put_marker(&key("exports/2026-11"), "poisoned by worker-7")
        .await
        .unwrap();
    let (code, out, _) = run(&["list", "exports", "--markers"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("exports/2026-11\t\"poisoned by worker-7\""),
        "{out}"
    );
    let (code, out, _) = run(&[
        "marker",
        "clear",
        "exports/2026-11",
        "--value",
        "something else",
    ]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        store
            .get_marker(&key("exports/2026-11"))
            .await
            .unwrap()
            .as_deref(),
        Some("poisoned by worker-7")
    );
    let (code, out, _) = run(&[
        "marker",
        "clear",
        "exports/2026-11",
        "--value",
        "poisoned by worker-7",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        store.get_marker(&key("exports/2026-11")).await.unwrap(),
        None
    );
    let (code, _, _) = run(&["marker", "set", "exports/2026-12", "held"]);
    assert_eq!(code, 0);
    assert_eq!(
        store
            .get_marker(&key("exports/2026-12"))
            .await
            .unwrap()
            .as_deref(),
        Some("held")
    );
    let (code, _, _) = run(&["marker", "set", "exports/2026-12", "other"]);
    assert_eq!(code, 1, "overwrote a marker");
    let (code, out, _) = run(&["marker", "get", "exports/2026-12"]);
    assert_eq!((code, out.trim()), (0, "exports/2026-12: \"held\""));

    // Bad input names the thing and the rule.
    let (code, _, err) = run(&["inspect", "bad key"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("\"bad key\"") && err.contains("whitespace"),
        "{err}"
    );
    let (code, _, err) = run(&["release", "jobs/nightly"]);
    assert_eq!(code, 2);
    assert!(err.contains("--token"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_mends_leases_on_redis() {
    let Some(server) = or_skip("redis", RedisServer::start().await) else {
        return;
    };
    let namespace = format!("admin-{}", rand_suffix());
    let store = RedisStore::connect(RedisConfig::new(server.url()).namespace(&namespace))
        .await
        .unwrap();
    let target = [server.url(), "--namespace", namespace.as_str()];
    incident(Arc::new(store), &target).await;
    // A wrong password is refused without being printed.
    let url = server.url().replace("redis://", "redis://admin:s3cret-pw@");
    let (code, out, err) = admin(&[&url, "list", "jobs"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        !err.contains("s3cret-pw") && !out.contains("s3cret-pw"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_mends_leases_on_etcd() {
    let Some(cluster) = or_skip("etcd", EtcdCluster::start().await) else {
        return;
    };
    let prefix = format!("admin-{}", rand_suffix());
    let store = EtcdStore::connect(EtcdConfig::new(cluster.endpoints().to_vec()).prefix(&prefix))
        .await
        .unwrap();
    let target = format!("etcd://{}", cluster.endpoints().join(","));
    let target = [target.as_str(), "--prefix", prefix.as_str()];
    incident(Arc::new(store), &target).await;
}

#[test]
fn malformed_and_unreachable_targets_fail_with_what_and_why() {
    let (code, _, err) = admin(&["nope://host", "list", "a"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("\"nope://host\"") && err.contains("etcd://HOST:PORT"),
        "{err}"
    );
    let (code, _, err) = admin(&["etcd://user:pw@127.0.0.1:1", "list", "a"]);
    assert_eq!(code, 2);
    assert!(err.contains("--user") && !err.contains("pw@"), "{err}");
    let (code, _, err) = admin(&["redis://127.0.0.1:1", "list", "a"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot connect to redis at redis://127.0.0.1:1"),
        "{err}"
    );
    let (code, out, _) = admin(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("marker clear KEY --value VALUE"), "{out}");
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
