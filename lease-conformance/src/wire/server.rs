//! The server side: a store answering the requests that reach it.

use std::sync::Arc;
use std::time::Duration;

use lease_core::{Capabilities, DynLeaseStore};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::client::WireStore;
use super::{ANSWERS, JOBS};

/// A store served on a 127.0.0.1 port; stops on drop.
pub struct WireServer {
    address: String,
    capabilities: Capabilities,
    stop: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for WireServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireServer")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl WireServer {
    /// Serves `store` on a free 127.0.0.1 port.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(store: DynLeaseStore) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let capabilities = store.capabilities();
        let stop = watch::Sender::new(false);
        let accept = tokio::spawn({
            let stop = stop.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve(stream, store.clone(), stop.subscribe()));
                }
            }
        });
        Ok(Self {
            address,
            capabilities,
            stop,
            accept,
        })
    }

    /// Where it listens: `127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A client of this server's store at `address` (this server, or a
    /// proxy in front of it), giving up on a call after `call_timeout`.
    pub fn client(&self, address: &str, call_timeout: Duration) -> WireStore {
        WireStore::new(address, self.capabilities.clone(), call_timeout)
    }
}

impl Drop for WireServer {
    fn drop(&mut self) {
        self.accept.abort();
        self.stop.send_replace(true);
    }
}

/// One connection: each request line runs its call, on its own task, and
/// its id goes back when the call is done.
async fn serve(stream: TcpStream, store: DynLeaseStore, mut stop: watch::Receiver<bool>) {
    let (read, write) = stream.into_split();
    let write = Arc::new(tokio::sync::Mutex::new(write));
    let mut lines = BufReader::new(read).lines();
    loop {
        let line = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            line = lines.next_line() => line,
        };
        let Ok(Some(line)) = line else { return };
        let Ok(id) = line.trim().parse::<u64>() else {
            return;
        };
        let Some(job) = JOBS.lock().unwrap().remove(&id) else {
            continue;
        };
        let (store, write) = (store.clone(), write.clone());
        tokio::spawn(async move {
            let answer = job(store).await;
            ANSWERS.lock().unwrap().insert(id, answer);
            let _ = write
                .lock()
                .await
                .write_all(format!("{id}\n").as_bytes())
                .await;
        });
    }
}
