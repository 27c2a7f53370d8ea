//! The store: the trait, each method delegating to the file of its
//! operation; the batchers that let concurrent claims and releases share
//! transactions.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lease_core::{
    BatchStats, BatchedCalls, Capabilities, Claim, Cursor, Fence, Grant, Holder, LeaseError,
    LeaseKey, LeaseRecord, LeaseStore, Listed, Op, Page,
};

use crate::EtcdConfig;
use crate::client::{Client, MAX_TXN_OPS};
use crate::config::BACKEND;
use crate::create::CreateRequest;
use crate::record::Found;
use crate::release::ReleaseRequest;

/// Claims (or releases) one transaction carries at most: etcd's default
/// limit of operations per transaction.
pub const CALL_BATCH: usize = MAX_TXN_OPS;

/// Claim (or release) transactions under way at once, per store; calls
/// made beyond that wait for one to end and go out together.
pub const CALLS_IN_FLIGHT: usize = 16;

/// A [`LeaseStore`] on etcd. Clones share one connection and one pool of
/// idle etcd leases.
#[derive(Clone)]
pub struct EtcdStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: Client,
    /// Concurrent claims' first rounds, coalesced into transactions.
    claims: BatchedCalls<CreateRequest, Result<Grant, Found>>,
    /// Concurrent releases of grants this store made, coalesced likewise.
    releases: BatchedCalls<ReleaseRequest, bool>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("config", &self.inner.client.config)
            .finish()
    }
}

/// Counts of a store's etcd resources, for tests and monitoring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseCounts {
    /// Keep-alive streams open right now: at most one per store, closed
    /// after a second with nothing to carry.
    pub keep_alive_streams: usize,
    /// Keep-alives sent and not yet answered.
    pub keep_alives_in_flight: usize,
    /// Idle etcd leases in the pool.
    pub idle_leases: usize,
    /// etcd leases attached to grants this store made and has not seen end.
    pub leases_in_use: usize,
    /// etcd leases granted by this store so far.
    pub leases_granted: usize,
    /// etcd leases revoked by this store so far.
    pub leases_revoked: usize,
    /// Keep-alives sent by this store so far (renewals and pool refreshes).
    pub keep_alives: usize,
}

impl EtcdStore {
    /// Connects to the cluster `config` names.
    ///
    /// # Errors
    /// [`LeaseError::InvalidConfig`] for bad settings; [`LeaseError::Connect`]
    /// when no endpoint answers within the connect timeout or the
    /// credentials are refused.
    pub async fn connect(config: EtcdConfig) -> Result<Self, LeaseError> {
        let client = Client::open(config).await?;
        Ok(Self {
            inner: Arc::new_cyclic(|inner| Inner {
                client,
                claims: BatchedCalls::new(
                    inner,
                    (BACKEND, Op::Claim),
                    (CALL_BATCH, CALLS_IN_FLIGHT),
                    |request| &request.key,
                    |inner: Arc<Inner>, batch| {
                        Box::pin(async move { inner.client.create_batch(batch).await })
                    },
                ),
                releases: BatchedCalls::new(
                    inner,
                    (BACKEND, Op::Release),
                    (CALL_BATCH, CALLS_IN_FLIGHT),
                    |request| &request.key,
                    |inner: Arc<Inner>, batch| {
                        Box::pin(async move { inner.client.release_batch(batch).await })
                    },
                ),
            }),
        })
    }

    /// How many keep-alive streams, idle and attached etcd leases this
    /// store has now, and how many leases it granted and revoked.
    pub fn lease_counts(&self) -> LeaseCounts {
        let leases = &self.inner.client.leases;
        let (granted, revoked, keep_alives) = leases.totals();
        LeaseCounts {
            keep_alive_streams: leases.streams(),
            keep_alives_in_flight: leases.keep_alives_in_flight(),
            idle_leases: leases.idle_count(),
            leases_in_use: leases.in_use_count(),
            leases_granted: granted,
            leases_revoked: revoked,
            keep_alives,
        }
    }

    /// Claims and releases sent so far through shared transactions, and
    /// the transactions that carried them (see the crate docs).
    pub fn batch_stats(&self) -> (BatchStats, BatchStats) {
        (self.inner.claims.stats(), self.inner.releases.stats())
    }

    pub(crate) fn client(&self) -> &Client {
        &self.inner.client
    }
}

#[async_trait]
impl LeaseStore for EtcdStore {
    fn capabilities(&self) -> Capabilities {
        self.client().capabilities()
    }

    async fn claim(
        &self,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError> {
        let claims = &self.inner.claims;
        let claimed = self
            .client()
            .claim(claims, Op::Claim, key, holder, ttl, None);
        claimed.await
    }

    async fn reclaim(
        &self,
        observed: &Fence,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError> {
        let (claims, key) = (&self.inner.claims, &observed.key);
        let claimed = self
            .client()
            .claim(claims, Op::Reclaim, key, holder, ttl, Some(observed));
        claimed.await
    }

    async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Grant, LeaseError> {
        self.client().renew(fence, ttl).await
    }

    async fn renew_many(&self, renewals: &[(Fence, Duration)]) -> Vec<Result<Grant, LeaseError>> {
        self.client().renew_many(renewals).await
    }

    async fn release(&self, fence: &Fence) -> Result<bool, LeaseError> {
        self.client().release(&self.inner.releases, fence).await
    }

    async fn inspect(&self, key: &LeaseKey) -> Result<Option<LeaseRecord>, LeaseError> {
        self.client().inspect(key).await
    }

    async fn check(&self, fence: &Fence) -> Result<bool, LeaseError> {
        self.client().check(fence).await
    }

    async fn put_marker(&self, key: &LeaseKey, value: &str) -> Result<(), LeaseError> {
        self.client().put_marker(key, value).await
    }

    async fn delete_marker(&self, key: &LeaseKey, value: &str) -> Result<bool, LeaseError> {
        self.client().delete_marker(key, value).await
    }

    async fn list(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Listed>, LeaseError> {
        self.client().list_page(prefix, from, limit).await
    }

    async fn list_markers(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<(LeaseKey, String)>, LeaseError> {
        self.client().list_markers_page(prefix, from, limit).await
    }

    async fn get_marker(&self, key: &LeaseKey) -> Result<Option<String>, LeaseError> {
        self.client().get_marker(key).await
    }

    async fn guarded_write(
        &self,
        fence: &Fence,
        target: &LeaseKey,
        value: &[u8],
    ) -> Result<(), LeaseError> {
        self.client().guarded_write(fence, target, value).await
    }

    async fn read_guarded(&self, target: &LeaseKey) -> Result<Option<Vec<u8>>, LeaseError> {
        self.client().read_guarded(target).await
    }

    async fn wait_free(&self, key: &LeaseKey, timeout: Duration) -> Result<bool, LeaseError> {
        self.client().wait_until_free(key, timeout).await
    }
}
