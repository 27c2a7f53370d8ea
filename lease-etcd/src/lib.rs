#![doc = include_str!("docs.md")]

mod claim;
mod client;
mod config;
mod create;
mod inspect;
mod keepalive;
mod leases;
mod list;
mod markers;
mod record;
mod refresh;
mod release;
mod renew;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod wait;

pub use config::{EtcdConfig, URL_SCHEMES, is_etcd_url};
pub use leases::IDLE_GRACE as POOL_IDLE_GRACE;
pub use store::{CALL_BATCH, CALLS_IN_FLIGHT, EtcdStore, LeaseCounts};
