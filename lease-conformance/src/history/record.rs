//! Recording a workload's calls as they are made.

use lease_core::{Claim, Fence, Grant, Holder, LeaseError, LeaseKey, LeaseRecord, LeaseStore};

use super::{Call, CallOp, CallOutcome, History, Micros};

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
