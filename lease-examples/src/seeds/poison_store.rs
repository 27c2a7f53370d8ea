//! Poison flags: an operation marks a resource before it starts and clears
//! the mark when it finishes cleanly; a mark left behind blocks new work
//! until someone recovers the resource by hand.

use lease_core::{DynLeaseStore, LeaseError, LeaseKey};

struct PoisonStore {
    store: DynLeaseStore,
}

impl PoisonStore {
    fn new(store: DynLeaseStore) -> Self {
        Self { store }
    }

    fn key(resource: &str) -> Result<LeaseKey, LeaseError> {
        LeaseKey::from_segments(["poison", resource])
    }

    /// Fails with `LeaseError::Conflict` if another operation's token is there.
    async fn try_put_poison(&self, resource: &str, token: &str) -> Result<(), LeaseError> {
        self.store.put_marker(&Self::key(resource)?, token).await
    }

    /// Fails with `LeaseError::Conflict` if another operation's token is there.
    async fn delete_poison(&self, resource: &str, token: &str) -> Result<(), LeaseError> {
        self.store
            .delete_marker(&Self::key(resource)?, token)
            .await
            .map(drop)
    }

    async fn get_poison(&self, resource: &str) -> Result<Option<String>, LeaseError> {
        self.store.get_marker(&Self::key(resource)?).await
    }
}

/// Runs the seed's story on `store`: what happened, line by line.
///
/// # Errors
/// The store's errors.
pub async fn demo(store: DynLeaseStore) -> Result<Vec<String>, LeaseError> {
    let mut out = Vec::new();
    let poison = PoisonStore::new(store);
    poison.try_put_poison("table/42", "alter-7").await?;
    out.push("alter-7 started on table/42".to_owned());
    match poison.try_put_poison("table/42", "alter-8").await {
        Err(LeaseError::Conflict { existing, .. }) => {
            out.push(format!("alter-8 refused: {existing} is in progress"));
        }
        other => out.push(format!("unexpected: {other:?}")),
    }
    poison.delete_poison("table/42", "alter-7").await?;
    out.push(format!(
        "alter-7 finished; table/42 is {:?}",
        poison.get_poison("table/42").await?
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lease_core::MemoryStore;

    use super::*;

    #[tokio::test]
    async fn poison_blocks_other_operations_until_cleared() {
        let poison = PoisonStore::new(Arc::new(MemoryStore::new()));
        poison.try_put_poison("r", "op-1").await.unwrap();
        poison
            .try_put_poison("r", "op-1")
            .await
            .expect("same token again is fine");
        assert!(matches!(
            poison.try_put_poison("r", "op-2").await,
            Err(LeaseError::Conflict { .. })
        ));
        assert!(matches!(
            poison.delete_poison("r", "op-2").await,
            Err(LeaseError::Conflict { .. })
        ));
        assert_eq!(
            poison.get_poison("r").await.unwrap().as_deref(),
            Some("op-1")
        );
        poison.delete_poison("r", "op-1").await.unwrap();
        poison
            .delete_poison("r", "op-1")
            .await
            .expect("absent is fine");
        assert_eq!(poison.get_poison("r").await.unwrap(), None);
        poison.try_put_poison("r", "op-2").await.unwrap();
    }
}
