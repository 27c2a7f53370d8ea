//! Lease keys: validated names made of `/`-separated segments.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::LeaseError;

/// The longest key, in bytes of its (escaped) text.
pub const MAX_KEY_LEN: usize = 512;

/// Bytes escaped when a key is built from raw segments: the separator, the
/// escape character itself, controls and ASCII whitespace. Non-ASCII
/// whitespace is escaped too, by [`escape_segment`], since the key rules
/// forbid all whitespace.
const SEGMENT_ESCAPES: &AsciiSet = &CONTROLS.add(b'/').add(b'%').add(b' ');

/// The name of one lease.
///
/// A key is UTF-8 text of 1..=512 bytes made of `/`-separated segments, none
/// empty, with no control characters and no whitespace. Build one with
/// [`LeaseKey::new`] from text that already follows these rules, or with
/// [`LeaseKey::from_segments`] from raw segments, which are percent-escaped so
/// they may hold `/`, spaces or `%`. Invalid keys are refused before any I/O
/// with [`LeaseError::InvalidKey`], naming the key and the rule it broke.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseKey(String);

impl LeaseKey {
    /// Validates `text` as a key.
    ///
    /// # Errors
    /// [`LeaseError::InvalidKey`] naming the rule broken: empty, longer than
    /// 512 bytes, an empty segment (leading, trailing or doubled `/`), a
    /// control character or whitespace.
    pub fn new(text: impl Into<String>) -> Result<Self, LeaseError> {
        let text = text.into();
        match broken_rule(&text) {
            None => Ok(Self(text)),
            Some(rule) => Err(LeaseError::InvalidKey { key: text, rule }),
        }
    }

    /// Builds a key from raw segments, percent-escaping each one.
    ///
    /// [`LeaseKey::segments`] gives the raw segments back.
    ///
    /// # Errors
    /// [`LeaseError::InvalidKey`] when there are no segments, a segment is
    /// empty, or the escaped key is longer than 512 bytes.
    pub fn from_segments<I, S>(segments: I) -> Result<Self, LeaseError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut text = String::new();
        let mut empty_segment = false;
        for (i, segment) in segments.into_iter().enumerate() {
            let segment = segment.as_ref();
            if i > 0 {
                text.push('/');
            }
            empty_segment |= segment.is_empty();
            text.push_str(&escape_segment(segment));
        }
        if empty_segment {
            return Err(LeaseError::InvalidKey {
                key: text,
                rule: "a segment is empty",
            });
        }
        Self::new(text)
    }

    /// The key as text, exactly as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The raw segments, percent-decoded.
    ///
    /// Exact for keys built with [`LeaseKey::from_segments`]. In a key built
    /// with [`LeaseKey::new`], a `%` that starts no valid escape is kept as it
    /// is, and an escape that decodes to invalid UTF-8 is decoded lossily.
    pub fn segments(&self) -> impl Iterator<Item = Cow<'_, str>> + '_ {
        self.0
            .split('/')
            .map(|segment| percent_decode_str(segment).decode_utf8_lossy())
    }

    /// A key under this one: `self` + `/` + `child` (already-escaped text).
    ///
    /// # Errors
    /// [`LeaseError::InvalidKey`] if the result breaks a key rule.
    pub fn join(&self, child: &str) -> Result<Self, LeaseError> {
        Self::new(format!("{}/{}", self.0, child))
    }
}

fn escape_segment(segment: &str) -> Cow<'_, str> {
    if !segment.chars().any(|c| c.is_whitespace() && !c.is_ascii()) {
        return utf8_percent_encode(segment, SEGMENT_ESCAPES).into();
    }
    let mut out = String::with_capacity(segment.len());
    for c in segment.chars() {
        if c.is_whitespace() && !c.is_ascii() {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            let mut buf = [0u8; 4];
            out.extend(utf8_percent_encode(
                c.encode_utf8(&mut buf),
                SEGMENT_ESCAPES,
            ));
        }
    }
    out.into()
}

fn broken_rule(text: &str) -> Option<&'static str> {
    if text.is_empty() {
        return Some("a key must not be empty");
    }
    if text.len() > MAX_KEY_LEN {
        return Some("a key must be at most 512 bytes");
    }
    if text.chars().any(char::is_control) {
        return Some("a key must not contain control characters");
    }
    if text.chars().any(char::is_whitespace) {
        return Some("a key must not contain whitespace");
    }
    if text.split('/').any(str::is_empty) {
        return Some("a segment is empty (leading, trailing or doubled '/')");
    }
    None
}

impl fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseKey({:?})", self.0)
    }
}

impl FromStr for LeaseKey {
    type Err = LeaseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for LeaseKey {
    type Error = LeaseError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for LeaseKey {
    type Error = LeaseError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl AsRef<str> for LeaseKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_of(text: &str) -> &'static str {
        match LeaseKey::new(text) {
            Err(LeaseError::InvalidKey { key, rule }) => {
                assert_eq!(key, text, "the error names the key");
                rule
            }
            other => panic!("{text:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn valid_keys_are_kept_verbatim() {
        for text in ["a", "jobs/export", "ü/ß/日本", "a%20b", &"x".repeat(512)] {
            assert_eq!(LeaseKey::new(text).unwrap().as_str(), text);
        }
    }

    #[test]
    fn each_rule_is_named() {
        assert!(rule_of("").contains("empty"));
        assert!(rule_of(&"x".repeat(513)).contains("512"));
        assert!(rule_of("a\u{7}b").contains("control"));
        assert!(rule_of("a b").contains("whitespace"));
        assert!(rule_of("a\u{3000}b").contains("whitespace"));
        for text in ["/a", "a/", "a//b", "/"] {
            assert!(rule_of(text).contains("segment"), "{text}");
        }
    }

    #[test]
    fn segments_round_trip_through_escaping() {
        let raw = [
            "module",
            "idv",
            "user/bob",
            "50% off",
            "tab\there",
            "nbsp\u{a0}x",
            "ü",
        ];
        let key = LeaseKey::from_segments(raw).unwrap();
        assert_eq!(key.as_str().split('/').count(), raw.len());
        let back: Vec<_> = key.segments().collect();
        assert_eq!(back, raw);
    }

    #[test]
    fn empty_segments_are_refused() {
        let err = LeaseKey::from_segments(["a", ""]).unwrap_err();
        assert!(err.to_string().contains("segment is empty"), "{err}");
        let none: [&str; 0] = [];
        assert!(LeaseKey::from_segments(none).is_err());
    }

    #[test]
    fn escaped_length_counts() {
        // 200 spaces escape to 600 bytes.
        let err = LeaseKey::from_segments([" ".repeat(200)]).unwrap_err();
        assert!(err.to_string().contains("512"), "{err}");
    }
}
