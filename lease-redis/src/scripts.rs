//! The Lua scripts, one per operation, each with the prelude functions it
//! calls.

use redis::Script;

const PRELUDE: &str = include_str!("lua/prelude.lua");

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

/// The scripts, each named once: the file `src/lua/NAME.lua`, the field
/// of [`Scripts`], its place in [`Scripts::all`] and in [`SOURCES`].
macro_rules! scripts {
    ($($name:ident),+ $(,)?) => {
        /// Every script's name and body (before the prelude), in order.
        pub(crate) const SOURCES: &[(&str, &str)] = &[
            $((stringify!($name), include_str!(concat!("lua/", stringify!($name), ".lua"))),)+
        ];

        /// The scripts, hashed once per store.
        pub(crate) struct Scripts {
            $(pub $name: Script,)+
        }

        impl Scripts {
            pub fn new() -> Self {
                Self {
                    $($name: Script::new(&with_prelude(include_str!(concat!(
                        "lua/",
                        stringify!($name),
                        ".lua"
                    )))),)+
                }
            }

            /// Every script, to load them at once.
            pub fn all(&self) -> Vec<&Script> {
                vec![$(&self.$name),+]
            }
        }
    };
}

scripts! {
    claim,
    claim_many,
    renew,
    renew_many,
    release,
    release_many,
    inspect,
    inspect_many,
    guarded_write,
    read_value,
    read_values,
    marker_put,
    marker_delete,
}

/// The text of the script `name` (`claim`, `release`, … as in
/// `src/lua/`) as the store sends it: for benches that weigh the store's
/// client work against its scripts sent bare. The scripts' arguments are
/// in each file's header; they are not a stable interface.
#[doc(hidden)]
pub fn script_source(name: &str) -> Option<String> {
    SOURCES
        .iter()
        .find(|(script, _)| *script == name)
        .map(|(_, body)| with_prelude(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defines(script: &str, name: &str) -> bool {
        script.contains(&format!("local function {name}("))
    }

    #[test]
    fn a_script_gets_the_functions_it_calls_and_theirs() {
        let renew_many = script_source("renew_many").unwrap();
        for name in [
            "renew_one",
            "own_value",
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
        let claim = script_source("claim").unwrap();
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
    fn every_lua_file_is_a_script() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/lua");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name != "prelude.lua")
            .collect();
        files.sort();
        let mut declared: Vec<String> = SOURCES
            .iter()
            .map(|(name, _)| format!("{name}.lua"))
            .collect();
        declared.sort();
        assert_eq!(files, declared, "src/lua and the scripts! list differ");
    }

    #[test]
    fn every_prelude_function_is_called_by_some_script() {
        let texts: Vec<String> = SOURCES.iter().map(|(_, body)| with_prelude(body)).collect();
        assert_eq!(SOURCES.len(), Scripts::new().all().len());
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
