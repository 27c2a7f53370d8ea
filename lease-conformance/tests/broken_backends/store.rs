//! The double's operations: the trait on [`Flawed`], each operation
//! with the flaws that bend it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use lease_core::{
    Capabilities, Claim, Cursor, Fence, Grant, Holder, LeaseError, LeaseKey, LeaseRecord,
    LeaseStore, Listed, Op, Page,
};
use tokio::time::Instant;

use crate::Flaw;
use crate::flawed::{Flawed, GAP, STALL};

#[async_trait]
impl LeaseStore for Flawed {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new("flawed").with_max_ttl(Duration::from_secs(3600))
    }

    async fn claim(
        &self,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError> {
        let ttl = self.ttl(key, ttl)?;
        if self.has(Flaw::ClaimNotAtomic) {
            let sent = Instant::now();
            let free = self.live(&self.state.lock().unwrap(), key, sent).is_none();
            if free {
                tokio::time::sleep(GAP).await;
                let mut state = self.state.lock().unwrap();
                return Ok(Claim::Acquired(
                    self.grant(&mut state, key, holder, ttl, sent, None),
                ));
            }
        }
        let claim = self.claim_in(key, holder, ttl, None);
        self.expiry_after_reply(key, &claim).await;
        if self.has(Flaw::ClaimsMisrouted) {
            // Alone, a claim gets its own outcome back; at once, another's.
            let earlier = self.misrouted.lock().unwrap().replace(claim.clone());
            tokio::time::sleep(GAP).await;
            let left = self.misrouted.lock().unwrap().take();
            return Ok(earlier.or(left).unwrap_or(claim));
        }
        Ok(claim)
    }

    async fn reclaim(
        &self,
        observed: &Fence,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError> {
        let ttl = self.ttl_for(Op::Reclaim, &observed.key, ttl)?;
        if self.has(Flaw::ReclaimNotAtomic) {
            // Compare, then write after a gap, whatever happened in it.
            if self.checked_then_gap(observed).await {
                let mut state = self.state.lock().unwrap();
                let mut grant =
                    self.grant(&mut state, &observed.key, holder, ttl, Instant::now(), None);
                grant.fresh = true;
                return Ok(Claim::Acquired(grant));
            }
        }
        Ok(self.claim_in(&observed.key, holder, ttl, Some(observed)))
    }

    async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Grant, LeaseError> {
        if self.extends {
            return self.extend(fence, ttl);
        }
        let renewed = self.renew_decided(fence, ttl).await;
        // Renewals 1, 2, 4, 8, … of each store: a few stalls per case.
        let n = self.renewals.fetch_add(1, Ordering::Relaxed) + 1;
        if self.has(Flaw::StallsItsRunner) && n.is_power_of_two() {
            // Deliberately blocking, once the answer is decided: the
            // thread, not just this task, stalls before the caller hears.
            std::thread::sleep(STALL);
        }
        renewed
    }
    async fn renew_many(&self, renewals: &[(Fence, Duration)]) -> Vec<Result<Grant, LeaseError>> {
        if renewals.is_empty() && self.has(Flaw::RenewManyEmptyAnswered) {
            return vec![Err(LeaseError::Unsupported {
                backend: "flawed",
                op: Op::Renew,
            })];
        }
        let mut results = Vec::new();
        for (fence, ttl) in renewals {
            let first_of_key = renewals.iter().map(|(f, _)| f).find(|f| f.key == fence.key);
            if self.has(Flaw::RenewManyByKey) && first_of_key != Some(fence) {
                let first = first_of_key.expect("this key is in the batch");
                results.push(self.renew(first, *ttl).await.map(|g| Grant {
                    fence: fence.clone(),
                    ..g
                }));
                continue;
            }
            let live = self.live(&self.state.lock().unwrap(), &fence.key, Instant::now());
            if self.has(Flaw::RenewManyIgnoresIncarnation)
                && let Some(rec) = live.filter(|rec| {
                    rec.holder.id() == fence.holder.id() && rec.token == fence.token.0
                })
            {
                let real = Fence {
                    holder: rec.holder,
                    ..fence.clone()
                };
                results.push(self.renew(&real, *ttl).await.map(|g| Grant {
                    fence: fence.clone(),
                    ..g
                }));
                continue;
            }
            let ttl = match renewals.first() {
                Some((_, first)) if self.has(Flaw::RenewManyFirstTtl) => *first,
                _ => *ttl,
            };
            let revived = self.has(Flaw::RenewManyRevives)
                && {
                    let state = self.state.lock().unwrap();
                    matches!(state.leases.get(&self.filed(&fence.key)), Some(Ok(rec)) if self.is_fence(rec, fence))
                };
            if revived && let Ok(ttl) = self.ttl(&fence.key, ttl) {
                results.push(Ok(self.regrant(fence, ttl)));
                continue;
            }
            results.push(self.renew(fence, ttl).await);
        }
        if self.has(Flaw::RenewManyFailsWhole) && results.iter().any(Result::is_err) {
            return renewals
                .iter()
                .map(|(f, _)| Err(LeaseError::lost(f, None)))
                .collect();
        }
        if self.has(Flaw::RenewManyOutOfOrder) {
            results.sort_by_key(Result::is_err);
        }
        results
    }

    async fn release(&self, fence: &Fence) -> Result<bool, LeaseError> {
        if self.has(Flaw::SharedReleaseMissesRenewed) && self.shared_release().await {
            let state = self.state.lock().unwrap();
            if state.renewed.contains(&(fence.key.clone(), fence.token.0)) {
                return Ok(false);
            }
        }
        let now = Instant::now();
        if self.has(Flaw::ReleaseNotAtomic) && self.checked_then_gap(fence).await {
            self.state
                .lock()
                .unwrap()
                .leases
                .remove(&self.filed(&fence.key));
            return Ok(true);
        }
        let mut state = self.state.lock().unwrap();
        match self.live(&state, &fence.key, now) {
            Some(rec)
                if self.is_fence(&rec, fence)
                    || (self.has(Flaw::ReleaseIgnoresToken)
                        && self.same_holder(&rec.holder, &fence.holder)) =>
            {
                state.leases.remove(&self.filed(&fence.key));
                state.releases += 1;
                Ok(true)
            }
            Some(_) if self.has(Flaw::ReleaseClearsNewerGrant) => {
                state.leases.remove(&self.filed(&fence.key));
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    async fn inspect(&self, key: &LeaseKey) -> Result<Option<LeaseRecord>, LeaseError> {
        if self.has(Flaw::InspectCached) {
            if let Some((read, record)) = self.inspected.lock().unwrap().get(key)
                && read.elapsed() < Duration::from_secs(1)
            {
                return Ok(record.clone());
            }
            let record = self.inspect_now(key)?;
            self.inspected
                .lock()
                .unwrap()
                .insert(key.clone(), (Instant::now(), record.clone()));
            return Ok(record);
        }
        self.inspect_now(key)
    }

    async fn put_marker(&self, key: &LeaseKey, value: &str) -> Result<(), LeaseError> {
        self.check_value(key, value.len())?;
        if self.has(Flaw::MarkerPutNotAtomic) {
            let absent = self.marker(key).is_none();
            if absent {
                tokio::time::sleep(GAP).await;
                let mut state = self.state.lock().unwrap();
                state
                    .markers
                    .insert(key.clone(), (value.to_owned(), Instant::now()));
                return Ok(());
            }
        }
        let existing = self.marker(key);
        match existing {
            Some(existing) if existing != value && !self.has(Flaw::MarkerPutOverwrites) => {
                Err(LeaseError::Conflict {
                    key: key.clone(),
                    existing,
                })
            }
            _ => {
                let mut state = self.state.lock().unwrap();
                state
                    .markers
                    .insert(key.clone(), (value.to_owned(), Instant::now()));
                Ok(())
            }
        }
    }

    async fn delete_marker(&self, key: &LeaseKey, value: &str) -> Result<bool, LeaseError> {
        match self.marker(key) {
            None => Ok(false),
            Some(existing) if existing != value && !self.has(Flaw::MarkerDeleteIgnoresValue) => {
                Err(LeaseError::Conflict {
                    key: key.clone(),
                    existing,
                })
            }
            Some(_) => {
                self.state.lock().unwrap().markers.remove(key);
                Ok(true)
            }
        }
    }

    async fn get_marker(&self, key: &LeaseKey) -> Result<Option<String>, LeaseError> {
        Ok(self.marker(key))
    }

    async fn list(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Listed>, LeaseError> {
        let now = Instant::now();
        let state = self.state.lock().unwrap();
        let keys: Vec<LeaseKey> = state.leases.keys().cloned().collect();
        Ok(self.page(keys, prefix, from, limit, |key| {
            match state.leases.get(key) {
                Some(Err(detail)) if !self.has(Flaw::ListHidesCorrupt) => Some(Listed::Corrupt {
                    key: key.clone(),
                    detail: detail.clone(),
                }),
                Some(Ok(rec)) if rec.expires_at > now || self.has(Flaw::ListIncludesExpired) => {
                    let mut record = self.record(key, rec, now);
                    if self.has(Flaw::ListStaleTimeLeft)
                        && let Some(first) = state.first_expiry.get(&(key.clone(), rec.token))
                    {
                        record.remaining = first.saturating_duration_since(now);
                    }
                    Some(Listed::Held(record))
                }
                _ => None,
            }
        }))
    }

    async fn list_markers(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<(LeaseKey, String)>, LeaseError> {
        let keys: Vec<LeaseKey> = self.state.lock().unwrap().markers.keys().cloned().collect();
        Ok(self.page(keys, prefix, from, limit, |key| {
            self.marker(key).map(|value| (key.clone(), value))
        }))
    }

    async fn guarded_write(
        &self,
        fence: &Fence,
        target: &LeaseKey,
        value: &[u8],
    ) -> Result<(), LeaseError> {
        self.check_value(target, value.len())?;
        let value = if self.has(Flaw::GuardedValuesMangled) {
            String::from_utf8_lossy(value).into_owned().into_bytes()
        } else {
            value.to_vec()
        };
        let now = Instant::now();
        if self.has(Flaw::GuardedWriteNotAtomic) && self.checked_then_gap(fence).await {
            self.state
                .lock()
                .unwrap()
                .guarded
                .insert(target.clone(), value);
            return Ok(());
        }
        let mut state = self.state.lock().unwrap();
        let current = self.live(&state, &fence.key, now);
        if self.has(Flaw::GuardedWriteUnchecked)
            || current.as_ref().is_some_and(|r| self.is_fence(r, fence))
        {
            state.guarded.insert(target.clone(), value);
            return Ok(());
        }
        Err(LeaseError::lost(
            fence,
            current.map(|r| self.record(&fence.key, &r, now)),
        ))
    }

    async fn read_guarded(&self, target: &LeaseKey) -> Result<Option<Vec<u8>>, LeaseError> {
        let value = self.state.lock().unwrap().guarded.get(target).cloned();
        if self.has(Flaw::EmptyGuardedReadsAsNone) {
            return Ok(value.filter(|v| !v.is_empty()));
        }
        Ok(value)
    }

    async fn check(&self, fence: &Fence) -> Result<bool, LeaseError> {
        let state = self.state.lock().unwrap();
        Ok(self
            .live(&state, &fence.key, Instant::now())
            .is_some_and(|rec| {
                if self.has(Flaw::CheckIgnoresToken) {
                    self.same_holder(&rec.holder, &fence.holder)
                } else {
                    self.is_fence(&rec, fence)
                }
            }))
    }

    async fn wait_free(&self, key: &LeaseKey, timeout: Duration) -> Result<bool, LeaseError> {
        let give_up = if self.has(Flaw::WaitIgnoresTimeout) {
            Instant::now() + Duration::from_secs(3600)
        } else {
            Instant::now() + timeout
        };
        let (releases, writes) = {
            let state = self.state.lock().unwrap();
            (state.releases, state.writes.get(&self.filed(key)).copied())
        };
        let poll = if self.has(Flaw::WaitPollsSlowly) {
            Duration::from_secs(2)
        } else if self.has(Flaw::NotificationsDead) {
            Duration::from_millis(500)
        } else {
            Duration::from_millis(5)
        };
        loop {
            let free = match self.inspect(key).await {
                Ok(record) => record.is_none(),
                Err(_) => !self.has(Flaw::WaitIgnoresCorrupt),
            };
            if free {
                return Ok(true);
            }
            let woken = {
                let state = self.state.lock().unwrap();
                (self.has(Flaw::WaitWakesOnAnyRelease) && state.releases != releases)
                    || (self.has(Flaw::WaitWakesOnRenewal)
                        && state.writes.get(&self.filed(key)).copied() != writes)
            };
            if woken {
                return Ok(true);
            }
            if Instant::now() >= give_up {
                return Ok(false);
            }
            tokio::time::sleep(poll.min(give_up - Instant::now())).await;
        }
    }
}
