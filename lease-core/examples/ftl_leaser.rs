//! A leaser that renews in the background and hands back a context that is
//! cancelled the moment the lease is lost.

use std::sync::Arc;
use std::time::Duration;

use lease_core::{
    Acquire, CancellationToken, DynLeaseStore, HeldLease, Holder, LeaseError, LeaseKey, LeaseStore,
    Leaser, MemoryStore,
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), LeaseError> {
    let memory = MemoryStore::new();
    let leaser = ClientLeaser::new(Arc::new(memory.clone()), Holder::unique("runner-1")?);
    let key = system_key(&["runner", "deployment-reservation", "dpl-1"])?;
    println!(
        "a module's key: {}",
        module_key("idv", &["user", "bob smith"])?
    );
    let (lease, context) = leaser.acquire_lease(&key, MIN_TTL).await.expect("free");
    println!("holding {key} with token {}", lease.fence().token);
    match leaser.acquire_lease(&key, Duration::from_secs(1)).await {
        Err(AcquireError::Invalid(why)) => println!("short TTL refused: {why}"),
        other => println!("unexpected: {other:?}"),
    }
    match leaser.acquire_lease(&key, MIN_TTL).await {
        Err(AcquireError::Conflict) => println!("second acquire: conflict"),
        Err(AcquireError::Store(error)) => println!("store failed: {error}"),
        other => println!("unexpected: {other:?}"),
    }
    // Someone decides runner-1 is dead and takes the reservation over.
    let usurper = Holder::unique("runner-2")?;
    let taken = memory.reclaim(lease.fence(), &usurper, MIN_TTL).await?;
    println!(
        "runner-2 took it over: {:?}",
        taken.grant().map(|g| g.token())
    );
    context.cancelled().await;
    println!("context cancelled: {:?}", lease.lost_reason());
    Ok(())
}

#[cfg(test)]
mod tests {
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
