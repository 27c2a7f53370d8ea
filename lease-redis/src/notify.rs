//! Release notifications: one pub/sub subscription per store, shared by all
//! its waiters.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::connection::SentinelPrimary;

/// Where the subscription goes.
#[derive(Clone)]
pub(crate) enum Source {
    /// Any of these servers, the next (round robin) after a failure: one
    /// server, or the nodes of a cluster, where plain `PUBLISH` reaches
    /// every node.
    Nodes(Vec<redis::Client>),
    /// The current primary under Sentinel.
    Primary(Arc<SentinelPrimary>),
}

impl Source {
    fn client(&self, attempt: usize) -> redis::Client {
        match self {
            Self::Nodes(clients) => clients[attempt % clients.len()].clone(),
            Self::Primary(primary) => primary.client(),
        }
    }
}

/// Fans released lease keys out to the waiters of one store.
pub(crate) struct Notifier {
    source: Source,
    channel: String,
    released: broadcast::Sender<String>,
    subscribed: watch::Sender<bool>,
    started: OnceLock<()>,
    stop: CancellationToken,
    connect_timeout: Duration,
}

impl Notifier {
    pub fn new(source: Source, channel: String, connect_timeout: Duration) -> Self {
        Self {
            source,
            channel,
            released: broadcast::channel(1024).0,
            subscribed: watch::Sender::new(false),
            started: OnceLock::new(),
            stop: CancellationToken::new(),
            connect_timeout,
        }
    }

    /// A receiver of released keys, starting the subscription on first use.
    /// Waits (at most `limit`) for the subscription to be in place, so a
    /// release after this returns is not missed while it is up.
    pub async fn listen(&self, limit: Duration) -> broadcast::Receiver<String> {
        self.started.get_or_init(|| {
            tokio::spawn(run(
                self.source.clone(),
                self.channel.clone(),
                self.released.clone(),
                self.subscribed.clone(),
                self.stop.clone(),
                self.connect_timeout,
            ));
        });
        let receiver = self.released.subscribe();
        let mut subscribed = self.subscribed.subscribe();
        let _ = tokio::time::timeout(limit, subscribed.wait_for(|up| *up)).await;
        receiver
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn run(
    source: Source,
    channel: String,
    released: broadcast::Sender<String>,
    subscribed: watch::Sender<bool>,
    stop: CancellationToken,
    connect_timeout: Duration,
) {
    let mut backoff = Duration::from_millis(50);
    for attempt in 0.. {
        if stop.is_cancelled() {
            return;
        }
        let client = source.client(attempt);
        let session = async {
            let mut pubsub = tokio::time::timeout(connect_timeout, client.get_async_pubsub())
                .await
                .map_err(|_| "timed out connecting".to_owned())?
                .map_err(|e| e.to_string())?;
            tokio::time::timeout(connect_timeout, pubsub.subscribe(&channel))
                .await
                .map_err(|_| "timed out subscribing".to_owned())?
                .map_err(|e| e.to_string())?;
            subscribed.send_replace(true);
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                // One message names every key a release batch freed,
                // newline-separated.
                if let Ok(keys) = message.get_payload::<String>() {
                    for key in keys.split('\n') {
                        let _ = released.send(key.to_owned());
                    }
                }
            }
            Err::<(), _>("subscription closed".to_owned())
        };
        tokio::select! {
            () = stop.cancelled() => return,
            Err(why) = session => {
                subscribed.send_replace(false);
                tracing::debug!(%why, "redis release subscription down; reconnecting");
                if let Source::Primary(primary) = &source {
                    primary.follow().await;
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
