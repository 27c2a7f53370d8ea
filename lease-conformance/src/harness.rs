//! The harness of a conformance test target (`harness = false`): libtest's
//! command line and output, as much as `cargo test` and `cargo nextest`
//! use — filters, `--exact`, `--skip`, `--list` (`--format terse`),
//! `--ignored`, `--include-ignored`, `--test-threads` — with no argument
//! parser to depend on.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

/// What the command line asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Arguments {
    pub list: bool,
    exact: bool,
    ignored: bool,
    include_ignored: bool,
    quiet: bool,
    terse: bool,
    filters: Vec<String>,
    skip: Vec<String>,
    threads: Option<usize>,
}

impl Arguments {
    /// libtest's arguments (without the program name). Flags that change
    /// nothing here (`--nocapture`, `--color`, `--format`, …) are taken
    /// and ignored; an unknown flag is an error naming it.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut parsed = Self::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag.to_owned(), Some(value.to_owned()))
                }
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match flag.as_str() {
                "--list" => parsed.list = true,
                "--exact" => parsed.exact = true,
                "--ignored" => parsed.ignored = true,
                "--include-ignored" => parsed.include_ignored = true,
                "-q" | "--quiet" => parsed.quiet = true,
                "--nocapture" | "--show-output" | "--report-time" | "--test" | "--bench" => {}
                "--skip" => parsed.skip.push(value("--skip")?),
                "--test-threads" => {
                    let text = value("--test-threads")?;
                    let n = text.parse().ok().filter(|n| *n > 0);
                    let n = n.ok_or_else(|| {
                        format!("--test-threads {text:?}: must be a number above 0")
                    })?;
                    parsed.threads = Some(n);
                }
                "--format" => parsed.terse = value("--format")? == "terse",
                "--color" | "--logfile" | "-Z" => drop(value(&flag)?),
                other if other.starts_with('-') => {
                    return Err(format!(
                        "unknown option {other}: this harness takes a filter, --exact, --skip, --list, --ignored, --include-ignored and --test-threads"
                    ));
                }
                _ => parsed.filters.push(arg),
            }
        }
        Ok(parsed)
    }

    fn matches(&self, name: &str, pattern: &str) -> bool {
        if self.exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    }

    /// Whether the filters pick `name`.
    fn picks(&self, name: &str) -> bool {
        (self.filters.is_empty() || self.filters.iter().any(|f| self.matches(name, f)))
            && !self.skip.iter().any(|s| self.matches(name, s))
    }

    /// Whether an `ignored` test runs.
    fn runs(&self, ignored: bool) -> bool {
        self.include_ignored || ignored == self.ignored
    }
}

/// How a test ended.
enum Ended {
    Passed,
    Failed(String),
    Ignored,
}

/// One stamped test: its name, whether the harness ignores it, and what
/// running it gives.
#[doc(hidden)]
pub struct Stamped {
    /// The case's name.
    pub name: &'static str,
    /// Ignored by the harness: not run, said on stderr.
    pub ignored: bool,
    /// Runs the case: `Ok` only when it passed.
    pub run: Box<dyn FnOnce() -> Result<(), String> + Send>,
}

/// Lists or runs `tests` as `args` asks, printing as libtest does; exit
/// status 101 when a test failed or the arguments are bad.
pub(crate) fn run(args: &Arguments, tests: Vec<Stamped>) -> ExitCode {
    let total = tests.len();
    let picked: Vec<Stamped> = tests.into_iter().filter(|t| args.picks(t.name)).collect();
    let filtered_out = total - picked.len();
    if args.list {
        let listed: Vec<_> = picked
            .iter()
            .filter(|t| !args.ignored || t.ignored)
            .collect();
        for test in &listed {
            println!("{}: test", test.name);
        }
        if !args.quiet && !args.terse {
            println!("\n{} tests, 0 benchmarks", listed.len());
        }
        return ExitCode::SUCCESS;
    }
    println!("\nrunning {} tests", picked.len());
    let started = Instant::now();
    // Each test with whether it runs or is reported ignored.
    let queue: VecDeque<(Stamped, bool)> = picked
        .into_iter()
        .map(|t| {
            let runs = args.runs(t.ignored);
            (t, runs)
        })
        .collect();
    let count = queue.len();
    let queue = Arc::new(Mutex::new(queue));
    let (done, results) = mpsc::channel();
    let threads = args
        .threads
        .or_else(|| std::env::var("RUST_TEST_THREADS").ok()?.parse().ok())
        .or_else(|| std::thread::available_parallelism().ok().map(Into::into))
        .unwrap_or(1)
        .clamp(1, count.max(1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (queue, done) = (queue.clone(), done.clone());
            std::thread::spawn(move || {
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                    let Some((test, runs)) = next else { break };
                    let Stamped { name, run, .. } = test;
                    let ended = if !runs {
                        Ended::Ignored
                    } else {
                        match catch_unwind(AssertUnwindSafe(run)) {
                            Ok(Ok(())) => Ended::Passed,
                            Ok(Err(why)) => Ended::Failed(why),
                            Err(panic) => Ended::Failed(panic_text(&panic)),
                        }
                    };
                    if done.send((name, ended)).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    drop(done);
    let (mut passed, mut ignored, mut failures) = (0, 0, Vec::new());
    for (name, ended) in results {
        let shown = match ended {
            Ended::Passed => {
                passed += 1;
                "ok"
            }
            Ended::Ignored => {
                ignored += 1;
                "ignored"
            }
            Ended::Failed(why) => {
                failures.push((name, why));
                "FAILED"
            }
        };
        println!("test {name} ... {shown}");
    }
    for worker in workers {
        let _ = worker.join();
    }
    if !failures.is_empty() {
        println!("\nfailures:\n");
        for (name, why) in &failures {
            println!("---- {name} ----\n{why}\n");
        }
        println!("\nfailures:");
        for (name, _) in &failures {
            println!("    {name}");
        }
    }
    let verdict = if failures.is_empty() { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {passed} passed; {} failed; {ignored} ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned());
    format!(
        "panicked: {}",
        text.unwrap_or_else(|| "(no message)".into())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Arguments, String> {
        Arguments::parse(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn cargo_and_nextest_command_lines_parse() {
        let listed = parse(&["--list", "--format", "terse", "--ignored"]).unwrap();
        assert!(listed.list && listed.terse && listed.ignored && listed.filters.is_empty());
        let one = parse(&[
            "claim_acquires",
            "--exact",
            "--nocapture",
            "--test-threads=2",
        ])
        .unwrap();
        assert_eq!(
            (one.filters.as_slice(), one.exact, one.threads),
            (&["claim_acquires".to_owned()][..], true, Some(2))
        );
        let skipping = parse(&["--skip", "wait", "--skip=list", "-q", "--color", "never"]).unwrap();
        assert_eq!(skipping.skip, ["wait", "list"]);
    }

    #[test]
    fn bad_command_lines_are_named() {
        assert!(
            parse(&["--frobnicate"])
                .unwrap_err()
                .contains("--frobnicate")
        );
        assert!(
            parse(&["--test-threads", "0"])
                .unwrap_err()
                .contains("above 0")
        );
        assert!(
            parse(&["--skip"])
                .unwrap_err()
                .contains("--skip needs a value")
        );
    }

    #[test]
    fn filters_pick_and_skip_by_substring_or_exactly() {
        let args = parse(&["claim", "--skip", "after"]).unwrap();
        assert!(args.picks("claim_acquires_a_free_key"));
        assert!(!args.picks("claim_after_release_gets_higher_token"));
        assert!(!args.picks("release_frees_the_key"));
        let exact = parse(&["claim", "--exact"]).unwrap();
        assert!(!exact.picks("claim_acquires_a_free_key") && exact.picks("claim"));
        let ignored = parse(&["--ignored"]).unwrap();
        assert!(ignored.runs(true) && !ignored.runs(false));
        let all = parse(&["--include-ignored"]).unwrap();
        assert!(all.runs(true) && all.runs(false));
        let default = parse(&[]).unwrap();
        assert!(default.runs(false) && !default.runs(true));
    }

    fn test(name: &'static str, ignored: bool, outcome: Result<(), &'static str>) -> Stamped {
        Stamped {
            name,
            ignored,
            run: Box::new(move || {
                assert!(!ignored, "{name} is ignored and was run");
                outcome.map_err(str::to_owned)
            }),
        }
    }

    #[test]
    fn a_failure_or_a_panic_fails_the_run_and_ignored_tests_never_run() {
        let args = parse(&["--test-threads", "2"]).unwrap();
        let green = vec![test("a", false, Ok(())), test("b", true, Err("never"))];
        assert_eq!(run(&args, green), ExitCode::SUCCESS);
        let red = vec![
            test("a", false, Ok(())),
            test("c", false, Err("broke rule X")),
        ];
        assert_eq!(run(&args, red), ExitCode::from(101));
        let panicking = Stamped {
            name: "p",
            ignored: false,
            run: Box::new(|| panic!("boom")),
        };
        assert_eq!(run(&args, vec![panicking]), ExitCode::from(101));
        let skipped = parse(&["--skip", "c"]).unwrap();
        let red = vec![
            test("a", false, Ok(())),
            test("c", false, Err("broke rule X")),
        ];
        assert_eq!(run(&skipped, red), ExitCode::SUCCESS);
    }
}
