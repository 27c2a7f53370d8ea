//! The value of a lease key: `lease/v1 \n id \n incarnation \n ttl-ms`.
//!
//! Holder ids and incarnations hold no control characters, so the newline
//! separators are unambiguous, and "this key is held by `holder`" is a range
//! compare on the value: it starts with `lease/v1\nid\nincarnation\n`.

use std::time::Duration;

use lease_core::Holder;

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
}
