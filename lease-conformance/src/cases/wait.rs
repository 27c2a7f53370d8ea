//! Wait: resolve when the key has no live grant, or time out.

use std::time::Duration;

use lease_core::Wakeup;
use tokio::time::Instant;

use crate::check::{acquire, holder, key};
use crate::{Subject, ensure};

/// How late a waiter may return on a free key, or after an expiry it had
/// to notice by itself.
const WAKE_LIMIT: Duration = Duration::from_millis(500);

/// How long after a waiter started a case releases the key it waits on:
/// a store that only re-checks, on a timer started with the wait, is then
/// far from its next re-check.
pub(crate) const RELEASE_AFTER: Duration = Duration::from_millis(200);

/// How late a waiter may wake after the reply to a release: for a store
/// that declares notifications, well inside its fallback re-check (a
/// quarter of it, within 50..=250 ms), so notifications that silently fail
/// are caught; for one that declares polling, its interval and 250 ms.
pub(crate) fn release_wake_limit(s: &Subject) -> Duration {
    match s.store.capabilities().wakeup {
        Wakeup::Polled { every } => every + Duration::from_millis(250),
        Wakeup::Notified { recheck } => {
            (recheck / 4).clamp(Duration::from_millis(50), Duration::from_millis(250))
        }
        // A future kind of wake-up: the loosest allowance.
        _ => WAKE_LIMIT,
    }
}

cases! {
    /// Waiting on a free key returns at once.
    #[rule(WaitWakesWhenFree)]
    async fn wait_on_a_free_key_returns_at_once(s) {
        let started = Instant::now();
        ensure!(s.store.wait_free(&key("wait/free"), Duration::from_secs(5)).await?, "wait on a free key timed out");
        s.within("a wait on a free key", started, Instant::now(), WAKE_LIMIT)
    }

    /// A waiter wakes promptly when the grant is released: within the wake-up the store declares (for notifications, well inside their fallback re-check), and not when another key is released.
    #[rule(WaitWakesWhenFree)]
    async fn wait_wakes_on_release(s) {
        let t = s.timing();
        let k = key("wait/release");
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        let waiting = Instant::now();
        let waiter = tokio::spawn({
            let (store, k) = (s.store.clone(), k.clone());
            async move {
                let woke = store.wait_free(&k, Duration::from_secs(30)).await;
                (woke, Instant::now())
            }
        });
        tokio::time::sleep(RELEASE_AFTER / 2).await;
        ensure!(!waiter.is_finished(), "the waiter returned while the key was held");
        // Another key's release must not wake it.
        let other = acquire(&*s.store, &key("wait/release-other"), &holder("b", "1"), t.long_ttl).await?.value;
        s.store.release(&other.fence).await?;
        tokio::time::sleep_until(waiting + RELEASE_AFTER).await;
        ensure!(!waiter.is_finished(), "the waiter returned when another key was released");
        ensure!(s.store.release(&grant.fence).await?, "release of the live grant released nothing");
        let released = Instant::now();
        let (woke, woke_at) = waiter.await.map_err(|e| crate::CaseError::Failed(format!("waiter panicked: {e}")))?;
        ensure!(woke?, "the waiter timed out instead of seeing the release");
        let wakeup = s.store.capabilities().wakeup;
        s.within(&format!("waking a waiter (started at {}) after the release replied, with {wakeup:?}", s.at(waiting)), released, woke_at, release_wake_limit(s))
    }

    /// A waiter wakes when the grant expires, which publishes nothing.
    #[rule(WaitWakesWhenFree)]
    async fn wait_wakes_on_expiry(s) {
        let t = s.timing();
        let k = key("wait/expiry");
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.ttl).await?;
        let woke = s.store.wait_free(&k, t.ttl * 4 + t.slack + Duration::from_secs(2)).await?;
        ensure!(woke, "the waiter did not see the expiry");
        ensure!(Instant::now() >= grant.sent + grant.value.ttl, "the waiter woke before the grant could have expired");
        s.within("waking a waiter after certain expiry", grant.replied + grant.value.ttl + t.slack, Instant::now(), WAKE_LIMIT + t.ttl / 2)
    }

    /// A wait on a key held throughout times out with false, no earlier than asked.
    #[rule(WaitWakesWhenFree)]
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
    #[rule(WaitWakesWhenFree)]
    async fn wait_sleeps_through_renewals(s) {
        let t = s.timing();
        let k = key("wait/renewals");
        let claimed = acquire(&*s.store, &k, &holder("a", "1"), t.steady_ttl).await?;
        let (grant, grant_sent) = (claimed.value, claimed.sent);
        let waiter = tokio::spawn({
            let (store, k) = (s.store.clone(), k.clone());
            async move { store.wait_free(&k, Duration::from_secs(60)).await }
        });
        let until = Instant::now() + t.steady_ttl * 2;
        // The renewed grant is certainly live until its last renewal was
        // sent + TTL; a renewal or release answered later may find it gone.
        let mut live_until = grant_sent + grant.ttl;
        while Instant::now() < until {
            tokio::time::sleep(t.steady_ttl / 4).await;
            let sent = Instant::now();
            match s.store.renew(&grant.fence, t.steady_ttl).await {
                Ok(renewed) => live_until = sent + renewed.ttl,
                Err(e) => return Err(s.broken_unless_late(&format!("renewing the held grant gave {e}"), Instant::now(), live_until)),
            }
            ensure!(!waiter.is_finished(), "the waiter returned while the key was held and renewed");
        }
        if !s.store.release(&grant.fence).await? {
            return Err(s.broken_unless_late("release of the renewed grant released nothing", Instant::now(), live_until));
        }
        let woke = tokio::time::timeout(Duration::from_secs(10), waiter).await;
        let woke = woke.map_err(|_| crate::CaseError::Failed("the waiter did not wake after the release".into()))?;
        ensure!(woke.map_err(|e| crate::CaseError::Failed(format!("waiter panicked: {e}")))??, "the waiter timed out instead of seeing the release");
        Ok(())
    }

    /// A record that turns corrupt while a waiter waits counts as free: the waiter wakes with true, well before its timeout.
    #[needs(CorruptRecord)]
    #[rule(WaitWakesWhenFree)]
    async fn wait_treats_a_corrupt_record_as_free(s) {
        let t = s.timing();
        let k = key("wait/corrupt");
        acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?;
        let waiter = tokio::spawn({
            let (store, k) = (s.store.clone(), k.clone());
            async move { store.wait_free(&k, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.hooks.plant_corrupt_record(&k).await.map_err(crate::hooks::hook_failed(crate::Hook::CorruptRecord))?;
        let woke = tokio::time::timeout(Duration::from_secs(10), waiter).await;
        let woke = woke.map_err(|_| crate::CaseError::Failed("the waiter kept waiting on a corrupt record".into()))?;
        ensure!(woke.map_err(|e| crate::CaseError::Failed(format!("waiter panicked: {e}")))??, "the waiter timed out on a corrupt record");
        Ok(())
    }
}
