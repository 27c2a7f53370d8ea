//! Renewals (rule: a renewal extends only the live grant it names): one
//! refresh of the grant's etcd lease, after a read when the lease is not
//! one this store knows fresh; `renew_many` reads up to a transaction's
//! worth of records at once.

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

    pub(crate) async fn renew_many(
        &self,
        renewals: &[(Fence, Duration)],
    ) -> Vec<Result<Grant, LeaseError>> {
        // Every deadline counts from the call: no request of it is sent
        // earlier.
        let sent = Instant::now();
        let mut results: Vec<Option<Result<Grant, LeaseError>>> =
            renewals.iter().map(|_| None).collect();
        let mut valid = Vec::with_capacity(renewals.len());
        let mut unknown = Vec::new();
        for (i, (fence, ttl)) in renewals.iter().enumerate() {
            match (
                self.capabilities().grant_ttl(&fence.key, *ttl),
                revision_of(fence.token),
            ) {
                (Err(error), _) => results[i] = Some(Err(error)),
                (Ok(ttl), Some(revision)) => valid.push((i, fence, ttl, revision)),
                // No grant of this store has that token: renew says so.
                (Ok(ttl), None) => unknown.push((i, fence, ttl)),
            }
        }
        let reads = valid.chunks(MAX_TXN_OPS).map(|batch| self.read_many(batch));
        let (found, refused) = tokio::join!(
            futures::future::join_all(reads),
            futures::future::join_all(
                unknown
                    .iter()
                    .map(|&(i, fence, ttl)| async move { (i, self.renew(fence, ttl).await) })
            ),
        );
        for (i, outcome) in refused {
            results[i] = Some(outcome);
        }
        let renewed = valid.iter().zip(found.into_iter().flatten()).map(
            |(&(i, fence, ttl, revision), found)| async move {
                let key = &fence.key;
                let outcome = match found {
                    Err(error) => Err(error),
                    Ok(found) => self
                        .refresh_found(Op::Renew, key, &fence.holder, revision, ttl, sent, found)
                        .await
                        .and_then(|refreshed| match refreshed {
                            Ok(()) => Ok(Grant::new(fence.clone(), ttl, sent, false)),
                            Err(found) => Err(self.lost(fence, &found)),
                        }),
                };
                (i, outcome)
            },
        );
        for (i, outcome) in futures::future::join_all(renewed).await {
            results[i] = Some(outcome);
        }
        results.into_iter().flatten().collect()
    }

    /// Reads the records of up to [`MAX_TXN_OPS`] renewals in one
    /// read-only transaction (a linearizable read, no raft proposal): what
    /// it found for each.
    async fn read_many(
        &self,
        batch: &[(usize, &Fence, Duration, i64)],
    ) -> Vec<Result<Found, LeaseError>> {
        let Some((_, first, _, _)) = batch.first() else {
            return Vec::new();
        };
        let gets: Vec<TxnOp> = batch
            .iter()
            .map(|(_, fence, _, _)| TxnOp::get(self.record_key(&fence.key), None))
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
                        .map(|(_, fence, _, _)| {
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
                .map(|(_, fence, _, _)| Err(error.for_key(&fence.key)))
                .collect(),
        }
    }
}
