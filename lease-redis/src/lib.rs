#![doc = include_str!("docs.md")]
#![doc = include_str!("guarantees.md")]

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

#[cfg(test)]
mod tests {
    /// The guarantee table is written once, in `guarantees.md`; README
    /// shows it too and must not drift from it.
    #[test]
    fn readme_shows_the_guarantee_table_as_written() {
        let readme = include_str!("../../README.md");
        let shown: Vec<&str> = readme.lines().map(str::trim).collect();
        let table: Vec<&str> = include_str!("guarantees.md").lines().collect();
        let at = shown.iter().position(|line| *line == table[0]);
        let at = at.expect("README shows the guarantee table");
        assert_eq!(
            shown[at..at + table.len()],
            table[..],
            "README's guarantee table differs from guarantees.md"
        );
    }
}
