//! Reaching a lease store by URL: what the `lease-admin` tool and the
//! examples connect with.
//!
//! [`connect`] takes `memory`, `redis://[USER:PASSWORD@]HOST:PORT[/DB]`,
//! `rediss://…`, `etcd://HOST:PORT[,HOST:PORT…]` or `etcds://…`, with the
//! Redis namespace or etcd prefix to work in.

mod target;

pub use target::{Target, connect};
