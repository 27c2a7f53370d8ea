//! The network a fault case runs on: a store through a [`FaultProxy`]
//! beside the subject's direct one, and the steps the cases share.

use std::future::Future;
use std::time::Duration;

use lease_core::{Claim, DynLeaseStore, Fence, Grant, Holder, LeaseError, LeaseKey};
use tokio::time::Instant;

use crate::check::{holder, key};
use crate::faults::{Fault, FaultProxy, Late};
use crate::hooks::hook_failed;
use crate::{CaseError, Hook, Subject, Timing, ensure};

/// Late requests delivered after a later renewal ([`Net::renew_then_deliver`]).
pub(super) struct Delivered {
    /// When the later renewal was sent.
    sent: Instant,
    /// The deadline it told.
    told: Instant,
    /// When the late requests were delivered.
    at: Instant,
}

/// A store through a fault proxy, beside the subject's direct one.
pub(crate) struct Net {
    pub(crate) proxy: FaultProxy,
    /// The store under faults.
    pub(crate) a: DynLeaseStore,
    /// The TTL the case grants.
    pub(crate) ttl: Duration,
    pub(crate) timing: Timing,
}

/// How long the store through the proxy waits for a reply: a quarter of
/// the case's TTL, so a call given up on still leaves most of the grant.
pub(crate) fn call_timeout(ttl: Duration) -> Duration {
    (ttl / 4).max(Duration::from_millis(100))
}

pub(crate) async fn network(s: &Subject) -> Result<Net, CaseError> {
    let timing = s.timing();
    let ttl = timing.steady_ttl;
    let server = s
        .hooks
        .server_address()
        .await
        .map_err(hook_failed(Hook::Network))?;
    let proxy = FaultProxy::start(&server).await.map_err(|e| {
        CaseError::Failed(format!(
            "could not start a fault proxy before {server}: {e}"
        ))
    })?;
    let a = s
        .hooks
        .store_through(&proxy.endpoint(), call_timeout(ttl))
        .await
        .map_err(hook_failed(Hook::Network))?;
    Ok(Net {
        proxy,
        a,
        ttl,
        timing,
    })
}

/// Whether `answer` is a connection error or a timeout: the store has not
/// reconnected yet, which says nothing about a rule.
pub(super) fn transient<T>(answer: &Result<T, LeaseError>) -> bool {
    matches!(
        answer,
        Err(LeaseError::Backend { .. } | LeaseError::Timeout { .. })
    )
}

/// Calls again while the answer is transient (a store reconnecting after
/// a reset), for up to `within`; a store still not answering then makes
/// the try starved — a slow reconnect breaks no rule.
pub(super) async fn settled<T, F: Future<Output = Result<T, LeaseError>>>(
    within: Duration,
    mut call: impl FnMut() -> F,
) -> Result<Result<T, LeaseError>, CaseError> {
    let until = Instant::now() + within;
    loop {
        let answer = call().await;
        if !transient(&answer) {
            return Ok(answer);
        }
        if Instant::now() >= until {
            let error = answer.err().map(|e| e.to_string()).unwrap_or_default();
            return Err(CaseError::Starved(format!(
                "the store through the proxy did not answer within {within:?} after the faults ended (last: {error})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The faults that make a call end unanswered after the server applied
/// it, tried in turn: replies lost, for a call of one round trip; replies
/// lost after the first few requests, for a call of several (a read
/// before the write, a lease before the transaction, a protocol's own
/// frames between them), whose last request is applied.
pub(super) fn reply_faults() -> [Fault; 6] {
    [
        Fault::LoseReplies,
        Fault::LoseRepliesAfter(1),
        Fault::LoseRepliesAfter(2),
        Fault::LoseRepliesAfter(3),
        Fault::LoseRepliesAfter(4),
        Fault::LoseRepliesAfter(6),
    ]
}

/// No fault of [`reply_faults`] had a call applied and unanswered.
pub(super) fn not_applied(call: &str) -> CaseError {
    CaseError::Starved(format!(
        "no {call} ended unanswered after the server applied it (replies lost from the first request on, or from the second to the seventh): the fault could not be made to happen"
    ))
}

/// A mutating call the proxy kept from answering must end in an error
/// that says its outcome is unknown.
pub(super) fn unknown_outcome<T: std::fmt::Debug>(
    what: &str,
    answer: Result<T, LeaseError>,
) -> Result<LeaseError, CaseError> {
    match answer {
        Ok(answer) => Err(CaseError::Failed(format!(
            "{what} was answered ({answer:?}) though no reply from the server got through"
        ))),
        Err(error) if error.is_indeterminate() => Ok(error),
        Err(error) => Err(CaseError::Failed(format!(
            "{what} ended in \"{error}\", which says its outcome is known, though the request may have been applied (LeaseError::is_indeterminate)"
        ))),
    }
}

impl Net {
    /// Waits until the store under faults answers again (after a reset it
    /// reconnects), asking about `k`.
    pub(super) async fn ready(&self, k: &LeaseKey) -> Result<(), CaseError> {
        settled(self.ttl * 2, || self.a.inspect(k)).await??;
        Ok(())
    }

    /// After requests kept back were cut off (`late`): the store
    /// reconnects and renews `fence` for `longer` — its holder told the
    /// grant lasts until `sent + longer` — then the late requests reach
    /// the server on their old connections. `None` when the server took
    /// none of them up. A renewal refused is a broken rule unless the
    /// grant could have ended by `ends_by`.
    pub(super) async fn renew_then_deliver(
        &self,
        s: &Subject,
        fence: &Fence,
        longer: Duration,
        ends_by: Instant,
        late: Vec<Late>,
    ) -> Result<Option<Delivered>, CaseError> {
        let sent = Instant::now();
        let renewed = match settled(self.ttl, || self.a.renew(fence, longer)).await? {
            Ok(grant) => grant,
            Err(e) => {
                let what = format!("renewing the live grant after a reconnect gave {e}");
                return Err(s.broken_unless_late(&what, Instant::now(), ends_by));
            }
        };
        let mut answered = false;
        for request in late {
            answered |= request.deliver(self.ttl).await;
        }
        Ok(answered.then(|| Delivered {
            sent,
            told: renewed.deadline.min(sent + longer),
            at: Instant::now(),
        }))
    }

    /// That `fence`'s grant outlived `what`, a request of this case's TTL
    /// delivered late: once that TTL (and the slack) from its delivery has
    /// passed — still inside the deadline the later renewal told — the
    /// other client is refused the key.
    pub(super) async fn not_shortened(
        &self,
        s: &Subject,
        fence: &Fence,
        what: &str,
        late: &Delivered,
    ) -> Result<(), CaseError> {
        let k = &fence.key;
        // Had the late request set the grant's end, it would be over by now.
        let shortened_end = late.at + self.ttl + self.timing.slack + Duration::from_millis(50);
        s.before(
            "the check after the late request's own TTL",
            shortened_end,
            late.told,
        )?;
        tokio::time::sleep_until(shortened_end).await;
        let checked = Instant::now();
        match s.store.claim(k, &holder("rival", "1"), self.ttl).await? {
            Claim::Busy(record) => {
                ensure!(record.fence() == *fence, "{k} is held by {record:?}, not by {fence}");
                Ok(())
            }
            Claim::Acquired(grant) => Err(s.broken_unless_late(
                &format!(
                    "{what}, delivered late at {}, ended the grant: the other client was granted {} at {}, before the deadline {} the renewal sent at {} had told",
                    s.at(late.at),
                    grant.fence,
                    s.at(checked),
                    s.at(late.told),
                    s.at(late.sent)
                ),
                Instant::now(),
                late.told,
            )),
        }
    }

    /// What the direct client sees at `k`: a grant of `expected`, or the
    /// fault did not happen. Returns the fence and when it was seen.
    pub(super) async fn seen_held(
        &self,
        s: &Subject,
        k: &LeaseKey,
        expected: &Holder,
        what: &str,
    ) -> Result<(Fence, Instant), CaseError> {
        let record = s.store.inspect(k).await?;
        let seen = Instant::now();
        match record {
            Some(record) if &record.holder == expected => Ok((record.fence(), seen)),
            Some(record) => Err(CaseError::Failed(format!(
                "after {what}, {k} is held by {} — no one else claimed it",
                record.holder
            ))),
            None => Err(CaseError::Starved(format!(
                "{what} never reached the server (the other client sees {k} free at {}), so the fault could not be judged",
                s.at(seen)
            ))),
        }
    }

    /// The other client claims `k` until granted: never before
    /// `not_before` (the grant may still be live until then), and by the
    /// time the grant written no later than `last_write` is over
    /// (`last_write + ttl + slack`). Returns the new grant.
    pub(super) async fn handover(
        &self,
        s: &Subject,
        k: &LeaseKey,
        ttl: Duration,
        not_before: Instant,
        last_write: Instant,
    ) -> Result<Grant, CaseError> {
        let rival = holder("rival", "1");
        let poll = (self.timing.slack / 4).clamp(Duration::from_millis(10), ttl / 20);
        // A key still held just past the bound while the runner lagged
        // proves nothing yet; held later still, it does.
        let mut starved = None;
        loop {
            let sent = Instant::now();
            let claim = s.store.claim(k, &rival, self.ttl).await?;
            let replied = Instant::now();
            match claim {
                Claim::Acquired(grant) => {
                    ensure!(
                        replied >= not_before,
                        "the other client was granted {k} at {}, {:.1?} before {}, until when the grant (TTL {ttl:?}) was certainly live",
                        s.at(replied),
                        not_before - replied,
                        s.at(not_before)
                    );
                    return match starved {
                        Some(why) => Err(CaseError::Starved(why)),
                        None => Ok(grant),
                    };
                }
                Claim::Busy(record) => {
                    let bound = format!(
                        "{k} still held by {} ({record:?}) for a claim sent at {}: the grant ended",
                        record.holder,
                        s.at(sent)
                    );
                    let judged = s.within(
                        &format!(
                            "{bound} — the last write the server applied to it came by {}, the TTL is {ttl:?}",
                            s.at(last_write)
                        ),
                        last_write,
                        sent,
                        ttl + self.timing.slack,
                    );
                    match judged {
                        Err(CaseError::Starved(why)) => {
                            starved.get_or_insert(why);
                        }
                        other => other?,
                    }
                }
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// After a new grant, the store under faults is refused with `old`:
    /// its renewal is lost, its guarded write refused.
    pub(super) async fn old_fence_refused(
        &self,
        s: &Subject,
        old: &Fence,
        new: &Grant,
    ) -> Result<(), CaseError> {
        ensure!(
            new.token() > old.token,
            "the grant after {old} has token {}, not above {}",
            new.token(),
            old.token
        );
        let renewed = settled(self.ttl, || self.a.renew(old, self.ttl)).await?;
        ensure!(
            matches!(renewed, Err(LeaseError::Lost { .. })),
            "renewing {old} after {} was granted gave {renewed:?}",
            new.fence
        );
        let target = key("faults/guarded-target");
        let written = settled(self.ttl, || self.a.guarded_write(old, &target, b"late")).await?;
        ensure!(
            matches!(written, Err(LeaseError::Lost { .. })),
            "a guarded write with {old} after {} was granted gave {written:?}",
            new.fence
        );
        ensure!(
            s.store.read_guarded(&target).await?.is_none(),
            "the refused guarded write with {old} was written"
        );
        ensure!(
            s.store.check(&new.fence).await?,
            "the new grant {} is not live right after the old fence was refused",
            new.fence
        );
        Ok(())
    }
}
