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
        s.hooks.plant_corrupt_record(&k).await.map_err(crate::cases::hook_failed(crate::Hook::CorruptRecord))?;
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
}
