//! Test support: a conformance [`Factory`] for any Redis deployment a
//! [`RedisConfig`] reaches, each case in a fresh namespace, with the hooks
//! that need raw access to the namespace (a corrupt record, the records
//! stored, a second client). Behind the `testing` feature.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lease_core::{BoxError, DynLeaseStore, Fence, LeaseError, LeaseKey};

use lease_conformance::{Factory, Hook, Hooks, Subject, fresh_namespace};

use crate::list::glob_escaped;
use crate::{RedisConfig, RedisStore};

/// Opens a [`RedisStore`] with `config` in a fresh namespace per case,
/// offers the corrupt-record, second-client and stored-records hooks, and
/// deletes the namespace's keys afterwards.
#[derive(Clone, Debug)]
pub struct RedisFactory {
    config: RedisConfig,
}

impl RedisFactory {
    /// Cases on the deployment `config` reaches; its namespace is replaced
    /// by a fresh one per case.
    pub fn new(config: RedisConfig) -> Self {
        Self { config }
    }
}

/// Raw access to the namespace, for hooks and cleanup: through the store,
/// so a cluster's commands reach the node of the namespace's slot.
struct RedisHooks {
    store: RedisStore,
    config: RedisConfig,
}

impl RedisHooks {
    /// Every key of the namespace (SCAN skips expired ones).
    async fn namespace_keys(&self) -> Result<Vec<String>, BoxError> {
        let pattern = format!("{}*", glob_escaped(&self.store.client().key_prefix()));
        let (mut cursor, mut keys) = ("0".to_owned(), Vec::new());
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(&cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, found): (String, Vec<String>) =
                self.store.client().query_namespace(&scan).await?;
            keys.extend(found);
            if next == "0" {
                keys.sort();
                keys.dedup();
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

#[async_trait]
impl Hooks for RedisHooks {
    fn offered(&self) -> &[Hook] {
        // A server someone else runs is not restarted by the suite.
        const BASE: &[Hook] = &[Hook::CorruptRecord, Hook::SecondClient, Hook::StoredRecords];
        const PROXIED: &[Hook] = &[
            Hook::CorruptRecord,
            Hook::SecondClient,
            Hook::StoredRecords,
            Hook::Network,
        ];
        if self.config.server_address().is_some() {
            PROXIED
        } else {
            BASE
        }
    }

    fn why_not(&self, hook: Hook) -> Option<String> {
        match hook {
            Hook::Network => Some(
                "a cluster's nodes and a Sentinel's primary announce their own addresses, which a proxy in front of the URL's hosts cannot stand in for"
                    .into(),
            ),
            Hook::RestartServer => Some("the suite does not restart a server it did not start".into()),
            _ => None,
        }
    }

    async fn server_address(&self) -> Result<String, BoxError> {
        self.config
            .server_address()
            .ok_or_else(|| "not a single server's URL".into())
    }

    async fn store_through(
        &self,
        address: &str,
        call_timeout: Duration,
    ) -> Result<DynLeaseStore, BoxError> {
        let config = self
            .config
            .at_address(address)
            .ok_or("not a single server's URL")?
            .call_timeout(call_timeout)
            .connect_timeout(call_timeout);
        let store = RedisStore::connect(config).await?;
        Ok(Arc::new(store))
    }

    async fn plant_corrupt_record(&self, key: &LeaseKey) -> Result<(), BoxError> {
        let planted = async {
            let mut set = redis::cmd("SET");
            set.arg(self.store.client().record_key(key))
                .arg("\u{0}not a lease record");
            let _: () = self.store.client().query_namespace(&set).await?;
            Ok(())
        };
        planted.await
    }

    async fn second_client(&self) -> Result<DynLeaseStore, BoxError> {
        let store = RedisStore::connect(self.config.clone()).await;
        store
            .map(|s| Arc::new(s) as DynLeaseStore)
            .map_err(Into::into)
    }

    async fn stored_records(&self) -> Result<usize, BoxError> {
        self.namespace_keys().await.map(|keys| keys.len())
    }

    async fn finish(&self) {
        let cleanup = async {
            let keys = self.namespace_keys().await?;
            for chunk in keys.chunks(512) {
                let _: () = self
                    .store
                    .client()
                    .query_namespace(redis::cmd("DEL").arg(chunk))
                    .await?;
            }
            Ok::<_, BoxError>(())
        };
        if let Err(why) = cleanup.await {
            eprintln!(
                "lease-conformance: could not clean up {}: {why}",
                self.store.client().key_prefix()
            );
        }
    }
}

#[async_trait]
impl Factory for RedisFactory {
    async fn open(&self) -> Result<Subject, BoxError> {
        let config = self.config.clone().namespace(fresh_namespace());
        let store = RedisStore::connect(config.clone()).await?;
        let hooks = RedisHooks {
            store: store.clone(),
            config,
        };
        Ok(Subject::new(Arc::new(store)).with_hooks(Arc::new(hooks)))
    }
}

/// The record `store` keeps for `key`, as Redis holds it (`None` when
/// there is none): with [`fence_record`], for a test that pins the record
/// the Lua scripts write to the one the client sends.
///
/// # Errors
/// The server's error, or a timeout.
pub async fn stored_record(
    store: &RedisStore,
    key: &LeaseKey,
) -> Result<Option<String>, LeaseError> {
    let mut get = redis::cmd("GET");
    get.arg(store.client().record_key(key));
    store.client().query_namespace(&get).await
}

/// The record the client sends to renew or release `fence`, which the
/// scripts compare with the stored one as text.
pub fn fence_record(fence: &Fence) -> String {
    crate::reply::fence_record(fence)
}
