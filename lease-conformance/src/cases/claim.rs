//! Claim: free keys are granted with a new, higher token; live ones are busy.

use lease_core::{Claim, LeaseError};

use crate::check::{Timed, acquire, holder, key, timed_claim};
use crate::hooks::hook_failed;
use crate::{CaseError, Hook, ensure};

cases! {
    /// A claim on a key never claimed is acquired: fresh, with the TTL granted (rounded up, never down), visible to inspect.
    #[rule(ClaimFreeKey)]
    async fn claim_acquires_a_free_key(s) {
        let t = s.timing();
        let (k, a) = (key("claim/free"), holder("a", "1"));
        let timed = acquire(&*s.store, &k, &a, t.ttl).await?;
        let grant = timed.value;
        ensure!(grant.fresh, "a first grant must be fresh: {grant:?}");
        // A later deadline would let the holder act after others may hold it.
        s.deadline_is_from_sending(&grant, timed.sent, timed.replied)?;
        ensure!(grant.fence.holder == a && grant.fence.key == k, "grant names the wrong key/holder: {grant:?}");
        ensure!(grant.ttl >= t.ttl, "granted {:?}, less than the {:?} asked for", grant.ttl, t.ttl);
        let record = s.store.inspect(&k).await?;
        ensure!(record.as_ref().is_some_and(|r| r.is(&grant.fence)), "inspect does not show the grant: {record:?}");
        Ok(())
    }

    /// A live grant makes every other holder's claim busy, with the live record.
    #[rule(ClaimBusyKey)]
    async fn claim_is_busy_while_another_holds(s) {
        let t = s.timing();
        let k = key("claim/busy");
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        match s.store.claim(&k, &holder("b", "1"), t.long_ttl).await? {
            Claim::Busy(record) => ensure!(record.is(&grant.fence), "busy with the wrong record: {record:?}"),
            Claim::Acquired(g) => ensure!(false, "b was granted a key a holds: {g:?}"),
        }
        Ok(())
    }

    /// The same holder id with another incarnation is another holder: busy.
    #[rule(ClaimBusyKey)]
    async fn claim_by_other_incarnation_is_busy(s) {
        let t = s.timing();
        let k = key("claim/incarnation");
        acquire(&*s.store, &k, &holder("w", "boot-1"), t.long_ttl).await?;
        let outcome = s.store.claim(&k, &holder("w", "boot-2"), t.long_ttl).await?;
        ensure!(outcome.busy().is_some(), "a restarted holder inherited the grant: {outcome:?}");
        Ok(())
    }

    /// A claim by the current holder (same id and incarnation) succeeds again with the same token, not fresh, and refreshes the TTL: a claim whose reply was lost can be retried.
    #[rule(ClaimOwnGrant)]
    async fn claim_by_current_holder_keeps_token(s) {
        let t = s.timing();
        let (k, a) = (key("claim/again"), holder("a", "1"));
        let first = acquire(&*s.store, &k, &a, t.ttl).await?;
        tokio::time::sleep_until(first.sent + t.ttl * 3 / 4).await;
        let again = timed_claim(&*s.store, &k, &a, t.ttl).await?;
        // Only while the first grant is certainly live must the re-claim
        // find it; after, a fresh grant is also correct.
        let first_end = first.sent + first.value.ttl;
        let again = match again.value {
            Claim::Acquired(grant) if !grant.fresh && grant.token() == first.value.token() => Timed { value: grant, sent: again.sent, replied: again.replied },
            other => return Err(s.broken_unless_late(&format!("a re-claim by the holder of token {} gave {other:?}, not the same token and not fresh", first.value.token()), again.replied, first_end)),
        };
        // Past the first grant's end, the refreshed one is still live.
        tokio::time::sleep_until(first.replied + t.ttl + t.slack + std::time::Duration::from_millis(20)).await;
        s.expect_live(&*s.store, &again.value.fence, again.sent + again.value.ttl, "past the first grant's end, the re-claim did not refresh the TTL").await
    }

    /// After a release, the next grant on the key gets a higher token.
    #[rule(TokensIncrease)]
    async fn claim_after_release_gets_higher_token(s) {
        let t = s.timing();
        let k = key("claim/after-release");
        let first = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        ensure!(s.store.release(&first.fence).await?, "release of the live grant released nothing");
        let second = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        ensure!(second.fresh, "a grant after release must be fresh");
        ensure!(second.token() > first.token(), "token {} after release is not above {}", second.token(), first.token());
        Ok(())
    }

    /// A grant expires by the store's clock; the next grant gets a higher token.
    #[rule(TokensIncrease)]
    async fn claim_after_expiry_gets_higher_token(s) {
        let t = s.timing();
        let k = key("claim/after-expiry");
        let first = acquire(&*s.store, &k, &holder("a", "1"), t.ttl).await?;
        t.sleep_past_expiry(first.replied, first.value.ttl).await;
        let second = acquire(&*s.store, &k, &holder("b", "1"), t.ttl).await?.value;
        ensure!(second.token() > first.value.token(), "token {} after expiry is not above {}", second.token(), first.value.token());
        Ok(())
    }

    /// A corrupt record counts as no live grant: a claim takes it over, repairing it, with a token above every earlier one.
    #[needs(CorruptRecord)]
    #[rule(ClaimFreeKey)]
    async fn claim_repairs_a_corrupt_record(s) {
        let t = s.timing();
        let k = key("claim/corrupt");
        let before = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        s.hooks.plant_corrupt_record(&k).await.map_err(hook_failed(Hook::CorruptRecord))?;
        let repaired = acquire(&*s.store, &k, &holder("b", "1"), t.long_ttl).await?.value;
        ensure!(repaired.token() > before.token(), "token {} after repair is not above {}", repaired.token(), before.token());
        let record = s.store.inspect(&k).await?;
        ensure!(record.is_some_and(|r| r.is(&repaired.fence)), "the record was not repaired");
        Ok(())
    }

    /// Tokens keep increasing across a server restart that loses the data.
    #[needs(RestartServer)]
    #[rule(TokensIncrease)]
    async fn tokens_increase_across_server_restart(s) {
        let t = s.timing();
        let k = key("claim/restart");
        let before = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        s.hooks.restart_server().await.map_err(hook_failed(Hook::RestartServer))?;
        // The first calls after a restart may meet a reconnecting client.
        let mut last_error = None;
        for _ in 0..50 {
            match timed_claim(&*s.store, &k, &holder("b", "1"), t.long_ttl).await {
                Ok(claimed) => {
                    return match claimed.value {
                        // With persistence the old grant survives: also correct.
                        Claim::Busy(record) => {
                            ensure!(record.is(&before.fence), "after restart, busy with an unknown grant: {record:?}");
                            Ok(())
                        }
                        Claim::Acquired(after) => {
                            ensure!(after.token() > before.token(), "token {} after restart is not above {}", after.token(), before.token());
                            Ok(())
                        }
                    };
                }
                Err(e @ (LeaseError::Backend { .. } | LeaseError::Timeout { .. })) => {
                    last_error = Some(e);
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(CaseError::Failed(format!("the store did not recover from the restart: {last_error:?}")))
    }
}
