//! The lease model one key's calls are checked against.

use super::{Call, CallOp, CallOutcome, Micros};

/// A grant as the model knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Held {
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
pub(super) struct State {
    held: Option<Held>,
    /// The highest token handed out (or a lower bound, after an unknown
    /// claim).
    max_token: u64,
}

impl State {
    /// A key never claimed.
    pub(super) const FREE: State = State {
        held: None,
        max_token: 0,
    };

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
    pub(super) fn apply(&self, call: &Call, lo: Micros, hi: Micros, slack: Micros) -> Vec<State> {
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
