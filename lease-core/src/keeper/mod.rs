//! The keeper: one background task per [`Leaser`](crate::Leaser) (shared by
//! its clones) that keeps every lease it holds alive.
//!
//! Each held lease is an entry with its fence, TTL, renewal period and
//! deadline. The keeper wakes when the earliest entry is due (or its
//! deadline comes), gathers every entry due within a quarter of its period
//! — renewing a little early is safe, and it lets leases acquired at
//! different moments share batches — and sends them with
//! [`LeaseStore::renew_many`](crate::LeaseStore::renew_many), at most
//! [`MAX_BATCH`] renewals a call and at most [`MAX_IN_FLIGHT`] calls at
//! once. Calls run on tasks of their own, so the keeper itself never
//! waits on the store: a lease's `lost` signal fires the moment its own
//! renewal is refused or its own deadline passes, whatever the other
//! leases in its batch are doing.
//!
//! A renewal that failed transiently is retried after the retry period,
//! doubled with each further failure up to the renewal period, with ±20 %
//! jitter, so a slow or failing server sees fewer requests, not more; but
//! never later than halfway to the lease's deadline, so a lease at risk
//! still gets its tries.
//! The task runs while the keeper holds leases and ends with the last one.
//!
//! What it counts is in [`KeeperStats`], and also reported through the
//! `metrics` facade (see the crate docs for the names).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

mod entry;

pub(crate) use entry::{Entry, lock};
pub use entry::{KeeperStats, LostReason};

use crate::{DynLeaseStore, Fence, LeaseError};

/// The most renewals one `renew_many` call carries.
pub const MAX_BATCH: usize = 512;
/// The most `renew_many` calls a keeper has under way at once.
pub const MAX_IN_FLIGHT: usize = 4;

#[derive(Default)]
struct State {
    entries: HashMap<u64, Entry>,
    next_id: u64,
    running: bool,
    stats: KeeperStats,
}

/// The keeper of one leaser and its clones.
#[derive(Clone)]
pub(crate) struct Keeper {
    store: DynLeaseStore,
    shared: Arc<Shared>,
}

struct Shared {
    /// The leaser's name: the `leaser` label of its metrics.
    name: Arc<str>,
    state: Mutex<State>,
    /// Woken when entries come or go, and when a call ends.
    changed: Notify,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Keeper {
    pub fn new(store: DynLeaseStore, name: Arc<str>) -> Self {
        Self {
            store,
            shared: Arc::new(Shared {
                name,
                state: Mutex::default(),
                changed: Notify::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// The leaser's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    fn held_gauge(&self, held: usize) {
        metrics::gauge!("lease_keeper_leases_held", "leaser" => self.name().to_owned())
            .set(held as f64);
    }

    fn in_flight_gauge(&self, calls: usize) {
        metrics::gauge!("lease_keeper_calls_in_flight", "leaser" => self.name().to_owned())
            .set(calls as f64);
    }

    /// Keeps `entry` alive until [`Keeper::remove`]; returns its id.
    pub fn add(&self, entry: Entry) -> u64 {
        let mut state = self.state();
        let id = state.next_id;
        state.next_id += 1;
        state.entries.insert(id, entry);
        state.stats.held = state.entries.len();
        self.held_gauge(state.entries.len());
        if !state.running {
            state.running = true;
            tokio::spawn(self.clone().run());
        }
        drop(state);
        self.shared.changed.notify_one();
        id
    }

    /// Stops keeping entry `id` alive and cancels its `lost` token.
    pub fn remove(&self, id: u64) {
        let mut state = self.state();
        if let Some(entry) = state.entries.remove(&id) {
            entry.lost.cancel();
        }
        state.stats.held = state.entries.len();
        self.held_gauge(state.entries.len());
        drop(state);
        self.shared.changed.notify_one();
    }

    pub fn stats(&self) -> KeeperStats {
        self.state().stats
    }

    async fn run(self) {
        loop {
            let wake = {
                let mut state = self.state();
                if state.entries.is_empty() {
                    state.running = false;
                    return;
                }
                let now = Instant::now();
                self.expire(&mut state, now);
                while state.stats.calls_in_flight < MAX_IN_FLIGHT {
                    let batch = due(&mut state, now);
                    if batch.is_empty() {
                        break;
                    }
                    state.stats.calls_in_flight += 1;
                    state.stats.most_calls_in_flight = state
                        .stats
                        .most_calls_in_flight
                        .max(state.stats.calls_in_flight);
                    self.in_flight_gauge(state.stats.calls_in_flight);
                    tokio::spawn(self.clone().send(batch));
                }
                next_wake(&state, now, state.stats.calls_in_flight < MAX_IN_FLIGHT)
            };
            tokio::select! {
                () = sleep_until(wake) => {}
                () = self.shared.changed.notified() => {}
            }
        }
    }

    /// Loses every entry whose deadline has come.
    fn expire(&self, state: &mut State, now: Instant) {
        let passed: Vec<u64> = state
            .entries
            .iter()
            .filter(|(_, e)| *e.deadline.borrow() <= now)
            .map(|(id, _)| *id)
            .collect();
        let lost: Vec<Entry> = passed
            .iter()
            .filter_map(|id| state.entries.remove(id))
            .collect();
        state.stats.lost_deadline += lost.len() as u64;
        state.stats.held = state.entries.len();
        if !lost.is_empty() {
            // Counted before `lost` fires (see `send`).
            self.held_gauge(state.entries.len());
        }
        for entry in lost {
            entry.lose(LostReason::DeadlinePassed, &self.shared.name);
        }
    }

    /// One `renew_many` call for `batch`, then its results applied.
    async fn send(self, batch: Vec<(u64, Fence, Duration)>) {
        // Leases released or dropped between being picked and this task
        // running are not renewed: a renewal sent after its holder let go
        // would keep the grant alive past what the holder could have
        // written. From here to the store's first send there is no await.
        let batch: Vec<(u64, Fence, Duration)> = {
            let state = self.state();
            batch
                .into_iter()
                .filter(|(id, _, _)| state.entries.contains_key(id))
                .collect()
        };
        if batch.is_empty() {
            let mut state = self.state();
            state.stats.calls_in_flight -= 1;
            self.in_flight_gauge(state.stats.calls_in_flight);
            drop(state);
            self.shared.changed.notify_one();
            return;
        }
        let renewals: Vec<(Fence, Duration)> =
            batch.iter().map(|(_, f, ttl)| (f.clone(), *ttl)).collect();
        let started = Instant::now();
        let results = self.store.renew_many(&renewals).await;
        let took = started.elapsed();
        let leaser = self.name().to_owned();
        metrics::histogram!("lease_keeper_call_seconds", "leaser" => leaser.clone())
            .record(took.as_secs_f64());
        metrics::counter!("lease_keeper_renewals_total", "leaser" => leaser.clone())
            .increment(batch.len() as u64);
        let mut state = self.state();
        state.stats.calls += 1;
        state.stats.renewals += batch.len() as u64;
        state.stats.calls_in_flight -= 1;
        state.stats.last_call = took;
        state.stats.longest_call = state.stats.longest_call.max(took);
        self.in_flight_gauge(state.stats.calls_in_flight);
        let now = Instant::now();
        let mut results = results.into_iter();
        for (id, _, _) in &batch {
            let outcome = results.next();
            let State { entries, stats, .. } = &mut *state;
            // Released, dropped or lost while the call was under way.
            let Some(entry) = entries.get_mut(id) else {
                continue;
            };
            entry.sending = false;
            match outcome {
                Some(Ok(grant)) => {
                    // A renewal sent before the current deadline was set
                    // cannot move it backwards.
                    entry
                        .deadline
                        .send_modify(|d| *d = (*d).max(grant.deadline));
                    // From the send, not the reply: a slow reply eats into
                    // the next period, never into the margin before the
                    // deadline.
                    entry.due = started + entry.renew_every;
                    entry.failures = 0;
                }
                Some(Err(LeaseError::Lost { current, .. })) => {
                    // Counted before `lost` fires, so whoever wakes on it
                    // sees the figures that include it.
                    if let Some(entry) = entries.remove(id) {
                        stats.lost_refused += 1;
                        stats.held = entries.len();
                        self.held_gauge(entries.len());
                        entry.lose(LostReason::Refused(current.map(|record| *record)), &leaser);
                    }
                }
                Some(Err(error)) => {
                    tracing::info!(
                        leaser,
                        fence = %entry.fence,
                        %error,
                        left_ms = entry.deadline.borrow().saturating_duration_since(now).as_millis() as u64,
                        "lease renewal failed; retrying"
                    );
                    metrics::counter!("lease_keeper_renewals_failed_total", "leaser" => leaser.clone())
                        .increment(1);
                    stats.renewals_failed += 1;
                    let left = entry.deadline.borrow().saturating_duration_since(now);
                    entry.due =
                        now + backoff(entry.retry_every, entry.renew_every, entry.failures, left);
                    entry.failures = entry.failures.saturating_add(1);
                }
                None => {
                    // A store that answered fewer results than renewals:
                    // retried like a transient failure.
                    stats.renewals_failed += 1;
                    entry.due = now + entry.retry_every;
                    entry.failures = entry.failures.saturating_add(1);
                }
            }
        }
        state.stats.held = state.entries.len();
        self.held_gauge(state.entries.len());
        drop(state);
        self.shared.changed.notify_one();
    }
}

/// Up to [`MAX_BATCH`] entries due by now (or within a quarter of their
/// period), marked as being sent.
fn due(state: &mut State, now: Instant) -> Vec<(u64, Fence, Duration)> {
    let mut batch = Vec::new();
    for (id, entry) in &mut state.entries {
        if batch.len() == MAX_BATCH {
            break;
        }
        // Healthy entries due soon join the batch; retries keep their
        // backoff.
        let early = if entry.failures == 0 {
            entry.renew_every / 4
        } else {
            Duration::ZERO
        };
        if !entry.sending && entry.due <= now + early {
            entry.sending = true;
            batch.push((*id, entry.fence.clone(), entry.ttl));
        }
    }
    batch
}

/// When the keeper must look again: the next deadline, or the next entry
/// due when a call could be sent for it (else a call's end wakes it).
fn next_wake(state: &State, now: Instant, can_send: bool) -> Instant {
    state
        .entries
        .values()
        .map(|e| {
            let deadline = *e.deadline.borrow();
            if e.sending || !can_send {
                deadline
            } else {
                deadline.min(e.due)
            }
        })
        .min()
        .unwrap_or(now + Duration::from_secs(3600))
}

/// The wait before retry number `failures + 1`: the retry period doubled
/// per earlier failure, at most the renewal period, ±20 % jitter — but
/// never more than half the time `left` before the deadline, so the lease
/// always gets another try while it can still be saved.
fn backoff(
    retry_every: Duration,
    renew_every: Duration,
    failures: u32,
    left: Duration,
) -> Duration {
    let doubled = retry_every.saturating_mul(1u32 << failures.min(16));
    let base = doubled.min(renew_every.max(retry_every));
    base.mul_f64(0.8 + 0.4 * jitter())
        .min(left / 2)
        .max(Duration::from_millis(1))
}

/// A number in [0, 1) that differs between calls: enough to spread
/// retries, no randomness crate needed.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(Instant::now().elapsed().as_nanos() as u64);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}
