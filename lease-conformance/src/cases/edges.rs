//! Rules at their edges: every operation that takes a TTL validates it,
//! renewals change the TTL either way, time left tracks the grant, holders
//! and keys that look alike stay apart, older tokens of the same holder are
//! refused, and values keep every byte up to the declared limit.

use std::time::Duration;

use lease_core::{Claim, Fence, Holder, LeaseError, LeaseKey, MAX_HOLDER_PART_LEN};
use tokio::time::Instant;

use crate::check::{acquire, holder, key};
use crate::{CaseError, ensure};

/// TTLs the backend must refuse: zero, below the minimum, above the maximum.
fn invalid_ttls(caps: &lease_core::Capabilities) -> Vec<Duration> {
    let step = caps.ttl_granularity.max(Duration::from_millis(1));
    let mut bad = vec![
        Duration::ZERO,
        caps.max_ttl + step,
        caps.max_ttl + Duration::from_nanos(1),
    ];
    if caps.min_ttl > Duration::from_millis(1) {
        bad.push(caps.min_ttl - Duration::from_millis(1));
    }
    bad
}

fn refused(outcome: &Result<impl std::fmt::Debug, LeaseError>, k: &LeaseKey) -> Result<(), String> {
    match outcome {
        Err(LeaseError::InvalidTtl { key, .. }) if key == k => Ok(()),
        Err(LeaseError::InvalidTtl { key, .. }) => Err(format!("the error names {key}, not {k}")),
        other => Err(format!("gave {other:?}")),
    }
}

/// A fence of `holder` with `token` on `key`: forged, or an old one.
fn fence(key: &LeaseKey, holder: &Holder, token: lease_core::FencingToken) -> Fence {
    Fence {
        key: key.clone(),
        holder: holder.clone(),
        token,
    }
}

cases! {
    /// Claim, reclaim and renew each refuse a zero TTL, one below the minimum and one above the maximum with InvalidTtl naming the key, and change nothing; the maximum TTL itself is granted by each.
    #[rule(TtlsAreValidated)]
    async fn every_operation_validates_its_ttl(s) {
        let caps = s.store.capabilities();
        let t = s.timing();
        let (k, a, b) = (key("edges/ttl"), holder("a", "1"), holder("b", "1"));
        let grant = acquire(&*s.store, &k, &a, t.long_ttl).await?.value;
        for ttl in invalid_ttls(&caps) {
            refused(&s.store.claim(&key("edges/ttl-free"), &a, ttl).await, &key("edges/ttl-free")).map_err(|why| CaseError::Failed(format!("claim with TTL {ttl:?} {why}")))?;
            refused(&s.store.reclaim(&grant.fence, &b, ttl).await, &k).map_err(|why| CaseError::Failed(format!("reclaim with TTL {ttl:?} {why}")))?;
            refused(&s.store.renew(&grant.fence, ttl).await, &k).map_err(|why| CaseError::Failed(format!("renew with TTL {ttl:?} {why}")))?;
        }
        ensure!(s.store.inspect(&key("edges/ttl-free")).await?.is_none(), "a refused claim left a grant");
        let record = s.store.inspect(&k).await?;
        ensure!(record.as_ref().is_some_and(|r| r.is(&grant.fence)), "a refused reclaim or renew changed the grant: {record:?}");
        // The maximum is a valid TTL for every operation.
        let renewed = s.store.renew(&grant.fence, caps.max_ttl).await?;
        ensure!(renewed.ttl == caps.max_ttl, "renew with the maximum TTL granted {:?}", renewed.ttl);
        let taken = s.store.reclaim(&grant.fence, &b, caps.max_ttl).await?.acquired();
        ensure!(taken.as_ref().is_some_and(|g| g.ttl == caps.max_ttl), "reclaim with the maximum TTL gave {taken:?}");
        let fresh = acquire(&*s.store, &key("edges/ttl-max"), &a, caps.max_ttl).await?.value;
        ensure!(fresh.ttl == caps.max_ttl, "claim with the maximum TTL granted {:?}", fresh.ttl);
        Ok(())
    }

    /// A renewal sets the TTL from its own request, in either direction: a longer one keeps the grant past the first TTL, a shorter one ends it by the shorter TTL.
    #[rule(RenewExtendsTheLiveGrant)]
    async fn renewal_changes_the_ttl_both_ways(s) {
        let t = s.timing();
        let (k, a) = (key("edges/renew-ttl"), holder("a", "1"));
        let first = acquire(&*s.store, &k, &a, t.ttl).await?;
        let longer = t.ttl + t.slack + t.steady_ttl;
        let sent = Instant::now();
        let renewed = match s.store.renew(&first.value.fence, longer).await {
            Ok(renewed) => renewed,
            Err(e) => return Err(s.broken_unless_late(&format!("renewing the live grant gave {e}"), Instant::now(), first.sent + first.value.ttl)),
        };
        ensure!(renewed.ttl >= longer, "asked {longer:?}, granted {:?}", renewed.ttl);
        t.sleep_past_expiry(first.replied, first.value.ttl).await;
        s.expect_live(&*s.store, &first.value.fence, sent + longer, "past the first TTL, the longer renewal ended with it").await?;
        let longer_end = sent + longer;
        let sent = Instant::now();
        let shorter = match s.store.renew(&first.value.fence, t.ttl).await {
            Ok(renewed) => renewed,
            Err(e) => return Err(s.broken_unless_late(&format!("renewing with a shorter TTL gave {e}"), Instant::now(), longer_end)),
        };
        let replied = Instant::now();
        s.deadline_is_from_sending(&shorter, sent, replied)?;
        t.sleep_past_expiry(replied, shorter.ttl).await;
        let asked = Instant::now();
        ensure!(!s.store.check(&first.value.fence).await?, "a renewal with a shorter TTL kept the longer one: renewed at {} for {:?}, yet live when checked at {}", s.at(sent), shorter.ttl, s.at(asked));
        Ok(())
    }

    /// Time left counts down with the store's clock: right after a claim it is about the TTL granted, and later it is less by about the time passed.
    #[rule(InspectShowsTheLiveGrant)]
    async fn time_left_counts_down(s) {
        let caps = s.store.capabilities();
        let t = s.timing();
        let step = caps.ttl_granularity.max(Duration::from_millis(1));
        let k = key("edges/time-left");
        let claimed = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?;
        let ttl = claimed.value.ttl;
        let first = s.store.inspect(&k).await?.ok_or_else(|| CaseError::Failed("no record for a live grant".into()))?;
        let since = claimed.sent.elapsed();
        ensure!(first.remaining <= ttl && first.remaining + since + step >= ttl, "right after a {ttl:?} claim, time left is {:?}", first.remaining);
        let pause = step.max(Duration::from_millis(300)) * 3 / 2;
        tokio::time::sleep(pause).await;
        let asked = Instant::now();
        let later = s.store.inspect(&k).await?.ok_or_else(|| CaseError::Failed("no record for a live grant".into()))?;
        let passed = asked - claimed.replied;
        ensure!(later.remaining + passed <= ttl + step, "{passed:?} later, time left is still {:?} of {ttl:?}", later.remaining);
        ensure!(later.remaining + claimed.sent.elapsed() + step >= ttl, "{passed:?} later, time left is only {:?} of {ttl:?}", later.remaining);
        Ok(())
    }

    /// Holders are told apart by id and incarnation exactly, whatever they contain: separators, spaces, non-ASCII text, the longest parts allowed, ids that are prefixes of others. A look-alike is busy, and its forged fence is refused by renew, release, check and guarded writes.
    #[rule(NamesAreExact)]
    async fn look_alike_holders_stay_apart(s) {
        let t = s.timing();
        let long = "h".repeat(MAX_HOLDER_PART_LEN);
        let pairs = [
            (("a:b", "c"), ("a", "b:c")),
            (("a#b", "c"), ("a", "b#c")),
            (("a/b", "c"), ("a", "b/c")),
            (("w", "11"), ("w1", "1")),
            (("worker 1", "boot 7"), ("worker", "1 boot 7")),
            (("ünï", "çødé"), ("uni", "code")),
            ((long.as_str(), long.as_str()), (long.as_str(), &long[1..])),
        ];
        for (i, ((id_a, inc_a), (id_b, inc_b))) in pairs.into_iter().enumerate() {
            let first = Holder::new(id_a, inc_a).map_err(|e| CaseError::Failed(e.to_string()))?;
            let second = Holder::new(id_b, inc_b).map_err(|e| CaseError::Failed(e.to_string()))?;
            let k = key(&format!("edges/holders/{i}"));
            let grant = acquire(&*s.store, &k, &first, t.long_ttl).await?.value;
            let outcome = s.store.claim(&k, &second, t.long_ttl).await?;
            ensure!(outcome.busy().is_some_and(|r| r.holder == first), "{second} was treated as {first}: {outcome:?}");
            let forged = fence(&k, &second, grant.token());
            ensure!(matches!(s.store.renew(&forged, t.long_ttl).await, Err(LeaseError::Lost { .. })), "{second} renewed {first}'s grant");
            ensure!(!s.store.check(&forged).await?, "check accepted {second} for {first}'s grant");
            ensure!(matches!(s.store.guarded_write(&forged, &k, b"x").await, Err(LeaseError::Lost { .. })), "{second} wrote with {first}'s grant");
            ensure!(!s.store.release(&forged).await?, "{second} released {first}'s grant");
            let record = s.store.inspect(&k).await?;
            ensure!(record.as_ref().is_some_and(|r| r.is(&grant.fence)), "{first}'s grant changed: {record:?}");
            let again = acquire(&*s.store, &k, &first, t.long_ttl).await?.value;
            ensure!(again.token() == grant.token(), "{first} was not recognised as the holder");
        }
        Ok(())
    }

    /// Keys that look alike once escaped or folded are different leases: a separator and its escape, letter case, composed and decomposed accents, hash-tag braces.
    #[rule(NamesAreExact)]
    async fn look_alike_keys_stay_apart(s) {
        let t = s.timing();
        let keys = [
            key("alike/a/b"),
            LeaseKey::from_segments(["alike", "a/b"]).map_err(|e| CaseError::Failed(e.to_string()))?,
            key("alike/Key"),
            key("alike/key"),
            key("alike/caf\u{e9}"),
            key("alike/cafe\u{301}"),
            key("alike/{tag}x"),
            key("alike/tagx"),
            key("alike/a:b"),
            key("alike/a/b/c"),
        ];
        for (i, k) in keys.iter().enumerate() {
            let h = holder(&format!("holder-{i}"), "1");
            match s.store.claim(k, &h, t.long_ttl).await? {
                Claim::Acquired(grant) => ensure!(grant.fence.key == *k, "claim of {k} granted {}", grant.fence.key),
                Claim::Busy(record) => return Err(CaseError::Failed(format!("{k} is busy with {record:?}: it collides with another key"))),
            }
        }
        for (i, k) in keys.iter().enumerate() {
            let record = s.store.inspect(k).await?;
            ensure!(record.as_ref().is_some_and(|r| r.key == *k && r.holder == holder(&format!("holder-{i}"), "1")), "inspect({k}) gave {record:?}");
        }
        Ok(())
    }

    /// A fence from an older grant of the same holder is not the live grant: check is false, renew and guarded writes are refused, and release releases nothing.
    #[rule(RenewRefusesAllElse)]
    async fn older_grants_of_the_same_holder_are_refused(s) {
        let t = s.timing();
        let (k, a) = (key("edges/older"), holder("a", "1"));
        let old = acquire(&*s.store, &k, &a, t.long_ttl).await?.value;
        ensure!(s.store.release(&old.fence).await?, "release of the live grant released nothing");
        let new = acquire(&*s.store, &k, &a, t.long_ttl).await?.value;
        ensure!(new.token() > old.token(), "token {} after release is not above {}", new.token(), old.token());
        ensure!(!s.store.check(&old.fence).await?, "check accepts the older grant {}", old.fence);
        ensure!(matches!(s.store.renew(&old.fence, t.long_ttl).await, Err(LeaseError::Lost { .. })), "renew accepts the older grant");
        ensure!(matches!(s.store.guarded_write(&old.fence, &k, b"x").await, Err(LeaseError::Lost { .. })), "a guarded write accepts the older grant");
        ensure!(!s.store.release(&old.fence).await?, "release of the older grant released something");
        ensure!(s.store.check(&new.fence).await?, "the newer grant did not survive its older sibling's calls");
        // A token above any handed out is nobody's either.
        let future = fence(&k, &a, lease_core::FencingToken(new.token().0 + 1));
        ensure!(!s.store.check(&future).await?, "check accepts a token never handed out");
        Ok(())
    }

    /// Guarded values keep every byte, from empty to exactly the declared limit (all 256 byte values); one byte more is refused and writes nothing. Markers keep multi-byte text up to the limit.
    #[rule(GuardedWritesAreFenced)]
    async fn values_keep_every_byte_up_to_the_limit(s) {
        let caps = s.store.capabilities();
        let t = s.timing();
        let k = key("edges/values");
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        let full: Vec<u8> = (0..caps.max_value_len).map(|i| (i % 256) as u8).collect();
        for (name, value) in [("empty", Vec::new()), ("binary", vec![0, 255, 0, 10, 13, 0]), ("full", full)] {
            let target = key(&format!("edges/values/{name}"));
            s.store.guarded_write(&grant.fence, &target, &value).await?;
            let back = s.store.read_guarded(&target).await?;
            ensure!(back.as_deref() == Some(&value[..]), "the {name} value ({} bytes) read back as {:?}", value.len(), back.map(|b| b.len()));
        }
        let over = key("edges/values/over");
        match s.store.guarded_write(&grant.fence, &over, &vec![1; caps.max_value_len + 1]).await {
            Err(LeaseError::InvalidValue { .. }) => {}
            other => return Err(CaseError::Failed(format!("a value one byte over the limit gave {other:?}"))),
        }
        ensure!(s.store.read_guarded(&over).await?.is_none(), "the oversized value was written");
        let text: String = "é🔒日".chars().cycle().take(caps.max_value_len).collect::<String>();
        let text: String = text.char_indices().take_while(|(i, c)| i + c.len_utf8() <= caps.max_value_len).map(|(_, c)| c).collect();
        let marker = key("edges/values/marker");
        s.store.put_marker(&marker, &text).await?;
        let back = s.store.get_marker(&marker).await?;
        ensure!(back.as_deref() == Some(text.as_str()), "a {}-byte marker read back as {:?} bytes", text.len(), back.map(|b| b.len()));
        Ok(())
    }

    /// Keys of the longest length allowed that differ only in their last byte are two leases: each is granted, shown, listed and released on its own.
    #[rule(NamesAreExact)]
    async fn longest_keys_sharing_a_prefix_stay_apart(s) {
        let t = s.timing();
        let stem = format!("edges/long/{}", "k".repeat(lease_core::MAX_KEY_LEN - "edges/long/".len() - 1));
        let (one, two) = (key(&format!("{stem}1")), key(&format!("{stem}2")));
        ensure!(one.as_str().len() == lease_core::MAX_KEY_LEN, "the case's key is {} bytes", one.as_str().len());
        let first = acquire(&*s.store, &one, &holder("a", "1"), t.long_ttl).await?.value;
        let second = acquire(&*s.store, &two, &holder("b", "1"), t.long_ttl).await?.value;
        for (k, grant) in [(&one, &first), (&two, &second)] {
            let record = s.store.inspect(k).await?;
            ensure!(record.as_ref().is_some_and(|r| r.is(&grant.fence)), "inspect of the {}-byte key {}…{} shows {record:?}", k.as_str().len(), &k.as_str()[..16], &k.as_str()[k.as_str().len() - 4..]);
        }
        let listed = lease_core::list_all(&*s.store, &key("edges/long")).await?;
        ensure!(listed.len() == 2, "listing the two longest keys gave {} entries", listed.len());
        ensure!(s.store.release(&first.fence).await?, "release of the first longest key released nothing");
        ensure!(s.store.check(&second.fence).await?, "releasing one longest key ended the other");
        Ok(())
    }

    /// A grant at the maximum TTL lasts that long: its time left, shown and listed, is the maximum less the time passed — not cut short by an overflow or a cap below the declared maximum.
    #[rule(TtlsAreValidated)]
    async fn a_grant_at_the_maximum_ttl_lasts_that_long(s) {
        let caps = s.store.capabilities();
        let k = key("edges/max-ttl/held");
        let claimed = acquire(&*s.store, &k, &holder("a", "1"), caps.max_ttl).await?;
        let step = caps.ttl_granularity.max(Duration::from_millis(1));
        let record = s.store.inspect(&k).await?.ok_or_else(|| CaseError::Failed("no record for a live grant".into()))?;
        let short = |remaining: Duration| remaining + claimed.sent.elapsed() + step < caps.max_ttl;
        ensure!(!short(record.remaining), "a grant for the maximum {:?} shows {:?} left", caps.max_ttl, record.remaining);
        let listed = lease_core::list_all(&*s.store, &key("edges/max-ttl")).await?;
        match listed.first() {
            Some(lease_core::Listed::Held(r)) => ensure!(!short(r.remaining), "a grant for the maximum {:?} is listed with {:?} left", caps.max_ttl, r.remaining),
            other => ensure!(false, "the grant at the maximum TTL is listed as {other:?}"),
        }
        let renewed = s.store.renew(&claimed.value.fence, caps.max_ttl).await?;
        ensure!(renewed.ttl == caps.max_ttl, "renewed for the maximum {:?}, granted {:?}", caps.max_ttl, renewed.ttl);
        Ok(())
    }
}
