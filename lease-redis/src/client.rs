//! The bottom layer: the connection, one script call (with `WAIT` in the
//! same round trip when asked), error mapping and the namespace's key
//! formats. Every operation file sends through [`Client::run`].

use std::time::Duration;

use lease_core::{Capabilities, LeaseError, LeaseKey, Op, Wakeup, with_timeout};
use redis::{FromRedisValue, Script};

use crate::config::{BACKEND, RedisConfig};
use crate::connection::Connection;
use crate::reply::{Reply, malformed};
use crate::scripts::Scripts;

/// A connection to the deployment, its scripts, and the namespace's fixed
/// keys and arguments.
pub(crate) struct Client {
    pub config: RedisConfig,
    pub connection: Connection,
    pub scripts: Scripts,
    /// The namespace's token floor key (see `lua/prelude.lua`).
    pub floor_key: String,
    /// The pub/sub channel releases are announced on.
    pub channel: String,
    /// The restart quarantine in ms, as the scripts take it: 0 when off.
    pub quarantine_ms: String,
    /// The order this store sends its renewals in (`renew.lua` applies a
    /// renewal only if no later one of this store was applied).
    pub renewals: lease_core::Sequencer,
}

impl Client {
    pub fn new(config: RedisConfig, connection: Connection, scripts: Scripts) -> Self {
        let quarantine_ms = config
            .restart_quarantine
            .map_or(0, |q| q.as_millis().max(1))
            .to_string();
        Self {
            floor_key: format!("{{{}}}:floor", config.namespace),
            channel: channel(&config.namespace),
            quarantine_ms,
            renewals: lease_core::Sequencer::new(),
            config,
            connection,
            scripts,
        }
    }

    pub fn capabilities(&self) -> Capabilities {
        let capabilities = Capabilities::new(BACKEND)
            // Redis keys expire in milliseconds; the slack covers clock
            // rate differences between client and server.
            .with_ttl_granularity(Duration::from_millis(1))
            .with_expiry_slack(Duration::from_millis(10))
            .with_max_value_len(16 * 1024 * 1024)
            .with_wakeup(Wakeup::Notified {
                recheck: self.config.wait_recheck,
            });
        match self.config.restart_quarantine {
            // A longer grant could outlive the quarantine after a restart.
            Some(longest) => capabilities.with_max_ttl(longest),
            None => capabilities,
        }
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

    #[cfg(any(test, feature = "testing"))]
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
        let limit = self.config.call_timeout;
        let mut connection = self.connection.clone();
        with_timeout(Op::Inspect, &key, limit, async {
            connection
                .query_at(cmd, &self.key_prefix())
                .await
                .map_err(|e| redis_error(Op::Inspect, &key, e, limit))
        })
        .await
    }

    #[cfg(any(test, feature = "testing"))]
    /// Every Redis key of this store's namespace starts with this.
    pub(crate) fn key_prefix(&self) -> String {
        format!("{{{}}}:", self.config.namespace)
    }

    pub(crate) fn redis_key(&self, space: &str, key: &LeaseKey) -> String {
        format!("{{{}}}:{space}:{key}", self.config.namespace)
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
        let mut connection = self.connection.clone();
        let limit = self.config.call_timeout;
        with_timeout(op, key, limit, async {
            match self.config.wait_for_replicas {
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
        let limit = self.config.call_timeout;
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

    pub(crate) async fn script(
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
}

/// The channel releases in `namespace` are announced on.
pub(crate) fn channel(namespace: &str) -> String {
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
pub(crate) fn answer_each<Req, T, R>(
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
