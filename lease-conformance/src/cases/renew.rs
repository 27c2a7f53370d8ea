//! Renew: extend the live grant, keeping its token; refuse everything else.

use lease_core::{Fence, Holder, LeaseError};

use crate::check::{acquire, holder, key};
use crate::{CaseError, CaseResult, ensure};

fn expect_lost(what: &str, result: Result<lease_core::Grant, LeaseError>) -> CaseResult {
    match result {
        Err(LeaseError::Lost { .. }) => Ok(()),
        Err(other) => Err(CaseError::Failed(format!(
            "renewing {what} gave {other}, not Lost"
        ))),
        Ok(grant) => Err(CaseError::Failed(format!(
            "renewing {what} succeeded: {grant:?}"
        ))),
    }
}

cases! {
    /// Renewing the live grant keeps its token and extends it by the TTL from now.
    async fn renew_keeps_token_and_extends(s) {
        let t = s.timing();
        let k = key("renew/extend");
        let first = acquire(&*s.store, &k, &holder("a", "1"), t.ttl).await?;
        tokio::time::sleep(t.ttl * 3 / 4).await;
        let sent = tokio::time::Instant::now();
        let renewed = s.store.renew(&first.value.fence, t.ttl).await?;
        ensure!(renewed.fence == first.value.fence, "renewal changed the fence: {renewed:?}");
        ensure!(!renewed.fresh, "a renewal is not fresh");
        ensure!(renewed.deadline <= sent + renewed.ttl + crate::check::SEND_ALLOWANCE, "deadline {:?} after sending is later than the TTL granted", renewed.deadline - sent);
        ensure!(renewed.ttl >= t.ttl, "renewal granted {:?}, less than the {:?} asked for", renewed.ttl, t.ttl);
        tokio::time::sleep_until(first.replied + t.ttl + t.slack + std::time::Duration::from_millis(20)).await;
        if tokio::time::Instant::now() < sent + renewed.ttl {
            ensure!(s.store.check(&first.value.fence).await?, "the renewal did not extend the grant");
        }
        Ok(())
    }

    /// Renewal never revives an expired grant, even when nobody claimed the key since.
    async fn renew_never_revives_an_expired_grant(s) {
        let t = s.timing();
        let k = key("renew/expired");
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.ttl).await?;
        t.sleep_past_expiry(grant.replied, grant.value.ttl).await;
        expect_lost("an expired grant", s.store.renew(&grant.value.fence, t.ttl).await)?;
        ensure!(s.store.inspect(&k).await?.is_none(), "the expired grant came back");
        Ok(())
    }

    /// Renewal of a released grant is refused with Lost.
    async fn renew_refuses_a_released_grant(s) {
        let t = s.timing();
        let k = key("renew/released");
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        s.store.release(&grant.fence).await?;
        expect_lost("a released grant", s.store.renew(&grant.fence, t.long_ttl).await)
    }

    /// Renewal of a superseded grant is refused with Lost carrying the newer record, which stays untouched.
    async fn renew_refuses_a_superseded_grant(s) {
        let t = s.timing();
        let k = key("renew/superseded");
        let old = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        let newer = s.store.reclaim(&old.fence, &holder("b", "1"), t.long_ttl).await?.acquired();
        let newer = newer.ok_or_else(|| CaseError::Failed("reclaim refused".into()))?;
        match s.store.renew(&old.fence, t.long_ttl).await {
            Err(LeaseError::Lost { current, .. }) => ensure!(current.as_deref().is_some_and(|r| r.is(&newer.fence)), "Lost should carry the newer record, not {current:?}"),
            other => ensure!(false, "renewing a superseded grant gave {other:?}"),
        }
        ensure!(s.store.check(&newer.fence).await?, "the newer grant was disturbed");
        // Superseded by the same holder's newer grant: the old token is still dead.
        s.store.release(&newer.fence).await?;
        let own_newer = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        expect_lost("a grant superseded by the same holder", s.store.renew(&old.fence, t.long_ttl).await)?;
        ensure!(s.store.check(&own_newer.fence).await?, "renewing the old token disturbed the newer grant");
        Ok(())
    }

    /// A fence the store never granted (wrong token, wrong incarnation) cannot renew.
    async fn renew_refuses_unknown_fences(s) {
        let t = s.timing();
        let k = key("renew/unknown");
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        let wrong_token = Fence { token: lease_core::FencingToken(grant.token().0 + 1), ..grant.fence.clone() };
        expect_lost("a fence with another token", s.store.renew(&wrong_token, t.long_ttl).await)?;
        let other: Holder = holder("a", "2");
        let wrong_holder = Fence { holder: other, ..grant.fence.clone() };
        expect_lost("a fence of another incarnation", s.store.renew(&wrong_holder, t.long_ttl).await)?;
        let never = Fence { key: key("renew/never-claimed"), ..grant.fence.clone() };
        expect_lost("a fence on a key never claimed", s.store.renew(&never, t.long_ttl).await)
    }
}
