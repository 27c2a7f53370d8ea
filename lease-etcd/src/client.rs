//! The bottom layer: the connection, one transaction or read under the
//! call timeout, error mapping and the prefix's key formats. Every
//! operation file sends through [`Client`].

use std::time::Duration;

use etcd_client::{Client as EtcdClient, ConnectOptions, KeyValue, KvClient, Txn, TxnResponse};
use lease_core::{
    Capabilities, Fence, Holder, LeaseError, LeaseKey, LeaseRecord, Op, Wakeup, with_timeout,
};
use tokio_util::sync::CancellationToken;

use crate::config::{BACKEND, EtcdConfig};
use crate::leases::{LeaseFailure, Leases, MARGIN};
use crate::record::{Found, Held, token_of};

/// etcd's default limit on operations in one transaction (`--max-txn-ops`).
pub(crate) const MAX_TXN_OPS: usize = 128;

/// A connection to the cluster and the pool of etcd leases grants hang on.
pub(crate) struct Client {
    pub config: EtcdConfig,
    pub client: EtcdClient,
    pub kv: KvClient,
    pub leases: Leases,
    stop: CancellationToken,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Client {
    /// Connects to the cluster `config` names, within its connect timeout.
    pub async fn open(config: EtcdConfig) -> Result<Self, LeaseError> {
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
            EtcdClient::connect(&config.endpoints, Some(options)),
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
            leases: Leases::new(client.lease_client(), config.call_timeout, stop.clone()),
            kv: client.kv_client(),
            client,
            config,
            stop,
        })
    }

    pub fn capabilities(&self) -> Capabilities {
        Capabilities::new(BACKEND)
            .with_min_ttl(Duration::from_secs(1))
            .with_ttl_granularity(Duration::from_secs(1))
            // The lease margin, plus etcd's expiry check (every 500 ms) and
            // the revocation it proposes.
            .with_expiry_slack(Duration::from_secs(2))
            .with_max_value_len(1024 * 1024)
            .with_wakeup(Wakeup::Notified {
                recheck: self.config.wait_recheck,
            })
    }

    /// The etcd key holding `key`'s grant.
    pub(crate) fn record_key(&self, key: &LeaseKey) -> String {
        format!("{}/lease/{key}", self.config.prefix)
    }

    /// The etcd key holding the marker `key`.
    pub(crate) fn marker_key(&self, key: &LeaseKey) -> String {
        format!("{}/marker/{key}", self.config.prefix)
    }

    /// The etcd key holding the guarded value `key`.
    pub(crate) fn guarded_key(&self, key: &LeaseKey) -> String {
        format!("{}/guarded/{key}", self.config.prefix)
    }

    /// Every etcd key of this store starts with this.
    #[cfg(feature = "testing")]
    pub(crate) fn key_prefix(&self) -> String {
        format!("{}/", self.config.prefix)
    }

    pub(crate) fn call_timeout(&self) -> Duration {
        self.config.call_timeout
    }

    /// Runs `txn` under the call timeout, with etcd's own error.
    pub(crate) async fn txn_raw(
        &self,
        op: Op,
        key: &LeaseKey,
        txn: Txn,
    ) -> Result<Result<TxnResponse, etcd_client::Error>, LeaseError> {
        let mut kv = self.kv.clone();
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
            .map_err(|e| etcd_error(op, key, self.call_timeout(), e))
    }

    pub(crate) async fn get(
        &self,
        op: Op,
        key: &LeaseKey,
        etcd_key: &str,
    ) -> Result<(Option<KeyValue>, i64), LeaseError> {
        let mut kv = self.kv.clone();
        let after = self.call_timeout();
        let response = with_timeout(op, key, after, async move {
            kv.get(etcd_key, None)
                .await
                .map_err(|e| etcd_error(op, key, after, e))
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
            LeaseFailure::Call(error) => etcd_error(op, key, self.call_timeout(), error),
            LeaseFailure::TimedOut => LeaseError::Timeout {
                op,
                key: key.clone(),
                after: self.call_timeout(),
            },
        }
    }
}

/// An etcd error as a [`LeaseError`], indeterminate when the request may
/// have been applied; the channel's own deadline (`after`, the call
/// timeout) is a [`LeaseError::Timeout`] like the store's.
pub(crate) fn etcd_error(
    op: Op,
    key: &LeaseKey,
    after: Duration,
    error: etcd_client::Error,
) -> LeaseError {
    use etcd_client::Error;
    if let Error::GRpcStatus(status) = &error {
        let code = status.code() as i32;
        // DeadlineExceeded, or the channel's timeout cancelling the call.
        if code == 4 || (code == 1 && status.message() == "Timeout expired") {
            return LeaseError::Timeout {
                op,
                key: key.clone(),
                after,
            };
        }
    }
    let indeterminate = match &error {
        Error::GRpcStatus(status) => {
            // Unavailable, DeadlineExceeded, Cancelled, Unknown.
            matches!(status.code() as i32, 14 | 4 | 1 | 2)
        }
        // A keep-alive stream that broke may have carried the renewal.
        Error::TransportError(_) | Error::IoError(_) | Error::LeaseKeepAliveError(_) => true,
        _ => false,
    };
    LeaseError::backend(BACKEND, op, key, indeterminate, error)
}

/// The token of a grant as the claim returns it.
pub(crate) fn fence_of(key: &LeaseKey, holder: &Holder, revision: i64) -> Fence {
    Fence {
        key: key.clone(),
        holder: holder.clone(),
        token: token_of(revision),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_keep_alive_stream_leaves_the_renewal_unknown() {
        let key = LeaseKey::new("k").unwrap();
        let broken = etcd_client::Error::LeaseKeepAliveError("h2 protocol error".into());
        let after = Duration::from_secs(1);
        assert!(etcd_error(Op::Renew, &key, after, broken).is_indeterminate());
        let refused = etcd_client::Error::InvalidArgs("bad".into());
        assert!(!etcd_error(Op::Renew, &key, after, refused).is_indeterminate());
    }

    #[test]
    fn the_channels_deadline_is_a_timeout() {
        let key = LeaseKey::new("k").unwrap();
        let after = Duration::from_millis(300);
        let status = etcd_client::Error::GRpcStatus(tonic::Status::cancelled("Timeout expired"));
        let error = etcd_error(Op::Claim, &key, after, status);
        assert!(
            matches!(error, LeaseError::Timeout { after: a, .. } if a == after),
            "{error:?}"
        );
        assert!(error.is_indeterminate());
        let cancelled = etcd_client::Error::GRpcStatus(tonic::Status::cancelled("gone"));
        let error = etcd_error(Op::Claim, &key, after, cancelled);
        assert!(matches!(error, LeaseError::Backend { .. }), "{error:?}");
    }
}
