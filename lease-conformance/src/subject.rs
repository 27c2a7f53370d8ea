//! What a backend hands the suite: a fresh store per case, and test hooks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use std::time::Duration;

use async_trait::async_trait;
use lease_core::{BoxError, DynLeaseStore, Fence, Grant, LeaseStore};
use tokio::time::Instant;

use crate::hooks::{NoHooks, Withheld};
use crate::lag::Lag;
use crate::{CaseError, CaseResult, Hook, Hooks, Timing};

/// Gives each case a fresh, isolated store: a new random key prefix or
/// namespace on a shared server, never a wiped server.
#[async_trait]
pub trait Factory: Send + Sync {
    /// A store no other case uses.
    ///
    /// # Errors
    /// When the backend cannot be reached; the case fails with the reason.
    /// [`Unavailable`] says the backend is not there at all: the run reports
    /// every case *not run* and, where a backend is required (`CI` set, or
    /// `LEASE_CONFORMANCE_REQUIRE_BACKEND=1`), fails.
    async fn open(&self) -> Result<Subject, BoxError>;
}

/// A namespace (key prefix) no other case or run uses, for factories that
/// give each case its own part of a shared server.
pub fn fresh_namespace() -> String {
    format!("lease-conformance-{:016x}", rand::random::<u64>())
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
    /// Scales the case's TTLs: more on each try after a starved one.
    pub(crate) room: u32,
    /// When the case started: failures give instants relative to it.
    pub(crate) started: Instant,
    /// How late the runner ran, while the case runs.
    pub(crate) lag: Lag,
}

impl Subject {
    /// A subject with no hooks and settings from the environment.
    pub fn new(store: DynLeaseStore) -> Self {
        Self {
            store,
            hooks: Arc::new(NoHooks),
            settings: Settings::from_env(),
            tries: AtomicU32::new(0),
            room: 1,
            started: Instant::now(),
            lag: Lag::default(),
        }
    }

    /// Offers `hooks`.
    pub fn with_hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = hooks;
        self
    }

    /// Withholds `hook`: cases needing it are reported not run, `why`
    /// given as the reason (a command line's `--no-faults`, say).
    pub fn withholding(mut self, hook: Hook, why: impl Into<String>) -> Self {
        self.hooks = Arc::new(Withheld::new(self.hooks, hook, why.into()));
        self
    }

    /// Uses `settings`.
    pub fn with_settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// TTLs and waits for this store, with the room this try has.
    pub fn timing(&self) -> Timing {
        let caps = self.store.capabilities();
        Timing::new(&caps).with_room(self.room, &caps)
    }

    /// `at` as an instant of the case: milliseconds since it started.
    pub fn at(&self, at: Instant) -> String {
        match at.checked_duration_since(self.started) {
            Some(since) => format!("+{:.1}ms", since.as_secs_f64() * 1e3),
            None => format!("-{:.1}ms", (self.started - at).as_secs_f64() * 1e3),
        }
    }

    /// The longest the runner itself stalled during `[from, to]`.
    pub fn runner_lag(&self, from: Instant, to: Instant) -> Duration {
        self.lag.worst(from, to)
    }

    /// Judges a delay the backend is allowed at most `allowed` for: `what`
    /// took from `from` to `to`. Over the allowance it is a failure — unless
    /// the runner itself stalled for the excess meanwhile, which makes it
    /// starved (tried again, then inconclusive).
    ///
    /// # Errors
    /// [`CaseError::Failed`] or [`CaseError::Starved`], each with the
    /// instants measured.
    pub fn within(&self, what: &str, from: Instant, to: Instant, allowed: Duration) -> CaseResult {
        let took = to.saturating_duration_since(from);
        if took <= allowed {
            return Ok(());
        }
        let lag = self.runner_lag(from, to);
        let measured = format!(
            "{what} took {took:.1?} (from {} to {}), over the {allowed:?} allowed",
            self.at(from),
            self.at(to)
        );
        if took <= allowed + lag {
            Err(CaseError::Starved(format!(
                "{measured}, while the runner itself stalled for {lag:.1?}"
            )))
        } else {
            Err(CaseError::Failed(format!(
                "{measured}; the runner stalled at most {lag:.1?} meanwhile"
            )))
        }
    }

    /// Judges `grant`'s deadline for a call sent at `sent` and answered at
    /// `replied`: it must be the store's send instant plus the TTL granted.
    ///
    /// # Errors
    /// [`CaseError::Failed`] with what was measured.
    pub fn deadline_is_from_sending(
        &self,
        grant: &Grant,
        sent: Instant,
        replied: Instant,
    ) -> CaseResult {
        crate::check::judge_deadline(grant, sent, replied, self.runner_lag(sent, replied))
            .map_err(|why| CaseError::Failed(format!("{}: {why}", grant.fence)))
    }

    /// Requires a step the rule's judgement depends on (`step`, done at
    /// `at`) to have come before `deadline`; a later one means the runner
    /// was too slow to judge.
    ///
    /// # Errors
    /// [`CaseError::Starved`] naming both instants.
    pub fn before(&self, step: &str, at: Instant, deadline: Instant) -> CaseResult {
        if at < deadline {
            return Ok(());
        }
        Err(CaseError::Starved(format!(
            "{step} came at {}, {:.1?} after {}, the last moment it could be judged",
            self.at(at),
            at - deadline,
            self.at(deadline)
        )))
    }

    /// The verdict on an answer the rule forbids only before `deadline`:
    /// broken when the answer came back (`replied`) before it — its effect
    /// certainly happened in time — starved when it came back later, as the
    /// effect may have happened after the deadline and the answer was
    /// then correct.
    pub fn broken_unless_late(&self, what: &str, replied: Instant, deadline: Instant) -> CaseError {
        let measured = format!(
            "{what} (reply at {}; the rule holds until {})",
            self.at(replied),
            self.at(deadline)
        );
        if replied < deadline {
            CaseError::Failed(measured)
        } else {
            CaseError::Starved(format!(
                "{measured}: the reply came {:.1?} too late to judge",
                replied - deadline
            ))
        }
    }

    /// Checks that `fence` is live, as it must be until `live_until` (its
    /// grant's `sent + ttl`).
    ///
    /// # Errors
    /// As [`Subject::broken_unless_late`] when the check says it is not.
    pub async fn expect_live(
        &self,
        store: &dyn LeaseStore,
        fence: &Fence,
        live_until: Instant,
        what: &str,
    ) -> CaseResult {
        let asked = Instant::now();
        if store.check(fence).await? {
            return Ok(());
        }
        let what = format!(
            "{what}: a check of {fence} asked at {} found it not live",
            self.at(asked)
        );
        Err(self.broken_unless_late(&what, Instant::now(), live_until))
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
