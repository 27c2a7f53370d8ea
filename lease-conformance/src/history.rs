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

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use lease_core::{Claim, Fence, Grant, Holder, LeaseError, LeaseKey, LeaseRecord, LeaseStore};
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

/// Checks every key's calls: `Ok` when the whole history is linearizable.
///
/// # Errors
/// The first key (in name order) whose calls are not, with the call no
/// configuration explains.
pub fn check(history: &History) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
    for call in &history.calls {
        by_key.entry(&call.key).or_default().push(call);
    }
    for (key, calls) in by_key {
        check_key(key, &calls, history.slack_us)?;
    }
    Ok(())
}

/// A grant as the model knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Held {
    holder: String,
    /// `None` until seen: an unknown-outcome claim's token.
    token: Option<u64>,
    /// Certainly live before this.
    live_until: Micros,
    /// Certainly ended from this on.
    dead_after: Micros,
}

/// One key's model state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    held: Option<Held>,
    /// The highest token handed out (or a lower bound, after an unknown
    /// claim).
    max_token: u64,
}

impl State {
    /// Whether the grant may be live, and may be ended, for a call taking
    /// effect in `[lo, hi]`.
    fn status(&self, lo: Micros, hi: Micros) -> (bool, bool) {
        match &self.held {
            None => (false, true),
            Some(held) => (lo < held.dead_after, hi >= held.live_until),
        }
    }

    fn matches(held: &Held, holder: &str, token: u64) -> bool {
        held.holder == holder && held.token.is_none_or(|t| t == token)
    }

    fn ended(&self) -> State {
        State {
            held: None,
            max_token: self.max_token,
        }
    }

    /// The states after `call`, taking effect in `[lo, hi]`, answering as
    /// it did; none when its answer is impossible from this state.
    fn apply(&self, call: &Call, lo: Micros, hi: Micros, slack: Micros) -> Vec<State> {
        let (live, dead) = self.status(lo, hi);
        let mut next = Vec::new();
        let unknown = call.outcome == CallOutcome::Unknown;
        match (&call.op, &call.outcome) {
            (CallOp::Claim { holder, ttl_us }, outcome) => {
                let fresh = |token: Option<u64>| State {
                    held: Some(Held {
                        holder: holder.clone(),
                        token,
                        live_until: lo + ttl_us,
                        dead_after: hi + ttl_us + slack,
                    }),
                    max_token: token.unwrap_or(self.max_token + 1).max(self.max_token),
                };
                let refreshed = |held: &Held, token: u64| State {
                    held: Some(Held {
                        holder: holder.clone(),
                        token: Some(token),
                        live_until: held.live_until.max(lo + ttl_us),
                        dead_after: held.dead_after.max(hi + ttl_us + slack),
                    }),
                    max_token: self.max_token.max(token),
                };
                let own = self.held.as_ref().filter(|h| &h.holder == holder);
                match outcome {
                    // Free, or the grant there ended; a higher token.
                    CallOutcome::Acquired { token, fresh: true }
                        if dead && *token > self.max_token =>
                    {
                        next.push(fresh(Some(*token)));
                    }
                    CallOutcome::Acquired {
                        token,
                        fresh: false,
                    } => {
                        if let Some(held) = own
                            && live
                            && State::matches(held, holder, *token)
                        {
                            next.push(refreshed(held, *token));
                        }
                    }
                    CallOutcome::Busy {
                        holder: seen,
                        token,
                    } => {
                        if let Some(held) = &self.held
                            && live
                            && seen != holder
                            && State::matches(held, seen, *token)
                        {
                            next.push(State {
                                held: Some(Held {
                                    token: Some(*token),
                                    ..held.clone()
                                }),
                                max_token: self.max_token.max(*token),
                            });
                        }
                    }
                    CallOutcome::Unknown => {
                        if dead {
                            next.push(fresh(None));
                        }
                        if let Some(held) = own
                            && live
                        {
                            let token = held.token;
                            next.push(State {
                                held: Some(Held {
                                    token,
                                    live_until: held.live_until.max(lo + ttl_us),
                                    dead_after: held.dead_after.max(hi + ttl_us + slack),
                                    ..held.clone()
                                }),
                                max_token: self.max_token,
                            });
                        }
                        if live && own.is_none() {
                            next.push(self.clone());
                        }
                    }
                    _ => {}
                }
            }
            (
                CallOp::Renew {
                    holder,
                    token,
                    ttl_us,
                },
                outcome,
            ) => {
                let current = self
                    .held
                    .as_ref()
                    .filter(|h| State::matches(h, holder, *token));
                if let Some(held) = current
                    && live
                    && (unknown || *outcome == CallOutcome::Renewed)
                {
                    next.push(State {
                        held: Some(Held {
                            token: Some(*token),
                            live_until: lo + ttl_us,
                            dead_after: hi + ttl_us + slack,
                            ..held.clone()
                        }),
                        max_token: self.max_token,
                    });
                }
                if unknown || *outcome == CallOutcome::Lost {
                    if current.is_none() {
                        next.push(self.clone());
                    } else if dead {
                        next.push(self.ended());
                    }
                }
            }
            (CallOp::Release { holder, token }, outcome) => {
                let current = self
                    .held
                    .as_ref()
                    .filter(|h| State::matches(h, holder, *token));
                let released = matches!(outcome, CallOutcome::Released { released: true });
                let refused = matches!(outcome, CallOutcome::Released { released: false });
                if current.is_some() && live && (unknown || released) {
                    next.push(self.ended());
                }
                if unknown || refused {
                    if current.is_none() {
                        next.push(self.clone());
                    } else if dead {
                        next.push(self.ended());
                    }
                }
            }
            (CallOp::Inspect, CallOutcome::Seen { holder, token }) => match (holder, token) {
                (Some(holder), Some(token)) => {
                    if let Some(held) = &self.held
                        && live
                        && State::matches(held, holder, *token)
                    {
                        next.push(State {
                            held: Some(Held {
                                token: Some(*token),
                                ..held.clone()
                            }),
                            max_token: self.max_token.max(*token),
                        });
                    }
                }
                _ => {
                    if dead {
                        next.push(self.ended());
                    }
                }
            },
            (CallOp::Inspect, CallOutcome::Unknown) => next.push(self.clone()),
            _ => {}
        }
        next
    }
}

/// A configuration: the model's state and which calls are linearized.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Config {
    state: State,
    /// Indices (into the key's calls) linearized so far and still pending
    /// in the walk; calls completed leave the set once linearized.
    done: Vec<usize>,
}

/// How many configurations a key may hold before the search gives up
/// (a pathological history: reported, not hidden).
pub const MAX_CONFIGS: usize = 200_000;

fn check_key(key: &str, calls: &[&Call], slack: Micros) -> Result<(), Violation> {
    // Events: invocations and replies, replies first at equal times (a
    // call replied at t precedes one invoked at t).
    let mut events: Vec<(Micros, bool, usize)> = Vec::new();
    for (i, call) in calls.iter().enumerate() {
        events.push((call.invoked_us, true, i));
        if let (Some(at), false) = (call.replied_us, call.outcome == CallOutcome::Unknown) {
            events.push((at, false, i));
        }
    }
    events.sort_by_key(|(at, invoke, i)| (*at, *invoke, *i));
    let mut pending: Vec<usize> = Vec::new();
    let mut configs: HashSet<Config> = HashSet::from([Config {
        state: State {
            held: None,
            max_token: 0,
        },
        done: Vec::new(),
    }]);
    let mut invoked = vec![false; calls.len()];
    for (at, invoke, i) in events {
        // A call replied in the microsecond it was invoked sorts its reply
        // first: it is invoked then.
        if !invoked[i] {
            invoked[i] = true;
            pending.push(i);
        }
        if invoke {
            continue;
        }
        // Reply of call i at `at`: every configuration linearizes it now,
        // after any of the calls pending beside it.
        let mut frontier: Vec<Config> = configs.drain().collect();
        let mut seen: HashSet<Config> = frontier.iter().cloned().collect();
        while let Some(config) = frontier.pop() {
            for &j in &pending {
                if config.done.contains(&j) {
                    continue;
                }
                let call = calls[j];
                for state in config.state.apply(call, call.invoked_us, at, slack) {
                    let mut done = config.done.clone();
                    done.push(j);
                    done.sort_unstable();
                    let next = Config { state, done };
                    if seen.insert(next.clone()) {
                        if seen.len() > MAX_CONFIGS {
                            let mut undecided = violation(key, calls, i);
                            undecided.undecided = true;
                            return Err(undecided);
                        }
                        frontier.push(next);
                    }
                }
            }
        }
        // Whatever linearized call i, now or before, explains its reply.
        let reached: Vec<Config> = seen
            .into_iter()
            .filter(|config| config.done.contains(&i))
            .collect();
        if reached.is_empty() {
            return Err(violation(key, calls, i));
        }
        pending.retain(|&j| j != i);
        // Call i leaves every set; configurations that differ only in it
        // merge.
        configs = reached
            .into_iter()
            .map(|mut config| {
                config.done.retain(|&j| j != i);
                config
            })
            .collect();
    }
    Ok(())
}

fn violation(key: &str, calls: &[&Call], i: usize) -> Violation {
    let mut order: Vec<&Call> = calls.to_vec();
    order.sort_by_key(|c| c.invoked_us);
    let mut timeline = String::new();
    for call in order {
        let mark = if std::ptr::eq(call, calls[i]) {
            ">>"
        } else {
            "  "
        };
        let _ = writeln!(
            timeline,
            "{mark} client {:>2}  {:<24}  {}",
            call.client,
            span(call),
            describe(call)
        );
    }
    Violation {
        key: key.to_owned(),
        call: Box::new(calls[i].clone()),
        timeline,
        undecided: false,
    }
}

fn span(call: &Call) -> String {
    let ms = |us: Micros| us as f64 / 1e3;
    match call.replied_us {
        Some(at) => format!("{:.1}–{:.1} ms", ms(call.invoked_us), ms(at)),
        None => format!("{:.1} ms – (none)", ms(call.invoked_us)),
    }
}

fn describe(call: &Call) -> String {
    let asked = match &call.op {
        CallOp::Claim { holder, ttl_us } => format!("claim {holder} ttl {}ms", ttl_us / 1000),
        CallOp::Renew {
            holder,
            token,
            ttl_us,
        } => format!("renew {holder}/{token} ttl {}ms", ttl_us / 1000),
        CallOp::Release { holder, token } => format!("release {holder}/{token}"),
        CallOp::Inspect => "inspect".to_owned(),
    };
    let answered = match &call.outcome {
        CallOutcome::Acquired { token, fresh } => {
            format!("acquired {token}{}", if *fresh { "" } else { " (own)" })
        }
        CallOutcome::Busy { holder, token } => format!("busy: {holder}/{token}"),
        CallOutcome::Renewed => "renewed".to_owned(),
        CallOutcome::Lost => "lost".to_owned(),
        CallOutcome::Released { released } => format!("released: {released}"),
        CallOutcome::Seen {
            holder: Some(holder),
            token: Some(token),
        } => format!("seen {holder}/{token}"),
        CallOutcome::Seen { .. } => "seen free".to_owned(),
        CallOutcome::Unknown => "unknown".to_owned(),
    };
    format!("{asked} → {answered}")
}

/// Records calls into a [`History`] as a workload makes them: each method
/// makes the call on the store given and notes when it was invoked and
/// answered, and what it answered (unknown for a timeout or a lost
/// connection).
#[derive(Debug)]
pub struct Recorder {
    start: tokio::time::Instant,
    slack_us: Micros,
    calls: std::sync::Mutex<Vec<Call>>,
}

impl Recorder {
    /// A history starting now, for a store declaring `slack`.
    pub fn new(slack: std::time::Duration) -> Self {
        Self {
            start: tokio::time::Instant::now(),
            slack_us: micros(slack),
            calls: std::sync::Mutex::default(),
        }
    }

    fn now(&self) -> Micros {
        micros(self.start.elapsed())
    }

    fn note(
        &self,
        client: u32,
        key: &LeaseKey,
        op: CallOp,
        invoked_us: Micros,
        outcome: CallOutcome,
    ) {
        let replied_us = (outcome != CallOutcome::Unknown).then(|| self.now());
        self.calls.lock().unwrap().push(Call {
            client,
            key: key.as_str().to_owned(),
            op,
            invoked_us,
            replied_us,
            outcome,
        });
    }

    /// `store.claim`, recorded.
    ///
    /// # Errors
    /// The store's error, other than one of unknown outcome.
    pub async fn claim(
        &self,
        store: &dyn LeaseStore,
        client: u32,
        key: &LeaseKey,
        holder: &Holder,
        ttl: std::time::Duration,
    ) -> Result<Option<Claim>, LeaseError> {
        let invoked = self.now();
        let answer = store.claim(key, holder, ttl).await;
        let op = CallOp::Claim {
            holder: holder.to_string(),
            ttl_us: micros(ttl),
        };
        let (outcome, claim) = match answer {
            Ok(Claim::Acquired(grant)) => (
                CallOutcome::Acquired {
                    token: grant.token().0,
                    fresh: grant.fresh,
                },
                Some(Claim::Acquired(grant)),
            ),
            Ok(Claim::Busy(record)) => (
                CallOutcome::Busy {
                    holder: record.holder.to_string(),
                    token: record.token.0,
                },
                Some(Claim::Busy(record)),
            ),
            Err(e) if e.is_indeterminate() => (CallOutcome::Unknown, None),
            Err(e) => return Err(e),
        };
        self.note(client, key, op, invoked, outcome);
        Ok(claim)
    }

    /// `store.renew`, recorded.
    ///
    /// # Errors
    /// As [`Recorder::claim`]; a refusal is `Ok(None)`.
    pub async fn renew(
        &self,
        store: &dyn LeaseStore,
        client: u32,
        fence: &Fence,
        ttl: std::time::Duration,
    ) -> Result<Option<Grant>, LeaseError> {
        let invoked = self.now();
        let answer = store.renew(fence, ttl).await;
        let op = CallOp::Renew {
            holder: fence.holder.to_string(),
            token: fence.token.0,
            ttl_us: micros(ttl),
        };
        let (outcome, grant) = match answer {
            Ok(grant) => (CallOutcome::Renewed, Some(grant)),
            Err(LeaseError::Lost { .. }) => (CallOutcome::Lost, None),
            Err(e) if e.is_indeterminate() => (CallOutcome::Unknown, None),
            Err(e) => return Err(e),
        };
        self.note(client, &fence.key, op, invoked, outcome);
        Ok(grant)
    }

    /// `store.release`, recorded.
    ///
    /// # Errors
    /// As [`Recorder::claim`].
    pub async fn release(
        &self,
        store: &dyn LeaseStore,
        client: u32,
        fence: &Fence,
    ) -> Result<Option<bool>, LeaseError> {
        let invoked = self.now();
        let answer = store.release(fence).await;
        let op = CallOp::Release {
            holder: fence.holder.to_string(),
            token: fence.token.0,
        };
        let (outcome, released) = match answer {
            Ok(released) => (CallOutcome::Released { released }, Some(released)),
            Err(e) if e.is_indeterminate() => (CallOutcome::Unknown, None),
            Err(e) => return Err(e),
        };
        self.note(client, &fence.key, op, invoked, outcome);
        Ok(released)
    }

    /// `store.inspect`, recorded (a failed inspect is left out: it
    /// changed nothing and told nothing).
    ///
    /// # Errors
    /// The store's error.
    pub async fn inspect(
        &self,
        store: &dyn LeaseStore,
        client: u32,
        key: &LeaseKey,
    ) -> Result<Option<LeaseRecord>, LeaseError> {
        let invoked = self.now();
        let record = store.inspect(key).await?;
        let outcome = CallOutcome::Seen {
            holder: record.as_ref().map(|r| r.holder.to_string()),
            token: record.as_ref().map(|r| r.token.0),
        };
        self.note(client, key, CallOp::Inspect, invoked, outcome);
        Ok(record)
    }

    /// The history so far.
    pub fn history(&self) -> History {
        History {
            slack_us: self.slack_us,
            calls: self.calls.lock().unwrap().clone(),
        }
    }
}

fn micros(d: std::time::Duration) -> Micros {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Checks `history`; on a violation, writes it as JSON to a file in the
/// temporary directory and returns the violation with the file's path
/// (`lease-conformance check-history FILE` checks it again).
///
/// # Errors
/// The violation's description, timeline and file.
pub fn check_and_keep(history: &History) -> Result<(), (Violation, String)> {
    check(history).map_err(|violation| {
        let path = std::env::temp_dir().join(format!(
            "lease-conformance-history-{:016x}.json",
            rand::random::<u64>()
        ));
        let saved = serde_json::to_vec_pretty(history)
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(&path, json).map_err(|e| e.to_string()));
        let note = match saved {
            Ok(()) => format!("history saved to {}", path.display()),
            Err(why) => format!("history could not be saved: {why}"),
        };
        (violation, note)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Micros = 1000;
    const TTL: Micros = 100 * MS;

    fn call(client: u32, op: CallOp, at: (Micros, Option<Micros>), outcome: CallOutcome) -> Call {
        Call {
            client,
            key: "k".into(),
            op,
            invoked_us: at.0 * MS,
            replied_us: at.1.map(|r| r * MS),
            outcome,
        }
    }

    fn claim(holder: &str) -> CallOp {
        CallOp::Claim {
            holder: holder.into(),
            ttl_us: TTL,
        }
    }

    fn acquired(token: u64) -> CallOutcome {
        CallOutcome::Acquired { token, fresh: true }
    }

    fn busy(holder: &str, token: u64) -> CallOutcome {
        CallOutcome::Busy {
            holder: holder.into(),
            token,
        }
    }

    fn judged(calls: Vec<Call>) -> Result<(), Violation> {
        check(&History {
            slack_us: 10 * MS,
            calls,
        })
    }

    #[test]
    fn overlapping_claims_may_go_either_way() {
        let history = vec![
            call(1, claim("a"), (0, Some(5)), acquired(1)),
            call(2, claim("b"), (1, Some(6)), busy("a", 1)),
        ];
        judged(history).unwrap();
        // b first is as good: b's claim took effect before a's.
        let history = vec![
            call(1, claim("a"), (0, Some(5)), busy("b", 1)),
            call(2, claim("b"), (1, Some(6)), acquired(1)),
        ];
        judged(history).unwrap();
    }

    #[test]
    fn a_call_answered_in_the_microsecond_it_was_made_is_judged() {
        let history = vec![
            call(1, claim("a"), (0, Some(0)), acquired(1)),
            call(2, claim("b"), (1, Some(1)), busy("a", 1)),
        ];
        judged(history).unwrap();
    }

    #[test]
    fn two_holders_granted_at_once_are_refused() {
        let history = vec![
            call(1, claim("a"), (0, Some(5)), acquired(1)),
            call(2, claim("b"), (10, Some(15)), acquired(2)),
        ];
        let violation = judged(history).unwrap_err();
        assert_eq!(violation.call.client, 2);
        assert!(violation.timeline.contains(">> client  2"), "{violation}");
    }

    #[test]
    fn expiry_is_allowed_only_inside_its_window() {
        // a's grant, written in [0, 5], ends in [100, 115).
        let early = vec![
            call(1, claim("a"), (0, Some(5)), acquired(1)),
            call(2, claim("b"), (90, Some(95)), acquired(2)),
        ];
        judged(early).unwrap_err();
        let either = vec![
            call(1, claim("a"), (0, Some(5)), acquired(1)),
            call(2, claim("b"), (104, Some(106)), acquired(2)),
            call(3, claim("c"), (107, Some(108)), busy("b", 2)),
        ];
        judged(either).unwrap();
        let held_too_long = vec![
            call(1, claim("a"), (0, Some(5)), acquired(1)),
            call(2, claim("b"), (116, Some(118)), busy("a", 1)),
        ];
        judged(held_too_long).unwrap_err();
    }

    #[test]
    fn tokens_must_increase() {
        let history = vec![
            call(1, claim("a"), (0, Some(5)), acquired(7)),
            call(
                1,
                CallOp::Release {
                    holder: "a".into(),
                    token: 7,
                },
                (6, Some(8)),
                CallOutcome::Released { released: true },
            ),
            call(2, claim("b"), (9, Some(10)), acquired(7)),
        ];
        judged(history).unwrap_err();
    }

    #[test]
    fn an_unknown_claim_may_have_taken_effect_or_not() {
        // The lost claim did take effect: b is busy with a's grant.
        let applied = vec![
            call(1, claim("a"), (0, None), CallOutcome::Unknown),
            call(2, claim("b"), (20, Some(21)), busy("a", 3)),
            call(2, claim("b"), (150, Some(151)), acquired(4)),
        ];
        judged(applied).unwrap();
        // Or not: b acquires at once.
        let not_applied = vec![
            call(1, claim("a"), (0, None), CallOutcome::Unknown),
            call(2, claim("b"), (20, Some(21)), acquired(1)),
        ];
        judged(not_applied).unwrap();
        // But a grant it never told anyone of cannot outlive its TTL from
        // the last moment it can have been written... unless written late:
        // an unknown call may land at any time, so busy much later is fine
        // once, and tokens still order.
        let reused = vec![
            call(1, claim("a"), (0, None), CallOutcome::Unknown),
            call(2, claim("b"), (20, Some(21)), busy("a", 3)),
            call(2, claim("b"), (150, Some(151)), acquired(3)),
        ];
        judged(reused).unwrap_err();
    }

    #[test]
    fn a_renewal_refused_for_a_live_grant_is_caught() {
        let history = vec![
            call(1, claim("a"), (0, Some(5)), acquired(1)),
            call(
                1,
                CallOp::Renew {
                    holder: "a".into(),
                    token: 1,
                    ttl_us: TTL,
                },
                (20, Some(25)),
                CallOutcome::Lost,
            ),
        ];
        judged(history).unwrap_err();
    }

    #[test]
    fn a_reclaim_never_shortens_and_a_renewal_may() {
        let short = CallOp::Claim {
            holder: "a".into(),
            ttl_us: 10 * MS,
        };
        let own = CallOutcome::Acquired {
            token: 1,
            fresh: false,
        };
        // Claimed for 100 ms, re-claimed for 10: still held at 60.
        let reclaimed = vec![
            call(1, claim("a"), (0, Some(5)), acquired(1)),
            call(1, short.clone(), (20, Some(21)), own.clone()),
            call(2, claim("b"), (60, Some(61)), acquired(2)),
        ];
        judged(reclaimed).unwrap_err();
        let renewed = vec![
            call(1, claim("a"), (0, Some(5)), acquired(1)),
            call(
                1,
                CallOp::Renew {
                    holder: "a".into(),
                    token: 1,
                    ttl_us: 10 * MS,
                },
                (20, Some(21)),
                CallOutcome::Renewed,
            ),
            call(2, claim("b"), (60, Some(61)), acquired(2)),
        ];
        judged(renewed).unwrap();
    }

    #[test]
    fn a_release_frees_at_once_and_a_stale_one_touches_nothing() {
        let release = |token| CallOp::Release {
            holder: "a".into(),
            token,
        };
        let history = vec![
            call(1, claim("a"), (0, Some(5)), acquired(1)),
            call(
                1,
                release(1),
                (10, Some(11)),
                CallOutcome::Released { released: true },
            ),
            call(2, claim("b"), (12, Some(13)), acquired(2)),
            call(
                1,
                release(1),
                (14, Some(15)),
                CallOutcome::Released { released: true },
            ),
        ];
        judged(history).unwrap_err();
    }

    #[test]
    fn inspect_sees_what_is_live() {
        let seen = |holder: Option<&str>, token| CallOutcome::Seen {
            holder: holder.map(Into::into),
            token,
        };
        let free_too_soon = vec![
            call(1, claim("a"), (0, Some(5)), acquired(1)),
            call(2, CallOp::Inspect, (50, Some(51)), seen(None, None)),
        ];
        judged(free_too_soon).unwrap_err();
        let fine = vec![
            call(1, claim("a"), (0, Some(5)), acquired(1)),
            call(2, CallOp::Inspect, (50, Some(51)), seen(Some("a"), Some(1))),
            call(2, CallOp::Inspect, (120, Some(121)), seen(None, None)),
        ];
        judged(fine).unwrap();
    }

    #[test]
    fn histories_round_trip_through_json() {
        let history = History {
            slack_us: 5,
            calls: vec![call(1, claim("a"), (0, None), CallOutcome::Unknown)],
        };
        let text = serde_json::to_string(&history).unwrap();
        assert_eq!(serde_json::from_str::<History>(&text).unwrap(), history);
    }
}
