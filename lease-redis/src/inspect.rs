//! Inspect (rule: inspect shows the live grant, a corrupt record as
//! such): `inspect.lua`, which also reports the restart quarantine.

use lease_core::{LeaseError, LeaseKey, LeaseRecord, Op};

use crate::client::Client;
use crate::reply::{corrupt_or_malformed, current, malformed, quarantine_record};

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
        match reply.tag() {
            b"corrupt" => Err(corrupt_or_malformed(Op::Inspect, key, &reply)),
            b"quarantined" => quarantine_record(key, &reply)
                .map(Some)
                .map_err(|why| malformed(Op::Inspect, key, why)),
            _ => current(Op::Inspect, key, &reply),
        }
    }
}
