//! Inspect and check (rule: inspect shows the live grant): one read, and
//! for a held key the time its etcd lease has left.

use lease_core::{Fence, LeaseError, LeaseKey, LeaseRecord, Op};

use crate::client::Client;
use crate::record::{Found, revision_of};

impl Client {
    pub(crate) async fn inspect(&self, key: &LeaseKey) -> Result<Option<LeaseRecord>, LeaseError> {
        match self.read(Op::Inspect, key).await? {
            Found::Absent => Ok(None),
            Found::Corrupt { detail, .. } => Err(LeaseError::Corrupt {
                key: key.clone(),
                detail,
            }),
            Found::Held(held) => {
                let left = self.lease_left(key, held.lease).await?;
                // The lease outlives the grant by the margin; etcd reports
                // whole seconds, rounded down.
                Ok(left.map(|left| LeaseRecord {
                    remaining: left.min(held.ttl),
                    ..self.record_of(key, &held)
                }))
            }
        }
    }

    pub(crate) async fn check(&self, fence: &Fence) -> Result<bool, LeaseError> {
        // A key exists only while its etcd lease lives: one read decides.
        Ok(
            match (
                self.read(Op::Inspect, &fence.key).await?,
                revision_of(fence.token),
            ) {
                (Found::Held(held), Some(revision)) => held.is(&fence.holder, revision),
                _ => false,
            },
        )
    }
}
