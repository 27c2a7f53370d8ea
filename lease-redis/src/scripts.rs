//! The Lua scripts, one per operation, each with the prelude functions it
//! calls.

use redis::Script;

const PRELUDE: &str = include_str!("lua/prelude.lua");

macro_rules! script {
    ($file:literal) => {
        Script::new(&with_prelude(include_str!(concat!("lua/", $file))))
    };
}

/// `body` after the prelude's functions it calls, directly or through
/// each other, in the prelude's order. Redis runs a script's text from
/// the top on every call, so each function defined is a closure built per
/// call: a release that needs one helper should not build twelve.
fn with_prelude(body: &str) -> String {
    // The prelude's paragraphs; those defining a function, by name.
    let functions: Vec<(&str, &str)> = PRELUDE
        .split("\n\n")
        .filter_map(|paragraph| {
            let at = paragraph.find("local function ")? + "local function ".len();
            let name = paragraph[at..].split('(').next()?;
            Some((name, paragraph))
        })
        .collect();
    let mut needed = vec![false; functions.len()];
    let mut scanned = vec![body];
    while let Some(text) = scanned.pop() {
        for (i, (name, paragraph)) in functions.iter().enumerate() {
            if !needed[i] && calls(text, name) {
                needed[i] = true;
                scanned.push(paragraph);
            }
        }
    }
    let mut script: String = functions
        .iter()
        .zip(needed)
        .filter(|(_, needed)| *needed)
        .map(|((_, paragraph), _)| format!("{paragraph}\n\n"))
        .collect();
    script.push_str(body);
    script
}

/// Whether `text` calls the function `name`: `name(` not preceded by a
/// character of an identifier.
fn calls(text: &str, name: &str) -> bool {
    let call = format!("{name}(");
    text.match_indices(&call).any(|(at, _)| {
        !text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// The text of the script `name` (`claim`, `release`, … as in
/// `src/lua/`) as the store sends it: for benches that weigh the store's
/// client work against its scripts sent bare. The scripts' arguments are
/// in each file's header; they are not a stable interface.
#[doc(hidden)]
pub fn script_source(name: &str) -> Option<String> {
    let body = match name {
        "claim" => include_str!("lua/claim.lua"),
        "release" => include_str!("lua/release.lua"),
        "renew" => include_str!("lua/renew.lua"),
        "inspect" => include_str!("lua/inspect.lua"),
        _ => return None,
    };
    Some(with_prelude(body))
}

/// The scripts, hashed once per store.
pub(crate) struct Scripts {
    pub claim: Script,
    pub claim_many: Script,
    pub renew: Script,
    pub renew_many: Script,
    pub release: Script,
    pub release_many: Script,
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
    pub fn all(&self) -> [&Script; 13] {
        [
            &self.claim,
            &self.claim_many,
            &self.release_many,
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
            claim_many: script!("claim_many.lua"),
            release_many: script!("release_many.lua"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn defines(script: &str, name: &str) -> bool {
        script.contains(&format!("local function {name}("))
    }

    #[test]
    fn a_script_gets_the_functions_it_calls_and_theirs() {
        let renew_many = with_prelude(include_str!("lua/renew_many.lua"));
        for name in [
            "renew_one",
            "is_own",
            "read_record",
            "get_string",
            "held",
            "fmt",
        ] {
            assert!(defines(&renew_many, name), "renew_many lacks {name}");
        }
        for name in ["now_us", "inspect_one", "read_one", "string_kind"] {
            assert!(!defines(&renew_many, name), "renew_many defines {name}");
        }
        let claim = with_prelude(include_str!("lua/claim.lua"));
        for name in [
            "claim_one",
            "read_floor",
            "parse_record",
            "is_fence",
            "quarantine_left",
            "now_us",
        ] {
            assert!(defines(&claim, name), "claim lacks {name}");
        }
        for name in ["read_record", "get_string", "is_own", "renew_one"] {
            assert!(!defines(&claim, name), "claim defines {name}");
        }
        // Definitions come before their callers, as in the prelude.
        assert!(renew_many.find("function get_string(") < renew_many.find("function read_record("));
    }

    #[test]
    fn every_prelude_function_is_called_by_some_script() {
        let texts: Vec<String> = [
            include_str!("lua/claim.lua"),
            include_str!("lua/claim_many.lua"),
            include_str!("lua/release_many.lua"),
            include_str!("lua/renew.lua"),
            include_str!("lua/renew_many.lua"),
            include_str!("lua/release.lua"),
            include_str!("lua/inspect.lua"),
            include_str!("lua/inspect_many.lua"),
            include_str!("lua/guarded_write.lua"),
            include_str!("lua/read_value.lua"),
            include_str!("lua/read_values.lua"),
            include_str!("lua/marker_put.lua"),
            include_str!("lua/marker_delete.lua"),
        ]
        .map(with_prelude)
        .into();
        for paragraph in PRELUDE.split("\n\n") {
            if let Some(at) = paragraph.find("local function ") {
                let name = paragraph[at + 15..].split('(').next().unwrap();
                assert!(
                    texts.iter().any(|t| defines(t, name)),
                    "no script uses {name}"
                );
            }
        }
    }
}
