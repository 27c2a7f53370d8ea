//! Connecting: one server, a Cluster or a primary under Sentinel, with or
//! without TLS, within the connect timeout; the scripts loaded up front;
//! and where the release subscription goes.

use std::sync::Arc;

use lease_core::LeaseError;
use redis::aio::ConnectionManagerConfig;

use crate::client::Client;
use crate::config::{BACKEND, RedisConfig};
use crate::connection::{Connection, SentinelPrimary};
use crate::notify::Source;
use crate::scripts::Scripts;

/// A client for the deployment `config` names, and the source of its
/// release subscription.
pub(crate) async fn open(config: RedisConfig) -> Result<(Client, Source), LeaseError> {
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
            let primary =
                SentinelPrimary::connect(sentinels, open, manager_config, config.connect_timeout)
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
    let scripts = Scripts::new();
    // Loaded now, so the first calls do not each find the script
    // missing and load it. Best effort: a call still loads its script
    // when the server lacks it (a restart, a user without SCRIPT LOAD
    // is told so by that call).
    let loads = scripts.all().into_iter().map(|script| {
        let mut connection = connection.clone();
        async move { script.load_async(&mut connection).await }
    });
    let _ = tokio::time::timeout(config.connect_timeout, futures::future::join_all(loads)).await;
    Ok((Client::new(config, connection, scripts), subscribe_to))
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
