//! This store's own grants: their deadlines, and the timers that end them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One grant made or renewed through this store.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Local {
    pub token: i64,
    /// The key's revision after our last write: the timer deletes only this.
    pub mod_revision: i64,
    pub deadline: Instant,
}

#[derive(Default)]
struct State {
    grants: HashMap<Vec<u8>, Local>,
    timers: HashSet<Vec<u8>>,
}

/// Deadlines of this store's grants, each ended by a timer task.
#[derive(Clone)]
pub(crate) struct Grants {
    state: Arc<Mutex<State>>,
    client: Client,
    call_timeout: Duration,
    stop: CancellationToken,
}

impl Grants {
    pub fn new(client: Client, call_timeout: Duration, stop: CancellationToken) -> Self {
        Self {
            state: Arc::default(),
            client,
            call_timeout,
            stop,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Updates are single inserts and removes: never half-done.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, key: &[u8]) -> Option<Local> {
        self.lock().grants.get(key).copied()
    }

    /// Records a grant (or its renewal) and makes sure a timer ends it.
    pub fn set(&self, key: &[u8], local: Local) {
        let mut state = self.lock();
        state.grants.insert(key.to_vec(), local);
        if state.timers.insert(key.to_vec()) {
            tokio::spawn(self.clone().end_at_deadline(key.to_vec()));
        }
    }

    /// Forgets the grant `token` on `key` (released, lost or replaced).
    pub fn forget(&self, key: &[u8], token: i64) {
        let mut state = self.lock();
        if state.grants.get(key).is_some_and(|l| l.token == token) {
            state.grants.remove(key);
        }
    }

    /// How many grants this store is timing.
    pub fn len(&self) -> usize {
        self.lock().grants.len()
    }

    async fn end_at_deadline(self, key: Vec<u8>) {
        loop {
            let local = {
                let mut state = self.lock();
                match state.grants.get(&key).copied() {
                    Some(local) => local,
                    None => {
                        state.timers.remove(&key);
                        return;
                    }
                }
            };
            if local.deadline > Instant::now() {
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    () = tokio::time::sleep_until(local.deadline) => continue,
                }
            }
            // Kept until the key is gone, so that a late renewal is refused.
            self.delete(&key, local).await;
            let mut state = self.lock();
            if state
                .grants
                .get(&key)
                .is_some_and(|l| l.token == local.token && l.mod_revision == local.mod_revision)
            {
                state.grants.remove(&key);
            }
            if !state.grants.contains_key(&key) {
                state.timers.remove(&key);
                return;
            }
        }
    }

    /// Deletes the key unless it was written since: a renewal that reached
    /// etcd first wins, and a newer grant is never touched. Retries until
    /// etcd answers: while this store lives it keeps the shared lease
    /// alive, so etcd would never end the grant by itself.
    async fn delete(&self, key: &[u8], local: Local) {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key,
                CompareOp::Equal,
                local.mod_revision,
            )])
            .and_then([TxnOp::delete(key, None)]);
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut client = self.client.clone();
            match tokio::time::timeout(self.call_timeout, client.txn(txn.clone())).await {
                Ok(Ok(_)) => return,
                failed => {
                    tracing::warn!(key = %String::from_utf8_lossy(key), ?failed, "ending an expired grant failed; retrying");
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}
