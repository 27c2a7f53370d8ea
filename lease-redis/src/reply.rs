//! The record and reply codec: the record text a renewal or release sends
//! (as `lua/prelude.lua` stores it), and reading script replies — tagged
//! arrays of bulk strings — into records and errors.

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

/// A script's reply: a tag and its fields.
pub(crate) struct Reply(pub Vec<Vec<u8>>);

impl Reply {
    pub fn tag(&self) -> &[u8] {
        self.0.first().map_or(&[], Vec::as_slice)
    }

    pub fn bytes(&self, i: usize) -> Result<&[u8], String> {
        self.0
            .get(i)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("reply {:?} has no field {i}", self.describe()))
    }

    pub fn text(&self, i: usize) -> Result<String, String> {
        String::from_utf8(self.bytes(i)?.to_vec()).map_err(|_| format!("field {i} is not UTF-8"))
    }

    pub fn number(&self, i: usize) -> Result<u64, String> {
        let text = self.text(i)?;
        text.parse()
            .map_err(|_| format!("field {i} is not a number: {text:?}"))
    }

    /// The live record in a `held` reply.
    pub fn record(&self, key: &LeaseKey) -> Result<LeaseRecord, String> {
        let holder = Holder::new(self.text(1)?, self.text(2)?)
            .map_err(|e| format!("stored holder is invalid: {e}"))?;
        Ok(LeaseRecord {
            key: key.clone(),
            holder,
            token: FencingToken(self.number(3)?),
            remaining: Duration::from_micros(self.number(4)?),
        })
    }

    pub fn describe(&self) -> String {
        let fields: Vec<_> = self
            .0
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        format!("{fields:?}")
    }
}

/// A busy record for a key under the restart quarantine.
pub(crate) fn quarantine_record(key: &LeaseKey, reply: &Reply) -> Result<LeaseRecord, String> {
    Ok(LeaseRecord {
        key: key.clone(),
        holder: Holder::new("restart-quarantine", "redis").expect("a valid holder"),
        token: FencingToken(0),
        remaining: Duration::from_micros(reply.number(1)?),
    })
}

/// The current record after a refusal: `held` or `free`.
pub(crate) fn current(
    op: Op,
    key: &LeaseKey,
    reply: &Reply,
) -> Result<Option<LeaseRecord>, LeaseError> {
    match reply.tag() {
        b"free" => Ok(None),
        b"held" => reply
            .record(key)
            .map(Some)
            .map_err(|why| malformed(op, key, why)),
        _ => Err(malformed(
            op,
            key,
            format!("unexpected reply {}", reply.describe()),
        )),
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

/// A marker reply that is neither success nor absence: a conflict with the
/// existing value, a corrupt key, or an unreadable reply.
pub(crate) fn marker_refusal(op: Op, key: &LeaseKey, reply: &Reply) -> LeaseError {
    match (reply.tag(), reply.text(1)) {
        (b"conflict", Ok(existing)) => LeaseError::Conflict {
            key: key.clone(),
            existing,
        },
        _ => corrupt_or_malformed(op, key, reply),
    }
}

pub(crate) fn corrupt_or_malformed(op: Op, key: &LeaseKey, reply: &Reply) -> LeaseError {
    match (reply.tag(), reply.text(1)) {
        (b"corrupt", Ok(detail)) => LeaseError::Corrupt {
            key: key.clone(),
            detail,
        },
        _ => malformed(op, key, format!("unexpected reply {}", reply.describe())),
    }
}
