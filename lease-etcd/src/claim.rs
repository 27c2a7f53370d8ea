//! Claims, takeovers and renewals: putting grant keys on etcd leases.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse};
use lease_core::{Claim, Fence, Grant, Holder, LeaseError, LeaseKey, Op};
use tokio::time::Instant;

use crate::leases::{Lease, LeaseFailure, is_lease_not_found, lease_ttl_secs};
use crate::record::{self, Found, holds};
use crate::store::{BACKEND, EtcdStore, etcd_error, fence_of};

/// Takeovers race other claimers; give up after this many rounds.
const ROUNDS: usize = 4;

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
enum Attached {
    /// etcd answered; the key is on the lease if the transaction succeeded,
    /// and the lease lives its TTL from no earlier than `sent`.
    Answered(TxnResponse),
    /// The lease had expired: nothing lives on it.
    LeaseGone,
}

impl EtcdStore {
    /// Runs `txn`, which puts a key on `lease`. A lease refreshed too long
    /// before `sent` gets a keep-alive alongside, so that either way the
    /// key certainly lives until `sent + TTL`.
    async fn attach(
        &self,
        op: Op,
        key: &LeaseKey,
        txn: Txn,
        lease: Lease,
        sent: Instant,
    ) -> Result<Attached, LeaseError> {
        let leases = &self.inner.leases;
        let (answer, refreshed) = if lease.fresh_at(sent) {
            (self.txn_raw(op, key, txn).await?, None)
        } else {
            let (answer, refreshed) =
                tokio::join!(self.txn_raw(op, key, txn), leases.refresh(lease.id));
            (answer?, Some(refreshed))
        };
        let response = match answer {
            Err(error) if is_lease_not_found(&error) => return Ok(Attached::LeaseGone),
            Err(error) => return Err(etcd_error(op, key, error)),
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
        let leases = &self.inner.leases;
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
    async fn create(&self, op: Op, request: &CreateRequest, mut first: Option<Lease>) -> Created {
        let CreateRequest {
            key, holder, ttl, ..
        } = request;
        let ttl = *ttl;
        let etcd_key = self.record_key(key);
        let leases = &self.inner.leases;
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
        let leases = &self.inner.leases;
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
                Ok(Err(error)) => Err(Some(etcd_error(op, &batch[first].key, error))),
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

    /// Extends `holder`'s grant created at `revision` by `ttl` from `sent`,
    /// keeping the token: `Ok(Ok)` renewed, `Ok(Err)` not the live grant
    /// (with what is). Same TTL: a keep-alive of the grant's own lease, no
    /// raft write. Another TTL: the key moves to a lease of that TTL in one
    /// transaction.
    pub(crate) async fn refresh(
        &self,
        op: Op,
        key: &LeaseKey,
        holder: &Holder,
        revision: i64,
        ttl: Duration,
        sent: Instant,
    ) -> Result<Result<(), Found>, LeaseError> {
        let found = self.read(op, key).await?;
        self.refresh_found(op, key, holder, revision, ttl, sent, found)
            .await
    }

    /// [`EtcdStore::refresh`] once the key was read as `found`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn refresh_found(
        &self,
        op: Op,
        key: &LeaseKey,
        holder: &Holder,
        revision: i64,
        ttl: Duration,
        sent: Instant,
        found: Found,
    ) -> Result<Result<(), Found>, LeaseError> {
        let held = match &found {
            Found::Held(held) if held.is(holder, revision) => held.clone(),
            _ => return Ok(Err(found)),
        };
        let leases = &self.inner.leases;
        if lease_ttl_secs(held.ttl) == lease_ttl_secs(ttl) {
            return match leases.refresh(held.lease).await {
                Ok(_) => Ok(Ok(())),
                // Expired since the read: the key goes with it.
                Err(LeaseFailure::Gone) => Ok(Err(Found::Absent)),
                Err(failure) => Err(self.lease_error(op, key, ttl, failure)),
            };
        }
        let etcd_key = self.record_key(key);
        let lease = leases
            .take(lease_ttl_secs(ttl))
            .await
            .map_err(|failure| self.lease_error(op, key, ttl, failure))?;
        let txn = Txn::new()
            .when({
                let mut compares = holds(&etcd_key, revision, holder).to_vec();
                compares.push(Compare::lease(
                    etcd_key.as_str(),
                    CompareOp::Equal,
                    held.lease,
                ));
                compares
            })
            .and_then([TxnOp::put(
                etcd_key.as_str(),
                record::encode(holder, ttl),
                Some(PutOptions::new().with_lease(lease.id)),
            )])
            .or_else([TxnOp::get(etcd_key.as_str(), None)]);
        match self.attach(op, key, txn, lease, sent).await? {
            Attached::LeaseGone => Ok(Err(self.read(op, key).await?)),
            Attached::Answered(response) if response.succeeded() => {
                // The old lease carries nothing now.
                leases.retire(held.lease);
                leases.attached(lease.id, &etcd_key, revision, holder);
                Ok(Ok(()))
            }
            Attached::Answered(response) => {
                leases.unused(lease);
                Ok(Err(Found::from_response(&response)))
            }
        }
    }

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

    pub(crate) async fn claim_or_reclaim(
        &self,
        op: Op,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
        observed: Option<&Fence>,
    ) -> Result<Claim, LeaseError> {
        let ttl = self.capabilities_ttl(key, ttl)?;
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
                self.create_shared(key, request.clone()).await
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

    fn capabilities_ttl(&self, key: &LeaseKey, ttl: Duration) -> Result<Duration, LeaseError> {
        use lease_core::LeaseStore;
        self.capabilities().grant_ttl(key, ttl)
    }

    /// How long etcd will keep lease `id`, in whole seconds rounded down;
    /// `None` when it is gone. etcd answers 0 for a lease with under a
    /// second left (or expired a moment ago, its keys not yet deleted) and
    /// -1 for one that is gone: at 0 the key is still there, so its grant
    /// still shows, with no time left.
    pub(crate) async fn lease_left(
        &self,
        key: &LeaseKey,
        id: i64,
    ) -> Result<Option<Duration>, LeaseError> {
        let mut client = self.inner.client.lease_client();
        let answer = lease_core::with_timeout(Op::Inspect, key, self.call_timeout(), async move {
            Ok(client.time_to_live(id, None).await)
        })
        .await?;
        match answer {
            Ok(response) if response.ttl() >= 0 => {
                Ok(Some(Duration::from_secs(response.ttl().unsigned_abs())))
            }
            Ok(_) => Ok(None),
            Err(error) if is_lease_not_found(&error) => Ok(None),
            Err(error) => Err(etcd_error(Op::Inspect, key, error)),
        }
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
