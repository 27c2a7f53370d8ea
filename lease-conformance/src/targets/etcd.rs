//! The suite against an etcd cluster given by endpoints.

use std::sync::Arc;

use async_trait::async_trait;
use etcd_client::{Client, DeleteOptions};
use lease_core::{BoxError, DynLeaseStore, LeaseKey};
use lease_etcd::{EtcdConfig, EtcdStore};

use crate::{Factory, Hook, Hooks, Subject};

/// Opens an [`EtcdStore`] on `endpoints` with a fresh key prefix per case,
/// offers the corrupt-record hook, and deletes the prefix afterwards.
#[derive(Clone, Debug)]
pub struct EtcdTarget {
    endpoints: Vec<String>,
}

impl EtcdTarget {
    /// A target for the cluster at `endpoints` (`host:port`).
    pub fn new(endpoints: Vec<String>) -> Self {
        Self { endpoints }
    }
}

struct EtcdHooks {
    store: EtcdStore,
    client: Client,
    config: EtcdConfig,
}

#[async_trait]
impl Hooks for EtcdHooks {
    fn offered(&self) -> &[Hook] {
        // A server someone else runs is not restarted by the suite.
        &[Hook::CorruptRecord, Hook::SecondClient, Hook::StoredRecords]
    }

    async fn plant_corrupt_record(&self, key: &LeaseKey) -> Result<(), BoxError> {
        let mut client = self.client.clone();
        let planted = client
            .put(self.store.record_key(key), "\u{0}not a lease record", None)
            .await;
        planted.map(drop).map_err(Into::into)
    }

    async fn second_client(&self) -> Result<DynLeaseStore, BoxError> {
        let store = EtcdStore::connect(self.config.clone()).await;
        store
            .map(|s| Arc::new(s) as DynLeaseStore)
            .map_err(Into::into)
    }

    async fn stored_records(&self) -> Result<usize, BoxError> {
        let mut client = self.client.clone();
        let options = etcd_client::GetOptions::new()
            .with_prefix()
            .with_count_only();
        let counted = client.get(self.store.key_prefix(), Some(options)).await;
        counted.map(|r| r.count() as usize).map_err(Into::into)
    }

    async fn finish(&self) {
        let mut client = self.client.clone();
        let prefix = self.store.key_prefix();
        if let Err(why) = client
            .delete(prefix.as_str(), Some(DeleteOptions::new().with_prefix()))
            .await
        {
            eprintln!("lease-conformance: could not clean up {prefix}: {why}");
        }
    }
}

#[async_trait]
impl Factory for EtcdTarget {
    async fn open(&self) -> Result<Subject, BoxError> {
        let config = EtcdConfig::new(self.endpoints.clone()).prefix(super::fresh_namespace());
        let store = EtcdStore::connect(config.clone()).await?;
        let client = Client::connect(&self.endpoints, None).await?;
        let hooks = EtcdHooks {
            store: store.clone(),
            client,
            config,
        };
        Ok(Subject::new(Arc::new(store)).with_hooks(Arc::new(hooks)))
    }
}
