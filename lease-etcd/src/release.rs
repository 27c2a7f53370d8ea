//! Releases (rule: a release never clears a newer grant): a grant this
//! store made is deleted by comparing its own etcd lease, in a transaction
//! shared with the releases made beside it; any other by comparing holder
//! and revision.

use etcd_client::{Compare, CompareOp, DeleteOptions, Txn, TxnOp, TxnOpResponse};
use lease_core::{BatchedCalls, Fence, LeaseError, LeaseKey, Op, with_timeout};

use crate::client::Client;
use crate::config::BACKEND;
use crate::record::{self, holds, revision_of};

/// A release of a grant this store made: it is the grant's own lease that
/// the transaction compares.
pub(crate) struct ReleaseRequest {
    pub(crate) key: LeaseKey,
    pub(crate) etcd_key: String,
    pub(crate) lease: i64,
}

impl Client {
    /// Releases of grants this store made join `releases`, to share a
    /// transaction.
    pub(crate) async fn release(
        &self,
        releases: &BatchedCalls<ReleaseRequest, bool>,
        fence: &Fence,
    ) -> Result<bool, LeaseError> {
        let key = &fence.key;
        let Some(revision) = revision_of(fence.token) else {
            return Ok(false);
        };
        let etcd_key = self.record_key(key);
        let leases = &self.leases;
        // A grant this store made for this holder hangs on a lease of its
        // own, which carries no other grant until this store saw that one
        // released: the key on that lease *is* the grant. One compare, no
        // holder compare, no read back.
        // Releases made beside it share its transaction.
        if let Some(lease) = leases.lease_of(&etcd_key, revision, &fence.holder) {
            let request = ReleaseRequest {
                key: key.clone(),
                etcd_key: etcd_key.clone(),
                lease,
            };
            let limit = self.call_timeout();
            let released =
                with_timeout(Op::Release, key, limit, releases.call(key, request)).await?;
            if released {
                leases.released(lease);
                return Ok(true);
            }
        }
        let txn = Txn::new()
            .when(holds(&etcd_key, revision, &fence.holder))
            .and_then([TxnOp::delete(
                etcd_key.as_str(),
                Some(DeleteOptions::new().with_prev_key()),
            )]);
        let response = self.txn(Op::Release, key, txn).await?;
        if let Some(gone) = record::deleted(&response) {
            leases.released(gone.lease());
        }
        Ok(response.succeeded())
    }

    /// One transaction of releases of distinct keys, each deleting its key
    /// if it still hangs on the grant's lease (one raft write for the
    /// batch); releases of a key already in the batch go after it, alone.
    pub(crate) async fn release_batch(
        &self,
        batch: Vec<ReleaseRequest>,
    ) -> Vec<Result<bool, LeaseError>> {
        let delete = |r: &ReleaseRequest| {
            Txn::new()
                .when([Compare::lease(
                    r.etcd_key.as_str(),
                    CompareOp::Equal,
                    r.lease,
                )])
                .and_then([TxnOp::delete(r.etcd_key.as_str(), None)])
        };
        let mut seen = std::collections::HashSet::new();
        let (together, after): (Vec<_>, Vec<_>) = batch
            .iter()
            .enumerate()
            .partition(|(_, r)| seen.insert(&r.etcd_key));
        let mut outcomes: Vec<Option<Result<bool, LeaseError>>> =
            batch.iter().map(|_| None).collect();
        let answer = match together.as_slice() {
            [(_, one)] => self
                .txn(Op::Release, &one.key, delete(one))
                .await
                .map(|response| vec![Some(response.succeeded())]),
            [(_, first), ..] => {
                let txn = Txn::new().and_then(
                    together
                        .iter()
                        .map(|(_, r)| TxnOp::txn(delete(r)))
                        .collect::<Vec<_>>(),
                );
                self.txn(Op::Release, &first.key, txn)
                    .await
                    .map(|response| {
                        response
                            .op_responses()
                            .into_iter()
                            .map(|r| match r {
                                TxnOpResponse::Txn(inner) => Some(inner.succeeded()),
                                _ => None,
                            })
                            .collect()
                    })
            }
            [] => Ok(Vec::new()),
        };
        match answer {
            Ok(answers) => {
                let mut answers = answers.into_iter();
                for (i, r) in &together {
                    outcomes[*i] = Some(answers.next().flatten().ok_or_else(|| {
                        LeaseError::backend(
                            BACKEND,
                            Op::Release,
                            &r.key,
                            true,
                            "the batch's reply lacks this release's answer",
                        )
                    }));
                }
            }
            Err(error) => {
                for (i, r) in &together {
                    outcomes[*i] = Some(Err(error.for_key(&r.key)));
                }
            }
        }
        for (i, r) in after {
            outcomes[i] = Some(
                self.txn(Op::Release, &r.key, delete(r))
                    .await
                    .map(|t| t.succeeded()),
            );
        }
        outcomes.into_iter().flatten().collect()
    }
}
