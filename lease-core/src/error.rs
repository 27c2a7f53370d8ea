//! The one error type of the library.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::{Fence, LeaseKey, LeaseRecord};

/// A boxed error from a backend's client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The store operations, as named in errors and reports.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum Op {
    /// [`LeaseStore::claim`](crate::LeaseStore::claim)
    Claim,
    /// [`LeaseStore::reclaim`](crate::LeaseStore::reclaim)
    Reclaim,
    /// [`LeaseStore::renew`](crate::LeaseStore::renew)
    Renew,
    /// [`LeaseStore::release`](crate::LeaseStore::release)
    Release,
    /// [`LeaseStore::inspect`](crate::LeaseStore::inspect)
    Inspect,
    /// [`LeaseStore::put_marker`](crate::LeaseStore::put_marker)
    PutMarker,
    /// [`LeaseStore::delete_marker`](crate::LeaseStore::delete_marker)
    DeleteMarker,
    /// [`LeaseStore::get_marker`](crate::LeaseStore::get_marker)
    GetMarker,
    /// [`LeaseStore::guarded_write`](crate::LeaseStore::guarded_write)
    GuardedWrite,
    /// [`LeaseStore::read_guarded`](crate::LeaseStore::read_guarded)
    ReadGuarded,
    /// [`LeaseStore::wait_free`](crate::LeaseStore::wait_free)
    Wait,
    /// [`LeaseStore::list`](crate::LeaseStore::list)
    List,
    /// [`LeaseStore::list_markers`](crate::LeaseStore::list_markers)
    ListMarkers,
}

impl Op {
    /// Whether the operation changes the store, so that a lost reply leaves
    /// its outcome unknown.
    pub fn is_mutating(self) -> bool {
        !matches!(
            self,
            Op::Inspect | Op::GetMarker | Op::ReadGuarded | Op::Wait | Op::List | Op::ListMarkers
        )
    }

    /// The operation's name in snake case.
    pub fn name(self) -> &'static str {
        match self {
            Op::Claim => "claim",
            Op::Reclaim => "reclaim",
            Op::Renew => "renew",
            Op::Release => "release",
            Op::Inspect => "inspect",
            Op::PutMarker => "put_marker",
            Op::DeleteMarker => "delete_marker",
            Op::GetMarker => "get_marker",
            Op::GuardedWrite => "guarded_write",
            Op::ReadGuarded => "read_guarded",
            Op::Wait => "wait_free",
            Op::List => "list",
            Op::ListMarkers => "list_markers",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong with a lease. Busy is not here: it is an
/// outcome of a claim ([`Claim::Busy`](crate::Claim::Busy)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// A key broke a key rule; refused before any I/O.
    #[error("invalid lease key {key:?}: {rule}")]
    InvalidKey {
        /// The text offered as a key.
        key: String,
        /// The rule it broke.
        rule: &'static str,
    },

    /// A holder broke a holder rule; refused before any I/O.
    #[error("invalid holder {holder:?}: {rule}")]
    InvalidHolder {
        /// The holder offered, as `id#incarnation`.
        holder: String,
        /// The rule it broke.
        rule: String,
    },

    /// A TTL the backend cannot grant: zero, below its minimum or above its
    /// maximum. Never silently clamped.
    #[error("invalid TTL {ttl:?} for lease {key}: {rule}")]
    InvalidTtl {
        /// The lease the TTL was asked for.
        key: LeaseKey,
        /// The TTL asked for.
        ttl: Duration,
        /// The rule it broke.
        rule: String,
    },

    /// A marker or guarded value the backend cannot store.
    #[error("invalid value for {key}: {rule}")]
    InvalidValue {
        /// The key the value was for.
        key: LeaseKey,
        /// The rule it broke.
        rule: String,
    },

    /// The fence is not the current live grant: released, expired,
    /// superseded or never granted. `current` is what the store holds now.
    #[error("lease lost: {fence} is no longer the live grant (now: {})", describe(.current))]
    Lost {
        /// The fence presented.
        fence: Box<Fence>,
        /// The live grant on the key now, if any.
        current: Option<Box<LeaseRecord>>,
    },

    /// The key holds something that is not a lease record of this library.
    /// A claim repairs it by takeover, with a higher token.
    #[error("lease record for {key} is corrupt: {detail}")]
    Corrupt {
        /// The key whose record is corrupt.
        key: LeaseKey,
        /// What was wrong with it.
        detail: String,
    },

    /// A marker is already set to another value.
    #[error("marker {key} is already set to {existing:?}")]
    Conflict {
        /// The marker's key.
        key: LeaseKey,
        /// The value it holds.
        existing: String,
    },

    /// The call did not complete in time. For a mutating call the outcome is
    /// unknown ([`LeaseError::is_indeterminate`]).
    #[error("{op} on {key} timed out after {after:?}")]
    Timeout {
        /// The operation.
        op: Op,
        /// The key it was about.
        key: LeaseKey,
        /// The limit that ran out.
        after: Duration,
    },

    /// The backend failed. `indeterminate` is set when the request may have
    /// reached the server (connection lost after sending).
    #[error("{backend} failed during {op} on {key}{}: {source}", if *.indeterminate { " (outcome unknown)" } else { "" })]
    Backend {
        /// The backend's name: `redis`, `etcd`, …
        backend: &'static str,
        /// The operation.
        op: Op,
        /// The key it was about.
        key: LeaseKey,
        /// Whether the request may have taken effect.
        indeterminate: bool,
        /// The client library's error.
        #[source]
        source: BoxError,
    },

    /// The backend does not offer this operation.
    #[error("{backend} does not support {op}")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// The operation.
        op: Op,
    },

    /// The store could not be set up: its configuration broke a rule.
    #[error("invalid {backend} configuration: {what}: {rule}")]
    InvalidConfig {
        /// The backend's name.
        backend: &'static str,
        /// The setting, with its value.
        what: String,
        /// The rule it broke.
        rule: String,
    },

    /// The store could not reach its server.
    #[error("cannot connect to {backend} at {endpoint}: {source}")]
    Connect {
        /// The backend's name.
        backend: &'static str,
        /// Where it tried, without credentials.
        endpoint: String,
        /// The client library's error.
        #[source]
        source: BoxError,
    },

    /// A fenced resource refused a write carrying a token older than one it
    /// has already accepted.
    #[error(
        "fenced write refused: {fence} is older than token {highest} already accepted by {resource}"
    )]
    StaleFence {
        /// The resource that refused the write.
        resource: String,
        /// The fence presented.
        fence: Box<Fence>,
        /// The highest token the resource has accepted.
        highest: crate::FencingToken,
    },
}

fn describe(current: &Option<Box<LeaseRecord>>) -> String {
    match current {
        None => "free".to_owned(),
        Some(r) => format!(
            "held by {} with token {}, {:?} left",
            r.holder, r.token, r.remaining
        ),
    }
}

impl LeaseError {
    /// Whether a mutating call may or may not have taken effect. The caller
    /// can inspect, or retry the same claim: a claim by the current holder
    /// returns its own grant with the same token.
    pub fn is_indeterminate(&self) -> bool {
        match self {
            LeaseError::Timeout { op, .. } => op.is_mutating(),
            LeaseError::Backend {
                indeterminate, op, ..
            } => *indeterminate && op.is_mutating(),
            _ => false,
        }
    }

    /// [`LeaseError::Lost`] for `fence`, with the record the store holds now.
    pub fn lost(fence: &Fence, current: Option<LeaseRecord>) -> Self {
        LeaseError::Lost {
            fence: Box::new(fence.clone()),
            current: current.map(Box::new),
        }
    }

    /// Whether this is [`LeaseError::Lost`].
    pub fn is_lost(&self) -> bool {
        matches!(self, LeaseError::Lost { .. })
    }

    /// The same failure, told of `key`: for a call that carried several
    /// keys (a batch renewal) and failed as a whole. Keeps the operation,
    /// whether the outcome is unknown, and the message.
    pub fn for_key(&self, key: &LeaseKey) -> Self {
        match self {
            LeaseError::Timeout { op, after, .. } => LeaseError::Timeout {
                op: *op,
                key: key.clone(),
                after: *after,
            },
            LeaseError::Backend {
                backend,
                op,
                indeterminate,
                source,
                ..
            } => LeaseError::backend(backend, *op, key, *indeterminate, source.to_string()),
            other => LeaseError::backend("batch", Op::Renew, key, true, other.to_string()),
        }
    }

    /// A call that shared a batch abandoned before it answered (see
    /// [`crate::Batcher::call`]): a mutating one may have been applied.
    pub fn batch_abandoned(backend: &'static str, op: Op, key: &LeaseKey) -> Self {
        Self::backend(
            backend,
            op,
            key,
            op.is_mutating(),
            "the call's batch was abandoned before it answered",
        )
    }

    /// A call that waited for a batch while its store was dropped: it was
    /// never sent.
    pub fn store_dropped(backend: &'static str, op: Op, key: &LeaseKey) -> Self {
        Self::backend(backend, op, key, false, "the store was dropped")
    }

    /// A backend failure, for adapters.
    pub fn backend(
        backend: &'static str,
        op: Op,
        key: &LeaseKey,
        indeterminate: bool,
        source: impl Into<BoxError>,
    ) -> Self {
        LeaseError::Backend {
            backend,
            op,
            key: key.clone(),
            indeterminate,
            source: source.into(),
        }
    }
}

/// Checks that every setting in `settings` (name, value) is a positive
/// duration: what every adapter's config asks of its timeouts.
///
/// # Errors
/// [`LeaseError::InvalidConfig`] naming `backend`, the setting and its
/// value, for the first that is zero.
pub fn check_durations(
    backend: &'static str,
    settings: &[(&str, Duration)],
) -> Result<(), LeaseError> {
    match settings.iter().find(|(_, value)| value.is_zero()) {
        Some((what, value)) => Err(LeaseError::InvalidConfig {
            backend,
            what: format!("{what} {value:?}"),
            rule: "must be greater than zero".to_owned(),
        }),
        None => Ok(()),
    }
}

/// `url` with any credentials (`scheme://user:password@…`) replaced by
/// `***`, for errors and logs.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// A marker's value as stored bytes: its text, or [`LeaseError::Corrupt`]
/// naming `key` when the bytes are not UTF-8 (written by something else).
pub fn marker_text(key: &LeaseKey, bytes: Vec<u8>) -> Result<String, LeaseError> {
    String::from_utf8(bytes).map_err(|_| LeaseError::Corrupt {
        key: key.clone(),
        detail: "the marker is not UTF-8".to_owned(),
    })
}

/// Runs `call` with a time limit: past `limit` it gives
/// [`LeaseError::Timeout`] naming `op` and `key`. Every backend call goes
/// through this.
pub async fn with_timeout<T>(
    op: Op,
    key: &LeaseKey,
    limit: Duration,
    call: impl Future<Output = Result<T, LeaseError>>,
) -> Result<T, LeaseError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(LeaseError::Timeout {
            op,
            key: key.clone(),
            after: limit,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_durations_are_named() {
        let err = check_durations(
            "x",
            &[
                ("call timeout", Duration::from_secs(1)),
                ("wait recheck", Duration::ZERO),
            ],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid x configuration: wait recheck 0ns: must be greater than zero"
        );
        assert!(check_durations("x", &[("call timeout", Duration::from_millis(1))]).is_ok());
    }

    #[test]
    fn only_mutating_timeouts_are_indeterminate() {
        let key = LeaseKey::new("k").unwrap();
        let t = |op| LeaseError::Timeout {
            op,
            key: key.clone(),
            after: Duration::from_secs(1),
        };
        assert!(t(Op::Claim).is_indeterminate());
        assert!(t(Op::Release).is_indeterminate());
        assert!(!t(Op::Inspect).is_indeterminate());
        let io = std::io::Error::other("reset");
        assert!(LeaseError::backend("x", Op::Renew, &key, true, io).is_indeterminate());
        let io = std::io::Error::other("refused");
        assert!(!LeaseError::backend("x", Op::Renew, &key, false, io).is_indeterminate());
    }
}
