//! A leader process killed with SIGKILL: a candidate campaigning in this
//! process leads next, with a higher term, within the TTL and the store's
//! declared slack — on Redis and etcd from the harness.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lease_conformance::lag::Lag;
use lease_core::{DynLeaseStore, Election, Holder, LeaseKey, Leaser};
use lease_tests::{EtcdCluster, RedisServer, or_skip};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(2);

/// Scheduling, the candidate's wake-up and its claim, beyond TTL + slack.
const TOLERANCE: Duration = Duration::from_millis(500);

/// Kills taken per backend.
const KILLS: usize = 3;

/// One kill: how long until the candidate led, and the slowest the
/// machine was meanwhile — this runtime kept from running, or a probe
/// call to the server.
struct Handover {
    took: Duration,
    starved: Duration,
}

async fn kill_the_leader(
    target: &str,
    store: &DynLeaseStore,
    key: &LeaseKey,
    lag: &Lag,
) -> Handover {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hold-lease"))
        .args([target, key.as_str(), &TTL.as_millis().to_string(), "lead"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("hold-lease");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("the leader reports within 10 s")
        .expect("its output")
        .expect("a line");
    let term: u64 = line
        .strip_prefix("leads ")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("the leader said {line:?}"));

    let leaser = Leaser::new(
        store.clone(),
        Holder::unique("candidate").expect("valid"),
        TTL,
    );
    let election = Election::new(leaser, key.clone());
    let campaign = tokio::spawn(async move { election.campaign(Duration::from_secs(30)).await });
    tokio::time::sleep(TTL).await; // the leader renews a few times
    assert!(
        !campaign.is_finished(),
        "a second leader while the first was alive: {:?}",
        campaign.await
    );

    // A probe of the server's own pace while the candidate waits.
    let slowest = Arc::new(AtomicU64::new(0));
    let probe = tokio::spawn({
        let (store, slowest) = (store.clone(), slowest.clone());
        let other = key.join("probe").expect("valid");
        async move {
            loop {
                let sent = Instant::now();
                let _ = store.inspect(&other).await;
                let took = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                slowest.fetch_max(took, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    child.start_kill().expect("SIGKILL");
    let killed = Instant::now();
    child.wait().await.expect("killed");
    let next = campaign
        .await
        .expect("the campaign ran")
        .expect("no store error");
    let took = killed.elapsed();
    probe.abort();
    let next = next.expect("the candidate leads within 30 s");
    assert!(
        next.term().0 > term,
        "the next term {} is not above the killed leader's {term}",
        next.term()
    );
    next.resign().await.expect("resign");
    let probe = Duration::from_micros(slowest.load(Ordering::Relaxed));
    Handover {
        took,
        starved: lag.worst(killed, Instant::now()).max(probe),
    }
}

/// Kills [`KILLS`] leaders in turn; each handover must come within TTL +
/// slack + [`TOLERANCE`]. One later than that while the machine was
/// starved for the excess is taken again (up to twice): the machine, not
/// the store, then decided its time.
async fn killed_leaders_are_replaced(backend: &str, target: &str) {
    let store = lease_connect::connect(&lease_connect::Target::new(target))
        .await
        .expect("the candidate's store");
    let slack = store.capabilities().expiry_slack;
    let bound = TTL + slack + TOLERANCE;
    let lag = Lag::default();
    let ticker = tokio::spawn(lag.clone().tick_in(lag.register()));
    let mut took = Vec::new();
    for i in 0..KILLS {
        for attempt in 0.. {
            let key = LeaseKey::new(format!(
                "killed-leader/{}/{i}/{attempt}",
                std::process::id()
            ))
            .expect("valid");
            let handover = kill_the_leader(target, &store, &key, &lag).await;
            if handover.took <= bound {
                took.push(handover.took);
                break;
            }
            let excess = handover.took - bound;
            let verdict = format!(
                "{backend}: the next leader came {:?} after the kill, beyond TTL {TTL:?} + slack {slack:?} + {TOLERANCE:?}; the machine was starved for up to {:?} meanwhile",
                handover.took, handover.starved
            );
            assert!(handover.starved >= excess, "{verdict}");
            assert!(attempt < 2, "INCONCLUSIVE: {verdict}, three times");
            eprintln!("{verdict}: again");
        }
    }
    ticker.abort();
    took.sort();
    eprintln!(
        "{backend}: killed leader replaced after {took:?} (TTL {TTL:?}, declared slack {slack:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_on_redis() {
    let Some(server) = or_skip("redis", RedisServer::start().await) else {
        return;
    };
    killed_leaders_are_replaced("redis", server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_on_etcd() {
    let Some(cluster) = or_skip("etcd", EtcdCluster::start().await) else {
        return;
    };
    killed_leaders_are_replaced("etcd", &format!("etcd://{}", cluster.endpoints()[0])).await;
}
