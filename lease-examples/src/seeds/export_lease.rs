//! "At most one export per round" across every replica: the round helper,
//! with the last round's record readable by operators.

use std::time::Duration;

use lease_core::{DynLeaseStore, Grant, Holder, LeaseError, LeaseKey, LeaseRecord, Round};

/// One replica's view of the export rounds on `key`.
struct ExportLease {
    round: Round,
}

impl ExportLease {
    fn new(
        store: DynLeaseStore,
        key: &str,
        holder_id: &str,
        period: Duration,
    ) -> Result<Self, LeaseError> {
        let holder = Holder::unique(holder_id)?;
        Ok(Self {
            round: Round::new(store, LeaseKey::new(key)?, holder, period),
        })
    }

    /// `Some` for exactly one replica per round; the winner never releases,
    /// so the round lasts its full period even if the winner crashes.
    async fn try_acquire(&self) -> Result<Option<Grant>, LeaseError> {
        self.round.try_win().await
    }

    /// The fleet-visible "last export": `None` when no round is running,
    /// `Err(Corrupt)` when the record is unreadable (the next round repairs it).
    async fn current(&self) -> Result<Option<LeaseRecord>, LeaseError> {
        self.round.current().await
    }
}

/// Runs the seed's story on `store`: three replicas, three rounds, one
/// export each; what happened, line by line.
///
/// # Errors
/// The store's errors.
pub async fn demo(store: DynLeaseStore) -> Result<Vec<String>, LeaseError> {
    let mut out = Vec::new();
    let period = crate::demo_ttl(&*store, Duration::from_millis(300));
    let replicas: Vec<_> = ["replica-1", "replica-2", "replica-3"]
        .into_iter()
        .map(|id| ExportLease::new(store.clone(), "exports/daily", id, period))
        .collect::<Result<_, _>>()?;
    for round in 1..=3 {
        for replica in &replicas {
            if let Some(grant) = replica.try_acquire().await? {
                out.push(format!(
                    "round {round}: {} exports (token {})",
                    grant.fence.holder.id(),
                    grant.token()
                ));
            }
        }
        if let Some(last) = replicas[0].current().await? {
            out.push(format!(
                "round {round}: operators see {} with {:.1} s left",
                last.holder.id(),
                last.remaining.as_secs_f64()
            ));
        }
        tokio::time::sleep(crate::past_expiry(&*store, period)).await;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lease_core::MemoryStore;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn exactly_one_export_per_round() {
        let memory = MemoryStore::new();
        let store: DynLeaseStore = Arc::new(memory.clone());
        let period = Duration::from_secs(60);
        let replicas: Vec<_> = (0..5)
            .map(|i| {
                ExportLease::new(store.clone(), "exports/daily", &format!("r{i}"), period).unwrap()
            })
            .collect();
        assert!(
            replicas[0].current().await.unwrap().is_none(),
            "no round ever ran"
        );
        let mut tokens = Vec::new();
        for _ in 0..3 {
            let mut wins = Vec::new();
            for replica in replicas.iter().chain(&replicas) {
                wins.extend(replica.try_acquire().await.unwrap());
            }
            assert_eq!(wins.len(), 1);
            tokens.push(wins[0].token());
            tokio::time::sleep(period).await;
        }
        assert!(tokens.windows(2).all(|w| w[0] < w[1]));
        memory.plant_corrupt_record(&LeaseKey::new("exports/daily").unwrap(), "??");
        assert!(matches!(
            replicas[1].current().await,
            Err(LeaseError::Corrupt { .. })
        ));
        assert!(
            replicas[1].try_acquire().await.unwrap().is_some(),
            "repaired by takeover"
        );
    }
}
