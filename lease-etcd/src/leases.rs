//! etcd leases: one per grant, drawn from a pool of idle ones.
//!
//! A grant's key hangs on an etcd lease of its own whose TTL is the granted
//! TTL plus [`MARGIN`]. Nothing keeps that lease alive but the grant's own
//! renewals, so etcd ends the key by itself at most `TTL + MARGIN` after
//! the last claim or renewal it applied — whatever the client loses.
//!
//! Granting a lease is a raft write, so claims do not grant: they take an
//! idle lease of the right TTL from the pool. Such a lease must outlive the
//! holder's deadline, `sent + TTL`: it lasts `MARGIN + TTL` from its last
//! refresh, so a claim attaches it as it is only when that refresh was sent
//! less than [`FRESH`] before the claim; otherwise the claim sends a
//! keep-alive for it alongside its transaction. A lease goes back to the
//! pool only after this store *confirmed* that the key on it was deleted
//! (a release whose reply came back); one whose fate is unknown is left to
//! expire. Idle leases are refreshed while their TTL is in demand and
//! revoked after [`IDLE_GRACE`] without use.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::{Error, LeaseClient};
use futures::future::join_all;
use lease_core::Holder;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) use crate::keepalive::is_lease_not_found;
use crate::keepalive::{Answer, KeepAlive};

/// How much longer an etcd lease lives than the grant on it: etcd lease
/// TTLs are whole seconds, and a pool lease is up to [`FRESH`] old when
/// attached.
pub(crate) const MARGIN: Duration = Duration::from_secs(1);
/// A pool lease refreshed this recently is attached without a keep-alive.
/// Its refresh instant is when the keep-alive was *sent*, so etcd's expiry
/// is later still; the rest of the margin absorbs clock-rate differences.
const FRESH: Duration = Duration::from_millis(750);
/// Idle leases older than this are refreshed while their TTL is in demand:
/// just before they would stop being fresh (a lease taken stale gets its
/// keep-alive alongside the claim instead, so earlier refreshes are waste).
const REFRESH_AFTER: Duration = Duration::from_millis(550);
/// How often the pool looks after its idle leases.
const TEND_EVERY: Duration = Duration::from_millis(100);
/// Idle leases of a TTL not claimed for this long are revoked.
pub const IDLE_GRACE: Duration = Duration::from_secs(3);
/// The most idle leases a store keeps; more are revoked.
const MAX_IDLE: usize = 256;

/// An etcd lease and when its last refresh (grant or keep-alive) was sent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lease {
    pub id: i64,
    /// Its TTL in etcd, in seconds: the grant's TTL plus the margin.
    pub ttl_secs: i64,
    pub refreshed: Instant,
}

impl Lease {
    /// Whether, attached by a request sent at `sent`, it certainly lives
    /// past `sent + ttl_secs - MARGIN` without a keep-alive.
    pub fn fresh_at(&self, sent: Instant) -> bool {
        sent.saturating_duration_since(self.refreshed) < FRESH
    }
}

/// The etcd lease TTL, in seconds, for a grant of `ttl` (whole seconds).
pub(crate) fn lease_ttl_secs(ttl: Duration) -> i64 {
    i64::try_from((ttl + MARGIN).as_secs()).unwrap_or(i64::MAX)
}

/// Why a lease could not be had or refreshed.
#[derive(Debug)]
pub(crate) enum LeaseFailure {
    /// etcd says the lease does not exist (expired or revoked).
    Gone,
    /// etcd granted another TTL than asked: its minimum lease TTL is higher.
    TtlRefused {
        asked: i64,
        granted: i64,
    },
    /// The call failed; the lease may or may not have been refreshed.
    Call(Error),
    TimedOut,
}

#[derive(Default)]
struct State {
    /// Idle leases by TTL, most recently refreshed last.
    idle: HashMap<i64, Vec<Lease>>,
    /// When each TTL was last claimed with.
    demand: HashMap<i64, Instant>,
    /// Leases this store attached to a grant, by id: only these may come
    /// back to the pool, after a confirmed release.
    in_use: HashMap<i64, Lease>,
    /// The grants this store made, by etcd key and create revision: holder
    /// and lease, so a release needs no holder compare nor a read back.
    grants: HashMap<(String, i64), (Holder, i64)>,
    /// The grant on each lease of `grants`, to forget it in O(1).
    grant_on: HashMap<i64, (String, i64)>,
    /// Leases a move to another lease was sent off, its outcome unknown:
    /// that move may still arrive late, so the next renewal moves too.
    moving_off: HashSet<i64>,
}

struct Shared {
    client: LeaseClient,
    call_timeout: Duration,
    state: Mutex<State>,
    keep_alive: KeepAlive,
    granted: AtomicUsize,
    revoked: AtomicUsize,
    keep_alives: AtomicUsize,
}

/// The etcd leases of one store.
#[derive(Clone)]
pub(crate) struct Leases {
    shared: Arc<Shared>,
}

impl Leases {
    /// A pool on `client`, tended until `stop` fires.
    pub fn new(client: LeaseClient, call_timeout: Duration, stop: CancellationToken) -> Self {
        let leases = Self {
            shared: Arc::new(Shared {
                keep_alive: KeepAlive::new(client.clone(), call_timeout, stop.clone()),
                client,
                call_timeout,
                state: Mutex::default(),
                granted: AtomicUsize::new(0),
                revoked: AtomicUsize::new(0),
                keep_alives: AtomicUsize::new(0),
            }),
        };
        tokio::spawn(leases.clone().tend(stop));
        leases
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is a handful of inserts and removes: never half-done.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A lease of `ttl_secs` for a claim: an idle one, or a new grant when
    /// there is none. It counts as in use from here on.
    pub async fn take(&self, ttl_secs: i64) -> Result<Lease, LeaseFailure> {
        let idle = {
            let mut state = self.state();
            state.demand.insert(ttl_secs, Instant::now());
            state.idle.get_mut(&ttl_secs).and_then(Vec::pop)
        };
        let lease = match idle {
            Some(lease) => lease,
            None => self.grant(ttl_secs).await?,
        };
        self.state().in_use.insert(lease.id, lease);
        Ok(lease)
    }

    async fn grant(&self, ttl_secs: i64) -> Result<Lease, LeaseFailure> {
        let mut client = self.shared.client.clone();
        let sent = Instant::now();
        let granted = tokio::time::timeout(self.shared.call_timeout, client.grant(ttl_secs, None))
            .await
            .map_err(|_| LeaseFailure::TimedOut)?
            .map_err(LeaseFailure::Call)?;
        self.shared.granted.fetch_add(1, Ordering::Relaxed);
        if granted.ttl() != ttl_secs {
            self.retire(granted.id());
            return Err(LeaseFailure::TtlRefused {
                asked: ttl_secs,
                granted: granted.ttl(),
            });
        }
        Ok(Lease {
            id: granted.id(),
            ttl_secs,
            refreshed: sent,
        })
    }

    /// Sends one keep-alive for `id` and waits for etcd's answer. On
    /// success the lease lasts its TTL from a moment after `sent`.
    pub async fn refresh(&self, id: i64) -> Result<Instant, LeaseFailure> {
        let sent = Instant::now();
        self.shared.keep_alives.fetch_add(1, Ordering::Relaxed);
        match self.shared.keep_alive.send(id).await {
            Answer::Alive => {
                if let Some(lease) = self.state().in_use.get_mut(&id) {
                    lease.refreshed = lease.refreshed.max(sent);
                }
                Ok(sent)
            }
            Answer::Gone => Err(LeaseFailure::Gone),
            Answer::Failed(error) => Err(LeaseFailure::Call(error)),
            Answer::TimedOut => Err(LeaseFailure::TimedOut),
        }
    }

    /// The grant created at `revision` on `etcd_key` for `holder` now hangs
    /// on lease `id`.
    pub fn attached(&self, id: i64, etcd_key: &str, revision: i64, holder: &Holder) {
        let mut state = self.state();
        if state.in_use.contains_key(&id) {
            let grant = (etcd_key.to_owned(), revision);
            if let Some(earlier) = state.grant_on.insert(id, grant.clone()) {
                state.grants.remove(&earlier);
            }
            state.grants.insert(grant, (holder.clone(), id));
        }
    }

    /// The lease of the grant created at `revision` on `etcd_key`, if this
    /// store made that grant for `holder`.
    pub fn lease_of(&self, etcd_key: &str, revision: i64, holder: &Holder) -> Option<i64> {
        let state = self.state();
        let (made_for, id) = state.grants.get(&(etcd_key.to_owned(), revision))?;
        (made_for == holder).then_some(*id)
    }

    /// A lease taken for a claim whose transaction did not attach it (the
    /// key was held): idle again.
    pub fn unused(&self, lease: Lease) {
        self.forget(lease.id);
        self.idle(lease);
    }

    /// The key on lease `id` was deleted, and this store saw the reply: if
    /// the lease is this store's, it is idle again.
    pub fn released(&self, id: i64) {
        if let Some(lease) = self.forget(id) {
            self.idle(lease);
        }
    }

    /// Lease `id` carries no grant of this store's any more.
    fn forget(&self, id: i64) -> Option<Lease> {
        let mut state = self.state();
        if let Some(grant) = state.grant_on.remove(&id) {
            state.grants.remove(&grant);
        }
        state.moving_off.remove(&id);
        state.in_use.remove(&id)
    }

    /// A move of a key off lease `id` was sent and its outcome is unknown.
    pub fn moving_off(&self, id: i64) {
        self.state().moving_off.insert(id);
    }

    /// Whether a move off lease `id` may still arrive late: then a renewal
    /// must not just refresh it (see `refresh.rs`).
    pub fn is_moving_off(&self, id: i64) -> bool {
        self.state().moving_off.contains(&id)
    }

    /// Lease `id` no longer carries a grant, but its fate is not this
    /// store's to reuse (moved off, or unknown): revoke it in the
    /// background; if that fails it expires on its own.
    pub fn retire(&self, id: i64) {
        self.forget(id);
        let leases = self.clone();
        tokio::spawn(async move { leases.revoke(id).await });
    }

    fn idle(&self, lease: Lease) {
        let mut state = self.state();
        let idle: usize = state.idle.values().map(Vec::len).sum();
        // An idle lease past its own expiry is gone already.
        let alive = lease.refreshed + Duration::from_secs(lease.ttl_secs as u64) > Instant::now();
        if alive && idle < MAX_IDLE {
            let list = state.idle.entry(lease.ttl_secs).or_default();
            list.push(lease);
            list.sort_by_key(|l| l.refreshed);
        } else if alive {
            drop(state);
            self.retire(lease.id);
        }
    }

    async fn revoke(&self, id: i64) {
        let mut client = self.shared.client.clone();
        if let Ok(Ok(_)) = tokio::time::timeout(self.shared.call_timeout, client.revoke(id)).await {
            self.shared.revoked.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refreshes idle leases whose TTL is in demand, revokes those that
    /// are not, and forgets in-use leases that have certainly expired;
    /// revokes every idle lease when the store goes.
    async fn tend(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(TEND_EVERY) => {}
            }
            let now = Instant::now();
            let (stale, unwanted) = {
                let mut state = self.state();
                let State {
                    idle,
                    demand,
                    in_use,
                    grants,
                    grant_on,
                    moving_off,
                } = &mut *state;
                in_use.retain(|_, l| l.refreshed + Duration::from_secs(l.ttl_secs as u64) > now);
                moving_off.retain(|lease| in_use.contains_key(lease));
                grant_on.retain(|lease, grant| {
                    let kept = in_use.contains_key(lease);
                    if !kept {
                        grants.remove(grant);
                    }
                    kept
                });
                let mut unwanted = Vec::new();
                let mut stale = Vec::new();
                demand.retain(|ttl, last| {
                    let wanted = now.saturating_duration_since(*last) < IDLE_GRACE;
                    if let Some(list) = idle.get_mut(ttl) {
                        if wanted {
                            // They stay in the pool while refreshed: a
                            // claim may take one meanwhile (and sends its
                            // own keep-alive with it).
                            stale.extend(
                                list.iter()
                                    .filter(|l| {
                                        now.saturating_duration_since(l.refreshed) > REFRESH_AFTER
                                    })
                                    .copied(),
                            );
                        } else {
                            unwanted.append(list);
                        }
                    }
                    wanted
                });
                // Leases given back after their TTL's demand lapsed (a
                // release long after the claim) have no demand entry left
                // to find them above: they go too, revoked, not forgotten.
                idle.retain(|ttl, list| {
                    if !demand.contains_key(ttl) {
                        unwanted.append(list);
                    }
                    !list.is_empty()
                });
                (stale, unwanted)
            };
            for lease in unwanted {
                self.revoke(lease.id).await;
            }
            let refreshed = join_all(stale.iter().map(|l| self.refresh(l.id))).await;
            for (lease, outcome) in stale.into_iter().zip(refreshed) {
                // A lease taken meanwhile is the claim's now: `refresh`
                // moved its instant on if it was in use; only one still
                // idle is the pool's to update or drop.
                let mut state = self.state();
                let Some(list) = state.idle.get_mut(&lease.ttl_secs) else {
                    continue;
                };
                let Some(at) = list.iter().position(|l| l.id == lease.id) else {
                    continue;
                };
                match outcome {
                    Ok(sent) => {
                        list[at].refreshed = list[at].refreshed.max(sent);
                        list.sort_by_key(|l| l.refreshed);
                    }
                    Err(LeaseFailure::Gone) => {
                        list.remove(at);
                    }
                    Err(_) => {
                        list.remove(at);
                        drop(state);
                        self.retire(lease.id);
                    }
                }
            }
        }
        let idle: Vec<Lease> = self.state().idle.drain().flat_map(|(_, l)| l).collect();
        for lease in idle {
            self.revoke(lease.id).await;
        }
    }

    /// Idle leases in the pool.
    pub fn idle_count(&self) -> usize {
        self.state().idle.values().map(Vec::len).sum()
    }

    /// Leases attached to grants this store made and has not seen end.
    pub fn in_use_count(&self) -> usize {
        self.state().in_use.len()
    }

    /// Keep-alive streams open right now: 0 or 1.
    pub fn streams(&self) -> usize {
        self.shared.keep_alive.streams()
    }

    /// Keep-alives sent and not yet answered.
    pub fn keep_alives_in_flight(&self) -> usize {
        self.shared.keep_alive.in_flight()
    }

    /// Leases granted and revoked, and keep-alives sent, by this store so far.
    pub fn totals(&self) -> (usize, usize, usize) {
        (
            self.shared.granted.load(Ordering::Relaxed),
            self.shared.revoked.load(Ordering::Relaxed),
            self.shared.keep_alives.load(Ordering::Relaxed),
        )
    }
}
