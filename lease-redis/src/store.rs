//! The store: each trait method is one script call.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lease_core::{
    BatchStats, BatchedCalls, Capabilities, Claim, Cursor, Fence, Grant, Holder, LeaseError,
    LeaseKey, LeaseRecord, LeaseStore, Listed, Op, Page, Wakeup, with_timeout,
};
use redis::aio::ConnectionManagerConfig;
use redis::{FromRedisValue, Script};
use tokio::time::Instant;

use crate::RedisConfig;
use crate::connection::{Connection, SentinelPrimary};
use crate::reply::Reply;
use crate::scripts::Scripts;
use crate::wait::{Notifier, Source};

pub(crate) const BACKEND: &str = "redis";
/// The record of `fence`'s live grant, as `lua/prelude.lua` stores it: a
/// renewal or release sends it whole, so the script compares text and
/// parses nothing.
fn fence_record(fence: &Fence) -> String {
    format!(
        "v3\n{}\n{}\n{}",
        fence.holder.id(),
        fence.holder.incarnation(),
        fence.token.0
    )
}

/// Renewals per `renew_many` script call: a keeper's whole batch, so
/// 10,000 leases take 20 calls, and one call holds the server for a few
/// milliseconds at most.
const RENEW_BATCH: usize = lease_core::MAX_BATCH;

/// Claims (or releases) one script call carries at most: 128 claims hold
/// the server for well under a millisecond.
pub const CALL_BATCH: usize = 128;

/// Claim (or release) script calls under way at once, per store; calls
/// made beyond that wait for one to end and go out together.
pub const CALLS_IN_FLIGHT: usize = 16;

/// A claim on its way into a batch.
struct ClaimRequest {
    key: LeaseKey,
    holder: Holder,
    ttl_ms: String,
    observed: Option<Fence>,
}

/// A release on its way into a batch: its key and its fence's record.
struct ReleaseRequest {
    key: LeaseKey,
    own: String,
}

/// A [`LeaseStore`] on Redis. Clones share one connection.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: RedisConfig,
    pub(crate) connection: Connection,
    pub(crate) scripts: Scripts,
    notifier: Notifier,
    /// The namespace's token floor key (see `lua/prelude.lua`).
    floor_key: String,
    /// The pub/sub channel releases are announced on.
    channel: String,
    /// The restart quarantine in ms, as the scripts take it: 0 when off.
    quarantine_ms: String,
    /// Concurrent claims coalesced into claim script calls, and how a
    /// batch is sent.
    claims: BatchedCalls<ClaimRequest, Reply>,
    /// Concurrent releases coalesced into release script calls.
    releases: BatchedCalls<ReleaseRequest, bool>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.config.redacted_url())
            .field("namespace", &self.inner.config.namespace)
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
        config.validate()?;
        let invalid_url = |e: redis::RedisError| LeaseError::InvalidConfig {
            backend: BACKEND,
            what: format!("URL {}", config.redacted_url()),
            rule: format!(
                "must be redis://[user:password@]host:port[/db], redis+cluster://[user:password@]host:port[,host:port…], redis+sentinel://[user:password@]host:port[,host:port…]/MASTER_NAME, or rediss:… with the tls feature ({e})"
            ),
        };
        let connect_error = |source: lease_core::BoxError| LeaseError::Connect {
            backend: BACKEND,
            endpoint: config.redacted_url(),
            source,
        };
        let timed_out =
            || connect_error(format!("no answer within {:?}", config.connect_timeout).into());
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.call_timeout))
            .set_number_of_retries(2);
        let (connection, subscribe_to) = match (config.cluster_nodes(), config.sentinel()) {
            (None, Some(sentinels)) => {
                let opener = config.clone();
                let open = Box::new(move |url: &str| open_client(url, &opener));
                let primary = SentinelPrimary::connect(
                    sentinels,
                    open,
                    manager_config,
                    config.connect_timeout,
                )
                .await
                .map_err(|why| connect_error(why.into()))?;
                let primary = Arc::new(primary);
                (
                    Connection::Sentinel(primary.clone()),
                    Source::Primary(primary),
                )
            }
            (None, None) => {
                let client = open_client(&config.url, &config).map_err(invalid_url)?;
                let manager = tokio::time::timeout(
                    config.connect_timeout,
                    client.get_connection_manager_with_config(manager_config),
                )
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| connect_error(e.into()))?;
                (Connection::Single(manager), Source::Nodes(vec![client]))
            }
            (Some(nodes), _) => {
                let cluster = open_cluster(&nodes, &config).map_err(invalid_url)?;
                let connection =
                    tokio::time::timeout(config.connect_timeout, cluster.get_async_connection())
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(|e| connect_error(e.into()))?;
                // Plain PUBLISH reaches every node of a cluster: any one
                // node serves the subscription, the next after a failure.
                let clients = nodes
                    .iter()
                    .map(|node| open_client(node, &config))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(invalid_url)?;
                (Connection::Cluster(connection), Source::Nodes(clients))
            }
        };
        let notifier = Notifier::new(
            subscribe_to,
            channel(&config.namespace),
            config.connect_timeout,
        );
        let scripts = Scripts::new();
        // Loaded now, so the first calls do not each find the script
        // missing and load it. Best effort: a call still loads its script
        // when the server lacks it (a restart, a user without SCRIPT LOAD
        // is told so by that call).
        let loads = scripts.all().map(|script| {
            let mut connection = connection.clone();
            async move { script.load_async(&mut connection).await }
        });
        let _ =
            tokio::time::timeout(config.connect_timeout, futures::future::join_all(loads)).await;
        let quarantine_ms = config
            .restart_quarantine
            .map_or(0, |q| q.as_millis().max(1))
            .to_string();
        Ok(Self {
            inner: Arc::new_cyclic(|inner| Inner {
                floor_key: format!("{{{}}}:floor", config.namespace),
                channel: channel(&config.namespace),
                quarantine_ms,
                config,
                connection,
                scripts,
                notifier,
                claims: BatchedCalls::new(
                    inner,
                    (BACKEND, Op::Claim),
                    (CALL_BATCH, CALLS_IN_FLIGHT),
                    |request| &request.key,
                    |inner, batch| {
                        Box::pin(async move { RedisStore { inner }.claim_batch(batch).await })
                    },
                ),
                releases: BatchedCalls::new(
                    inner,
                    (BACKEND, Op::Release),
                    (CALL_BATCH, CALLS_IN_FLIGHT),
                    |request| &request.key,
                    |inner, batch| {
                        Box::pin(async move { RedisStore { inner }.release_batch(batch).await })
                    },
                ),
            }),
        })
    }

    /// The Redis key holding `key`'s lease record.
    pub(crate) fn record_key(&self, key: &LeaseKey) -> String {
        self.redis_key("lease", key)
    }

    /// The Redis key holding the marker `key`.
    pub(crate) fn marker_key(&self, key: &LeaseKey) -> String {
        self.redis_key("marker", key)
    }

    /// The Redis key holding the guarded value `key`.
    pub(crate) fn guarded_key(&self, key: &LeaseKey) -> String {
        self.redis_key("guarded", key)
    }

    /// The pub/sub channel on which releases are announced.
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }

    /// Runs `cmd` on the node that holds this store's namespace (the
    /// server itself when it is not a cluster), under the call timeout:
    /// for tools and tests that look at the namespace's keys directly
    /// (`SCAN`, `SET`, `DEL` of keys under [`RedisStore::key_prefix`]).
    ///
    /// # Errors
    /// The server's error, or [`LeaseError::Timeout`].
    pub(crate) async fn query_namespace<T: FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, LeaseError> {
        let key = LeaseKey::new("raw").expect("a valid key");
        let limit = self.inner.config.call_timeout;
        let mut connection = self.inner.connection.clone();
        with_timeout(Op::Inspect, &key, limit, async {
            connection
                .query_at(cmd, &self.key_prefix())
                .await
                .map_err(|e| redis_error(Op::Inspect, &key, e, limit))
        })
        .await
    }

    /// Every Redis key of this store's namespace starts with this.
    pub(crate) fn key_prefix(&self) -> String {
        format!("{{{}}}:", self.inner.config.namespace)
    }

    pub(crate) fn redis_key(&self, space: &str, key: &LeaseKey) -> String {
        format!("{{{}}}:{space}:{key}", self.inner.config.namespace)
    }

    /// A busy record for a key under the restart quarantine.
    fn quarantine_record(key: &LeaseKey, reply: &Reply) -> Result<LeaseRecord, String> {
        Ok(LeaseRecord {
            key: key.clone(),
            holder: Holder::new("restart-quarantine", "redis").expect("a valid holder"),
            token: lease_core::FencingToken(0),
            remaining: Duration::from_micros(reply.number(1)?),
        })
    }

    /// Runs one script: one round trip, under the call timeout.
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        op: Op,
        key: &LeaseKey,
        script: &Script,
        keys: &[impl AsRef<str> + Sync],
        args: &[&[u8]],
    ) -> Result<T, LeaseError> {
        let mut connection = self.inner.connection.clone();
        let limit = self.inner.config.call_timeout;
        with_timeout(op, key, limit, async {
            match self.inner.config.wait_for_replicas {
                Some(wait) if op.is_mutating() => {
                    self.run_and_wait(op, key, script, keys, args, wait, &mut connection)
                        .await
                }
                _ => {
                    let mut invocation = script.prepare_invoke();
                    for k in keys {
                        invocation.key(k.as_ref());
                    }
                    for a in args {
                        invocation.arg(*a);
                    }
                    invocation
                        .invoke_async::<T>(&mut connection)
                        .await
                        .map_err(|e| redis_error(op, key, e, limit))
                }
            }
        })
        .await
    }

    /// The script and `WAIT` in one pipeline (one round trip); the script
    /// loaded and sent again if the server lacks it.
    #[allow(clippy::too_many_arguments)]
    async fn run_and_wait<T: FromRedisValue>(
        &self,
        op: Op,
        key: &LeaseKey,
        script: &Script,
        keys: &[impl AsRef<str> + Sync],
        args: &[&[u8]],
        (replicas, wait): (u32, Duration),
        connection: &mut Connection,
    ) -> Result<T, LeaseError> {
        let limit = self.inner.config.call_timeout;
        let mut pipeline = redis::pipe();
        let eval = pipeline
            .cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(keys.len());
        for k in keys {
            eval.arg(k.as_ref());
        }
        eval.arg(args)
            .cmd("WAIT")
            .arg(replicas)
            .arg(wait.as_millis().max(1) as u64);
        let mut sent = pipeline.query_async::<(T, u32)>(connection).await;
        if sent.as_ref().is_err_and(|e| e.code() == Some("NOSCRIPT")) {
            script
                .load_async(connection)
                .await
                .map_err(|e| redis_error(op, key, e, limit))?;
            sent = pipeline.query_async::<(T, u32)>(connection).await;
        }
        let (reply, acknowledged) = sent.map_err(|e| redis_error(op, key, e, limit))?;
        if acknowledged < replicas {
            return Err(LeaseError::backend(
                BACKEND,
                op,
                key,
                true,
                format!(
                    "the write reached {acknowledged} of the {replicas} replicas asked for within {wait:?}"
                ),
            ));
        }
        Ok(reply)
    }

    async fn script(
        &self,
        op: Op,
        key: &LeaseKey,
        script: &Script,
        keys: &[impl AsRef<str> + Sync],
        args: &[&[u8]],
    ) -> Result<Reply, LeaseError> {
        self.run::<Vec<Vec<u8>>>(op, key, script, keys, args)
            .await
            .map(Reply)
    }

    /// Claims and releases sent so far, and the script calls that carried
    /// them: concurrent calls share one (see the crate docs).
    pub fn batch_stats(&self) -> (BatchStats, BatchStats) {
        (self.inner.claims.stats(), self.inner.releases.stats())
    }

    async fn claim_or_reclaim(
        &self,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
        observed: Option<&Fence>,
    ) -> Result<Claim, LeaseError> {
        let op = if observed.is_some() {
            Op::Reclaim
        } else {
            Op::Claim
        };
        let ttl = self.capabilities().grant_ttl(key, ttl)?;
        let request = ClaimRequest {
            key: key.clone(),
            holder: holder.clone(),
            ttl_ms: ttl.as_millis().to_string(),
            observed: observed.cloned(),
        };
        // Before the request joins a batch: the holder's deadline counts
        // from no later than the script ran.
        let sent = Instant::now();
        let reply = match observed {
            // Reclaims are rare: each goes alone.
            Some(_) => self.claim_alone(&request).await?,
            None => {
                let limit = self.inner.config.call_timeout;
                with_timeout(op, key, limit, self.inner.claims.call(key, request)).await?
            }
        };
        let parsed = match reply.tag() {
            b"acquired" => reply.number(1).and_then(|token| {
                let fence = Fence {
                    key: key.clone(),
                    holder: holder.clone(),
                    token: lease_core::FencingToken(token),
                };
                Ok(Claim::Acquired(Grant::new(
                    fence,
                    ttl,
                    sent,
                    reply.bytes(2)? == b"1",
                )))
            }),
            b"held" => reply.record(key).map(Claim::Busy),
            b"quarantined" => Self::quarantine_record(key, &reply).map(Claim::Busy),
            _ => Err(format!("unexpected reply {}", reply.describe())),
        };
        parsed.map_err(|why| malformed(op, key, why))
    }

    /// One script call for a batch of claims, or for one claim or reclaim
    /// alone (`claim.lua`, leaner than a batch of one): one reply each, in
    /// order.
    async fn claim_batch(&self, batch: Vec<ClaimRequest>) -> Vec<Result<Reply, LeaseError>> {
        let Some(first) = batch.first() else {
            return Vec::new();
        };
        if let [one] = batch.as_slice() {
            return vec![self.claim_alone(one).await];
        }
        let mut keys = Vec::with_capacity(batch.len() + 1);
        keys.push(self.inner.floor_key.clone());
        keys.extend(batch.iter().map(|r| self.record_key(&r.key)));
        let mut args: Vec<&[u8]> = Vec::with_capacity(1 + 3 * batch.len());
        args.push(self.inner.quarantine_ms.as_bytes());
        for request in &batch {
            args.extend([
                request.holder.id().as_bytes(),
                request.holder.incarnation().as_bytes(),
                request.ttl_ms.as_bytes(),
            ]);
        }
        let replies = self
            .run::<Vec<Vec<Vec<u8>>>>(
                Op::Claim,
                &first.key,
                &self.inner.scripts.claim_many,
                &keys,
                &args,
            )
            .await;
        answer_each(
            Op::Claim,
            &batch,
            |r| &r.key,
            replies,
            |_, reply| Ok(Reply(reply)),
        )
    }

    /// One claim or reclaim, alone.
    async fn claim_alone(&self, request: &ClaimRequest) -> Result<Reply, LeaseError> {
        let (op, observed_token) = match &request.observed {
            Some(o) => (Op::Reclaim, Some(o.token.0.to_string())),
            None => (Op::Claim, None),
        };
        let mut args: Vec<&[u8]> = vec![
            request.holder.id().as_bytes(),
            request.holder.incarnation().as_bytes(),
            request.ttl_ms.as_bytes(),
            self.inner.quarantine_ms.as_bytes(),
        ];
        if let (Some(o), Some(token)) = (&request.observed, &observed_token) {
            args.extend([
                o.holder.id().as_bytes(),
                o.holder.incarnation().as_bytes(),
                token.as_bytes(),
            ]);
        }
        let keys = [self.record_key(&request.key), self.inner.floor_key.clone()];
        self.script(op, &request.key, &self.inner.scripts.claim, &keys, &args)
            .await
    }

    /// One script call for a batch of releases, or for one alone
    /// (`release.lua`): one answer each, in order.
    async fn release_batch(&self, batch: Vec<ReleaseRequest>) -> Vec<Result<bool, LeaseError>> {
        let Some(first) = batch.first() else {
            return Vec::new();
        };
        let keys: Vec<String> = batch.iter().map(|r| self.record_key(&r.key)).collect();
        if let [one] = batch.as_slice() {
            let args: [&[u8]; 3] = [
                one.own.as_bytes(),
                self.inner.channel.as_bytes(),
                one.key.as_str().as_bytes(),
            ];
            let released = self
                .run::<i64>(
                    Op::Release,
                    &one.key,
                    &self.inner.scripts.release,
                    &keys,
                    &args,
                )
                .await;
            return vec![released.map(|released| released == 1)];
        }
        let mut args: Vec<&[u8]> = Vec::with_capacity(1 + 2 * batch.len());
        args.push(self.inner.channel.as_bytes());
        for request in &batch {
            args.extend([request.own.as_bytes(), request.key.as_str().as_bytes()]);
        }
        let replies = self
            .run::<Vec<i64>>(
                Op::Release,
                &first.key,
                &self.inner.scripts.release_many,
                &keys,
                &args,
            )
            .await;
        answer_each(
            Op::Release,
            &batch,
            |r| &r.key,
            replies,
            |_, released| Ok(released == 1),
        )
    }

    /// The current record after a refusal: `held` or `free`.
    pub(crate) fn current(
        &self,
        op: Op,
        key: &LeaseKey,
        reply: &Reply,
    ) -> Result<Option<LeaseRecord>, LeaseError> {
        match reply.tag() {
            b"free" => Ok(None),
            b"held" => reply
                .record(key)
                .map(Some)
                .map_err(|why| malformed(op, key, why)),
            _ => Err(malformed(
                op,
                key,
                format!("unexpected reply {}", reply.describe()),
            )),
        }
    }

    /// What a renew reply means for `fence`: 1 renewed, 0 free, else a
    /// `held` reply.
    fn renewed(
        &self,
        fence: &Fence,
        ttl: Duration,
        sent: Instant,
        reply: redis::Value,
    ) -> Result<Grant, LeaseError> {
        let current = match reply {
            redis::Value::Int(1) => return Ok(Grant::new(fence.clone(), ttl, sent, false)),
            redis::Value::Int(0) => None,
            other => {
                let reply = Vec::<Vec<u8>>::from_redis_value(other)
                    .map(Reply)
                    .map_err(|e| malformed(Op::Renew, &fence.key, e.to_string()))?;
                self.current(Op::Renew, &fence.key, &reply)?
            }
        };
        Err(LeaseError::lost(fence, current))
    }

    /// One `renew_many` script call for up to [`RENEW_BATCH`] renewals of
    /// valid TTLs: one result each, in order.
    async fn renew_batch(
        &self,
        batch: &[(usize, &Fence, Duration)],
    ) -> Vec<Result<Grant, LeaseError>> {
        let Some((_, first, _)) = batch.first() else {
            return Vec::new();
        };
        let keys: Vec<String> = batch
            .iter()
            .map(|(_, f, _)| self.record_key(&f.key))
            .collect();
        let texts: Vec<[String; 2]> = batch
            .iter()
            .map(|(_, fence, ttl)| [fence_record(fence), ttl.as_millis().to_string()])
            .collect();
        let mut args: Vec<&[u8]> = Vec::with_capacity(texts.len() * 2);
        args.extend(texts.iter().flatten().map(String::as_bytes));
        let sent = Instant::now();
        let replies = self
            .run::<Vec<redis::Value>>(
                Op::Renew,
                &first.key,
                &self.inner.scripts.renew_many,
                &keys,
                &args,
            )
            .await;
        answer_each(
            Op::Renew,
            batch,
            |(_, f, _)| &f.key,
            replies,
            |(_, fence, ttl), reply| self.renewed(fence, *ttl, sent, reply),
        )
    }

    fn fence_args(fence: &Fence) -> [Vec<u8>; 3] {
        [
            fence.holder.id().as_bytes().to_vec(),
            fence.holder.incarnation().as_bytes().to_vec(),
            fence.token.0.to_string().into_bytes(),
        ]
    }

    async fn read_value(
        &self,
        op: Op,
        key: &LeaseKey,
        redis_key: String,
    ) -> Result<Option<Vec<u8>>, LeaseError> {
        let reply = self
            .script(op, key, &self.inner.scripts.read_value, &[redis_key], &[])
            .await?;
        match reply.tag() {
            b"absent" => Ok(None),
            b"value" => Ok(Some(
                reply
                    .bytes(1)
                    .map_err(|why| malformed(op, key, why))?
                    .to_vec(),
            )),
            _ => Err(corrupt_or_malformed(op, key, &reply)),
        }
    }
}

fn open_client(url: &str, config: &RedisConfig) -> redis::RedisResult<redis::Client> {
    #[cfg(feature = "tls")]
    if let Some(pem) = &config.root_ca {
        // Only ring is built in; make it the process default if none is.
        let _ = rustls::crypto::ring::default_provider().install_default();
        return redis::Client::build_with_tls(url, tls_roots(pem));
    }
    let _ = config;
    redis::Client::open(url)
}

fn open_cluster(
    nodes: &[String],
    config: &RedisConfig,
) -> redis::RedisResult<redis::cluster::ClusterClient> {
    let builder = redis::cluster::ClusterClient::builder(nodes.to_vec())
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.call_timeout)
        .retries(2);
    #[cfg(feature = "tls")]
    if let Some(pem) = &config.root_ca {
        let _ = rustls::crypto::ring::default_provider().install_default();
        return builder.certs(tls_roots(pem)).build();
    }
    builder.build()
}

#[cfg(feature = "tls")]
fn tls_roots(pem: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

fn channel(namespace: &str) -> String {
    format!("{{{namespace}}}:released")
}

pub(crate) fn redis_error(
    op: Op,
    key: &LeaseKey,
    error: redis::RedisError,
    limit: Duration,
) -> LeaseError {
    if error.is_timeout() {
        return LeaseError::Timeout {
            op,
            key: key.clone(),
            after: limit,
        };
    }
    // Lost after sending: the script may or may not have run.
    let indeterminate = error.is_io_error() || error.is_connection_dropped() || error.is_timeout();
    let refused = error
        .code()
        .is_some_and(|code| code == "NOPERM" || code == "NOSCRIPT");
    if error.code() == Some("MOVED") {
        let source = format!(
            "the server is a Redis Cluster node and another node serves this namespace: connect with redis+cluster://HOST:PORT[,HOST:PORT…] ({error})"
        );
        return LeaseError::backend(BACKEND, op, key, false, source);
    }
    if refused {
        let source = format!(
            "the server refused the script; the user needs EVALSHA, SCRIPT LOAD and the keys {{namespace}}:* ({error})"
        );
        return LeaseError::backend(BACKEND, op, key, false, source);
    }
    LeaseError::backend(BACKEND, op, key, indeterminate, error)
}

/// One answer per request of a batch from the script's replies: the
/// batch's failure, told of each key, when the call failed.
fn answer_each<Req, T, R>(
    op: Op,
    batch: &[Req],
    key: impl Fn(&Req) -> &LeaseKey,
    replies: Result<Vec<T>, LeaseError>,
    each: impl Fn(&Req, T) -> Result<R, LeaseError>,
) -> Vec<Result<R, LeaseError>> {
    match replies {
        Ok(replies) if replies.len() == batch.len() => batch
            .iter()
            .zip(replies)
            .map(|(request, reply)| each(request, reply))
            .collect(),
        Ok(replies) => batch
            .iter()
            .map(|r| {
                Err(malformed(
                    op,
                    key(r),
                    format!("{} replies to a batch of {}", replies.len(), batch.len()),
                ))
            })
            .collect(),
        Err(error) => batch.iter().map(|r| Err(error.for_key(key(r)))).collect(),
    }
}

pub(crate) fn malformed(op: Op, key: &LeaseKey, why: String) -> LeaseError {
    // The script ran; only its reply is unreadable.
    LeaseError::backend(
        BACKEND,
        op,
        key,
        op.is_mutating(),
        format!("malformed reply: {why}"),
    )
}

/// A marker reply that is neither success nor absence: a conflict with the
/// existing value, a corrupt key, or an unreadable reply.
fn marker_refusal(op: Op, key: &LeaseKey, reply: &Reply) -> LeaseError {
    match (reply.tag(), reply.text(1)) {
        (b"conflict", Ok(existing)) => LeaseError::Conflict {
            key: key.clone(),
            existing,
        },
        _ => corrupt_or_malformed(op, key, reply),
    }
}

pub(crate) fn corrupt_or_malformed(op: Op, key: &LeaseKey, reply: &Reply) -> LeaseError {
    match (reply.tag(), reply.text(1)) {
        (b"corrupt", Ok(detail)) => LeaseError::Corrupt {
            key: key.clone(),
            detail,
        },
        _ => malformed(op, key, format!("unexpected reply {}", reply.describe())),
    }
}

#[async_trait]
impl LeaseStore for RedisStore {
    fn capabilities(&self) -> Capabilities {
        let capabilities = Capabilities::new(BACKEND)
            // Redis keys expire in milliseconds; the slack covers clock
            // rate differences between client and server.
            .with_ttl_granularity(Duration::from_millis(1))
            .with_expiry_slack(Duration::from_millis(10))
            .with_max_value_len(16 * 1024 * 1024)
            .with_wakeup(Wakeup::Notified {
                recheck: self.inner.config.wait_recheck,
            });
        match self.inner.config.restart_quarantine {
            // A longer grant could outlive the quarantine after a restart.
            Some(longest) => capabilities.with_max_ttl(longest),
            None => capabilities,
        }
    }

    async fn claim(
        &self,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError> {
        self.claim_or_reclaim(key, holder, ttl, None).await
    }

    async fn reclaim(
        &self,
        observed: &Fence,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError> {
        self.claim_or_reclaim(&observed.key, holder, ttl, Some(observed))
            .await
    }

    async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Grant, LeaseError> {
        let key = &fence.key;
        let ttl = self.capabilities().grant_ttl(key, ttl)?;
        let (own, ttl_ms) = (fence_record(fence), ttl.as_millis().to_string());
        let sent = Instant::now();
        let args: [&[u8]; 2] = [own.as_bytes(), ttl_ms.as_bytes()];
        let reply = self
            .run::<redis::Value>(
                Op::Renew,
                key,
                &self.inner.scripts.renew,
                &[self.record_key(key)],
                &args,
            )
            .await?;
        self.renewed(fence, ttl, sent, reply)
    }

    async fn renew_many(&self, renewals: &[(Fence, Duration)]) -> Vec<Result<Grant, LeaseError>> {
        let mut results: Vec<Option<Result<Grant, LeaseError>>> =
            renewals.iter().map(|_| None).collect();
        let mut valid = Vec::with_capacity(renewals.len());
        for (i, (fence, ttl)) in renewals.iter().enumerate() {
            match self.capabilities().grant_ttl(&fence.key, *ttl) {
                Ok(ttl) => valid.push((i, fence, ttl)),
                Err(error) => results[i] = Some(Err(error)),
            }
        }
        let batches = valid
            .chunks(RENEW_BATCH)
            .map(|batch| self.renew_batch(batch));
        for (batch, outcomes) in valid
            .chunks(RENEW_BATCH)
            .zip(futures::future::join_all(batches).await)
        {
            for ((i, _, _), outcome) in batch.iter().zip(outcomes) {
                results[*i] = Some(outcome);
            }
        }
        results.into_iter().flatten().collect()
    }

    async fn release(&self, fence: &Fence) -> Result<bool, LeaseError> {
        let key = &fence.key;
        let request = ReleaseRequest {
            key: key.clone(),
            own: fence_record(fence),
        };
        let limit = self.inner.config.call_timeout;
        with_timeout(
            Op::Release,
            key,
            limit,
            self.inner.releases.call(key, request),
        )
        .await
    }

    async fn inspect(&self, key: &LeaseKey) -> Result<Option<LeaseRecord>, LeaseError> {
        let reply = self
            .script(
                Op::Inspect,
                key,
                &self.inner.scripts.inspect,
                &[&self.record_key(key), &self.inner.floor_key],
                &[self.inner.quarantine_ms.as_bytes()],
            )
            .await?;
        match reply.tag() {
            b"corrupt" => Err(corrupt_or_malformed(Op::Inspect, key, &reply)),
            b"quarantined" => Self::quarantine_record(key, &reply)
                .map(Some)
                .map_err(|why| malformed(Op::Inspect, key, why)),
            _ => self.current(Op::Inspect, key, &reply),
        }
    }

    async fn put_marker(&self, key: &LeaseKey, value: &str) -> Result<(), LeaseError> {
        self.capabilities().check_value(key, value.len())?;
        let reply = self
            .script(
                Op::PutMarker,
                key,
                &self.inner.scripts.marker_put,
                &[self.marker_key(key)],
                &[value.as_bytes()],
            )
            .await?;
        match reply.tag() {
            b"set" => Ok(()),
            _ => Err(marker_refusal(Op::PutMarker, key, &reply)),
        }
    }

    async fn delete_marker(&self, key: &LeaseKey, value: &str) -> Result<bool, LeaseError> {
        let reply = self
            .script(
                Op::DeleteMarker,
                key,
                &self.inner.scripts.marker_delete,
                &[self.marker_key(key)],
                &[value.as_bytes()],
            )
            .await?;
        match reply.tag() {
            b"deleted" => Ok(true),
            b"absent" => Ok(false),
            _ => Err(marker_refusal(Op::DeleteMarker, key, &reply)),
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
        match self
            .read_value(Op::GetMarker, key, self.marker_key(key))
            .await?
        {
            None => Ok(None),
            Some(bytes) => lease_core::marker_text(key, bytes).map(Some),
        }
    }

    async fn guarded_write(
        &self,
        fence: &Fence,
        target: &LeaseKey,
        value: &[u8],
    ) -> Result<(), LeaseError> {
        self.capabilities().check_value(target, value.len())?;
        let key = &fence.key;
        let [id, incarnation, token] = Self::fence_args(fence);
        let keys = [self.record_key(key), self.guarded_key(target)];
        let reply = self
            .script(
                Op::GuardedWrite,
                key,
                &self.inner.scripts.guarded_write,
                &keys,
                &[&id, &incarnation, &token, value],
            )
            .await?;
        match reply.tag() {
            b"written" => Ok(()),
            b"corrupt" => Err(corrupt_or_malformed(Op::GuardedWrite, target, &reply)),
            _ => Err(LeaseError::lost(
                fence,
                self.current(Op::GuardedWrite, key, &reply)?,
            )),
        }
    }

    async fn read_guarded(&self, target: &LeaseKey) -> Result<Option<Vec<u8>>, LeaseError> {
        self.read_value(Op::ReadGuarded, target, self.guarded_key(target))
            .await
    }

    async fn wait_free(&self, key: &LeaseKey, timeout: Duration) -> Result<bool, LeaseError> {
        let give_up = Instant::now() + timeout;
        let config = &self.inner.config;
        let mut released = self
            .inner
            .notifier
            .listen(timeout.min(config.connect_timeout))
            .await;
        loop {
            let remaining = match self.inspect(key).await {
                Ok(None) | Err(LeaseError::Corrupt { .. }) => return Ok(true),
                Ok(Some(record)) => record.remaining,
                Err(error) if Instant::now() >= give_up => return Err(error),
                Err(_) => config.wait_recheck,
            };
            // Expiry publishes nothing: look again when the grant is due to
            // end, and at least every `wait_recheck` in case a message was
            // missed.
            let recheck =
                Instant::now() + remaining.min(config.wait_recheck) + Duration::from_millis(1);
            loop {
                tokio::select! {
                    message = released.recv() => match message {
                        Ok(released_key) if released_key != key.as_str() => continue,
                        Ok(_) | Err(_) => break,
                    },
                    () = tokio::time::sleep_until(recheck.min(give_up)) => break,
                }
            }
            if Instant::now() >= give_up {
                return Ok(self.inspect(key).await.is_ok_and(|r| r.is_none()));
            }
        }
    }
}
