//! The double's state and the decisions its operations share: a small
//! store of its own, correct unless told otherwise.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lease_core::{
    Claim, Cursor, Fence, FencingToken, Grant, Holder, LeaseError, LeaseKey, LeaseRecord,
    LeaseStore, Op, Page,
};
use tokio::time::Instant;

use crate::Flaw;

/// How long the stalling double blocks its runner per renewal.
pub(crate) const STALL: Duration = Duration::from_millis(250);

/// How long a check-then-write flaw waits between the two.
pub(crate) const GAP: Duration = Duration::from_millis(2);

#[derive(Clone, Debug)]
pub(crate) struct Rec {
    pub(crate) holder: Holder,
    pub(crate) token: u64,
    pub(crate) expires_at: Instant,
    pub(crate) ttl: Duration,
}

#[derive(Default, Debug)]
pub(crate) struct State {
    pub(crate) leases: HashMap<LeaseKey, Result<Rec, String>>,
    /// The last record each key had, for the token-reuse flaw.
    pub(crate) last: HashMap<LeaseKey, Rec>,
    pub(crate) markers: HashMap<LeaseKey, (String, Instant)>,
    pub(crate) guarded: HashMap<LeaseKey, Vec<u8>>,
    pub(crate) counter: u64,
    pub(crate) releases: u64,
    /// Writes per key, for the flawed wait that wakes on any.
    pub(crate) writes: HashMap<LeaseKey, u64>,
    /// When each grant's first TTL ends, for the stale listing.
    pub(crate) first_expiry: HashMap<(LeaseKey, u64), Instant>,
    /// Grants renewed since their claim, for the shared release.
    pub(crate) renewed: HashSet<(LeaseKey, u64)>,
}

/// A small store of its own, correct unless told otherwise.
#[derive(Debug)]
pub(crate) struct Flawed {
    pub(crate) flaw: Option<Flaw>,
    /// Shared with the other face of the store, for the extending flaw.
    pub(crate) state: Arc<Mutex<State>>,
    /// Renewals take the TTL given as an extension of the grant's end:
    /// the face the wire serves with [`Flaw::RetriedRenewalCountedTwice`].
    pub(crate) extends: bool,
    /// The last claim's outcome, for the misrouting flaw.
    pub(crate) misrouted: Mutex<Option<Claim>>,
    /// Renewals so far, for the stalling double.
    pub(crate) renewals: AtomicU64,
    /// What inspect read, and when, for the caching flaw.
    pub(crate) inspected: Mutex<HashMap<LeaseKey, (Instant, Option<LeaseRecord>)>>,
    /// Releases under way, for the shared release.
    pub(crate) releasing: AtomicU64,
}

impl Flawed {
    pub(crate) fn has(&self, flaw: Flaw) -> bool {
        self.flaw == Some(flaw)
    }

    pub(crate) fn same_holder(&self, a: &Holder, b: &Holder) -> bool {
        if self.has(Flaw::IncarnationIgnored) {
            a.id() == b.id()
        } else if self.has(Flaw::HolderJoinedWithColon) {
            format!("{}:{}", a.id(), a.incarnation()) == format!("{}:{}", b.id(), b.incarnation())
        } else if self.has(Flaw::HolderConcatenated) {
            format!("{}{}", a.id(), a.incarnation()) == format!("{}{}", b.id(), b.incarnation())
        } else {
            a == b
        }
    }

    /// For the check-then-write flaws: whether `fence` is the live grant
    /// now, and if so a pause before the caller writes regardless.
    pub(crate) async fn checked_then_gap(&self, fence: &Fence) -> bool {
        let current = self.live(&self.state.lock().unwrap(), &fence.key, Instant::now());
        let live = current.as_ref().is_some_and(|r| self.is_fence(r, fence));
        if live {
            tokio::time::sleep(GAP).await;
        }
        live
    }

    /// For the shared release: whether another release was under way
    /// while this one waited a batch's gathering time.
    pub(crate) async fn shared_release(&self) -> bool {
        let before = self.releasing.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(GAP).await;
        let after = self.releasing.fetch_sub(1, Ordering::SeqCst);
        before > 0 || after > 1
    }

    /// The key as this store files it.
    pub(crate) fn filed(&self, key: &LeaseKey) -> LeaseKey {
        if self.has(Flaw::KeysCaseFolded) {
            LeaseKey::new(key.as_str().to_lowercase()).expect("still valid")
        } else if self.has(Flaw::KeysPercentDecoded) {
            LeaseKey::new(key.as_str().replace("%2F", "/")).expect("still valid")
        } else if self.has(Flaw::KeysTruncated) {
            LeaseKey::new(key.as_str().get(..300).unwrap_or(key.as_str())).expect("still valid")
        } else {
            key.clone()
        }
    }

    pub(crate) fn check_value(&self, key: &LeaseKey, len: usize) -> Result<(), LeaseError> {
        if self.has(Flaw::MaxValueRefused) && len >= self.capabilities().max_value_len {
            return Err(LeaseError::InvalidValue {
                key: key.clone(),
                rule: "too long".into(),
            });
        }
        self.capabilities().check_value(key, len)
    }

    pub(crate) fn ttl_for(
        &self,
        op: Op,
        key: &LeaseKey,
        ttl: Duration,
    ) -> Result<Duration, LeaseError> {
        let unchecked = match op {
            Op::Renew => self.has(Flaw::RenewAcceptsInvalidTtl),
            Op::Reclaim => self.has(Flaw::ReclaimAcceptsInvalidTtl),
            _ => false,
        };
        if unchecked {
            return Ok(ttl.clamp(Duration::from_millis(1), self.capabilities().max_ttl));
        }
        if self.has(Flaw::MaxTtlRefused) && ttl >= self.capabilities().max_ttl {
            return Err(LeaseError::InvalidTtl {
                key: key.clone(),
                ttl,
                rule: "too long".into(),
            });
        }
        self.ttl(key, ttl)
    }

    pub(crate) fn ttl(&self, key: &LeaseKey, ttl: Duration) -> Result<Duration, LeaseError> {
        if self.has(Flaw::TtlClamped) {
            return Ok(ttl.clamp(Duration::from_millis(1), self.capabilities().max_ttl));
        }
        let granted = self.capabilities().grant_ttl(key, ttl)?;
        if self.has(Flaw::TtlRoundedDown) {
            return Ok(Duration::from_millis(
                granted.as_millis() as u64 / 100 * 100,
            ));
        }
        Ok(granted)
    }

    pub(crate) fn expiry(&self, now: Instant, ttl: Duration) -> Instant {
        if self.has(Flaw::NeverExpires) {
            now + Duration::from_secs(86_400)
        } else if self.has(Flaw::ExpiresEarly) {
            now + ttl / 2
        } else if self.has(Flaw::MaxTtlCut) {
            now + ttl.min(Duration::from_secs(1800))
        } else {
            now + ttl
        }
    }

    pub(crate) fn live(&self, state: &State, key: &LeaseKey, now: Instant) -> Option<Rec> {
        match state.leases.get(&self.filed(key)) {
            Some(Ok(rec)) if rec.expires_at > now => Some(rec.clone()),
            _ => None,
        }
    }

    pub(crate) fn record(&self, key: &LeaseKey, rec: &Rec, now: Instant) -> LeaseRecord {
        LeaseRecord {
            key: key.clone(),
            holder: rec.holder.clone(),
            token: FencingToken(rec.token),
            remaining: if self.has(Flaw::TimeLeftFrozen) {
                rec.ttl
            } else {
                rec.expires_at.saturating_duration_since(now)
            },
        }
    }

    pub(crate) fn is_fence(&self, rec: &Rec, fence: &Fence) -> bool {
        rec.token == fence.token.0 && self.same_holder(&rec.holder, &fence.holder)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn grant(
        &self,
        state: &mut State,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
        sent: Instant,
        token: Option<u64>,
    ) -> Grant {
        let now = Instant::now();
        let fresh = token.is_none();
        let token = token.unwrap_or_else(|| {
            let reuse = self.has(Flaw::TokenReusedAfterExpiry)
                && matches!(state.leases.get(&self.filed(key)), Some(Ok(rec)) if rec.expires_at <= now);
            match state.last.get(&self.filed(key)) {
                Some(last) if reuse => last.token,
                _ => {
                    state.counter += 1;
                    state.counter
                }
            }
        });
        let rec = Rec {
            holder: holder.clone(),
            token,
            expires_at: self.expiry(now, ttl),
            ttl,
        };
        *state.writes.entry(self.filed(key)).or_default() += 1;
        state
            .first_expiry
            .entry((self.filed(key), token))
            .or_insert(rec.expires_at);
        state.leases.insert(self.filed(key), Ok(rec.clone()));
        state.last.insert(self.filed(key), rec);
        let fence = Fence {
            key: key.clone(),
            holder: holder.clone(),
            token: FencingToken(token),
        };
        let mut grant = Grant::new(fence, ttl, sent, fresh);
        if self.has(Flaw::LateDeadline) {
            // Counted from the reply instead of the request, and then some.
            grant.deadline = Instant::now() + ttl + Duration::from_millis(200);
        }
        grant
    }

    pub(crate) fn renew_now(&self, fence: &Fence, ttl: Duration) -> Result<Grant, LeaseError> {
        let ttl = self.ttl_for(Op::Renew, &fence.key, ttl)?;
        let sent = Instant::now();
        let mut state = self.state.lock().unwrap();
        let rec = if self.has(Flaw::RenewRevivesExpired) {
            match state.leases.get(&self.filed(&fence.key)) {
                Some(Ok(rec)) => Some(rec.clone()),
                _ => None,
            }
        } else {
            self.live(&state, &fence.key, sent)
        };
        match rec {
            Some(rec)
                if self.is_fence(&rec, fence)
                    || (self.has(Flaw::RenewAcceptsSuperseded)
                        && rec.holder.id() == fence.holder.id()) =>
            {
                let lasts = if self.has(Flaw::RenewKeepsFirstTtl) {
                    rec.ttl
                } else {
                    ttl
                };
                let grant = self.grant(
                    &mut state,
                    &fence.key,
                    &fence.holder,
                    lasts,
                    sent,
                    Some(fence.token.0),
                );
                if self.has(Flaw::RenewNeverShortens)
                    && let Some(Ok(now)) = state.leases.get_mut(&self.filed(&fence.key))
                {
                    now.expires_at = now.expires_at.max(rec.expires_at);
                }
                state.renewed.insert((fence.key.clone(), fence.token.0));
                // It reports the TTL asked for, whatever it did.
                Ok(Grant { ttl, ..grant })
            }
            _ => {
                let current = self
                    .live(&state, &fence.key, sent)
                    .map(|r| self.record(&fence.key, &r, sent));
                Err(LeaseError::lost(fence, current))
            }
        }
    }

    /// With the flaw, a grant's expiry is only set once the reply is in.
    pub(crate) async fn expiry_after_reply(&self, key: &LeaseKey, claim: &Claim) {
        let Claim::Acquired(grant) = claim else {
            return;
        };
        if !self.has(Flaw::CutOffGrantNeverEnds) {
            return;
        }
        let set = |expires_at| {
            if let Some(Ok(rec)) = self.state.lock().unwrap().leases.get_mut(key) {
                rec.expires_at = expires_at;
            }
        };
        set(Instant::now() + Duration::from_secs(86_400));
        tokio::time::sleep(Duration::from_millis(2)).await;
        set(self.expiry(Instant::now(), grant.ttl));
    }

    pub(crate) fn claim_in(
        &self,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
        observed: Option<&Fence>,
    ) -> Claim {
        let sent = Instant::now();
        let mut state = self.state.lock().unwrap();
        match self.live(&state, key, sent) {
            None => Claim::Acquired(self.grant(&mut state, key, holder, ttl, sent, None)),
            Some(rec) if self.same_holder(&rec.holder, holder) => {
                let token = (!self.has(Flaw::ReclaimByHolderGetsNewToken)).then_some(rec.token);
                let grant = self.grant(&mut state, key, holder, ttl, sent, token);
                // Later, never earlier: the claim may be a retry's original.
                if !self.has(Flaw::ClaimOwnShortens)
                    && let Some(Ok(now)) = state.leases.get_mut(&self.filed(key))
                {
                    now.expires_at = now.expires_at.max(rec.expires_at);
                }
                Claim::Acquired(grant)
            }
            Some(rec)
                if observed.is_some_and(|o| {
                    self.has(Flaw::ReclaimWithoutCompare) || self.is_fence(&rec, o)
                }) =>
            {
                let token = self.has(Flaw::ReclaimKeepsToken).then_some(rec.token);
                let mut grant = self.grant(&mut state, key, holder, ttl, sent, token);
                grant.fresh = true;
                Claim::Acquired(grant)
            }
            Some(rec) => Claim::Busy(self.record(key, &rec, sent)),
        }
    }
}

impl Flawed {
    /// Writes `fence`'s grant again for `ttl`, keeping its token, without
    /// looking at what the key holds now: what the flawed renewals do.
    pub(crate) fn regrant(&self, fence: &Fence, ttl: Duration) -> Grant {
        let mut state = self.state.lock().unwrap();
        self.grant(
            &mut state,
            &fence.key,
            &fence.holder,
            ttl,
            Instant::now(),
            Some(fence.token.0),
        )
    }

    /// Pushes the end of `fence`'s live grant out by `by`.
    pub(crate) fn extend(&self, fence: &Fence, by: Duration) -> Result<Grant, LeaseError> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        match self.live(&state, &fence.key, now) {
            Some(rec) if self.is_fence(&rec, fence) => {
                let lasts = (rec.expires_at + by).duration_since(now);
                let token = Some(fence.token.0);
                Ok(self.grant(&mut state, &fence.key, &fence.holder, lasts, now, token))
            }
            other => {
                let current = other.map(|r| self.record(&fence.key, &r, now));
                Err(LeaseError::lost(fence, current))
            }
        }
    }

    pub(crate) async fn renew_decided(
        &self,
        fence: &Fence,
        ttl: Duration,
    ) -> Result<Grant, LeaseError> {
        if self.has(Flaw::RenewNotAtomic) && self.checked_then_gap(fence).await {
            let ttl = self.ttl(&fence.key, ttl)?;
            return Ok(self.regrant(fence, ttl));
        }
        let renewed = self.renew_now(fence, ttl)?;
        self.expiry_after_reply(&fence.key, &Claim::Acquired(renewed.clone()))
            .await;
        Ok(renewed)
    }

    pub(crate) fn inspect_now(&self, key: &LeaseKey) -> Result<Option<LeaseRecord>, LeaseError> {
        let now = Instant::now();
        let state = self.state.lock().unwrap();
        if let Some(Err(content)) = state.leases.get(&self.filed(key)) {
            if self.has(Flaw::CorruptReadsAsFree) {
                return Ok(None);
            }
            return Err(LeaseError::Corrupt {
                key: key.clone(),
                detail: content.clone(),
            });
        }
        Ok(self
            .live(&state, key, now)
            .filter(|rec| !self.has(Flaw::InspectFreesEarly) || rec.expires_at > now + rec.ttl / 2)
            .map(|rec| self.record(key, &rec, now)))
    }

    /// A marker's value, unless the flawed TTL ended it.
    /// Up to `limit` entries of `keys` under `prefix`, in key order after
    /// `from`.
    pub(crate) fn page<T>(
        &self,
        mut keys: Vec<LeaseKey>,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
        mut entry: impl FnMut(&LeaseKey) -> Option<T>,
    ) -> Page<T> {
        let decoded =
            |k: &LeaseKey| LeaseKey::new(k.as_str().replace("%2F", "/")).expect("still valid");
        let by_offset = self.has(Flaw::ListPagesByOffset);
        keys.retain(|k| {
            let under = if self.has(Flaw::ListByTextPrefix) {
                k.as_str().starts_with(prefix.as_str())
            } else if self.has(Flaw::ListPrefixDecoded) {
                decoded(k).is_under(&decoded(prefix))
            } else {
                k.is_under(prefix)
            };
            under && (by_offset || from.is_none_or(|c| k.as_str() > c.0.as_str()))
        });
        keys.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        let limit = if self.has(Flaw::ListIgnoresLimit) {
            usize::MAX
        } else {
            limit
        };
        if by_offset {
            let skip = from.and_then(|c| c.0.parse::<usize>().ok()).unwrap_or(0);
            let more = keys.len() > skip + limit.max(1);
            let entries = keys
                .iter()
                .skip(skip)
                .take(limit.max(1))
                .filter_map(&mut entry)
                .collect();
            return Page {
                entries,
                next: more.then(|| Cursor((skip + limit.max(1)).to_string())),
            };
        }
        if from.is_some() && self.has(Flaw::ListLosesAtPageBreaks) && !keys.is_empty() {
            keys.remove(0);
        }
        let more = keys.len() > limit.max(1);
        keys.truncate(limit.max(1));
        let next = more.then(|| {
            Cursor(
                keys.last()
                    .map(|k| k.as_str().to_owned())
                    .unwrap_or_default(),
            )
        });
        Page {
            entries: keys.iter().filter_map(&mut entry).collect(),
            next,
        }
    }

    pub(crate) fn marker(&self, key: &LeaseKey) -> Option<String> {
        let mut state = self.state.lock().unwrap();
        let (value, set) = state.markers.get(key).cloned()?;
        if self.has(Flaw::MarkersExpire) && set.elapsed() > Duration::from_secs(3) {
            state.markers.remove(key);
            return None;
        }
        Some(value)
    }
}
