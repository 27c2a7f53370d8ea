//! Shared etcd leases: one per TTL value, each kept alive by one stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::{Mutex, Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One etcd lease shared by every grant of one TTL.
struct Shared {
    id: i64,
    /// How much longer than the grants' TTL the etcd lease is.
    margin: Duration,
    /// When the last keep-alive that etcd answered was *sent*: the etcd
    /// lease lasts at least `margin + ttl` from then.
    fresh: watch::Sender<Instant>,
    alive: AtomicBool,
    refresh: Notify,
}

/// The shared leases of one store.
pub(crate) struct LeasePool {
    client: Client,
    call_timeout: Duration,
    leases: Mutex<HashMap<u64, Arc<Shared>>>,
    streams: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl LeasePool {
    pub fn new(client: Client, call_timeout: Duration) -> Self {
        Self {
            client,
            call_timeout,
            leases: Mutex::new(HashMap::new()),
            streams: Arc::new(AtomicUsize::new(0)),
            stop: CancellationToken::new(),
        }
    }

    /// The margin for grants of `ttl_secs`: how long a shared lease outlives
    /// a grant made just after a keep-alive.
    fn margin(ttl_secs: u64) -> Duration {
        Duration::from_secs((ttl_secs / 2).max(2))
    }

    /// An etcd lease that certainly lasts past `now + ttl_secs`: a live
    /// shared lease whose last keep-alive was sent under half a margin ago,
    /// after a keep-alive sent now if needed, or a new one.
    pub async fn lease_for(&self, ttl_secs: u64) -> Result<i64, String> {
        let mut leases = self.leases.lock().await;
        if let Some(shared) = leases.get(&ttl_secs).cloned()
            && shared.alive.load(Ordering::Acquire)
        {
            let asked = Instant::now();
            if asked.saturating_duration_since(*shared.fresh.borrow()) < shared.margin / 2 {
                return Ok(shared.id);
            }
            shared.refresh.notify_one();
            let mut fresh = shared.fresh.subscribe();
            let refreshed =
                tokio::time::timeout(self.call_timeout, fresh.wait_for(|sent| *sent >= asked))
                    .await;
            if matches!(refreshed, Ok(Ok(_))) && shared.alive.load(Ordering::Acquire) {
                return Ok(shared.id);
            }
            leases.remove(&ttl_secs);
        }
        let shared = self.grant(ttl_secs).await?;
        leases.insert(ttl_secs, shared.clone());
        Ok(shared.id)
    }

    async fn grant(&self, ttl_secs: u64) -> Result<Arc<Shared>, String> {
        let margin = Self::margin(ttl_secs);
        let lease_ttl = i64::try_from(ttl_secs + margin.as_secs()).map_err(|e| e.to_string())?;
        let mut client = self.client.clone();
        let sent = Instant::now();
        let granted = tokio::time::timeout(self.call_timeout, client.lease_grant(lease_ttl, None))
            .await
            .map_err(|_| format!("lease grant timed out after {:?}", self.call_timeout))?
            .map_err(|e| format!("lease grant failed: {e}"))?;
        let (keeper, stream) =
            tokio::time::timeout(self.call_timeout, client.lease_keep_alive(granted.id()))
                .await
                .map_err(|_| "opening the keep-alive stream timed out".to_owned())?
                .map_err(|e| format!("opening the keep-alive stream failed: {e}"))?;
        let shared = Arc::new(Shared {
            id: granted.id(),
            margin,
            fresh: watch::Sender::new(sent),
            alive: AtomicBool::new(true),
            refresh: Notify::new(),
        });
        self.streams.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(keep_alive(
            shared.clone(),
            client,
            keeper,
            stream,
            self.call_timeout,
            self.streams.clone(),
            self.stop.clone(),
        ));
        Ok(shared)
    }

    /// How many keep-alive streams this store has open.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }
}

impl Drop for LeasePool {
    fn drop(&mut self) {
        // The leases are not revoked: grants end by their own deadlines, or
        // by etcd when the leases lapse.
        self.stop.cancel();
    }
}

/// Keeps one shared lease alive every third of its margin (and on demand)
/// until the store is dropped or etcd says the lease is gone.
async fn keep_alive(
    shared: Arc<Shared>,
    mut client: Client,
    mut keeper: LeaseKeeper,
    mut stream: LeaseKeepAliveStream,
    call_timeout: Duration,
    streams: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let every = shared.margin / 3;
    let lapse = shared.margin * 3;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(every) => {}
            () = shared.refresh.notified() => {}
        }
        let sent = Instant::now();
        let answered = tokio::time::timeout(call_timeout, async {
            keeper.keep_alive().await?;
            stream.message().await
        })
        .await;
        match answered {
            Ok(Ok(Some(response))) if response.ttl() > 0 => {
                shared.fresh.send_replace(sent);
            }
            Ok(Ok(Some(_))) => {
                tracing::warn!(lease = shared.id, "etcd lease expired; its grants are lost");
                break;
            }
            failed => {
                tracing::warn!(
                    lease = shared.id,
                    ?failed,
                    "etcd keep-alive failed; retrying"
                );
                if sent.saturating_duration_since(*shared.fresh.borrow()) > lapse {
                    break;
                }
                // The stream may be broken: open a new one for the same lease.
                if let Ok(Ok((k, s))) =
                    tokio::time::timeout(call_timeout, client.lease_keep_alive(shared.id)).await
                {
                    (keeper, stream) = (k, s);
                }
            }
        }
    }
    shared.alive.store(false, Ordering::Release);
    streams.fetch_sub(1, Ordering::AcqRel);
}
