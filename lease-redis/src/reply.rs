//! The record and reply codec: the record text a renewal or release sends
//! (as `lua/prelude.lua` stores it), and reading script replies — tagged
//! arrays of bulk strings, or (claims) one string of lines — into records
//! and errors.

use std::time::Duration;

use lease_core::{Fence, FencingToken, Holder, LeaseError, LeaseKey, LeaseRecord, Op};

use crate::config::BACKEND;

/// The record of `fence`'s live grant, as `lua/prelude.lua` stores it: a
/// renewal or release sends it whole, so the script compares text and
/// parses nothing.
pub(crate) fn fence_record(fence: &Fence) -> String {
    format!(
        "v3\n{}\n{}\n{}",
        fence.holder.id(),
        fence.holder.incarnation(),
        fence.token.0
    )
}

/// A fence as the scripts that parse it take it: id, incarnation, token.
pub(crate) fn fence_args(fence: &Fence) -> [Vec<u8>; 3] {
    [
        fence.holder.id().as_bytes().to_vec(),
        fence.holder.incarnation().as_bytes().to_vec(),
        fence.token.0.to_string().into_bytes(),
    ]
}

/// A script's reply as it came: a tag and its fields.
pub(crate) struct Reply(pub Vec<Vec<u8>>);

/// A script's reply, decoded: every tag a script answers with, in one
/// place (each script's header in `src/lua/` lists the ones it uses).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `acquired TOKEN FRESH`: a grant, fresh when `FRESH` is `1`.
    Acquired { token: FencingToken, fresh: bool },
    /// `held ID INCARNATION TOKEN REMAINING_US`: the live grant.
    Held {
        holder: Holder,
        token: FencingToken,
        remaining: Duration,
    },
    /// `kept REMAINING_US`: a renewal that changed nothing, a later one of
    /// the same store having been applied; the grant has that much left.
    Kept { remaining: Duration },
    /// `quarantined REMAINING_US`: no grant until the restart quarantine ends.
    Quarantined { remaining: Duration },
    /// `free`: no live grant.
    Free,
    /// `corrupt DETAIL`: a record or value that cannot be read.
    Corrupt(String),
    /// `set`: a marker put.
    Set,
    /// `conflict EXISTING`: a marker holds another value.
    Conflict(String),
    /// `deleted`: a marker deleted.
    Deleted,
    /// `absent`: no marker or value.
    Absent,
    /// `value BYTES`: a marker or guarded value.
    Value(Vec<u8>),
    /// `written`: a guarded write applied.
    Written,
}

impl Reply {
    /// A reply sent as one string, its fields one per line (claims: see
    /// `claim_one` in `lua/prelude.lua`; none of their fields holds a line
    /// break).
    pub fn lines(text: &[u8]) -> Self {
        Self(text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect())
    }

    fn tag(&self) -> &[u8] {
        self.0.first().map_or(&[], Vec::as_slice)
    }

    fn bytes(&self, i: usize) -> Result<&[u8], String> {
        self.0
            .get(i)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("reply {} has no field {i}", self.describe()))
    }

    fn text(&self, i: usize) -> Result<String, String> {
        String::from_utf8(self.bytes(i)?.to_vec()).map_err(|_| format!("field {i} is not UTF-8"))
    }

    fn number(&self, i: usize) -> Result<u64, String> {
        let text = self.text(i)?;
        text.parse()
            .map_err(|_| format!("field {i} is not a number: {text:?}"))
    }

    fn describe(&self) -> String {
        let fields: Vec<_> = self
            .0
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        format!("{fields:?}")
    }

    /// The reply decoded, or why it cannot be.
    pub fn answer(&self) -> Result<Answer, String> {
        let micros = |i| self.number(i).map(Duration::from_micros);
        Ok(match self.tag() {
            b"acquired" => Answer::Acquired {
                token: FencingToken(self.number(1)?),
                fresh: self.bytes(2)? == b"1",
            },
            b"held" => Answer::Held {
                holder: Holder::new(self.text(1)?, self.text(2)?)
                    .map_err(|e| format!("stored holder is invalid: {e}"))?,
                token: FencingToken(self.number(3)?),
                remaining: micros(4)?,
            },
            b"kept" => Answer::Kept {
                remaining: micros(1)?,
            },
            b"quarantined" => Answer::Quarantined {
                remaining: micros(1)?,
            },
            b"free" => Answer::Free,
            b"corrupt" => Answer::Corrupt(self.text(1)?),
            b"set" => Answer::Set,
            b"conflict" => Answer::Conflict(self.text(1)?),
            b"deleted" => Answer::Deleted,
            b"absent" => Answer::Absent,
            b"value" => Answer::Value(self.bytes(1)?.to_vec()),
            b"written" => Answer::Written,
            _ => return Err(format!("unknown reply {}", self.describe())),
        })
    }

    /// The reply decoded, a malformed one as the error of `op` on `key`.
    pub fn decode(&self, op: Op, key: &LeaseKey) -> Result<Answer, LeaseError> {
        self.answer().map_err(|why| malformed(op, key, why))
    }
}

/// Says once per quarantine (not once per refused claim) that the restart
/// quarantine is in force.
fn log_quarantine(key: &LeaseKey, remaining: Duration) {
    static UNTIL: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let now = std::time::Instant::now();
    let mut until = UNTIL.lock().unwrap_or_else(|p| p.into_inner());
    if until.is_none_or(|until| now >= until) {
        *until = Some(now + remaining);
        tracing::warn!(
            %key,
            left_ms = remaining.as_millis() as u64,
            "restart quarantine in force: redis lost its data; no grant until it ends"
        );
    }
}

impl Answer {
    /// The record a `held` or `quarantined` answer shows for `key` (a
    /// quarantined key shows as held by `restart-quarantine#redis`).
    pub fn record(self, key: &LeaseKey) -> Option<LeaseRecord> {
        let (holder, token, remaining) = match self {
            Answer::Held {
                holder,
                token,
                remaining,
            } => (holder, token, remaining),
            Answer::Quarantined { remaining } => (
                {
                    log_quarantine(key, remaining);
                    Holder::new("restart-quarantine", "redis").expect("a valid holder")
                },
                FencingToken(0),
                remaining,
            ),
            _ => return None,
        };
        Some(LeaseRecord {
            key: key.clone(),
            holder,
            token,
            remaining,
        })
    }

    /// The live record after a refusal: `held`, or none for `free`.
    pub fn current(self, op: Op, key: &LeaseKey) -> Result<Option<LeaseRecord>, LeaseError> {
        match self {
            Answer::Free => Ok(None),
            held @ Answer::Held { .. } => Ok(held.record(key)),
            other => Err(other.unexpected(op, key)),
        }
    }

    /// The error for an answer `op` does not expect: a corrupt record or a
    /// conflicting marker as such, anything else a malformed reply.
    pub fn unexpected(self, op: Op, key: &LeaseKey) -> LeaseError {
        match self {
            Answer::Corrupt(detail) => LeaseError::Corrupt {
                key: key.clone(),
                detail,
            },
            Answer::Conflict(existing) => LeaseError::Conflict {
                key: key.clone(),
                existing,
            },
            other => malformed(op, key, format!("unexpected reply {other:?}")),
        }
    }
}

pub(crate) fn malformed(op: Op, key: &LeaseKey, why: String) -> LeaseError {
    // The script ran; only its reply is unreadable.
    LeaseError::backend(
        BACKEND,
        op,
        key,
        op.is_mutating(),
        format!("malformed reply: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(fields: &[&str]) -> Reply {
        Reply(fields.iter().map(|f| f.as_bytes().to_vec()).collect())
    }

    fn key() -> LeaseKey {
        LeaseKey::new("jobs/nightly").unwrap()
    }

    #[test]
    fn every_tag_decodes_to_its_answer() {
        let holder = Holder::new("wörker 7", "boot #3").unwrap();
        let cases = [
            (
                vec!["acquired", "42", "1"],
                Answer::Acquired {
                    token: FencingToken(42),
                    fresh: true,
                },
            ),
            (
                vec!["acquired", "42", "0"],
                Answer::Acquired {
                    token: FencingToken(42),
                    fresh: false,
                },
            ),
            (
                vec!["held", "wörker 7", "boot #3", "7", "1500"],
                Answer::Held {
                    holder,
                    token: FencingToken(7),
                    remaining: Duration::from_micros(1500),
                },
            ),
            (
                vec!["kept", "2500"],
                Answer::Kept {
                    remaining: Duration::from_micros(2500),
                },
            ),
            (
                vec!["quarantined", "2000000"],
                Answer::Quarantined {
                    remaining: Duration::from_secs(2),
                },
            ),
            (vec!["free"], Answer::Free),
            (vec!["corrupt", "a hash"], Answer::Corrupt("a hash".into())),
            (vec!["set"], Answer::Set),
            (
                vec!["conflict", "poisoned"],
                Answer::Conflict("poisoned".into()),
            ),
            (vec!["deleted"], Answer::Deleted),
            (vec!["absent"], Answer::Absent),
            (vec!["value", ""], Answer::Value(Vec::new())),
            (vec!["written"], Answer::Written),
        ];
        for (fields, answer) in cases {
            assert_eq!(reply(&fields).answer(), Ok(answer), "{fields:?}");
        }
        assert_eq!(
            reply(&["value", "\0x"]).answer(),
            Ok(Answer::Value(b"\0x".to_vec()))
        );
    }

    #[test]
    fn a_reply_of_lines_is_its_fields() {
        let holder = Holder::new("wörker 7", "boot #3").unwrap();
        assert_eq!(
            Reply::lines("held\nwörker 7\nboot #3\n7\n1500".as_bytes()).answer(),
            Ok(Answer::Held {
                holder,
                token: FencingToken(7),
                remaining: Duration::from_micros(1500),
            })
        );
        assert_eq!(
            Reply::lines(b"acquired\n42\n1").answer(),
            Ok(Answer::Acquired {
                token: FencingToken(42),
                fresh: true,
            })
        );
        let short = Reply::lines(b"acquired\n42").answer();
        assert!(short.is_err_and(|e| e.contains("has no field 2")));
        assert!(Reply::lines(b"").answer().is_err());
    }

    #[test]
    fn malformed_replies_say_what_is_wrong() {
        for (fields, why) in [
            (vec!["acquired", "x", "1"], "field 1 is not a number"),
            (vec!["acquired", "42"], "has no field 2"),
            (vec!["held", "a", "1", "7"], "has no field 4"),
            (vec!["held", "", "1", "7", "5"], "stored holder is invalid"),
            (vec!["granted", "1"], "unknown reply"),
            (vec![], "unknown reply"),
        ] {
            let answer = reply(&fields).answer();
            assert!(
                answer.as_ref().is_err_and(|e| e.contains(why)),
                "{fields:?}: {answer:?}"
            );
        }
        let error = reply(&["acquired"]).decode(Op::Claim, &key()).unwrap_err();
        assert!(
            error.is_indeterminate(),
            "a claim whose reply is unreadable may have applied"
        );
    }

    #[test]
    fn answers_out_of_place_are_errors_naming_the_key() {
        let k = key();
        assert_eq!(Answer::Free.current(Op::Renew, &k).unwrap(), None);
        let held = Answer::Held {
            holder: Holder::new("a", "1").unwrap(),
            token: FencingToken(9),
            remaining: Duration::from_millis(5),
        };
        assert_eq!(
            held.current(Op::Renew, &k).unwrap().map(|r| r.token),
            Some(FencingToken(9))
        );
        assert!(matches!(
            Answer::Corrupt("x".into()).current(Op::Renew, &k),
            Err(LeaseError::Corrupt { .. })
        ));
        assert!(matches!(
            Answer::Conflict("v".into()).unexpected(Op::PutMarker, &k),
            LeaseError::Conflict { .. }
        ));
        let odd = Answer::Set
            .current(Op::Inspect, &k)
            .unwrap_err()
            .to_string();
        assert!(
            odd.contains("unexpected reply Set") && odd.contains("jobs/nightly"),
            "{odd}"
        );
        let quarantined = Answer::Quarantined {
            remaining: Duration::from_secs(1),
        }
        .record(&k)
        .unwrap();
        assert_eq!(quarantined.holder.id(), "restart-quarantine");
    }
}
