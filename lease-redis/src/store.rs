//! The store: the trait, each method delegating to the file of its
//! operation; the batchers that let concurrent claims and releases share
//! script calls.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lease_core::{
    BatchStats, BatchedCalls, Capabilities, Claim, Cursor, Fence, Grant, Holder, LeaseError,
    LeaseKey, LeaseRecord, LeaseStore, Listed, Op, Page,
};

use crate::RedisConfig;
use crate::claim::ClaimRequest;
use crate::client::Client;
use crate::config::BACKEND;
use crate::notify::Notifier;
use crate::open::open;
use crate::release::ReleaseRequest;
use crate::reply::Reply;

/// Claims (or releases) one script call carries at most: 128 claims hold
/// the server for well under a millisecond.
pub const CALL_BATCH: usize = 128;

/// Claim (or release) script calls under way at once, per store; calls
/// made beyond that wait for one to end and go out together.
pub const CALLS_IN_FLIGHT: usize = 16;

/// A [`LeaseStore`] on Redis. Clones share one connection.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: Client,
    notifier: Notifier,
    /// Concurrent claims coalesced into claim script calls.
    claims: BatchedCalls<ClaimRequest, Reply>,
    /// Concurrent releases coalesced into release script calls.
    releases: BatchedCalls<ReleaseRequest, bool>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.inner.client.config;
        f.debug_struct("RedisStore")
            .field("url", &config.redacted_url())
            .field("namespace", &config.namespace)
            .finish()
    }
}

impl RedisStore {
    /// Connects to the server `config` names.
    ///
    /// # Errors
    /// [`LeaseError::InvalidConfig`] for a malformed URL or namespace;
    /// [`LeaseError::Connect`] when the server cannot be reached (or refuses
    /// the credentials) within the connect timeout.
    pub async fn connect(config: RedisConfig) -> Result<Self, LeaseError> {
        let (client, subscribe_to) = open(config).await?;
        let notifier = Notifier::new(
            subscribe_to,
            client.channel.clone(),
            client.config.connect_timeout,
        );
        Ok(Self {
            inner: Arc::new_cyclic(|inner| Inner {
                client,
                notifier,
                claims: BatchedCalls::new(
                    inner,
                    (BACKEND, Op::Claim),
                    (CALL_BATCH, CALLS_IN_FLIGHT),
                    |request| &request.key,
                    |inner: Arc<Inner>, batch| {
                        Box::pin(async move { inner.client.claim_batch(batch).await })
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

    /// The pub/sub channel on which releases are announced.
    pub fn channel(&self) -> &str {
        &self.inner.client.channel
    }

    /// Claims and releases sent so far, and the script calls that carried
    /// them: concurrent calls share one (see the crate docs).
    pub fn batch_stats(&self) -> (BatchStats, BatchStats) {
        (self.inner.claims.stats(), self.inner.releases.stats())
    }

    pub(crate) fn client(&self) -> &Client {
        &self.inner.client
    }
}

#[async_trait]
impl LeaseStore for RedisStore {
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
        self.client().claim(claims, key, holder, ttl, None).await
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
            .claim(claims, key, holder, ttl, Some(observed));
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
        let notifier = &self.inner.notifier;
        self.client().wait_free(notifier, key, timeout).await
    }
}
