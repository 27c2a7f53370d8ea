//! What a backend hands the suite: a fresh store per case, and test hooks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use lease_core::{BoxError, DynLeaseStore, LeaseKey, MemoryStore};

use crate::Timing;

/// Gives each case a fresh, isolated store: a new random key prefix or
/// namespace on a shared server, never a wiped server.
#[async_trait]
pub trait Factory: Send + Sync {
    /// A store no other case uses.
    ///
    /// # Errors
    /// When the backend cannot be reached; the case fails with the reason.
    async fn open(&self) -> Result<Subject, BoxError>;

    /// Cases this backend knowingly cannot run (a test hook it lacks). Only
    /// these may end *not run* without failing a stamped test; they are
    /// still reported as not run, never as passed.
    fn expected_not_run(&self) -> &[&str] {
        &[]
    }
}

/// The error a [`Factory`] returns when its backend is not there and a
/// run may go on without it (a developer's machine without servers). The
/// cases end *unavailable*: reported, never passed.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "backend unavailable: {}", self.0)
    }
}

impl std::error::Error for Unavailable {}

/// Test hooks a backend may offer so that cases can create conditions the
/// store's API cannot: a corrupt record, a restart that loses data. A hook
/// that is not offered returns `None` and the cases needing it are *not
/// run*.
#[async_trait]
pub trait Hooks: Send + Sync {
    /// Stores unparseable bytes as the lease record of `key`.
    async fn plant_corrupt_record(&self, _key: &LeaseKey) -> Option<Result<(), BoxError>> {
        None
    }

    /// Restarts the server, losing whatever it does not persist; the store
    /// must keep working afterwards (reconnecting as it must).
    async fn restart_server(&self) -> Option<Result<(), BoxError>> {
        None
    }

    /// Another client of the same backend and namespace as the subject's
    /// store (its own connection, its own background work): what one
    /// process does, another must see.
    async fn second_client(&self) -> Option<Result<DynLeaseStore, BoxError>> {
        None
    }

    /// How many records the backend keeps for this subject's namespace now:
    /// lease records live or ended, and anything it keeps per key to order
    /// tokens. The suite checks that this stays O(live + recently ended).
    async fn stored_records(&self) -> Option<Result<usize, BoxError>> {
        None
    }

    /// Called after each case, passed or not: remove what the case wrote.
    async fn finish(&self) {}
}

/// Hooks for a backend that offers none.
#[derive(Debug, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}

/// How hard the generated checks work. From the environment by default.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Sequences the state-machine test tries (`LEASE_CONFORMANCE_CASES`,
    /// default 24).
    pub property_cases: u32,
    /// Steps per sequence at most (`LEASE_CONFORMANCE_STEPS`, default 24).
    pub property_steps: usize,
    /// How long the concurrent safety check contends, in TTLs
    /// (`LEASE_CONFORMANCE_SAFETY_TTLS`, default 8).
    pub safety_ttls: u32,
    /// Seeds the random cut-off points of the cancellation check
    /// (`LEASE_CONFORMANCE_SEED`; random when unset, and named in failures).
    pub seed: Option<u64>,
}

impl Settings {
    /// Settings read from the environment, with defaults sized so the whole
    /// suite takes well under a minute on the in-memory store.
    pub fn from_env() -> Self {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        }
        Self {
            property_cases: var("LEASE_CONFORMANCE_CASES", 24),
            property_steps: var("LEASE_CONFORMANCE_STEPS", 24),
            safety_ttls: var("LEASE_CONFORMANCE_SAFETY_TTLS", 8),
            seed: std::env::var("LEASE_CONFORMANCE_SEED")
                .ok()
                .and_then(|v| v.parse().ok()),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::from_env()
    }
}

/// One store under test, with its hooks and the suite's settings.
pub struct Subject {
    /// The store.
    pub store: DynLeaseStore,
    /// Its test hooks.
    pub hooks: Arc<dyn Hooks>,
    /// How hard to work.
    pub settings: Settings,
    pub(crate) tries: AtomicU32,
}

impl Subject {
    /// A subject with no hooks and settings from the environment.
    pub fn new(store: DynLeaseStore) -> Self {
        Self {
            store,
            hooks: Arc::new(NoHooks),
            settings: Settings::from_env(),
            tries: AtomicU32::new(0),
        }
    }

    /// Offers `hooks`.
    pub fn with_hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = hooks;
        self
    }

    /// Uses `settings`.
    pub fn with_settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// TTLs and waits for this store.
    pub fn timing(&self) -> Timing {
        Timing::new(&self.store.capabilities())
    }

    /// Records how many generated inputs a property case tried.
    pub(crate) fn note_tries(&self, tries: u32) {
        self.tries.store(tries, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject")
            .field("store", &self.store)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The in-memory reference store as a factory: a new store per case, with
/// the corrupt-record hook.
#[derive(Clone, Debug, Default)]
pub struct MemoryFactory;

struct MemoryHooks(MemoryStore);

#[async_trait]
impl Hooks for MemoryHooks {
    async fn plant_corrupt_record(&self, key: &LeaseKey) -> Option<Result<(), BoxError>> {
        self.0.plant_corrupt_record(key, "\u{0}not a record");
        Some(Ok(()))
    }

    async fn second_client(&self) -> Option<Result<DynLeaseStore, BoxError>> {
        // In one process, a second handle on the same store.
        Some(Ok(Arc::new(self.0.clone())))
    }

    async fn stored_records(&self) -> Option<Result<usize, BoxError>> {
        Some(Ok(self.0.records_kept()))
    }
}

#[async_trait]
impl Factory for MemoryFactory {
    async fn open(&self) -> Result<Subject, BoxError> {
        let store = MemoryStore::new();
        Ok(Subject::new(Arc::new(store.clone())).with_hooks(Arc::new(MemoryHooks(store))))
    }

    fn expected_not_run(&self) -> &[&str] {
        // One process's memory has no server to restart.
        &["tokens_increase_across_server_restart"]
    }
}
