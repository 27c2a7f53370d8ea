//! Connecting to the store a target URL names.

use std::path::PathBuf;
use std::sync::Arc;

use lease_core::{DynLeaseStore, LeaseError, MemoryStore};
use lease_etcd::{EtcdConfig, EtcdStore};
use lease_redis::{RedisConfig, RedisStore};

/// A store by URL, as an operator or an example names it.
#[derive(Clone, Debug)]
pub struct Target {
    /// `memory`, `redis://[USER:PASSWORD@]HOST:PORT[/DB]`, `rediss://…`,
    /// `redis+cluster://HOST:PORT[,HOST:PORT…]`,
    /// `redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER`,
    /// `etcd://HOST:PORT[,HOST:PORT…]` or `etcds://…`.
    pub url: String,
    /// Redis namespace.
    pub namespace: String,
    /// etcd key prefix.
    pub prefix: String,
    /// etcd user and password.
    pub credentials: Option<(String, String)>,
    /// CA certificate (PEM file) to trust for TLS.
    pub ca: Option<PathBuf>,
}

impl Target {
    /// `url` with the default namespace and prefix (`lease`).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            namespace: "lease".to_owned(),
            prefix: "lease".to_owned(),
            credentials: None,
            ca: None,
        }
    }
}

fn invalid(what: String, rule: &str) -> LeaseError {
    LeaseError::InvalidConfig {
        backend: "lease-admin",
        what,
        rule: rule.to_owned(),
    }
}

fn ca(args: &Target) -> Result<Option<Vec<u8>>, LeaseError> {
    args.ca
        .as_ref()
        .map(|path| {
            std::fs::read(path).map_err(|e| {
                invalid(
                    format!("CA file {}", path.display()),
                    &format!("must be a readable PEM file ({e})"),
                )
            })
        })
        .transpose()
}

/// The store `args` names, connected (`memory`: a fresh in-memory store).
///
/// # Errors
/// [`LeaseError::InvalidConfig`] naming the target and the rule for a
/// malformed one (without its credentials); the adapters' connect errors.
pub async fn connect(args: &Target) -> Result<DynLeaseStore, LeaseError> {
    let target = args.url.as_str();
    if target == "memory" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    let shown = lease_core::redacted_url(target);
    if lease_redis::is_redis_url(target) {
        let mut config = RedisConfig::new(target).namespace(&args.namespace);
        if let Some(pem) = ca(args)? {
            config = config.tls_root_ca(pem);
        }
        return Ok(Arc::new(RedisStore::connect(config).await?));
    }
    let (scheme, endpoints) = if let Some(rest) = target.strip_prefix("etcd://") {
        ("http", rest)
    } else if let Some(rest) = target.strip_prefix("etcds://") {
        ("https", rest)
    } else {
        return Err(invalid(
            format!("target {shown:?}"),
            "must be memory, redis://HOST:PORT[/DB], rediss://…, redis+cluster://HOST:PORT[,HOST:PORT…], redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER, etcd://HOST:PORT[,HOST:PORT…] or etcds://…",
        ));
    };
    if endpoints.is_empty() || endpoints.contains('@') {
        return Err(invalid(
            format!("target {shown:?}"),
            "must list HOST:PORT endpoints; an etcd user goes in --user, its password in LEASE_ADMIN_ETCD_PASSWORD",
        ));
    }
    let endpoints: Vec<String> = endpoints
        .split(',')
        .map(|e| format!("{scheme}://{e}"))
        .collect();
    let mut config = EtcdConfig::new(endpoints).prefix(&args.prefix);
    if let Some((user, password)) = &args.credentials {
        config = config.credentials(user, password);
    }
    if let Some(pem) = ca(args)? {
        config = config.tls_root_ca(pem);
    }
    Ok(Arc::new(EtcdStore::connect(config).await?))
}
