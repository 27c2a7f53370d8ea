//! A claim's create round: putting a fresh grant's key on an etcd lease,
//! alone or in a transaction shared with the claims made beside it.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse};
use lease_core::{Grant, Holder, LeaseError, LeaseKey, Op};
use tokio::time::Instant;

use crate::client::{Client, etcd_error, fence_of};
use crate::config::BACKEND;
use crate::leases::{Lease, LeaseFailure, is_lease_not_found, lease_ttl_secs};
use crate::record::{self, Found};

/// Takeovers race other claimers; a create gives up after this many
/// rounds, and so does a claim.
pub(crate) const ROUNDS: usize = 4;

/// A claim's create round: the key, for whom, the TTL, and when the
/// caller asked (its deadline counts from there).
#[derive(Clone)]
pub(crate) struct CreateRequest {
    pub key: LeaseKey,
    pub holder: Holder,
    pub ttl: Duration,
    pub sent: Instant,
}

/// What a claim's first round found: the fresh grant, or what holds the key.
pub(crate) type Created = Result<Result<Grant, Found>, LeaseError>;

/// `items`, padded with `None` to `len`.
fn pad<T>(mut items: Vec<Option<T>>, len: usize) -> Vec<Option<T>> {
    items.resize_with(len.max(items.len()), || None);
    items
}

/// How a transaction that puts a key on a lease ended.
pub(crate) enum Attached {
    /// etcd answered; the key is on the lease if the transaction succeeded,
    /// and the lease lives its TTL from no earlier than `sent`.
    Answered(TxnResponse),
    /// The lease had expired: nothing lives on it.
    LeaseGone,
}

impl Client {
    /// Runs `txn`, which puts a key on `lease`. A lease refreshed too long
    /// before `sent` gets a keep-alive alongside, so that either way the
    /// key certainly lives until `sent + TTL`.
    pub(crate) async fn attach(
        &self,
        op: Op,
        key: &LeaseKey,
        txn: Txn,
        lease: Lease,
        sent: Instant,
    ) -> Result<Attached, LeaseError> {
        let leases = &self.leases;
        let (answer, refreshed) = if lease.fresh_at(sent) {
            (self.txn_raw(op, key, txn).await?, None)
        } else {
            let (answer, refreshed) =
                tokio::join!(self.txn_raw(op, key, txn), leases.refresh(lease.id));
            (answer?, Some(refreshed))
        };
        let response = match answer {
            Err(error) if is_lease_not_found(&error) => return Ok(Attached::LeaseGone),
            Err(error) => return Err(etcd_error(op, key, self.call_timeout(), error)),
            Ok(response) => response,
        };
        self.settle(op, key, lease, response, refreshed)
    }

    /// What a transaction that put a key on `lease` (answered `response`)
    /// and the keep-alive sent alongside it, if any, mean together.
    fn settle(
        &self,
        op: Op,
        key: &LeaseKey,
        lease: Lease,
        response: TxnResponse,
        refreshed: Option<Result<Instant, LeaseFailure>>,
    ) -> Result<Attached, LeaseError> {
        match refreshed {
            None | Some(Ok(_)) => Ok(Attached::Answered(response)),
            // Expired after the put: whatever it carried is gone with it.
            Some(Err(LeaseFailure::Gone)) => Ok(Attached::LeaseGone),
            // Nothing was put on it: its refresh does not matter.
            Some(Err(_)) if !response.succeeded() => Ok(Attached::Answered(response)),
            // Put, but the lease may end before the deadline: not a grant
            // to report. A retry of the claim returns it if it lives.
            Some(Err(failure)) => Err(match self.lease_error(op, key, lease_ttl(lease), failure) {
                LeaseError::Backend { source, .. } => {
                    LeaseError::backend(BACKEND, op, key, true, source)
                }
                other => other,
            }),
        }
    }

    /// The create-if-absent transaction of `key` for `holder` on `lease`:
    /// the key put when absent, else read.
    fn create_txn(&self, etcd_key: &str, holder: &Holder, ttl: Duration, lease: Lease) -> Txn {
        Txn::new()
            .when([Compare::create_revision(etcd_key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                etcd_key,
                record::encode(holder, ttl),
                Some(PutOptions::new().with_lease(lease.id)),
            )])
            .or_else([TxnOp::get(etcd_key, None)])
    }

    /// What a create transaction's answer means: the fresh grant, or what
    /// holds the key; `None` when the lease was gone and nothing was put.
    /// `revision` is the transaction's, when it was read already.
    fn created(
        &self,
        op: Op,
        request: &CreateRequest,
        lease: Lease,
        attached: Attached,
        revision: Option<i64>,
    ) -> Option<Created> {
        let CreateRequest {
            key,
            holder,
            ttl,
            sent,
        } = request;
        let response = match attached {
            Attached::LeaseGone => return None,
            Attached::Answered(response) => response,
        };
        let leases = &self.leases;
        if !response.succeeded() {
            leases.unused(lease);
            return Some(Ok(Err(Found::from_response(&response))));
        }
        let revision = match revision.map_or_else(|| revision_in(op, key, &response), Ok) {
            Ok(revision) => revision,
            Err(error) => return Some(Err(error)),
        };
        leases.attached(lease.id, &self.record_key(key), revision, holder);
        let grant = Grant::new(fence_of(key, holder, revision), *ttl, *sent, true);
        Some(Ok(Ok(grant)))
    }

    /// Creates the key if absent: a fresh grant. Else reads what is there.
    /// `first` is a lease taken for it already, tried first.
    pub(crate) async fn create(
        &self,
        op: Op,
        request: &CreateRequest,
        mut first: Option<Lease>,
    ) -> Created {
        let CreateRequest {
            key, holder, ttl, ..
        } = request;
        let ttl = *ttl;
        let etcd_key = self.record_key(key);
        let leases = &self.leases;
        for _ in 0..ROUNDS {
            let lease = match first.take() {
                Some(lease) => lease,
                None => leases
                    .take(lease_ttl_secs(ttl))
                    .await
                    .map_err(|failure| self.lease_error(op, key, ttl, failure))?,
            };
            let txn = self.create_txn(&etcd_key, holder, ttl, lease);
            let attached = self.attach(op, key, txn, lease, request.sent).await?;
            if let Some(outcome) = self.created(op, request, lease, attached, None) {
                return outcome;
            }
        }
        Err(LeaseError::backend(
            BACKEND,
            op,
            key,
            false,
            "etcd kept expiring the leases offered to the claim; try again",
        ))
    }

    /// The first round of a batch of claims: each key created if absent,
    /// in one transaction of one create transaction per claim (one raft
    /// write for the batch), each on a pool lease of its own. Claims of a
    /// key already in the batch go after it, one by one: etcd refuses a
    /// transaction that writes a key twice. When etcd finds one of the
    /// leases gone it refuses the whole transaction, and each claim goes
    /// again alone.
    pub(crate) async fn create_batch(&self, batch: Vec<CreateRequest>) -> Vec<Created> {
        if let [one] = batch.as_slice() {
            return vec![self.create(Op::Claim, one, None).await];
        }
        let mut seen = std::collections::HashSet::new();
        let (together, after): (Vec<_>, Vec<_>) = batch
            .iter()
            .enumerate()
            .partition(|(_, r)| seen.insert(&r.key));
        let mut outcomes: Vec<Option<Created>> = batch.iter().map(|_| None).collect();
        let created = self
            .create_together(together.iter().map(|(_, r)| *r).collect())
            .await;
        for ((i, _), outcome) in together.iter().zip(created) {
            outcomes[*i] = Some(outcome);
        }
        for (i, r) in after {
            outcomes[i] = Some(self.create(Op::Claim, r, None).await);
        }
        outcomes.into_iter().flatten().collect()
    }

    /// [`EtcdStore::create_batch`] for claims of distinct keys.
    async fn create_together(&self, batch: Vec<&CreateRequest>) -> Vec<Created> {
        let op = Op::Claim;
        let leases = &self.leases;
        let taken =
            futures::future::join_all(batch.iter().map(|r| leases.take(lease_ttl_secs(r.ttl))))
                .await;
        let mut outcomes: Vec<Option<Created>> = batch.iter().map(|_| None).collect();
        let mut sent_with = Vec::new();
        let mut txns = Vec::new();
        for (i, (r, lease)) in batch.iter().zip(taken).enumerate() {
            match lease {
                Ok(lease) => {
                    txns.push(TxnOp::txn(self.create_txn(
                        &self.record_key(&r.key),
                        &r.holder,
                        r.ttl,
                        lease,
                    )));
                    sent_with.push((i, lease));
                }
                Err(failure) => {
                    outcomes[i] = Some(Err(self.lease_error(op, &r.key, r.ttl, failure)))
                }
            }
        }
        if let Some(&(first, _)) = sent_with.first() {
            let refreshes = sent_with.iter().map(|&(i, lease)| {
                let sent = batch[i].sent;
                async move {
                    if lease.fresh_at(sent) {
                        None
                    } else {
                        Some(leases.refresh(lease.id).await)
                    }
                }
            });
            let (answer, refreshed) = tokio::join!(
                self.txn_raw(op, &batch[first].key, Txn::new().and_then(txns)),
                futures::future::join_all(refreshes)
            );
            let answered = match answer {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(error)) if is_lease_not_found(&error) => Err(None),
                Ok(Err(error)) => Err(Some(etcd_error(
                    op,
                    &batch[first].key,
                    self.call_timeout(),
                    error,
                ))),
                Err(error) => Err(Some(error)),
            };
            match answered {
                Ok(response) => {
                    let revision = response.header().map(|h| h.revision()).filter(|r| *r > 0);
                    let inner = response.op_responses().into_iter().map(|r| match r {
                        TxnOpResponse::Txn(inner) => Some(inner),
                        _ => None,
                    });
                    let inner: Vec<_> = inner.collect();
                    for (((i, lease), refreshed), inner) in sent_with
                        .iter()
                        .zip(refreshed)
                        .zip(pad(inner, sent_with.len()))
                    {
                        let r = batch[*i];
                        let outcome = match (inner, revision) {
                            (Some(inner), Some(revision)) => {
                                match self.settle(op, &r.key, *lease, inner, refreshed) {
                                    Ok(attached) => {
                                        self.created(op, r, *lease, attached, Some(revision))
                                    }
                                    Err(error) => Some(Err(error)),
                                }
                            }
                            _ => Some(Err(LeaseError::backend(
                                BACKEND,
                                op,
                                &r.key,
                                true,
                                "the batch's reply lacks this claim's answer or revision",
                            ))),
                        };
                        outcomes[*i] = match outcome {
                            Some(outcome) => Some(outcome),
                            // Its lease expired: alone again, on another.
                            None => Some(self.create(op, r, None).await),
                        };
                    }
                }
                // Some lease was gone, nothing was written: each alone,
                // its own lease tried first.
                Err(None) => {
                    for (i, lease) in &sent_with {
                        let r = batch[*i];
                        outcomes[*i] = Some(self.create(op, r, Some(*lease)).await);
                    }
                }
                Err(Some(error)) => {
                    for (i, _) in &sent_with {
                        outcomes[*i] = Some(Err(error.for_key(&batch[*i].key)));
                    }
                }
            }
        }
        outcomes.into_iter().flatten().collect()
    }
}

fn lease_ttl(lease: Lease) -> Duration {
    Duration::from_secs(lease.ttl_secs.unsigned_abs())
}

fn revision_in(op: Op, key: &LeaseKey, response: &TxnResponse) -> Result<i64, LeaseError> {
    response
        .header()
        .map(|h| h.revision())
        .filter(|r| *r > 0)
        .ok_or_else(|| LeaseError::backend(BACKEND, op, key, true, "the reply carries no revision"))
}
