//! Judging each step's outcome against the model: what a claim, reclaim
//! or renewal may answer given the timing uncertainty of a real server.

use std::time::Duration;

use lease_core::{Claim, Fence, Holder, LeaseError};
use tokio::time::Instant;

use super::model::Status;
use super::state_machine::Sequence;
use crate::lag::Lag;

impl Sequence<'_> {
    /// Judges a renewal of `fence` on `key` against the model.
    pub(super) fn renewed(
        &mut self,
        key: usize,
        fence: &Fence,
        asked: Duration,
        outcome: Result<lease_core::Grant, LeaseError>,
        sent: Instant,
        replied: Instant,
    ) -> Result<(), String> {
        let slack = self.timing.slack;
        let granularity = self.granularity;
        let km = self.model.keys.entry(key).or_default();
        let status = km.status(sent, replied);
        let current = km.is_current(fence);
        match outcome {
            Ok(grant) => {
                if !current || status == Status::Free {
                    return Err(format!("renewed {fence}, which is not the live grant"));
                }
                if grant.fence != *fence || grant.fresh {
                    return Err(format!("renewal changed the grant: {grant:?}"));
                }
                check_grant(&grant, asked, granularity, sent, replied, self.lag)?;
                km.granted(&grant, sent, replied, slack);
            }
            Err(LeaseError::Lost { .. }) => {
                if current && status == Status::Live {
                    return Err(format!("renewal of the live grant {fence} refused"));
                }
                if current {
                    km.ended();
                }
            }
            Err(other) => return Err(format!("renew failed: {other}")),
        }
        Ok(())
    }

    /// Checks the outcome of a claim or reclaim against the model.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn claimed(
        &mut self,
        key: usize,
        holder: &Holder,
        observed: Option<&Fence>,
        asked: Duration,
        outcome: Result<Claim, LeaseError>,
        sent: Instant,
        replied: Instant,
    ) -> Result<(), String> {
        let slack = self.timing.slack;
        let km = self.model.keys.entry(key).or_default();
        let status = km.status(sent, replied);
        let current = km.current.clone();
        let own = current
            .as_ref()
            .is_some_and(|live| live.fence.holder == *holder);
        let matches_observed = current
            .as_ref()
            .zip(observed)
            .is_some_and(|(live, observed)| live.fence == *observed);
        match outcome.map_err(|e| format!("claim failed: {e}"))? {
            Claim::Acquired(grant) => {
                if grant.fence.holder != *holder || grant.fence.key != self.keys[key] {
                    return Err(format!("grant names the wrong holder or key: {grant:?}"));
                }
                check_grant(&grant, asked, self.granularity, sent, replied, self.lag)?;
                if grant.fresh {
                    if status == Status::Live && (own || !matches_observed) {
                        let live = current
                            .as_ref()
                            .map(|l| l.fence.to_string())
                            .unwrap_or_default();
                        return Err(format!(
                            "fresh grant {} while {live} is certainly live",
                            grant.fence
                        ));
                    }
                    km.check_fresh_token(&grant)?;
                } else {
                    let Some(live) = current.filter(|_| own && status != Status::Free) else {
                        return Err(format!(
                            "grant {grant:?} says it is not fresh, but the holder held nothing"
                        ));
                    };
                    if grant.token() != live.fence.token {
                        return Err(format!(
                            "re-claim changed the token from {} to {}",
                            live.fence.token,
                            grant.token()
                        ));
                    }
                }
                if grant.fresh {
                    km.granted(&grant, sent, replied, slack);
                } else {
                    km.reclaimed_own(&grant, sent, replied, slack);
                }
            }
            Claim::Busy(record) => {
                km.seen(&record.fence());
                if status == Status::Free {
                    return Err(format!("busy with {record:?}, but no grant can be live"));
                }
                if own {
                    return Err(format!("{holder}'s own claim was busy with {record:?}"));
                }
                if matches_observed {
                    return Err(format!(
                        "reclaim of the observed grant was busy with {record:?}"
                    ));
                }
                km.check_record(&record)?;
            }
        }
        Ok(())
    }
}

/// The granted TTL is the asked one rounded up to the granularity, and the
/// deadline is the store's send instant plus the TTL.
fn check_grant(
    grant: &lease_core::Grant,
    asked: Duration,
    granularity: Duration,
    sent: Instant,
    replied: Instant,
    lag: &Lag,
) -> Result<(), String> {
    crate::check::judge_deadline(grant, sent, replied, lag.worst(sent, replied))?;
    check_ttl(grant, asked, granularity)
}

fn check_ttl(
    grant: &lease_core::Grant,
    asked: Duration,
    granularity: Duration,
) -> Result<(), String> {
    if grant.ttl < asked || grant.ttl >= asked + granularity.max(Duration::from_nanos(1)) {
        return Err(format!(
            "asked for {asked:?}, granted {:?} (granularity {granularity:?})",
            grant.ttl
        ));
    }
    Ok(())
}
