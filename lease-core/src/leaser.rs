//! Holding a lease: acquire, keep alive in the background, signal loss.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::keeper::{Entry, Keeper, KeeperStats, LostReason, lock};
use crate::{Claim, DynLeaseStore, Fence, Holder, LeaseError, LeaseKey, LeaseRecord};

/// Acquires leases for one holder and keeps them alive.
///
/// A held lease is renewed every `renew_every` (a third of the TTL by
/// default), so two renewals can fail before the lease is at risk. One
/// keeper per leaser, shared by its clones, renews all of its leases in
/// batches ([`LeaseStore::renew_many`](crate::LeaseStore::renew_many)),
/// with a bounded number of calls in flight. Failed renewals that may be
/// transient (timeouts, connection errors) are retried with backoff and
/// jitter until the deadline; a refused renewal ([`LeaseError::Lost`]) or
/// a deadline reached without a successful renewal ends that lease — and
/// only that one — and cancels its [`HeldLease::lost`] token at once.
///
/// A leaser and its clones hold a key at most once: while a [`HeldLease`]
/// from it is alive, acquiring the same key again is busy, even though the
/// store would hand the holder its own grant back. Outside that, a claim that
/// returns the holder's own grant (a retry after an indeterminate error)
/// is held as usual.
#[derive(Clone, Debug)]
pub struct Leaser {
    store: DynLeaseStore,
    holder: Holder,
    ttl: Duration,
    renew_every: Duration,
    retry_every: Duration,
    held: Arc<Mutex<HashSet<LeaseKey>>>,
    keeper: Keeper,
}

impl Leaser {
    /// A leaser for `holder` on `store`, granting leases of `ttl`.
    ///
    /// Its metrics carry the label `leaser="leaser-N"`, N counting the
    /// leasers made in this process; name it with [`Leaser::named`] for
    /// series that keep their name across restarts.
    pub fn new(store: DynLeaseStore, holder: Holder, ttl: Duration) -> Self {
        static MADE: AtomicU64 = AtomicU64::new(1);
        let name = format!("leaser-{}", MADE.fetch_add(1, Ordering::Relaxed));
        Self {
            holder,
            ttl,
            renew_every: ttl / 3,
            retry_every: (ttl / 10).max(Duration::from_millis(1)),
            held: Arc::default(),
            keeper: Keeper::new(store.clone(), name.into()),
            store,
        }
    }

    /// The same leaser, named `name`: the `leaser` label of its metrics
    /// (`lease_keeper_*`) and a field of its log lines, so several leasers
    /// in one process report apart. Name it before acquiring: leases
    /// already held stay with the keeper under the old name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.keeper = Keeper::new(self.store.clone(), name.into().into());
        self
    }

    /// This leaser's name (see [`Leaser::named`]).
    pub fn name(&self) -> &str {
        self.keeper.name()
    }

    /// The same leaser (same holder, same set of held keys) granting leases
    /// of `ttl`, renewed every third of it.
    pub fn with_ttl(&self, ttl: Duration) -> Self {
        Self {
            ttl,
            renew_every: ttl / 3,
            retry_every: (ttl / 10).max(Duration::from_millis(1)),
            ..self.clone()
        }
    }

    /// Renew this often instead of every third of the TTL.
    pub fn renew_every(mut self, every: Duration) -> Self {
        self.renew_every = every;
        self
    }

    /// After a renewal that failed transiently, try again this soon (a tenth
    /// of the TTL by default).
    pub fn retry_every(mut self, every: Duration) -> Self {
        self.retry_every = every.max(Duration::from_millis(1));
        self
    }

    /// What this leaser's keeper (shared with its clones) holds and has
    /// done: leases held, renewal calls, failures and losses.
    pub fn stats(&self) -> KeeperStats {
        self.keeper.stats()
    }

    /// The holder this leaser claims as.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// The TTL of the leases this leaser grants.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The store this leaser claims on.
    pub fn store(&self) -> &DynLeaseStore {
        &self.store
    }

    /// Claims `key` once: held, or busy with the current record.
    ///
    /// # Errors
    /// The store's errors for [`claim`](crate::LeaseStore::claim).
    pub async fn try_acquire(&self, key: &LeaseKey) -> Result<Acquire, LeaseError> {
        if lock(&self.held).contains(key) {
            // Held here already: report that grant without refreshing it.
            if let Some(record) = self.store.inspect(key).await? {
                return Ok(Acquire::Busy(record));
            }
        }
        match self.store.claim(key, &self.holder, self.ttl).await? {
            Claim::Acquired(grant) => {
                if !lock(&self.held).insert(key.clone()) {
                    let record = LeaseRecord {
                        key: key.clone(),
                        holder: self.holder.clone(),
                        token: grant.token(),
                        remaining: grant.ttl,
                    };
                    return Ok(Acquire::Busy(record));
                }
                Ok(Acquire::Held(HeldLease::start(self, grant)))
            }
            Claim::Busy(record) => Ok(Acquire::Busy(record)),
        }
    }

    /// Claims `key`, waiting up to `wait` for it to become free (by the
    /// store's notification, not polling). Busy with the last record seen if
    /// `wait` runs out.
    ///
    /// # Errors
    /// The store's errors for claim and wait.
    pub async fn acquire(&self, key: &LeaseKey, wait: Duration) -> Result<Acquire, LeaseError> {
        let give_up = Instant::now() + wait;
        loop {
            match self.try_acquire(key).await? {
                Acquire::Held(lease) => return Ok(Acquire::Held(lease)),
                Acquire::Busy(record) => {
                    let left = give_up.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Acquire::Busy(record));
                    }
                    // Free or not, claim again: someone else may win the race.
                    self.store.wait_free(key, left).await?;
                }
            }
        }
    }
}

/// The outcome of [`Leaser::try_acquire`] and [`Leaser::acquire`].
#[derive(Debug)]
#[must_use]
pub enum Acquire {
    /// The lease is ours and kept alive.
    Held(HeldLease),
    /// Someone else holds it.
    Busy(LeaseRecord),
}

impl Acquire {
    /// The held lease, if acquired.
    pub fn held(self) -> Option<HeldLease> {
        match self {
            Acquire::Held(lease) => Some(lease),
            Acquire::Busy(_) => None,
        }
    }
}

/// A lease held and kept alive in the background.
///
/// Its [`lost`](HeldLease::lost) token is cancelled the moment the holder
/// must stop acting as owner: a renewal was refused, the deadline passed
/// without a successful renewal, or the lease was released or dropped.
/// Dropping it stops renewing without releasing: the grant then runs out by
/// its TTL. Call [`HeldLease::release`] to end it at once.
#[derive(Debug)]
pub struct HeldLease {
    fence: Fence,
    store: DynLeaseStore,
    deadline: watch::Receiver<Instant>,
    lost: CancellationToken,
    reason: Arc<Mutex<Option<LostReason>>>,
    keeper: Keeper,
    entry: u64,
    held: Arc<Mutex<HashSet<LeaseKey>>>,
}

impl HeldLease {
    fn start(leaser: &Leaser, grant: crate::Grant) -> Self {
        let (entry, deadline) = Entry::new(
            grant.fence.clone(),
            leaser.ttl,
            leaser.renew_every,
            leaser.retry_every,
            &grant,
        );
        let (lost, reason) = (entry.lost.clone(), entry.reason.clone());
        Self {
            fence: grant.fence,
            store: leaser.store.clone(),
            deadline,
            lost,
            reason,
            entry: leaser.keeper.add(entry),
            keeper: leaser.keeper.clone(),
            held: leaser.held.clone(),
        }
    }

    /// The proof of the grant, to present with guarded writes.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The current deadline on this process's monotonic clock: the holder
    /// must stop acting as owner by then unless a renewal moves it.
    pub fn deadline(&self) -> Instant {
        *self.deadline.borrow()
    }

    /// Cancelled the moment the lease is lost, released or dropped. Clone it
    /// into the work done under the lease.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Whether the lease is no longer held.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Why the lease was lost, once it was.
    pub fn lost_reason(&self) -> Option<LostReason> {
        lock(&self.reason).clone()
    }

    /// Stops renewing and releases the grant. Returns whether the store
    /// released anything (false when it had already been lost).
    ///
    /// # Errors
    /// The store's errors for [`release`](crate::LeaseStore::release); the
    /// lease is treated as ended either way.
    pub async fn release(self) -> Result<bool, LeaseError> {
        self.stop();
        self.store.release(&self.fence).await
    }

    fn stop(&self) {
        self.keeper.remove(self.entry);
        self.lost.cancel();
        lock(&self.held).remove(&self.fence.key);
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.stop();
    }
}
