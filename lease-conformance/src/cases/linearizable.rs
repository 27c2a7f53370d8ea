//! Mixed workloads checked whole: several clients claim, renew, release
//! and inspect a few keys at random, every call is recorded, and the
//! history must be linearizable against the lease model
//! ([`crate::history`]) — with and without network faults, and in bursts:
//! every client calling at the same instant, so a store that coalesces
//! concurrent calls (one script call or transaction for many) decides
//! them together, where bugs of shared calls live.

use std::ops::Range;
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
/// Keys they share: few, so that they contend.
const KEYS: usize = 3;
/// Keys they share in bursts: many, so that each client holds some and
/// its calls of a burst are mostly on keys of its own, as the many calls
/// a coalescing store shares a server call between are.
const BURST_KEYS: usize = 4 * CLIENTS as usize;

/// The kinds of call, by a roll of 0..100: claims, renewals, releases,
/// crashes; the rest are inspects.
const CLAIM: Range<u32> = 0..35;
const RENEW: Range<u32> = 35..60;
const RELEASE: Range<u32> = 60..75;
const CRASH: Range<u32> = 75..79;

/// When a client makes its next call, and of what kind.
#[derive(Clone, Copy)]
enum Pace {
    /// After a random pause of up to an eighth of the TTL, of a kind
    /// each client rolls for itself.
    Random,
    /// At the next tick of a clock every client shares (one every
    /// sixteenth of the TTL from `start`), of a kind all clients share
    /// (rolled from `seed` and the tick): all clients claim at once, or
    /// all renew, all release, all inspect. A store that coalesces calls
    /// of one kind sends most of a burst in one shared call.
    Bursts { start: Instant, seed: u64 },
}

impl Pace {
    fn bursts() -> Self {
        Self::Bursts {
            start: Instant::now(),
            seed: rand::random(),
        }
    }

    /// The kind of the call at `tick` (see `client_loop`).
    fn roll(self, tick: u64) -> u32 {
        match self {
            Self::Random => rand::random_range(0..100),
            Self::Bursts { seed, .. } => {
                let mixed = (seed ^ tick).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                ((mixed >> 32) % 100) as u32
            }
        }
    }

    /// The key of the next call, whose kind `roll` decides: at random; in
    /// bursts, a renewal or release picks among the keys the client holds,
    /// so that renewals and releases of live grants meet.
    fn pick(self, roll: u32, fences: &[Option<Fence>]) -> usize {
        let any = rand::random_range(0..fences.len());
        if matches!(self, Self::Random) || !(RENEW.contains(&roll) || RELEASE.contains(&roll)) {
            return any;
        }
        let held: Vec<usize> = (0..fences.len()).filter(|&k| fences[k].is_some()).collect();
        if held.is_empty() {
            any
        } else {
            held[rand::random_range(0..held.len())]
        }
    }

    fn keys(self) -> usize {
        match self {
            Self::Random => KEYS,
            Self::Bursts { .. } => BURST_KEYS,
        }
    }

    /// Waits until the next call is due; gives the tick it is due at.
    async fn wait(self, ttl: Duration) -> u64 {
        match self {
            Self::Random => {
                let pause = ttl.as_micros() as u64 / 8;
                tokio::time::sleep(Duration::from_micros(rand::random_range(0..=pause))).await;
                0
            }
            Self::Bursts { start, .. } => {
                let tick = ttl / 16;
                let ticks = (start.elapsed().as_nanos() / tick.as_nanos().max(1)) as u32 + 1;
                tokio::time::sleep_until(start + tick * ticks).await;
                u64::from(ticks)
            }
        }
    }
}

/// Runs `CLIENTS` clients over `stores` (client `i` on `stores[i % n]`)
/// for `runs`, with `ttl`, at `pace`, and checks what they saw.
async fn mixed_workload(
    s: &Subject,
    stores: Vec<DynLeaseStore>,
    (ttl, runs, pace): (Duration, Duration, Pace),
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
            tokio::spawn(async move {
                client_loop(&*store, &recorder, client, (ttl, pace), until).await
            })
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
            "{} calls by {CLIENTS} clients over {} keys (TTL {ttl:?}) are not linearizable: {violation}\n{saved}",
            history.calls.len(),
            pace.keys()
        ))),
    }
}

/// One client: random calls on random keys until `until`.
async fn client_loop(
    store: &dyn lease_core::LeaseStore,
    recorder: &Recorder,
    client: u32,
    (ttl, pace): (Duration, Pace),
    until: Instant,
) -> Result<(), CaseError> {
    let mut life = 1;
    let mut me = holder(&format!("c{client}"), "1");
    let keys: Vec<_> = (0..pace.keys())
        .map(|k| key(&format!("mixed/{k}")))
        .collect();
    let mut fences: Vec<Option<Fence>> = vec![None; keys.len()];
    let mut tick = pace.wait(ttl).await;
    while Instant::now() < until {
        let roll = pace.roll(tick);
        let k = pace.pick(roll, &fences);
        match (roll, &fences[k]) {
            (r, _) if CLAIM.contains(&r) => {
                if let Some(Claim::Acquired(grant)) =
                    recorder.claim(store, client, &keys[k], &me, ttl).await?
                {
                    fences[k] = Some(grant.fence);
                }
            }
            (r, Some(fence)) if RENEW.contains(&r) => {
                let fence = fence.clone();
                if recorder.renew(store, client, &fence, ttl).await?.is_none() {
                    fences[k] = None;
                }
            }
            (r, Some(fence)) if RELEASE.contains(&r) => {
                let fence = fence.clone();
                recorder.release(store, client, &fence).await?;
                fences[k] = None;
            }
            (r, _) if CRASH.contains(&r) => {
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
        tick = pace.wait(ttl).await;
    }
    Ok(())
}

/// The mixed workload at `pace`, half the clients through a fault proxy
/// that loses and delays replies, holds requests and delivers them late
/// after a reset, and freezes traffic, for four TTLs.
async fn under_faults(s: &Subject, pace: Pace) -> Result<(), CaseError> {
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
    let run = (ttl, runs, pace);
    mixed_workload(s, vec![s.store.clone(), net.a.clone()], run, chaos).await
}

cases! {
    /// Six clients claim, renew, release and inspect three keys at random for a few TTLs, now and then crashing and coming back as new holders that leave their grants to expire; every call is recorded and the whole history must be linearizable against the lease model, with each call taking effect between its invocation and its reply and each grant ending between `sent + ttl` and `replied + ttl + slack`.
    #[rule(DeadlinesNeverOverlap, TokensIncrease, ClaimOwnGrant, RenewRefusesAllElse, ReleaseOnlyTheCurrentGrant, InspectShowsTheLiveGrant)]
    async fn a_mixed_workload_is_linearizable(s) {
        let t = s.timing();
        let run = (t.ttl, t.ttl * 4, Pace::Random);
        mixed_workload(s, vec![s.store.clone()], run, async {}).await
    }

    /// The same mixed workload in bursts: sixteen times a TTL every client makes a call of the same kind at the same instant (all claim, all renew, all release or all inspect), mostly on keys of its own, so that a store coalescing concurrent calls decides each burst in shared calls; the history must still be linearizable.
    #[rule(DeadlinesNeverOverlap, TokensIncrease, ClaimOwnGrant, RenewRefusesAllElse, ReleaseOnlyTheCurrentGrant, InspectShowsTheLiveGrant)]
    async fn a_bursty_mixed_workload_is_linearizable(s) {
        let t = s.timing();
        let run = (t.ttl, t.ttl * 4, Pace::bursts());
        mixed_workload(s, vec![s.store.clone()], run, async {}).await
    }

    /// The same mixed workload with half the clients through a fault proxy that loses and delays replies, holds requests and delivers them late after a reset, and resets connections: calls without a reply may take effect at any time or never, and the history must still be linearizable.
    #[needs(Network)]
    #[rule(DeadlinesNeverOverlap, TokensIncrease, BoundedByTheServer, LateRequestsAreHarmless)]
    async fn a_mixed_workload_under_faults_is_linearizable(s) {
        under_faults(s, Pace::Random).await
    }

    /// The bursty mixed workload under the same faults: calls of one kind made at once, half of them through the proxy, so shared calls are cut, lost and delivered late as a whole; the history must still be linearizable.
    #[needs(Network)]
    #[rule(DeadlinesNeverOverlap, TokensIncrease, BoundedByTheServer, LateRequestsAreHarmless)]
    async fn a_bursty_mixed_workload_under_faults_is_linearizable(s) {
        under_faults(s, Pace::bursts()).await
    }
}
