//! The double as the suite opens it: a factory and the hooks it offers.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lease_conformance::wire::Wire;
use lease_conformance::{Factory, Hook, Hooks, Subject};
use lease_core::{BoxError, DynLeaseStore, LeaseKey};
use tokio::time::Instant;

use crate::Flaw;
use crate::client::FlawedClient;
use crate::flawed::Flawed;

pub(crate) struct FlawedFactory(pub(crate) Option<Flaw>);

pub(crate) struct FlawedHooks(pub(crate) Arc<Flawed>, pub(crate) Wire);

#[async_trait]
impl Hooks for FlawedHooks {
    fn offered(&self) -> &[Hook] {
        &[
            Hook::CorruptRecord,
            Hook::SecondClient,
            Hook::StoredRecords,
            Hook::Network,
        ]
    }

    async fn server_address(&self) -> Result<String, BoxError> {
        self.1.server_address().await
    }

    async fn store_through(
        &self,
        address: &str,
        call_timeout: Duration,
    ) -> Result<DynLeaseStore, BoxError> {
        let client = self.1.store_through(address, call_timeout);
        Ok(match self.0.flaw {
            Some(
                flaw @ (Flaw::TimeoutsSayKnown
                | Flaw::KeepsAliveAfterCutOff
                | Flaw::BatchCutSaysLost
                | Flaw::RetriedRenewalCountedTwice),
            ) => Arc::new(FlawedClient {
                flaw,
                inner: client,
                told: Mutex::default(),
            }),
            _ => client,
        })
    }

    async fn plant_corrupt_record(&self, key: &LeaseKey) -> Result<(), BoxError> {
        self.0
            .state
            .lock()
            .unwrap()
            .leases
            .insert(self.0.filed(key), Err("garbage".into()));
        Ok(())
    }

    async fn second_client(&self) -> Result<lease_core::DynLeaseStore, BoxError> {
        Ok(self.0.clone())
    }

    async fn stored_records(&self) -> Result<usize, BoxError> {
        let state = self.0.state.lock().unwrap();
        if self.0.has(Flaw::RecordsKeptForever) {
            return Ok(state.leases.len() + state.last.len());
        }
        // Ended records count as gone: the double looks them up by expiry.
        let now = Instant::now();
        let live = state
            .leases
            .values()
            .filter(|r| r.as_ref().is_ok_and(|r| r.expires_at > now))
            .count();
        Ok(live)
    }
}

#[async_trait]
impl Factory for FlawedFactory {
    async fn open(&self) -> Result<Subject, BoxError> {
        let face = |extends| Flawed {
            flaw: self.0,
            state: Arc::default(),
            extends,
            misrouted: Mutex::default(),
            renewals: AtomicU64::new(0),
            inspected: Mutex::default(),
            releasing: AtomicU64::new(0),
        };
        let store = Arc::new(face(false));
        let wire = match self.0 {
            Some(Flaw::RenewalsUnordered) => Wire::unordered(store.clone()),
            Some(Flaw::RetriedRenewalCountedTwice) => Wire::new(Arc::new(Flawed {
                state: store.state.clone(),
                ..face(true)
            })),
            _ => Wire::new(store.clone()),
        };
        Ok(Subject::new(store.clone()).with_hooks(Arc::new(FlawedHooks(store, wire))))
    }
}
