//! The store trait every backend implements, and the capabilities it declares.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

#[cfg(doc)]
use crate::Rule;

use async_trait::async_trait;
use futures::future::join_all;

use crate::types::round_up;
use crate::{
    Claim, Cursor, Fence, Grant, Holder, LeaseError, LeaseKey, LeaseRecord, Listed, Op, Page,
};

/// A shared, type-erased store: what the helpers and the suite take.
pub type DynLeaseStore = Arc<dyn LeaseStore>;

/// What a backend can do, so callers and the conformance suite can time
/// their checks. Capabilities never switch a rule off.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct Capabilities {
    /// The backend's name, as used in errors (`memory`, `redis`, `etcd`).
    pub backend: &'static str,
    /// The smallest TTL granted; a smaller one is [`LeaseError::InvalidTtl`].
    pub min_ttl: Duration,
    /// The largest TTL granted; a larger one is [`LeaseError::InvalidTtl`].
    pub max_ttl: Duration,
    /// TTLs are rounded up to a multiple of this (etcd: one second).
    pub ttl_granularity: Duration,
    /// How long after `reply + ttl` an expired grant may still look live
    /// (expiry checks that run periodically, clock rate differences).
    pub expiry_slack: Duration,
    /// The largest marker or guarded value, in bytes.
    pub max_value_len: usize,
    /// How long an ended grant's record may be kept after its end (to order
    /// later tokens), before only live records and this window remain.
    pub record_retention: Duration,
    /// How [`LeaseStore::wait_free`] learns that a key was freed.
    pub wakeup: Wakeup,
}

/// How a waiter learns that a key was freed: what the store promises about
/// [`LeaseStore::wait_free`]'s promptness. The conformance suite holds a
/// store to what it declares: a store that declares notifications must wake
/// a waiter well inside its fallback re-check, so notifications that
/// silently fail are caught.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Wakeup {
    /// Releases are pushed to waiters (a channel, etcd watch, Redis
    /// pub/sub); expiry, which publishes nothing, and missed messages are
    /// caught by a re-check at least every `recheck`.
    Notified {
        /// The fallback re-check interval.
        recheck: Duration,
    },
    /// Waiters poll the key every `every`; a release is seen up to that
    /// late.
    Polled {
        /// The polling interval.
        every: Duration,
    },
}

impl Wakeup {
    /// The longest a waiter may take to see a release, past the delays of
    /// the network and the scheduler: nothing when notified, one polling
    /// interval when polled.
    pub fn release_latency(&self) -> Duration {
        match *self {
            Wakeup::Notified { .. } => Duration::ZERO,
            Wakeup::Polled { every } => every,
        }
    }
}

impl Capabilities {
    /// Capabilities with millisecond TTLs from 1 ms to 30 days, no slack,
    /// values up to 64 KiB and waiters woken by notification (re-checked
    /// every second); adjust with the `with_*` methods.
    pub fn new(backend: &'static str) -> Self {
        Self {
            backend,
            min_ttl: Duration::from_millis(1),
            max_ttl: Duration::from_secs(30 * 24 * 3600),
            ttl_granularity: Duration::from_millis(1),
            expiry_slack: Duration::ZERO,
            max_value_len: 64 * 1024,
            record_retention: Duration::ZERO,
            wakeup: Wakeup::Notified {
                recheck: Duration::from_secs(1),
            },
        }
    }

    /// Sets [`Capabilities::wakeup`].
    pub fn with_wakeup(mut self, wakeup: Wakeup) -> Self {
        self.wakeup = wakeup;
        self
    }

    /// Sets [`Capabilities::min_ttl`].
    pub fn with_min_ttl(mut self, min_ttl: Duration) -> Self {
        self.min_ttl = min_ttl;
        self
    }

    /// Sets [`Capabilities::max_ttl`].
    pub fn with_max_ttl(mut self, max_ttl: Duration) -> Self {
        self.max_ttl = max_ttl;
        self
    }

    /// Sets [`Capabilities::ttl_granularity`].
    pub fn with_ttl_granularity(mut self, granularity: Duration) -> Self {
        self.ttl_granularity = granularity;
        self
    }

    /// Sets [`Capabilities::expiry_slack`].
    pub fn with_expiry_slack(mut self, slack: Duration) -> Self {
        self.expiry_slack = slack;
        self
    }

    /// Sets [`Capabilities::record_retention`].
    pub fn with_record_retention(mut self, retention: Duration) -> Self {
        self.record_retention = retention;
        self
    }

    /// Sets [`Capabilities::max_value_len`].
    pub fn with_max_value_len(mut self, len: usize) -> Self {
        self.max_value_len = len;
        self
    }

    /// The TTL a backend grants for `ttl`: rounded up to the granularity.
    ///
    /// # Errors
    /// [`LeaseError::InvalidTtl`] naming `key` when `ttl` is zero, below the
    /// minimum or above the maximum. Nothing is clamped.
    pub fn grant_ttl(&self, key: &LeaseKey, ttl: Duration) -> Result<Duration, LeaseError> {
        let rule = if ttl.is_zero() {
            Some("a TTL must be greater than zero".to_owned())
        } else if ttl < self.min_ttl {
            Some(format!(
                "below the {} minimum of {:?}",
                self.backend, self.min_ttl
            ))
        } else if ttl > self.max_ttl {
            Some(format!(
                "above the {} maximum of {:?}",
                self.backend, self.max_ttl
            ))
        } else {
            None
        };
        match rule {
            Some(rule) => Err(LeaseError::InvalidTtl {
                key: key.clone(),
                ttl,
                rule,
            }),
            None => Ok(round_up(ttl, self.ttl_granularity).min(self.max_ttl)),
        }
    }

    /// Checks a marker or guarded value's size.
    ///
    /// # Errors
    /// [`LeaseError::InvalidValue`] naming `key` when `len` is over
    /// [`Capabilities::max_value_len`].
    pub fn check_value(&self, key: &LeaseKey, len: usize) -> Result<(), LeaseError> {
        if len > self.max_value_len {
            return Err(LeaseError::InvalidValue {
                key: key.clone(),
                rule: format!(
                    "{len} bytes is over the {} limit of {} bytes",
                    self.backend, self.max_value_len
                ),
            });
        }
        Ok(())
    }
}

/// A lease store: the operations of the lease contract on one backend.
///
/// Every method has a time limit and fails with [`LeaseError::Timeout`] past
/// it; a mutating call that failed with its outcome unknown says so through
/// [`LeaseError::is_indeterminate`]. TTLs are counted by the store's clock,
/// never the caller's wall clock. Leases, markers and guarded values live in
/// three separate key spaces: the same [`LeaseKey`] may name one of each.
///
/// The contract is stated rule by rule in [`Rule`]; each method names the
/// rules it keeps, and the conformance suite checks each. Two rules shape
/// every implementation: every grant ends by the server's clock whatever
/// the client loses ([`Rule::BoundedByTheServer`]), and requests of one
/// store may reach the server late and out of order
/// ([`Rule::LateRequestsAreHarmless`]).
#[async_trait]
pub trait LeaseStore: Send + Sync + fmt::Debug + 'static {
    /// What this backend can do: TTL limits and rounding, expiry slack.
    fn capabilities(&self) -> Capabilities;

    /// Claims `key` for `holder` for `ttl`.
    ///
    /// Acquired, with a fresh grant and a token greater than every token
    /// handed out on `key` before, when the key has no live grant: never
    /// claimed, released, expired, or holding a corrupt record (repaired by
    /// the takeover). When `holder` (same id *and* incarnation) already holds
    /// the live grant, acquired again with the same token and
    /// `fresh == false`, live at least until `sent + ttl` and never less
    /// long than before: a claim whose reply was lost can be retried, and
    /// its original, landing late, ends nothing early. Otherwise busy with
    /// the live record.
    ///
    /// Keeps [`Rule::ClaimFreeKey`], [`Rule::ClaimBusyKey`],
    /// [`Rule::ClaimOwnGrant`], [`Rule::TokensIncrease`] and
    /// [`Rule::TtlsAreValidated`].
    ///
    /// # Errors
    /// [`LeaseError::InvalidTtl`] for a TTL the backend cannot grant;
    /// [`LeaseError::Timeout`] / [`LeaseError::Backend`] on failure.
    async fn claim(
        &self,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError>;

    /// Like [`LeaseStore::claim`], but takes over a *live* grant as well, if
    /// and only if the current record is still exactly `observed`
    /// (compare-and-swap). The takeover gets a higher token. If a newer grant
    /// has replaced `observed`, busy with that newer record (unless it is
    /// `holder`'s own, which is returned as by a claim).
    /// Keeps [`Rule::ReclaimComparesAndSwaps`].
    ///
    /// # Errors
    /// As [`LeaseStore::claim`].
    async fn reclaim(
        &self,
        observed: &Fence,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError>;

    /// Extends the grant `fence` proves by `ttl` from now, keeping its token.
    /// Never revives an expired grant, even if nobody claimed the key since.
    /// A renewal that reaches the server after a later one of the same
    /// store was applied changes nothing and answers the grant's time left
    /// (a network backend orders them by [`Stamp`](crate::Stamp)).
    /// Keeps [`Rule::RenewExtendsTheLiveGrant`] and
    /// [`Rule::RenewRefusesAllElse`].
    ///
    /// # Errors
    /// [`LeaseError::Lost`], carrying the current record, when `fence` is not
    /// the live grant (released, expired, superseded, unknown);
    /// [`LeaseError::InvalidTtl`]; timeouts and backend errors.
    async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Grant, LeaseError>;

    /// Renews a batch of grants, each `(fence, ttl)` as [`LeaseStore::renew`]
    /// would, in as few round trips as the backend allows. Returns one
    /// result per renewal, in order, each exactly what `renew` would have
    /// answered for it — its own grant and deadline, or its own error —
    /// and one bad fence never fails the others.
    ///
    /// The default renews them all at once, one `renew` each; backends
    /// with a batch form override it. Keeps [`Rule::RenewManyAnswersEach`].
    async fn renew_many(&self, renewals: &[(Fence, Duration)]) -> Vec<Result<Grant, LeaseError>> {
        join_all(renewals.iter().map(|(fence, ttl)| self.renew(fence, *ttl))).await
    }

    /// Ends the grant `fence` proves, if it is the current one; never touches
    /// a newer grant. Idempotent. Returns whether it released anything.
    /// Keeps [`Rule::ReleaseOnlyTheCurrentGrant`].
    ///
    /// # Errors
    /// Timeouts and backend errors only.
    async fn release(&self, fence: &Fence) -> Result<bool, LeaseError>;

    /// The live grant on `key`, or `None` when there is none.
    /// Keeps [`Rule::InspectShowsTheLiveGrant`].
    ///
    /// # Errors
    /// [`LeaseError::Corrupt`] naming the key when its record cannot be
    /// parsed — distinct from `None`, so "corrupt" and "never claimed" differ.
    async fn inspect(&self, key: &LeaseKey) -> Result<Option<LeaseRecord>, LeaseError>;

    /// Sets a TTL-less marker (a "poison" flag). Succeeds when the marker is
    /// absent or already holds `value`. Keeps [`Rule::MarkersAreIfAbsent`].
    ///
    /// # Errors
    /// [`LeaseError::Conflict`] with the existing value when it holds another.
    async fn put_marker(&self, key: &LeaseKey, value: &str) -> Result<(), LeaseError>;

    /// Deletes a marker if it holds `value`. An absent marker is fine
    /// (`Ok(false)`).
    ///
    /// # Errors
    /// [`LeaseError::Conflict`] with the existing value when it holds another.
    async fn delete_marker(&self, key: &LeaseKey, value: &str) -> Result<bool, LeaseError>;

    /// The marker's value, if set.
    ///
    /// # Errors
    /// Timeouts and backend errors only.
    async fn get_marker(&self, key: &LeaseKey) -> Result<Option<String>, LeaseError>;

    /// Writes `value` under `target` in the guarded key space, atomically
    /// with checking that `fence` is the current live grant: the check and
    /// the write are one server-side step. Keeps
    /// [`Rule::GuardedWritesAreFenced`].
    ///
    /// # Errors
    /// [`LeaseError::Lost`] (and nothing written) when `fence` is not the
    /// live grant; [`LeaseError::InvalidValue`] for an oversized value.
    async fn guarded_write(
        &self,
        fence: &Fence,
        target: &LeaseKey,
        value: &[u8],
    ) -> Result<(), LeaseError>;

    /// The value last written under `target` by [`LeaseStore::guarded_write`].
    ///
    /// # Errors
    /// Timeouts and backend errors only.
    async fn read_guarded(&self, target: &LeaseKey) -> Result<Option<Vec<u8>>, LeaseError>;

    /// Resolves `Ok(true)` once `key` has no live grant (released, expired or
    /// never claimed), `Ok(false)` if `timeout` passes first. Woken by
    /// notification where the backend has it, with a timed re-check so a
    /// missed notification or a silent expiry still wakes it. How promptly
    /// is declared in [`Capabilities::wakeup`]. Keeps
    /// [`Rule::WaitWakesWhenFree`].
    ///
    /// # Errors
    /// [`LeaseError::Corrupt`] is *not* returned: a corrupt record counts as
    /// free. Backend errors that outlast the timeout are returned.
    async fn wait_free(&self, key: &LeaseKey, timeout: Duration) -> Result<bool, LeaseError>;

    /// The live grants on `prefix` and the keys below it (`jobs` lists
    /// `jobs` and `jobs/…`, never `jobs2`), with holder, token and time
    /// left, and the corrupt records among them; expired and released
    /// grants are not listed. At most `limit` entries a page, in no promised
    /// order; pass the page's `next` back for the next page. Every key live
    /// for the whole listing shows up on some page; a key that changed
    /// during it may show up twice, or not at all. Keeps
    /// [`Rule::ListShowsLiveGrants`].
    ///
    /// # Errors
    /// [`LeaseError::Unsupported`] when the backend cannot list (the
    /// default); timeouts and backend errors.
    async fn list(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Listed>, LeaseError> {
        let _ = (prefix, from, limit);
        Err(LeaseError::Unsupported {
            backend: self.capabilities().backend,
            op: Op::List,
        })
    }

    /// The markers set on `prefix` and below it, with their values, paged
    /// as [`LeaseStore::list`].
    ///
    /// # Errors
    /// As [`LeaseStore::list`].
    async fn list_markers(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<(LeaseKey, String)>, LeaseError> {
        let _ = (prefix, from, limit);
        Err(LeaseError::Unsupported {
            backend: self.capabilities().backend,
            op: Op::ListMarkers,
        })
    }

    /// Whether `fence` is still the current live grant: what a holder asks
    /// just before acting. A `true` is only as good as the holder's deadline;
    /// downstream writes should still carry the token. Keeps
    /// [`Rule::CheckFollowsTheLiveGrant`].
    ///
    /// # Errors
    /// Timeouts and backend errors; a corrupt record is `Ok(false)`.
    async fn check(&self, fence: &Fence) -> Result<bool, LeaseError> {
        match self.inspect(&fence.key).await {
            Ok(record) => Ok(record.is_some_and(|record| record.is(fence))),
            // A corrupt record is nobody's live grant.
            Err(LeaseError::Corrupt { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }
}
