//! What a case returns, and the timing helpers every case shares.

use std::fmt;
use std::time::Duration;

use lease_core::{Capabilities, Claim, Grant, Holder, LeaseError, LeaseKey, LeaseStore};
use tokio::time::Instant;

/// Why a case did not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaseError {
    /// The backend broke the rule; the message says how, with what was
    /// measured.
    Failed(String),
    /// The runner itself was too late to judge the rule (a step it needed
    /// before a deadline came after it, or it stalled through a
    /// measurement): no evidence either way. The runner tries the case
    /// again with more room, and reports it *inconclusive* — never failed —
    /// if it stays starved.
    Starved(String),
}

impl fmt::Display for CaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaseError::Failed(why) => write!(f, "failed: {why}"),
            CaseError::Starved(why) => write!(f, "runner starved: {why}"),
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
    /// How many times the base TTLs these are: 1 on a first try, more on
    /// the tries that follow a starved one.
    pub room: u32,
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
            room: 1,
        }
    }

    /// The same timing with `room` times the short and steady TTLs (never
    /// past the backend's maximum): what a case gets when it is tried again
    /// after its runner starved.
    pub fn with_room(mut self, room: u32, caps: &Capabilities) -> Self {
        let scale = |ttl: Duration| round_up(ttl * room, caps.ttl_granularity).min(caps.max_ttl);
        self.ttl = scale(self.ttl);
        self.steady_ttl = scale(self.steady_ttl);
        self.long_ttl = self.long_ttl.max(self.steady_ttl);
        self.room = room;
        self
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

/// Judges a grant's deadline against the rule "the instant the store sent
/// the request, plus the TTL granted", for a call made at `sent` and
/// answered at `replied`, while the runner stalled up to `stalled`. The
/// store's own send instant lies in between: a deadline up to
/// [`SEND_ALLOWANCE`] past `sent + ttl` is fine, and up to `stalled` more
/// when the runner stalled that long — never past `replied + ttl`.
///
/// # Errors
/// What was measured, when the deadline is later than any send could
/// explain.
pub(crate) fn judge_deadline(
    grant: &Grant,
    sent: Instant,
    replied: Instant,
    stalled: Duration,
) -> Result<(), String> {
    let latest =
        (sent + grant.ttl + SEND_ALLOWANCE + stalled).min(replied + grant.ttl + SEND_ALLOWANCE);
    if grant.deadline <= sent + grant.ttl + SEND_ALLOWANCE || grant.deadline <= latest {
        return Ok(());
    }
    Err(format!(
        "the deadline is {:.1?} after the call was sent, later than the {:?} granted (the call took {:.1?}; the runner stalled at most {stalled:.1?})",
        grant.deadline - sent,
        grant.ttl,
        replied - sent
    ))
}

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
