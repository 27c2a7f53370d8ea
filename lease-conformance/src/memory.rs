//! The in-memory reference store as a factory, with every hook it can offer.

use std::sync::Arc;

use std::time::Duration;

use async_trait::async_trait;
use lease_core::{BoxError, DynLeaseStore, LeaseKey, MemoryStore};

use crate::{Factory, Hook, Hooks, Subject};

/// The in-memory reference store as a factory: a new store per case, with
/// the corrupt-record hook.
#[derive(Clone, Debug, Default)]
pub struct MemoryFactory;

struct MemoryHooks {
    store: MemoryStore,
    wire: crate::wire::Wire,
}

#[async_trait]
impl Hooks for MemoryHooks {
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
            .then(|| "one process's memory has no server to restart".into())
    }

    async fn plant_corrupt_record(&self, key: &LeaseKey) -> Result<(), BoxError> {
        self.store.plant_corrupt_record(key, "\u{0}not a record");
        Ok(())
    }

    async fn second_client(&self) -> Result<DynLeaseStore, BoxError> {
        // In one process, a second handle on the same store.
        Ok(Arc::new(self.store.clone()))
    }

    async fn stored_records(&self) -> Result<usize, BoxError> {
        Ok(self.store.records_kept())
    }

    /// The store served on loopback ([`crate::wire`]): the fault cases
    /// reach it over TCP, through their proxy.
    async fn server_address(&self) -> Result<String, BoxError> {
        self.wire.server_address().await
    }

    async fn store_through(
        &self,
        address: &str,
        call_timeout: Duration,
    ) -> Result<DynLeaseStore, BoxError> {
        Ok(self.wire.store_through(address, call_timeout))
    }
}

#[async_trait]
impl Factory for MemoryFactory {
    async fn open(&self) -> Result<Subject, BoxError> {
        let store = MemoryStore::new();
        let hooks = MemoryHooks {
            wire: crate::wire::Wire::new(Arc::new(store.clone())),
            store: store.clone(),
        };
        Ok(Subject::new(Arc::new(store)).with_hooks(Arc::new(hooks)))
    }
}
