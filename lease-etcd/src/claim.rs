//! Claims and takeovers (rules: one live grant per key, tokens
//! increasing; a claim of one's own live grant renews it): create rounds
//! until a grant is made or a live one found.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use lease_core::{BatchedCalls, Claim, Fence, Grant, Holder, LeaseError, LeaseKey, Op};
use tokio::time::Instant;

use crate::client::{Client, fence_of};
use crate::config::BACKEND;
use crate::create::{CreateRequest, ROUNDS};
use crate::record::Found;

impl Client {
    /// Deletes the key if it still holds what was read (`mod_revision`).
    async fn delete_if_unchanged(
        &self,
        op: Op,
        key: &LeaseKey,
        mod_revision: i64,
    ) -> Result<bool, LeaseError> {
        let etcd_key = self.record_key(key);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                etcd_key.as_str(),
                CompareOp::Equal,
                mod_revision,
            )])
            .and_then([TxnOp::delete(etcd_key.as_str(), None)]);
        Ok(self.txn(op, key, txn).await?.succeeded())
    }

    /// A claim (`observed` `None`) or a reclaim of `observed`: a claim's
    /// first round joins `claims`.
    pub(crate) async fn claim(
        &self,
        claims: &BatchedCalls<CreateRequest, Result<Grant, Found>>,
        op: Op,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
        observed: Option<&Fence>,
    ) -> Result<Claim, LeaseError> {
        let ttl = self.capabilities().grant_ttl(key, ttl)?;
        // The deadline counts from the caller's request, even when a
        // takeover needs more rounds: the holder may stop early, never late.
        let sent = Instant::now();
        let request = CreateRequest {
            key: key.clone(),
            holder: holder.clone(),
            ttl,
            sent,
        };
        for round in 0..ROUNDS {
            // A claim's first round shares a transaction with the claims
            // made beside it.
            let created = if round == 0 && op == Op::Claim {
                // Each RPC of the round has its time limit; waiting for a
                // place in a transaction lasts at most until one under way
                // ends.
                claims.call(key, request.clone()).await
            } else {
                self.create(op, &request, None).await
            };
            let found = match created? {
                Ok(grant) => return Ok(Claim::Acquired(grant)),
                Err(found) => found,
            };
            match found {
                // Deleted between the compare and the read: try again.
                Found::Absent => {}
                Found::Corrupt { mod_revision, .. } => {
                    self.delete_if_unchanged(op, key, mod_revision).await?;
                }
                Found::Held(held) if held.holder == *holder => {
                    let revision = held.create_revision;
                    if let Ok(()) = self.refresh(op, key, holder, revision, ttl, sent).await? {
                        return Ok(Claim::Acquired(Grant::new(
                            fence_of(key, holder, revision),
                            ttl,
                            sent,
                            false,
                        )));
                    }
                }
                Found::Held(held)
                    if observed
                        .is_some_and(|o| o.holder == held.holder && o.token == held.token()) =>
                {
                    self.delete_if_unchanged(op, key, held.mod_revision).await?;
                }
                Found::Held(held) => return Ok(Claim::Busy(self.record_of(key, &held))),
            }
        }
        match self.read(op, key).await? {
            Found::Held(held) => Ok(Claim::Busy(self.record_of(key, &held))),
            _ => Err(LeaseError::backend(
                BACKEND,
                op,
                key,
                false,
                "the key kept changing under the claim; try again",
            )),
        }
    }
}
