//! Running the conformance suite against a backend of your own.
//!
//! The backend here is a store wrapped in a metrics layer that counts the
//! calls it forwards — the kind of wrapper a team adds around its store and
//! must not break. The factory gives every case a fresh store, offers the
//! corrupt-record hook through the inner store and fault mode through
//! `lease_conformance::wire` (the store served on loopback, so the fault
//! cases can put their proxy in front of it), and the macro stamps one
//! test per case: `cargo test -p lease-conformance --example custom_backend`
//! (or `cargo run`, which takes the same arguments: `-- --list`, a filter).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use lease_conformance::wire::Wire;
use lease_conformance::{Factory, Hook, Hooks, Subject};
use lease_core::{
    BoxError, Capabilities, Claim, Cursor, Fence, Grant, Holder, LeaseError, LeaseKey, LeaseRecord,
    LeaseStore, Listed, MemoryStore, Page,
};

/// Forwards every call to `inner`, counting them.
#[derive(Debug, Default)]
struct Metered {
    inner: MemoryStore,
    calls: AtomicU64,
}

impl Metered {
    fn count(&self) -> &MemoryStore {
        self.calls.fetch_add(1, Ordering::Relaxed);
        &self.inner
    }
}

#[async_trait]
impl LeaseStore for Metered {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn claim(
        &self,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError> {
        self.count().claim(key, holder, ttl).await
    }
    async fn reclaim(
        &self,
        observed: &Fence,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError> {
        self.count().reclaim(observed, holder, ttl).await
    }
    async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Grant, LeaseError> {
        self.count().renew(fence, ttl).await
    }
    async fn release(&self, fence: &Fence) -> Result<bool, LeaseError> {
        self.count().release(fence).await
    }
    async fn inspect(&self, key: &LeaseKey) -> Result<Option<LeaseRecord>, LeaseError> {
        self.count().inspect(key).await
    }
    async fn put_marker(&self, key: &LeaseKey, value: &str) -> Result<(), LeaseError> {
        self.count().put_marker(key, value).await
    }
    async fn delete_marker(&self, key: &LeaseKey, value: &str) -> Result<bool, LeaseError> {
        self.count().delete_marker(key, value).await
    }
    async fn get_marker(&self, key: &LeaseKey) -> Result<Option<String>, LeaseError> {
        self.count().get_marker(key).await
    }
    async fn list(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Listed>, LeaseError> {
        self.count().list(prefix, from, limit).await
    }
    async fn list_markers(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<(LeaseKey, String)>, LeaseError> {
        self.count().list_markers(prefix, from, limit).await
    }
    async fn guarded_write(
        &self,
        fence: &Fence,
        target: &LeaseKey,
        value: &[u8],
    ) -> Result<(), LeaseError> {
        self.count().guarded_write(fence, target, value).await
    }
    async fn read_guarded(&self, target: &LeaseKey) -> Result<Option<Vec<u8>>, LeaseError> {
        self.count().read_guarded(target).await
    }
    async fn wait_free(&self, key: &LeaseKey, timeout: Duration) -> Result<bool, LeaseError> {
        self.count().wait_free(key, timeout).await
    }
}

/// Plants corrupt records through the store under the metrics layer.
/// The hooks: raw access to the inner store, and the store served on
/// loopback for the fault cases. A networked backend answers
/// `server_address` with where its server listens and `store_through`
/// with a client connecting to the given address instead.
struct MeteredHooks(Arc<Metered>, Wire);

#[async_trait]
impl Hooks for MeteredHooks {
    /// What this factory offers; the cases needing a hook not listed (here
    /// a server restart: an in-process store has none) are reported not
    /// run, by name.
    fn offered(&self) -> &[Hook] {
        &[
            Hook::CorruptRecord,
            Hook::SecondClient,
            Hook::StoredRecords,
            Hook::Network,
        ]
    }

    /// Where the fault cases put their proxy in front of.
    async fn server_address(&self) -> Result<String, BoxError> {
        self.1.server_address().await
    }

    /// A client of the same namespace through `address` (the proxy).
    async fn store_through(
        &self,
        address: &str,
        call_timeout: Duration,
    ) -> Result<lease_core::DynLeaseStore, BoxError> {
        Ok(self.1.store_through(address, call_timeout))
    }

    async fn plant_corrupt_record(&self, key: &LeaseKey) -> Result<(), BoxError> {
        self.0.inner.plant_corrupt_record(key, "garbage");
        Ok(())
    }

    async fn second_client(&self) -> Result<lease_core::DynLeaseStore, BoxError> {
        // Another metered client of the same underlying store.
        let inner = self.0.inner.clone();
        Ok(Arc::new(Metered {
            inner,
            calls: AtomicU64::new(0),
        }))
    }

    async fn stored_records(&self) -> Result<usize, BoxError> {
        Ok(self.0.inner.records_kept())
    }
}

struct MeteredFactory;

#[async_trait]
impl Factory for MeteredFactory {
    async fn open(&self) -> Result<Subject, BoxError> {
        let store = Arc::new(Metered::default());
        let wire = Wire::new(store.clone());
        Ok(Subject::new(store.clone()).with_hooks(Arc::new(MeteredHooks(store, wire))))
    }
}

// One test per case, with libtest's arguments: `cargo test --example
// custom_backend` runs them, and so does `cargo run --example custom_backend`.
lease_conformance::conformance_main!(MeteredFactory);
