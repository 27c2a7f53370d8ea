//! A claimer/checker pair: claim-or-extend by holder name, a token that
//! checks whether a holder still holds a lease, and wait-until-expired.

use std::sync::Arc;
use std::time::Duration;

use lease_core::{Claim, DynLeaseStore, Holder, LeaseError, LeaseKey, MemoryStore};
use tokio::time::Instant;

#[derive(Debug, PartialEq)]
enum ClaimError {
    /// The holder is guaranteed not to hold the lease.
    Denied,
    /// Nothing can be inferred.
    Store(String),
}

/// Claims and checks leases by holder name, for one incarnation of the
/// agent that runs them.
struct Claimer {
    store: DynLeaseStore,
    incarnation: String,
}

impl Claimer {
    fn new(store: DynLeaseStore, incarnation: &str) -> Self {
        Self {
            store,
            incarnation: incarnation.into(),
        }
    }

    fn key(lease: &str) -> Result<LeaseKey, ClaimError> {
        LeaseKey::from_segments(["juju", lease]).map_err(|e| ClaimError::Store(e.to_string()))
    }

    /// Acquires or extends. On success the holder keeps the lease until at
    /// least `duration` after the *start* of the call: the returned deadline.
    async fn claim(
        &self,
        lease: &str,
        holder: &str,
        duration: Duration,
    ) -> Result<Instant, ClaimError> {
        let holder =
            Holder::new(holder, &self.incarnation).map_err(|e| ClaimError::Store(e.to_string()))?;
        match self
            .store
            .claim(&Self::key(lease)?, &holder, duration)
            .await
        {
            Ok(Claim::Acquired(grant)) => Ok(grant.deadline),
            Ok(Claim::Busy(_)) => Err(ClaimError::Denied),
            Err(e) => Err(ClaimError::Store(e.to_string())),
        }
    }

    /// Returns once the lease is no longer held.
    async fn wait_until_expired(&self, lease: &str) -> Result<(), ClaimError> {
        let key = Self::key(lease)?;
        while !self
            .store
            .wait_free(&key, Duration::from_secs(60))
            .await
            .map_err(|e| ClaimError::Store(e.to_string()))?
        {}
        Ok(())
    }

    /// A token to interrogate at any time: is `lease` held by `holder`?
    fn token(&self, lease: &str, holder: &str) -> Token {
        Token {
            store: self.store.clone(),
            lease: lease.into(),
            holder: holder.into(),
        }
    }
}

struct Token {
    store: DynLeaseStore,
    lease: String,
    holder: String,
}

impl Token {
    /// `Ok(())` while the lease is held by the holder, `Err(NotHeld)` otherwise.
    async fn check(&self) -> Result<(), String> {
        let key = Claimer::key(&self.lease).map_err(|e| format!("{e:?}"))?;
        match self.store.inspect(&key).await.map_err(|e| e.to_string())? {
            Some(record) if record.holder.id() == self.holder => Ok(()),
            _ => Err(format!("lease {} not held by {}", self.lease, self.holder)),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), LeaseError> {
    let claimer = Arc::new(Claimer::new(Arc::new(MemoryStore::new()), "agent-1"));
    let ttl = Duration::from_millis(300);
    let until = claimer
        .claim("app-leadership", "unit/0", ttl)
        .await
        .unwrap();
    println!(
        "unit/0 leads until at least {:?} from now",
        until - Instant::now()
    );
    println!(
        "unit/1 claims: {:?}",
        claimer.claim("app-leadership", "unit/1", ttl).await
    );
    println!(
        "token(unit/0): {:?}",
        claimer.token("app-leadership", "unit/0").check().await
    );
    let started = Instant::now();
    claimer.wait_until_expired("app-leadership").await.unwrap();
    println!(
        "leadership expired after {:?}; unit/1 claims: {:?}",
        started.elapsed(),
        claimer
            .claim("app-leadership", "unit/1", ttl)
            .await
            .map(|_| "ok")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn claim_extend_check_and_wait() {
        let claimer = Claimer::new(Arc::new(MemoryStore::new()), "agent-1");
        let ttl = Duration::from_secs(10);
        let start = Instant::now();
        assert_eq!(claimer.claim("l", "u0", ttl).await, Ok(start + ttl));
        assert_eq!(claimer.claim("l", "u1", ttl).await, Err(ClaimError::Denied));
        tokio::time::sleep(Duration::from_secs(6)).await;
        claimer.claim("l", "u0", ttl).await.expect("extends");
        assert!(claimer.token("l", "u0").check().await.is_ok());
        assert!(claimer.token("l", "u1").check().await.is_err());
        let extended = Instant::now();
        claimer.wait_until_expired("l").await.unwrap();
        assert_eq!(Instant::now(), extended + ttl, "the extension counted");
        assert!(claimer.token("l", "u0").check().await.is_err());
        claimer.claim("l", "u1", ttl).await.unwrap();
    }
}
