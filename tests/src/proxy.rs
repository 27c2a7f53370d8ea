//! A fault-injecting TCP proxy between a client and a server on loopback.
//!
//! Requests always pass, as they arrive. Replies pass, are lost (read from
//! the server and thrown away) or are delayed, as the test sets them; all
//! open connections can be reset. A lost reply is the fault a client cannot
//! tell from a lost request: the server applied it, the client never hears.
//! Losing bytes of a stream protocol (HTTP/2, RESP) leaves the connection
//! unusable, as a real broken path does: [`FaultProxy::heal`] passes replies
//! again and resets the connections, so clients reconnect.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What happens to bytes from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replies {
    /// Forwarded at once.
    Pass,
    /// Read and thrown away.
    Lose,
    /// Forwarded this long after they arrived, in order.
    Delay(Duration),
}

struct Control {
    replies: Mutex<Replies>,
    /// Bumped to reset every open connection.
    resets: watch::Sender<u64>,
}

/// A running proxy; stops (closing its connections) on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    control: Arc<Control>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("replies", &self.replies())
            .finish()
    }
}

impl FaultProxy {
    /// A proxy on a free 127.0.0.1 port in front of `upstream`
    /// (`host:port`), passing everything.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let control = Arc::new(Control {
            replies: Mutex::new(Replies::Pass),
            resets: watch::Sender::new(0),
        });
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let accept = tokio::spawn({
            let control = control.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(serve(client, upstream.clone(), control.clone()));
                }
            }
        });
        Ok(Self {
            addr,
            control,
            accept,
        })
    }

    /// Where clients connect: `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// What happens to replies from now on.
    pub fn set_replies(&self, replies: Replies) {
        *self.control.replies.lock().unwrap() = replies;
    }

    /// What happens to replies now.
    pub fn replies(&self) -> Replies {
        *self.control.replies.lock().unwrap()
    }

    /// Resets every open connection (clients see a reset, not a close).
    pub fn reset_connections(&self) {
        self.control.resets.send_modify(|n| *n += 1);
    }

    /// Passes replies again and resets the connections that lost some.
    pub fn heal(&self) {
        self.set_replies(Replies::Pass);
        self.reset_connections();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset_connections();
    }
}

async fn serve(client: TcpStream, upstream: String, control: Arc<Control>) {
    let mut resets = control.resets.subscribe();
    resets.mark_unchanged();
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // Reset, not close: a dropped path tells the client nothing politely.
    let _ = client.set_zero_linger();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    };
    // Replies go through a queue so that delays keep their order.
    let (queue, mut queued) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read_replies = async {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let due = match *control.replies.lock().unwrap() {
                Replies::Lose => continue,
                Replies::Pass => Instant::now(),
                Replies::Delay(by) => Instant::now() + by,
            };
            if queue.send((due, buffer[..n].to_vec())).is_err() {
                break;
            }
        }
        drop(queue);
        // Let queued replies drain before the connection ends.
        std::future::pending::<()>().await;
    };
    let write_replies = async {
        while let Some((due, bytes)) = queued.recv().await {
            tokio::time::sleep_until(due).await;
            if client_write.write_all(&bytes).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = requests => {}
        () = read_replies => {}
        () = write_replies => {}
        _ = resets.changed() => {}
    }
}
