//! Renewals (rule: a renewal extends only the live grant it names, from
//! the server's clock): `renew.lua` for one, `renew_many.lua` for up to a
//! keeper's batch in one call.

use std::time::Duration;

use lease_core::{Fence, Grant, LeaseError, Op};
use redis::FromRedisValue;
use tokio::time::Instant;

use crate::client::{Client, answer_each};
use crate::reply::{Answer, Reply, fence_record, malformed};

/// Renewals per `renew_many` script call: a keeper's whole batch, so
/// 10,000 leases take 20 calls, and one call holds the server for a few
/// milliseconds at most.
const RENEW_BATCH: usize = lease_core::MAX_BATCH;

impl Client {
    pub(crate) async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Grant, LeaseError> {
        let key = &fence.key;
        let ttl = self.capabilities().grant_ttl(key, ttl)?;
        let (own, ttl_ms) = (fence_record(fence), ttl.as_millis().to_string());
        let stamp = self.renewals.next().to_string();
        let sent = Instant::now();
        let args: [&[u8]; 3] = [own.as_bytes(), ttl_ms.as_bytes(), stamp.as_bytes()];
        let reply = self
            .run::<redis::Value>(
                Op::Renew,
                key,
                &self.scripts.renew,
                &[self.record_key(key)],
                &args,
            )
            .await?;
        renewed(fence, ttl, sent, reply)
    }

    /// Up to [`RENEW_BATCH`] renewals a call, every call at once.
    pub(crate) async fn renew_many(
        &self,
        renewals: &[(Fence, Duration)],
    ) -> Vec<Result<Grant, LeaseError>> {
        let caps = self.capabilities();
        lease_core::renew_in_batches(&caps, renewals, RENEW_BATCH, |batch| {
            self.renew_batch(batch)
        })
        .await
    }

    /// One `renew_many` script call for up to [`RENEW_BATCH`] renewals of
    /// valid TTLs: one result each, in order.
    async fn renew_batch(&self, batch: Vec<(&Fence, Duration)>) -> Vec<Result<Grant, LeaseError>> {
        let Some((first, _)) = batch.first() else {
            return Vec::new();
        };
        let keys: Vec<String> = batch.iter().map(|(f, _)| self.record_key(&f.key)).collect();
        let texts: Vec<[String; 3]> = batch
            .iter()
            .map(|(fence, ttl)| {
                let stamp = self.renewals.next().to_string();
                [fence_record(fence), ttl.as_millis().to_string(), stamp]
            })
            .collect();
        let mut args: Vec<&[u8]> = Vec::with_capacity(texts.len() * 3);
        args.extend(texts.iter().flatten().map(String::as_bytes));
        let sent = Instant::now();
        let replies = self
            .run::<Vec<redis::Value>>(
                Op::Renew,
                &first.key,
                &self.scripts.renew_many,
                &keys,
                &args,
            )
            .await;
        answer_each(
            Op::Renew,
            &batch,
            |(f, _)| &f.key,
            replies,
            |(fence, ttl), reply| renewed(fence, *ttl, sent, reply),
        )
    }
}

/// What a renew reply means for `fence`: 1 renewed, 0 free, `kept` live
/// but renewed already by a later request of this store (the grant lasts
/// at least its time left from `sent`), else a `held` reply.
fn renewed(
    fence: &Fence,
    ttl: Duration,
    sent: Instant,
    reply: redis::Value,
) -> Result<Grant, LeaseError> {
    let current = match reply {
        redis::Value::Int(1) => return Ok(Grant::new(fence.clone(), ttl, sent, false)),
        redis::Value::Int(0) => None,
        other => {
            let reply = Vec::<Vec<u8>>::from_redis_value(other)
                .map(Reply)
                .map_err(|e| malformed(Op::Renew, &fence.key, e.to_string()))?;
            match reply.decode(Op::Renew, &fence.key)? {
                Answer::Kept { remaining } => {
                    return Ok(Grant::new(fence.clone(), remaining, sent, false));
                }
                answer => answer.current(Op::Renew, &fence.key)?,
            }
        }
    };
    Err(LeaseError::lost(fence, current))
}
