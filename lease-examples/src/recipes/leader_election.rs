//! Leader election with fenced terms: three candidates, a leader that
//! fences its writes with its term, a resignation handed over at once, a
//! crash handed over when the TTL runs out, and an observer that sees
//! each term.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lease_core::{
    CancellationToken, DynLeaseStore, Election, FencedResource, Holder, Leadership, LeaseError,
    LeaseKey, Leaser, Observed,
};
use tokio::time::Instant;

/// Runs the story on `store`: who led, with which term, how each handover
/// went, and what the observer saw.
///
/// # Errors
/// The store's errors, a story that could not go on (nobody took over),
/// or a deposed leader's write accepted.
pub async fn demo(store: DynLeaseStore) -> Result<Vec<String>, LeaseError> {
    let ttl = crate::demo_ttl(&*store, Duration::from_millis(500));
    let key = LeaseKey::new("service/leader")?;
    let candidate = |name: &str| -> Result<Election, LeaseError> {
        let leaser = Leaser::new(store.clone(), Holder::new(name, "1")?, ttl);
        Ok(Election::new(leaser, key.clone()))
    };
    let mut out = Vec::new();

    // A bystander notes every term until the story ends.
    let mut observer = candidate("observer")?.observer();
    let (stop, seen) = (CancellationToken::new(), Arc::new(Mutex::new(Vec::new())));
    let watching = tokio::spawn({
        let (stop, seen) = (stop.clone(), seen.clone());
        async move {
            while !stop.is_cancelled() {
                if let Observed::Changed(Some(leader)) = observer.changed(ttl / 4).await? {
                    let mut seen = seen.lock().unwrap();
                    if seen.last() != Some(&leader.term) {
                        seen.push(leader.term);
                    }
                }
            }
            Ok::<_, LeaseError>(())
        }
    });

    let ledger = FencedResource::new("ledger", Vec::<String>::new());
    let c1 = candidate("c1")?
        .campaign(Duration::ZERO)
        .await?
        .ok_or_else(|| stopped("c1 found a leader already"))?;
    c1.publish(b"c1:8080").await?;
    ledger.write(c1.fence(), |log| log.push("c1".into()))?;
    out.push(format!("c1 leads with term {}", c1.term()));

    // c2 and c3 campaign, each winner reported as it wins.
    let (won, mut winners) = tokio::sync::mpsc::unbounded_channel::<Result<Leadership, _>>();
    for name in ["c2", "c3"] {
        let (election, won) = (candidate(name)?, won.clone());
        tokio::spawn(async move {
            let leadership = election.campaign(Duration::from_secs(60)).await;
            let _ = won.send(leadership.and_then(|l| l.ok_or_else(|| stopped("waited a minute"))));
        });
    }
    tokio::time::sleep(ttl / 2).await;
    let (first, resigned) = (c1.term(), Instant::now());
    c1.resign().await?;
    let next = winners
        .recv()
        .await
        .ok_or_else(|| stopped("nobody took over from c1"))??;
    let handover = resigned.elapsed();
    if next.term() <= first {
        return Err(stopped("a new leader's term did not increase"));
    }
    out.push(format!(
        "c1 resigned: {} leads with term {} (> {first}), handed over in {:.0?}",
        next.fence().holder.id(),
        next.term(),
        handover
    ));
    ledger.write(next.fence(), |log| {
        log.push(next.fence().holder.id().into())
    })?;

    // The new leader crashes: it stops renewing, and nobody releases.
    let (crashed, crashed_at) = (next.fence().clone(), Instant::now());
    drop(next);
    let last = tokio::time::timeout(ttl * 10, winners.recv())
        .await
        .ok()
        .flatten()
        .ok_or_else(|| stopped("nobody took over from the crashed leader"))??;
    if last.term() <= crashed.token {
        return Err(stopped("a new leader's term did not increase"));
    }
    out.push(format!(
        "{} crashed: {} leads with term {} (> {}), {}",
        crashed.holder.id(),
        last.fence().holder.id(),
        last.term(),
        crashed.token,
        if crashed_at.elapsed() >= ttl / 2 {
            "taken over when its TTL ran out"
        } else {
            "taken over too soon"
        }
    ));
    ledger.write(last.fence(), |log| {
        log.push(last.fence().holder.id().into())
    })?;
    if ledger
        .write(&crashed, |log| log.push("stale".into()))
        .is_ok()
    {
        return Err(stopped("the crashed leader's stale write was accepted"));
    }
    out.push(format!(
        "{}'s write with term {} refused",
        crashed.holder.id(),
        crashed.token
    ));

    tokio::time::sleep(ttl / 2).await;
    last.resign().await?;
    stop.cancel();
    watching.await.map_err(|e| stopped(&e.to_string()))??;
    let seen = seen.lock().unwrap().clone();
    let terms: Vec<_> = seen.iter().map(ToString::to_string).collect();
    out.push(format!(
        "observer saw {} terms: {}",
        seen.len(),
        terms.join(", ")
    ));
    Ok(out)
}

/// The error of a story that could not go on.
fn stopped(what: &str) -> LeaseError {
    LeaseError::backend(
        "demo",
        lease_core::Op::Claim,
        &LeaseKey::new("service/leader").expect("valid"),
        false,
        what.to_owned(),
    )
}
