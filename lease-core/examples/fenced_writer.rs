//! Why fencing tokens: holder A stalls past its deadline (a GC pause), B is
//! granted the lease and writes; A wakes up and writes too — and the fenced
//! resource refuses A's stale token.

use std::sync::Arc;
use std::time::Duration;

use lease_core::{
    FencedResource, Holder, LeaseError, LeaseKey, LeaseStore, ManualClock, MemoryStore,
};

async fn scenario() -> Result<(Vec<String>, LeaseError), LeaseError> {
    let clock = ManualClock::new();
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let resource = FencedResource::new("ledger", Vec::new());
    let key = LeaseKey::new("ledger/writer")?;
    let ttl = Duration::from_secs(10);

    let a = store
        .claim(&key, &Holder::new("a", "1")?, ttl)
        .await?
        .acquired()
        .expect("free");
    resource.write(&a.fence, |log: &mut Vec<String>| {
        log.push("a: entry 1".into())
    })?;

    clock.advance(ttl + Duration::from_secs(5)); // a is paused past its deadline
    let b = store
        .claim(&key, &Holder::new("b", "1")?, ttl)
        .await?
        .acquired()
        .expect("expired");
    resource.write(&b.fence, |log| log.push("b: entry 2".into()))?;

    // a resumes, unaware, and writes with its old token.
    let refused = resource
        .write(&a.fence, |log| log.push("a: entry 3 (stale)".into()))
        .unwrap_err();
    Ok((resource.read(Vec::clone), refused))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), LeaseError> {
    let (log, refused) = scenario().await?;
    for entry in log {
        println!("accepted: {entry}");
    }
    println!("refused:  {refused}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_late_write_is_refused() {
        let (log, refused) = super::scenario().await.unwrap();
        assert_eq!(log, ["a: entry 1", "b: entry 2"]);
        assert!(
            matches!(refused, lease_core::LeaseError::StaleFence { .. }),
            "{refused}"
        );
    }
}
