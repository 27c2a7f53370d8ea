//! Holders, tokens, fences, grants and records: the values the store trades in.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::{LeaseError, LeaseKey};

/// The longest holder id or incarnation, in bytes.
pub const MAX_HOLDER_PART_LEN: usize = 255;

/// Who holds a lease: a stable `id` and the `incarnation` of this run of it.
///
/// The same `id` with another `incarnation` is another holder: a restarted
/// process does not inherit the grants of its previous life.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Holder {
    id: String,
    incarnation: String,
}

impl Holder {
    /// A holder with the given id and incarnation.
    ///
    /// # Errors
    /// [`LeaseError::InvalidHolder`] when either part is empty, longer than
    /// 255 bytes, or holds a control character.
    pub fn new(id: impl Into<String>, incarnation: impl Into<String>) -> Result<Self, LeaseError> {
        let holder = Self {
            id: id.into(),
            incarnation: incarnation.into(),
        };
        for (part, text) in [("id", &holder.id), ("incarnation", &holder.incarnation)] {
            let rule = if text.is_empty() {
                Some("must not be empty")
            } else if text.len() > MAX_HOLDER_PART_LEN {
                Some("must be at most 255 bytes")
            } else if text.chars().any(char::is_control) {
                Some("must not contain control characters")
            } else {
                None
            };
            if let Some(rule) = rule {
                return Err(LeaseError::InvalidHolder {
                    holder: format!("{}#{}", holder.id, holder.incarnation),
                    rule: format!("the holder {part} {rule}"),
                });
            }
        }
        Ok(holder)
    }

    /// A holder named `id` with an incarnation unique to this process run:
    /// process id, start time and a per-process counter.
    ///
    /// # Errors
    /// [`LeaseError::InvalidHolder`] when `id` breaks a rule of [`Holder::new`].
    pub fn unique(id: impl Into<String>) -> Result<Self, LeaseError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self::new(id, format!("{}-{started:x}-{n}", std::process::id()))
    }

    /// The stable name: host, pod, worker.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// This run of the holder: boot id, pid + start time.
    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.id, self.incarnation)
    }
}

impl fmt::Debug for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Holder({self})")
    }
}

/// A fencing token: for one key, every fresh grant gets a token greater than
/// every token handed out on that key before. Renewal keeps the token.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The proof of one grant: `(key, holder, token)`. Renew, release, check and
/// guarded writes present it.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Fence {
    /// The lease.
    pub key: LeaseKey,
    /// Who was granted it.
    pub holder: Holder,
    /// The token of the grant.
    pub token: FencingToken,
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} held by {} with token {}",
            self.key, self.holder, self.token
        )
    }
}

/// A grant the store made: its fence, the TTL actually granted, and the
/// holder's deadline.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Grant {
    /// The proof of this grant.
    pub fence: Fence,
    /// The TTL the store granted (after the backend's rounding).
    pub ttl: Duration,
    /// The holder's safe end of the grant, on its own monotonic clock: when
    /// the request was sent plus [`Grant::ttl`]. Nobody else can be granted
    /// the key before then; the holder must stop acting as owner at it.
    pub deadline: Instant,
    /// Whether this grant is new (a new token) rather than the caller's own
    /// live grant claimed again (same token, refreshed TTL).
    pub fresh: bool,
}

impl Grant {
    /// A grant whose request was sent at `sent`: the deadline is `sent + ttl`.
    pub fn new(fence: Fence, ttl: Duration, sent: Instant, fresh: bool) -> Self {
        Self {
            fence,
            ttl,
            deadline: sent + ttl,
            fresh,
        }
    }

    /// The token of the grant.
    pub fn token(&self) -> FencingToken {
        self.fence.token
    }
}

/// The current record of a key as the store reports it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LeaseRecord {
    /// The lease.
    pub key: LeaseKey,
    /// Who holds it.
    pub holder: Holder,
    /// The token of the live grant.
    pub token: FencingToken,
    /// Time left on the server's clock when the store read the record.
    pub remaining: Duration,
}

impl LeaseRecord {
    /// The fence of the grant this record shows: what [`reclaim`] takes as
    /// the observed grant.
    ///
    /// [`reclaim`]: crate::LeaseStore::reclaim
    pub fn fence(&self) -> Fence {
        Fence {
            key: self.key.clone(),
            holder: self.holder.clone(),
            token: self.token,
        }
    }

    /// Whether this record shows the grant `fence` proves.
    pub fn is(&self, fence: &Fence) -> bool {
        self.key == fence.key && self.holder == fence.holder && self.token == fence.token
    }
}

/// The outcome of a claim or reclaim: acquired, or busy with someone's grant.
#[derive(Clone, PartialEq, Eq, Debug)]
#[must_use]
pub enum Claim {
    /// The caller holds the lease.
    Acquired(Grant),
    /// Someone else holds a live grant: this one.
    Busy(LeaseRecord),
}

impl Claim {
    /// The grant, if acquired.
    pub fn acquired(self) -> Option<Grant> {
        match self {
            Claim::Acquired(grant) => Some(grant),
            Claim::Busy(_) => None,
        }
    }

    /// The grant, if acquired (by reference).
    pub fn grant(&self) -> Option<&Grant> {
        match self {
            Claim::Acquired(grant) => Some(grant),
            Claim::Busy(_) => None,
        }
    }

    /// The record of the holder in the way, if busy.
    pub fn busy(&self) -> Option<&LeaseRecord> {
        match self {
            Claim::Acquired(_) => None,
            Claim::Busy(record) => Some(record),
        }
    }
}

/// Time-limits used by stores, for TTL validation and rounding.
pub(crate) fn round_up(ttl: Duration, granularity: Duration) -> Duration {
    let g = granularity.as_nanos();
    if g <= 1 {
        return ttl;
    }
    let n = ttl.as_nanos();
    let rounded = n.div_ceil(g) * g;
    Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_rules_are_named() {
        let err = Holder::new("", "1").unwrap_err();
        assert!(
            err.to_string().contains("holder id must not be empty"),
            "{err}"
        );
        let err = Holder::new("w", "a\nb").unwrap_err();
        assert!(
            err.to_string()
                .contains("incarnation must not contain control"),
            "{err}"
        );
        let err = Holder::new("x".repeat(256), "1").unwrap_err();
        assert!(err.to_string().contains("255"), "{err}");
    }

    #[test]
    fn unique_holders_differ_by_incarnation() {
        let a = Holder::unique("w").unwrap();
        let b = Holder::unique("w").unwrap();
        assert_eq!(a.id(), b.id());
        assert_ne!(a, b);
    }

    #[test]
    fn rounding_goes_up() {
        let s = Duration::from_secs(1);
        assert_eq!(
            round_up(Duration::from_millis(1001), s),
            Duration::from_secs(2)
        );
        assert_eq!(round_up(Duration::from_secs(3), s), Duration::from_secs(3));
        let ms = Duration::from_millis(1);
        assert_eq!(
            round_up(Duration::from_micros(1500), ms),
            Duration::from_millis(2)
        );
    }
}
