//! Renewals (rule: a renewal extends only the live grant it names): one
//! refresh of the grant's etcd lease, after a read when the lease is not
//! one this store knows fresh; `renew_many` reads up to a transaction's
//! worth of records in one read-only transaction, then refreshes each.

use std::time::Duration;

use etcd_client::{KeyValue, Txn, TxnOp, TxnOpResponse};
use lease_core::{Fence, Grant, LeaseError, Op};
use tokio::time::Instant;

use crate::client::{Client, MAX_TXN_OPS};
use crate::config::BACKEND;
use crate::record::{Found, revision_of};

impl Client {
    pub(crate) async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Grant, LeaseError> {
        let key = &fence.key;
        let ttl = self.capabilities().grant_ttl(key, ttl)?;
        let sent = Instant::now();
        let Some(revision) = revision_of(fence.token) else {
            return Err(self.lost(fence, &self.read(Op::Renew, key).await?));
        };
        match self
            .refresh(Op::Renew, key, &fence.holder, revision, ttl, sent)
            .await?
        {
            Ok(()) => Ok(Grant::new(fence.clone(), ttl, sent, false)),
            Err(found) => Err(self.lost(fence, &found)),
        }
    }

    /// Up to [`MAX_TXN_OPS`] renewals a batch, every batch at once
    /// (`lease_core::renew_in_batches`).
    pub(crate) async fn renew_many(
        &self,
        renewals: &[(Fence, Duration)],
    ) -> Vec<Result<Grant, LeaseError>> {
        let caps = self.capabilities();
        let send = |batch| self.renew_batch(batch);
        lease_core::renew_in_batches(&caps, renewals, MAX_TXN_OPS, send).await
    }

    /// One read-only transaction reads every record of the batch, then
    /// each renewal refreshes what it found, all at once. A token no grant
    /// of this store has is answered lost, with what the read found.
    async fn renew_batch(&self, batch: Vec<(&Fence, Duration)>) -> Vec<Result<Grant, LeaseError>> {
        // Every deadline counts from before the batch's first request.
        let sent = Instant::now();
        let found = self.read_many(&batch).await;
        let renewed = batch
            .iter()
            .zip(found)
            .map(|(&(fence, ttl), found)| async move {
                let found = found?;
                let Some(revision) = revision_of(fence.token) else {
                    return Err(self.lost(fence, &found));
                };
                let (key, holder) = (&fence.key, &fence.holder);
                let refreshed =
                    self.refresh_found(Op::Renew, key, holder, revision, ttl, sent, found);
                match refreshed.await? {
                    Ok(()) => Ok(Grant::new(fence.clone(), ttl, sent, false)),
                    Err(found) => Err(self.lost(fence, &found)),
                }
            });
        futures::future::join_all(renewed).await
    }

    /// Reads the records of up to [`MAX_TXN_OPS`] renewals in one
    /// read-only transaction (a linearizable read, no raft proposal): what
    /// it found for each.
    async fn read_many(&self, batch: &[(&Fence, Duration)]) -> Vec<Result<Found, LeaseError>> {
        let Some((first, _)) = batch.first() else {
            return Vec::new();
        };
        let gets: Vec<TxnOp> = batch
            .iter()
            .map(|(fence, _)| TxnOp::get(self.record_key(&fence.key), None))
            .collect();
        match self
            .txn(Op::Renew, &first.key, Txn::new().and_then(gets))
            .await
        {
            Ok(response) => {
                let kvs: Vec<Option<KeyValue>> = response
                    .op_responses()
                    .into_iter()
                    .map(|r| match r {
                        TxnOpResponse::Get(get) => get.kvs().first().cloned(),
                        _ => None,
                    })
                    .collect();
                if kvs.len() != batch.len() {
                    return batch
                        .iter()
                        .map(|(fence, _)| {
                            let why = format!("{} answers to {} reads", kvs.len(), batch.len());
                            Err(LeaseError::backend(
                                BACKEND,
                                Op::Renew,
                                &fence.key,
                                false,
                                why,
                            ))
                        })
                        .collect();
                }
                kvs.iter()
                    .map(|kv| Ok(Found::from_kv(kv.as_ref())))
                    .collect()
            }
            Err(error) => batch
                .iter()
                .map(|(fence, _)| Err(error.for_key(&fence.key)))
                .collect(),
        }
    }
}
