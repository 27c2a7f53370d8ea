#![doc = include_str!("docs.md")]

// Layered as the crate docs' map shows: a file uses only those above it there.
mod claim;
mod client;
mod config;
mod connection;
mod inspect;
mod list;
mod markers;
mod notify;
mod open;
mod release;
mod renew;
mod reply;
mod scripts;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod wait;

pub use config::{RedisConfig, URL_SCHEMES, is_redis_url};
#[doc(hidden)]
pub use scripts::script_source;
pub use store::{CALL_BATCH, CALLS_IN_FLIGHT, RedisStore};
