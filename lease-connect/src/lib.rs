//! One way to open a lease store from a URL.
//!
//! Each adapter declares its URL schemes and builds its own config from a
//! URL ([`lease_redis::RedisConfig::new`], [`lease_etcd::EtcdConfig::from_url`]);
//! this crate picks the adapter by scheme. The operator tool, the
//! conformance CLI, the examples and the benches all open stores here, so
//! a URL means the same thing to each of them.
//!
//! | URL | store |
//! | --- | --- |
//! | `memory` | a fresh in-memory store ([`lease_core::MemoryStore`]) |
//! | `redis://[USER:PASSWORD@]HOST:PORT[/DB]`, `rediss://…` | one Redis server |
//! | `redis+cluster://HOST:PORT[,HOST:PORT…]` | a Redis Cluster |
//! | `redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER` | the primary Sentinel names |
//! | `etcd://HOST:PORT[,HOST:PORT…]`, `etcds://…` | an etcd cluster |
//!
//! ```no_run
//! # async fn demo() -> Result<(), lease_core::LeaseError> {
//! let store = lease_connect::connect(&lease_connect::Target::new("redis://127.0.0.1:6379")).await?;
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use lease_core::{DynLeaseStore, LeaseError, MemoryStore};
use lease_etcd::{EtcdConfig, EtcdStore};
use lease_redis::{RedisConfig, RedisStore};

/// The forms a target URL takes, for messages and help texts.
pub const TARGET_FORMS: &str = "memory, redis://[USER:PASSWORD@]HOST:PORT[/DB], rediss://…, \
redis+cluster://HOST:PORT[,HOST:PORT…], redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER, \
etcd://HOST:PORT[,HOST:PORT…] or etcds://…";

/// A store by URL, as an operator, a test run or an example names it.
#[derive(Clone, Debug)]
pub struct Target {
    /// One of [`TARGET_FORMS`].
    pub url: String,
    /// Redis namespace (default `lease`).
    pub namespace: String,
    /// etcd key prefix (default `lease`).
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

/// The adapter a target names, with its config built from the URL.
#[derive(Clone, Debug)]
pub enum Backend {
    /// A fresh in-memory store.
    Memory,
    /// Redis: one server, a Cluster, or a primary under Sentinel.
    Redis(RedisConfig),
    /// An etcd cluster.
    Etcd(EtcdConfig),
}

fn invalid(what: String, rule: String) -> LeaseError {
    LeaseError::InvalidConfig {
        backend: "lease-connect",
        what,
        rule,
    }
}

/// The adapter and config `target` names.
///
/// # Errors
/// [`LeaseError::InvalidConfig`] naming the target (without credentials)
/// and the rule: an unknown scheme, a malformed URL, an unreadable CA file.
pub fn parse(target: &Target) -> Result<Backend, LeaseError> {
    let url = target.url.as_str();
    if url == "memory" {
        return Ok(Backend::Memory);
    }
    let ca = target
        .ca
        .as_ref()
        .map(|path| {
            std::fs::read(path).map_err(|e| {
                invalid(
                    format!("CA file {}", path.display()),
                    format!("must be a readable PEM file ({e})"),
                )
            })
        })
        .transpose()?;
    if lease_redis::is_redis_url(url) {
        let mut config = RedisConfig::new(url).namespace(&target.namespace);
        if let Some(pem) = ca {
            config = config.tls_root_ca(pem);
        }
        return Ok(Backend::Redis(config));
    }
    if lease_etcd::is_etcd_url(url) {
        let mut config = EtcdConfig::from_url(url)?.prefix(&target.prefix);
        if let Some((user, password)) = &target.credentials {
            config = config.credentials(user, password);
        }
        if let Some(pem) = ca {
            config = config.tls_root_ca(pem);
        }
        return Ok(Backend::Etcd(config));
    }
    Err(invalid(
        format!("target {:?}", lease_core::redacted_url(url)),
        format!("must be {TARGET_FORMS}"),
    ))
}

/// The store `target` names, connected (`memory`: a fresh in-memory store).
///
/// # Errors
/// What [`parse`] refuses; the adapters' connect errors.
pub async fn connect(target: &Target) -> Result<DynLeaseStore, LeaseError> {
    Ok(match parse(target)? {
        Backend::Memory => Arc::new(MemoryStore::new()),
        Backend::Redis(config) => Arc::new(RedisStore::connect(config).await?),
        Backend::Etcd(config) => Arc::new(EtcdStore::connect(config).await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> String {
        match parse(&Target::new(url)) {
            Err(error) => error.to_string(),
            Ok(backend) => panic!("{url} parsed as {backend:?}"),
        }
    }

    #[test]
    fn every_scheme_picks_its_adapter() {
        assert!(matches!(parse(&Target::new("memory")), Ok(Backend::Memory)));
        for url in [
            "redis://127.0.0.1:6379/0",
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
            "redis+sentinel://127.0.0.1:26379/leases",
        ] {
            assert!(
                matches!(parse(&Target::new(url)), Ok(Backend::Redis(_))),
                "{url}"
            );
        }
        let Ok(Backend::Etcd(config)) = parse(&Target::new("etcds://a:2379,b:2379/")) else {
            panic!("etcds:// is etcd");
        };
        assert_eq!(config.endpoints(), ["https://a:2379", "https://b:2379"]);
    }

    #[test]
    fn bad_targets_are_named_without_their_password() {
        let unknown = refused("mysql://user:hunter2@db:3306");
        assert!(unknown.contains("must be memory, redis://"), "{unknown}");
        assert!(!unknown.contains("hunter2"), "{unknown}");
        for url in [
            "etcd://",
            "etcd://user:pw@a:2379",
            "etcd://a:2379,,b:2379",
            "etcd://a:2379/x",
        ] {
            let why = refused(url);
            assert!(why.contains("HOST:PORT endpoints"), "{url}: {why}");
            assert!(!why.contains("pw@"), "{url}: {why}");
        }
        let mut target = Target::new("redis://127.0.0.1:6379");
        target.ca = Some("/nonexistent/ca.pem".into());
        let why = parse(&target).map(drop).unwrap_err().to_string();
        assert!(why.contains("CA file /nonexistent/ca.pem"), "{why}");
    }
}
