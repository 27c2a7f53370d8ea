//! Keeping a grant alive: refreshing its etcd lease, or moving its key to
//! a lease of another TTL; and how long a lease has left.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use lease_core::{Holder, LeaseError, LeaseKey, Op};
use tokio::time::Instant;

use crate::client::{Client, etcd_error};
use crate::create::Attached;
use crate::leases::{LeaseFailure, is_lease_not_found, lease_ttl_secs};
use crate::record::{self, Found, holds};

impl Client {
    /// Extends `holder`'s grant created at `revision` by `ttl` from `sent`,
    /// keeping the token: `Ok(Ok)` renewed, `Ok(Err)` not the live grant
    /// (with what is). Same TTL: a keep-alive of the grant's own lease, no
    /// raft write. Another TTL: the key moves to a lease of that TTL in one
    /// transaction that compares the lease it moves off.
    ///
    /// A move whose outcome is unknown may reach etcd late, after later
    /// renewals: had those only refreshed the same lease, the late move
    /// would still find the key on it and set a shorter TTL than they
    /// told (SPEC, *late requests*). So until a renewal is seen to move
    /// the key off that lease, every renewal of it moves the key, whatever
    /// its TTL: the late move then compares a lease the key left.
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

    /// [`Client::refresh`] once the key was read as `found`.
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
        let leases = &self.leases;
        if lease_ttl_secs(held.ttl) == lease_ttl_secs(ttl) && !leases.is_moving_off(held.lease) {
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
        let attached = self.attach(op, key, txn, lease, sent).await;
        if attached.as_ref().is_err_and(LeaseError::is_indeterminate) {
            leases.moving_off(held.lease);
        }
        match attached? {
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
        let mut client = self.client.lease_client();
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
            Err(error) => Err(etcd_error(Op::Inspect, key, self.call_timeout(), error)),
        }
    }
}
