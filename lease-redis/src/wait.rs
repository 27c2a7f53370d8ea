//! Waiting for a key to be free (rule: a waiter wakes soon after a
//! release): the loop is `lease_core::wait_until_free`; a look subscribes
//! to the namespace's release channel, then inspects the key.

use std::time::Duration;

use lease_core::{LeaseError, LeaseKey, Looked};

use crate::client::Client;
use crate::notify::Notifier;

impl Client {
    pub(crate) async fn wait_free(
        &self,
        notifier: &Notifier,
        key: &LeaseKey,
        timeout: Duration,
    ) -> Result<bool, LeaseError> {
        // Expiry publishes nothing: a look is due when the grant is due to
        // end, and at least every `wait_recheck` in case a message was
        // missed.
        let every = (self.config.wait_recheck, Duration::from_millis(1));
        // Only the first look waits for the subscription to be up; later
        // ones take it as it is, so a broken subscription slows no re-check.
        let mut first = true;
        let up_within = timeout.min(self.config.connect_timeout);
        lease_core::wait_until_free(timeout, every, || {
            let limit = if std::mem::take(&mut first) {
                up_within
            } else {
                Duration::ZERO
            };
            self.look(notifier, key, limit)
        })
        .await
    }

    /// Subscribed first, then the record: no release falls between them.
    async fn look<'a>(
        &self,
        notifier: &Notifier,
        key: &'a LeaseKey,
        limit: Duration,
    ) -> Result<Looked<impl Future<Output = ()> + 'a>, LeaseError> {
        let mut released = notifier.listen(limit).await;
        let remaining = match self.inspect(key).await {
            Ok(None) | Err(LeaseError::Corrupt { .. }) => return Ok(Looked::Free),
            Ok(Some(record)) => record.remaining,
            Err(error) => return Err(error),
        };
        let freed = async move {
            while let Ok(released_key) = released.recv().await {
                if released_key == key.as_str() {
                    return;
                }
            }
        };
        Ok(Looked::Held { remaining, freed })
    }
}
