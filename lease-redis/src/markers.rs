//! Markers (TTL-less flags set once) and guarded writes (a value written
//! only while the fence's grant is live): `marker_put.lua`,
//! `marker_delete.lua`, `guarded_write.lua` and `read_value.lua`.

use lease_core::{Fence, LeaseError, LeaseKey, Op};

use crate::client::Client;
use crate::reply::{Answer, fence_args};

impl Client {
    pub(crate) async fn put_marker(&self, key: &LeaseKey, value: &str) -> Result<(), LeaseError> {
        self.capabilities().check_value(key, value.len())?;
        let reply = self
            .script(
                Op::PutMarker,
                key,
                &self.scripts.marker_put,
                &[self.marker_key(key)],
                &[value.as_bytes()],
            )
            .await?;
        match reply.decode(Op::PutMarker, key)? {
            Answer::Set => Ok(()),
            other => Err(other.unexpected(Op::PutMarker, key)),
        }
    }

    pub(crate) async fn delete_marker(
        &self,
        key: &LeaseKey,
        value: &str,
    ) -> Result<bool, LeaseError> {
        let reply = self
            .script(
                Op::DeleteMarker,
                key,
                &self.scripts.marker_delete,
                &[self.marker_key(key)],
                &[value.as_bytes()],
            )
            .await?;
        match reply.decode(Op::DeleteMarker, key)? {
            Answer::Deleted => Ok(true),
            Answer::Absent => Ok(false),
            other => Err(other.unexpected(Op::DeleteMarker, key)),
        }
    }

    pub(crate) async fn get_marker(&self, key: &LeaseKey) -> Result<Option<String>, LeaseError> {
        match self
            .read_value(Op::GetMarker, key, self.marker_key(key))
            .await?
        {
            None => Ok(None),
            Some(bytes) => lease_core::marker_text(key, bytes).map(Some),
        }
    }

    pub(crate) async fn guarded_write(
        &self,
        fence: &Fence,
        target: &LeaseKey,
        value: &[u8],
    ) -> Result<(), LeaseError> {
        self.capabilities().check_value(target, value.len())?;
        let key = &fence.key;
        let [id, incarnation, token] = fence_args(fence);
        let keys = [self.record_key(key), self.guarded_key(target)];
        let reply = self
            .script(
                Op::GuardedWrite,
                key,
                &self.scripts.guarded_write,
                &keys,
                &[&id, &incarnation, &token, value],
            )
            .await?;
        match reply.decode(Op::GuardedWrite, key)? {
            Answer::Written => Ok(()),
            // The target's value, not the lease record, is corrupt.
            corrupt @ Answer::Corrupt(_) => Err(corrupt.unexpected(Op::GuardedWrite, target)),
            other => Err(LeaseError::lost(
                fence,
                other.current(Op::GuardedWrite, key)?,
            )),
        }
    }

    pub(crate) async fn read_guarded(
        &self,
        target: &LeaseKey,
    ) -> Result<Option<Vec<u8>>, LeaseError> {
        self.read_value(Op::ReadGuarded, target, self.guarded_key(target))
            .await
    }

    async fn read_value(
        &self,
        op: Op,
        key: &LeaseKey,
        redis_key: String,
    ) -> Result<Option<Vec<u8>>, LeaseError> {
        let reply = self
            .script(op, key, &self.scripts.read_value, &[redis_key], &[])
            .await?;
        match reply.decode(op, key)? {
            Answer::Absent => Ok(None),
            Answer::Value(bytes) => Ok(Some(bytes)),
            other => Err(other.unexpected(op, key)),
        }
    }
}
