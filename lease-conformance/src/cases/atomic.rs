//! Every compare-and-write is one atomic step, also when run concurrently:
//! takeovers, releases, renewals, marker puts and guarded writes.

use std::sync::Arc;

use futures::future::join_all;
use lease_core::{Claim, LeaseError};

use crate::check::{acquire, holder, key};
use crate::{CaseError, ensure};

/// How many callers race in each case.
const RACERS: usize = 8;
/// How many calls a racer makes at most before it must have been refused.
const ATTEMPTS: usize = 500;

fn joined<T>(results: Vec<Result<T, tokio::task::JoinError>>) -> Result<Vec<T>, CaseError> {
    results
        .into_iter()
        .map(|r| r.map_err(|e| CaseError::Failed(format!("a racer panicked: {e}"))))
        .collect()
}

cases! {
    /// Concurrent reclaims of the same observed grant have exactly one winner, with a higher token; every other racer is busy with the winner's grant.
    #[rule(ReclaimComparesAndSwaps)]
    async fn concurrent_reclaims_have_one_winner(s) {
        let t = s.timing();
        for round in 0..3 {
            let k = key(&format!("atomic/reclaim/{round}"));
            let observed = acquire(&*s.store, &k, &holder("dead", "1"), t.long_ttl).await?.value;
            let racers = (0..RACERS).map(|i| {
                let (store, fence) = (Arc::clone(&s.store), observed.fence.clone());
                let h = holder(&format!("racer-{i}"), "1");
                tokio::spawn(async move { store.reclaim(&fence, &h, t.long_ttl).await })
            });
            let outcomes = joined(join_all(racers).await)?.into_iter().collect::<Result<Vec<_>, _>>()?;
            let winners: Vec<_> = outcomes.iter().filter_map(Claim::grant).collect();
            ensure!(winners.len() == 1, "{} racers took over the same grant: {winners:?}", winners.len());
            let winner = winners[0];
            ensure!(winner.token() > observed.token(), "the takeover's token {} is not above {}", winner.token(), observed.token());
            for outcome in &outcomes {
                if let Claim::Busy(record) = outcome {
                    ensure!(record.is(&winner.fence), "a loser is busy with {record:?}, not the winner's grant");
                }
            }
        }
        Ok(())
    }

    /// Concurrent claims of one free key by one holder all get the one grant: the same token, exactly one of them fresh.
    #[rule(ClaimOwnGrant)]
    async fn concurrent_claims_by_one_holder_share_one_grant(s) {
        let t = s.timing();
        for round in 0..3 {
            let k = key(&format!("atomic/own/{round}"));
            let racers = (0..RACERS).map(|_| {
                let (store, k) = (Arc::clone(&s.store), k.clone());
                tokio::spawn(async move { store.claim(&k, &holder("a", "1"), t.long_ttl).await })
            });
            let outcomes = joined(join_all(racers).await)?.into_iter().collect::<Result<Vec<_>, _>>()?;
            let grants: Vec<_> = outcomes.iter().filter_map(Claim::grant).collect();
            ensure!(grants.len() == RACERS, "the holder's own claims were refused: {outcomes:?}");
            let fresh = grants.iter().filter(|g| g.fresh).count();
            ensure!(fresh == 1, "{fresh} of {RACERS} claims by one holder said they made a fresh grant");
            ensure!(grants.iter().all(|g| g.fence == grants[0].fence), "one holder's concurrent claims got different grants: {grants:?}");
            let shown = s.store.inspect(&k).await?;
            ensure!(shown.as_ref().is_some_and(|r| r.is(&grants[0].fence)), "the key shows {shown:?}, not the grant every claim got");
        }
        Ok(())
    }

    /// Concurrent claims of many keys, every other one held already, each get their own key's answer: a fresh grant of a free key for their own holder, which the key then shows, or busy with the holder of a held one.
    #[rule(ClaimFreeKey)]
    async fn concurrent_claims_of_many_keys_each_get_their_own_grant(s) {
        let t = s.timing();
        let mut held = std::collections::HashMap::new();
        for i in (0..RACERS * 4).step_by(2) {
            let k = key(&format!("atomic/many/{i}"));
            let grant = acquire(&*s.store, &k, &holder(&format!("owner-{i}"), "1"), t.long_ttl).await?.value;
            held.insert(k, grant.fence);
        }
        let racers = (0..RACERS * 4).map(|i| {
            let store = Arc::clone(&s.store);
            let (k, h) = (key(&format!("atomic/many/{i}")), holder(&format!("racer-{i}"), "1"));
            tokio::spawn(async move {
                let claim = store.claim(&k, &h, t.long_ttl).await;
                (k, h, claim)
            })
        });
        for (k, h, claim) in joined(join_all(racers).await)? {
            match (claim?, held.get(&k)) {
                (Claim::Busy(record), Some(owner)) => ensure!(record.is(owner), "the claim of held {k} was told {record:?}, not its holder"),
                (Claim::Busy(record), None) => ensure!(false, "the claim of free {k} was told it is busy with {record:?}"),
                (Claim::Acquired(grant), Some(_)) => ensure!(false, "the claim of held {k} was granted {:?}", grant.fence),
                (Claim::Acquired(grant), None) => {
                    ensure!(grant.fence.key == k && grant.fence.holder == h, "the claim of {k} by {h} was answered with {:?}", grant.fence);
                    ensure!(grant.fresh, "the first claim of {k} was not fresh");
                    let shown = s.store.inspect(&k).await?;
                    ensure!(shown.as_ref().is_some_and(|r| r.is(&grant.fence)), "{k} shows {shown:?}, not {:?}", grant.fence);
                }
            }
        }
        Ok(())
    }

    /// Concurrent releases of one grant release it exactly once.
    #[rule(ReleaseOnlyTheCurrentGrant)]
    async fn concurrent_releases_release_once(s) {
        let t = s.timing();
        for round in 0..3 {
            let k = key(&format!("atomic/release/{round}"));
            let grant = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
            let racers = (0..RACERS).map(|_| {
                let (store, fence) = (Arc::clone(&s.store), grant.fence.clone());
                tokio::spawn(async move { store.release(&fence).await })
            });
            let released = joined(join_all(racers).await)?.into_iter().collect::<Result<Vec<_>, _>>()?;
            let count = released.iter().filter(|r| **r).count();
            ensure!(count == 1, "{count} of {RACERS} concurrent releases said they released the grant");
        }
        Ok(())
    }

    /// Concurrent releases of many grants, some renewed since their claim, each end their own grant: every release says it released, and every key is free at once.
    #[rule(ReleaseOnlyTheCurrentGrant)]
    async fn concurrent_releases_of_renewed_grants_free_every_key(s) {
        let t = s.timing();
        let mut fences = Vec::new();
        for i in 0..RACERS {
            let k = key(&format!("atomic/release-renewed/{i}"));
            let grant = acquire(&*s.store, &k, &holder(&format!("racer-{i}"), "1"), t.long_ttl).await?.value;
            for _ in 0..i % 3 {
                s.store.renew(&grant.fence, t.long_ttl).await?;
            }
            fences.push(grant.fence);
        }
        let racers = fences.iter().map(|fence| {
            let (store, fence) = (Arc::clone(&s.store), fence.clone());
            tokio::spawn(async move { store.release(&fence).await })
        });
        let released = joined(join_all(racers).await)?.into_iter().collect::<Result<Vec<_>, _>>()?;
        for (i, (fence, released)) in fences.iter().zip(released).enumerate() {
            ensure!(released, "the release of {} (renewed {} times, released beside {} others) said it released nothing", fence.key, i % 3, RACERS - 1);
            let shown = s.store.inspect(&fence.key).await?;
            ensure!(shown.is_none(), "{} still shows {shown:?} after its release", fence.key);
        }
        Ok(())
    }

    /// A takeover racing the old holder's renewals wins for good: no renewal lands after it, none undoes it, and the old holder is refused afterwards.
    #[rule(RenewRefusesAllElse)]
    async fn renewals_racing_a_takeover_never_undo_it(s) {
        let t = s.timing();
        for round in 0..3 {
            let k = key(&format!("atomic/renew/{round}"));
            let old = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
            let renewed = Arc::new(tokio::sync::Notify::new());
            // Renewers go on until refused, so some are mid-call when the
            // takeover lands.
            let renewals: Vec<_> = (0..RACERS).map(|_| {
                let (store, fence, renewed) = (Arc::clone(&s.store), old.fence.clone(), renewed.clone());
                tokio::spawn(async move {
                    for _ in 0..ATTEMPTS {
                        match store.renew(&fence, t.long_ttl).await {
                            Ok(_) => renewed.notify_one(),
                            Err(LeaseError::Lost { .. }) => return Ok(()),
                            Err(other) => return Err(other),
                        }
                    }
                    Ok(())
                })
            }).collect();
            let taken = {
                let (store, fence) = (Arc::clone(&s.store), old.fence.clone());
                tokio::spawn(async move {
                    renewed.notified().await;
                    store.reclaim(&fence, &holder("b", "1"), t.long_ttl).await
                })
            };
            for outcome in joined(join_all(renewals).await)? {
                outcome?;
            }
            let taken = taken.await.map_err(|e| CaseError::Failed(format!("the takeover panicked: {e}")))??;
            let new = taken.acquired().ok_or_else(|| CaseError::Failed("the takeover was refused".into()))?;
            let record = s.store.inspect(&k).await?;
            ensure!(record.as_ref().is_some_and(|r| r.is(&new.fence)), "after racing renewals the key holds {record:?}, not the takeover");
            ensure!(matches!(s.store.renew(&old.fence, t.long_ttl).await, Err(LeaseError::Lost { .. })), "the old holder renewed after the takeover");
        }
        Ok(())
    }

    /// Concurrent puts of different values to one marker: exactly one is kept, and every other put fails with the kept value.
    #[rule(MarkersAreIfAbsent)]
    async fn concurrent_marker_puts_keep_one_value(s) {
        for round in 0..3 {
            let k = key(&format!("atomic/marker/{round}"));
            let racers = (0..RACERS).map(|i| {
                let (store, k) = (Arc::clone(&s.store), k.clone());
                tokio::spawn(async move { (i, store.put_marker(&k, &format!("value-{i}")).await) })
            });
            let outcomes = joined(join_all(racers).await)?;
            let kept = s.store.get_marker(&k).await?;
            let winners: Vec<_> = outcomes.iter().filter(|(_, r)| r.is_ok()).map(|(i, _)| format!("value-{i}")).collect();
            ensure!(winners.len() == 1, "{} different values were all put: {winners:?}", winners.len());
            ensure!(kept.as_ref() == Some(&winners[0]), "{} was put, the marker holds {kept:?}", winners[0]);
            for (i, outcome) in &outcomes {
                match outcome {
                    Ok(()) => {}
                    Err(LeaseError::Conflict { existing, .. }) => ensure!(Some(existing) == kept.as_ref(), "racer {i} was told the marker holds {existing:?}, it holds {kept:?}"),
                    Err(other) => return Err(CaseError::Failed(format!("racer {i} failed: {other}"))),
                }
            }
        }
        Ok(())
    }

    /// Guarded writes racing a takeover stop at it: no write with the old fence lands after the takeover, and the new holder's write sticks.
    #[rule(GuardedWritesAreFenced)]
    async fn guarded_writes_stop_at_a_takeover(s) {
        let t = s.timing();
        for round in 0..3 {
            let (k, target) = (key(&format!("atomic/guarded/{round}")), key(&format!("atomic/guarded/{round}/data")));
            let old = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
            let written = Arc::new(tokio::sync::Notify::new());
            // Writers go on until refused, so some are mid-write when the
            // takeover lands.
            let writers: Vec<_> = (0..RACERS).map(|i| {
                let (store, fence, target, written) = (Arc::clone(&s.store), old.fence.clone(), target.clone(), written.clone());
                tokio::spawn(async move {
                    for n in 0..ATTEMPTS {
                        match store.guarded_write(&fence, &target, format!("old-{i}-{n}").as_bytes()).await {
                            Ok(()) => written.notify_one(),
                            Err(LeaseError::Lost { .. }) => return Ok(()),
                            Err(other) => return Err(other),
                        }
                    }
                    Ok(())
                })
            }).collect();
            let takeover = {
                let (store, fence, target) = (Arc::clone(&s.store), old.fence.clone(), target.clone());
                tokio::spawn(async move {
                    written.notified().await;
                    let new = store.reclaim(&fence, &holder("b", "1"), t.long_ttl).await?.acquired();
                    let new = new.ok_or_else(|| LeaseError::lost(&fence, None))?;
                    // Whatever is there now was written before the takeover.
                    let before = store.read_guarded(&target).await?;
                    Ok::<_, LeaseError>((new, before))
                })
            };
            for outcome in joined(join_all(writers).await)? {
                outcome?;
            }
            let (new, before) = takeover.await.map_err(|e| CaseError::Failed(format!("the takeover panicked: {e}")))??;
            let after = s.store.read_guarded(&target).await?;
            let text = |v: &Option<Vec<u8>>| v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned());
            ensure!(after == before, "a write with the old fence landed after the takeover: {:?} became {:?}", text(&before), text(&after));
            s.store.guarded_write(&new.fence, &target, b"new").await?;
            let value = s.store.read_guarded(&target).await?;
            ensure!(value.as_deref() == Some(&b"new"[..]), "after the takeover's write the value is {:?}", text(&value));
        }
        Ok(())
    }
}
