//! Any in-process store served over loopback TCP, so the fault cases can
//! put a [`FaultProxy`](crate::faults::FaultProxy) between its callers
//! and it: what the in-memory store (and a test double built on a store)
//! offers for [`Hook::Network`](crate::Hook::Network).
//!
//! The bytes on the wire are request ids, one per line; the call itself
//! (its arguments, its result) stays in this process, in a table keyed by
//! id. What matters is preserved: a call takes effect exactly when its
//! request reaches the server — late, if the network holds it; never, if
//! the network throws it away — and its caller learns the outcome only
//! when the reply gets back. The client keeps one connection, opened on
//! first use and again after a reset; a call that gets no reply within
//! its timeout, or whose connection breaks, ends with an error whose
//! outcome is unknown. Grants are dated from the client's send instant,
//! as [`Rule::DeadlinesNeverOverlap`](lease_core::Rule::DeadlinesNeverOverlap)
//! asks of every store. Renewals carry their client's send order and are
//! applied in it (`order.rs`, [`lease_core::Stamp`]), as
//! [`Rule::LateRequestsAreHarmless`](lease_core::Rule::LateRequestsAreHarmless)
//! asks of a store whose requests can arrive late.

mod client;
mod order;
mod server;

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use lease_core::{BoxError, DynLeaseStore};
use tokio::sync::oneshot;

type Answer = Box<dyn Any + Send>;
/// Calls waiting for their reply: id → (connection generation, waker).
type Waiting = HashMap<u64, (u64, oneshot::Sender<()>)>;
type Job = Box<dyn FnOnce(DynLeaseStore) -> BoxFuture<'static, Answer> + Send>;

/// Calls sent and not yet run, and answers not yet taken, by id: shared by
/// every client and server of the process.
static JOBS: LazyLock<Mutex<HashMap<u64, Job>>> = LazyLock::new(Mutex::default);
static ANSWERS: LazyLock<Mutex<HashMap<u64, Answer>>> = LazyLock::new(Mutex::default);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// An in-process store offered for [`Hook::Network`](crate::Hook::Network):
/// served on loopback when a fault case first asks where, reached through
/// whatever address the case gives. A factory's hooks hold one and
/// forward [`Hooks::server_address`](crate::Hooks::server_address) and
/// [`Hooks::store_through`](crate::Hooks::store_through) to it.
pub struct Wire {
    store: DynLeaseStore,
    server: tokio::sync::OnceCell<WireServer>,
    ordered: bool,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire")
            .field("server", &self.server.get())
            .finish_non_exhaustive()
    }
}

impl Wire {
    /// `store`, to be served when asked.
    pub fn new(store: DynLeaseStore) -> Self {
        Self {
            store,
            server: tokio::sync::OnceCell::new(),
            ordered: true,
        }
    }

    /// `store` served without renewal stamps: a renewal the network
    /// delivers late is applied as it arrives, after later ones, as a
    /// backend that does not order its clients' renewals would
    /// ([`lease_core::Stamp`]). For showing that the fault cases catch it.
    pub fn unordered(store: DynLeaseStore) -> Self {
        Self {
            ordered: false,
            ..Self::new(store)
        }
    }

    /// Where the store is served, starting the server on first use.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn server_address(&self) -> Result<String, BoxError> {
        let server = self
            .server
            .get_or_try_init(|| WireServer::start(self.store.clone()))
            .await?;
        Ok(server.address().to_owned())
    }

    /// A client reaching the store at `address`.
    pub fn store_through(&self, address: &str, call_timeout: Duration) -> DynLeaseStore {
        let client = WireStore::new(address, self.store.capabilities(), call_timeout);
        if self.ordered {
            Arc::new(client)
        } else {
            Arc::new(client.unordered())
        }
    }
}

pub use client::WireStore;
pub use server::WireServer;
