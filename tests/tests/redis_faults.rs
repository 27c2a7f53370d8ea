//! Redis under faults and constraints: restarts that lose data, a frozen
//! server, cut connections, one round trip per operation, a least-privilege
//! ACL user.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lease_core::{
    Acquire, Claim, DynLeaseStore, FencedResource, Holder, LeaseError, LeaseKey, LeaseStore,
    Leaser, LostReason,
};
use lease_redis::{RedisConfig, RedisStore};
use lease_tests::{RedisOptions, RedisServer, or_skip};
use tokio::time::Instant;

fn key(text: &str) -> LeaseKey {
    LeaseKey::new(text).unwrap()
}

async fn server() -> Option<RedisServer> {
    or_skip("redis", RedisServer::start().await)
}

async fn connect(url: &str, config: impl FnOnce(RedisConfig) -> RedisConfig) -> RedisStore {
    RedisStore::connect(config(RedisConfig::new(url)))
        .await
        .expect("redis answers")
}

/// Retries `f` while a restarted server comes back.
async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut last = String::new();
    for _ in 0..100 {
        match f().await {
            Ok(value) => return value,
            Err(why) => last = why,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never recovered: {last}")
}

/// Two grants on one key with a restart that loses everything between
/// them: does the second token come out higher?
async fn token_survives_restart<F, Fut>(server: &mut RedisServer, mut grant: F) -> (u64, u64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, String>>,
{
    let first = eventually(&mut grant).await;
    server.restart().await.expect("restart");
    let second = eventually(&mut grant).await;
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_increase_across_a_restart_without_persistence() {
    let Some(mut server) = server().await else {
        return;
    };
    let store = connect(server.url(), |c| c).await;
    let k = key("restart/tokens");
    let (first, second) = token_survives_restart(&mut server, || {
        let (store, k) = (store.clone(), k.clone());
        async move {
            let holder = Holder::unique("w").map_err(|e| e.to_string())?;
            match store
                .claim(&k, &holder, Duration::from_secs(60))
                .await
                .map_err(|e| e.to_string())?
            {
                Claim::Acquired(grant) => {
                    store
                        .release(&grant.fence)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(grant.token().0)
                }
                Claim::Busy(record) => Err(format!("busy: {record:?}")),
            }
        }
    })
    .await;
    assert!(
        second > first,
        "token {second} after a data-losing restart is not above {first}"
    );

    // The same check against a plain INCR counter, the obvious design:
    // the restart resets the counter and the check catches it.
    let client = redis::Client::open(server.url()).unwrap();
    let (first, second) = token_survives_restart(&mut server, || {
        let client = client.clone();
        async move {
            let mut connection = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            redis::cmd("INCR")
                .arg("incr-token")
                .query_async::<u64>(&mut connection)
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    assert!(
        second <= first,
        "the INCR variant should have gone back: {first} then {second}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_ends_the_lease_by_its_deadline_and_fencing_stops_the_late_write() {
    let Some(server) = server().await else { return };
    let call_timeout = Duration::from_millis(200);
    let store: DynLeaseStore =
        Arc::new(connect(server.url(), |c| c.call_timeout(call_timeout)).await);
    let k = key("pause/lease");
    let ttl = Duration::from_secs(1);
    let leaser = Leaser::new(store.clone(), Holder::new("a", "1").unwrap(), ttl);
    let Acquire::Held(lease) = leaser.try_acquire(&k).await.unwrap() else {
        panic!("free key")
    };
    let resource = FencedResource::new("ledger", Vec::new());
    resource.write(lease.fence(), |log| log.push("a1")).unwrap();

    server.pause().await.expect("pause");
    // Calls hang: they end by their timeout, with an outcome unknown.
    let hung = store
        .claim(&k, &Holder::new("b", "1").unwrap(), ttl)
        .await
        .unwrap_err();
    assert!(
        matches!(hung, LeaseError::Timeout { .. }) && hung.is_indeterminate(),
        "{hung}"
    );
    let deadline = lease.deadline();
    lease.lost().cancelled().await;
    let late = Instant::now().saturating_duration_since(deadline);
    assert!(
        late < Duration::from_millis(50),
        "lost fired {late:?} after the deadline"
    );
    assert_eq!(lease.lost_reason(), Some(LostReason::DeadlinePassed));
    server.resume().await.expect("resume");

    // Once the grant has expired on the server, b gets a higher token and
    // the resource refuses a's late write.
    tokio::time::sleep(ttl).await;
    let b = eventually(|| {
        let store = store.clone();
        let k = k.clone();
        async move {
            match store
                .claim(&k, &Holder::new("b", "1").unwrap(), ttl)
                .await
                .map_err(|e| e.to_string())?
            {
                Claim::Acquired(grant) => Ok(grant),
                Claim::Busy(record) => Err(format!("still busy: {record:?}")),
            }
        }
    })
    .await;
    assert!(b.token() > lease.fence().token);
    resource.write(&b.fence, |log| log.push("b1")).unwrap();
    assert!(matches!(
        resource.write(lease.fence(), |log| log.push("a2")),
        Err(LeaseError::StaleFence { .. })
    ));
    assert!(
        store
            .guarded_write(lease.fence(), &key("pause/data"), b"a2")
            .await
            .unwrap_err()
            .is_lost()
    );
    assert_eq!(resource.read(Vec::clone), ["a1", "b1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_do_not_lose_a_kept_lease() {
    let Some(server) = server().await else { return };
    let store: DynLeaseStore =
        Arc::new(connect(server.url(), |c| c.call_timeout(Duration::from_millis(500))).await);
    let ttl = Duration::from_secs(2);
    let leaser = Leaser::new(store.clone(), Holder::new("a", "1").unwrap(), ttl);
    let Acquire::Held(lease) = leaser.try_acquire(&key("cut/lease")).await.unwrap() else {
        panic!("free key")
    };
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    for _ in 0..4 {
        // Kill every client connection but this one.
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("SKIPME")
            .arg("yes")
            .query_async(&mut admin)
            .await
            .unwrap();
        tokio::time::sleep(ttl / 2).await;
    }
    assert!(
        !lease.is_lost(),
        "lost after cut connections: {:?}",
        lease.lost_reason()
    );
    assert!(store.check(lease.fence()).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_one_round_trip() {
    let Some(server) = server().await else { return };
    let store = connect(server.url(), |c| c.namespace("rt")).await;
    let (k, target) = (key("rt/lease"), key("rt/data"));
    let holder = Holder::new("a", "1").unwrap();
    let ttl = Duration::from_secs(30);
    // Load every script once: NOSCRIPT then SCRIPT LOAD is the cold path.
    let warm = store
        .claim(&k, &holder, ttl)
        .await
        .unwrap()
        .acquired()
        .unwrap();
    store.renew(&warm.fence, ttl).await.unwrap();
    store
        .guarded_write(&warm.fence, &target, b"x")
        .await
        .unwrap();
    store.read_guarded(&target).await.unwrap();
    store.inspect(&k).await.unwrap();
    store.release(&warm.fence).await.unwrap();
    store.put_marker(&k, "m").await.unwrap();
    store.delete_marker(&k, "m").await.unwrap();
    let grant = store
        .claim(&k, &holder, ttl)
        .await
        .unwrap()
        .acquired()
        .unwrap();

    let client = redis::Client::open(server.url()).unwrap();
    let monitor = client.get_async_monitor().await.unwrap();
    let mut lines = monitor.into_on_message::<String>();
    let sentinel = |n: usize| format!("sentinel-{n}");
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();

    let mut counted = Vec::new();
    macro_rules! op {
        ($n:expr, $name:literal, $call:expr) => {{
            let value = $call;
            let _: () = redis::cmd("ECHO")
                .arg(sentinel($n))
                .query_async(&mut admin)
                .await
                .unwrap();
            let mut commands = Vec::new();
            while let Some(line) = lines.next().await {
                if line.contains(&sentinel($n)) {
                    break;
                }
                // Commands a script runs show as `[0 lua]`: not round trips.
                if !line.contains(" lua]") {
                    commands.push(line);
                }
            }
            counted.push(($name, commands));
            value
        }};
    }
    op!(0, "renew", store.renew(&grant.fence, ttl).await.unwrap());
    let _ = op!(1, "claim", store.claim(&k, &holder, ttl).await.unwrap());
    let taken = op!(
        2,
        "reclaim",
        store
            .reclaim(&grant.fence, &Holder::new("b", "1").unwrap(), ttl)
            .await
            .unwrap()
    );
    let b = taken
        .acquired()
        .expect("the observed grant is taken over")
        .fence;
    op!(3, "inspect", store.inspect(&k).await.unwrap());
    op!(
        4,
        "guarded_write",
        store.guarded_write(&b, &target, b"y").await.unwrap()
    );
    op!(
        5,
        "read_guarded",
        store.read_guarded(&target).await.unwrap()
    );
    op!(6, "release", store.release(&b).await.unwrap());
    op!(7, "put_marker", store.put_marker(&k, "m").await.unwrap());
    op!(8, "get_marker", store.get_marker(&k).await.unwrap());
    op!(
        9,
        "delete_marker",
        store.delete_marker(&k, "m").await.unwrap()
    );
    for (name, commands) in counted {
        assert_eq!(commands.len(), 1, "{name} sent {commands:#?}");
        assert!(
            commands[0].to_lowercase().contains("\"evalsha\""),
            "{name} sent {commands:?}"
        );
    }
}

/// Only what the adapter needs: its scripts, the commands they run, its
/// keys and its channel.
const LEASER_ACL: &str = "on >s3cret resetkeys ~{acl}:* resetchannels &{acl}:* -@all \
    +evalsha +eval +script|load +time +type +del +publish +get +mget +set +pttl +pexpire +subscribe +ping";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_least_privilege_acl_user_suffices_and_a_lesser_one_is_told_why() {
    let Some(server) = server().await else { return };
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let mut setuser = redis::cmd("ACL");
    setuser
        .arg("SETUSER")
        .arg("leaser")
        .arg(LEASER_ACL.split_whitespace().collect::<Vec<_>>());
    let _: () = setuser.query_async(&mut admin).await.unwrap();
    let mut lesser = redis::cmd("ACL");
    lesser
        .arg("SETUSER")
        .arg("reader")
        .arg(&["on", ">s3cret", "~*", "+get", "+ping"][..]);
    let _: () = lesser.query_async(&mut admin).await.unwrap();

    let url = server.url().replace("redis://", "redis://leaser:s3cret@");
    let store: DynLeaseStore = Arc::new(connect(&url, |c| c.namespace("acl")).await);
    let k = key("acl/lease");
    let grant = store
        .claim(&k, &Holder::new("a", "1").unwrap(), Duration::from_secs(30))
        .await
        .unwrap();
    let grant = grant.acquired().expect("free key");
    let waiter = tokio::spawn({
        let (store, k) = (store.clone(), k.clone());
        async move { store.wait_free(&k, Duration::from_secs(10)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(store.release(&grant.fence).await.unwrap());
    assert!(
        waiter.await.unwrap().unwrap(),
        "the waiter heard the release through the ACL'd channel"
    );
    store.put_marker(&k, "m").await.unwrap();
    store
        .guarded_write(&grant.fence, &key("acl/data"), b"x")
        .await
        .unwrap_err();

    let url = server.url().replace("redis://", "redis://reader:s3cret@");
    let reader = connect(&url, |c| c.namespace("acl")).await;
    let refused = reader
        .claim(&k, &Holder::new("r", "1").unwrap(), Duration::from_secs(30))
        .await
        .unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains("refused the script") && message.contains("EVALSHA"),
        "{message}"
    );

    let url = server.url().replace("redis://", "redis://leaser:wrong@");
    let denied = RedisStore::connect(RedisConfig::new(url))
        .await
        .unwrap_err();
    assert!(matches!(denied, LeaseError::Connect { .. }), "{denied}");
    assert!(
        !denied.to_string().contains("wrong"),
        "the password leaked into: {denied}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistence_keeps_the_grant_across_a_restart() {
    let options = RedisOptions {
        persistence: true,
        ..RedisOptions::default()
    };
    let Some(mut server) = or_skip("redis", RedisServer::start_with(options).await) else {
        return;
    };
    let store = connect(server.url(), |c| c).await;
    let k = key("persist/lease");
    let grant = store
        .claim(&k, &Holder::new("a", "1").unwrap(), Duration::from_secs(60))
        .await
        .unwrap()
        .acquired()
        .unwrap();
    server.restart().await.unwrap();
    let record = eventually(|| {
        let (store, k) = (store.clone(), k.clone());
        async move { store.inspect(&k).await.map_err(|e| e.to_string()) }
    })
    .await;
    assert!(
        record.is_some_and(|r| r.is(&grant.fence)),
        "the grant did not survive an AOF restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_works_and_an_unknown_ca_is_refused() {
    let certs =
        lease_tests::TestCertificates::generate().expect("openssl makes the test certificates");
    let options = RedisOptions {
        tls: Some((certs.cert(), certs.key(), certs.ca())),
        ..RedisOptions::default()
    };
    let Some(server) = or_skip("redis with TLS", RedisServer::start_with(options).await) else {
        return;
    };
    assert!(server.url().starts_with("rediss://"));
    let store: DynLeaseStore =
        Arc::new(connect(server.url(), |c| c.tls_root_ca(certs.ca_pem())).await);
    let k = key("tls/lease");
    let grant = store
        .claim(&k, &Holder::new("a", "1").unwrap(), Duration::from_secs(10))
        .await
        .unwrap()
        .acquired()
        .unwrap();
    let waiter = tokio::spawn({
        let (store, k) = (store.clone(), k.clone());
        async move { store.wait_free(&k, Duration::from_secs(10)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(store.release(&grant.fence).await.unwrap());
    assert!(
        waiter.await.unwrap().unwrap(),
        "the release notification arrived over TLS"
    );

    // The system's roots do not know the private CA.
    let refused =
        RedisStore::connect(RedisConfig::new(server.url()).connect_timeout(Duration::from_secs(2)))
            .await
            .unwrap_err();
    assert!(matches!(refused, LeaseError::Connect { .. }), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_grants_leave_only_the_namespace_token_floor_behind() {
    let Some(server) = server().await else { return };
    let store = connect(server.url(), |c| c.namespace("mem")).await;
    let holder = Holder::new("a", "1").unwrap();
    let ttl = Duration::from_millis(300);
    let mut last = 0;
    // When each grant left live was claimed: sent, and answered.
    let mut kept_live = Vec::new();
    for i in 0..500 {
        let sent = Instant::now();
        let grant = store
            .claim(&key(&format!("mem/{i}")), &holder, ttl)
            .await
            .unwrap()
            .acquired()
            .unwrap();
        assert!(
            grant.fence.token.0 > last,
            "tokens increase across the namespace"
        );
        last = grant.fence.token.0;
        if i % 2 == 0 {
            store.release(&grant.fence).await.unwrap();
        } else {
            kept_live.push((sent, Instant::now()));
        }
    }
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let asked = Instant::now();
    // KEYS leaves out expired keys that DBSIZE would still count.
    let kept: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut admin)
        .await
        .unwrap();
    let kept = kept.len();
    let answered = Instant::now();
    // A slow runner lets early grants expire before the count: only those
    // certainly live must be there, and none certainly expired.
    let certain = kept_live
        .iter()
        .filter(|(sent, _)| *sent + ttl > answered)
        .count();
    // Redis expires keys by its own clock: 10 ms of slack, as the store declares.
    let slack = store.capabilities().expiry_slack;
    let possible = kept_live
        .iter()
        .filter(|(_, replied)| *replied + ttl + slack > asked)
        .count();
    assert!(
        (certain + 1..=possible + 1).contains(&kept),
        "{kept} records kept: the floor and between {certain} and {possible} live grants expected"
    );
    // Expired records go when their grant ends, by the server's expiry.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let kept: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(kept, ["{mem}:floor"], "ended grants left records behind");
    // The floor orders the next token even with the records gone.
    let floor: u64 = redis::cmd("GET")
        .arg("{mem}:floor")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(floor, last);
    let _: () = redis::cmd("SET")
        .arg("{mem}:floor")
        .arg(u64::MAX / 4096)
        .query_async(&mut admin)
        .await
        .unwrap();
    let next = store
        .claim(&key("mem/0"), &holder, ttl)
        .await
        .unwrap()
        .acquired()
        .unwrap();
    assert_eq!(
        next.fence.token.0,
        u64::MAX / 4096 + 1,
        "the next token is above the floor, not the clock"
    );
    // A floor of the wrong type or out of range is replaced, not obeyed or fatal.
    let _: () = redis::cmd("DEL")
        .arg("{mem}:floor")
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("{mem}:floor")
        .arg("f")
        .arg("v")
        .query_async(&mut admin)
        .await
        .unwrap();
    let repaired = store
        .claim(&key("mem/1"), &holder, ttl)
        .await
        .unwrap()
        .acquired()
        .unwrap();
    assert!(
        repaired.fence.token.0 > 1_700_000_000_000_000,
        "a token from the clock"
    );
    let _: () = redis::cmd("SET")
        .arg("{mem}:floor")
        .arg("1e300")
        .query_async(&mut admin)
        .await
        .unwrap();
    let repaired = store
        .claim(&key("mem/2"), &holder, ttl)
        .await
        .unwrap()
        .acquired()
        .unwrap();
    assert!(
        repaired.fence.token.0 < u64::MAX / 2,
        "an impossible floor is ignored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_leases_outlive_a_frozen_server() {
    let Some(server) = server().await else {
        return;
    };
    let store: DynLeaseStore = Arc::new(connect(server.url(), |c| c).await);
    let direct: DynLeaseStore = Arc::new(connect(server.url(), |c| c).await);
    let ttl = Duration::from_secs(6);
    let seen = lease_tests::hold_through_a_stall(
        store,
        direct,
        10_000,
        ttl,
        |_| async { server.pause().await.expect("pause") },
        || async { server.resume().await.expect("resume") },
    )
    .await;
    seen.assert_survived();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_loaded_once_at_connect_not_per_call() {
    let Some(server) = server().await else {
        return;
    };
    let store = connect(server.url(), |c| c).await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let loaded = lease_tests::gauges::redis_calls(&mut raw, "script|load").await;
    // A burst of first calls: none finds its script missing.
    let claims = (0..64).map(|i| {
        let store = store.clone();
        async move {
            store
                .claim(
                    &key(&format!("burst/{i}")),
                    &Holder::new("a", "1").unwrap(),
                    Duration::from_secs(10),
                )
                .await
                .unwrap()
        }
    });
    futures::future::join_all(claims).await;
    let after = lease_tests::gauges::redis_calls(&mut raw, "script|load").await;
    assert!(loaded >= 1.0, "nothing was loaded at connect");
    assert_eq!(
        after,
        loaded,
        "{} scripts loaded by the burst itself",
        after - loaded
    );
}

/// Claims `key` as `holder` until it is granted, at most `limit`; every
/// answer before that must be busy. Returns when it was granted.
async fn claim_until_granted(
    store: &RedisStore,
    k: &LeaseKey,
    holder: &Holder,
    ttl: Duration,
    limit: Duration,
) -> (Instant, lease_core::Grant, Vec<lease_core::LeaseRecord>) {
    let give_up = Instant::now() + limit;
    let mut refusals = Vec::new();
    while Instant::now() < give_up {
        match store.claim(k, holder, ttl).await {
            Ok(Claim::Acquired(grant)) => return (Instant::now(), grant, refusals),
            Ok(Claim::Busy(record)) => refusals.push(record),
            Err(_) => {} // the restarted server is coming back
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{k} was not granted within {limit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_restart_quarantine_nobody_is_granted_an_erased_key_before_its_holders_deadline() {
    let Some(mut server) = server().await else {
        return;
    };
    let ttl = Duration::from_secs(3);
    let quarantined = |c: RedisConfig| c.namespace("q").restart_quarantine(ttl);
    let store = connect(server.url(), quarantined).await;
    let rival = connect(server.url(), quarantined).await;
    let k = key("q/job");

    // A server that just started looks like one that lost its data: the
    // first claim waits out the rest of the quarantine, told why.
    let a = Holder::new("a", "1").unwrap();
    let (_, first, refusals) = claim_until_granted(&store, &k, &a, ttl, ttl * 2).await;
    let why = refusals.first().expect("the fresh server was quarantined");
    assert_eq!(why.holder.id(), "restart-quarantine");
    assert!(why.remaining <= ttl + Duration::from_secs(1), "{why:?}");
    assert!(store.release(&first.fence).await.unwrap());
    let refused = store.claim(&k, &a, ttl * 2).await.unwrap_err();
    assert!(
        matches!(refused, LeaseError::InvalidTtl { .. }),
        "{refused}"
    );

    // A holder keeps its lease alive; the server restarts and loses it.
    let leaser =
        Leaser::new(Arc::new(store.clone()), a, ttl).renew_every(Duration::from_millis(300));
    let lease = leaser.try_acquire(&k).await.unwrap().held().expect("free");
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().await.expect("restart");
    let restarted = Instant::now();
    // Another client claims at once and keeps trying: busy until the old
    // holder's deadline has passed, granted soon after, with a higher token.
    let b = Holder::new("b", "1").unwrap();
    let (granted, second, refusals) = claim_until_granted(&rival, &k, &b, ttl, ttl * 3).await;
    assert!(
        refusals
            .iter()
            .all(|r| r.holder.id() == "restart-quarantine"),
        "{refusals:?}"
    );
    assert!(
        granted >= lease.deadline(),
        "granted {:?} before the erased holder's deadline",
        lease.deadline() - granted
    );
    assert!(
        granted < restarted + ttl + Duration::from_secs(2),
        "the quarantine outlasted its bound"
    );
    assert!(second.fence.token > lease.fence().token);
    assert!(lease.is_lost(), "the erased holder was told");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_restart_quarantine_a_restart_that_loses_data_grants_at_once() {
    // The hazard the quarantine exists for: this must stay true, or the
    // test above proves nothing.
    let Some(mut server) = server().await else {
        return;
    };
    let ttl = Duration::from_secs(3);
    let store = connect(server.url(), |c| c.namespace("q")).await;
    let k = key("q/job");
    let first = store
        .claim(&k, &Holder::new("a", "1").unwrap(), ttl)
        .await
        .unwrap()
        .acquired()
        .unwrap();
    server.restart().await.expect("restart");
    let (granted, _, _) =
        claim_until_granted(&store, &k, &Holder::new("b", "1").unwrap(), ttl, ttl).await;
    assert!(
        granted < first.deadline,
        "a second holder while the first's deadline is ahead"
    );
}
