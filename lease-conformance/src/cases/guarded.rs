//! Guarded writes: a write that happens only if a fence is still current.

use lease_core::LeaseError;

use crate::check::{acquire, holder, key};
use crate::{CaseError, ensure};

cases! {
    /// A guarded write with the live fence is applied and readable.
    #[rule(GuardedWritesAreFenced)]
    async fn guarded_write_applies_with_the_live_fence(s) {
        let t = s.timing();
        let (k, target) = (key("guarded/lease"), key("guarded/data"));
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        s.store.guarded_write(&grant.fence, &target, b"v1\0bytes").await?;
        s.store.guarded_write(&grant.fence, &target, b"v2").await?;
        let value = s.store.read_guarded(&target).await?;
        ensure!(value.as_deref() == Some(&b"v2"[..]), "read back {value:?}");
        Ok(())
    }

    /// A guarded write with a superseded, released or expired fence is refused with Lost and writes nothing.
    #[rule(GuardedWritesAreFenced)]
    async fn guarded_write_refused_without_the_live_fence(s) {
        let t = s.timing();
        let (k, target) = (key("guarded/refused"), key("guarded/refused-data"));
        let old = acquire(&*s.store, &k, &holder("a", "1"), t.ttl).await?;
        let newer = s.store.reclaim(&old.value.fence, &holder("b", "1"), t.ttl).await?.acquired();
        let newer = newer.ok_or_else(|| CaseError::Failed("reclaim refused".into()))?;
        for (what, fence) in [("superseded", &old.value.fence)] {
            match s.store.guarded_write(fence, &target, b"stale").await {
                Err(LeaseError::Lost { .. }) => {}
                other => return Err(CaseError::Failed(format!("guarded write with a {what} fence gave {other:?}"))),
            }
        }
        s.store.release(&newer.fence).await?;
        ensure!(s.store.guarded_write(&newer.fence, &target, b"released").await.is_err(), "guarded write with a released fence was applied");
        let again = acquire(&*s.store, &k, &holder("c", "1"), t.ttl).await?;
        t.sleep_past_expiry(again.replied, again.value.ttl).await;
        ensure!(s.store.guarded_write(&again.value.fence, &target, b"expired").await.is_err(), "guarded write with an expired fence was applied");
        let value = s.store.read_guarded(&target).await?;
        ensure!(value.is_none(), "a refused guarded write left {value:?}");
        Ok(())
    }
}
