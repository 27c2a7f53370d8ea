//! Concurrent safety: many holders contend for a few keys, write to fenced
//! resources while they believe they own the lease, sometimes pause past
//! their deadline, and the history is checked afterwards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lease_core::{
    Claim, DynLeaseStore, FencedResource, FencingToken, Holder, LeaseError, LeaseKey,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::time::Instant;

use crate::Timing;

const WORKERS: usize = 6;
const KEYS: usize = 2;

/// One grant's life as its holder saw it.
#[derive(Clone, Debug)]
struct Tenure {
    key: usize,
    holder: String,
    token: FencingToken,
    sent: Instant,
    /// The holder owns the key from the reply of the grant …
    start: Instant,
    /// … until `sent + ttl` of its last successful renewal, or the sending
    /// of its release, whichever came first.
    end: Instant,
    fresh: bool,
}

#[derive(Default)]
struct History {
    tenures: Vec<Tenure>,
    violations: Vec<String>,
}

/// Runs the contention for `ttls` TTLs and checks the history. Returns the
/// number of grants checked.
pub(crate) async fn run(store: DynLeaseStore, timing: Timing, ttls: u32) -> Result<u32, String> {
    let history = Arc::new(Mutex::new(History::default()));
    let resources: Arc<Vec<FencedResource<u64>>> = Arc::new(
        (0..KEYS)
            .map(|i| FencedResource::new(format!("resource-{i}"), 0))
            .collect(),
    );
    let run_id = rand::random::<u32>();
    let keys: Arc<Vec<LeaseKey>> = Arc::new(
        (0..KEYS)
            .map(|i| LeaseKey::new(format!("safety/{run_id}/{i}")).expect("valid"))
            .collect(),
    );
    let until = Instant::now() + timing.ttl * ttls;
    let workers = (0..WORKERS).map(|i| {
        let worker = Worker {
            store: store.clone(),
            timing: timing.clone(),
            holder: Holder::new(format!("w{}", i % 4), format!("{i}")).expect("valid"),
            keys: keys.clone(),
            resources: resources.clone(),
            history: history.clone(),
            rng: StdRng::seed_from_u64(u64::from(run_id) ^ i as u64),
        };
        tokio::spawn(worker.run(until))
    });
    for outcome in futures::future::join_all(workers).await {
        outcome.map_err(|e| format!("worker panicked: {e}"))??;
    }
    let history = std::mem::take(&mut *history.lock().expect("no worker panicked"));
    let mut violations = history.violations;
    violations.extend(check(&history.tenures));
    if violations.is_empty() {
        Ok(u32::try_from(history.tenures.len()).unwrap_or(u32::MAX))
    } else {
        Err(format!(
            "{} violations:\n{}",
            violations.len(),
            violations.join("\n")
        ))
    }
}

/// Windows of different grants on one key never overlap; a grant whose
/// request was sent after another's reply has a higher token.
fn check(tenures: &[Tenure]) -> Vec<String> {
    // A holder that claims its own live grant again continues the same
    // grant: one window per (key, token), from its first start to the end
    // its latest tenure believed in (a later release ends it for all).
    let mut grants: HashMap<(usize, FencingToken), Tenure> = HashMap::new();
    for t in tenures {
        grants
            .entry((t.key, t.token))
            .and_modify(|merged| {
                if t.start >= merged.start {
                    merged.end = t.end;
                } else {
                    merged.start = t.start;
                    merged.sent = t.sent;
                    merged.fresh = t.fresh;
                }
            })
            .or_insert_with(|| t.clone());
    }
    let mut by_key: HashMap<usize, Vec<Tenure>> = HashMap::new();
    for t in grants.into_values() {
        by_key.entry(t.key).or_default().push(t);
    }
    let mut violations = Vec::new();
    for (key, list) in by_key {
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if a.token == b.token {
                    continue;
                }
                if a.start.max(b.start) < a.end.min(b.end) {
                    violations.push(format!(
                        "key {key}: {} (token {}) and {} (token {}) both owned it for {:?}",
                        a.holder,
                        a.token,
                        b.holder,
                        b.token,
                        a.end.min(b.end) - a.start.max(b.start)
                    ));
                }
                for (earlier, later) in [(a, b), (b, a)] {
                    if later.fresh && later.sent > earlier.start && later.token <= earlier.token {
                        violations.push(format!(
                            "key {key}: token {} granted after token {} was already handed out",
                            later.token, earlier.token
                        ));
                    }
                }
            }
        }
    }
    violations
}

struct Worker {
    store: DynLeaseStore,
    timing: Timing,
    holder: Holder,
    keys: Arc<Vec<LeaseKey>>,
    resources: Arc<Vec<FencedResource<u64>>>,
    history: Arc<Mutex<History>>,
    rng: StdRng,
}

impl Worker {
    async fn run(mut self, until: Instant) -> Result<(), String> {
        while Instant::now() < until {
            let key = self.rng.random_range(0..KEYS);
            let sent = Instant::now();
            let claim = self
                .store
                .claim(&self.keys[key], &self.holder, self.timing.ttl)
                .await;
            let start = Instant::now();
            match claim {
                Ok(Claim::Acquired(grant)) => self.hold(key, grant, sent, start).await?,
                Ok(Claim::Busy(_)) => {
                    let wait = self.timing.ttl / 4;
                    let _ = self.store.wait_free(&self.keys[key], wait).await;
                }
                Err(e) if e.is_indeterminate() => {}
                Err(e) => return Err(format!("claim failed: {e}")),
            }
        }
        Ok(())
    }

    /// Works under one grant: writes, renews, maybe pauses past the deadline,
    /// then releases or lets it expire.
    async fn hold(
        &mut self,
        key: usize,
        grant: lease_core::Grant,
        sent: Instant,
        start: Instant,
    ) -> Result<(), String> {
        let mut end = sent + grant.ttl;
        let fence = grant.fence.clone();
        let resource = &self.resources[key];
        let renewals = self.rng.random_range(0..3);
        for _ in 0..=renewals {
            // Work while certainly owning: every such write must be accepted.
            for _ in 0..3 {
                if Instant::now() + Duration::from_millis(1) >= end {
                    break;
                }
                if let Err(refused) = resource.write(&fence, |v| *v += 1) {
                    self.violation(format!(
                        "{} wrote inside its window and was refused: {refused}",
                        self.holder
                    ));
                }
                tokio::time::sleep(self.timing.ttl / 10).await;
            }
            let renew_sent = Instant::now();
            if renew_sent >= end {
                break;
            }
            match self.store.renew(&fence, self.timing.ttl).await {
                Ok(renewed) => end = end.max(renew_sent + renewed.ttl),
                Err(LeaseError::Lost { .. }) => {
                    if Instant::now() < end {
                        self.violation(format!(
                            "{} was refused renewal while certainly live ({fence})",
                            self.holder
                        ));
                    }
                    break;
                }
                Err(e) if e.is_indeterminate() => break,
                Err(e) => return Err(format!("renew failed: {e}")),
            }
        }
        let roll = self.rng.random_range(0..10);
        if roll < 3 {
            // A pause past the deadline; then a late write, which the
            // resource may only accept if no newer token reached it.
            tokio::time::sleep_until(end + self.timing.ttl / 2).await;
            let _ = resource.write(&fence, |v| *v += 1);
        } else if roll < 8 {
            let release_sent = Instant::now();
            end = end.min(release_sent);
            self.store
                .release(&fence)
                .await
                .map_err(|e| format!("release failed: {e}"))?;
        }
        self.record(Tenure {
            key,
            holder: self.holder.to_string(),
            token: fence.token,
            sent,
            start,
            end,
            fresh: grant.fresh,
        });
        Ok(())
    }

    fn violation(&self, what: String) {
        self.history
            .lock()
            .expect("no worker panicked")
            .violations
            .push(what);
    }

    fn record(&self, tenure: Tenure) {
        self.history
            .lock()
            .expect("no worker panicked")
            .tenures
            .push(tenure);
    }
}
