//! The store: connection, calls with time limits, and the trait.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, KeyValue, KvClient, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};
use lease_core::{
    BatchStats, BatchedCalls, Capabilities, Claim, Cursor, Fence, Grant, Holder, LeaseError,
    LeaseKey, LeaseRecord, LeaseStore, Listed, Op, Page, Wakeup, with_timeout,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::EtcdConfig;
use crate::claim::{CreateRequest, Created};
use crate::leases::{LeaseFailure, Leases, MARGIN};
use crate::record::{self, Found, Held, holds, revision_of, token_of};

pub(crate) const BACKEND: &str = "etcd";
/// etcd's default limit on operations in one transaction (`--max-txn-ops`).
const MAX_TXN_OPS: usize = 128;

/// A [`LeaseStore`] on etcd. Clones share one connection and one pool of
/// idle etcd leases.
#[derive(Clone)]
pub struct EtcdStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: EtcdConfig,
    pub client: Client,
    pub kv: KvClient,
    pub leases: Leases,
    stop: CancellationToken,
    /// Concurrent claims' first rounds, coalesced into transactions.
    claims: BatchedCalls<CreateRequest, Result<Grant, Found>>,
    /// Concurrent releases of grants this store made, coalesced likewise.
    releases: BatchedCalls<ReleaseRequest, bool>,
}

/// Claims (or releases) one transaction carries at most: etcd's default
/// limit of operations per transaction.
pub const CALL_BATCH: usize = MAX_TXN_OPS;

/// Claim (or release) transactions under way at once, per store; calls
/// made beyond that wait for one to end and go out together.
pub const CALLS_IN_FLIGHT: usize = 16;

/// A release of a grant this store made: it is the grant's own lease that
/// the transaction compares.
pub(crate) struct ReleaseRequest {
    key: LeaseKey,
    etcd_key: String,
    lease: i64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("config", &self.inner.config)
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
        config.validate()?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.call_timeout)
            .with_keep_alive(Duration::from_secs(5), config.call_timeout);
        if let Some((user, password)) = &config.credentials {
            options = options.with_user(user.clone(), password.clone());
        }
        #[cfg(feature = "tls")]
        if let Some(pem) = &config.root_ca {
            let tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(pem));
            options = options.with_tls(tls);
        }
        let endpoint = config.endpoints.join(",");
        let connect_error = |source: lease_core::BoxError| LeaseError::Connect {
            backend: BACKEND,
            endpoint: endpoint.clone(),
            source,
        };
        let no_answer =
            || connect_error(format!("no answer within {:?}", config.connect_timeout).into());
        let mut client = tokio::time::timeout(
            config.connect_timeout,
            Client::connect(&config.endpoints, Some(options)),
        )
        .await
        .map_err(|_| no_answer())?
        .map_err(|e| connect_error(Box::new(e)))?;
        // The client connects lazily: ask something, so that a dead cluster
        // or a refused user shows here and not at the first claim.
        tokio::time::timeout(
            config.connect_timeout,
            client.get(config.prefix.as_bytes(), None),
        )
        .await
        .map_err(|_| no_answer())?
        .map_err(|e| connect_error(Box::new(e)))?;
        let stop = CancellationToken::new();
        Ok(Self {
            inner: Arc::new_cyclic(|inner| Inner {
                leases: Leases::new(client.lease_client(), config.call_timeout, stop.clone()),
                kv: client.kv_client(),
                client,
                config,
                stop,
                claims: BatchedCalls::new(
                    inner,
                    (BACKEND, Op::Claim),
                    (CALL_BATCH, CALLS_IN_FLIGHT),
                    |request| &request.key,
                    |inner, batch| {
                        Box::pin(async move { EtcdStore { inner }.create_batch(batch).await })
                    },
                ),
                releases: BatchedCalls::new(
                    inner,
                    (BACKEND, Op::Release),
                    (CALL_BATCH, CALLS_IN_FLIGHT),
                    |request| &request.key,
                    |inner, batch| {
                        Box::pin(async move { EtcdStore { inner }.release_batch(batch).await })
                    },
                ),
            }),
        })
    }

    /// The etcd key holding `key`'s grant.
    pub(crate) fn record_key(&self, key: &LeaseKey) -> String {
        format!("{}/lease/{key}", self.inner.config.prefix)
    }

    /// The etcd key holding the marker `key`.
    pub(crate) fn marker_key(&self, key: &LeaseKey) -> String {
        format!("{}/marker/{key}", self.inner.config.prefix)
    }

    /// The etcd key holding the guarded value `key`.
    pub(crate) fn guarded_key(&self, key: &LeaseKey) -> String {
        format!("{}/guarded/{key}", self.inner.config.prefix)
    }

    /// Every etcd key of this store starts with this.
    pub(crate) fn key_prefix(&self) -> String {
        format!("{}/", self.inner.config.prefix)
    }

    /// How many keep-alive streams, idle and attached etcd leases this
    /// store has now, and how many leases it granted and revoked.
    pub fn lease_counts(&self) -> LeaseCounts {
        let leases = &self.inner.leases;
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

    /// A claim's first round, in a transaction shared with the claims made
    /// beside it.
    pub(crate) async fn create_shared(&self, key: &LeaseKey, request: CreateRequest) -> Created {
        // Each RPC of the round has its time limit; waiting for a place in
        // a transaction lasts at most until one under way ends.
        self.inner.claims.call(key, request).await
    }

    /// One transaction of releases of distinct keys, each deleting its key
    /// if it still hangs on the grant's lease (one raft write for the
    /// batch); releases of a key already in the batch go after it, alone.
    async fn release_batch(&self, batch: Vec<ReleaseRequest>) -> Vec<Result<bool, LeaseError>> {
        let delete = |r: &ReleaseRequest| {
            Txn::new()
                .when([Compare::lease(
                    r.etcd_key.as_str(),
                    CompareOp::Equal,
                    r.lease,
                )])
                .and_then([TxnOp::delete(r.etcd_key.as_str(), None)])
        };
        let mut seen = std::collections::HashSet::new();
        let (together, after): (Vec<_>, Vec<_>) = batch
            .iter()
            .enumerate()
            .partition(|(_, r)| seen.insert(&r.etcd_key));
        let mut outcomes: Vec<Option<Result<bool, LeaseError>>> =
            batch.iter().map(|_| None).collect();
        let answer = match together.as_slice() {
            [(_, one)] => self
                .txn(Op::Release, &one.key, delete(one))
                .await
                .map(|response| vec![Some(response.succeeded())]),
            [(_, first), ..] => {
                let txn = Txn::new().and_then(
                    together
                        .iter()
                        .map(|(_, r)| TxnOp::txn(delete(r)))
                        .collect::<Vec<_>>(),
                );
                self.txn(Op::Release, &first.key, txn)
                    .await
                    .map(|response| {
                        response
                            .op_responses()
                            .into_iter()
                            .map(|r| match r {
                                TxnOpResponse::Txn(inner) => Some(inner.succeeded()),
                                _ => None,
                            })
                            .collect()
                    })
            }
            [] => Ok(Vec::new()),
        };
        match answer {
            Ok(answers) => {
                let mut answers = answers.into_iter();
                for (i, r) in &together {
                    outcomes[*i] = Some(answers.next().flatten().ok_or_else(|| {
                        LeaseError::backend(
                            BACKEND,
                            Op::Release,
                            &r.key,
                            true,
                            "the batch's reply lacks this release's answer",
                        )
                    }));
                }
            }
            Err(error) => {
                for (i, r) in &together {
                    outcomes[*i] = Some(Err(error.for_key(&r.key)));
                }
            }
        }
        for (i, r) in after {
            outcomes[i] = Some(
                self.txn(Op::Release, &r.key, delete(r))
                    .await
                    .map(|t| t.succeeded()),
            );
        }
        outcomes.into_iter().flatten().collect()
    }

    pub(crate) fn call_timeout(&self) -> Duration {
        self.inner.config.call_timeout
    }

    /// Runs `txn` under the call timeout, with etcd's own error.
    pub(crate) async fn txn_raw(
        &self,
        op: Op,
        key: &LeaseKey,
        txn: Txn,
    ) -> Result<Result<TxnResponse, etcd_client::Error>, LeaseError> {
        let mut kv = self.inner.kv.clone();
        with_timeout(op, key, self.call_timeout(), async move {
            Ok(kv.txn(txn).await)
        })
        .await
    }

    pub(crate) async fn txn(
        &self,
        op: Op,
        key: &LeaseKey,
        txn: Txn,
    ) -> Result<TxnResponse, LeaseError> {
        self.txn_raw(op, key, txn)
            .await?
            .map_err(|e| etcd_error(op, key, e))
    }

    pub(crate) async fn get(
        &self,
        op: Op,
        key: &LeaseKey,
        etcd_key: &str,
    ) -> Result<(Option<KeyValue>, i64), LeaseError> {
        let mut kv = self.inner.kv.clone();
        let response = with_timeout(op, key, self.call_timeout(), async move {
            kv.get(etcd_key, None)
                .await
                .map_err(|e| etcd_error(op, key, e))
        })
        .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        Ok((response.kvs().first().cloned(), revision))
    }

    /// What `key`'s record holds now.
    pub(crate) async fn read(&self, op: Op, key: &LeaseKey) -> Result<Found, LeaseError> {
        let (kv, _) = self.get(op, key, &self.record_key(key)).await?;
        Ok(Found::from_kv(kv.as_ref()))
    }

    /// Reads the records of up to [`MAX_TXN_OPS`] renewals in one
    /// read-only transaction (a linearizable read, no raft proposal): what
    /// it found for each.
    async fn read_many(
        &self,
        batch: &[(usize, &Fence, Duration, i64)],
    ) -> Vec<Result<Found, LeaseError>> {
        let Some((_, first, _, _)) = batch.first() else {
            return Vec::new();
        };
        let gets: Vec<TxnOp> = batch
            .iter()
            .map(|(_, fence, _, _)| TxnOp::get(self.record_key(&fence.key), None))
            .collect();
        match self
            .txn(Op::Renew, &first.key, Txn::new().and_then(gets))
            .await
        {
            Ok(response) => {
                let kvs: Vec<Option<KeyValue>> = response
                    .op_responses()
                    .into_iter()
                    .map(|r| match r {
                        TxnOpResponse::Get(get) => get.kvs().first().cloned(),
                        _ => None,
                    })
                    .collect();
                if kvs.len() != batch.len() {
                    return batch
                        .iter()
                        .map(|(_, fence, _, _)| {
                            let why = format!("{} answers to {} reads", kvs.len(), batch.len());
                            Err(LeaseError::backend(
                                BACKEND,
                                Op::Renew,
                                &fence.key,
                                false,
                                why,
                            ))
                        })
                        .collect();
                }
                kvs.iter()
                    .map(|kv| Ok(Found::from_kv(kv.as_ref())))
                    .collect()
            }
            Err(error) => batch
                .iter()
                .map(|(_, fence, _, _)| Err(error.for_key(&fence.key)))
                .collect(),
        }
    }

    /// `held` as a record, its time left an upper bound: the TTL granted.
    pub(crate) fn record_of(&self, key: &LeaseKey, held: &Held) -> LeaseRecord {
        LeaseRecord {
            key: key.clone(),
            holder: held.holder.clone(),
            token: held.token(),
            remaining: held.ttl,
        }
    }

    pub(crate) fn lost(&self, fence: &Fence, found: &Found) -> LeaseError {
        let current = match found {
            Found::Held(held) => Some(self.record_of(&fence.key, held)),
            _ => None,
        };
        LeaseError::lost(fence, current)
    }

    /// The error for a lease that could not be had or refreshed.
    pub(crate) fn lease_error(
        &self,
        op: Op,
        key: &LeaseKey,
        ttl: Duration,
        failure: LeaseFailure,
    ) -> LeaseError {
        match failure {
            LeaseFailure::TtlRefused { asked, granted } => LeaseError::InvalidTtl {
                key: key.clone(),
                ttl,
                rule: format!(
                    "etcd granted a {granted} s lease when asked for {asked} s: its shortest lease is longer, so grants here need at least {} s",
                    Duration::from_secs(granted.unsigned_abs())
                        .saturating_sub(MARGIN)
                        .as_secs()
                ),
            },
            LeaseFailure::Gone => {
                LeaseError::backend(BACKEND, op, key, false, "its etcd lease expired")
            }
            LeaseFailure::Call(error) => etcd_error(op, key, error),
            LeaseFailure::TimedOut => LeaseError::Timeout {
                op,
                key: key.clone(),
                after: self.call_timeout(),
            },
        }
    }
}

/// An etcd error as a [`LeaseError`], indeterminate when the request may
/// have been applied.
pub(crate) fn etcd_error(op: Op, key: &LeaseKey, error: etcd_client::Error) -> LeaseError {
    use etcd_client::Error;
    let indeterminate = match &error {
        Error::GRpcStatus(status) => {
            // Unavailable, DeadlineExceeded, Cancelled, Unknown.
            matches!(status.code() as i32, 14 | 4 | 1 | 2)
        }
        Error::TransportError(_) | Error::IoError(_) => true,
        _ => false,
    };
    LeaseError::backend(BACKEND, op, key, indeterminate, error)
}

#[async_trait]
impl LeaseStore for EtcdStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(BACKEND)
            .with_min_ttl(Duration::from_secs(1))
            .with_ttl_granularity(Duration::from_secs(1))
            // The lease margin, plus etcd's expiry check (every 500 ms) and
            // the revocation it proposes.
            .with_expiry_slack(Duration::from_secs(2))
            .with_max_value_len(1024 * 1024)
            .with_wakeup(Wakeup::Notified {
                recheck: self.inner.config.wait_recheck,
            })
    }

    async fn claim(
        &self,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError> {
        self.claim_or_reclaim(Op::Claim, key, holder, ttl, None)
            .await
    }

    async fn reclaim(
        &self,
        observed: &Fence,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError> {
        self.claim_or_reclaim(Op::Reclaim, &observed.key, holder, ttl, Some(observed))
            .await
    }

    async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Grant, LeaseError> {
        let key = &fence.key;
        let ttl = self.capabilities().grant_ttl(key, ttl)?;
        let sent = Instant::now();
        let Some(revision) = revision_of(fence.token) else {
            return Err(self.lost(fence, &self.read(Op::Renew, key).await?));
        };
        match self
            .refresh(Op::Renew, key, &fence.holder, revision, ttl, sent)
            .await?
        {
            Ok(()) => Ok(Grant::new(fence.clone(), ttl, sent, false)),
            Err(found) => Err(self.lost(fence, &found)),
        }
    }

    async fn renew_many(&self, renewals: &[(Fence, Duration)]) -> Vec<Result<Grant, LeaseError>> {
        // Every deadline counts from the call: no request of it is sent
        // earlier.
        let sent = Instant::now();
        let mut results: Vec<Option<Result<Grant, LeaseError>>> =
            renewals.iter().map(|_| None).collect();
        let mut valid = Vec::with_capacity(renewals.len());
        let mut unknown = Vec::new();
        for (i, (fence, ttl)) in renewals.iter().enumerate() {
            match (
                self.capabilities().grant_ttl(&fence.key, *ttl),
                revision_of(fence.token),
            ) {
                (Err(error), _) => results[i] = Some(Err(error)),
                (Ok(ttl), Some(revision)) => valid.push((i, fence, ttl, revision)),
                // No grant of this store has that token: renew says so.
                (Ok(ttl), None) => unknown.push((i, fence, ttl)),
            }
        }
        let reads = valid.chunks(MAX_TXN_OPS).map(|batch| self.read_many(batch));
        let (found, refused) = tokio::join!(
            futures::future::join_all(reads),
            futures::future::join_all(
                unknown
                    .iter()
                    .map(|&(i, fence, ttl)| async move { (i, self.renew(fence, ttl).await) })
            ),
        );
        for (i, outcome) in refused {
            results[i] = Some(outcome);
        }
        let renewed = valid.iter().zip(found.into_iter().flatten()).map(
            |(&(i, fence, ttl, revision), found)| async move {
                let key = &fence.key;
                let outcome = match found {
                    Err(error) => Err(error),
                    Ok(found) => self
                        .refresh_found(Op::Renew, key, &fence.holder, revision, ttl, sent, found)
                        .await
                        .and_then(|refreshed| match refreshed {
                            Ok(()) => Ok(Grant::new(fence.clone(), ttl, sent, false)),
                            Err(found) => Err(self.lost(fence, &found)),
                        }),
                };
                (i, outcome)
            },
        );
        for (i, outcome) in futures::future::join_all(renewed).await {
            results[i] = Some(outcome);
        }
        results.into_iter().flatten().collect()
    }

    async fn release(&self, fence: &Fence) -> Result<bool, LeaseError> {
        let key = &fence.key;
        let Some(revision) = revision_of(fence.token) else {
            return Ok(false);
        };
        let etcd_key = self.record_key(key);
        let leases = &self.inner.leases;
        // A grant this store made for this holder hangs on a lease of its
        // own, which carries no other grant until this store saw that one
        // released: the key on that lease *is* the grant. One compare, no
        // holder compare, no read back.
        // Releases made beside it share its transaction.
        if let Some(lease) = leases.lease_of(&etcd_key, revision, &fence.holder) {
            let request = ReleaseRequest {
                key: key.clone(),
                etcd_key: etcd_key.clone(),
                lease,
            };
            let limit = self.call_timeout();
            let released = with_timeout(
                Op::Release,
                key,
                limit,
                self.inner.releases.call(key, request),
            )
            .await?;
            if released {
                leases.released(lease);
                return Ok(true);
            }
        }
        let txn = Txn::new()
            .when(holds(&etcd_key, revision, &fence.holder))
            .and_then([TxnOp::delete(
                etcd_key.as_str(),
                Some(DeleteOptions::new().with_prev_key()),
            )]);
        let response = self.txn(Op::Release, key, txn).await?;
        if let Some(gone) = record::deleted(&response) {
            leases.released(gone.lease());
        }
        Ok(response.succeeded())
    }

    async fn inspect(&self, key: &LeaseKey) -> Result<Option<LeaseRecord>, LeaseError> {
        match self.read(Op::Inspect, key).await? {
            Found::Absent => Ok(None),
            Found::Corrupt { detail, .. } => Err(LeaseError::Corrupt {
                key: key.clone(),
                detail,
            }),
            Found::Held(held) => {
                let left = self.lease_left(key, held.lease).await?;
                // The lease outlives the grant by the margin; etcd reports
                // whole seconds, rounded down.
                Ok(left.map(|left| LeaseRecord {
                    remaining: left.min(held.ttl),
                    ..self.record_of(key, &held)
                }))
            }
        }
    }

    async fn check(&self, fence: &Fence) -> Result<bool, LeaseError> {
        // A key exists only while its etcd lease lives: one read decides.
        Ok(
            match (
                self.read(Op::Inspect, &fence.key).await?,
                revision_of(fence.token),
            ) {
                (Found::Held(held), Some(revision)) => held.is(&fence.holder, revision),
                _ => false,
            },
        )
    }

    async fn put_marker(&self, key: &LeaseKey, value: &str) -> Result<(), LeaseError> {
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

    async fn delete_marker(&self, key: &LeaseKey, value: &str) -> Result<bool, LeaseError> {
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

    async fn list(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Listed>, LeaseError> {
        self.list_page(prefix, from, limit).await
    }

    async fn list_markers(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<(LeaseKey, String)>, LeaseError> {
        self.list_markers_page(prefix, from, limit).await
    }

    async fn get_marker(&self, key: &LeaseKey) -> Result<Option<String>, LeaseError> {
        let (kv, _) = self.get(Op::GetMarker, key, &self.marker_key(key)).await?;
        kv.map(|kv| lease_core::marker_text(key, kv.value().to_vec()))
            .transpose()
    }

    async fn guarded_write(
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

    async fn read_guarded(&self, target: &LeaseKey) -> Result<Option<Vec<u8>>, LeaseError> {
        let (kv, _) = self
            .get(Op::ReadGuarded, target, &self.guarded_key(target))
            .await?;
        Ok(kv.map(|kv| kv.value().to_vec()))
    }

    async fn wait_free(&self, key: &LeaseKey, timeout: Duration) -> Result<bool, LeaseError> {
        self.wait_until_free(key, timeout).await
    }
}

/// The token of a grant as the claim returns it.
pub(crate) fn fence_of(key: &LeaseKey, holder: &Holder, revision: i64) -> Fence {
    Fence {
        key: key.clone(),
        holder: holder.clone(),
        token: token_of(revision),
    }
}
