//! Test support: a conformance [`Factory`] for any etcd cluster an
//! [`EtcdConfig`] reaches, each case under a fresh prefix, with the hooks
//! that need raw access to the prefix (a corrupt record, the records
//! stored, a second client). Behind the `testing` feature.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, DeleteOptions};
use lease_conformance::{Factory, Hook, Hooks, Subject, fresh_namespace};
use lease_core::{BoxError, DynLeaseStore, LeaseKey};

use crate::{EtcdConfig, EtcdStore};

/// Opens an [`EtcdStore`] with `config` under a fresh key prefix per case,
/// offers the corrupt-record, second-client and stored-records hooks, and
/// deletes the prefix afterwards.
#[derive(Clone, Debug)]
pub struct EtcdFactory {
    config: EtcdConfig,
}

impl EtcdFactory {
    /// Cases on the cluster `config` reaches; its prefix is replaced by a
    /// fresh one per case.
    pub fn new(config: EtcdConfig) -> Self {
        Self { config }
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
        &[
            Hook::CorruptRecord,
            Hook::SecondClient,
            Hook::StoredRecords,
            Hook::Network,
        ]
    }

    fn why_not(&self, hook: Hook) -> Option<String> {
        (hook == Hook::RestartServer)
            .then(|| "the suite does not restart a server it did not start".into())
    }

    /// The first endpoint: a member the client under faults reaches only
    /// through the proxy (the others are not given to it).
    async fn server_address(&self) -> Result<String, BoxError> {
        let first = self.config.endpoints.first().ok_or("no endpoint")?;
        let address = first
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        Ok(address.trim_end_matches('/').to_owned())
    }

    async fn store_through(
        &self,
        address: &str,
        call_timeout: Duration,
    ) -> Result<DynLeaseStore, BoxError> {
        let mut config = self.config.clone().call_timeout(call_timeout);
        config.endpoints = vec![address.to_owned()];
        let store = EtcdStore::connect(config).await?;
        Ok(Arc::new(store))
    }

    async fn plant_corrupt_record(&self, key: &LeaseKey) -> Result<(), BoxError> {
        let mut client = self.client.clone();
        let planted = client
            .put(
                self.store.client().record_key(key),
                "\u{0}not a lease record",
                None,
            )
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
        let counted = client
            .get(self.store.client().key_prefix(), Some(options))
            .await;
        counted.map(|r| r.count() as usize).map_err(Into::into)
    }

    async fn finish(&self) {
        let mut client = self.client.clone();
        let prefix = self.store.client().key_prefix();
        if let Err(why) = client
            .delete(prefix.as_str(), Some(DeleteOptions::new().with_prefix()))
            .await
        {
            eprintln!("lease-conformance: could not clean up {prefix}: {why}");
        }
    }
}

#[async_trait]
impl Factory for EtcdFactory {
    async fn open(&self) -> Result<Subject, BoxError> {
        let config = self.config.clone().prefix(fresh_namespace());
        let store = EtcdStore::connect(config.clone()).await?;
        let client = store.client().client.clone();
        let hooks = EtcdHooks {
            store: store.clone(),
            client,
            config,
        };
        Ok(Subject::new(Arc::new(store)).with_hooks(Arc::new(hooks)))
    }
}

/// The etcd key holding `key`'s grant in `store`, for tests that look at
/// etcd directly.
pub fn record_key(store: &EtcdStore, key: &LeaseKey) -> String {
    store.client().record_key(key)
}
