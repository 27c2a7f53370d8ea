//! Listing: what is held, and which markers are set, under a key prefix.

use crate::{LeaseError, LeaseKey, LeaseRecord, LeaseStore};

/// One key found by [`LeaseStore::list`](crate::LeaseStore::list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listed {
    /// A live grant.
    Held(LeaseRecord),
    /// A record that cannot be parsed, so an operator can tell it from a
    /// free key (a claim repairs it).
    Corrupt {
        /// The key whose record is corrupt.
        key: LeaseKey,
        /// What is wrong with it.
        detail: String,
    },
}

impl Listed {
    /// The key this entry is about.
    pub fn key(&self) -> &LeaseKey {
        match self {
            Listed::Held(record) => &record.key,
            Listed::Corrupt { key, .. } => key,
        }
    }
}

/// Where the next page of a listing starts: opaque, backend-defined, valid
/// for the same prefix only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor(pub String);

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// What this page found.
    pub entries: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

impl<T> Page<T> {
    /// The last page, holding `entries`.
    pub fn last(entries: Vec<T>) -> Self {
        Self {
            entries,
            next: None,
        }
    }
}

impl LeaseKey {
    /// Whether this key is `prefix` itself or below it: `jobs/a` is under
    /// `jobs`, `jobs2` is not.
    pub fn is_under(&self, prefix: &LeaseKey) -> bool {
        let (key, prefix) = (self.as_str(), prefix.as_str());
        key == prefix
            || key
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Entries a page asks for in [`list_all`] and [`list_all_markers`].
const PAGE: usize = 500;

/// Every entry of a whole [`LeaseStore::list`] of `prefix`, page after page
/// (a key that changed during the listing may appear twice).
///
/// # Errors
/// The store's errors for `list`.
pub async fn list_all(
    store: &dyn LeaseStore,
    prefix: &LeaseKey,
) -> Result<Vec<Listed>, LeaseError> {
    let mut entries = Vec::new();
    let mut from = None;
    loop {
        let page = store.list(prefix, from.as_ref(), PAGE).await?;
        entries.extend(page.entries);
        match page.next {
            None => return Ok(entries),
            next => from = next,
        }
    }
}

/// Every marker of a whole [`LeaseStore::list_markers`] of `prefix`.
///
/// # Errors
/// The store's errors for `list_markers`.
pub async fn list_all_markers(
    store: &dyn LeaseStore,
    prefix: &LeaseKey,
) -> Result<Vec<(LeaseKey, String)>, LeaseError> {
    let mut entries = Vec::new();
    let mut from = None;
    loop {
        let page = store.list_markers(prefix, from.as_ref(), PAGE).await?;
        entries.extend(page.entries);
        match page.next {
            None => return Ok(entries),
            next => from = next,
        }
    }
}

/// Up to `limit` entries (at least one) that `entry` makes of the keys
/// under `prefix`, in key order after `from`; the cursor is the last key
/// looked at.
pub(crate) fn page_of<'a, T>(
    keys: impl Iterator<Item = &'a LeaseKey>,
    prefix: &LeaseKey,
    from: Option<&Cursor>,
    limit: usize,
    mut entry: impl FnMut(&LeaseKey) -> Option<T>,
) -> Page<T> {
    let mut keys: Vec<&LeaseKey> = keys
        .filter(|k| k.is_under(prefix) && from.is_none_or(|c| k.as_str() > c.0.as_str()))
        .collect();
    keys.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let mut entries = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if entries.len() == limit.max(1) {
            let last = keys[i - 1].as_str().to_owned();
            return Page {
                entries,
                next: Some(Cursor(last)),
            };
        }
        entries.extend(entry(key));
    }
    Page::last(entries)
}
