//! Renew: extend the live grant, keeping its token; refuse everything else.

use std::time::Duration;

use lease_core::{Fence, Holder, LeaseError};
use tokio::time::Instant;

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
    #[rule(RenewExtendsTheLiveGrant)]
    async fn renew_keeps_token_and_extends(s) {
        let t = s.timing();
        let k = key("renew/extend");
        let first = acquire(&*s.store, &k, &holder("a", "1"), t.ttl).await?;
        let first_end = first.sent + first.value.ttl;
        tokio::time::sleep_until(first.sent + t.ttl * 3 / 4).await;
        let sent = Instant::now();
        let renewed = s.store.renew(&first.value.fence, t.ttl).await;
        let replied = Instant::now();
        let renewed = match renewed {
            Ok(renewed) => renewed,
            Err(e) => return Err(s.broken_unless_late(&format!("renewing the live grant gave {e}"), replied, first_end)),
        };
        ensure!(renewed.fence == first.value.fence, "renewal changed the fence: {renewed:?}");
        ensure!(!renewed.fresh, "a renewal is not fresh");
        s.deadline_is_from_sending(&renewed, sent, replied)?;
        ensure!(renewed.ttl >= t.ttl, "renewal granted {:?}, less than the {:?} asked for", renewed.ttl, t.ttl);
        // Past the first grant's certain end, the renewed one is still live.
        tokio::time::sleep_until(first.replied + t.ttl + t.slack + Duration::from_millis(20)).await;
        s.expect_live(&*s.store, &first.value.fence, sent + renewed.ttl, "past the first grant's end, the renewal did not extend it").await
    }

    /// Renewal never revives an expired grant, even when nobody claimed the key since.
    #[rule(RenewRefusesAllElse)]
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
    #[rule(RenewRefusesAllElse)]
    async fn renew_refuses_a_released_grant(s) {
        let t = s.timing();
        let k = key("renew/released");
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        s.store.release(&grant.fence).await?;
        expect_lost("a released grant", s.store.renew(&grant.fence, t.long_ttl).await)
    }

    /// Renewal of a superseded grant is refused with Lost carrying the newer record, which stays untouched.
    #[rule(RenewRefusesAllElse)]
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
    #[rule(RenewRefusesAllElse)]
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

    /// A batch renewal answers every fence as `renew` would, in order, each on its own: live grants renewed with their own TTL and deadline; released, superseded, expired and unknown fences refused with Lost (the superseded one carrying the newer record); an invalid TTL refused with InvalidTtl; and none of the refusals disturbs the others.
    #[rule(RenewManyAnswersEach)]
    async fn renew_many_answers_each_fence_as_renew_would(s) {
        let t = s.timing();
        let (a, b) = (holder("a", "1"), holder("b", "1"));
        let expired = acquire(&*s.store, &key("many/expired"), &a, t.ttl).await?;
        let live = acquire(&*s.store, &key("many/live"), &a, t.long_ttl).await?.value;
        let released = acquire(&*s.store, &key("many/released"), &a, t.long_ttl).await?.value;
        s.store.release(&released.fence).await?;
        let old = acquire(&*s.store, &key("many/superseded"), &a, t.long_ttl).await?.value;
        let newer = s.store.reclaim(&old.fence, &b, t.long_ttl).await?.acquired();
        let newer = newer.ok_or_else(|| CaseError::Failed("reclaim refused".into()))?;
        let other = acquire(&*s.store, &key("many/other-live"), &b, t.long_ttl).await?.value;
        let unknown = Fence { token: lease_core::FencingToken(live.token().0 + 1_000_000), key: key("many/never-claimed"), ..live.fence.clone() };
        t.sleep_past_expiry(expired.replied, expired.value.ttl).await;
        let batch = vec![
            (live.fence.clone(), t.long_ttl),
            (released.fence.clone(), t.long_ttl),
            (old.fence.clone(), t.long_ttl),
            (expired.value.fence.clone(), t.long_ttl),
            (unknown.clone(), t.long_ttl),
            (other.fence.clone(), t.ttl),
            (other.fence.clone(), std::time::Duration::ZERO),
        ];
        let sent = Instant::now();
        let results = s.store.renew_many(&batch).await;
        let replied = Instant::now();
        ensure!(results.len() == batch.len(), "{} results for a batch of {}", results.len(), batch.len());
        let mut results = results.into_iter();
        let mut next = || results.next().expect("counted");
        match next() {
            Ok(grant) => {
                ensure!(grant.fence == live.fence && !grant.fresh, "the live grant came back as {grant:?}");
                ensure!(grant.ttl >= t.long_ttl, "renewed for {:?}, not the {:?} asked", grant.ttl, t.long_ttl);
                s.deadline_is_from_sending(&grant, sent, replied)?;
            }
            Err(e) => ensure!(false, "renewing the live grant in a batch failed: {e}"),
        }
        expect_lost("a released grant in a batch", next())?;
        match next() {
            Err(LeaseError::Lost { current, .. }) => ensure!(current.as_deref().is_some_and(|r| r.is(&newer.fence)), "Lost should carry the newer record, not {current:?}"),
            other => ensure!(false, "renewing a superseded grant in a batch gave {other:?}"),
        }
        expect_lost("an expired grant in a batch", next())?;
        expect_lost("a fence never granted, in a batch", next())?;
        match next() {
            Ok(grant) => ensure!(grant.fence == other.fence && grant.ttl >= t.ttl && grant.ttl < t.long_ttl, "the second live grant, renewed for {:?}, came back as {grant:?}", t.ttl),
            Err(e) => ensure!(false, "renewing the second live grant in a batch failed: {e}"),
        }
        match next() {
            Err(LeaseError::InvalidTtl { .. }) => {}
            other => ensure!(false, "a zero TTL in a batch gave {other:?}, not InvalidTtl"),
        }
        ensure!(s.store.check(&live.fence).await?, "the live grant is gone after the batch");
        ensure!(s.store.check(&newer.fence).await?, "the newer grant was disturbed by the batch");
        ensure!(s.store.check(&other.fence).await?, "the second live grant is gone after the batch");
        ensure!(s.store.inspect(&key("many/expired")).await?.is_none(), "the batch revived an expired grant");
        ensure!(s.store.inspect(&key("many/released")).await?.is_none(), "the batch revived a released grant");
        ensure!(s.store.inspect(&key("many/never-claimed")).await?.is_none(), "the batch created a grant for an unknown fence");
        Ok(())
    }

    /// A batch renewal extends every live grant in it by its TTL from the call: none of them expires at its first deadline.
    #[rule(RenewManyAnswersEach)]
    async fn renew_many_extends_every_live_grant(s) {
        let t = s.timing();
        let a = holder("a", "1");
        let mut grants = Vec::new();
        for i in 0..40 {
            grants.push(acquire(&*s.store, &key(&format!("many/extend/{i}")), &a, t.ttl).await?);
        }
        let (first, last) = (&grants[0], &grants[grants.len() - 1]);
        // Renew three quarters into the first grant's TTL: each grant is
        // certainly live until its own claim was sent + TTL.
        tokio::time::sleep_until(first.sent + t.ttl * 3 / 4).await;
        let batch: Vec<_> = grants.iter().map(|g| (g.value.fence.clone(), t.ttl)).collect();
        let sent = Instant::now();
        let results = s.store.renew_many(&batch).await;
        let replied = Instant::now();
        ensure!(results.len() == batch.len(), "{} results for a batch of {}", results.len(), batch.len());
        for (i, (result, grant)) in results.iter().zip(&grants).enumerate() {
            match result {
                Ok(renewed) => ensure!(renewed.fence == batch[i].0, "renewal {i} of the batch answered for {}", renewed.fence),
                Err(e) => {
                    let what = format!(
                        "renewal {i} of a batch of {} (sent at {}) gave {e}; its grant was claimed at {} for {:?}",
                        batch.len(), s.at(sent), s.at(grant.sent), grant.value.ttl
                    );
                    return Err(s.broken_unless_late(&what, replied, grant.sent + grant.value.ttl));
                }
            }
        }
        tokio::time::sleep_until(last.replied + t.ttl + t.slack + Duration::from_millis(20)).await;
        for (i, (fence, _)) in batch.iter().enumerate() {
            let what = format!("past its first deadline, grant {i} renewed by the batch sent at {} is gone", s.at(sent));
            s.expect_live(&*s.store, fence, sent + t.ttl, &what).await?;
        }
        Ok(())
    }

    /// Odd batches are answered as `renew` would answer each entry: an empty batch gets no answers; the same live fence twice is renewed twice; a superseded fence beside the live one of the same key is refused while the live one is renewed; a fence naming another incarnation of the holder is refused and leaves the grant alone.
    #[rule(RenewManyAnswersEach)]
    async fn renew_many_answers_odd_batches_entry_by_entry(s) {
        let t = s.timing();
        let (a, b) = (holder("a", "1"), holder("b", "1"));
        ensure!(s.store.renew_many(&[]).await.is_empty(), "an empty batch got answers");
        let twice = acquire(&*s.store, &key("many/odd/twice"), &a, t.long_ttl).await?.value;
        let old = acquire(&*s.store, &key("many/odd/taken"), &a, t.long_ttl).await?.value;
        let newer = s.store.reclaim(&old.fence, &b, t.long_ttl).await?.acquired();
        let newer = newer.ok_or_else(|| CaseError::Failed("reclaim of a live grant refused".into()))?;
        let forged = Fence { holder: holder("a", "2"), ..twice.fence.clone() };
        let batch = vec![
            (twice.fence.clone(), t.long_ttl),
            (twice.fence.clone(), t.long_ttl),
            (old.fence.clone(), t.long_ttl),
            (newer.fence.clone(), t.long_ttl),
            (forged.clone(), t.long_ttl),
        ];
        let results = s.store.renew_many(&batch).await;
        ensure!(results.len() == batch.len(), "{} results for a batch of {}", results.len(), batch.len());
        for (i, result) in results.iter().enumerate() {
            let expect_ok = matches!(i, 0 | 1 | 3);
            match result {
                Ok(grant) => ensure!(expect_ok && grant.fence == batch[i].0, "entry {i} ({}) was renewed: {grant:?}", batch[i].0),
                Err(LeaseError::Lost { .. }) => ensure!(!expect_ok, "entry {i} ({}) was refused as lost", batch[i].0),
                Err(e) => ensure!(false, "entry {i} ({}) gave {e}", batch[i].0),
            }
        }
        ensure!(s.store.check(&twice.fence).await?, "the grant renewed twice in a batch is gone");
        ensure!(s.store.check(&newer.fence).await?, "the newer grant is gone after the batch");
        ensure!(!s.store.check(&forged).await?, "the forged incarnation's fence checks as live");
        Ok(())
    }
}
