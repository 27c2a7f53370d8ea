//! What one client does, another client of the same backend sees.

use std::time::Duration;

use lease_core::{Claim, DynLeaseStore};
use tokio::time::Instant;

use crate::cases::wait::{RELEASE_AFTER, release_wake_limit};
use crate::check::{acquire, holder, key};
use crate::{CaseError, Subject, ensure};

async fn second_client(s: &Subject) -> Result<DynLeaseStore, CaseError> {
    s.hooks
        .second_client()
        .await
        .map_err(crate::hooks::hook_failed(crate::Hook::SecondClient))
}

cases! {
    /// A grant that is not renewed ends for every client: once certainly expired, another client's claim is acquired with a higher token.
    #[needs(SecondClient)]
    #[rule(ClientsAgree)]
    async fn expiry_is_seen_by_other_clients(s) {
        let t = s.timing();
        let other = second_client(s).await?;
        let k = key("clients/expiry");
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.ttl).await?;
        match other.claim(&k, &holder("b", "1"), t.ttl).await? {
            Claim::Busy(record) => ensure!(record.is(&grant.value.fence), "the other client sees {record:?}"),
            Claim::Acquired(g) => ensure!(false, "the other client was granted a live lease: {g:?}"),
        }
        t.sleep_past_expiry(grant.replied, grant.value.ttl).await;
        ensure!(other.inspect(&k).await?.is_none(), "the other client still sees the expired grant");
        let next = acquire(&*other, &k, &holder("b", "1"), t.ttl).await?.value;
        ensure!(next.token() > grant.value.token(), "token {} after expiry is not above {}", next.token(), grant.value.token());
        Ok(())
    }

    /// A release by one client frees the key for every client at once, and wakes another client's waiter promptly.
    #[needs(SecondClient)]
    #[rule(ClientsAgree)]
    async fn release_is_seen_by_other_clients(s) {
        let t = s.timing();
        let other = second_client(s).await?;
        let k = key("clients/release");
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        let waiting = Instant::now();
        let waiter = tokio::spawn({
            let (other, k) = (other.clone(), k.clone());
            async move {
                let woke = other.wait_free(&k, Duration::from_secs(30)).await;
                (woke, Instant::now())
            }
        });
        tokio::time::sleep(RELEASE_AFTER).await;
        ensure!(!waiter.is_finished(), "the other client's waiter returned while the key was held");
        ensure!(s.store.release(&grant.fence).await?, "release of the live grant released nothing");
        let released = Instant::now();
        let (woke, woke_at) = waiter.await.map_err(|e| CaseError::Failed(format!("waiter panicked: {e}")))?;
        ensure!(woke?, "the other client's waiter timed out instead of seeing the release");
        s.within(&format!("waking the other client's waiter (started at {}) after the release replied", s.at(waiting)), released, woke_at, release_wake_limit(s))?;
        let next = acquire(&*other, &k, &holder("b", "1"), t.long_ttl).await?.value;
        ensure!(next.token() > grant.token(), "token {} after release is not above {}", next.token(), grant.token());
        Ok(())
    }

    /// A renewal keeps the grant live for every client: past the first TTL, another client is still busy.
    #[needs(SecondClient)]
    #[rule(ClientsAgree)]
    async fn renewal_is_seen_by_other_clients(s) {
        let t = s.timing();
        let other = second_client(s).await?;
        let k = key("clients/renewal");
        let first = acquire(&*s.store, &k, &holder("a", "1"), t.steady_ttl).await?;
        tokio::time::sleep_until(first.sent + t.steady_ttl / 2).await;
        let sent = Instant::now();
        let renewed = match s.store.renew(&first.value.fence, t.steady_ttl).await {
            Ok(renewed) => renewed,
            Err(e) => return Err(s.broken_unless_late(&format!("renewing the live grant gave {e}"), Instant::now(), first.sent + first.value.ttl)),
        };
        tokio::time::sleep_until(first.replied + first.value.ttl + t.slack + Duration::from_millis(50)).await;
        let outcome = other.claim(&k, &holder("b", "1"), t.steady_ttl).await?;
        if !outcome.busy().is_some_and(|r| r.is(&first.value.fence)) {
            let what = format!("past the first TTL, after a renewal sent at {}, the other client's claim gave {outcome:?}", s.at(sent));
            return Err(s.broken_unless_late(&what, Instant::now(), sent + renewed.ttl));
        }
        Ok(())
    }

    /// Inspect reads the store, not a copy: what one client changes, another client's inspect shows at once — a release, a new holder, a renewal's time left.
    #[needs(SecondClient)]
    #[rule(ClientsAgree)]
    async fn inspect_shows_other_clients_changes_at_once(s) {
        let t = s.timing();
        let other = second_client(s).await?;
        let k = key("clients/inspect");
        let first = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        let seen = other.inspect(&k).await?;
        ensure!(seen.as_ref().is_some_and(|r| r.is(&first.fence)), "the other client shows {seen:?}, not the grant");
        ensure!(s.store.release(&first.fence).await?, "release of the live grant released nothing");
        let seen = other.inspect(&k).await?;
        ensure!(seen.is_none(), "after a release, the other client still shows {seen:?}");
        // Shorter than the renewal to come, so a stale time left shows.
        let next = acquire(&*s.store, &k, &holder("b", "1"), t.steady_ttl).await?;
        let live_until = next.sent + next.value.ttl;
        let seen = other.inspect(&k).await?;
        if !seen.as_ref().is_some_and(|r| r.is(&next.value.fence)) {
            return Err(s.broken_unless_late(&format!("after a new claim, the other client shows {seen:?}"), Instant::now(), live_until));
        }
        let sent = Instant::now();
        let renewed = match s.store.renew(&next.value.fence, t.long_ttl).await {
            Ok(renewed) => renewed,
            Err(e) => return Err(s.broken_unless_late(&format!("renewing the live grant gave {e}"), Instant::now(), live_until)),
        };
        let seen = other.inspect(&k).await?.ok_or_else(|| CaseError::Failed("the renewed grant is gone for the other client".into()))?;
        let step = s.store.capabilities().ttl_granularity;
        ensure!(seen.remaining + sent.elapsed() + step >= renewed.ttl, "after a renewal for {:?}, the other client shows {:?} left", renewed.ttl, seen.remaining);
        Ok(())
    }
}
