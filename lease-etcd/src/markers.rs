//! Markers (TTL-less flags set once) and guarded writes (a value written
//! only while the fence's grant is live), each one transaction.

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use lease_core::{Fence, LeaseError, LeaseKey, Op};

use crate::client::Client;
use crate::config::BACKEND;
use crate::record::{self, Found, holds, revision_of};

impl Client {
    pub(crate) async fn put_marker(&self, key: &LeaseKey, value: &str) -> Result<(), LeaseError> {
        self.capabilities().check_value(key, value.len())?;
        let etcd_key = self.marker_key(key);
        let txn = Txn::new()
            .when([Compare::create_revision(
                etcd_key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(etcd_key.as_str(), value, None)])
            .or_else([TxnOp::get(etcd_key.as_str(), None)]);
        let response = self.txn(Op::PutMarker, key, txn).await?;
        if response.succeeded() {
            return Ok(());
        }
        match record::got(&response) {
            Some(kv) if kv.value() == value.as_bytes() => Ok(()),
            Some(kv) => Err(LeaseError::Conflict {
                key: key.clone(),
                existing: String::from_utf8_lossy(kv.value()).into_owned(),
            }),
            // Deleted between the compare and the read.
            None => Err(LeaseError::backend(
                BACKEND,
                Op::PutMarker,
                key,
                false,
                "the marker changed during the put; try again",
            )),
        }
    }

    pub(crate) async fn delete_marker(
        &self,
        key: &LeaseKey,
        value: &str,
    ) -> Result<bool, LeaseError> {
        let etcd_key = self.marker_key(key);
        let txn = Txn::new()
            .when([Compare::value(etcd_key.as_str(), CompareOp::Equal, value)])
            .and_then([TxnOp::delete(etcd_key.as_str(), None)])
            .or_else([TxnOp::get(etcd_key.as_str(), None)]);
        let response = self.txn(Op::DeleteMarker, key, txn).await?;
        if response.succeeded() {
            return Ok(true);
        }
        match record::got(&response) {
            None => Ok(false),
            Some(kv) => Err(LeaseError::Conflict {
                key: key.clone(),
                existing: String::from_utf8_lossy(kv.value()).into_owned(),
            }),
        }
    }

    pub(crate) async fn get_marker(&self, key: &LeaseKey) -> Result<Option<String>, LeaseError> {
        let (kv, _) = self.get(Op::GetMarker, key, &self.marker_key(key)).await?;
        kv.map(|kv| lease_core::marker_text(key, kv.value().to_vec()))
            .transpose()
    }

    pub(crate) async fn guarded_write(
        &self,
        fence: &Fence,
        target: &LeaseKey,
        value: &[u8],
    ) -> Result<(), LeaseError> {
        self.capabilities().check_value(target, value.len())?;
        let key = &fence.key;
        let etcd_key = self.record_key(key);
        let Some(revision) = revision_of(fence.token) else {
            return Err(self.lost(fence, &self.read(Op::GuardedWrite, key).await?));
        };
        let txn = Txn::new()
            .when(holds(&etcd_key, revision, &fence.holder))
            .and_then([TxnOp::put(self.guarded_key(target), value, None)])
            .or_else([TxnOp::get(etcd_key.as_str(), None)]);
        let response = self.txn(Op::GuardedWrite, key, txn).await?;
        if response.succeeded() {
            return Ok(());
        }
        Err(self.lost(fence, &Found::from_response(&response)))
    }

    pub(crate) async fn read_guarded(
        &self,
        target: &LeaseKey,
    ) -> Result<Option<Vec<u8>>, LeaseError> {
        let (kv, _) = self
            .get(Op::ReadGuarded, target, &self.guarded_key(target))
            .await?;
        Ok(kv.map(|kv| kv.value().to_vec()))
    }
}
