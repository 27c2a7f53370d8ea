//! Inspect: the live record, none, or a corrupt-record error naming the key.

use std::time::Duration;

use lease_core::{Claim, LeaseError, LeaseKey};
use tokio::time::Instant;

use crate::check::{acquire, holder, key};
use crate::{CaseError, ensure};

cases! {
    /// Inspect of a key never claimed is none.
    #[rule(InspectShowsTheLiveGrant)]
    async fn inspect_of_a_free_key_is_none(s) {
        let record = s.store.inspect(&key("inspect/never")).await?;
        ensure!(record.is_none(), "a key never claimed shows {record:?}");
        Ok(())
    }

    /// Inspect shows the live grant's holder, token, and time left (positive, at most the TTL granted).
    #[rule(InspectShowsTheLiveGrant)]
    async fn inspect_shows_holder_token_and_time_left(s) {
        let t = s.timing();
        let (k, a) = (key("inspect/live"), holder("a", "1"));
        let grant = acquire(&*s.store, &k, &a, t.long_ttl).await?.value;
        let record = s.store.inspect(&k).await?.ok_or_else(|| CaseError::Failed("no record for a live grant".into()))?;
        ensure!(record.key == k && record.holder == a && record.token == grant.token(), "wrong record {record:?} for {grant:?}");
        ensure!(!record.remaining.is_zero() && record.remaining <= grant.ttl, "time left {:?} outside (0, {:?}]", record.remaining, grant.ttl);
        Ok(())
    }

    /// Once inspect shows a key free, its grant has ended: the holder's renewal is refused with Lost, check refuses the fence, and another holder's claim is granted fresh. A store that rounds time left down to nothing, or reads the end from a clock other than the one that deletes the grant, shows a free key its holder can still renew.
    #[rule(InspectShowsTheLiveGrant)]
    async fn a_key_inspect_shows_free_is_ended(s) {
        let t = s.timing();
        let (k, a, b) = (key("inspect/free-means-ended"), holder("a", "1"), holder("b", "1"));
        let claimed = acquire(&*s.store, &k, &a, t.ttl).await?;
        let fence = claimed.value.fence.clone();
        // Generous: how soon the grant ends is other cases' concern.
        let give_up = claimed.replied + claimed.value.ttl + t.slack + Duration::from_secs(2);
        loop {
            let asked = Instant::now();
            if s.store.inspect(&k).await?.is_none() {
                break;
            }
            ensure!(asked < give_up, "the grant still shows when inspected at {}, claimed at {} for {:?}", s.at(asked), s.at(claimed.sent), claimed.value.ttl);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let shown_free = claimed.sent.elapsed();
        match s.store.renew(&fence, t.ttl).await {
            Err(LeaseError::Lost { .. }) => {}
            other => ensure!(false, "inspect showed the key free {shown_free:?} after the claim, yet renewing its grant gave {other:?}"),
        }
        ensure!(!s.store.check(&fence).await?, "inspect showed the key free, yet check accepts its fence");
        let next = s.store.claim(&k, &b, t.ttl).await?;
        ensure!(matches!(&next, Claim::Acquired(g) if g.fresh), "inspect showed the key free, yet another holder's claim gave {next:?}");
        Ok(())
    }

    /// A record that cannot be parsed is an error naming the key — distinct from none.
    #[needs(CorruptRecord)]
    #[rule(InspectShowsTheLiveGrant)]
    async fn inspect_reports_a_corrupt_record(s) {
        let k = key("inspect/corrupt");
        s.hooks.plant_corrupt_record(&k).await.map_err(crate::hooks::hook_failed(crate::Hook::CorruptRecord))?;
        match s.store.inspect(&k).await {
            Err(LeaseError::Corrupt { key, .. }) => ensure!(key == k, "the error names {key}, not {k}"),
            other => ensure!(false, "inspect of a corrupt record gave {other:?}"),
        }
        Ok(())
    }

    /// Keys are stored exactly: escaped segments, non-ASCII text and 512-byte keys come back as they went in, and keys that share a prefix do not collide.
    #[rule(NamesAreExact)]
    async fn keys_are_stored_exactly(s) {
        let t = s.timing();
        let a = holder("a", "1");
        let long = "k".repeat(lease_core::MAX_KEY_LEN);
        let keys = [
            LeaseKey::from_segments(["with space", "and/slash", "100%"]).expect("valid"),
            key("ünïcødé/日本/🔒"),
            key(&long),
            key("prefix"),
            key("prefix/child"),
            key("a:b{c}"),
        ];
        for k in &keys {
            acquire(&*s.store, k, &a, t.long_ttl).await?;
        }
        for k in &keys {
            let record = s.store.inspect(k).await?;
            ensure!(record.as_ref().is_some_and(|r| r.key == *k), "inspect({k}) gave {record:?}");
        }
        Ok(())
    }
}
