//! Test hooks: how cases create conditions a store's API cannot.

use std::sync::Arc;

use std::time::Duration;

use async_trait::async_trait;
use lease_core::{BoxError, DynLeaseStore, LeaseKey};

/// A test hook: a way for cases to create a condition the store's API
/// cannot. A case that needs a hook runs exactly when the factory's
/// [`Hooks::offered`] holds it; otherwise it is reported *not run*, naming
/// the hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Hook {
    /// [`Hooks::plant_corrupt_record`].
    CorruptRecord,
    /// [`Hooks::restart_server`].
    RestartServer,
    /// [`Hooks::second_client`].
    SecondClient,
    /// [`Hooks::stored_records`].
    StoredRecords,
    /// [`Hooks::server_address`] and [`Hooks::store_through`]: the fault
    /// cases put a [`FaultProxy`](crate::faults::FaultProxy) between a
    /// store and its server.
    Network,
}

impl Hook {
    /// Every hook.
    pub const ALL: [Hook; 5] = [
        Hook::CorruptRecord,
        Hook::RestartServer,
        Hook::SecondClient,
        Hook::StoredRecords,
        Hook::Network,
    ];

    /// The name of the [`Hooks`] method that provides it.
    pub fn method(self) -> &'static str {
        match self {
            Hook::CorruptRecord => "plant_corrupt_record",
            Hook::RestartServer => "restart_server",
            Hook::SecondClient => "second_client",
            Hook::StoredRecords => "stored_records",
            Hook::Network => "store_through",
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.method())
    }
}

/// Test hooks a backend may offer. [`Hooks::offered`] says which; the
/// suite runs every case whose hooks are offered, and a hook method the
/// factory offered but did not implement fails the case that called it.
#[async_trait]
pub trait Hooks: Send + Sync {
    /// The hooks this backend implements: the cases needing them run.
    fn offered(&self) -> &[Hook] {
        &[]
    }

    /// Why `hook` is not offered, when there is a reason worth a report
    /// line (a deployment that cannot be proxied, a server someone else
    /// runs): it is shown with every case reported not run for want of it.
    fn why_not(&self, _hook: Hook) -> Option<String> {
        None
    }

    /// Stores unparseable bytes as the lease record of `key`
    /// ([`Hook::CorruptRecord`]).
    async fn plant_corrupt_record(&self, _key: &LeaseKey) -> Result<(), BoxError> {
        Err(not_implemented(Hook::CorruptRecord))
    }

    /// Restarts the server, losing whatever it does not persist; the store
    /// must keep working afterwards, reconnecting as it must
    /// ([`Hook::RestartServer`]).
    async fn restart_server(&self) -> Result<(), BoxError> {
        Err(not_implemented(Hook::RestartServer))
    }

    /// Another client of the same backend and namespace as the subject's
    /// store (its own connection, its own background work): what one
    /// process does, another must see ([`Hook::SecondClient`]).
    async fn second_client(&self) -> Result<DynLeaseStore, BoxError> {
        Err(not_implemented(Hook::SecondClient))
    }

    /// How many records the backend keeps for this subject's namespace now:
    /// lease records live or ended, and anything it keeps per key to order
    /// tokens. The suite checks that this stays O(live + recently ended)
    /// ([`Hook::StoredRecords`]).
    async fn stored_records(&self) -> Result<usize, BoxError> {
        Err(not_implemented(Hook::StoredRecords))
    }

    /// Where the subject's server listens, as `host:port` on this machine:
    /// the fault cases start a [`FaultProxy`](crate::faults::FaultProxy)
    /// in front of it ([`Hook::Network`]).
    async fn server_address(&self) -> Result<String, BoxError> {
        Err(not_implemented(Hook::Network))
    }

    /// Another client of the subject's namespace, like
    /// [`Hooks::second_client`], that connects to `address` (the proxy,
    /// `127.0.0.1:PORT`) instead of the server and gives up on each call
    /// after `call_timeout` ([`Hook::Network`]). Whatever the store does
    /// on a lost connection — reconnect, retry, a pool — it does here too:
    /// that is what the fault cases judge.
    async fn store_through(
        &self,
        _address: &str,
        _call_timeout: Duration,
    ) -> Result<DynLeaseStore, BoxError> {
        Err(not_implemented(Hook::Network))
    }

    /// Called after each case, passed or not: remove what the case wrote.
    async fn finish(&self) {}
}

fn not_implemented(hook: Hook) -> BoxError {
    format!("the hook {hook} is not implemented, though a case needing it ran").into()
}

/// Another factory's hooks but one ([`Subject::withholding`]).
pub(crate) struct Withheld {
    inner: Arc<dyn Hooks>,
    offered: Vec<Hook>,
    hook: Hook,
    why: String,
}

impl Withheld {
    pub(crate) fn new(inner: Arc<dyn Hooks>, hook: Hook, why: String) -> Self {
        let offered = inner
            .offered()
            .iter()
            .copied()
            .filter(|offered| *offered != hook)
            .collect();
        Self {
            inner,
            offered,
            hook,
            why,
        }
    }
}

#[async_trait]
impl Hooks for Withheld {
    fn offered(&self) -> &[Hook] {
        &self.offered
    }

    fn why_not(&self, hook: Hook) -> Option<String> {
        if hook == self.hook {
            Some(self.why.clone())
        } else {
            self.inner.why_not(hook)
        }
    }

    async fn plant_corrupt_record(&self, key: &LeaseKey) -> Result<(), BoxError> {
        self.inner.plant_corrupt_record(key).await
    }

    async fn restart_server(&self) -> Result<(), BoxError> {
        self.inner.restart_server().await
    }

    async fn second_client(&self) -> Result<DynLeaseStore, BoxError> {
        self.inner.second_client().await
    }

    async fn stored_records(&self) -> Result<usize, BoxError> {
        self.inner.stored_records().await
    }

    async fn server_address(&self) -> Result<String, BoxError> {
        self.inner.server_address().await
    }

    async fn store_through(
        &self,
        address: &str,
        call_timeout: Duration,
    ) -> Result<DynLeaseStore, BoxError> {
        self.inner.store_through(address, call_timeout).await
    }

    async fn finish(&self) {
        self.inner.finish().await;
    }
}

/// Hooks for a backend that offers none.
#[derive(Debug, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}

/// Turns a hook's failure into the case's.
pub(crate) fn hook_failed(hook: Hook) -> impl FnOnce(BoxError) -> crate::CaseError {
    move |error| crate::CaseError::Failed(format!("the {hook} hook failed: {error}"))
}
