//! List: the live grants and the markers under a prefix, paged.

use std::collections::BTreeMap;

use lease_core::{Cursor, LeaseKey, LeaseStore, Listed, Page};

use crate::check::{acquire, holder, key};
use crate::{CaseError, ensure};

/// Pages a listing may take before the cursor counts as never ending.
const MAX_PAGES: usize = 1000;

fn never_ends() -> CaseError {
    CaseError::Failed(format!("the listing did not end within {MAX_PAGES} pages"))
}

/// Every marker entry of every page under `prefix`, `limit` at a time.
async fn all_markers(
    store: &dyn LeaseStore,
    prefix: &LeaseKey,
    limit: usize,
) -> Result<Vec<(LeaseKey, String)>, CaseError> {
    let mut entries = Vec::new();
    let mut cursor: Option<Cursor> = None;
    for _ in 0..MAX_PAGES {
        let Page {
            entries: found,
            next,
        } = store.list_markers(prefix, cursor.as_ref(), limit).await?;
        entries.extend(found);
        match next {
            None => return Ok(entries),
            Some(next) => cursor = Some(next),
        }
    }
    Err(never_ends())
}

/// The held entries of a whole listing under `prefix`, by key text.
async fn listed(
    store: &dyn LeaseStore,
    prefix: &LeaseKey,
    limit: usize,
) -> Result<BTreeMap<String, Listed>, CaseError> {
    let mut entries = Vec::new();
    let mut cursor: Option<Cursor> = None;
    let mut ended = false;
    for _ in 0..MAX_PAGES {
        let Page {
            entries: found,
            next,
        } = store.list(prefix, cursor.as_ref(), limit).await?;
        entries.extend(found);
        match next {
            None => {
                ended = true;
                break;
            }
            Some(next) => cursor = Some(next),
        }
    }
    if !ended {
        return Err(never_ends());
    }
    let mut by_key = BTreeMap::new();
    for entry in entries {
        ensure!(
            entry.key().is_under(prefix),
            "listing {prefix} gave {}, which is not under it",
            entry.key()
        );
        if let Some(earlier) = by_key.insert(entry.key().as_str().to_owned(), entry.clone()) {
            // A key may repeat across pages; it must say the same.
            ensure!(
                earlier == entry,
                "{} was listed twice, differently: {earlier:?} and {entry:?}",
                entry.key()
            );
        }
    }
    Ok(by_key)
}

cases! {
    /// Listing a prefix shows every live grant on it and below it — with holder, token and time left — and nothing else: not look-alike keys beside it (`a` lists `a` and `a/…`, never `ab`), not released grants, not markers.
    #[rule(ListShowsLiveGrants)]
    async fn list_shows_live_grants_under_a_prefix(s) {
        let t = s.timing();
        let (a, b) = (holder("a", "1"), holder("b", "1"));
        let on = acquire(&*s.store, &key("list/shows/a"), &a, t.long_ttl).await?.value;
        let below = acquire(&*s.store, &key("list/shows/a/b"), &b, t.long_ttl).await?.value;
        let escaped_key = LeaseKey::from_segments(["list", "shows", "a", "with space/and slash"])?;
        let escaped = acquire(&*s.store, &escaped_key, &a, t.long_ttl).await?.value;
        let released = acquire(&*s.store, &key("list/shows/a/released"), &a, t.long_ttl).await?.value;
        s.store.release(&released.fence).await?;
        acquire(&*s.store, &key("list/shows/ab"), &a, t.long_ttl).await?;
        acquire(&*s.store, &key("list/shows"), &a, t.long_ttl).await?;
        s.store.put_marker(&key("list/shows/a/marked"), "poison").await?;
        let found = listed(&*s.store, &key("list/shows/a"), 100).await?;
        let names: Vec<&str> = found.keys().map(String::as_str).collect();
        let mut expected = vec![on.fence.key.as_str(), below.fence.key.as_str(), escaped.fence.key.as_str()];
        expected.sort();
        ensure!(names == expected, "listing list/shows/a gave {names:?}, not {expected:?}");
        for grant in [&on, &below, &escaped] {
            match found.get(grant.fence.key.as_str()) {
                Some(Listed::Held(record)) => {
                    ensure!(record.is(&grant.fence), "{} is listed as {record:?}, not {}", grant.fence.key, grant.fence);
                    ensure!(record.remaining <= grant.ttl && !record.remaining.is_zero(), "{} is listed with {:?} left of {:?}", grant.fence.key, record.remaining, grant.ttl);
                }
                other => ensure!(false, "{} is listed as {other:?}", grant.fence.key),
            }
        }
        Ok(())
    }

    /// Grants that expired are not listed.
    #[rule(ListShowsLiveGrants)]
    async fn list_leaves_out_expired_grants(s) {
        let t = s.timing();
        let short = acquire(&*s.store, &key("list/expired/short"), &holder("a", "1"), t.ttl).await?;
        let long = acquire(&*s.store, &key("list/expired/long"), &holder("a", "1"), t.long_ttl).await?.value;
        t.sleep_past_expiry(short.replied, short.value.ttl).await;
        let found = listed(&*s.store, &key("list/expired"), 100).await?;
        let names: Vec<&str> = found.keys().map(String::as_str).collect();
        ensure!(names == [long.fence.key.as_str()], "after one grant expired, the listing gave {names:?}");
        Ok(())
    }

    /// A corrupt record is listed as corrupt, beside the live grants, never as free or held.
    #[needs(CorruptRecord)]
    #[rule(ListShowsLiveGrants)]
    async fn list_reports_corrupt_records(s) {
        let t = s.timing();
        let k = key("list/corrupt/bad");
        s.hooks.plant_corrupt_record(&k).await.map_err(crate::hooks::hook_failed(crate::Hook::CorruptRecord))?;
        acquire(&*s.store, &key("list/corrupt/good"), &holder("a", "1"), t.long_ttl).await?;
        let found = listed(&*s.store, &key("list/corrupt"), 100).await?;
        match found.get(k.as_str()) {
            Some(Listed::Corrupt { key, .. }) => ensure!(*key == k, "the corrupt entry names {key}"),
            other => ensure!(false, "a corrupt record is listed as {other:?}"),
        }
        ensure!(matches!(found.get("list/corrupt/good"), Some(Listed::Held(_))), "the live grant beside it is missing: {found:?}");
        Ok(())
    }

    /// Paging through a listing a few entries at a time shows every live grant and ends.
    #[rule(ListShowsLiveGrants)]
    async fn list_pages_through_every_grant(s) {
        let t = s.timing();
        let mut expected = Vec::new();
        for i in 0..37 {
            let grant = acquire(&*s.store, &key(&format!("list/pages/{i:02}")), &holder("a", "1"), t.long_ttl).await?.value;
            expected.push(grant.fence.key.as_str().to_owned());
        }
        expected.sort();
        for limit in [1, 5, 16] {
            let found = listed(&*s.store, &key("list/pages"), limit).await?;
            let names: Vec<String> = found.keys().cloned().collect();
            ensure!(names == expected, "paging {limit} at a time gave {} keys: {names:?}", names.len());
        }
        Ok(())
    }

    /// Listing markers shows every marker set on a prefix and below it, with its value, and no lease.
    #[rule(ListShowsLiveGrants)]
    async fn list_markers_shows_markers_under_a_prefix(s) {
        let t = s.timing();
        s.store.put_marker(&key("list/markers/a"), "one").await?;
        s.store.put_marker(&key("list/markers/a/b"), "two").await?;
        s.store.put_marker(&key("list/markers/ab"), "beside").await?;
        s.store.put_marker(&key("list/markers/a/cleared"), "gone").await?;
        s.store.delete_marker(&key("list/markers/a/cleared"), "gone").await?;
        acquire(&*s.store, &key("list/markers/a/leased"), &holder("a", "1"), t.long_ttl).await?;
        let prefix = key("list/markers/a");
        let mut entries = all_markers(&*s.store, &prefix, 1).await?;
        for (k, _) in &entries {
            ensure!(k.is_under(&prefix), "listing markers under {prefix} gave {k}");
        }
        entries.sort();
        entries.dedup();
        let expected = vec![(key("list/markers/a"), "one".to_owned()), (key("list/markers/a/b"), "two".to_owned())];
        ensure!(entries == expected, "listing markers gave {entries:?}, not {expected:?}");
        Ok(())
    }

    /// A key live for a whole listing shows up on some page even while other keys come and go between pages, and no page holds more entries than asked.
    #[rule(ListShowsLiveGrants)]
    async fn list_keeps_steady_keys_while_others_come_and_go(s) {
        let t = s.timing();
        let a = holder("a", "1");
        let prefix = key("list/churn");
        let mut steady = Vec::new();
        let mut coming = Vec::new();
        for i in 0..30 {
            let grant = acquire(&*s.store, &key(&format!("list/churn/{i:02}")), &a, t.long_ttl).await?.value;
            // Every third key goes away during the listing.
            if i % 3 == 0 { coming.push(grant) } else { steady.push(grant.fence.key.as_str().to_owned()) }
        }
        // Ended earliest first: keys already listed, before the cursor.
        coming.reverse();
        let (mut seen, mut cursor, mut pages) = (Vec::new(), None::<Cursor>, 0);
        loop {
            let page = s.store.list(&prefix, cursor.as_ref(), 4).await?;
            ensure!(page.entries.len() <= 4, "a page asked for 4 entries held {}", page.entries.len());
            seen.extend(page.entries.iter().map(|e| e.key().as_str().to_owned()));
            // Between pages: a key already listed ends, and a new key comes
            // after the ones still to be listed.
            if let Some(gone) = coming.pop() {
                s.store.release(&gone.fence).await?;
                acquire(&*s.store, &key(&format!("list/churn/9{pages:02}")), &a, t.long_ttl).await?;
            }
            pages += 1;
            match page.next {
                Some(next) if pages < MAX_PAGES => cursor = Some(next),
                Some(_) => return Err(never_ends()),
                None => break,
            }
        }
        let missing: Vec<_> = steady.iter().filter(|k| !seen.contains(k)).collect();
        ensure!(missing.is_empty(), "keys live for the whole listing were not listed: {missing:?} (paged 4 at a time while keys came and went)");
        Ok(())
    }

    /// A prefix matches whole segments as the keys were built: a segment holding an escaped `/` is one segment, never the two it looks like; and a listed grant shows the time left of its latest renewal.
    #[rule(ListShowsLiveGrants)]
    async fn list_matches_escaped_segments_and_shows_renewed_time_left(s) {
        let t = s.timing();
        let a = holder("a", "1");
        let escaped = LeaseKey::from_segments(["list", "esc", "a/b", "x"]).expect("valid");
        let nested = key("list/esc/a/b/y");
        acquire(&*s.store, &escaped, &a, t.long_ttl).await?;
        // Shorter than the renewal to come, so a stale time left shows.
        let claimed = acquire(&*s.store, &nested, &a, t.steady_ttl).await?;
        let live_until = claimed.sent + claimed.value.ttl;
        let under_escaped = listed(&*s.store, &LeaseKey::from_segments(["list", "esc", "a/b"]).expect("valid"), 10).await?;
        ensure!(under_escaped.keys().eq([escaped.as_str()]), "listing the escaped segment a%2Fb gave {:?}", under_escaped.keys().collect::<Vec<_>>());
        let under_path = listed(&*s.store, &key("list/esc/a"), 10).await?;
        ensure!(under_path.keys().eq([nested.as_str()]), "listing list/esc/a gave {:?}, not only {nested}", under_path.keys().collect::<Vec<_>>());
        let sent = tokio::time::Instant::now();
        let renewed = match s.store.renew(&claimed.value.fence, t.long_ttl).await {
            Ok(renewed) => renewed,
            Err(e) => return Err(s.broken_unless_late(&format!("renewing the live grant gave {e}"), tokio::time::Instant::now(), live_until)),
        };
        let found = listed(&*s.store, &key("list/esc/a"), 10).await?;
        let Some(Listed::Held(record)) = found.get(nested.as_str()) else {
            return Err(CaseError::Failed(format!("the renewed grant is not listed: {found:?}")));
        };
        let step = s.store.capabilities().ttl_granularity;
        ensure!(record.remaining + sent.elapsed() + step >= renewed.ttl, "after a renewal for {:?}, the listing shows {:?} left", renewed.ttl, record.remaining);
        Ok(())
    }
}
