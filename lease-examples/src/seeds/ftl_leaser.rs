//! A leaser that renews in the background and hands back a context that is
//! cancelled the moment the lease is lost.

use std::time::Duration;

use lease_core::{
    Acquire, CancellationToken, DynLeaseStore, HeldLease, Holder, LeaseError, LeaseKey, Leaser,
};

const MIN_TTL: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum AcquireError {
    /// The lease is already held.
    Conflict,
    Invalid(String),
    Store(LeaseError),
}

/// A key of user-space modules: `module/<module>/<parts…>`.
fn module_key(module: &str, parts: &[&str]) -> Result<LeaseKey, LeaseError> {
    LeaseKey::from_segments(["module", module].iter().chain(parts))
}

/// An internal key: `system/<parts…>`.
fn system_key(parts: &[&str]) -> Result<LeaseKey, LeaseError> {
    LeaseKey::from_segments(["system"].iter().chain(parts))
}

struct ClientLeaser {
    leaser: Leaser,
}

impl ClientLeaser {
    fn new(store: DynLeaseStore, holder: Holder) -> Self {
        Self {
            leaser: Leaser::new(store, holder, MIN_TTL),
        }
    }

    /// The lease, renewed in the background, and a context cancelled when a
    /// renewal fails (or the lease is released).
    async fn acquire_lease(
        &self,
        key: &LeaseKey,
        ttl: Duration,
    ) -> Result<(HeldLease, CancellationToken), AcquireError> {
        if ttl < MIN_TTL {
            return Err(AcquireError::Invalid(format!(
                "ttl {ttl:?} must be at least {MIN_TTL:?}"
            )));
        }
        match self
            .leaser
            .with_ttl(ttl)
            .try_acquire(key)
            .await
            .map_err(AcquireError::Store)?
        {
            Acquire::Held(lease) => {
                let context = lease.lost();
                Ok((lease, context))
            }
            Acquire::Busy(_) => Err(AcquireError::Conflict),
        }
    }
}

/// Runs the seed's story on `store`: a lease held with its context, a
/// short TTL and a second acquire refused, a takeover by another runner,
/// and the context cancelled by it; what happened, line by line.
///
/// # Errors
/// The store's errors.
pub async fn demo(store: DynLeaseStore) -> Result<Vec<String>, LeaseError> {
    let mut out = Vec::new();
    let leaser = ClientLeaser::new(store.clone(), Holder::unique("runner-1")?);
    let key = system_key(&["runner", "deployment-reservation", "dpl-1"])?;
    out.push(format!(
        "a module's key: {}",
        module_key("idv", &["user", "bob smith"])?
    ));
    let (lease, context) = match leaser.acquire_lease(&key, MIN_TTL).await {
        Ok(held) => held,
        Err(AcquireError::Store(error)) => return Err(error),
        Err(other) => {
            out.push(format!("{key} is not free: {other:?}"));
            return Ok(out);
        }
    };
    out.push(format!("holding {key} with token {}", lease.fence().token));
    match leaser.acquire_lease(&key, Duration::from_secs(1)).await {
        Err(AcquireError::Invalid(why)) => out.push(format!("short TTL refused: {why}")),
        other => out.push(format!("unexpected: {other:?}")),
    }
    match leaser.acquire_lease(&key, MIN_TTL).await {
        Err(AcquireError::Conflict) => out.push("second acquire: conflict".to_owned()),
        Err(AcquireError::Store(error)) => out.push(format!("store failed: {error}")),
        other => out.push(format!("unexpected: {other:?}")),
    }
    // Someone decides runner-1 is dead and takes the reservation over.
    let usurper = Holder::unique("runner-2")?;
    let taken = store.reclaim(lease.fence(), &usurper, MIN_TTL).await?;
    out.push(format!(
        "runner-2 took it over: {}",
        if taken.grant().is_some() { "yes" } else { "no" }
    ));
    context.cancelled().await;
    out.push(format!(
        "context cancelled: {:?}",
        lease
            .lost_reason()
            .map(|r| matches!(r, lease_core::LostReason::Refused(_)))
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lease_core::{LeaseStore, MemoryStore};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn context_is_cancelled_when_renewal_fails() {
        let memory = MemoryStore::new();
        let leaser = ClientLeaser::new(Arc::new(memory.clone()), Holder::unique("a").unwrap());
        let key = module_key("idv", &["user", "bob/smith"]).unwrap();
        assert_eq!(key.as_str(), "module/idv/user/bob%2Fsmith");
        assert!(matches!(
            leaser.acquire_lease(&key, Duration::from_secs(1)).await,
            Err(AcquireError::Invalid(_))
        ));
        let (lease, context) = leaser.acquire_lease(&key, MIN_TTL).await.unwrap();
        assert!(matches!(
            leaser.acquire_lease(&key, MIN_TTL).await,
            Err(AcquireError::Conflict)
        ));
        tokio::time::sleep(MIN_TTL * 3).await;
        assert!(!context.is_cancelled(), "renewed in the background");
        let usurper = Holder::unique("b").unwrap();
        let taken = memory
            .reclaim(lease.fence(), &usurper, MIN_TTL)
            .await
            .unwrap();
        assert!(taken.grant().is_some());
        tokio::time::timeout(MIN_TTL, context.cancelled())
            .await
            .expect("cancelled at the next renewal");
    }
}
