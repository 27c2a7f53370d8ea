//! Why fencing tokens: holder A stalls past its deadline (a GC pause), B is
//! granted the lease and writes; A wakes up and writes too — and the fenced
//! resource refuses A's stale token.

use std::time::Duration;

use lease_core::{DynLeaseStore, FencedResource, Holder, LeaseError, LeaseKey, LeaseStore};

/// A writes, pauses past its deadline (`pause`), B takes the lease and
/// writes, A writes again: the resource's log and its refusal of A.
async fn scenario<P: Future<Output = ()>>(
    store: &dyn LeaseStore,
    ttl: Duration,
    pause: impl FnOnce() -> P,
) -> Result<(Vec<String>, LeaseError), LeaseError> {
    let resource = FencedResource::new("ledger", Vec::new());
    let key = LeaseKey::new("ledger/writer")?;
    let busy = |what: &str| {
        LeaseError::backend("demo", lease_core::Op::Claim, &key, false, what.to_owned())
    };

    let a = store
        .claim(&key, &Holder::new("a", "1")?, ttl)
        .await?
        .acquired()
        .ok_or_else(|| busy("the ledger is already held"))?;
    resource.write(&a.fence, |log: &mut Vec<String>| {
        log.push("a: entry 1".into())
    })?;

    pause().await; // a is paused past its deadline
    let b = store
        .claim(&key, &Holder::new("b", "1")?, ttl)
        .await?
        .acquired()
        .ok_or_else(|| busy("a's grant had not expired"))?;
    resource.write(&b.fence, |log| log.push("b: entry 2".into()))?;

    // a resumes, unaware, and writes with its old token.
    let refused = match resource.write(&a.fence, |log| log.push("a: entry 3 (stale)".into())) {
        Err(refused) => refused,
        Ok(()) => return Err(busy("the stale write was accepted")),
    };
    Ok((resource.read(Vec::clone), refused))
}

/// Runs the seed's story on `store`, pausing A for real past its TTL and
/// the store's slack: what the resource accepted and what it refused.
///
/// # Errors
/// The store's errors.
pub async fn demo(store: DynLeaseStore) -> Result<Vec<String>, LeaseError> {
    let ttl = crate::demo_ttl(&*store, Duration::from_millis(300));
    let pause = crate::past_expiry(&*store, ttl);
    let (log, refused) = scenario(&*store, ttl, || tokio::time::sleep(pause)).await?;
    let mut out: Vec<String> = log.into_iter().map(|e| format!("accepted: {e}")).collect();
    out.push(format!("refused:  {refused}"));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use lease_core::{ManualClock, MemoryStore};

    #[tokio::test]
    async fn the_late_write_is_refused() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(Arc::new(clock.clone()));
        let ttl = Duration::from_secs(10);
        let (log, refused) = super::scenario(&store, ttl, || async {
            clock.advance(ttl + Duration::from_secs(5));
        })
        .await
        .unwrap();
        assert_eq!(log, ["a: entry 1", "b: entry 2"]);
        assert!(
            matches!(refused, lease_core::LeaseError::StaleFence { .. }),
            "{refused}"
        );
    }
}
