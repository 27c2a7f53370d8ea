//! A durable single-writer execution lane per session, fenced by tokens:
//! claim, reclaim from a dead owner, renew, release — on any lease store.

use std::time::Duration;

use lease_core::{Claim, DynLeaseStore, Fence, Holder, LeaseError, LeaseKey};

/// Who runs a session: a stable owner id and this run of it.
#[derive(Clone, Debug, PartialEq)]
struct OwnerIdentity {
    owner_id: String,
    incarnation: String,
}

/// The outcome of a claim on a session's lane.
#[derive(Debug)]
enum ClaimOutcome {
    Acquired(Fence),
    Busy(Fence),
}

/// Session lanes on a lease store: one lease per session id.
struct SessionLanes {
    store: DynLeaseStore,
}

impl SessionLanes {
    fn new(store: DynLeaseStore) -> Self {
        Self { store }
    }

    fn key(session_id: &str) -> Result<LeaseKey, LeaseError> {
        LeaseKey::from_segments(["session-lane", session_id])
    }

    fn holder(owner: &OwnerIdentity) -> Result<Holder, LeaseError> {
        Holder::new(&owner.owner_id, &owner.incarnation)
    }

    fn outcome(claim: Claim) -> ClaimOutcome {
        match claim {
            Claim::Acquired(grant) => ClaimOutcome::Acquired(grant.fence),
            Claim::Busy(record) => ClaimOutcome::Busy(record.fence()),
        }
    }

    /// Busy while another owner — or another incarnation of the same owner —
    /// holds an unexpired lane.
    async fn try_claim(
        &self,
        session_id: &str,
        owner: &OwnerIdentity,
        ttl_ms: u64,
    ) -> Result<ClaimOutcome, LeaseError> {
        let (key, holder) = (Self::key(session_id)?, Self::holder(owner)?);
        let claim = self
            .store
            .claim(&key, &holder, Duration::from_millis(ttl_ms))
            .await?;
        Ok(Self::outcome(claim))
    }

    /// Takes over a lane whose observed holder is known dead; a compare-and-
    /// swap, so a newer owner that won in between is never cleared.
    async fn reclaim(
        &self,
        owner: &OwnerIdentity,
        observed: &Fence,
        ttl_ms: u64,
    ) -> Result<ClaimOutcome, LeaseError> {
        let holder = Self::holder(owner)?;
        let claim = self
            .store
            .reclaim(observed, &holder, Duration::from_millis(ttl_ms))
            .await?;
        Ok(Self::outcome(claim))
    }

    /// Stale, released, superseded or expired fences get `LeaseError::Lost`.
    async fn renew(&self, fence: &Fence, ttl_ms: u64) -> Result<(), LeaseError> {
        self.store
            .renew(fence, Duration::from_millis(ttl_ms))
            .await
            .map(drop)
    }

    /// Idempotent; never clears a newer owner's lane.
    async fn release(&self, fence: &Fence) -> Result<(), LeaseError> {
        self.store.release(fence).await.map(drop)
    }
}

fn owner(id: &str, incarnation: &str) -> OwnerIdentity {
    OwnerIdentity {
        owner_id: id.into(),
        incarnation: incarnation.into(),
    }
}

/// Runs the seed's story on `store`: a lane claimed, a restarted worker
/// kept out until it reclaims from its dead run, the dead run's late
/// renewal and release refused or harmless; what happened, line by line.
///
/// # Errors
/// The store's errors.
pub async fn demo(store: DynLeaseStore) -> Result<Vec<String>, LeaseError> {
    let mut out = Vec::new();
    let lanes = SessionLanes::new(store);
    let ClaimOutcome::Acquired(first) = lanes
        .try_claim("s-42", &owner("worker-a", "boot-1"), 30_000)
        .await?
    else {
        out.push("s-42 is already taken".to_owned());
        return Ok(out);
    };
    out.push(format!(
        "worker-a#boot-1 claimed s-42 with token {}",
        first.token
    ));
    let restarted = owner("worker-a", "boot-2");
    if let ClaimOutcome::Busy(held) = lanes.try_claim("s-42", &restarted, 30_000).await? {
        out.push(format!(
            "worker-a#boot-2 is busy: {} still holds it",
            held.holder
        ));
        // boot-1's process is gone, so boot-2 takes the lane over.
        if let ClaimOutcome::Acquired(second) = lanes.reclaim(&restarted, &held, 30_000).await? {
            out.push(format!(
                "worker-a#boot-2 reclaimed s-42 with token {}",
                second.token
            ));
            if let Err(refused) = lanes.renew(&first, 30_000).await {
                out.push(format!("boot-1's late renewal: {refused}"));
            }
            lanes.release(&first).await?;
            out.push("boot-1's late release left the lane alone".to_owned());
            lanes.release(&second).await?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lease_core::MemoryStore;

    use super::*;

    #[tokio::test]
    async fn the_lane_follows_the_contract() {
        let lanes = SessionLanes::new(Arc::new(MemoryStore::new()));
        let (a1, a2) = (owner("a", "1"), owner("a", "2"));
        let ClaimOutcome::Acquired(first) = lanes.try_claim("s", &a1, 10_000).await.unwrap() else {
            panic!()
        };
        let ClaimOutcome::Busy(seen) = lanes.try_claim("s", &a2, 10_000).await.unwrap() else {
            panic!("another incarnation is busy")
        };
        assert_eq!(seen, first);
        let ClaimOutcome::Acquired(second) = lanes.reclaim(&a2, &seen, 10_000).await.unwrap()
        else {
            panic!()
        };
        assert!(second.token > first.token);
        // A stale reclaim from someone else who saw `first` loses the CAS.
        assert!(
            matches!(lanes.reclaim(&owner("b", "1"), &first, 10_000).await.unwrap(), ClaimOutcome::Busy(f) if f == second)
        );
        assert!(lanes.renew(&first, 10_000).await.unwrap_err().is_lost());
        lanes.release(&first).await.unwrap();
        lanes
            .renew(&second, 10_000)
            .await
            .expect("the newer lane survives the stale release");
        lanes.release(&second).await.unwrap();
        lanes.release(&second).await.unwrap();
        assert!(
            matches!(lanes.try_claim("s", &a1, 10_000).await.unwrap(), ClaimOutcome::Acquired(f) if f.token > second.token)
        );
    }
}
