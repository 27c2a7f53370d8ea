//! TTL validation, and the helpers built on the trait: check, round, leaser.

use std::sync::Arc;
use std::time::Duration;

use lease_core::{Acquire, LeaseError, Leaser, LostReason, Round};
use tokio::time::Instant;

use crate::check::{acquire, holder, key};
use crate::{CaseError, ensure};

cases! {
    /// A zero TTL, one below the declared minimum or above the maximum is an InvalidTtl error naming the key — never silently clamped — and grants nothing.
    #[rule(TtlsAreValidated)]
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
    #[rule(TtlsAreValidated)]
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
    #[rule(CheckFollowsTheLiveGrant)]
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
    #[rule(HelpersKeepTheRules)]
    async fn round_has_exactly_one_winner(s) {
        let t = s.timing();
        let k = key("round/export");
        let mut tokens = Vec::new();
        for _ in 0..2 {
            let contenders = (0..8).map(|i| {
                let round = Round::new(s.store.clone(), k.clone(), holder(&format!("replica-{i}"), "1"), t.steady_ttl);
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let first = round.try_win().await;
                    let between = Instant::now();
                    let second = round.try_win().await;
                    [(sent, first, between), (between, second, Instant::now())]
                })
            });
            // Every win, with when its call was sent and answered.
            let mut wins = Vec::new();
            for outcome in futures::future::join_all(contenders).await {
                let tries = outcome.map_err(|e| CaseError::Failed(format!("contender panicked: {e}")))?;
                for (sent, won, replied) in tries {
                    if let Some(grant) = won? {
                        wins.push((sent, grant, replied));
                    }
                }
            }
            wins.sort_by_key(|(_, grant, _)| grant.token());
            let Some((sent, first, _)) = wins.first().cloned() else {
                return Err(CaseError::Failed("nobody won the round".into()));
            };
            // The round is certainly on until its winner's call was sent +
            // TTL: another win answered before then is a second winner.
            if let Some((_, grant, replied)) = wins.get(1) {
                let what = format!("{} won a round {} already won at {} (token {}), with token {}", grant.fence.holder, if grant.fence.holder == first.fence.holder { "it had" } else { "another contender had" }, s.at(sent), first.token(), grant.token());
                return Err(s.broken_unless_late(&what, *replied, sent + first.ttl));
            }
            let winners = [first];
            tokens.push(winners[0].token());
            // Every contender has its reply by now: the round certainly ends
            // a TTL (and the slack) later.
            t.sleep_past_expiry(tokio::time::Instant::now(), winners[0].ttl).await;
        }
        ensure!(tokens[1] > tokens[0], "round tokens did not increase: {tokens:?}");
        Ok(())
    }

    /// The leaser keeps a lease alive across many TTLs, and its lost signal fires when another holder takes the lease over.
    #[rule(HelpersKeepTheRules)]
    async fn leaser_keeps_alive_and_signals_loss(s) {
        let t = s.timing();
        let k = key("leaser/held");
        let leaser = Leaser::new(Arc::clone(&s.store), holder("a", "1"), t.steady_ttl);
        let Acquire::Held(lease) = leaser.try_acquire(&k).await? else {
            return Err(CaseError::Failed("the leaser could not acquire a free key".into()));
        };
        let held = Instant::now();
        tokio::time::sleep(t.steady_ttl * 2 + t.slack).await;
        match lease.lost_reason() {
            None => {}
            // The keeper's renewal did not come back before the deadline:
            // a slow runner or a slow call, not a broken rule.
            Some(LostReason::DeadlinePassed) => {
                return Err(CaseError::Starved(format!(
                    "the leaser's renewals did not come back before the deadline (the runner stalled up to {:.1?} while holding since {})",
                    s.runner_lag(held, Instant::now()), s.at(held)
                )));
            }
            Some(reason) => {
                // A renewal is refused legitimately only when it reached
                // the store after the grant's end: the keeper renews well
                // before it, so only a stalled runner gets there.
                let lag = s.runner_lag(held, Instant::now());
                let what = format!("the lease was lost while renewing ({reason:?}); the runner stalled at most {lag:.1?}");
                return Err(if lag >= t.steady_ttl / 4 { CaseError::Starved(what) } else { CaseError::Failed(what) });
            }
        }
        s.expect_live(&*s.store, lease.fence(), lease.deadline(), "the kept-alive grant expired").await?;
        let taken = s.store.reclaim(lease.fence(), &holder("b", "1"), t.steady_ttl).await?.acquired();
        ensure!(taken.is_some(), "reclaim of the leaser's grant refused");
        let took_over = Instant::now();
        let allowed = t.steady_ttl + t.slack;
        let noticed = tokio::time::timeout(allowed * 3, lease.lost().cancelled()).await;
        ensure!(noticed.is_ok(), "the lost signal did not fire within three TTLs of the takeover at {}", s.at(took_over));
        s.within("the lost signal after the takeover", took_over, Instant::now(), allowed)?;
        ensure!(matches!(lease.lost_reason(), Some(LostReason::Refused(_))), "lost for {:?}", lease.lost_reason());
        Ok(())
    }
}
