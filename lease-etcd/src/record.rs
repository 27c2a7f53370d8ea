//! What a lease key holds, and the compares that check it.
//!
//! The value is `lease/v1 \n id \n incarnation \n ttl-ms`. Holder ids and
//! incarnations hold no control characters, so the newline separators are
//! unambiguous, and "this key is held by `holder`" is a range compare on the
//! value: it starts with `lease/v1\nid\nincarnation\n`.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, KeyValue, TxnOpResponse, TxnResponse};
use lease_core::{FencingToken, Holder};

const VERSION: &str = "lease/v1";

pub(crate) fn encode(holder: &Holder, ttl: Duration) -> Vec<u8> {
    format!(
        "{VERSION}\n{}\n{}\n{}",
        holder.id(),
        holder.incarnation(),
        ttl.as_millis()
    )
    .into_bytes()
}

/// `(low, high)`: a value belongs to `holder` exactly when `low < value < high`.
pub(crate) fn holder_range(holder: &Holder) -> (Vec<u8>, Vec<u8>) {
    let low = format!("{VERSION}\n{}\n{}\n", holder.id(), holder.incarnation()).into_bytes();
    let mut high = low.clone();
    if let Some(last) = high.last_mut() {
        *last += 1;
    }
    (low, high)
}

/// The holder and granted TTL, or what is wrong with the value.
pub(crate) fn decode(value: &[u8]) -> Result<(Holder, Duration), String> {
    let text = std::str::from_utf8(value).map_err(|_| "the value is not UTF-8".to_owned())?;
    let mut parts = text.split('\n');
    let (Some(VERSION), Some(id), Some(incarnation), Some(ttl), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(format!("not a {VERSION} lease record"));
    };
    let holder = Holder::new(id, incarnation).map_err(|e| format!("the holder is invalid: {e}"))?;
    let ttl = ttl
        .parse()
        .map_err(|_| format!("the TTL {ttl:?} is not a number"))?;
    Ok((holder, Duration::from_millis(ttl)))
}

/// A token is the `create_revision` of the grant's key. The one place
/// revisions and tokens meet.
pub(crate) fn token_of(create_revision: i64) -> FencingToken {
    // etcd revisions start at 1 and never go negative.
    FencingToken(u64::try_from(create_revision).unwrap_or(0))
}

/// The revision a token stands for; `None` for a token no etcd revision can
/// be (above `i64::MAX`), which is then nobody's grant.
pub(crate) fn revision_of(token: FencingToken) -> Option<i64> {
    i64::try_from(token.0).ok().filter(|r| *r > 0)
}

/// What a key holds, as read.
#[derive(Clone, Debug)]
pub(crate) enum Found {
    Absent,
    Corrupt { detail: String, mod_revision: i64 },
    Held(Held),
}

/// A grant as stored.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub holder: Holder,
    pub ttl: Duration,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// The etcd lease that ends it.
    pub lease: i64,
}

impl Held {
    pub fn token(&self) -> FencingToken {
        token_of(self.create_revision)
    }

    pub fn is(&self, holder: &Holder, revision: i64) -> bool {
        self.create_revision == revision && self.holder == *holder
    }
}

impl Found {
    pub fn from_kv(kv: Option<&KeyValue>) -> Self {
        let Some(kv) = kv else {
            return Found::Absent;
        };
        let corrupt = |detail: String| Found::Corrupt {
            detail,
            mod_revision: kv.mod_revision(),
        };
        match decode(kv.value()) {
            // Every grant hangs on an etcd lease: a record without one
            // would never end, so it is nobody's grant.
            Ok(_) if kv.lease() == 0 => {
                corrupt("the record is attached to no etcd lease, so nothing would end it".into())
            }
            Ok((holder, ttl)) => Found::Held(Held {
                holder,
                ttl,
                create_revision: kv.create_revision(),
                mod_revision: kv.mod_revision(),
                lease: kv.lease(),
            }),
            Err(detail) => corrupt(detail),
        }
    }

    /// What the `else` branch of a transaction read.
    pub fn from_response(response: &TxnResponse) -> Self {
        Self::from_kv(got(response).as_ref())
    }
}

/// The first key a transaction's `get` read.
pub(crate) fn got(response: &TxnResponse) -> Option<KeyValue> {
    response.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(get) => get.kvs().first().cloned(),
        _ => None,
    })
}

/// The keys a transaction's `delete` removed (asked with `prev_kv`).
pub(crate) fn deleted(response: &TxnResponse) -> Option<KeyValue> {
    response.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Delete(delete) => delete.prev_kvs().first().cloned(),
        _ => None,
    })
}

/// Compares that hold when `etcd_key` is the grant created at `revision`
/// for `holder`: created at that revision, its value in the holder's range.
pub(crate) fn holds(etcd_key: &str, revision: i64, holder: &Holder) -> [Compare; 3] {
    let (low, high) = holder_range(holder);
    [
        Compare::create_revision(etcd_key, CompareOp::Equal, revision),
        Compare::value(etcd_key, CompareOp::Greater, low),
        Compare::value(etcd_key, CompareOp::Less, high),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_fall_in_their_holders_range() {
        let holder = Holder::new("worker-1", "boot-7").unwrap();
        let value = encode(&holder, Duration::from_secs(3));
        assert_eq!(
            decode(&value).unwrap(),
            (holder.clone(), Duration::from_secs(3))
        );
        let (low, high) = holder_range(&holder);
        assert!(low < value && value < high);
        for other in [
            Holder::new("worker-1", "boot-70").unwrap(),
            Holder::new("worker-1", "boot-").unwrap(),
            Holder::new("worker-10", "boot-7").unwrap(),
        ] {
            let value = encode(&other, Duration::from_secs(3));
            assert!(
                !(low < value && value < high),
                "{other} is in {holder}'s range"
            );
        }
    }

    #[test]
    fn foreign_values_are_corrupt() {
        for bad in [
            &b"garbage"[..],
            b"lease/v1\na\nb",
            b"lease/v1\na\nb\nx",
            b"\xff",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_and_revisions_convert_in_one_checked_place() {
        assert_eq!(token_of(42), FencingToken(42));
        assert_eq!(token_of(-1), FencingToken(0));
        assert_eq!(revision_of(FencingToken(42)), Some(42));
        assert_eq!(revision_of(FencingToken(0)), None);
        assert_eq!(revision_of(FencingToken(u64::MAX)), None);
    }
}
