//! The client side: calls sent as request ids, answers awaited.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use lease_core::{
    BoxError, Capabilities, Claim, Cursor, DynLeaseStore, Fence, Grant, Holder, LeaseError,
    LeaseKey, LeaseRecord, LeaseStore, Listed, Op, Page,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::order::RenewalOrder;
use super::{ANSWERS, Answer, JOBS, Job, NEXT_ID, Waiting};

/// The client side: a [`LeaseStore`] whose every call crosses the wire.
pub struct WireStore {
    address: String,
    capabilities: Capabilities,
    call_timeout: Duration,
    connection: Arc<tokio::sync::Mutex<Option<Connection>>>,
    /// Calls waiting for their reply: id → (connection, waker).
    waiting: Arc<Mutex<Waiting>>,
    generation: AtomicU64,
    /// Renewals stamped, and applied in the order sent unless the wire
    /// was built without ([`super::Wire::unordered`]).
    order: Arc<RenewalOrder>,
}

struct Connection {
    generation: u64,
    write: OwnedWriteHalf,
    reader: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl std::fmt::Debug for WireStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireStore")
            .field("address", &self.address)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

impl WireStore {
    /// A client of the store served at `address`, with that store's
    /// capabilities, giving up on a call after `call_timeout`.
    pub fn new(address: &str, capabilities: Capabilities, call_timeout: Duration) -> Self {
        Self {
            address: address.to_owned(),
            capabilities,
            call_timeout,
            connection: Arc::default(),
            waiting: Arc::default(),
            generation: AtomicU64::new(0),
            order: Arc::new(RenewalOrder::new(true)),
        }
    }

    /// The same client, its renewals applied in whatever order they reach
    /// the server.
    pub(super) fn unordered(mut self) -> Self {
        self.order = Arc::new(RenewalOrder::new(false));
        self
    }

    /// Runs `job` on the server's store, within `limit`.
    async fn call<T: Send + 'static>(
        &self,
        op: Op,
        key: &LeaseKey,
        limit: Duration,
        job: impl FnOnce(DynLeaseStore) -> BoxFuture<'static, T> + Send + 'static,
    ) -> Result<T, LeaseError> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let job: Job =
            Box::new(move |store| Box::pin(async move { Box::new(job(store).await) as Answer }));
        JOBS.lock().unwrap().insert(id, job);
        let broken = |why: BoxError| LeaseError::Backend {
            backend: self.capabilities.backend,
            op,
            key: key.clone(),
            indeterminate: true,
            source: why,
        };
        let exchange = async {
            let replied = self.send(id).await.map_err(|e| broken(e.into()))?;
            replied
                .await
                .map_err(|_| broken("the connection was lost before the reply".into()))?;
            let answer = ANSWERS.lock().unwrap().remove(&id);
            answer
                .and_then(|answer| answer.downcast::<T>().ok())
                .map(|answer| *answer)
                .ok_or_else(|| broken("the reply named no answer".into()))
        };
        let outcome = tokio::time::timeout(limit, exchange).await;
        self.waiting.lock().unwrap().remove(&id);
        outcome.unwrap_or(Err(LeaseError::Timeout {
            op,
            key: key.clone(),
            after: limit,
        }))
    }

    /// Sends request `id`, connecting first if needed; the receiver fires
    /// when its reply arrives and fails if the connection breaks first.
    async fn send(&self, id: u64) -> std::io::Result<oneshot::Receiver<()>> {
        let mut slot = self.connection.lock().await;
        if slot.is_none() {
            *slot = Some(self.connect().await?);
        }
        let connection = slot.as_mut().expect("connected above");
        let (wake, replied) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap()
            .insert(id, (connection.generation, wake));
        if let Err(e) = connection
            .write
            .write_all(format!("{id}\n").as_bytes())
            .await
        {
            *slot = None;
            return Err(e);
        }
        Ok(replied)
    }

    async fn connect(&self) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(&self.address).await?;
        let _ = stream.set_nodelay(true);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let (read, write) = stream.into_split();
        let waiting = self.waiting.clone();
        let slot = Arc::downgrade(&self.connection);
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(id) = line.trim().parse::<u64>() else {
                    break;
                };
                if let Some((_, wake)) = waiting.lock().unwrap().remove(&id) {
                    let _ = wake.send(());
                } else {
                    // Its caller gave up: nobody takes the answer.
                    ANSWERS.lock().unwrap().remove(&id);
                }
            }
            // Broken: the calls still waiting on it fail, the next call
            // reconnects.
            waiting
                .lock()
                .unwrap()
                .retain(|_, (on, _)| *on != generation);
            if let Some(slot) = slot.upgrade() {
                let mut slot = slot.lock().await;
                if slot.as_ref().is_some_and(|c| c.generation == generation) {
                    // Dropping it would abort this very task: take it out
                    // and forget the handle instead.
                    if let Some(mut connection) = slot.take() {
                        connection.reader = tokio::spawn(async {});
                    }
                }
            }
        });
        Ok(Connection {
            generation,
            write,
            reader,
        })
    }

    /// A grant dated from the client's send instant, as every store's is.
    fn dated(grant: Grant, sent: Instant) -> Grant {
        Grant::new(grant.fence, grant.ttl, sent, grant.fresh)
    }

    fn dated_claim(claim: Claim, sent: Instant) -> Claim {
        match claim {
            Claim::Acquired(grant) => Claim::Acquired(Self::dated(grant, sent)),
            busy => busy,
        }
    }
}

#[async_trait]
impl LeaseStore for WireStore {
    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }

    async fn claim(
        &self,
        key: &LeaseKey,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError> {
        let sent = Instant::now();
        let (k, h) = (key.clone(), holder.clone());
        let job = move |s: DynLeaseStore| -> BoxFuture<'static, _> {
            Box::pin(async move { s.claim(&k, &h, ttl).await })
        };
        let claim = self.call(Op::Claim, key, self.call_timeout, job).await??;
        Ok(Self::dated_claim(claim, sent))
    }

    async fn reclaim(
        &self,
        observed: &Fence,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Claim, LeaseError> {
        let sent = Instant::now();
        let (o, h) = (observed.clone(), holder.clone());
        let job = move |s: DynLeaseStore| -> BoxFuture<'static, _> {
            Box::pin(async move { s.reclaim(&o, &h, ttl).await })
        };
        let claim = self
            .call(Op::Reclaim, &observed.key, self.call_timeout, job)
            .await??;
        Ok(Self::dated_claim(claim, sent))
    }

    async fn renew(&self, fence: &Fence, ttl: Duration) -> Result<Grant, LeaseError> {
        let sent = Instant::now();
        let f = fence.clone();
        let order = self.order.clone();
        let stamp = order.stamp();
        let job = move |s: DynLeaseStore| -> BoxFuture<'static, _> {
            Box::pin(async move { order.renew(&s, &f, ttl, stamp).await })
        };
        let grant = self
            .call(Op::Renew, &fence.key, self.call_timeout, job)
            .await??;
        Ok(Self::dated(grant, sent))
    }

    async fn renew_many(&self, renewals: &[(Fence, Duration)]) -> Vec<Result<Grant, LeaseError>> {
        let Some((first, _)) = renewals.first() else {
            return Vec::new();
        };
        let sent = Instant::now();
        let order = self.order.clone();
        let batch: Vec<_> = renewals
            .iter()
            .map(|(fence, ttl)| (fence.clone(), *ttl, order.stamp()))
            .collect();
        let job = move |s: DynLeaseStore| -> BoxFuture<'static, _> {
            Box::pin(async move { order.renew_many(&s, &batch).await })
        };
        match self
            .call(Op::Renew, &first.key, self.call_timeout, job)
            .await
        {
            Ok(answers) => answers
                .into_iter()
                .map(|answer| answer.map(|grant| Self::dated(grant, sent)))
                .collect(),
            Err(error) => renewals
                .iter()
                .map(|(fence, _)| Err(self.same_error(&error, &fence.key)))
                .collect(),
        }
    }

    async fn release(&self, fence: &Fence) -> Result<bool, LeaseError> {
        let f = fence.clone();
        let job = move |s: DynLeaseStore| -> BoxFuture<'static, _> {
            Box::pin(async move { s.release(&f).await })
        };
        self.call(Op::Release, &fence.key, self.call_timeout, job)
            .await?
    }

    async fn inspect(&self, key: &LeaseKey) -> Result<Option<LeaseRecord>, LeaseError> {
        let k = key.clone();
        let job = move |s: DynLeaseStore| -> BoxFuture<'static, _> {
            Box::pin(async move { s.inspect(&k).await })
        };
        self.call(Op::Inspect, key, self.call_timeout, job).await?
    }

    async fn put_marker(&self, key: &LeaseKey, value: &str) -> Result<(), LeaseError> {
        let (k, v) = (key.clone(), value.to_owned());
        let job = move |s: DynLeaseStore| -> BoxFuture<'static, _> {
            Box::pin(async move { s.put_marker(&k, &v).await })
        };
        self.call(Op::PutMarker, key, self.call_timeout, job)
            .await?
    }

    async fn delete_marker(&self, key: &LeaseKey, value: &str) -> Result<bool, LeaseError> {
        let (k, v) = (key.clone(), value.to_owned());
        let job = move |s: DynLeaseStore| -> BoxFuture<'static, _> {
            Box::pin(async move { s.delete_marker(&k, &v).await })
        };
        self.call(Op::DeleteMarker, key, self.call_timeout, job)
            .await?
    }

    async fn get_marker(&self, key: &LeaseKey) -> Result<Option<String>, LeaseError> {
        let k = key.clone();
        let job = move |s: DynLeaseStore| -> BoxFuture<'static, _> {
            Box::pin(async move { s.get_marker(&k).await })
        };
        self.call(Op::GetMarker, key, self.call_timeout, job)
            .await?
    }

    async fn guarded_write(
        &self,
        fence: &Fence,
        target: &LeaseKey,
        value: &[u8],
    ) -> Result<(), LeaseError> {
        let (f, t, v) = (fence.clone(), target.clone(), value.to_vec());
        let job = move |s: DynLeaseStore| -> BoxFuture<'static, _> {
            Box::pin(async move { s.guarded_write(&f, &t, &v).await })
        };
        self.call(Op::GuardedWrite, target, self.call_timeout, job)
            .await?
    }

    async fn read_guarded(&self, target: &LeaseKey) -> Result<Option<Vec<u8>>, LeaseError> {
        let t = target.clone();
        let job = move |s: DynLeaseStore| -> BoxFuture<'static, _> {
            Box::pin(async move { s.read_guarded(&t).await })
        };
        self.call(Op::ReadGuarded, target, self.call_timeout, job)
            .await?
    }

    async fn wait_free(&self, key: &LeaseKey, timeout: Duration) -> Result<bool, LeaseError> {
        let k = key.clone();
        let job = move |s: DynLeaseStore| -> BoxFuture<'static, _> {
            Box::pin(async move { s.wait_free(&k, timeout).await })
        };
        self.call(Op::Wait, key, timeout + self.call_timeout, job)
            .await?
    }

    async fn list(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Listed>, LeaseError> {
        let (p, f) = (prefix.clone(), from.cloned());
        let job = move |s: DynLeaseStore| -> BoxFuture<'static, _> {
            Box::pin(async move { s.list(&p, f.as_ref(), limit).await })
        };
        self.call(Op::List, prefix, self.call_timeout, job).await?
    }

    async fn list_markers(
        &self,
        prefix: &LeaseKey,
        from: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<(LeaseKey, String)>, LeaseError> {
        let (p, f) = (prefix.clone(), from.cloned());
        let job = move |s: DynLeaseStore| -> BoxFuture<'static, _> {
            Box::pin(async move { s.list_markers(&p, f.as_ref(), limit).await })
        };
        self.call(Op::ListMarkers, prefix, self.call_timeout, job)
            .await?
    }
}

impl WireStore {
    /// The error a whole batch's call ended in, for one of its keys.
    fn same_error(&self, error: &LeaseError, key: &LeaseKey) -> LeaseError {
        match error {
            LeaseError::Timeout { op, after, .. } => LeaseError::Timeout {
                op: *op,
                key: key.clone(),
                after: *after,
            },
            other => LeaseError::Backend {
                backend: self.capabilities.backend,
                op: Op::Renew,
                key: key.clone(),
                indeterminate: true,
                source: other.to_string().into(),
            },
        }
    }
}
