//! Histories of store calls, and a checker that decides whether a history
//! could have come from one correct lease store.
//!
//! A [`History`] lists every call a workload made: which client, which
//! operation on which key, when it was invoked and when its reply came
//! (relative to the history's start), and what it answered — or that its
//! outcome is unknown (a timeout, a cut connection: it may have taken
//! effect, at any time after it was invoked, or never).
//!
//! [`check`] looks for a linearization against the lease model, key by
//! key (a lease store's keys are independent): an order of the calls that
//! respects real time (a call that completed before another was invoked
//! comes first), in which every answer is what the model allows. Time is
//! uncertain, as on a real server: a call takes effect somewhere between
//! its invocation and its reply, and a grant written in that window with
//! a TTL expires somewhere between `invoked + ttl` and
//! `replied + ttl + slack`; either answer is right in between. A re-claim
//! of one's own grant never moves its end earlier; a renewal sets it.
//!
//! The search is Wing–Gong–Lowe's, done "just in time" as in Lowe's and
//! Knossos' linear checkers: events are walked in time order, keeping
//! every configuration (model state, calls linearized so far) that
//! explains the history up to now; a call's completion keeps only the
//! configurations that linearized it, trying every order of the calls
//! pending at that moment. Calls with unknown outcomes stay pending to the
//! end and may or may not be linearized.

use serde::{Deserialize, Serialize};

/// Microseconds since the history began.
pub type Micros = u64;

/// A recorded workload: every call, and the slack the store declared.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// How long after `replied + ttl` a grant may still be seen, in µs
    /// (the store's declared expiry slack, plus the recorder's margin).
    pub slack_us: Micros,
    /// Every call, in any order.
    pub calls: Vec<Call>,
}

/// One call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// Which client made it.
    pub client: u32,
    /// The key.
    pub key: String,
    /// What it asked.
    pub op: CallOp,
    /// When it was invoked.
    pub invoked_us: Micros,
    /// When its reply came; `None` when it never did.
    pub replied_us: Option<Micros>,
    /// What it answered.
    pub outcome: CallOutcome,
}

/// What a call asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CallOp {
    /// `claim(key, holder, ttl)`.
    Claim {
        /// `id#incarnation`.
        holder: String,
        /// The TTL granted, in µs.
        ttl_us: Micros,
    },
    /// `renew(fence, ttl)`.
    Renew {
        /// The fence's holder.
        holder: String,
        /// The fence's token.
        token: u64,
        /// The TTL asked, in µs.
        ttl_us: Micros,
    },
    /// `release(fence)`.
    Release {
        /// The fence's holder.
        holder: String,
        /// The fence's token.
        token: u64,
    },
    /// `inspect(key)`.
    Inspect,
}

/// What a call answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CallOutcome {
    /// A claim was granted.
    Acquired {
        /// The grant's token.
        token: u64,
        /// Whether it was a new grant.
        fresh: bool,
    },
    /// A claim found the key held (by `holder` with `token`).
    Busy {
        /// The holder seen.
        holder: String,
        /// Its token.
        token: u64,
    },
    /// A renewal was accepted.
    Renewed,
    /// A renewal was refused: the fence is not the live grant.
    Lost,
    /// A release answered whether it released anything.
    Released {
        /// Its answer.
        released: bool,
    },
    /// An inspect saw this grant, or none.
    Seen {
        /// The holder seen, if any.
        holder: Option<String>,
        /// Its token.
        token: Option<u64>,
    },
    /// No answer: it may or may not have taken effect.
    Unknown,
}

/// Why a history is not linearizable: the key, the call no configuration
/// could explain, and a timeline of that key's calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key whose calls cannot be linearized.
    pub key: String,
    /// The call whose reply no order of the calls before it explains.
    pub call: Box<Call>,
    /// The key's calls, one line each, in invocation order.
    pub timeline: String,
    /// The search gave up (more than [`MAX_CONFIGS`] configurations): no
    /// verdict on this key, rather than a wrong one.
    pub undecided: bool,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.undecided {
            return write!(
                f,
                "the search on {} grew past {MAX_CONFIGS} configurations at {} (client {}, {}): undecided\n{}",
                self.key,
                describe(&self.call),
                self.call.client,
                span(&self.call),
                self.timeline
            );
        }
        write!(
            f,
            "no order of the calls on {} explains {} (client {}, {}): the store's answers cannot all be right\n{}",
            self.key,
            describe(&self.call),
            self.call.client,
            span(&self.call),
            self.timeline
        )
    }
}

mod check;
mod model;
mod record;
#[cfg(test)]
mod tests;

pub use check::{MAX_CONFIGS, check, check_and_keep};
use check::{describe, span};
pub use record::Recorder;
