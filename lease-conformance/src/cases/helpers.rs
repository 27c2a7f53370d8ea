//! TTL validation, and the helpers built on the trait: check, round, leaser.

use std::sync::Arc;
use std::time::Duration;

use lease_core::{Acquire, LeaseError, Leaser, LostReason, Round};

use crate::check::{acquire, holder, key};
use crate::{CaseError, ensure};

cases! {
    /// A zero TTL, one below the declared minimum or above the maximum is an InvalidTtl error naming the key — never silently clamped — and grants nothing.
    async fn invalid_ttls_are_refused(s) {
        let caps = s.store.capabilities();
        let k = key("ttl/invalid");
        let a = holder("a", "1");
        let mut bad = vec![Duration::ZERO, caps.max_ttl + caps.ttl_granularity.max(Duration::from_millis(1))];
        if caps.min_ttl > Duration::from_millis(1) {
            bad.push(caps.min_ttl - Duration::from_millis(1));
        }
        for ttl in bad {
            match s.store.claim(&k, &a, ttl).await {
                Err(LeaseError::InvalidTtl { key, .. }) => ensure!(key == k, "the error names {key}, not {k}"),
                other => return Err(CaseError::Failed(format!("claim with TTL {ttl:?} gave {other:?}"))),
            }
        }
        ensure!(s.store.inspect(&k).await?.is_none(), "a refused claim left a grant");
        let grant = acquire(&*s.store, &k, &a, s.timing().long_ttl).await?.value;
        ensure!(matches!(s.store.renew(&grant.fence, Duration::ZERO).await, Err(LeaseError::InvalidTtl { .. })), "renew with a zero TTL was not refused");
        Ok(())
    }

    /// A TTL between granularity steps is rounded up to the declared granularity, and the grant reports the TTL actually granted.
    async fn ttl_rounding_is_reported(s) {
        let caps = s.store.capabilities();
        let step = caps.ttl_granularity.max(Duration::from_millis(1));
        let asked = s.timing().ttl + step / 2;
        let grant = acquire(&*s.store, &key("ttl/rounding"), &holder("a", "1"), asked).await?.value;
        ensure!(grant.ttl >= asked && grant.ttl < asked + step, "asked {asked:?}, granted {:?} (granularity {step:?})", grant.ttl);
        let record = s.store.inspect(&key("ttl/rounding")).await?;
        ensure!(record.is_some_and(|r| r.remaining <= grant.ttl), "time left exceeds the TTL granted");
        Ok(())
    }

    /// check() is true exactly while the fence is the current live grant.
    async fn check_follows_the_live_grant(s) {
        let t = s.timing();
        let k = key("check/fence");
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.ttl).await?;
        ensure!(s.store.check(&grant.value.fence).await?, "check is false for the live grant");
        t.sleep_past_expiry(grant.replied, grant.value.ttl).await;
        ensure!(!s.store.check(&grant.value.fence).await?, "check is true for an expired grant");
        Ok(())
    }

    /// Exactly one of many concurrent contenders wins a round; nobody wins twice; the round ends when its TTL runs out and the next winner's token is higher.
    async fn round_has_exactly_one_winner(s) {
        let t = s.timing();
        let k = key("round/export");
        let mut tokens = Vec::new();
        for _ in 0..2 {
            let contenders = (0..8).map(|i| {
                let round = Round::new(s.store.clone(), k.clone(), holder(&format!("replica-{i}"), "1"), t.steady_ttl);
                tokio::spawn(async move { (round.try_win().await, round.try_win().await) })
            });
            let mut winners = Vec::new();
            for outcome in futures::future::join_all(contenders).await {
                let (first, second) = outcome.map_err(|e| CaseError::Failed(format!("contender panicked: {e}")))?;
                winners.extend(first?);
                ensure!(second?.is_none(), "a contender won the same round twice");
            }
            ensure!(winners.len() == 1, "{} winners in one round: {winners:?}", winners.len());
            tokens.push(winners[0].token());
            // Every contender has its reply by now: the round certainly ends
            // a TTL (and the slack) later.
            t.sleep_past_expiry(tokio::time::Instant::now(), winners[0].ttl).await;
        }
        ensure!(tokens[1] > tokens[0], "round tokens did not increase: {tokens:?}");
        Ok(())
    }

    /// The leaser keeps a lease alive across many TTLs, and its lost signal fires when another holder takes the lease over.
    async fn leaser_keeps_alive_and_signals_loss(s) {
        let t = s.timing();
        let k = key("leaser/held");
        let leaser = Leaser::new(Arc::clone(&s.store), holder("a", "1"), t.steady_ttl);
        let Acquire::Held(lease) = leaser.try_acquire(&k).await? else {
            return Err(CaseError::Failed("the leaser could not acquire a free key".into()));
        };
        tokio::time::sleep(t.steady_ttl * 2 + t.slack).await;
        ensure!(!lease.is_lost(), "the lease was lost while renewing: {:?}", lease.lost_reason());
        ensure!(s.store.check(lease.fence()).await?, "the kept-alive grant expired");
        let taken = s.store.reclaim(lease.fence(), &holder("b", "1"), t.steady_ttl).await?.acquired();
        ensure!(taken.is_some(), "reclaim of the leaser's grant refused");
        let noticed = tokio::time::timeout(t.steady_ttl + t.slack, lease.lost().cancelled()).await;
        ensure!(noticed.is_ok(), "the lost signal did not fire within a TTL of the takeover");
        ensure!(matches!(lease.lost_reason(), Some(LostReason::Refused(_))), "lost for {:?}", lease.lost_reason());
        Ok(())
    }
}
