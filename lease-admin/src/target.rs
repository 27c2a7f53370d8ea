//! Connecting to the store a target URL names.

use std::sync::Arc;

use lease_core::{DynLeaseStore, LeaseError};
use lease_etcd::{EtcdConfig, EtcdStore};
use lease_redis::{RedisConfig, RedisStore};

use crate::Args;

fn invalid(what: String, rule: &str) -> LeaseError {
    LeaseError::InvalidConfig {
        backend: "lease-admin",
        what,
        rule: rule.to_owned(),
    }
}

fn ca(args: &Args) -> Result<Option<Vec<u8>>, LeaseError> {
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

/// The store `args.target` names, connected.
pub async fn connect(args: &Args) -> Result<DynLeaseStore, LeaseError> {
    let target = args.target.as_str();
    let shown = lease_core::redacted_url(target);
    if target.starts_with("redis://") || target.starts_with("rediss://") {
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
            "must be redis://HOST:PORT[/DB], rediss://…, etcd://HOST:PORT[,HOST:PORT…] or etcds://…",
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
    if let Some(user) = &args.user {
        let password = std::env::var("LEASE_ADMIN_ETCD_PASSWORD").map_err(|_| {
            invalid(
                format!("etcd user {user:?}"),
                "needs its password in LEASE_ADMIN_ETCD_PASSWORD",
            )
        })?;
        config = config.credentials(user, password);
    }
    if let Some(pem) = ca(args)? {
        config = config.tls_root_ca(pem);
    }
    Ok(Arc::new(EtcdStore::connect(config).await?))
}
