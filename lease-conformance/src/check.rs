//! What a case returns, and the timing helpers every case shares.

use std::fmt;
use std::time::Duration;

use lease_core::{Capabilities, Claim, Grant, Holder, LeaseError, LeaseKey, LeaseStore};
use tokio::time::Instant;

/// Why a case did not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaseError {
    /// The backend broke the rule; the message says how.
    Failed(String),
    /// The case could not run here (a test hook the factory lacks). Never
    /// counted as passed.
    NotRun(String),
}

impl fmt::Display for CaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaseError::Failed(why) => write!(f, "failed: {why}"),
            CaseError::NotRun(why) => write!(f, "not run: {why}"),
        }
    }
}

impl From<LeaseError> for CaseError {
    fn from(error: LeaseError) -> Self {
        CaseError::Failed(format!("unexpected error: {error}"))
    }
}

/// The result of one case.
pub type CaseResult = Result<(), CaseError>;

/// Fails the case with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err($crate::CaseError::Failed(format!($($message)+)));
        }
    };
}

/// TTLs and waits for one backend, derived from its capabilities.
#[derive(Clone, Debug)]
pub struct Timing {
    /// A short TTL the backend grants as asked (no rounding): cases that wait
    /// for expiry use it.
    pub ttl: Duration,
    /// How long after `reply + ttl` expiry may still be unseen.
    pub slack: Duration,
    /// A TTL long enough that nothing expires during a case.
    pub long_ttl: Duration,
    /// A TTL that scheduling hiccups on a loaded machine cannot eat up, for
    /// cases whose background work must keep up with it.
    pub steady_ttl: Duration,
}

impl Timing {
    /// Timing for a backend with `caps`.
    pub fn new(caps: &Capabilities) -> Self {
        let base = caps.min_ttl.max(Duration::from_millis(300));
        let ttl = round_up(base, caps.ttl_granularity);
        let long_ttl = round_up(
            caps.min_ttl.max(Duration::from_secs(60)),
            caps.ttl_granularity,
        )
        .min(caps.max_ttl);
        let steady_ttl = round_up(
            caps.min_ttl.max(Duration::from_secs(2)),
            caps.ttl_granularity,
        );
        Self {
            ttl,
            slack: caps.expiry_slack,
            long_ttl,
            steady_ttl,
        }
    }

    /// Sleeps until a grant replied at `replied` with `ttl` is certainly
    /// expired on the server.
    pub async fn sleep_past_expiry(&self, replied: Instant, ttl: Duration) {
        tokio::time::sleep_until(replied + ttl + self.slack + Duration::from_millis(25)).await;
    }
}

fn round_up(ttl: Duration, granularity: Duration) -> Duration {
    let g = granularity.as_nanos().max(1);
    Duration::from_nanos(u64::try_from(ttl.as_nanos().div_ceil(g) * g).unwrap_or(u64::MAX))
}

/// How much later than the caller's own clock reading a store may take its
/// "sent" instant: the call itself, before anything goes on the wire, and
/// the thread being preempted in between (seen at 1.4 ms on a loaded
/// two-core machine). A deadline counted from the reply is still caught
/// wherever the round trip is longer than this.
pub const SEND_ALLOWANCE: Duration = Duration::from_millis(5);

/// A grant with the instants its request was sent and its reply arrived.
#[derive(Clone, Debug)]
pub struct Timed<T> {
    /// The outcome.
    pub value: T,
    /// When the request was sent.
    pub sent: Instant,
    /// When the reply arrived.
    pub replied: Instant,
}

/// Claims and times the call.
pub async fn timed_claim(
    store: &dyn LeaseStore,
    key: &LeaseKey,
    holder: &Holder,
    ttl: Duration,
) -> Result<Timed<Claim>, LeaseError> {
    let sent = Instant::now();
    let value = store.claim(key, holder, ttl).await?;
    Ok(Timed {
        value,
        sent,
        replied: Instant::now(),
    })
}

/// Claims a key that must be free: fails the case when busy.
pub async fn acquire(
    store: &dyn LeaseStore,
    key: &LeaseKey,
    holder: &Holder,
    ttl: Duration,
) -> Result<Timed<Grant>, CaseError> {
    let timed = timed_claim(store, key, holder, ttl).await?;
    match timed.value {
        Claim::Acquired(grant) => Ok(Timed {
            value: grant,
            sent: timed.sent,
            replied: timed.replied,
        }),
        Claim::Busy(record) => Err(CaseError::Failed(format!(
            "{holder} expected to acquire {key}, but it is busy: {record:?}"
        ))),
    }
}

/// A holder for cases: `id#incarnation`.
pub fn holder(id: &str, incarnation: &str) -> Holder {
    Holder::new(id, incarnation).expect("case holders are valid")
}

/// A key for cases.
pub fn key(text: &str) -> LeaseKey {
    LeaseKey::new(text).expect("case keys are valid")
}
