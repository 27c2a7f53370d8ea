//! Reclaim: take over a live grant only if it is still the one observed.

use lease_core::{Claim, Fence, FencingToken};

use crate::check::{acquire, holder, key};
use crate::ensure;

cases! {
    /// Reclaim takes over the observed live grant with a higher token; the old fence is then lost.
    #[rule(ReclaimComparesAndSwaps)]
    async fn reclaim_takes_over_the_observed_grant(s) {
        let t = s.timing();
        let k = key("reclaim/takeover");
        let observed = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value.fence;
        let grant = s.store.reclaim(&observed, &holder("b", "1"), t.long_ttl).await?;
        let Claim::Acquired(grant) = grant else {
            return Err(crate::CaseError::Failed(format!("reclaim of the observed grant was refused: {grant:?}")));
        };
        ensure!(grant.fresh && grant.token() > observed.token, "takeover must be fresh with a higher token: {grant:?}");
        ensure!(!s.store.check(&observed).await?, "the old fence still checks as current");
        ensure!(s.store.renew(&observed, t.long_ttl).await.is_err(), "the old fence could still renew");
        Ok(())
    }

    /// Reclaim is a compare-and-swap: if a newer grant replaced the observed one, it is busy with that newer record.
    #[rule(ReclaimComparesAndSwaps)]
    async fn reclaim_loses_to_a_newer_grant(s) {
        let t = s.timing();
        let k = key("reclaim/cas");
        let observed = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value.fence;
        let winner = s.store.reclaim(&observed, &holder("b", "1"), t.long_ttl).await?;
        let winner = winner.acquired().ok_or_else(|| crate::CaseError::Failed("first reclaim refused".into()))?;
        let late = s.store.reclaim(&observed, &holder("c", "1"), t.long_ttl).await?;
        match late {
            Claim::Busy(record) => ensure!(record.is(&winner.fence), "busy with the wrong record: {record:?}"),
            Claim::Acquired(g) => ensure!(false, "a stale reclaim cleared a newer live grant: {g:?}"),
        }
        // A fence that never existed does not match either.
        let invented = Fence { token: FencingToken(winner.token().0 + 1000), ..winner.fence.clone() };
        let outcome = s.store.reclaim(&invented, &holder("c", "1"), t.long_ttl).await?;
        ensure!(outcome.busy().is_some(), "reclaim matched a fence that was never granted: {outcome:?}");
        Ok(())
    }

    /// A reclaim retried by its winner (reply lost) gets the same grant back, not a new token.
    #[rule(ClaimOwnGrant)]
    async fn reclaim_retry_by_the_winner_keeps_token(s) {
        let t = s.timing();
        let k = key("reclaim/retry");
        let observed = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value.fence;
        let b = holder("b", "1");
        let first = s.store.reclaim(&observed, &b, t.long_ttl).await?.acquired();
        let retry = s.store.reclaim(&observed, &b, t.long_ttl).await?.acquired();
        match (first, retry) {
            (Some(first), Some(retry)) => ensure!(retry.token() == first.token() && !retry.fresh, "retry changed the grant: {first:?} then {retry:?}"),
            other => ensure!(false, "reclaim and its retry must both be acquired: {other:?}"),
        }
        Ok(())
    }

    /// Reclaim of a key whose grant has ended acquires it like a claim, with a higher token.
    #[rule(ReclaimComparesAndSwaps)]
    async fn reclaim_of_a_free_key_acquires(s) {
        let t = s.timing();
        let k = key("reclaim/free");
        let observed = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value.fence;
        s.store.release(&observed).await?;
        let outcome = s.store.reclaim(&observed, &holder("b", "1"), t.long_ttl).await?;
        let grant = outcome.acquired().ok_or_else(|| crate::CaseError::Failed("reclaim of a free key was busy".into()))?;
        ensure!(grant.token() > observed.token, "token {} not above {}", grant.token(), observed.token);
        Ok(())
    }
}
