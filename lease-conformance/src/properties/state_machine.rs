//! Random sequences of operations from several holders over a few keys,
//! checked step by step against the model. Failures shrink to a minimal
//! sequence, printed in the report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lease_core::{DynLeaseStore, Fence, FencingToken, Holder, LeaseError, LeaseKey, LeaseStore};
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use tokio::time::Instant;

use super::model::{Model, Status};
use super::steps::{BIG_VALUE, HOLDERS, KEYS, RECHECK_ALLOWANCE, Step, step};
use crate::Timing;
use crate::lag::Lag;

/// Runs the state-machine test: `cases` random sequences of up to `steps`
/// steps. Returns the number of sequences tried, or the shrunk failure.
pub(crate) async fn run(
    store: DynLeaseStore,
    timing: Timing,
    lag: Lag,
    cases: u32,
    steps: usize,
) -> Result<u32, String> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let config = Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 256,
            max_shrink_time: 60_000,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let tried = AtomicU64::new(0);
        let result = runner.run(&proptest::collection::vec(step(), 1..=steps), |sequence| {
            tried.fetch_add(1, Ordering::Relaxed);
            handle
                // Watched on this thread: a stall of it shows as lag.
                .block_on(lag.watching(Sequence::new(&store, &timing, &lag).run(&sequence)))
                .map_err(TestCaseError::fail)
        });
        match result {
            Ok(()) => Ok(cases),
            Err(TestError::Fail(why, sequence)) => Err(format!(
                "{why}\nminimal failing sequence ({} steps): {sequence:#?}",
                sequence.len()
            )),
            Err(TestError::Abort(why)) => Err(format!("aborted: {why}")),
        }
    })
    .await
    .map_err(|e| format!("state machine panicked: {e}"))?
}

/// Numbers sequences so each runs on keys of its own.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

pub(super) struct Sequence<'a> {
    pub(super) store: &'a dyn LeaseStore,
    pub(super) timing: &'a Timing,
    pub(super) lag: &'a Lag,
    pub(super) keys: Vec<LeaseKey>,
    pub(super) targets: Vec<LeaseKey>,
    pub(super) markers: Vec<LeaseKey>,
    pub(super) holders: Vec<Holder>,
    pub(super) model: Model,
    pub(super) granularity: Duration,
}

impl<'a> Sequence<'a> {
    fn new(store: &'a DynLeaseStore, timing: &'a Timing, lag: &'a Lag) -> Self {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        // Segments with an escaped separator, a space and non-ASCII text.
        let key = |kind: &str, i: usize| {
            LeaseKey::from_segments(["sm", &n.to_string(), kind, "a/b c", "ünï", &i.to_string()])
                .expect("valid")
        };
        Self {
            store: &**store,
            timing,
            lag,
            keys: (0..KEYS).map(|i| key("lease", i)).collect(),
            targets: (0..KEYS).map(|i| key("data", i)).collect(),
            markers: (0..KEYS).map(|i| key("marker", i)).collect(),
            holders: HOLDERS
                .iter()
                .map(|(id, inc)| Holder::new(*id, *inc).expect("valid"))
                .collect(),
            model: Model::default(),
            granularity: store.capabilities().ttl_granularity,
        }
    }

    async fn run(mut self, steps: &[Step]) -> Result<(), String> {
        for (i, step) in steps.iter().enumerate() {
            self.step(step)
                .await
                .map_err(|why| format!("step {i} {step:?}: {why}"))?;
        }
        Ok(())
    }

    /// A TTL between granularity steps, so rounding is exercised too.
    fn ttl(&self, multiple: u8) -> Duration {
        self.timing.ttl * u32::from(multiple) + self.granularity / 2
    }

    /// An earlier fence on `key`, or one never granted when there is none.
    fn fence(&self, key: usize, pick: usize) -> Fence {
        let km = self.model.keys.get(&key);
        match km.filter(|km| !km.fences.is_empty()) {
            Some(km) => km.fences[pick % km.fences.len()].clone(),
            None => Fence {
                key: self.keys[key].clone(),
                holder: self.holders[pick % self.holders.len()].clone(),
                token: FencingToken(u64::MAX - pick as u64),
            },
        }
    }

    async fn step(&mut self, step: &Step) -> Result<(), String> {
        match *step {
            Step::Claim { key, holder, ttl } => {
                let (h, asked) = (self.holders[holder].clone(), self.ttl(ttl));
                let sent = Instant::now();
                let outcome = self.store.claim(&self.keys[key], &h, asked).await;
                let replied = Instant::now();
                self.claimed(key, &h, None, asked, outcome, sent, replied)
            }
            Step::Reclaim {
                key,
                holder,
                observed,
                ttl,
            } => {
                let (h, asked) = (self.holders[holder].clone(), self.ttl(ttl));
                let observed = self.fence(key, observed);
                let sent = Instant::now();
                let outcome = self.store.reclaim(&observed, &h, asked).await;
                let replied = Instant::now();
                self.claimed(key, &h, Some(&observed), asked, outcome, sent, replied)
            }
            Step::Renew { key, fence, ttl } => {
                let (fence, asked) = (self.fence(key, fence), self.ttl(ttl));
                let sent = Instant::now();
                let outcome = self.store.renew(&fence, asked).await;
                let replied = Instant::now();
                self.renewed(key, &fence, asked, outcome, sent, replied)
            }
            Step::RenewMany { ref renewals } => {
                let batch: Vec<(Fence, Duration)> = renewals
                    .iter()
                    .map(|&(key, fence, ttl)| (self.fence(key, fence), self.ttl(ttl)))
                    .collect();
                let sent = Instant::now();
                let outcomes = self.store.renew_many(&batch).await;
                let replied = Instant::now();
                if outcomes.len() != batch.len() {
                    return Err(format!(
                        "renew_many answered {} of {} renewals",
                        outcomes.len(),
                        batch.len()
                    ));
                }
                for ((&(key, _, _), (fence, asked)), outcome) in
                    renewals.iter().zip(&batch).zip(outcomes)
                {
                    self.renewed(key, fence, *asked, outcome, sent, replied)
                        .map_err(|why| format!("in a batch: {why}"))?;
                }
                Ok(())
            }
            Step::Release { key, fence } => {
                let fence = self.fence(key, fence);
                let sent = Instant::now();
                let released = self
                    .store
                    .release(&fence)
                    .await
                    .map_err(|e| e.to_string())?;
                let km = self.model.keys.entry(key).or_default();
                let status = km.status(sent, Instant::now());
                let current = km.is_current(&fence);
                if released && (!current || status == Status::Free) {
                    return Err(format!("released {fence}, which is not the live grant"));
                }
                if !released && current && status == Status::Live {
                    return Err(format!(
                        "release of the live grant {fence} released nothing"
                    ));
                }
                if current {
                    km.ended();
                }
                Ok(())
            }
            Step::Inspect { key } => {
                let sent = Instant::now();
                let record = self
                    .store
                    .inspect(&self.keys[key])
                    .await
                    .map_err(|e| e.to_string())?;
                let km = self.model.keys.entry(key).or_default();
                match (record, km.status(sent, Instant::now())) {
                    (Some(record), Status::Live | Status::Unsure) => km.check_record(&record)?,
                    (Some(record), Status::Free) => {
                        return Err(format!("store shows {record:?}, but no grant can be live"));
                    }
                    (None, Status::Live) => {
                        return Err("store shows no grant while one is certainly live".into());
                    }
                    (None, _) => km.ended(),
                }
                Ok(())
            }
            Step::GuardedWrite {
                key,
                fence,
                value,
                big,
            } => {
                let fence = self.fence(key, fence);
                let value = vec![value; if big { BIG_VALUE } else { 1 }];
                let sent = Instant::now();
                let outcome = self
                    .store
                    .guarded_write(&fence, &self.targets[key], &value)
                    .await;
                let km = self.model.keys.entry(key).or_default();
                let status = km.status(sent, Instant::now());
                let current = km.is_current(&fence);
                match outcome {
                    Ok(()) if current && status != Status::Free => km.guarded = Some(value),
                    Ok(()) => {
                        return Err(format!(
                            "guarded write with {fence} applied, but it is not the live grant"
                        ));
                    }
                    Err(LeaseError::Lost { .. }) if current && status == Status::Live => {
                        return Err(format!("guarded write with the live grant {fence} refused"));
                    }
                    Err(LeaseError::Lost { .. }) => {
                        if current {
                            km.ended();
                        }
                    }
                    Err(other) => return Err(format!("guarded write failed: {other}")),
                }
                let expected = km.guarded.clone();
                let read = self
                    .store
                    .read_guarded(&self.targets[key])
                    .await
                    .map_err(|e| e.to_string())?;
                if read != expected {
                    return Err(format!(
                        "guarded value is {read:?}, model expects {expected:?}"
                    ));
                }
                Ok(())
            }
            Step::PutMarker { key, value } => {
                let value = format!("v{value}");
                let outcome = self.store.put_marker(&self.markers[key], &value).await;
                match (self.model.markers.get(&key), outcome) {
                    (None, Ok(())) => {
                        self.model.markers.insert(key, value);
                    }
                    (Some(existing), Ok(())) if *existing == value => {}
                    (
                        Some(existing),
                        Err(LeaseError::Conflict {
                            existing: found, ..
                        }),
                    ) if *existing != value && *existing == found => {}
                    (expected, outcome) => {
                        return Err(format!(
                            "put_marker({value}) gave {outcome:?} with the marker at {expected:?}"
                        ));
                    }
                }
                Ok(())
            }
            Step::DeleteMarker { key, value } => {
                let value = format!("v{value}");
                let outcome = self.store.delete_marker(&self.markers[key], &value).await;
                match (self.model.markers.get(&key), outcome) {
                    (None, Ok(false)) => {}
                    (Some(existing), Ok(true)) if *existing == value => {
                        self.model.markers.remove(&key);
                    }
                    (Some(existing), Err(LeaseError::Conflict { .. })) if *existing != value => {}
                    (expected, outcome) => {
                        return Err(format!(
                            "delete_marker({value}) gave {outcome:?} with the marker at {expected:?}"
                        ));
                    }
                }
                Ok(())
            }
            Step::GetMarker { key } => {
                let found = self
                    .store
                    .get_marker(&self.markers[key])
                    .await
                    .map_err(|e| e.to_string())?;
                let expected = self.model.markers.get(&key).cloned();
                if found != expected {
                    return Err(format!("marker is {found:?}, model expects {expected:?}"));
                }
                Ok(())
            }
            Step::Sleep { quarters } => {
                tokio::time::sleep(self.timing.ttl * u32::from(quarters) / 4).await;
                Ok(())
            }
            Step::Wait { key, quarters } => {
                let limit = self.timing.ttl * u32::from(quarters) / 4;
                let sent = Instant::now();
                let free = self
                    .store
                    .wait_free(&self.keys[key], limit)
                    .await
                    .map_err(|e| e.to_string())?;
                let replied = Instant::now();
                let km = self.model.keys.entry(key).or_default();
                match (free, km.status(sent, replied)) {
                    (true, Status::Live) => {
                        return Err("wait returned free while a grant was certainly live".into());
                    }
                    (true, _) => km.ended(),
                    (false, Status::Free) => {
                        return Err("wait timed out on a key no grant could hold".into());
                    }
                    (false, _) => {
                        // A grant certainly over well before the timeout
                        // should have been noticed (a re-check at the latest).
                        if let Some(live) = &km.current
                            && live.dead_after + RECHECK_ALLOWANCE < replied
                        {
                            return Err(format!(
                                "wait timed out {:?} after the grant certainly expired",
                                replied - live.dead_after
                            ));
                        }
                        if replied < sent + limit {
                            return Err(format!(
                                "wait gave up after {:?}, before its {limit:?}",
                                replied - sent
                            ));
                        }
                    }
                }
                Ok(())
            }
        }
    }
}
