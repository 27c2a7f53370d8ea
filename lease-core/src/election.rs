//! Leader election on any store, with a fencing term, and observers.

use std::time::Duration;

use futures::Stream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{DynLeaseStore, Fence, FencingToken, HeldLease, Holder, LeaseError, LeaseKey, Leaser};

/// Bytes of the term in front of a published value.
const TERM_LEN: usize = 8;

/// The longest wait [`Observer::changed`] takes in one call.
const LONGEST_WAIT: Duration = Duration::from_secs(365 * 86_400);

/// Leader election on one key.
///
/// The leader is the holder of the lease on the election's key, and its
/// **term** is that grant's fencing token: terms strictly increase from
/// one leader to the next, so a deposed leader that has not noticed yet (a
/// GC pause, a partition) is refused downstream — by a
/// [`FencedResource`](crate::FencedResource) keeping the highest term, or
/// by [`guarded_write`](crate::LeaseStore::guarded_write) with
/// [`Leadership::fence`]. A leadership is a [`HeldLease`] underneath: the
/// leaser's keeper renews it, and its `lost` signal fires the moment the
/// leader must stop acting as one.
///
/// Candidates wait by the store's notification: a resigning leader
/// releases and the next candidate is woken at once; a crashed leader's
/// term ends when its TTL runs out on the store's clock.
///
/// The leader may publish a value — its address, say — with
/// [`Leadership::publish`]: a guarded write under the election's key,
/// fenced by the term and tagged with it, so an [`Observer`] never shows
/// one term's value as another's.
#[derive(Clone, Debug)]
pub struct Election {
    leaser: Leaser,
    key: LeaseKey,
}

impl Election {
    /// The election on `key`, campaigned for as `leaser`'s holder, each
    /// term a lease of `leaser`'s TTL.
    pub fn new(leaser: Leaser, key: LeaseKey) -> Self {
        Self { leaser, key }
    }

    /// The key the election is held on.
    pub fn key(&self) -> &LeaseKey {
        &self.key
    }

    /// Becomes leader, waiting up to `wait` for the current leader's term
    /// to end: `None` when `wait` runs out first (or when this leaser leads
    /// already).
    ///
    /// # Errors
    /// The store's errors for claim and wait. After an indeterminate one,
    /// campaigning again is safe: a claim by the current holder returns
    /// its own grant.
    pub async fn campaign(&self, wait: Duration) -> Result<Option<Leadership>, LeaseError> {
        let lease = self.leaser.acquire(&self.key, wait).await?.held();
        Ok(lease.map(|lease| Leadership {
            lease,
            store: self.leaser.store().clone(),
        }))
    }

    /// An observer of this election that re-reads at least every quarter
    /// of the leaser's TTL.
    pub fn observer(&self) -> Observer {
        Observer::new(
            self.leaser.store().clone(),
            self.key.clone(),
            self.leaser.ttl() / 4,
        )
    }
}

/// A term of leadership, kept alive until resigned, lost or dropped.
/// Dropping it stops renewing without resigning: the term then ends by its
/// TTL.
#[derive(Debug)]
pub struct Leadership {
    lease: HeldLease,
    store: DynLeaseStore,
}

impl Leadership {
    /// This term: the grant's fencing token, greater than every earlier
    /// leader's.
    pub fn term(&self) -> FencingToken {
        self.lease.fence().token
    }

    /// The proof of the term, to present with guarded writes.
    pub fn fence(&self) -> &Fence {
        self.lease.fence()
    }

    /// Cancelled the moment the leader must stop acting as one.
    pub fn lost(&self) -> CancellationToken {
        self.lease.lost()
    }

    /// The instant, on this process's monotonic clock, by which the
    /// leader must stop acting as one unless a renewal moves it.
    pub fn deadline(&self) -> Instant {
        self.lease.deadline()
    }

    /// Publishes `value` for observers, replacing what this term published
    /// before; refused once the term is over.
    ///
    /// # Errors
    /// [`LeaseError::Lost`] when the term is over (nothing written);
    /// [`LeaseError::InvalidValue`] when `value` is longer than the store's
    /// [`max_value_len`](crate::Capabilities::max_value_len) less the 8
    /// bytes of the term; the store's errors.
    pub async fn publish(&self, value: &[u8]) -> Result<(), LeaseError> {
        let fence = self.lease.fence();
        let limit = self
            .store
            .capabilities()
            .max_value_len
            .saturating_sub(TERM_LEN);
        if value.len() > limit {
            return Err(LeaseError::InvalidValue {
                key: fence.key.clone(),
                rule: format!(
                    "an election's value is at most {limit} bytes on this store (its value limit less {TERM_LEN} for the term), not {}",
                    value.len()
                ),
            });
        }
        let mut tagged = Vec::with_capacity(TERM_LEN + value.len());
        tagged.extend_from_slice(&fence.token.0.to_be_bytes());
        tagged.extend_from_slice(value);
        self.store.guarded_write(fence, &fence.key, &tagged).await
    }

    /// The lease underneath: the term as a [`HeldLease`].
    pub fn into_lease(self) -> HeldLease {
        self.lease
    }

    /// Ends the term at once, so the next candidate is woken. Returns
    /// whether the store released anything (false when the term had
    /// already ended).
    ///
    /// # Errors
    /// The store's errors for [`release`](crate::LeaseStore::release).
    pub async fn resign(self) -> Result<bool, LeaseError> {
        self.lease.release().await
    }
}

/// The leader an observer saw.
#[derive(Clone, Debug)]
pub struct Leader {
    /// Who leads.
    pub holder: Holder,
    /// The term.
    pub term: FencingToken,
    /// What the leader published in this term, if anything yet.
    pub value: Option<Vec<u8>>,
    /// The term's time left on the store's clock when it was read.
    pub remaining: Duration,
}

/// What [`Observer::changed`] saw.
#[derive(Clone, Debug)]
pub enum Observed {
    /// The leadership differs from what the observer last reported: a new
    /// term, a new value, or `None` — nobody leads.
    Changed(Option<Leader>),
    /// Nothing changed within the time given.
    Unchanged,
}

/// Watches an election: for candidates and bystanders alike, anyone with
/// the store.
///
/// It waits for a term to end by the store's notification and re-reads at
/// least every `poll` (for new values, and for a new term while nobody
/// leads): with `poll` no longer than the TTL candidates use, it sees every
/// term that lasts longer than that TTL.
#[derive(Clone, Debug)]
pub struct Observer {
    store: DynLeaseStore,
    key: LeaseKey,
    poll: Duration,
    /// What it last reported: holder, term and value, or nobody.
    last: Option<Option<Seen>>,
}

/// What tells one leadership from another: holder, term and value.
type Seen = (Holder, FencingToken, Option<Vec<u8>>);

impl Observer {
    /// An observer of the election on `key`, re-reading at least every
    /// `poll` (1 ms at least).
    pub fn new(store: DynLeaseStore, key: LeaseKey, poll: Duration) -> Self {
        Self {
            store,
            key,
            poll: poll.max(Duration::from_millis(1)),
            last: None,
        }
    }

    /// The leader now, if any. A corrupt record on the key counts as
    /// nobody leading (the next campaign repairs it).
    ///
    /// # Errors
    /// The store's errors for inspect and read.
    pub async fn leader(&self) -> Result<Option<Leader>, LeaseError> {
        let record = match self.store.inspect(&self.key).await {
            Ok(record) => record,
            Err(LeaseError::Corrupt { .. }) => None,
            Err(other) => return Err(other),
        };
        let Some(record) = record else {
            return Ok(None);
        };
        let value = self.store.read_guarded(&self.key).await?;
        Ok(Some(Leader {
            value: value.and_then(|tagged| untag(record.token, tagged)),
            holder: record.holder,
            term: record.token,
            remaining: record.remaining,
        }))
    }

    /// Waits up to `timeout` for the leadership to differ from what this
    /// observer last reported. Its first call reports the leadership at
    /// once.
    ///
    /// # Errors
    /// The store's errors for inspect, read and wait.
    pub async fn changed(&mut self, timeout: Duration) -> Result<Observed, LeaseError> {
        let give_up = Instant::now() + timeout.min(LONGEST_WAIT);
        loop {
            let now = self.leader().await?;
            let seen = now
                .as_ref()
                .map(|l| (l.holder.clone(), l.term, l.value.clone()));
            if self.last.as_ref() != Some(&seen) {
                self.last = Some(seen);
                return Ok(Observed::Changed(now));
            }
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Observed::Unchanged);
            }
            let pause = left.min(self.poll);
            if now.is_some() {
                // Woken as the term ends, by notification; its value is
                // read again after `pause` either way.
                self.store.wait_free(&self.key, pause).await?;
            } else {
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Every change of leadership from now on, the current one first.
    pub fn changes(self) -> impl Stream<Item = Result<Option<Leader>, LeaseError>> + Send {
        futures::stream::unfold(self, |mut observer| async move {
            loop {
                match observer.changed(LONGEST_WAIT).await {
                    Ok(Observed::Unchanged) => {}
                    Ok(Observed::Changed(now)) => return Some((Ok(now), observer)),
                    Err(e) => return Some((Err(e), observer)),
                }
            }
        })
    }
}

/// The value published in `term`, if `tagged` is one.
fn untag(term: FencingToken, tagged: Vec<u8>) -> Option<Vec<u8>> {
    let (head, value) = tagged.split_at_checked(TERM_LEN)?;
    (u64::from_be_bytes(head.try_into().ok()?) == term.0).then(|| value.to_vec())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{ManualClock, MemoryStore};

    const TTL: Duration = Duration::from_secs(2);

    fn election(store: &DynLeaseStore, who: &str) -> Election {
        let leaser = Leaser::new(store.clone(), Holder::new(who, "1").unwrap(), TTL);
        Election::new(leaser, LeaseKey::new("leader").unwrap())
    }

    /// `who` leads at once, or the test fails.
    async fn lead(store: &DynLeaseStore, who: &str) -> Leadership {
        let won = election(store, who).campaign(Duration::ZERO).await.unwrap();
        won.unwrap_or_else(|| panic!("{who} found a leader already"))
    }

    async fn next(observer: &mut Observer) -> Option<Leader> {
        match observer.changed(Duration::from_secs(10)).await.unwrap() {
            Observed::Changed(now) => now,
            Observed::Unchanged => panic!("no change seen in 10 s"),
        }
    }

    #[tokio::test]
    async fn a_resignation_hands_over_at_once_with_a_higher_term() {
        let store: DynLeaseStore = Arc::new(MemoryStore::new());
        let a = lead(&store, "a").await;
        let b = election(&store, "b");
        assert!(
            b.campaign(Duration::ZERO).await.unwrap().is_none(),
            "two leaders"
        );
        let waiting = tokio::spawn(async move { b.campaign(Duration::from_secs(30)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "b led while a did");
        let first = a.term();
        let resigned = Instant::now();
        assert!(a.resign().await.unwrap());
        let b = waiting.await.unwrap().unwrap().expect("b leads next");
        assert!(b.term() > first, "term {} after {first}", b.term());
        // Handed over by the release, long before a's TTL would end it.
        assert!(
            resigned.elapsed() < TTL / 2,
            "took {:?}",
            resigned.elapsed()
        );
    }

    #[tokio::test]
    async fn a_deposed_leader_can_no_longer_publish() {
        let clock = Arc::new(ManualClock::new());
        let store: DynLeaseStore = Arc::new(MemoryStore::with_clock(clock.clone()));
        let a = lead(&store, "a").await;
        a.publish(b"a:1").await.unwrap();
        // a stalls past its TTL on the store's clock: b takes over.
        clock.advance(TTL * 2);
        let b = lead(&store, "b").await;
        assert!(b.term() > a.term());
        let refused = a.publish(b"a:2").await.unwrap_err();
        assert!(matches!(refused, LeaseError::Lost { .. }), "{refused}");
        let seen = election(&store, "c")
            .observer()
            .leader()
            .await
            .unwrap()
            .unwrap();
        assert_eq!((seen.holder.id(), seen.term), ("b", b.term()));
        assert_eq!(seen.value, None, "a's value shown as b's term's");
    }

    #[tokio::test]
    async fn an_observer_sees_each_term_and_its_value() {
        let store: DynLeaseStore = Arc::new(MemoryStore::new());
        let mut observer = election(&store, "watcher").observer();
        assert!(
            next(&mut observer).await.is_none(),
            "a leader before any campaign"
        );
        let a = lead(&store, "a").await;
        a.publish(b"10.0.0.1").await.unwrap();
        let mut seen = next(&mut observer).await.unwrap();
        if seen.value.is_none() {
            seen = next(&mut observer).await.unwrap(); // read before the publish
        }
        assert_eq!((seen.holder.id(), seen.term), ("a", a.term()));
        assert_eq!(seen.value.as_deref(), Some(&b"10.0.0.1"[..]));
        let first = a.term();
        a.resign().await.unwrap();
        let b = lead(&store, "b").await;
        // Seen vacant or already led by b; b's term in the end, without
        // a's value.
        let mut seen = next(&mut observer).await;
        if seen.is_none() {
            seen = next(&mut observer).await;
        }
        let seen = seen.expect("b leads");
        assert_eq!((seen.holder.id(), seen.term), ("b", b.term()));
        assert!(seen.term > first);
        assert_eq!(seen.value, None);
        assert!(matches!(
            observer.changed(Duration::from_millis(100)).await.unwrap(),
            Observed::Unchanged
        ));
    }

    #[tokio::test]
    async fn an_oversized_value_is_refused_naming_the_limit() {
        let store: DynLeaseStore = Arc::new(MemoryStore::new());
        let a = lead(&store, "a").await;
        let limit = store.capabilities().max_value_len - TERM_LEN;
        a.publish(&vec![7; limit]).await.unwrap();
        let e = a.publish(&vec![7; limit + 1]).await.unwrap_err();
        assert!(
            e.to_string().contains(&format!("at most {limit} bytes")),
            "{e}"
        );
    }

    #[test]
    fn values_of_other_terms_are_not_shown() {
        let tagged = [&5u64.to_be_bytes()[..], b"v"].concat();
        assert_eq!(untag(FencingToken(5), tagged.clone()), Some(b"v".to_vec()));
        assert_eq!(untag(FencingToken(6), tagged), None);
        assert_eq!(untag(FencingToken(5), vec![0; 3]), None);
    }
}
