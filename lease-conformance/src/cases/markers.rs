//! Markers: TTL-less values, put if absent or equal, delete only if equal.

use lease_core::LeaseError;

use crate::check::{acquire, holder, key};
use crate::{CaseError, ensure};

cases! {
    /// Putting a marker succeeds when it is absent or already equal, and fails with the existing value when it differs.
    #[rule(MarkersAreIfAbsent)]
    async fn marker_put_is_if_absent_or_equal(s) {
        let k = key("marker/put");
        s.store.put_marker(&k, "op-1").await?;
        s.store.put_marker(&k, "op-1").await?;
        match s.store.put_marker(&k, "op-2").await {
            Err(LeaseError::Conflict { key, existing }) => ensure!(key == k && existing == "op-1", "conflict names {key}/{existing:?}"),
            other => ensure!(false, "a different value was accepted: {other:?}"),
        }
        let value = s.store.get_marker(&k).await?;
        ensure!(value.as_deref() == Some("op-1"), "marker holds {value:?}");
        Ok(())
    }

    /// Deleting a marker needs the equal value; an absent marker is fine; a different value is a conflict that deletes nothing.
    #[rule(MarkersAreIfAbsent)]
    async fn marker_delete_only_with_the_equal_value(s) {
        let k = key("marker/delete");
        ensure!(!s.store.delete_marker(&k, "x").await?, "deleting an absent marker said it deleted");
        s.store.put_marker(&k, "op-1").await?;
        ensure!(matches!(s.store.delete_marker(&k, "op-2").await, Err(LeaseError::Conflict { .. })), "delete with another value was not a conflict");
        ensure!(s.store.get_marker(&k).await?.as_deref() == Some("op-1"), "delete with another value removed the marker");
        ensure!(s.store.delete_marker(&k, "op-1").await?, "delete with the equal value deleted nothing");
        ensure!(s.store.get_marker(&k).await?.is_none(), "marker survived its delete");
        Ok(())
    }

    /// Markers have no TTL and live apart from leases: the same key can name a lease and a marker.
    #[rule(MarkersAreIfAbsent)]
    async fn markers_do_not_expire_or_collide_with_leases(s) {
        let t = s.timing();
        let k = key("marker/apart");
        s.store.put_marker(&k, "poison").await?;
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.ttl).await?;
        t.sleep_past_expiry(grant.replied, grant.value.ttl).await;
        ensure!(s.store.get_marker(&k).await?.as_deref() == Some("poison"), "the marker expired or was overwritten");
        Ok(())
    }

    /// Marker values up to the declared size limit are kept byte for byte; larger ones are refused before any write.
    #[rule(MarkersAreIfAbsent)]
    async fn marker_values_are_kept_exactly(s) {
        let caps = s.store.capabilities();
        let k = key("marker/value");
        let value = "é\"'\\ {}[]%\n".repeat(8);
        s.store.put_marker(&k, &value).await?;
        ensure!(s.store.get_marker(&k).await?.as_deref() == Some(value.as_str()), "value changed in the store");
        let big = key("marker/big");
        match s.store.put_marker(&big, &"x".repeat(caps.max_value_len + 1)).await {
            Err(LeaseError::InvalidValue { .. }) => {}
            other => return Err(CaseError::Failed(format!("an oversized marker gave {other:?}"))),
        }
        ensure!(s.store.get_marker(&big).await?.is_none(), "the oversized marker was written");
        Ok(())
    }

    /// Markers never expire: one put is still there seconds later, through a lease on the same key being claimed, released and expiring.
    #[rule(MarkersAreIfAbsent)]
    async fn markers_outlive_seconds_and_leases(s) {
        let t = s.timing();
        let k = key("marker/lasting");
        s.store.put_marker(&k, "poisoned").await?;
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(5).max(t.steady_ttl * 2);
        let grant = acquire(&*s.store, &k, &holder("a", "1"), t.ttl).await?.value;
        s.store.release(&grant.fence).await?;
        acquire(&*s.store, &k, &holder("b", "1"), t.ttl).await?;
        tokio::time::sleep_until(until).await;
        let value = s.store.get_marker(&k).await?;
        ensure!(value.as_deref() == Some("poisoned"), "seconds later the marker holds {value:?}");
        Ok(())
    }
}
