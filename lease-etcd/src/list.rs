//! Listing: one range read per page, in key order.

use etcd_client::{GetOptions, KeyValue, SortOrder, SortTarget};
use lease_core::{Cursor, LeaseError, LeaseKey, Listed, Op, Page, with_timeout};

use crate::client::{Client, etcd_error};
use crate::record::Found;

impl Client {
    /// Up to `limit` keys of the space `space` under `prefix`, from the
    /// etcd key after `from`, as lease keys, and the cursor of the next page.
    async fn range_page(
        &self,
        op: Op,
        prefix: &LeaseKey,
        space: &str,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<(Vec<(LeaseKey, KeyValue)>, Option<Cursor>), LeaseError> {
        let root = format!("{}/{space}/", self.config.prefix);
        let base = format!("{root}{prefix}");
        // Everything that starts with the prefix's text; keys beside it
        // (`ab` for `a`) are read and left out.
        let mut end = base.clone().into_bytes();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let start = match from {
            // The smallest key after the last one read.
            Some(Cursor(last)) => format!("{last}\0"),
            None => base.clone(),
        };
        let limit = limit.max(1);
        let options = GetOptions::new()
            .with_range(end)
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        let mut kv = self.kv.clone();
        let after = self.call_timeout();
        let response = with_timeout(op, prefix, after, async move {
            kv.get(start, Some(options))
                .await
                .map_err(|e| etcd_error(op, prefix, after, e))
        })
        .await?;
        let next = response
            .more()
            .then(|| response.kvs().last())
            .flatten()
            .and_then(|kv| kv.key_str().ok())
            .map(|last| Cursor(last.to_owned()));
        let found = response
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = LeaseKey::new(kv.key_str().ok()?.strip_prefix(&root)?).ok()?;
                key.is_under(prefix).then(|| (key, kv.clone()))
            })
            .collect();
        Ok((found, next))
    }

    pub(crate) async fn list_page(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Listed>, LeaseError> {
        let (found, next) = self
            .range_page(Op::List, prefix, "lease", from, limit)
            .await?;
        let entries = futures::future::join_all(found.into_iter().map(|(key, kv)| async move {
            match Found::from_kv(Some(&kv)) {
                Found::Absent => Ok(None),
                Found::Corrupt { detail, .. } => Ok(Some(Listed::Corrupt { key, detail })),
                Found::Held(held) => {
                    let left = self.lease_left(&key, held.lease).await?;
                    let record = self.record_of(&key, &held);
                    // Its lease gone: expired, not yet deleted.
                    Ok(left.map(|left| {
                        Listed::Held(lease_core::LeaseRecord {
                            remaining: left.min(held.ttl),
                            ..record
                        })
                    }))
                }
            }
        }))
        .await;
        Ok(Page {
            entries: entries
                .into_iter()
                .collect::<Result<Vec<_>, LeaseError>>()?
                .into_iter()
                .flatten()
                .collect(),
            next,
        })
    }

    pub(crate) async fn list_markers_page(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<(LeaseKey, String)>, LeaseError> {
        let (found, next) = self
            .range_page(Op::ListMarkers, prefix, "marker", from, limit)
            .await?;
        let entries = found
            .into_iter()
            .map(|(key, kv)| {
                let value = lease_core::marker_text(&key, kv.value().to_vec())?;
                Ok((key, value))
            })
            .collect::<Result<_, LeaseError>>()?;
        Ok(Page { entries, next })
    }
}
