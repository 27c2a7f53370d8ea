//! The store: transactions on etcd.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse,
    TxnResponse, WatchOptions,
};
use lease_core::{
    Capabilities, Claim, Fence, FencingToken, Grant, Holder, LeaseError, LeaseKey, LeaseRecord,
    LeaseStore, Op, with_timeout,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::EtcdConfig;
use crate::grants::{Grants, Local};
use crate::pool::LeasePool;
use crate::record;

const BACKEND: &str = "etcd";
/// Takeovers race other claimers; give up after this many rounds.
const TAKEOVER_ROUNDS: usize = 4;

/// A [`LeaseStore`] on etcd. Clones share one client, one set of shared
/// etcd leases and one set of grant timers.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: EtcdConfig,
    client: Client,
    pool: LeasePool,
    grants: Grants,
    stop: CancellationToken,
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

/// What a key holds, as read in a transaction.
enum Found {
    Absent,
    Corrupt {
        detail: String,
        mod_revision: i64,
    },
    Held {
        holder: Holder,
        ttl: Duration,
        token: i64,
        mod_revision: i64,
    },
}

impl Found {
    fn from_kv(kv: Option<&KeyValue>) -> Self {
        match kv {
            None => Found::Absent,
            Some(kv) => match record::decode(kv.value()) {
                Ok((holder, ttl)) => Found::Held {
                    holder,
                    ttl,
                    token: kv.create_revision(),
                    mod_revision: kv.mod_revision(),
                },
                Err(detail) => Found::Corrupt {
                    detail,
                    mod_revision: kv.mod_revision(),
                },
            },
        }
    }
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
        let mut client = tokio::time::timeout(
            config.connect_timeout,
            Client::connect(&config.endpoints, Some(options)),
        )
        .await
        .map_err(|_| {
            connect_error(format!("no answer within {:?}", config.connect_timeout).into())
        })?
        .map_err(|e| connect_error(Box::new(e)))?;
        // The client connects lazily: ask something, so that a dead cluster
        // or a refused user shows here and not at the first claim.
        tokio::time::timeout(
            config.connect_timeout,
            client.get(config.prefix.as_bytes(), None),
        )
        .await
        .map_err(|_| {
            connect_error(format!("no answer within {:?}", config.connect_timeout).into())
        })?
        .map_err(|e| connect_error(Box::new(e)))?;
        let stop = CancellationToken::new();
        Ok(Self {
            inner: Arc::new(Inner {
                pool: LeasePool::new(client.clone(), config.call_timeout),
                grants: Grants::new(client.clone(), config.call_timeout, stop.clone()),
                client,
                config,
                stop,
            }),
        })
    }

    /// The etcd key holding `key`'s grant.
    pub fn record_key(&self, key: &LeaseKey) -> String {
        format!("{}/lease/{key}", self.inner.config.prefix)
    }

    /// The etcd key holding the marker `key`.
    pub fn marker_key(&self, key: &LeaseKey) -> String {
        format!("{}/marker/{key}", self.inner.config.prefix)
    }

    /// The etcd key holding the guarded value `key`.
    pub fn guarded_key(&self, key: &LeaseKey) -> String {
        format!("{}/guarded/{key}", self.inner.config.prefix)
    }

    /// Every etcd key of this store starts with this.
    pub fn key_prefix(&self) -> String {
        format!("{}/", self.inner.config.prefix)
    }

    /// How many keep-alive streams this store has open: one per TTL value in
    /// use, however many grants share it.
    pub fn keep_alive_streams(&self) -> usize {
        self.inner.pool.streams()
    }

    /// How many of its grants this store is timing.
    pub fn grants_timed(&self) -> usize {
        self.inner.grants.len()
    }

    fn call_timeout(&self) -> Duration {
        self.inner.config.call_timeout
    }

    async fn txn(&self, op: Op, key: &LeaseKey, txn: Txn) -> Result<TxnResponse, LeaseError> {
        let mut client = self.inner.client.clone();
        with_timeout(op, key, self.call_timeout(), async move {
            client.txn(txn).await.map_err(|e| etcd_error(op, key, e))
        })
        .await
    }

    async fn get(
        &self,
        op: Op,
        key: &LeaseKey,
        etcd_key: String,
    ) -> Result<(Option<KeyValue>, i64), LeaseError> {
        let mut client = self.inner.client.clone();
        let response = with_timeout(op, key, self.call_timeout(), async move {
            client
                .get(etcd_key, None)
                .await
                .map_err(|e| etcd_error(op, key, e))
        })
        .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        Ok((response.kvs().first().cloned(), revision))
    }

    async fn shared_lease(&self, op: Op, key: &LeaseKey, ttl: Duration) -> Result<i64, LeaseError> {
        with_timeout(op, key, self.call_timeout() * 2, async {
            self.inner
                .pool
                .lease_for(ttl.as_secs())
                .await
                .map_err(|why| LeaseError::backend(BACKEND, op, key, false, why))
        })
        .await
    }

    /// Whether `token` on `key` is this store's grant past its deadline:
    /// expired, whether or not its timer has deleted the key yet.
    fn expired_here(&self, etcd_key: &[u8], token: i64) -> bool {
        self.inner
            .grants
            .get(etcd_key)
            .is_some_and(|local| local.token == token && local.deadline <= Instant::now())
    }

    fn record_of(&self, key: &LeaseKey, found: &Found) -> Option<LeaseRecord> {
        let Found::Held {
            holder, ttl, token, ..
        } = found
        else {
            return None;
        };
        let etcd_key = self.record_key(key);
        let remaining = match self.inner.grants.get(etcd_key.as_bytes()) {
            Some(local) if local.token == *token => {
                local.deadline.saturating_duration_since(Instant::now())
            }
            _ => *ttl,
        };
        Some(LeaseRecord {
            key: key.clone(),
            holder: holder.clone(),
            token: FencingToken(u64::try_from(*token).unwrap_or(0)),
            remaining,
        })
    }

    /// Creates the key if absent: a fresh grant. Else reads what is there.
    async fn create(
        &self,
        op: Op,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
        sent: Instant,
    ) -> Result<Result<Grant, Found>, LeaseError> {
        let etcd_key = self.record_key(key);
        let lease = self.shared_lease(op, key, ttl).await?;
        let txn = Txn::new()
            .when([Compare::create_revision(
                etcd_key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                etcd_key.as_str(),
                record::encode(holder, ttl),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(etcd_key.as_str(), None)]);
        let response = self.txn(op, key, txn).await?;
        if response.succeeded() {
            let revision = revision_of(op, key, &response)?;
            self.inner.grants.set(
                etcd_key.as_bytes(),
                Local {
                    token: revision,
                    mod_revision: revision,
                    deadline: sent + ttl,
                },
            );
            let fence = Fence {
                key: key.clone(),
                holder: holder.clone(),
                token: FencingToken(revision as u64),
            };
            return Ok(Ok(Grant::new(fence, ttl, sent, true)));
        }
        Ok(Err(Found::from_kv(got(&response).as_ref())))
    }

    /// Rewrites `holder`'s grant `token` with `ttl` from now, keeping the
    /// token: `Ok(Ok)` renewed, `Ok(Err)` not the live grant (with what is).
    async fn refresh(
        &self,
        op: Op,
        key: &LeaseKey,
        holder: &Holder,
        token: i64,
        ttl: Duration,
        sent: Instant,
    ) -> Result<Result<(), Found>, LeaseError> {
        let etcd_key = self.record_key(key);
        if self.expired_here(etcd_key.as_bytes(), token) {
            let (kv, _) = self.get(op, key, etcd_key).await?;
            let found = Found::from_kv(kv.as_ref());
            // Our own expired grant still in place counts as gone.
            return Ok(Err(match found {
                Found::Held { token: t, .. } if t == token => Found::Absent,
                other => other,
            }));
        }
        let lease = self.shared_lease(op, key, ttl).await?;
        let txn = Txn::new()
            .when(holds(&etcd_key, token, holder))
            .and_then([TxnOp::put(
                etcd_key.as_str(),
                record::encode(holder, ttl),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(etcd_key.as_str(), None)]);
        let response = self.txn(op, key, txn).await?;
        if response.succeeded() {
            let revision = revision_of(op, key, &response)?;
            self.inner.grants.set(
                etcd_key.as_bytes(),
                Local {
                    token,
                    mod_revision: revision,
                    deadline: sent + ttl,
                },
            );
            return Ok(Ok(()));
        }
        Ok(Err(Found::from_kv(got(&response).as_ref())))
    }

    /// Deletes the key if it still holds what was read (`mod_revision`).
    async fn delete_if_unchanged(
        &self,
        op: Op,
        key: &LeaseKey,
        mod_revision: i64,
    ) -> Result<bool, LeaseError> {
        let etcd_key = self.record_key(key);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                etcd_key.as_str(),
                CompareOp::Equal,
                mod_revision,
            )])
            .and_then([TxnOp::delete(etcd_key.as_str(), None)]);
        Ok(self.txn(op, key, txn).await?.succeeded())
    }

    async fn claim_or_reclaim(
        &self,
        op: Op,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
        observed: Option<&Fence>,
    ) -> Result<Claim, LeaseError> {
        let ttl = self.capabilities().grant_ttl(key, ttl)?;
        let etcd_key = self.record_key(key);
        // The deadline counts from the caller's request, even when a
        // takeover needs more rounds: the holder may stop early, never late.
        let sent = Instant::now();
        for _ in 0..TAKEOVER_ROUNDS {
            let found = match self.create(op, key, holder, ttl, sent).await? {
                Ok(grant) => return Ok(Claim::Acquired(grant)),
                Err(found) => found,
            };
            match found {
                // Deleted between the compare and the read: try again.
                Found::Absent => {}
                Found::Corrupt { mod_revision, .. } => {
                    self.delete_if_unchanged(op, key, mod_revision).await?;
                }
                Found::Held {
                    token,
                    mod_revision,
                    ..
                } if self.expired_here(etcd_key.as_bytes(), token) => {
                    self.delete_if_unchanged(op, key, mod_revision).await?;
                }
                Found::Held {
                    holder: ref current,
                    token,
                    ..
                } if current == holder => {
                    match self.refresh(op, key, holder, token, ttl, sent).await? {
                        Ok(()) => {
                            let fence = Fence {
                                key: key.clone(),
                                holder: holder.clone(),
                                token: FencingToken(token as u64),
                            };
                            return Ok(Claim::Acquired(Grant::new(fence, ttl, sent, false)));
                        }
                        Err(_) => continue,
                    }
                }
                Found::Held {
                    ref holder,
                    token,
                    mod_revision,
                    ..
                } if observed.is_some_and(|o| o.holder == *holder && o.token.0 == token as u64) => {
                    self.delete_if_unchanged(op, key, mod_revision).await?;
                }
                held => return Ok(Claim::Busy(self.record_of(key, &held).expect("held"))),
            }
        }
        let (kv, _) = self.get(op, key, etcd_key).await?;
        match self.record_of(key, &Found::from_kv(kv.as_ref())) {
            Some(record) => Ok(Claim::Busy(record)),
            None => Err(LeaseError::backend(
                BACKEND,
                op,
                key,
                false,
                "the key kept changing under the claim; try again",
            )),
        }
    }

    fn lost(&self, fence: &Fence, found: &Found) -> LeaseError {
        LeaseError::lost(fence, self.record_of(&fence.key, found))
    }
}

/// Compares that hold when `etcd_key` is the grant `token` of `holder`:
/// created at that revision, its value in the holder's range.
fn holds(etcd_key: &str, token: i64, holder: &Holder) -> [Compare; 3] {
    let (low, high) = record::holder_range(holder);
    [
        Compare::create_revision(etcd_key, CompareOp::Equal, token),
        Compare::value(etcd_key, CompareOp::Greater, low),
        Compare::value(etcd_key, CompareOp::Less, high),
    ]
}

fn got(response: &TxnResponse) -> Option<KeyValue> {
    response.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(get) => get.kvs().first().cloned(),
        _ => None,
    })
}

fn revision_of(op: Op, key: &LeaseKey, response: &TxnResponse) -> Result<i64, LeaseError> {
    response
        .header()
        .map(|h| h.revision())
        .filter(|r| *r > 0)
        .ok_or_else(|| LeaseError::backend(BACKEND, op, key, true, "the reply carries no revision"))
}

fn etcd_error(op: Op, key: &LeaseKey, error: etcd_client::Error) -> LeaseError {
    use etcd_client::Error;
    // Lost in transit: the request may have been applied.
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
            // The local timer plus one delete round trip.
            .with_expiry_slack(Duration::from_secs(1))
            .with_max_value_len(1024 * 1024)
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
        let token = i64::try_from(fence.token.0).unwrap_or(i64::MAX);
        match self
            .refresh(Op::Renew, key, &fence.holder, token, ttl, sent)
            .await?
        {
            Ok(()) => Ok(Grant::new(fence.clone(), ttl, sent, false)),
            Err(found) => Err(self.lost(fence, &found)),
        }
    }

    async fn release(&self, fence: &Fence) -> Result<bool, LeaseError> {
        let key = &fence.key;
        let etcd_key = self.record_key(key);
        let token = i64::try_from(fence.token.0).unwrap_or(i64::MAX);
        if self.expired_here(etcd_key.as_bytes(), token) {
            return Ok(false);
        }
        let txn = Txn::new()
            .when(holds(&etcd_key, token, &fence.holder))
            .and_then([TxnOp::delete(etcd_key.as_str(), None)]);
        let released = self.txn(Op::Release, key, txn).await?.succeeded();
        self.inner.grants.forget(etcd_key.as_bytes(), token);
        Ok(released)
    }

    async fn inspect(&self, key: &LeaseKey) -> Result<Option<LeaseRecord>, LeaseError> {
        let etcd_key = self.record_key(key);
        let (kv, _) = self.get(Op::Inspect, key, etcd_key.clone()).await?;
        match Found::from_kv(kv.as_ref()) {
            Found::Corrupt { detail, .. } => Err(LeaseError::Corrupt {
                key: key.clone(),
                detail,
            }),
            Found::Held { token, .. } if self.expired_here(etcd_key.as_bytes(), token) => Ok(None),
            found => Ok(self.record_of(key, &found)),
        }
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
        match got(&response) {
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
        match got(&response) {
            None => Ok(false),
            Some(kv) => Err(LeaseError::Conflict {
                key: key.clone(),
                existing: String::from_utf8_lossy(kv.value()).into_owned(),
            }),
        }
    }

    async fn get_marker(&self, key: &LeaseKey) -> Result<Option<String>, LeaseError> {
        let (kv, _) = self.get(Op::GetMarker, key, self.marker_key(key)).await?;
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
        let token = i64::try_from(fence.token.0).unwrap_or(i64::MAX);
        if self.expired_here(etcd_key.as_bytes(), token) {
            return Err(LeaseError::lost(fence, None));
        }
        let txn = Txn::new()
            .when(holds(&etcd_key, token, &fence.holder))
            .and_then([TxnOp::put(self.guarded_key(target), value, None)])
            .or_else([TxnOp::get(etcd_key.as_str(), None)]);
        let response = self.txn(Op::GuardedWrite, key, txn).await?;
        if response.succeeded() {
            return Ok(());
        }
        Err(self.lost(fence, &Found::from_kv(got(&response).as_ref())))
    }

    async fn read_guarded(&self, target: &LeaseKey) -> Result<Option<Vec<u8>>, LeaseError> {
        let (kv, _) = self
            .get(Op::ReadGuarded, target, self.guarded_key(target))
            .await?;
        Ok(kv.map(|kv| kv.value().to_vec()))
    }

    async fn wait_free(&self, key: &LeaseKey, timeout: Duration) -> Result<bool, LeaseError> {
        let give_up = Instant::now() + timeout;
        let etcd_key = self.record_key(key);
        loop {
            let (kv, revision) = match self.get(Op::Wait, key, etcd_key.clone()).await {
                Ok(read) => read,
                Err(error) if Instant::now() >= give_up => return Err(error),
                Err(_) => {
                    tokio::time::sleep(
                        self.inner.config.wait_recheck.min(give_up - Instant::now()),
                    )
                    .await;
                    continue;
                }
            };
            let remaining = match Found::from_kv(kv.as_ref()) {
                Found::Absent | Found::Corrupt { .. } => return Ok(true),
                Found::Held { token, .. } if self.expired_here(etcd_key.as_bytes(), token) => {
                    return Ok(true);
                }
                held => self
                    .record_of(key, &held)
                    .map_or(Duration::ZERO, |r| r.remaining),
            };
            if Instant::now() >= give_up {
                return Ok(false);
            }
            // Watch from just after the read: no delete can slip between.
            let recheck = Instant::now()
                + remaining.min(self.inner.config.wait_recheck)
                + Duration::from_millis(1);
            let mut client = self.inner.client.clone();
            let options = WatchOptions::new().with_start_revision(revision + 1);
            let watch = tokio::time::timeout(
                self.call_timeout(),
                client.watch(etcd_key.as_str(), Some(options)),
            )
            .await;
            let Ok(Ok(mut stream)) = watch else {
                tokio::time::sleep_until(recheck.min(give_up)).await;
                continue;
            };
            loop {
                tokio::select! {
                    message = stream.message() => match message {
                        Ok(Some(response)) if response.canceled() => break,
                        Ok(Some(response)) => {
                            let deleted = response.events().iter().any(|e| e.event_type() == etcd_client::EventType::Delete);
                            if deleted {
                                return Ok(true);
                            }
                        }
                        Ok(None) | Err(_) => break,
                    },
                    () = tokio::time::sleep_until(recheck.min(give_up)) => break,
                }
            }
        }
    }
}
