//! Memory: what a backend keeps stays O(live + recently ended) grants.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use tokio::time::Instant;

use crate::check::{acquire, holder, key};
use crate::{CaseError, ensure};

/// Keys used once per batch, and batches: a lazy sweep may keep about
/// twice the grants live at once (a quarter of a batch, plus those in
/// flight); a record left per expired key grows past a batch by the end.
const PER_BATCH: usize = 200;
const BATCHES: usize = 6;

cases! {
    /// Nothing grows forever per key ever used: after many keys are each claimed once and ended (three in four released, the rest expired), and the declared record retention has passed, the backend keeps fewer records than one batch of keys (a sixth of those used).
    #[needs(StoredRecords)]
    #[rule(MemoryStaysBounded)]
    async fn records_stay_bounded_by_live_and_recent_grants(s) {
        let t = s.timing();
        let caps = s.store.capabilities();
        let run = rand::random::<u32>();
        let a = holder("a", "1");
        let live = acquire(&*s.store, &key(&format!("records/{run}/live")), &a, t.long_ttl).await?;
        for batch in 0..BATCHES {
            let keys = (0..PER_BATCH).map(|i| key(&format!("records/{run}/{batch}/{i}")));
            futures::stream::iter(keys.enumerate())
                .map(|(i, k)| {
                    let (store, a) = (&s.store, &a);
                    async move {
                        let grant = acquire(&**store, &k, a, t.ttl).await?.value;
                        if i % 4 != 0 {
                            store.release(&grant.fence).await?;
                        }
                        Ok::<_, CaseError>(())
                    }
                })
                .buffer_unordered(16)
                .try_collect::<Vec<()>>()
                .await?;
            // Let the batch end, as keys used once do.
            tokio::time::sleep(t.ttl + t.slack).await;
        }
        tokio::time::sleep_until(Instant::now() + caps.record_retention + Duration::from_millis(100)).await;
        let kept = s.hooks.stored_records().await.map_err(crate::hooks::hook_failed(crate::Hook::StoredRecords))?;
        let used = PER_BATCH * BATCHES;
        ensure!(kept < PER_BATCH, "{kept} records are kept after {used} keys were each used once and ended (one grant is live)");
        s.expect_live(&*s.store, &live.value.fence, live.sent + live.value.ttl, "the live grant did not survive").await?;
        Ok(())
    }
}
