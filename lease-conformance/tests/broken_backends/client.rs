//! The client-side flaws: a store that reaches the double over the wire
//! and bends what its callers are told.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use lease_core::{
    Capabilities, Claim, Cursor, DynLeaseStore, Fence, Grant, Holder, LeaseError, LeaseKey,
    LeaseRecord, LeaseStore, Listed, Op, Page,
};
use tokio::time::Instant;

use crate::Flaw;

/// A client-side flaw over the wire to the double: only a network fault
/// shows it.
#[derive(Debug)]
pub(crate) struct FlawedClient {
    pub(crate) flaw: Flaw,
    pub(crate) inner: DynLeaseStore,
    /// The deadline each grant's holder was last told, for the extending
    /// flaw.
    pub(crate) told: Mutex<HashMap<Fence, Instant>>,
}

impl FlawedClient {
    /// With [`Flaw::TimeoutsSayKnown`], an error of unknown outcome says
    /// the outcome is known.
    pub(crate) fn known<T>(&self, answer: Result<T, LeaseError>) -> Result<T, LeaseError> {
        match answer {
            Err(e) if self.flaw == Flaw::TimeoutsSayKnown && e.is_indeterminate() => {
                Err(LeaseError::Backend {
                    backend: "flawed",
                    op: Op::Claim,
                    key: LeaseKey::new("flawed").unwrap(),
                    indeterminate: false,
                    source: e.to_string().into(),
                })
            }
            other => other,
        }
    }

    /// Keeps the deadline a claim told, for the extending flaw.
    pub(crate) fn told(&self, answer: &Result<Claim, LeaseError>) {
        if let Ok(Claim::Acquired(grant)) = answer {
            let mut told = self.told.lock().unwrap();
            told.insert(grant.fence.clone(), grant.deadline);
        }
    }

    /// With [`Flaw::RetriedRenewalCountedTwice`]: asks the server to push
    /// the grant's end out by as much as it takes to last `ttl` from now,
    /// reckoned from the deadline last told, and sends the request again
    /// on a new connection if its reply is lost.
    pub(crate) async fn extend(&self, fence: &Fence, ttl: Duration) -> Result<Grant, LeaseError> {
        let sent = Instant::now();
        let told = self.told.lock().unwrap().get(fence).copied();
        let by = (sent + ttl)
            .saturating_duration_since(told.unwrap_or(sent))
            .max(Duration::from_millis(1));
        let mut answer = self.inner.renew(fence, by).await;
        if answer.as_ref().is_err_and(LeaseError::is_indeterminate) {
            answer = self.inner.renew(fence, by).await;
        }
        let grant = Grant::new(answer?.fence, ttl, sent, false);
        let mut told = self.told.lock().unwrap();
        told.insert(grant.fence.clone(), grant.deadline);
        Ok(grant)
    }
}

#[async_trait]
impl LeaseStore for FlawedClient {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn claim(
        &self,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError> {
        let answer = self.inner.claim(key, holder, ttl).await;
        self.told(&answer);
        if self.flaw == Flaw::KeepsAliveAfterCutOff && answer.is_err() {
            // Re-sent in the background until granted, then kept alive.
            let (store, key, holder) = (self.inner.clone(), key.clone(), holder.clone());
            tokio::spawn(async move {
                let until = Instant::now() + Duration::from_secs(60);
                while Instant::now() < until {
                    if let Ok(Claim::Acquired(grant)) = store.claim(&key, &holder, ttl).await {
                        while Instant::now() < until && store.renew(&grant.fence, ttl).await.is_ok()
                        {
                            tokio::time::sleep(ttl / 3).await;
                        }
                        return;
                    }
                    tokio::time::sleep(ttl / 10).await;
                }
            });
        }
        self.known(answer)
    }

    async fn reclaim(
        &self,
        observed: &Fence,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError> {
        let answer = self.inner.reclaim(observed, holder, ttl).await;
        self.told(&answer);
        self.known(answer)
    }

    async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Grant, LeaseError> {
        if self.flaw == Flaw::RetriedRenewalCountedTwice {
            return self.extend(fence, ttl).await;
        }
        self.known(self.inner.renew(fence, ttl).await)
    }

    async fn renew_many(&self, renewals: &[(Fence, Duration)]) -> Vec<Result<Grant, LeaseError>> {
        let answers = self.inner.renew_many(renewals).await;
        let cut = answers.iter().any(|a| {
            matches!(
                a,
                Err(LeaseError::Backend { .. } | LeaseError::Timeout { .. })
            )
        });
        if self.flaw == Flaw::BatchCutSaysLost && cut {
            return renewals
                .iter()
                .map(|(fence, _)| Err(LeaseError::lost(fence, None)))
                .collect();
        }
        answers.into_iter().map(|a| self.known(a)).collect()
    }

    async fn release(&self, fence: &Fence) -> Result<bool, LeaseError> {
        self.known(self.inner.release(fence).await)
    }

    async fn inspect(&self, key: &LeaseKey) -> Result<Option<LeaseRecord>, LeaseError> {
        self.inner.inspect(key).await
    }

    async fn put_marker(&self, key: &LeaseKey, value: &str) -> Result<(), LeaseError> {
        self.inner.put_marker(key, value).await
    }

    async fn delete_marker(&self, key: &LeaseKey, value: &str) -> Result<bool, LeaseError> {
        self.inner.delete_marker(key, value).await
    }

    async fn get_marker(&self, key: &LeaseKey) -> Result<Option<String>, LeaseError> {
        self.inner.get_marker(key).await
    }

    async fn guarded_write(
        &self,
        fence: &Fence,
        target: &LeaseKey,
        value: &[u8],
    ) -> Result<(), LeaseError> {
        self.known(self.inner.guarded_write(fence, target, value).await)
    }

    async fn read_guarded(&self, target: &LeaseKey) -> Result<Option<Vec<u8>>, LeaseError> {
        self.inner.read_guarded(target).await
    }

    async fn wait_free(&self, key: &LeaseKey, timeout: Duration) -> Result<bool, LeaseError> {
        self.inner.wait_free(key, timeout).await
    }

    async fn list(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Listed>, LeaseError> {
        self.inner.list(prefix, from, limit).await
    }

    async fn list_markers(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<(LeaseKey, String)>, LeaseError> {
        self.inner.list_markers(prefix, from, limit).await
    }
}
