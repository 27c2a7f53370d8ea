//! Counting leases: at most `n` holders at once, each permit fenced.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use futures::future::select_all;
use tokio::time::Instant;

use crate::{Acquire, HeldLease, LeaseError, LeaseKey, Leaser};

/// The most permits one pool may have: a waiter waits on every permit's
/// key at once.
pub const MAX_PERMITS: usize = 1024;

/// A pool of `n` permits on one name: at most `n` held at any instant,
/// fleet-wide.
///
/// Permit `i` is the lease on `name/i`. There is no count to read and then
/// write: each of the `n` keys has at most one live grant, so no more than
/// `n` permits are live at any instant, whatever the holders do, on any
/// store that keeps the lease rules. A permit is a [`HeldLease`] like any
/// other: it has its own fencing token (increasing per permit key: a
/// resource guarded by permits keeps the highest token it accepted per
/// `permit.fence().key`), its own deadline and `lost` signal, and the
/// leaser's keeper renews it with the leaser's other leases. A crashed
/// holder's permit frees when its TTL runs out; a released one at once.
/// Waiters are woken by the store's notification on whichever permit
/// frees first.
///
/// Each caller tries the permits from a starting point of its own, so
/// callers spread over the keys instead of all contending for `name/0`.
///
/// A holder is one identity: two leasers with the same [`Holder`] share
/// the permits they hold (a claim of one's own live grant returns it), so
/// give every process — and every restart of it — a holder of its own
/// ([`Holder::unique`]).
///
/// [`Holder`]: crate::Holder
/// [`Holder::unique`]: crate::Holder::unique
#[derive(Clone, Debug)]
pub struct Permits {
    leaser: Leaser,
    keys: Arc<[LeaseKey]>,
}

impl Permits {
    /// `n` permits on `name`, claimed as `leaser`'s holder with its TTL.
    ///
    /// # Errors
    /// [`LeaseError::InvalidKey`] naming `name` when `n` is 0 or above
    /// [`MAX_PERMITS`], or when `name/{n-1}` breaks a key rule.
    pub fn new(leaser: Leaser, name: &LeaseKey, n: usize) -> Result<Self, LeaseError> {
        if !(1..=MAX_PERMITS).contains(&n) {
            return Err(LeaseError::InvalidKey {
                key: name.as_str().to_owned(),
                rule: "a pool of permits holds from 1 to 1024 permits",
            });
        }
        let keys = (0..n)
            .map(|i| name.join(&i.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(Self { leaser, keys })
    }

    /// The permits' keys, `name/0` to `name/{n-1}`.
    pub fn keys(&self) -> &[LeaseKey] {
        &self.keys
    }

    /// Takes a free permit if there is one: `None` when all `n` are held.
    ///
    /// # Errors
    /// The store's errors for [`claim`](crate::LeaseStore::claim). After
    /// an indeterminate one, a permit may have been granted that nobody
    /// keeps alive: it frees when its TTL runs out.
    pub async fn try_acquire(&self) -> Result<Option<HeldLease>, LeaseError> {
        let n = self.keys.len();
        let start = RandomState::new().hash_one(0u8) as usize % n;
        for i in 0..n {
            let key = &self.keys[(start + i) % n];
            if let Acquire::Held(permit) = self.leaser.try_acquire(key).await? {
                return Ok(Some(permit));
            }
        }
        Ok(None)
    }

    /// Takes a permit, waiting up to `wait` for one to free: `None` when
    /// `wait` runs out with all `n` held.
    ///
    /// # Errors
    /// The store's errors for claim and wait.
    pub async fn acquire(&self, wait: Duration) -> Result<Option<HeldLease>, LeaseError> {
        let give_up = Instant::now() + wait;
        loop {
            if let Some(permit) = self.try_acquire().await? {
                return Ok(Some(permit));
            }
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // Woken by the first permit to free, or when `left` runs out;
            // try again either way: another waiter may take it first.
            let store = self.leaser.store();
            let (woken, _, _) =
                select_all(self.keys.iter().map(|k| store.wait_free(k, left))).await;
            woken?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{DynLeaseStore, Holder, MemoryStore};

    const TTL: Duration = Duration::from_millis(300);

    fn pool(store: &DynLeaseStore, who: &str, n: usize) -> Permits {
        let leaser = Leaser::new(store.clone(), Holder::new(who, "1").unwrap(), TTL);
        Permits::new(leaser, &LeaseKey::new("pool").unwrap(), n).unwrap()
    }

    #[tokio::test]
    async fn never_more_than_n_permits() {
        let store: DynLeaseStore = Arc::new(MemoryStore::new());
        let mut held = Vec::new();
        for who in ["a", "b", "c", "d", "e"] {
            if let Some(permit) = pool(&store, who, 3).try_acquire().await.unwrap() {
                held.push(permit);
            }
        }
        assert_eq!(held.len(), 3, "five callers, three permits");
        let mut keys: Vec<_> = held.iter().map(|p| p.fence().key.clone()).collect();
        keys.dedup();
        assert_eq!(keys.len(), 3, "each permit on its own key");
        assert!(pool(&store, "f", 3).try_acquire().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_waiter_gets_the_permit_a_release_frees() {
        let store: DynLeaseStore = Arc::new(MemoryStore::new());
        let first = pool(&store, "a", 2).try_acquire().await.unwrap().unwrap();
        let _second = pool(&store, "b", 2).try_acquire().await.unwrap().unwrap();
        let waiter = pool(&store, "c", 2);
        let waiting = tokio::spawn(async move { waiter.acquire(Duration::from_secs(30)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "a waiter took a permit while both were held"
        );
        let freed = first.fence().key.clone();
        first.release().await.unwrap();
        let permit = waiting.await.unwrap().unwrap().expect("the freed permit");
        assert_eq!(permit.fence().key, freed);
    }

    #[tokio::test]
    async fn a_crashed_holders_permit_frees_by_its_ttl() {
        let store: DynLeaseStore = Arc::new(MemoryStore::new());
        let crashed = pool(&store, "a", 1).try_acquire().await.unwrap().unwrap();
        let token = crashed.fence().token;
        drop(crashed); // stops renewing, releases nothing
        let other = pool(&store, "b", 1);
        assert!(other.try_acquire().await.unwrap().is_none());
        let permit = other
            .acquire(TTL * 10)
            .await
            .unwrap()
            .expect("freed by TTL");
        assert!(permit.fence().token > token);
    }

    #[tokio::test]
    async fn a_pool_size_out_of_range_is_refused_naming_the_rule() {
        let store: DynLeaseStore = Arc::new(MemoryStore::new());
        let leaser = Leaser::new(store, Holder::new("a", "1").unwrap(), TTL);
        let name = LeaseKey::new("pool").unwrap();
        for n in [0, MAX_PERMITS + 1] {
            let e = Permits::new(leaser.clone(), &name, n).unwrap_err();
            assert!(e.to_string().contains("from 1 to 1024 permits"), "{e}");
            assert!(e.to_string().contains("pool"), "{e}");
        }
        assert_eq!(
            Permits::new(leaser, &name, MAX_PERMITS)
                .unwrap()
                .keys()
                .len(),
            MAX_PERMITS
        );
    }
}
