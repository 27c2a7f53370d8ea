//! Waiting for a key to be free (rule: a waiter wakes soon after a
//! release): the loop is `lease_core::wait_until_free`; a look reads the
//! record, then watches the key from just after the revision read, so no
//! delete can slip between them.

use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use lease_core::{LeaseError, LeaseKey, Looked, Op};

use crate::client::Client;
use crate::leases::MARGIN;
use crate::record::Found;

impl Client {
    pub(crate) async fn wait_until_free(
        &self,
        key: &LeaseKey,
        timeout: Duration,
    ) -> Result<bool, LeaseError> {
        let etcd_key = self.record_key(key);
        // A held key ends at the latest when its etcd lease does: the
        // grant's TTL and the lease's margin.
        let every = (self.config.wait_recheck, MARGIN);
        lease_core::wait_until_free(timeout, every, || self.look(key, &etcd_key)).await
    }

    async fn look(
        &self,
        key: &LeaseKey,
        etcd_key: &str,
    ) -> Result<Looked<impl Future<Output = ()> + use<>>, LeaseError> {
        let (kv, revision) = self.get(Op::Wait, key, etcd_key).await?;
        // A corrupt record counts as free.
        let remaining = match Found::from_kv(kv.as_ref()) {
            Found::Absent | Found::Corrupt { .. } => return Ok(Looked::Free),
            Found::Held(held) => held.ttl,
        };
        let mut watcher = self.client.watch_client();
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let watch =
            tokio::time::timeout(self.call_timeout(), watcher.watch(etcd_key, Some(options))).await;
        let freed = async move {
            // No watch: only the re-check or the grant's end wakes.
            let Ok(Ok(mut stream)) = watch else {
                return std::future::pending().await;
            };
            let _watcher = watcher;
            loop {
                match stream.message().await {
                    // Compacted past our revision, or closed: look again.
                    Ok(Some(response)) if response.canceled() => return,
                    Ok(Some(response)) => {
                        let events = response.events();
                        if events.iter().any(|e| e.event_type() == EventType::Delete) {
                            return;
                        }
                    }
                    Ok(None) | Err(_) => return,
                }
            }
        };
        Ok(Looked::Held { remaining, freed })
    }
}
