//! Release notifications: one pub/sub subscription per store, shared by all
//! its waiters.

use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// Fans released lease keys out to the waiters of one store.
pub(crate) struct Notifier {
    clients: Vec<redis::Client>,
    channel: String,
    released: broadcast::Sender<String>,
    subscribed: watch::Sender<bool>,
    started: OnceLock<()>,
    stop: CancellationToken,
    connect_timeout: Duration,
}

impl Notifier {
    /// Subscribes through the first of `clients` that answers, moving on
    /// to the next (round robin) when a subscription fails.
    pub fn new(clients: Vec<redis::Client>, channel: String, connect_timeout: Duration) -> Self {
        Self {
            clients,
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
                self.clients.clone(),
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
    clients: Vec<redis::Client>,
    channel: String,
    released: broadcast::Sender<String>,
    subscribed: watch::Sender<bool>,
    stop: CancellationToken,
    connect_timeout: Duration,
) {
    let mut backoff = Duration::from_millis(50);
    for client in clients.iter().cycle() {
        if stop.is_cancelled() {
            return;
        }
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
                if let Ok(key) = message.get_payload::<String>() {
                    let _ = released.send(key);
                }
            }
            Err::<(), _>("subscription closed".to_owned())
        };
        tokio::select! {
            () = stop.cancelled() => return,
            Err(why) = session => {
                subscribed.send_replace(false);
                tracing::debug!(%why, "redis release subscription down; reconnecting");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
