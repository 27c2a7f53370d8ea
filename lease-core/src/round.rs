//! At most one winner per round, fleet-wide.

use std::time::Duration;

use crate::{Claim, DynLeaseStore, Grant, Holder, LeaseError, LeaseKey, LeaseRecord};

/// "At most one winner per round": periodic work that one replica of a fleet
/// should do once per period.
///
/// The winner takes the lease for the round's period and never releases it;
/// the round ends when the lease expires, whether or not the winner
/// survives. A winner that tries again in the same round does not win twice.
#[derive(Clone, Debug)]
pub struct Round {
    store: DynLeaseStore,
    key: LeaseKey,
    holder: Holder,
    period: Duration,
}

impl Round {
    /// Rounds of `period` on `key`, contended for as `holder`.
    pub fn new(store: DynLeaseStore, key: LeaseKey, holder: Holder, period: Duration) -> Self {
        Self {
            store,
            key,
            holder,
            period,
        }
    }

    /// Tries to win the current round: `Some(grant)` for exactly one caller
    /// fleet-wide per round, `None` for everyone else (and for the winner
    /// asking again). A corrupt record is repaired by the win.
    ///
    /// # Errors
    /// The store's errors; when one is indeterminate
    /// ([`LeaseError::is_indeterminate`]) this round may have been won by
    /// this call, and [`Round::current`] tells.
    pub async fn try_win(&self) -> Result<Option<Grant>, LeaseError> {
        // Look first so that a winner asking again neither wins twice nor
        // stretches its round: a claim by the holder would refresh the TTL.
        match self.store.inspect(&self.key).await {
            Ok(Some(_)) => return Ok(None),
            Ok(None) | Err(LeaseError::Corrupt { .. }) => {}
            Err(other) => return Err(other),
        }
        match self
            .store
            .claim(&self.key, &self.holder, self.period)
            .await?
        {
            Claim::Acquired(grant) if grant.fresh => Ok(Some(grant)),
            Claim::Acquired(_) | Claim::Busy(_) => Ok(None),
        }
    }

    /// The record of the round in progress: who won it, with what token, how
    /// long it has left. `None` when no round is running.
    ///
    /// # Errors
    /// [`LeaseError::Corrupt`] when the record is present but unparseable —
    /// distinct from `None`; the next [`Round::try_win`] repairs it.
    pub async fn current(&self) -> Result<Option<LeaseRecord>, LeaseError> {
        self.store.inspect(&self.key).await
    }

    /// The key the rounds are held on.
    pub fn key(&self) -> &LeaseKey {
        &self.key
    }
}
