//! Listing: `SCAN` over the namespace's keys of one space, then one script
//! that reads the page's keys.
//!
//! `SCAN` visits the keyspace in hash-table order, so a page is what one
//! `SCAN` step found under the prefix, sorted by key. A cursor is the
//! `SCAN` cursor of that step and the last key returned from it: the next
//! page repeats the step and goes on after that key when a page had to stop
//! short of `limit`, else takes the next step. Every key present for the
//! whole listing is returned (`SCAN`'s own guarantee); one that came or went
//! during it may be returned or not, or twice if the table was resized.

use lease_core::{Cursor, LeaseError, LeaseKey, Listed, Op, Page, with_timeout};

use crate::client::{Client, redis_error};
use crate::config::BACKEND;
use crate::reply::{Answer, Reply, malformed};

/// `SCAN` steps one page may take before it answers, possibly empty.
const STEPS_PER_PAGE: usize = 32;
/// The `COUNT` of each `SCAN` step, at least.
const SCAN_COUNT: usize = 1000;

/// `text` with the characters `SCAN`'s `MATCH` treats specially escaped.
pub(crate) fn glob_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl Client {
    /// Up to `limit` keys of `space` under `prefix`, from `from`, as Redis
    /// keys and lease keys, and the cursor of the next page.
    async fn scan_page(
        &self,
        op: Op,
        prefix: &LeaseKey,
        space: &str,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<(Vec<(String, LeaseKey)>, Option<Cursor>), LeaseError> {
        let root = self.redis_key(space, &LeaseKey::new("x").expect("valid"));
        let root = root.strip_suffix('x').unwrap_or(&root).to_owned();
        let pattern = format!("{}*", glob_escaped(&format!("{root}{prefix}")));
        let (mut step, mut after) = match from {
            None => ("0".to_owned(), None),
            Some(Cursor(text)) => match text.split_once(':') {
                Some((step, "")) => (step.to_owned(), None),
                Some((step, after)) => (step.to_owned(), Some(after.to_owned())),
                None => {
                    return Err(LeaseError::backend(
                        BACKEND,
                        op,
                        prefix,
                        false,
                        format!("{text:?} is not a listing cursor of this store"),
                    ));
                }
            },
        };
        let limit = limit.max(1);
        let mut connection = self.connection.clone();
        let timeout = self.config.call_timeout;
        for _ in 0..STEPS_PER_PAGE {
            let (next_step, mut keys): (String, Vec<String>) =
                with_timeout(op, prefix, timeout, async {
                    let mut scan = redis::cmd("SCAN");
                    scan.arg(&step)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(limit.max(SCAN_COUNT));
                    // In a cluster, on the node of the namespace's slot.
                    connection
                        .query_at(&scan, &root)
                        .await
                        .map_err(|e| redis_error(op, prefix, e, timeout))
                })
                .await?;
            keys.sort();
            keys.dedup();
            let mut found: Vec<(String, LeaseKey)> = keys
                .into_iter()
                .filter(|k| after.as_ref().is_none_or(|a| k > a))
                .filter_map(|k| {
                    let key = LeaseKey::new(k.strip_prefix(&root)?).ok()?;
                    key.is_under(prefix).then_some((k, key))
                })
                .collect();
            if found.len() > limit {
                found.truncate(limit);
                let last = found.last().map(|(k, _)| k.clone()).unwrap_or_default();
                return Ok((found, Some(Cursor(format!("{step}:{last}")))));
            }
            let done = next_step == "0";
            let next = (!done).then(|| Cursor(format!("{next_step}:")));
            if !found.is_empty() || done {
                return Ok((found, next));
            }
            (step, after) = (next_step, None);
        }
        Ok((Vec::new(), Some(Cursor(format!("{step}:")))))
    }

    pub(crate) async fn list_page(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Listed>, LeaseError> {
        let (found, next) = self
            .scan_page(Op::List, prefix, "lease", from, limit)
            .await?;
        let replies = self.read_page(Op::List, prefix, &found, true).await?;
        let mut entries = Vec::new();
        for ((_, key), reply) in found.into_iter().zip(replies) {
            match reply.decode(Op::List, &key)? {
                Answer::Corrupt(detail) => entries.push(Listed::Corrupt { key, detail }),
                other => entries.extend(other.current(Op::List, &key)?.map(Listed::Held)),
            }
        }
        Ok(Page { entries, next })
    }

    pub(crate) async fn list_markers_page(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<(LeaseKey, String)>, LeaseError> {
        let (found, next) = self
            .scan_page(Op::ListMarkers, prefix, "marker", from, limit)
            .await?;
        let replies = self
            .read_page(Op::ListMarkers, prefix, &found, false)
            .await?;
        let mut entries = Vec::new();
        for ((_, key), reply) in found.into_iter().zip(replies) {
            match reply.decode(Op::ListMarkers, &key)? {
                Answer::Absent => {}
                Answer::Value(bytes) => {
                    let value = lease_core::marker_text(&key, bytes)?;
                    entries.push((key, value));
                }
                other => return Err(other.unexpected(Op::ListMarkers, &key)),
            }
        }
        Ok(Page { entries, next })
    }

    /// One script call reading every key of a page: the lease records
    /// (`inspect_many`) or the markers (`read_values`).
    async fn read_page(
        &self,
        op: Op,
        prefix: &LeaseKey,
        found: &[(String, LeaseKey)],
        records: bool,
    ) -> Result<Vec<Reply>, LeaseError> {
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = found.iter().map(|(k, _)| k.clone()).collect();
        let script = if records {
            &self.scripts.inspect_many
        } else {
            &self.scripts.read_values
        };
        let replies: Vec<Vec<Vec<u8>>> = self.run(op, prefix, script, &keys, &[]).await?;
        if replies.len() != keys.len() {
            return Err(malformed(
                op,
                prefix,
                format!("{} replies for {} keys", replies.len(), keys.len()),
            ));
        }
        Ok(replies.into_iter().map(Reply).collect())
    }
}
