//! A fault-injecting TCP proxy, for the fault cases and for anyone's own
//! fault tests: it sits between a store and its server on loopback and
//! does to the bytes what a real network does to them.
//!
//! Each client connection gets one server connection. What happens to the
//! bytes is the proxy's current [`Fault`], changed at any time with
//! [`FaultProxy::set`]:
//!
//! | fault | requests (client → server) | replies (server → client) |
//! | --- | --- | --- |
//! | [`Fault::None`] | forwarded | forwarded |
//! | [`Fault::DelayReplies`] | forwarded | forwarded late, in order |
//! | [`Fault::LoseReplies`] | forwarded | read and thrown away |
//! | [`Fault::LoseRepliesAfter`] | forwarded | passed for the first requests, then thrown away |
//! | [`Fault::HoldRequests`] | kept back | forwarded |
//! | [`Fault::HoldRequestsAfter`] | forwarded for the first requests, then kept back | forwarded |
//! | [`Fault::Freeze`] | kept back | kept back |
//! | [`Fault::Partition`] | thrown away | thrown away |
//!
//! Bytes kept back are delivered, in order, when the fault changes to one
//! that forwards them (a frozen server resuming applies what was queued
//! for it — late). [`FaultProxy::cut_held`] instead resets the client side
//! of every connection and hands over what was kept back as a [`Late`]
//! request, to be delivered on the old server connection whenever the
//! case chooses: the store has reconnected and gone on by then, which is
//! the reorder a pool or a reconnect produces. During a partition new
//! connections are accepted but never reach the server.
//!
//! Losing bytes of a stream protocol (RESP, HTTP/2) leaves a connection
//! unusable, as a real broken path does: [`FaultProxy::heal`] forwards
//! again and resets every connection, so clients reconnect. A reset is a
//! TCP RST (zero linger), never a polite close.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// What the proxy does to the bytes passing it (see the module's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Everything is forwarded at once.
    None,
    /// Replies are forwarded this long after they arrived, in order.
    DelayReplies(Duration),
    /// Requests reach the server; replies are thrown away.
    LoseReplies,
    /// Requests reach the server; replies pass while at most this many
    /// reads of requests have been forwarded since the fault was set, and
    /// are thrown away after: the last step of a call of several round
    /// trips is applied, unanswered.
    LoseRepliesAfter(u32),
    /// Requests are kept back; replies are forwarded.
    HoldRequests,
    /// Requests are forwarded while at most this many reads of requests
    /// have been forwarded since the fault was set, and kept back after;
    /// replies are forwarded: the last step of a call of several round
    /// trips is the one kept back.
    HoldRequestsAfter(u32),
    /// Both directions are kept back, as by a paused server.
    Freeze,
    /// Both directions are thrown away; new connections never reach the
    /// server.
    Partition,
}

impl Fault {
    /// Whether requests read now are kept back, `forwarded` reads of
    /// requests having gone to the server since the fault was set.
    fn holds_requests(self, forwarded: u64) -> bool {
        match self {
            Fault::HoldRequests | Fault::Freeze => true,
            Fault::HoldRequestsAfter(passed) => forwarded >= u64::from(passed),
            _ => false,
        }
    }
}

enum Command {
    /// Reset the client side; hand over the server side and the requests
    /// kept back.
    Cut(oneshot::Sender<Late>),
}

struct Shared {
    fault: watch::Sender<Fault>,
    /// Bumped to reset every open connection.
    resets: watch::Sender<u64>,
    connections: Mutex<HashMap<u64, mpsc::UnboundedSender<Command>>>,
    next_id: AtomicU64,
    /// Request bytes that reached the server, over all connections.
    forwarded: AtomicU64,
    /// Reads of requests forwarded since the fault was last set.
    requests_since_set: AtomicU64,
}

/// A running proxy; stops (resetting its connections) on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: String,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .field("fault", &self.fault())
            .finish()
    }
}

impl FaultProxy {
    /// A proxy on a free 127.0.0.1 port in front of `upstream`
    /// (`host:port`, an `http://` in front allowed), forwarding
    /// everything.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            fault: watch::Sender::new(Fault::None),
            resets: watch::Sender::new(0),
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            requests_since_set: AtomicU64::new(0),
        });
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let accept = tokio::spawn({
            let shared = shared.clone();
            let upstream = upstream.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(serve(client, upstream.clone(), shared.clone()));
                }
            }
        });
        Ok(Self {
            addr,
            upstream,
            shared,
            accept,
        })
    }

    /// Where clients connect: `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Where the proxy forwards to.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// What the proxy does from now on. Bytes kept back under the fault
    /// before are delivered if the new one forwards them.
    pub fn set(&self, fault: Fault) {
        self.shared.requests_since_set.store(0, Ordering::Relaxed);
        self.shared.fault.send_replace(fault);
    }

    /// What the proxy does now.
    pub fn fault(&self) -> Fault {
        *self.shared.fault.borrow()
    }

    /// Request bytes forwarded to the server so far, over all connections.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }

    /// Resets every open connection (clients see a reset, not a close);
    /// what was kept back is thrown away.
    pub fn reset_connections(&self) {
        self.shared.resets.send_modify(|n| *n += 1);
    }

    /// Forwards everything again and resets every connection, so clients
    /// whose streams lost bytes reconnect.
    pub fn heal(&self) {
        self.set(Fault::None);
        self.reset_connections();
    }

    /// Resets the client side of every connection and hands over the
    /// requests kept back (by [`Fault::HoldRequests`], its `After` form or
    /// [`Fault::Freeze`]), one [`Late`] per connection that held any,
    /// still unsent on its old
    /// server connection. Forwards everything from now on: the store
    /// reconnects and goes on while the late requests wait.
    pub async fn cut_held(&self) -> Vec<Late> {
        let commands: Vec<_> = self
            .shared
            .connections
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        let mut late = Vec::new();
        for command in commands {
            let (give, take) = oneshot::channel();
            if command.send(Command::Cut(give)).is_ok()
                && let Ok(request) = take.await
                && !request.held.is_empty()
            {
                late.push(request);
            }
        }
        self.set(Fault::None);
        late
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset_connections();
    }
}

/// Requests kept back on a connection whose client side is gone: they
/// reach the server, on the connection they were sent on, only when
/// [`Late::deliver`] is called.
pub struct Late {
    held: Vec<u8>,
    server_read: OwnedReadHalf,
    server_write: OwnedWriteHalf,
}

impl std::fmt::Debug for Late {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Late")
            .field("bytes", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl Late {
    /// How many bytes are waiting.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Sends the requests to the server and waits, up to `wait`, for its
    /// first reply bytes (thrown away): once this returns true the server
    /// has acted on at least the first request. Multiplexed protocols may
    /// answer in several parts; the connection stays open `wait` longer in
    /// the background so the rest is applied too.
    pub async fn deliver(mut self, wait: Duration) -> bool {
        if self.server_write.write_all(&self.held).await.is_err() {
            return false;
        }
        let mut buffer = vec![0; 16 * 1024];
        let answered = matches!(
            tokio::time::timeout(wait, self.server_read.read(&mut buffer)).await,
            Ok(Ok(n)) if n > 0
        );
        // Keep reading (and so the connection open) for a while: the rest
        // of what was sent is applied before the connection ends.
        tokio::spawn(async move {
            let drain = async {
                while let Ok(n) = self.server_read.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(wait, drain).await;
            drop(self.server_write);
        });
        answered
    }
}

mod connection;

use connection::serve;
