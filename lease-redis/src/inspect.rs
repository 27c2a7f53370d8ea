//! Inspect (rule: inspect shows the live grant, a corrupt record as
//! such): `inspect.lua`, which also reports the restart quarantine.

use lease_core::{LeaseError, LeaseKey, LeaseRecord, Op};

use crate::client::Client;
use crate::reply::Answer;

impl Client {
    pub(crate) async fn inspect(&self, key: &LeaseKey) -> Result<Option<LeaseRecord>, LeaseError> {
        let reply = self
            .script(
                Op::Inspect,
                key,
                &self.scripts.inspect,
                &[&self.record_key(key), &self.floor_key],
                &[self.quarantine_ms.as_bytes()],
            )
            .await?;
        match reply.decode(Op::Inspect, key)? {
            quarantined @ Answer::Quarantined { .. } => Ok(quarantined.record(key)),
            other => other.current(Op::Inspect, key),
        }
    }
}
