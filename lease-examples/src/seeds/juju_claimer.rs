//! A claimer/checker pair: claim-or-extend by holder name, a token that
//! checks whether a holder still holds a lease, and wait-until-expired.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use lease_core::{Claim, DynLeaseStore, Holder, LeaseError, LeaseKey, Listed};
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
    snapshot: Mutex<BTreeMap<String, Info>>,
}

/// One lease in a snapshot.
#[derive(Clone, Debug, PartialEq)]
struct Info {
    /// The current holder's name.
    holder: String,
    /// The latest time the lease might still be held.
    expiry: Instant,
}

impl Claimer {
    fn new(store: DynLeaseStore, incarnation: &str) -> Self {
        Self {
            store,
            incarnation: incarnation.into(),
            snapshot: Mutex::default(),
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

    /// Reads every lease's state from the store: the snapshot
    /// [`Claimer::leases`] then returns. Corrupt records are left out (a
    /// claim repairs them).
    async fn refresh(&self) -> Result<(), ClaimError> {
        let store_error = |e: LeaseError| ClaimError::Store(e.to_string());
        let prefix = LeaseKey::new("juju").map_err(store_error)?;
        let mut snapshot = BTreeMap::new();
        for entry in lease_core::list_all(&*self.store, &prefix)
            .await
            .map_err(store_error)?
        {
            if let Listed::Held(record) = entry
                && let Some(name) = record.key.segments().nth(1)
            {
                // The latest it might still be held: now plus what the
                // store reported left.
                let info = Info {
                    holder: record.holder.id().to_owned(),
                    expiry: Instant::now() + record.remaining,
                };
                snapshot.insert(name.into_owned(), info);
            }
        }
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
        Ok(())
    }

    /// The snapshot the last [`Claimer::refresh`] read: lease name to
    /// holder and expiry.
    fn leases(&self) -> BTreeMap<String, Info> {
        self.snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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

/// Runs the seed's story on `store`: leadership claimed, checked, seen
/// in a snapshot, waited out and claimed by another unit.
///
/// # Errors
/// The store's errors.
pub async fn demo(store: DynLeaseStore) -> Result<Vec<String>, LeaseError> {
    let mut out = Vec::new();
    let claimer = Claimer::new(store.clone(), "agent-1");
    let ttl = crate::demo_ttl(&*store, Duration::from_millis(300));
    let failed = |e: ClaimError| {
        LeaseError::backend(
            "demo",
            lease_core::Op::Claim,
            &LeaseKey::new("juju").expect("valid"),
            false,
            format!("{e:?}"),
        )
    };
    let until = claimer
        .claim("app-leadership", "unit/0", ttl)
        .await
        .map_err(failed)?;
    out.push(format!(
        "unit/0 leads for at least {:.1} s",
        (until - Instant::now()).as_secs_f64()
    ));
    out.push(format!(
        "unit/1 claims: {:?}",
        claimer
            .claim("app-leadership", "unit/1", ttl)
            .await
            .map(|_| "ok")
    ));
    out.push(format!(
        "token(unit/0): {:?}",
        claimer.token("app-leadership", "unit/0").check().await
    ));
    claimer.refresh().await.map_err(failed)?;
    for (name, info) in claimer.leases() {
        out.push(format!("snapshot: {name} held by {}", info.holder));
    }
    let started = Instant::now();
    claimer
        .wait_until_expired("app-leadership")
        .await
        .map_err(failed)?;
    out.push(format!(
        "leadership expired after {:.1} s; unit/1 claims: {:?}",
        started.elapsed().as_secs_f64(),
        claimer
            .claim("app-leadership", "unit/1", ttl)
            .await
            .map(|_| "ok")
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lease_core::MemoryStore;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_snapshot_shows_every_lease_until_it_expires() {
        let claimer = Claimer::new(Arc::new(MemoryStore::new()), "agent-1");
        let ttl = Duration::from_secs(10);
        claimer.claim("db", "unit/0", ttl).await.unwrap();
        claimer.claim("web", "unit/3", ttl * 2).await.unwrap();
        assert!(claimer.leases().is_empty(), "nothing read yet");
        claimer.refresh().await.unwrap();
        let snapshot = claimer.leases();
        let holders: Vec<(&str, &str)> = snapshot
            .iter()
            .map(|(name, info)| (name.as_str(), info.holder.as_str()))
            .collect();
        assert_eq!(holders, [("db", "unit/0"), ("web", "unit/3")]);
        assert_eq!(snapshot["db"].expiry, Instant::now() + ttl);
        tokio::time::sleep(ttl).await;
        assert_eq!(claimer.leases().len(), 2, "a snapshot, not a live view");
        claimer.refresh().await.unwrap();
        assert_eq!(claimer.leases().keys().collect::<Vec<_>>(), ["web"]);
    }

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
