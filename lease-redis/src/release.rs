//! Releases (rule: a release never clears a newer grant): `release.lua`
//! alone, `release_many.lua` for concurrent releases sharing one call;
//! both publish the keys they freed.

use lease_core::{BatchedCalls, Fence, LeaseError, LeaseKey, Op, with_timeout};

use crate::client::{Client, answer_each};
use crate::reply::fence_record;

/// A release on its way into a batch: its key and its fence's record.
pub(crate) struct ReleaseRequest {
    pub(crate) key: LeaseKey,
    pub(crate) own: String,
}

impl Client {
    /// Releases join `releases`, to share a `release_many.lua` call.
    pub(crate) async fn release(
        &self,
        releases: &BatchedCalls<ReleaseRequest, bool>,
        fence: &Fence,
    ) -> Result<bool, LeaseError> {
        let key = &fence.key;
        let request = ReleaseRequest {
            key: key.clone(),
            own: fence_record(fence),
        };
        let limit = self.config.call_timeout;
        with_timeout(Op::Release, key, limit, releases.call(key, request)).await
    }

    /// One script call for a batch of releases, or for one alone
    /// (`release.lua`): one answer each, in order.
    pub(crate) async fn release_batch(
        &self,
        batch: Vec<ReleaseRequest>,
    ) -> Vec<Result<bool, LeaseError>> {
        let Some(first) = batch.first() else {
            return Vec::new();
        };
        let keys: Vec<String> = batch.iter().map(|r| self.record_key(&r.key)).collect();
        if let [one] = batch.as_slice() {
            let args: [&[u8]; 3] = [
                one.own.as_bytes(),
                self.channel.as_bytes(),
                one.key.as_str().as_bytes(),
            ];
            let released = self
                .run::<i64>(Op::Release, &one.key, &self.scripts.release, &keys, &args)
                .await;
            return vec![released.map(|released| released == 1)];
        }
        let mut args: Vec<&[u8]> = Vec::with_capacity(1 + 2 * batch.len());
        args.push(self.channel.as_bytes());
        for request in &batch {
            args.extend([request.own.as_bytes(), request.key.as_str().as_bytes()]);
        }
        let replies = self
            .run::<Vec<i64>>(
                Op::Release,
                &first.key,
                &self.scripts.release_many,
                &keys,
                &args,
            )
            .await;
        answer_each(
            Op::Release,
            &batch,
            |r| &r.key,
            replies,
            |_, released| Ok(released == 1),
        )
    }
}
