//! The in-memory reference store.
//!
//! Implements every rule of the contract exactly, in one process. It is the
//! store the conformance suite's own tests hold the model to, the fake to put
//! in unit tests, and the embedded default of the conformance CLI.
//!
//! Tokens come from one counter for the whole store, so they increase per key
//! across release, expiry and deletion while memory stays O(live + recently
//! ended leases): ended records are swept once the table has doubled since
//! the last sweep.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::list::page_of;
use crate::{
    Capabilities, Claim, Clock, Cursor, Fence, FencingToken, Grant, Holder, LeaseError, LeaseKey,
    LeaseRecord, LeaseStore, Listed, Looked, MonotonicClock, Page, Wakeup,
};

/// An in-memory [`LeaseStore`]; clones share one store.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    clock: Arc<dyn Clock>,
    capabilities: Capabilities,
    state: Mutex<State>,
    /// Bumped whenever a grant ends by release or takeover; waiters watch it.
    ended: watch::Sender<u64>,
}

/// How a refresh of a live grant sets its end.
#[derive(Clone, Copy)]
enum Refresh {
    /// To `now + ttl` (a renewal).
    Set,
    /// To `now + ttl` only if later (a claim of one's own grant).
    NeverShorten,
}

#[derive(Debug, Default)]
struct State {
    leases: HashMap<LeaseKey, Slot>,
    markers: HashMap<LeaseKey, String>,
    guarded: HashMap<LeaseKey, Vec<u8>>,
    last_token: u64,
    sweep_at: usize,
}

#[derive(Debug)]
enum Slot {
    Granted(Entry),
    Corrupt(String),
}

#[derive(Debug, Clone)]
struct Entry {
    holder: Holder,
    token: FencingToken,
    expires_at: Duration,
}

/// Tables this small are never swept.
const MIN_SWEEP: usize = 64;

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store on the process's monotonic clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(MonotonicClock::new()))
    }

    /// A store on `clock` (a [`ManualClock`](crate::ManualClock) for
    /// deterministic tests).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self::with_clock_and_capabilities(clock, Capabilities::new("memory"))
    }

    /// A store on `clock` that declares and enforces `capabilities` (TTL
    /// limits and rounding, value size).
    pub fn with_clock_and_capabilities(clock: Arc<dyn Clock>, capabilities: Capabilities) -> Self {
        Self {
            inner: Arc::new(Inner {
                clock,
                capabilities,
                state: Mutex::new(State {
                    sweep_at: MIN_SWEEP,
                    ..State::default()
                }),
                ended: watch::Sender::new(0),
            }),
        }
    }

    /// Replaces the lease record of `key` with unparseable content, as a
    /// foreign writer or a bug could leave it. A test hook.
    pub fn plant_corrupt_record(&self, key: &LeaseKey, content: &str) {
        self.state()
            .leases
            .insert(key.clone(), Slot::Corrupt(content.to_owned()));
        self.inner.ended.send_modify(|n| *n += 1);
    }

    /// How many lease records the store keeps, live or ended but not yet
    /// swept. For memory-bound tests.
    pub fn records_kept(&self) -> usize {
        self.state().leases.len()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied update:
        // every update is a single map insert or remove.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notify_ended(&self) {
        self.inner.ended.send_modify(|n| *n += 1);
    }

    /// Grants `key` to `holder` with a new token.
    fn grant_fresh(
        &self,
        state: &mut State,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
        sent: Instant,
    ) -> Grant {
        state.last_token += 1;
        let token = FencingToken(state.last_token);
        let expires_at = self.inner.clock.now() + ttl;
        let replaced = state.leases.insert(
            key.clone(),
            Slot::Granted(Entry {
                holder: holder.clone(),
                token,
                expires_at,
            }),
        );
        if replaced.is_some() {
            self.notify_ended();
        }
        state.sweep(self.inner.clock.now());
        Grant::new(
            Fence {
                key: key.clone(),
                holder: holder.clone(),
                token,
            },
            ttl,
            sent,
            true,
        )
    }

    /// Refreshes `holder`'s own live grant, keeping its token: a renewal
    /// sets its end to `now + ttl`; a claim (`Refresh::NeverShorten`) only
    /// moves it later, as the claim may be a retry whose original lands
    /// after a longer renewal ([`Rule::ClaimOwnGrant`](crate::Rule::ClaimOwnGrant)).
    fn refresh(
        &self,
        state: &mut State,
        fence: &Fence,
        ttl: Duration,
        sent: Instant,
        how: Refresh,
    ) -> Grant {
        let expires_at = self.inner.clock.now() + ttl;
        if let Some(Slot::Granted(entry)) = state.leases.get_mut(&fence.key) {
            entry.expires_at = match how {
                Refresh::Set => expires_at,
                Refresh::NeverShorten => entry.expires_at.max(expires_at),
            };
        }
        Grant::new(fence.clone(), ttl, sent, false)
    }

    fn live(&self, state: &State, key: &LeaseKey) -> Option<LeaseRecord> {
        let now = self.inner.clock.now();
        match state.leases.get(key) {
            Some(Slot::Granted(entry)) if entry.expires_at > now => Some(LeaseRecord {
                key: key.clone(),
                holder: entry.holder.clone(),
                token: entry.token,
                remaining: entry.expires_at - now,
            }),
            _ => None,
        }
    }

    fn claim_in(
        &self,
        state: &mut State,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
        observed: Option<&Fence>,
        sent: Instant,
    ) -> Claim {
        match self.live(state, key) {
            None => Claim::Acquired(self.grant_fresh(state, key, holder, ttl, sent)),
            Some(current) if current.holder == *holder => Claim::Acquired(self.refresh(
                state,
                &current.fence(),
                ttl,
                sent,
                Refresh::NeverShorten,
            )),
            Some(current) if observed.is_some_and(|o| current.is(o)) => {
                Claim::Acquired(self.grant_fresh(state, key, holder, ttl, sent))
            }
            Some(current) => Claim::Busy(current),
        }
    }
}

impl State {
    /// Drops ended records once the table has doubled since the last sweep:
    /// amortised O(1) per grant, memory O(live + recently ended).
    fn sweep(&mut self, now: Duration) {
        if self.leases.len() < self.sweep_at {
            return;
        }
        self.leases
            .retain(|_, slot| matches!(slot, Slot::Granted(e) if e.expires_at > now));
        self.sweep_at = (self.leases.len() * 2).max(MIN_SWEEP);
    }
}

#[async_trait]
impl LeaseStore for MemoryStore {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities.clone()
    }

    async fn claim(
        &self,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError> {
        let sent = Instant::now();
        let ttl = self.inner.capabilities.grant_ttl(key, ttl)?;
        let mut state = self.state();
        Ok(self.claim_in(&mut state, key, holder, ttl, None, sent))
    }

    async fn reclaim(
        &self,
        observed: &Fence,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError> {
        let sent = Instant::now();
        let ttl = self.inner.capabilities.grant_ttl(&observed.key, ttl)?;
        let mut state = self.state();
        Ok(self.claim_in(&mut state, &observed.key, holder, ttl, Some(observed), sent))
    }

    async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Grant, LeaseError> {
        let sent = Instant::now();
        let ttl = self.inner.capabilities.grant_ttl(&fence.key, ttl)?;
        let mut state = self.state();
        match self.live(&state, &fence.key) {
            Some(current) if current.is(fence) => {
                Ok(self.refresh(&mut state, fence, ttl, sent, Refresh::Set))
            }
            current => Err(LeaseError::lost(fence, current)),
        }
    }

    async fn release(&self, fence: &Fence) -> Result<bool, LeaseError> {
        let mut state = self.state();
        match self.live(&state, &fence.key) {
            Some(current) if current.is(fence) => {
                state.leases.remove(&fence.key);
                drop(state);
                self.notify_ended();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn inspect(&self, key: &LeaseKey) -> Result<Option<LeaseRecord>, LeaseError> {
        let state = self.state();
        if let Some(Slot::Corrupt(content)) = state.leases.get(key) {
            return Err(LeaseError::Corrupt {
                key: key.clone(),
                detail: format!("not a lease record: {content:?}"),
            });
        }
        Ok(self.live(&state, key))
    }

    async fn put_marker(&self, key: &LeaseKey, value: &str) -> Result<(), LeaseError> {
        self.inner.capabilities.check_value(key, value.len())?;
        let mut state = self.state();
        match state.markers.get(key) {
            Some(existing) if existing != value => Err(LeaseError::Conflict {
                key: key.clone(),
                existing: existing.clone(),
            }),
            Some(_) => Ok(()),
            None => {
                state.markers.insert(key.clone(), value.to_owned());
                Ok(())
            }
        }
    }

    async fn delete_marker(&self, key: &LeaseKey, value: &str) -> Result<bool, LeaseError> {
        let mut state = self.state();
        match state.markers.get(key) {
            None => Ok(false),
            Some(existing) if existing != value => Err(LeaseError::Conflict {
                key: key.clone(),
                existing: existing.clone(),
            }),
            Some(_) => {
                state.markers.remove(key);
                Ok(true)
            }
        }
    }

    async fn get_marker(&self, key: &LeaseKey) -> Result<Option<String>, LeaseError> {
        Ok(self.state().markers.get(key).cloned())
    }

    async fn list(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Listed>, LeaseError> {
        let state = self.state();
        let found = page_of(state.leases.keys(), prefix, from, limit, |key| match state
            .leases
            .get(key)
        {
            Some(Slot::Corrupt(content)) => Some(Listed::Corrupt {
                key: key.clone(),
                detail: format!("not a lease record: {content:?}"),
            }),
            _ => self.live(&state, key).map(Listed::Held),
        });
        Ok(found)
    }

    async fn list_markers(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<(LeaseKey, String)>, LeaseError> {
        let state = self.state();
        Ok(page_of(state.markers.keys(), prefix, from, limit, |key| {
            state.markers.get(key).map(|v| (key.clone(), v.clone()))
        }))
    }

    async fn guarded_write(
        &self,
        fence: &Fence,
        target: &LeaseKey,
        value: &[u8],
    ) -> Result<(), LeaseError> {
        self.inner.capabilities.check_value(target, value.len())?;
        let mut state = self.state();
        match self.live(&state, &fence.key) {
            Some(current) if current.is(fence) => {
                state.guarded.insert(target.clone(), value.to_vec());
                Ok(())
            }
            current => Err(LeaseError::lost(fence, current)),
        }
    }

    async fn read_guarded(&self, target: &LeaseKey) -> Result<Option<Vec<u8>>, LeaseError> {
        Ok(self.state().guarded.get(target).cloned())
    }

    async fn wait_free(&self, key: &LeaseKey, timeout: Duration) -> Result<bool, LeaseError> {
        let recheck = match self.inner.capabilities.wakeup {
            Wakeup::Notified { recheck } => recheck,
            Wakeup::Polled { every } => every,
        };
        crate::wait_until_free(timeout, (recheck, Duration::ZERO), || {
            // Subscribed before the look: no end falls between them.
            let mut ended = self.inner.ended.subscribe();
            ended.borrow_and_update();
            let remaining = {
                let state = self.state();
                self.live(&state, key).map(|record| record.remaining)
            };
            let clock = self.inner.clock.clone();
            std::future::ready(Ok(match remaining {
                None => Looked::Free,
                Some(remaining) => Looked::Held {
                    remaining,
                    // The store's own clock, a manual one included, ends
                    // the grant; a release or claim elsewhere says so.
                    freed: Box::pin(async move {
                        let expiry = clock.now() + remaining;
                        tokio::select! {
                            _ = ended.changed() => {}
                            () = clock.sleep_until(expiry) => {}
                        }
                    }),
                },
            }))
        })
        .await
    }
}
