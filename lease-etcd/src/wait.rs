//! Waiting for a key to be free: a watch from the revision read, with a
//! timed re-check.

use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use lease_core::{LeaseError, LeaseKey, Op};
use tokio::time::Instant;

use crate::client::Client;
use crate::leases::MARGIN;
use crate::record::Found;

impl Client {
    pub(crate) async fn wait_until_free(
        &self,
        key: &LeaseKey,
        timeout: Duration,
    ) -> Result<bool, LeaseError> {
        let give_up = Instant::now() + timeout;
        let etcd_key = self.record_key(key);
        let recheck_every = self.config.wait_recheck;
        loop {
            let (kv, revision) = match self.get(Op::Wait, key, &etcd_key).await {
                Ok(read) => read,
                Err(error) if Instant::now() >= give_up => return Err(error),
                Err(_) => {
                    tokio::time::sleep(recheck_every.min(give_up - Instant::now())).await;
                    continue;
                }
            };
            // A corrupt record counts as free; a held one ends at the
            // latest when its etcd lease does.
            let left = match Found::from_kv(kv.as_ref()) {
                Found::Absent | Found::Corrupt { .. } => return Ok(true),
                Found::Held(held) => held.ttl + MARGIN,
            };
            if Instant::now() >= give_up {
                return Ok(false);
            }
            let recheck = (Instant::now() + left.min(recheck_every)).min(give_up);
            // Watch from just after the read: no delete can slip between.
            let mut watcher = self.client.watch_client();
            let options = WatchOptions::new().with_start_revision(revision + 1);
            let watch = tokio::time::timeout(
                self.call_timeout(),
                watcher.watch(etcd_key.as_str(), Some(options)),
            )
            .await;
            let Ok(Ok(mut stream)) = watch else {
                tokio::time::sleep_until(recheck).await;
                continue;
            };
            loop {
                tokio::select! {
                    message = stream.message() => match message {
                        // Compacted past our revision, or closed: read again.
                        Ok(Some(response)) if response.canceled() => break,
                        Ok(Some(response)) => {
                            if response.events().iter().any(|e| e.event_type() == EventType::Delete) {
                                return Ok(true);
                            }
                        }
                        Ok(None) | Err(_) => break,
                    },
                    () = tokio::time::sleep_until(recheck) => break,
                }
            }
        }
    }
}
