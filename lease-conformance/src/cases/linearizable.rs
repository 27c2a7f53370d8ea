//! Mixed workloads checked whole: several clients claim, renew, release
//! and inspect a few keys at random, every call is recorded, and the
//! history must be linearizable against the lease model
//! ([`crate::history`]) — with and without network faults.

use std::sync::Arc;
use std::time::Duration;

use lease_core::{Claim, DynLeaseStore, Fence};
use tokio::time::Instant;

use crate::cases::faults::{call_timeout, network};
use crate::check::{holder, key};
use crate::faults::Fault;
use crate::history::{Recorder, check_and_keep};
use crate::{CaseError, Subject};

/// Clients in a workload.
const CLIENTS: u32 = 6;
/// Keys they share.
const KEYS: usize = 3;

/// Runs `CLIENTS` clients over `stores` (client `i` on `stores[i % n]`)
/// for `runs`, with `ttl`, and checks what they saw.
async fn mixed_workload(
    s: &Subject,
    stores: Vec<DynLeaseStore>,
    ttl: Duration,
    runs: Duration,
    during: impl Future<Output = ()>,
) -> Result<(), CaseError> {
    let recorder = Arc::new(Recorder::new(
        s.store.capabilities().expiry_slack + Duration::from_millis(5),
    ));
    let until = Instant::now() + runs;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let store = stores[client as usize % stores.len()].clone();
            let recorder = recorder.clone();
            tokio::spawn(async move { client_loop(&*store, &recorder, client, ttl, until).await })
        })
        .collect();
    during.await;
    for client in clients {
        client
            .await
            .map_err(|e| CaseError::Failed(format!("a workload client panicked: {e}")))??;
    }
    let history = recorder.history();
    match check_and_keep(&history) {
        Ok(()) => Ok(()),
        Err((violation, _)) if violation.undecided => Err(CaseError::Starved(format!(
            "the history of {} calls could not be decided: {violation}",
            history.calls.len()
        ))),
        Err((violation, saved)) => Err(CaseError::Failed(format!(
            "{} calls by {CLIENTS} clients over {KEYS} keys (TTL {ttl:?}) are not linearizable: {violation}\n{saved}",
            history.calls.len()
        ))),
    }
}

/// One client: random calls on random keys until `until`.
async fn client_loop(
    store: &dyn lease_core::LeaseStore,
    recorder: &Recorder,
    client: u32,
    ttl: Duration,
    until: Instant,
) -> Result<(), CaseError> {
    let mut life = 1;
    let mut me = holder(&format!("c{client}"), "1");
    let keys: Vec<_> = (0..KEYS).map(|k| key(&format!("mixed/{k}"))).collect();
    let mut fences: Vec<Option<Fence>> = vec![None; KEYS];
    while Instant::now() < until {
        let k = rand::random_range(0..KEYS);
        let roll = rand::random_range(0..100);
        match (roll, &fences[k]) {
            (0..35, _) => {
                if let Some(Claim::Acquired(grant)) =
                    recorder.claim(store, client, &keys[k], &me, ttl).await?
                {
                    fences[k] = Some(grant.fence);
                }
            }
            (35..60, Some(fence)) => {
                let fence = fence.clone();
                if recorder.renew(store, client, &fence, ttl).await?.is_none() {
                    fences[k] = None;
                }
            }
            (60..75, Some(fence)) => {
                let fence = fence.clone();
                recorder.release(store, client, &fence).await?;
                fences[k] = None;
            }
            (75..79, _) => {
                // The client crashes and restarts as a new holder: what it
                // held is left to expire, and others may claim it after.
                life += 1;
                me = holder(&format!("c{client}"), &life.to_string());
                fences.fill(None);
            }
            _ => {
                // A failed inspect (a cut connection) is left out.
                let _ = recorder.inspect(store, client, &keys[k]).await;
            }
        }
        let pause = ttl.as_micros() as u64 / 8;
        tokio::time::sleep(Duration::from_micros(rand::random_range(0..=pause))).await;
    }
    Ok(())
}

cases! {
    /// Six clients claim, renew, release and inspect three keys at random for a few TTLs, now and then crashing and coming back as new holders that leave their grants to expire; every call is recorded and the whole history must be linearizable against the lease model, with each call taking effect between its invocation and its reply and each grant ending between `sent + ttl` and `replied + ttl + slack`.
    #[rule(DeadlinesNeverOverlap, TokensIncrease, ClaimOwnGrant, RenewRefusesAllElse, ReleaseOnlyTheCurrentGrant, InspectShowsTheLiveGrant)]
    async fn a_mixed_workload_is_linearizable(s) {
        let t = s.timing();
        mixed_workload(s, vec![s.store.clone()], t.ttl, t.ttl * 4, async {}).await
    }

    /// The same mixed workload with half the clients through a fault proxy that loses and delays replies, holds requests and delivers them late after a reset, and resets connections: calls without a reply may take effect at any time or never, and the history must still be linearizable.
    #[needs(Network)]
    #[rule(DeadlinesNeverOverlap, TokensIncrease, BoundedByTheServer, LateRequestsAreHarmless)]
    async fn a_mixed_workload_under_faults_is_linearizable(s) {
        let net = network(s).await?;
        let ttl = net.ttl;
        let timeout = call_timeout(ttl);
        let runs = ttl * 4;
        let chaos = async {
            let until = Instant::now() + runs;
            let mut late = Vec::new();
            while Instant::now() < until {
                let fault = match rand::random_range(0..5) {
                    0 => Fault::LoseReplies,
                    1 => Fault::DelayReplies(timeout / 2),
                    2 => Fault::HoldRequests,
                    3 => Fault::Freeze,
                    _ => Fault::None,
                };
                net.proxy.set(fault);
                tokio::time::sleep(timeout).await;
                if fault == Fault::HoldRequests {
                    late.extend(net.proxy.cut_held().await);
                }
                net.proxy.heal();
                tokio::time::sleep(timeout / 2).await;
                // Requests held earlier land now, late.
                for request in late.drain(..) {
                    request.deliver(timeout).await;
                }
            }
            net.proxy.heal();
        };
        mixed_workload(s, vec![s.store.clone(), net.a.clone()], ttl, runs, chaos).await
    }
}
