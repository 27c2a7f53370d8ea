//! The suite against a Redis server given by URL.

use std::sync::Arc;

use async_trait::async_trait;
use lease_core::{BoxError, DynLeaseStore, LeaseKey};
use lease_redis::{RedisConfig, RedisStore};
use redis::AsyncCommands;

use crate::{Factory, Hooks, Subject};

/// Opens a [`RedisStore`] on `url` with a fresh namespace per case, offers
/// the corrupt-record hook, and deletes the namespace's keys afterwards.
#[derive(Clone, Debug)]
pub struct RedisTarget {
    url: String,
}

impl RedisTarget {
    /// A target for the server at `url` (`redis://HOST:PORT[/DB]`).
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into() }
    }
}

/// Raw access to the namespace, for hooks and cleanup.
struct RedisHooks {
    store: RedisStore,
    client: redis::Client,
    config: RedisConfig,
}

impl RedisHooks {
    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, BoxError> {
        Ok(self.client.get_multiplexed_async_connection().await?)
    }

    /// Every key of the namespace (SCAN skips expired ones).
    async fn namespace_keys(&self) -> Result<Vec<String>, BoxError> {
        let mut connection = self.connection().await?;
        let pattern = format!("{}*", redis_glob_escape(&self.store.key_prefix()));
        let mut iter = connection.scan_match::<_, String>(pattern).await?;
        let mut keys = Vec::new();
        while let Some(key) = futures::StreamExt::next(&mut iter).await {
            keys.push(key?);
        }
        Ok(keys)
    }
}

#[async_trait]
impl Hooks for RedisHooks {
    async fn plant_corrupt_record(&self, key: &LeaseKey) -> Option<Result<(), BoxError>> {
        let planted = async {
            let mut connection = self.connection().await?;
            let _: () = connection
                .set(self.store.record_key(key), "\u{0}not a lease record")
                .await?;
            Ok(())
        };
        Some(planted.await)
    }

    async fn second_client(&self) -> Option<Result<DynLeaseStore, BoxError>> {
        let store = RedisStore::connect(self.config.clone()).await;
        Some(
            store
                .map(|s| Arc::new(s) as DynLeaseStore)
                .map_err(Into::into),
        )
    }

    async fn stored_records(&self) -> Option<Result<usize, BoxError>> {
        Some(self.namespace_keys().await.map(|keys| keys.len()))
    }

    async fn finish(&self) {
        let cleanup = async {
            let mut connection = self.connection().await?;
            let keys = self.namespace_keys().await?;
            for chunk in keys.chunks(512) {
                let _: () = connection.del(chunk).await?;
            }
            Ok::<_, BoxError>(())
        };
        if let Err(why) = cleanup.await {
            eprintln!(
                "lease-conformance: could not clean up {}: {why}",
                self.store.key_prefix()
            );
        }
    }
}

fn redis_glob_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
            _ => vec![c],
        })
        .collect()
}

#[async_trait]
impl Factory for RedisTarget {
    async fn open(&self) -> Result<Subject, BoxError> {
        let config = RedisConfig::new(&self.url).namespace(super::fresh_namespace());
        let store = RedisStore::connect(config.clone()).await?;
        let client = redis::Client::open(self.url.as_str())?;
        let hooks = RedisHooks {
            store: store.clone(),
            client,
            config,
        };
        Ok(Subject::new(Arc::new(store)).with_hooks(Arc::new(hooks)))
    }

    fn expected_not_run(&self) -> &[&str] {
        // A server someone else runs is not restarted by the suite.
        &["tokens_increase_across_server_restart"]
    }
}
