//! The fault cases: a [`FaultProxy`](crate::faults::FaultProxy) between a store and its server loses
//! replies, holds requests and delivers them late, resets connections,
//! partitions and freezes — and the rules still hold.
//!
//! Each case opens a store through the proxy ([`Hook::Network`]) beside
//! the subject's own store, which reaches the server directly and plays
//! the other client. Each first shows its fault happened (the other
//! client sees the effect of the reply that was lost, the late request is
//! answered by the server), then judges the rule. A fault that did not
//! happen — a request that never left the store — makes the try starved,
//! never passed.
//!
//! [`Hook::Network`]: crate::Hook::Network

mod net;

use std::time::Duration;

use lease_core::{Acquire, Claim, FencedResource, LeaseKey, Leaser};
use tokio::time::Instant;

use crate::check::{acquire, holder, key};
use crate::faults::Fault;
use crate::{CaseError, Subject, ensure};
use net::{not_applied, reply_faults, settled, transient, unknown_outcome};

pub(crate) use net::{Net, call_timeout, network};

cases! {
    /// A claim whose reply is lost after the server applied it ends by the server's clock: the other client is granted the key by `last write + TTL + slack`, not before the TTL, with a higher token, and the lost grant's fence is refused.
    #[needs(Network)]
    #[rule(BoundedByTheServer)]
    async fn a_claim_whose_reply_is_lost_ends_by_the_servers_clock(s) {
        let net = network(s).await?;
        let a = holder("a", "1");
        for (rung, fault) in reply_faults().into_iter().enumerate() {
            let k = key(&format!("faults/lost-claim/{rung}"));
            net.ready(&k).await?;
            net.proxy.set(fault);
            let sent = Instant::now();
            let answer = net.a.claim(&k, &a, net.ttl).await;
            // Heal at once: a store that kept the grant alive by itself
            // would reach the server from here on.
            net.proxy.heal();
            if answer.is_ok() && fault != Fault::LoseReplies {
                continue; // answered in time: no reply was lost
            }
            unknown_outcome("a claim", answer)?;
            let (fence, seen) = match net.seen_held(s, &k, &a, "the claim whose reply was lost").await {
                Err(CaseError::Starved(_)) => continue, // not applied: the next rung
                seen => seen?,
            };
            let next = net.handover(s, &k, net.ttl, sent + net.ttl, seen).await?;
            return net.old_fence_refused(s, &fence, &next).await;
        }
        Err(not_applied("claim"))
    }

    /// A renewal whose reply is lost after the server applied it ends by the server's clock: the other client is granted the key by `last write + TTL + slack` and not before the renewed TTL, and the old fence is refused.
    #[needs(Network)]
    #[rule(BoundedByTheServer)]
    async fn a_renewal_whose_reply_is_lost_ends_by_the_servers_clock(s) {
        let net = network(s).await?;
        let a = holder("a", "1");
        let longer = net.ttl * 2;
        for (rung, fault) in reply_faults().into_iter().enumerate() {
            let k = key(&format!("faults/lost-renewal/{rung}"));
            net.ready(&k).await?;
            let first = acquire(&*net.a, &k, &a, net.ttl).await?;
            net.proxy.set(fault);
            let sent = Instant::now();
            let answer = net.a.renew(&first.value.fence, longer).await;
            net.proxy.heal();
            if answer.is_ok() && fault != Fault::LoseReplies {
                continue;
            }
            unknown_outcome("a renewal", answer)?;
            let (fence, seen) = net.seen_held(s, &k, &a, "the renewal whose reply was lost").await?;
            ensure!(fence == first.value.fence, "after a renewal the grant is {fence}, not {}", first.value.fence);
            // Applied when the record outlives what the claim alone gave.
            let record = s.store.inspect(&k).await?;
            let ends = Instant::now() + record.map_or(Duration::ZERO, |r| r.remaining);
            if ends <= first.replied + net.ttl + net.timing.slack {
                continue;
            }
            let next = net.handover(s, &k, longer, sent + longer, seen).await?;
            return net.old_fence_refused(s, &fence, &next).await;
        }
        Err(not_applied("renewal"))
    }

    /// A claim of one's own live grant that the network delivers late — after the store gave up on it, reconnected and renewed for longer — never ends the grant before the deadline that renewal told.
    #[needs(Network)]
    #[rule(LateRequestsAreHarmless, ClaimOwnGrant)]
    async fn a_late_claim_never_shortens_a_grant_its_holder_was_told_of(s) {
        let net = network(s).await?;
        let k = key("faults/late-claim");
        let a = holder("a", "1");
        net.ready(&k).await?;
        let first = acquire(&*net.a, &k, &a, net.ttl).await?;
        net.proxy.set(Fault::HoldRequests);
        let held = net.a.claim(&k, &a, net.ttl).await;
        unknown_outcome("a claim whose request was held", held)?;
        let late = net.proxy.cut_held().await;
        if late.is_empty() {
            return Err(CaseError::Starved("the held claim was never sent, so no request could arrive late".into()));
        }
        let fence = &first.value.fence;
        let Some(after) = net.renew_then_deliver(s, fence, net.ttl * 4, first.sent + first.value.ttl, late).await? else {
            return Err(CaseError::Starved("the server never answered the late claim".into()));
        };
        net.not_shortened(s, fence, "a claim of a's own grant", &after).await
    }

    /// A renewal with a short TTL that the network delivers late — after the store gave up on it, reconnected and renewed for longer — never ends the grant before the deadline that later renewal told: a backend applies one store's renewals in the order they were sent (`lease_core::Stamp`), not in the order they arrive.
    #[needs(Network)]
    #[rule(LateRequestsAreHarmless, RenewExtendsTheLiveGrant)]
    async fn a_late_renewal_never_shortens_a_grant_its_holder_was_told_of(s) {
        let net = network(s).await?;
        let a = holder("a", "1");
        let longer = net.ttl * 4;
        // Held from the first request on, then from the second and third:
        // a renewal of a read and a write is late only in its write.
        let mut late_delivered = false;
        for (rung, fault) in [Fault::HoldRequests, Fault::HoldRequestsAfter(1), Fault::HoldRequestsAfter(2)].into_iter().enumerate() {
            let k = key(&format!("faults/late-renewal/{rung}"));
            net.ready(&k).await?;
            let first = acquire(&*net.a, &k, &a, longer).await?;
            let fence = &first.value.fence;
            net.proxy.set(fault);
            let held = net.a.renew(fence, net.ttl).await;
            if held.is_ok() {
                net.proxy.heal();
                continue; // the whole renewal got through: nothing held
            }
            unknown_outcome("a renewal whose request was held", held)?;
            let late = net.proxy.cut_held().await;
            if late.is_empty() {
                continue;
            }
            let Some(after) = net.renew_then_deliver(s, fence, longer, first.sent + longer, late).await? else {
                continue; // the server never took the late request up
            };
            late_delivered = true;
            let what = format!("a renewal for {:?} sent before one for {longer:?}", net.ttl);
            net.not_shortened(s, fence, &what, &after).await?;
        }
        if !late_delivered {
            return Err(CaseError::Starved("no held renewal reached the server late: the fault could not be made to happen".into()));
        }
        Ok(())
    }

    /// A connection reset in the middle of batched calls (`renew_many`, claims sent together) loses no live grant: each answer is the grant or an error whose outcome is unknown, and retrying gives every holder its own grant with the same token.
    #[needs(Network)]
    #[rule(RenewManyAnswersEach, ClaimOwnGrant)]
    async fn a_reset_in_the_middle_of_a_batch_loses_no_live_grant(s) {
        const KEYS: usize = 8;
        let net = network(s).await?;
        let a = holder("a", "1");
        let keys: Vec<_> = (0..KEYS).map(|i| key(&format!("faults/batch/{i}"))).collect();
        // Claims sent together, their replies held back and then the
        // connections reset under them.
        net.proxy.set(Fault::DelayReplies(call_timeout(net.ttl) * 2));
        let claims = futures::future::join_all(keys.iter().map(|k| {
            let (store, a) = (net.a.clone(), a.clone());
            async move { store.claim(k, &a, net.ttl).await }
        }));
        let reset = async {
            tokio::time::sleep(call_timeout(net.ttl) / 4).await;
            net.proxy.heal();
        };
        let (claims, ()) = tokio::join!(claims, reset);
        for (k, answer) in keys.iter().zip(&claims) {
            if let Err(e) = answer {
                ensure!(e.is_indeterminate(), "a claim of {k} cut by a reset gave \"{e}\", which says its outcome is known");
            }
        }
        // Retried, each claim gives the holder its grant (rule 1).
        let mut fences = Vec::new();
        for k in &keys {
            let sent = Instant::now();
            match settled(net.ttl, || net.a.claim(k, &a, net.ttl)).await?? {
                Claim::Acquired(grant) => fences.push((grant.fence.clone(), sent)),
                Claim::Busy(record) => return Err(CaseError::Failed(format!("retrying a's claim of {k} after a reset found it busy: {record:?}"))),
            }
        }
        for ((fence, _), answer) in fences.iter().zip(&claims) {
            if let Ok(Claim::Acquired(first)) = answer {
                ensure!(&first.fence == fence, "the claim cut by a reset granted {}, its retry {fence}", first.fence);
            }
        }
        // A batch renewal cut the same way.
        net.proxy.set(Fault::DelayReplies(call_timeout(net.ttl) * 2));
        let renewals: Vec<_> = fences.iter().map(|(fence, _)| (fence.clone(), net.ttl)).collect();
        let batch = net.a.renew_many(&renewals);
        let reset = async {
            tokio::time::sleep(call_timeout(net.ttl) / 4).await;
            net.proxy.heal();
        };
        let (answers, ()) = tokio::join!(batch, reset);
        ensure!(answers.len() == KEYS, "renew_many of {KEYS} fences gave {} answers", answers.len());
        for ((fence, claimed), answer) in fences.iter().zip(&answers) {
            match answer {
                Ok(grant) => ensure!(&grant.fence == fence, "renewing {fence} gave {}", grant.fence),
                Err(e) if e.is_lost() => return Err(s.broken_unless_late(&format!("a batch renewal cut by a reset said {fence} is lost: {e}"), Instant::now(), *claimed + net.ttl)),
                Err(e) => ensure!(e.is_indeterminate(), "renewing {fence} in a batch cut by a reset gave \"{e}\", which says its outcome is known"),
            }
        }
        let until = Instant::now() + net.ttl;
        let mut again = net.a.renew_many(&renewals).await;
        while again.iter().any(transient) {
            if Instant::now() >= until {
                return Err(CaseError::Starved(format!("the store through the proxy did not answer a batch renewal within {:?} after the reset", net.ttl)));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            again = net.a.renew_many(&renewals).await;
        }
        for ((fence, claimed), answer) in fences.iter().zip(again) {
            if let Err(e) = answer {
                return Err(s.broken_unless_late(&format!("renewing {fence} after the reset gave {e}"), Instant::now(), *claimed + net.ttl));
            }
        }
        Ok(())
    }

    /// A partition longer than the TTL hands the key to a rival waiting on the other client: the holder's lease is lost by its deadline, the rival is granted the key after that deadline and by `last write + TTL + slack`, and the old fence is refused once the partition heals.
    #[needs(Network)]
    #[rule(BoundedByTheServer, DeadlinesNeverOverlap, HelpersKeepTheRules)]
    async fn a_partition_longer_than_the_ttl_hands_the_key_to_a_waiting_rival(s) {
        let net = network(s).await?;
        let k = key("faults/partition");
        lose_the_path_and_hand_over(s, &net, &k, Fault::Partition).await
    }

    /// A frozen server (nothing in, nothing out, everything applied late when it resumes) ends the holder's lease by its deadline, hands the key to a rival by `last write + TTL + slack`, and the renewals it applies late revive nothing and take nothing from the rival.
    #[needs(Network)]
    #[rule(BoundedByTheServer, LateRequestsAreHarmless, HelpersKeepTheRules)]
    async fn a_frozen_server_ends_the_lease_and_applies_late_renewals_harmlessly(s) {
        let net = network(s).await?;
        let k = key("faults/freeze");
        lose_the_path_and_hand_over(s, &net, &k, Fault::Freeze).await
    }
}

/// A leaser on the store under faults holds `k`; the path to the server
/// is lost to `fault` for longer than the TTL; a rival waiting on the
/// direct client takes over; then the path comes back.
async fn lose_the_path_and_hand_over(
    s: &Subject,
    net: &Net,
    k: &LeaseKey,
    fault: Fault,
) -> Result<(), CaseError> {
    let a = holder("a", "1");
    net.ready(k).await?;
    let leaser = Leaser::new(net.a.clone(), a.clone(), net.ttl);
    let lease = match leaser.try_acquire(k).await? {
        Acquire::Held(lease) => lease,
        Acquire::Busy(record) => {
            return Err(CaseError::Failed(format!(
                "{k} is busy for a first claim: {record:?}"
            )));
        }
    };
    let old = lease.fence().clone();
    let resource = FencedResource::new("faults/resource", Vec::<&str>::new());
    ensure!(
        resource.write(&old, |log| log.push("a")).is_ok(),
        "the holder's first write was refused"
    );
    // Let the keeper renew once or twice first.
    tokio::time::sleep(net.ttl * 3 / 4).await;
    let rival = tokio::spawn({
        let (store, k) = (s.store.clone(), k.clone());
        let wait = net.ttl * 10;
        async move {
            let woke = store.wait_free(&k, wait).await;
            (woke, Instant::now())
        }
    });
    let cut = Instant::now();
    net.proxy.set(fault);
    // The holder learns of the loss by its deadline.
    lease.lost().cancelled().await;
    let lost_at = Instant::now();
    let told = lease.deadline();
    s.within(
        &format!(
            "the lost signal after the path was cut at {} (the lease's deadline was {})",
            s.at(cut),
            s.at(told)
        ),
        told.min(lost_at),
        lost_at,
        Duration::from_millis(50),
    )?;
    // The rival, woken when the grant ends, takes the key.
    let (woke, woke_at) = rival
        .await
        .map_err(|e| CaseError::Failed(format!("the rival's waiter panicked: {e}")))?;
    ensure!(
        woke?,
        "the rival's wait for {k} timed out after {} though nothing renewed the grant",
        s.at(woke_at)
    );
    let next = net.handover(s, k, net.ttl, told, cut).await?;
    ensure!(
        resource.write(&next.fence, |log| log.push("rival")).is_ok(),
        "the rival's write with {} was refused",
        next.fence
    );
    ensure!(
        resource.write(&old, |log| log.push("a, late")).is_err(),
        "the old holder's write with {old} was accepted after the rival's"
    );
    // The path comes back: a frozen server applies what it held, late.
    net.proxy.set(Fault::None);
    tokio::time::sleep(call_timeout(net.ttl)).await;
    net.proxy.heal();
    net.old_fence_refused(s, &old, &next).await?;
    let record = s.store.inspect(k).await?;
    ensure!(
        record.as_ref().is_some_and(|r| r.fence() == next.fence),
        "after the path came back, {k} is {record:?}, not the rival's {}",
        next.fence
    );
    drop(lease);
    Ok(())
}
