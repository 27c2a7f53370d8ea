//! The Lua scripts, one per operation, each with the shared prelude.

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/prelude.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
}

/// The scripts, hashed once per store.
pub(crate) struct Scripts {
    pub claim: Script,
    pub renew: Script,
    pub renew_many: Script,
    pub release: Script,
    pub inspect: Script,
    pub inspect_many: Script,
    pub guarded_write: Script,
    pub read_value: Script,
    pub read_values: Script,
    pub marker_put: Script,
    pub marker_delete: Script,
}

impl Scripts {
    /// Every script, to load them at once.
    pub fn all(&self) -> [&Script; 11] {
        [
            &self.claim,
            &self.renew,
            &self.renew_many,
            &self.release,
            &self.inspect,
            &self.inspect_many,
            &self.guarded_write,
            &self.read_value,
            &self.read_values,
            &self.marker_put,
            &self.marker_delete,
        ]
    }

    pub fn new() -> Self {
        Self {
            claim: script!("claim.lua"),
            renew: script!("renew.lua"),
            renew_many: script!("renew_many.lua"),
            release: script!("release.lua"),
            inspect: script!("inspect.lua"),
            inspect_many: script!("inspect_many.lua"),
            guarded_write: script!("guarded_write.lua"),
            read_value: script!("read_value.lua"),
            read_values: script!("read_values.lua"),
            marker_put: script!("marker_put.lua"),
            marker_delete: script!("marker_delete.lua"),
        }
    }
}
