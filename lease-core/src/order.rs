//! The order one store sends its renewals in, for a server to apply them
//! in ([`Rule::LateRequestsAreHarmless`](crate::Rule::LateRequestsAreHarmless)).
//!
//! A renewal sets a grant's end to its TTL from when the server applies
//! it, longer or shorter than before. Delivered late — after its caller
//! gave up, reconnected and renewed again — a renewal with a shorter TTL
//! would end the grant before the deadline the later renewal told its
//! holder. So a network backend stamps every renewal with the store's
//! [`Stamp`] at send time, keeps the stamp of the last renewal it applied
//! with the grant, and applies a renewal only when it is not
//! [stale](Stamp::is_stale_after) against that one: a stale renewal
//! changes nothing and is answered with the grant's time left.
//!
//! Stamps order the renewals of one store only. Renewals of two stores
//! (two processes sharing a fence) are not ordered by the SPEC, so a stamp
//! of another origin is never stale. A claim of one's own grant needs no
//! stamp: it never shortens a grant.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// The order in which one store sends its renewals: each call of
/// [`Sequencer::next`] gives a stamp that supersedes every earlier one of
/// this sequencer. One per store.
#[derive(Debug)]
pub struct Sequencer {
    origin: u64,
    next: AtomicU64,
}

impl Default for Sequencer {
    fn default() -> Self {
        Self::new()
    }
}

impl Sequencer {
    /// A sequencer with an origin of its own: 64 random bits, drawn from
    /// the operating system's randomness through std's hasher seeds.
    pub fn new() -> Self {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(std::process::id().into());
        Self {
            origin: hasher.finish(),
            next: AtomicU64::new(1),
        }
    }

    /// The stamp of a renewal about to be sent.
    pub fn next(&self) -> Stamp {
        Stamp {
            origin: self.origin,
            seq: self.next.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// Where a renewal stands in its store's order: the store's origin and
/// the renewal's place. Written as `ORIGIN:SEQ`, the origin in 16 hex
/// digits (a server compares it as text) and the place in decimal (a
/// number below 2^53, exact even as a Lua double).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// The sequencer that made it.
    pub origin: u64,
    /// Its place in that sequencer's order, from 1.
    pub seq: u64,
}

impl Stamp {
    /// Whether a renewal stamped `self` was sent before the one stamped
    /// `applied`, which the server already applied: same origin, earlier
    /// place. Such a renewal changes nothing.
    pub fn is_stale_after(&self, applied: &Stamp) -> bool {
        self.origin == applied.origin && self.seq < applied.seq
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}:{}", self.origin, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_stamp_of_one_store_makes_earlier_ones_stale() {
        let store = Sequencer::new();
        let (first, second) = (store.next(), store.next());
        assert!(first.is_stale_after(&second));
        assert!(!second.is_stale_after(&first));
        assert!(
            !second.is_stale_after(&second),
            "a stamp is not stale after itself"
        );
    }

    #[test]
    fn stamps_of_two_stores_are_never_stale_against_each_other() {
        let (a, b) = (Sequencer::new(), Sequencer::new());
        assert_ne!(a.origin, b.origin, "two sequencers share an origin");
        let (a1, _, b1) = (a.next(), a.next(), b.next());
        let a3 = a.next();
        assert!(!a1.is_stale_after(&b1) && !b1.is_stale_after(&a3));
    }

    #[test]
    fn a_stamp_is_written_as_origin_and_place() {
        let stamp = Stamp {
            origin: 0xab,
            seq: 42,
        };
        assert_eq!(stamp.to_string(), "00000000000000ab:42");
    }
}
