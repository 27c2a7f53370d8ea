//! Claims and reclaims (rule: one live grant per key, tokens increasing):
//! `claim.lua` for a claim alone or a reclaim, `claim_many.lua` for
//! concurrent claims sharing one call.

use std::time::Duration;

use lease_core::{
    BatchedCalls, Claim, Fence, Grant, Holder, LeaseError, LeaseKey, Op, with_timeout,
};
use tokio::time::Instant;

use crate::client::{Client, answer_each};
use crate::reply::{Answer, Reply};

/// A claim on its way into a batch.
pub(crate) struct ClaimRequest {
    pub(crate) key: LeaseKey,
    pub(crate) holder: Holder,
    pub(crate) ttl_ms: String,
    pub(crate) observed: Option<Fence>,
}

impl Client {
    /// A claim (`observed` `None`) or a reclaim of `observed`; claims join
    /// `claims`, reclaims go alone.
    pub(crate) async fn claim(
        &self,
        claims: &BatchedCalls<ClaimRequest, Reply>,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
        observed: Option<&Fence>,
    ) -> Result<Claim, LeaseError> {
        let op = if observed.is_some() {
            Op::Reclaim
        } else {
            Op::Claim
        };
        let ttl = self.capabilities().grant_ttl(key, ttl)?;
        let request = ClaimRequest {
            key: key.clone(),
            holder: holder.clone(),
            ttl_ms: ttl.as_millis().to_string(),
            observed: observed.cloned(),
        };
        // Before the request joins a batch: the holder's deadline counts
        // from no later than the script ran.
        let sent = Instant::now();
        let reply = match observed {
            // Reclaims are rare: each goes alone.
            Some(_) => self.claim_alone(&request).await?,
            None => {
                let limit = self.config.call_timeout;
                with_timeout(op, key, limit, claims.call(key, request)).await?
            }
        };
        match reply.decode(op, key)? {
            Answer::Acquired { token, fresh } => {
                let (key, holder) = (key.clone(), holder.clone());
                let fence = Fence { key, holder, token };
                Ok(Claim::Acquired(Grant::new(fence, ttl, sent, fresh)))
            }
            busy @ (Answer::Held { .. } | Answer::Quarantined { .. }) => {
                Ok(Claim::Busy(busy.record(key).expect("a busy answer")))
            }
            other => Err(other.unexpected(op, key)),
        }
    }

    /// One script call for a batch of claims, or for one claim or reclaim
    /// alone (`claim.lua`, leaner than a batch of one): one reply each, in
    /// order.
    pub(crate) async fn claim_batch(
        &self,
        batch: Vec<ClaimRequest>,
    ) -> Vec<Result<Reply, LeaseError>> {
        let Some(first) = batch.first() else {
            return Vec::new();
        };
        if let [one] = batch.as_slice() {
            return vec![self.claim_alone(one).await];
        }
        let mut keys = Vec::with_capacity(batch.len() + 1);
        keys.push(self.floor_key.clone());
        keys.extend(batch.iter().map(|r| self.record_key(&r.key)));
        let mut args: Vec<&[u8]> = Vec::with_capacity(1 + 3 * batch.len());
        args.push(self.quarantine_ms.as_bytes());
        for request in &batch {
            args.extend([
                request.holder.id().as_bytes(),
                request.holder.incarnation().as_bytes(),
                request.ttl_ms.as_bytes(),
            ]);
        }
        let replies = self
            .run::<Vec<Vec<u8>>>(
                Op::Claim,
                &first.key,
                &self.scripts.claim_many,
                &keys,
                &args,
            )
            .await;
        answer_each(
            Op::Claim,
            &batch,
            |r| &r.key,
            replies,
            |_, reply| Ok(Reply::lines(&reply)),
        )
    }

    /// One claim or reclaim, alone.
    async fn claim_alone(&self, request: &ClaimRequest) -> Result<Reply, LeaseError> {
        let (op, observed_token) = match &request.observed {
            Some(o) => (Op::Reclaim, Some(o.token.0.to_string())),
            None => (Op::Claim, None),
        };
        let mut args: Vec<&[u8]> = vec![
            request.holder.id().as_bytes(),
            request.holder.incarnation().as_bytes(),
            request.ttl_ms.as_bytes(),
            self.quarantine_ms.as_bytes(),
        ];
        if let (Some(o), Some(token)) = (&request.observed, &observed_token) {
            args.extend([
                o.holder.id().as_bytes(),
                o.holder.incarnation().as_bytes(),
                token.as_bytes(),
            ]);
        }
        let keys = [self.record_key(&request.key), self.floor_key.clone()];
        let reply = self
            .run::<Vec<u8>>(op, &request.key, &self.scripts.claim, &keys, &args)
            .await?;
        Ok(Reply::lines(&reply))
    }
}
