//! Wait: resolve when the key has no live grant, or time out.

use std::time::Duration;

use tokio::time::Instant;

use crate::check::{acquire, holder, key};
use crate::ensure;

/// How late a notified waiter may wake after a release.
const WAKE_LIMIT: Duration = Duration::from_millis(500);

cases! {
    /// Waiting on a free key returns at once.
    async fn wait_on_a_free_key_returns_at_once(s) {
        let started = Instant::now();
        ensure!(s.store.wait_free(&key("wait/free"), Duration::from_secs(5)).await?, "wait on a free key timed out");
        ensure!(started.elapsed() < WAKE_LIMIT, "wait on a free key took {:?}", started.elapsed());
        Ok(())
    }

    /// A waiter wakes promptly when the grant is released (notification, not a slow poll).
    async fn wait_wakes_on_release(s) {
        let t = s.timing();
        let k = key("wait/release");
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        let waiter = tokio::spawn({
            let (store, k) = (s.store.clone(), k.clone());
            async move { store.wait_free(&k, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        ensure!(!waiter.is_finished(), "the waiter returned while the key was held");
        // Another key's release must not wake it.
        let other = acquire(&*s.store, &key("wait/release-other"), &holder("b", "1"), t.long_ttl).await?.value;
        s.store.release(&other.fence).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        ensure!(!waiter.is_finished(), "the waiter returned when another key was released");
        let released = Instant::now();
        s.store.release(&grant.fence).await?;
        let woke = waiter.await.map_err(|e| crate::CaseError::Failed(format!("waiter panicked: {e}")))??;
        ensure!(woke, "the waiter timed out instead of seeing the release");
        ensure!(released.elapsed() < WAKE_LIMIT, "the waiter woke {:?} after the release", released.elapsed());
        Ok(())
    }

    /// A waiter wakes when the grant expires, which publishes nothing.
    async fn wait_wakes_on_expiry(s) {
        let t = s.timing();
        let k = key("wait/expiry");
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.ttl).await?;
        let woke = s.store.wait_free(&k, t.ttl * 4 + t.slack + Duration::from_secs(2)).await?;
        ensure!(woke, "the waiter did not see the expiry");
        ensure!(Instant::now() >= grant.sent + grant.value.ttl, "the waiter woke before the grant could have expired");
        let late = Instant::now().saturating_duration_since(grant.replied + grant.value.ttl + t.slack);
        ensure!(late < WAKE_LIMIT + t.ttl / 2, "the waiter woke {late:?} after certain expiry");
        Ok(())
    }

    /// A wait on a key held throughout times out with false, no earlier than asked.
    async fn wait_times_out_while_held(s) {
        let t = s.timing();
        let k = key("wait/timeout");
        acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?;
        let started = Instant::now();
        let limit = Duration::from_millis(300);
        let waited = tokio::time::timeout(limit + Duration::from_secs(5), s.store.wait_free(&k, limit)).await;
        let Ok(waited) = waited else {
            return Err(crate::CaseError::Failed(format!("wait ignored its {limit:?} timeout")));
        };
        ensure!(!waited?, "wait returned true while the key was held");
        ensure!(started.elapsed() >= limit, "wait gave up after {:?}, before {limit:?}", started.elapsed());
        Ok(())
    }

    /// Renewals do not wake a waiter: it stays waiting while the holder keeps renewing, and wakes once the holder releases.
    async fn wait_sleeps_through_renewals(s) {
        let t = s.timing();
        let k = key("wait/renewals");
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.steady_ttl).await?.value;
        let waiter = tokio::spawn({
            let (store, k) = (s.store.clone(), k.clone());
            async move { store.wait_free(&k, Duration::from_secs(60)).await }
        });
        let until = Instant::now() + t.steady_ttl * 2;
        while Instant::now() < until {
            tokio::time::sleep(t.steady_ttl / 4).await;
            s.store.renew(&grant.fence, t.steady_ttl).await?;
            ensure!(!waiter.is_finished(), "the waiter returned while the key was held and renewed");
        }
        ensure!(s.store.release(&grant.fence).await?, "release of the renewed grant released nothing");
        let woke = tokio::time::timeout(Duration::from_secs(10), waiter).await;
        let woke = woke.map_err(|_| crate::CaseError::Failed("the waiter did not wake after the release".into()))?;
        ensure!(woke.map_err(|e| crate::CaseError::Failed(format!("waiter panicked: {e}")))??, "the waiter timed out instead of seeing the release");
        Ok(())
    }

    /// A record that turns corrupt while a waiter waits counts as free: the waiter wakes with true, well before its timeout.
    async fn wait_treats_a_corrupt_record_as_free(s) {
        let t = s.timing();
        let k = key("wait/corrupt");
        acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?;
        let waiter = tokio::spawn({
            let (store, k) = (s.store.clone(), k.clone());
            async move { store.wait_free(&k, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        match s.hooks.plant_corrupt_record(&k).await {
            None => {
                waiter.abort();
                return Err(crate::CaseError::NotRun("the factory offers no plant_corrupt_record hook".into()));
            }
            Some(planted) => planted.map_err(|e| crate::CaseError::Failed(format!("planting failed: {e}")))?,
        }
        let woke = tokio::time::timeout(Duration::from_secs(10), waiter).await;
        let woke = woke.map_err(|_| crate::CaseError::Failed("the waiter kept waiting on a corrupt record".into()))?;
        ensure!(woke.map_err(|e| crate::CaseError::Failed(format!("waiter panicked: {e}")))??, "the waiter timed out on a corrupt record");
        Ok(())
    }
}
