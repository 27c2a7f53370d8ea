//! Reading script replies: tagged arrays of bulk strings.

use std::time::Duration;

use lease_core::{FencingToken, Holder, LeaseKey, LeaseRecord};

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
