//! The steps of a state-machine sequence and how proptest draws them.

use std::time::Duration;

use proptest::prelude::*;

pub(super) const KEYS: usize = 2;
/// `a#1` and `a#2` share an id, and `a:b#1` and `a#b:1` read alike once
/// joined with a colon: the model must keep them all apart.
pub(super) const HOLDERS: [(&str, &str); 6] = [
    ("a", "1"),
    ("a", "2"),
    ("b", "1"),
    ("a:b", "1"),
    ("a", "b:1"),
    ("wörker 7", "boot #3"),
];
/// How long after a grant certainly ended a waiter may still time out: its
/// timed re-check.
pub(super) const RECHECK_ALLOWANCE: Duration = Duration::from_secs(1);
/// Guarded values: one byte, or this many bytes of it (binary).
pub(super) const BIG_VALUE: usize = 4096;

/// One step of a sequence. Indices pick keys, holders and earlier fences.
#[derive(Clone, Debug)]
pub enum Step {
    Claim {
        key: usize,
        holder: usize,
        ttl: u8,
    },
    Reclaim {
        key: usize,
        holder: usize,
        observed: usize,
        ttl: u8,
    },
    Renew {
        key: usize,
        fence: usize,
        ttl: u8,
    },
    /// One `renew_many` call: (key, fence, ttl) on distinct keys.
    RenewMany {
        renewals: Vec<(usize, usize, u8)>,
    },
    Release {
        key: usize,
        fence: usize,
    },
    Inspect {
        key: usize,
    },
    GuardedWrite {
        key: usize,
        fence: usize,
        value: u8,
        big: bool,
    },
    PutMarker {
        key: usize,
        value: u8,
    },
    DeleteMarker {
        key: usize,
        value: u8,
    },
    GetMarker {
        key: usize,
    },
    /// Sleep `quarters` quarters of the base TTL.
    Sleep {
        quarters: u8,
    },
    /// Wait for the key to be free, for `quarters` quarters of the base TTL.
    Wait {
        key: usize,
        quarters: u8,
    },
}

pub(super) fn step() -> impl Strategy<Value = Step> {
    let key = 0..KEYS;
    let holder = 0..HOLDERS.len();
    let ttl = 1u8..=3;
    let pick = 0usize..8;
    prop_oneof![
        4 => (key.clone(), holder.clone(), ttl.clone()).prop_map(|(key, holder, ttl)| Step::Claim { key, holder, ttl }),
        2 => (key.clone(), holder, pick.clone(), ttl.clone()).prop_map(|(key, holder, observed, ttl)| Step::Reclaim { key, holder, observed, ttl }),
        3 => (key.clone(), pick.clone(), ttl.clone()).prop_map(|(key, fence, ttl)| Step::Renew { key, fence, ttl }),
        2 => proptest::collection::vec((key.clone(), pick.clone(), ttl), 1..=4).prop_map(|mut renewals| {
            renewals.sort_by_key(|r| r.0);
            renewals.dedup_by_key(|r| r.0);
            Step::RenewMany { renewals }
        }),
        2 => (key.clone(), pick.clone()).prop_map(|(key, fence)| Step::Release { key, fence }),
        2 => key.clone().prop_map(|key| Step::Inspect { key }),
        1 => (key.clone(), pick, any::<u8>(), any::<bool>()).prop_map(|(key, fence, value, big)| Step::GuardedWrite { key, fence, value, big }),
        1 => (key.clone(), 0u8..2).prop_map(|(key, value)| Step::PutMarker { key, value }),
        1 => (key.clone(), 0u8..2).prop_map(|(key, value)| Step::DeleteMarker { key, value }),
        1 => key.clone().prop_map(|key| Step::GetMarker { key }),
        2 => (1u8..=3).prop_map(|quarters| Step::Sleep { quarters }),
        1 => (key, 1u8..=3).prop_map(|(key, quarters)| Step::Wait { key, quarters }),
    ]
}
