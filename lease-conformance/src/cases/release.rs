//! Release: idempotent, and never touches a newer grant.

use crate::check::{acquire, holder, key};
use crate::ensure;

cases! {
    /// Release ends the live grant at once: another holder can claim immediately.
    #[rule(ReleaseOnlyTheCurrentGrant)]
    async fn release_frees_the_key(s) {
        let t = s.timing();
        let k = key("release/frees");
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        ensure!(s.store.release(&grant.fence).await?, "release of the live grant said it released nothing");
        ensure!(s.store.inspect(&k).await?.is_none(), "released key still shows a grant");
        acquire(&*s.store, &k, &holder("b", "1"), t.long_ttl).await?;
        Ok(())
    }

    /// Release is idempotent: a second release succeeds and says it released nothing.
    #[rule(ReleaseOnlyTheCurrentGrant)]
    async fn release_is_idempotent(s) {
        let t = s.timing();
        let k = key("release/twice");
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        ensure!(s.store.release(&grant.fence).await?, "first release released nothing");
        ensure!(!s.store.release(&grant.fence).await?, "second release claims to have released something");
        Ok(())
    }

    /// Release with an old fence never clears a newer grant.
    #[rule(ReleaseOnlyTheCurrentGrant)]
    async fn release_never_clears_a_newer_grant(s) {
        let t = s.timing();
        let k = key("release/newer");
        let old = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        s.store.release(&old.fence).await?;
        let newer = acquire(&*s.store, &k, &holder("a", "1"), t.long_ttl).await?.value;
        ensure!(!s.store.release(&old.fence).await?, "a stale release reported success");
        ensure!(s.store.check(&newer.fence).await?, "a stale release (same holder, old token) cleared the newer grant");
        let taken = s.store.reclaim(&newer.fence, &holder("b", "1"), t.long_ttl).await?.acquired();
        let taken = taken.ok_or_else(|| crate::CaseError::Failed("reclaim refused".into()))?;
        ensure!(!s.store.release(&newer.fence).await?, "a superseded release reported success");
        ensure!(s.store.check(&taken.fence).await?, "a superseded holder's release cleared the newer grant");
        Ok(())
    }

    /// Release of an expired grant releases nothing.
    #[rule(ReleaseOnlyTheCurrentGrant)]
    async fn release_of_an_expired_grant_releases_nothing(s) {
        let t = s.timing();
        let k = key("release/expired");
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.ttl).await?;
        t.sleep_past_expiry(grant.replied, grant.value.ttl).await;
        ensure!(!s.store.release(&grant.value.fence).await?, "released an expired grant");
        Ok(())
    }
}
