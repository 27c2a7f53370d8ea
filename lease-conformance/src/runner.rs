//! Running cases and reporting their outcomes.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use crate::{Case, CaseError, Factory, Hook, Subject, Unavailable};

/// How long one try of a case may take before it counts as failed.
pub const CASE_LIMIT: Duration = Duration::from_secs(600);

/// How many times a case is tried while its runner starves: each try after
/// the first doubles the room (the TTLs) the one before had.
pub const STARVED_TRIES: u32 = 4;

/// How a case ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The backend met the rule.
    Passed,
    /// The backend broke the rule, or could not be reached.
    Failed(String),
    /// The runner was too starved to judge the rule on every try: no
    /// evidence against the backend, and no check made either.
    Inconclusive(String),
    /// The case could not run: it needs a hook the factory does not offer.
    NotRun(String),
    /// The factory's backend was not there ([`Unavailable`](crate::Unavailable)).
    Unavailable(String),
}

impl Outcome {
    /// The outcome's label in reports.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "PASS",
            Outcome::Failed(_) => "FAIL",
            Outcome::Inconclusive(_) => "INCONCLUSIVE",
            Outcome::NotRun(_) | Outcome::Unavailable(_) => "NOT RUN",
        }
    }

    /// The outcome's name in machine-readable reports.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed(_) => "failed",
            Outcome::Inconclusive(_) => "inconclusive",
            Outcome::NotRun(_) => "not_run",
            Outcome::Unavailable(_) => "unavailable",
        }
    }

    /// Why it ended so: `None` for a pass.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Outcome::Passed => None,
            Outcome::Failed(why)
            | Outcome::Inconclusive(why)
            | Outcome::NotRun(why)
            | Outcome::Unavailable(why) => Some(why),
        }
    }
}

/// One case's report.
#[derive(Clone, Debug)]
pub struct CaseReport {
    /// The case.
    pub name: &'static str,
    /// What it checks.
    pub rule: &'static str,
    /// The rules of the contract it checks: variants of
    /// [`lease_core::Rule`], whose docs state them.
    pub contract: Vec<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took, every try together.
    pub seconds: f64,
    /// For generated checks: sequences or grants tried.
    pub tries: Option<u32>,
    /// How many times it ran: more than once when its runner starved.
    pub attempts: u32,
    /// Why the tries before the last were starved, in order.
    pub starved: Vec<String>,
}

/// Every case of the suite, in report order.
pub fn all_cases() -> Vec<Case> {
    crate::cases::all()
}

/// The case called `name`.
pub fn find_case(name: &str) -> Option<Case> {
    all_cases().into_iter().find(|case| case.name == name)
}

/// Runs one case on fresh subjects from `factory`: again, with more room,
/// while its runner starves (up to [`STARVED_TRIES`] times).
pub async fn run_case(factory: Arc<dyn Factory>, case: &Case) -> CaseReport {
    let started = Instant::now();
    let mut report = CaseReport {
        name: case.name,
        rule: case.rule.trim(),
        contract: case
            .contract
            .iter()
            .map(|rule| format!("{rule:?}"))
            .collect(),
        outcome: Outcome::Passed,
        seconds: 0.0,
        tries: None,
        attempts: 0,
        starved: Vec::new(),
    };
    for attempt in 0..STARVED_TRIES {
        report.attempts = attempt + 1;
        let (outcome, tries) = try_case(factory.clone(), *case, 1 << attempt).await;
        report.tries = tries;
        match outcome {
            Err(why) => {
                report.starved.push(why);
                report.outcome = Outcome::Inconclusive(format!(
                    "the runner starved on each of {} tries (TTLs up to {}x the first), so the rule could not be judged; last: {}",
                    report.attempts,
                    1 << attempt,
                    report.starved.last().map_or("", String::as_str)
                ));
            }
            Ok(outcome) => {
                report.outcome = outcome;
                break;
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// One try of a case with `room` times the base TTLs: its outcome, or why
/// its runner starved. The try runs on a thread and a runtime of its own,
/// with a ticker beside it: whatever stalls the case's thread shows as lag
/// (see [`Subject::runner_lag`]).
async fn try_case(
    factory: Arc<dyn Factory>,
    case: Case,
    room: u32,
) -> (Result<Outcome, String>, Option<u32>) {
    let failed = |why: String| (Ok(Outcome::Failed(why)), None);
    let (done, outcome) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("case {}", case.name))
        .spawn(move || {
            let ended = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(try_here(&*factory, &case, room)),
                Err(e) => failed(format!("could not start the case's runtime: {e}")),
            };
            let _ = done.send(ended);
        });
    if let Err(e) = spawned {
        return failed(format!("could not start the case's thread: {e}"));
    }
    outcome
        .await
        .unwrap_or_else(|_| failed("the case's thread panicked".into()))
}

/// One try of a case, on the current (case's own) runtime.
async fn try_here(
    factory: &dyn Factory,
    case: &Case,
    room: u32,
) -> (Result<Outcome, String>, Option<u32>) {
    let mut subject = match factory.open().await {
        Ok(subject) => subject,
        Err(error) => {
            let outcome = match error.downcast_ref::<Unavailable>() {
                Some(unavailable) => Outcome::Unavailable(unavailable.to_string()),
                None => Outcome::Failed(format!("the factory could not open a store: {error}")),
            };
            return (Ok(outcome), None);
        }
    };
    let missing = case.missing(subject.hooks.offered());
    if !missing.is_empty() {
        subject.hooks.finish().await;
        return (
            Ok(Outcome::NotRun(needs_message(
                &missing,
                &reasons(&*subject.hooks),
            ))),
            None,
        );
    }
    subject.room = room;
    subject.started = Instant::now();
    let slot = subject.lag.register();
    let ticker = tokio::spawn(subject.lag.clone().tick_in(slot));
    let subject = Arc::new(subject);
    let run = tokio::spawn((case.run)(subject.clone()));
    let outcome = match tokio::time::timeout(CASE_LIMIT, run).await {
        Err(_) => Ok(Outcome::Failed(format!(
            "did not finish within {CASE_LIMIT:?}"
        ))),
        Ok(Err(panic)) => Ok(Outcome::Failed(format!("panicked: {panic}"))),
        Ok(Ok(Ok(()))) => Ok(Outcome::Passed),
        Ok(Ok(Err(CaseError::Failed(why)))) => Ok(Outcome::Failed(why)),
        Ok(Ok(Err(CaseError::Starved(why)))) => Err(why),
    };
    ticker.abort();
    subject.hooks.finish().await;
    let tries = subject.tries.load(std::sync::atomic::Ordering::Relaxed);
    (outcome, (tries > 0).then_some(tries))
}

fn needs_message(missing: &[Hook], reasons: &[(Hook, String)]) -> String {
    let names: Vec<_> = missing.iter().map(|hook| hook.method()).collect();
    let why: Vec<_> = reasons
        .iter()
        .filter(|(hook, _)| missing.contains(hook))
        .map(|(_, why)| why.as_str())
        .collect();
    format!(
        "needs the hook{} {}, which the factory does not offer (Hooks::offered){}",
        if names.len() == 1 { "" } else { "s" },
        names.join(", "),
        if why.is_empty() {
            String::new()
        } else {
            format!(": {}", why.join("; "))
        }
    )
}

/// The reasons `hooks` gives for what it does not offer.
fn reasons(hooks: &dyn crate::Hooks) -> Vec<(Hook, String)> {
    Hook::ALL
        .into_iter()
        .filter(|hook| !hooks.offered().contains(hook))
        .filter_map(|hook| Some((hook, hooks.why_not(hook)?)))
        .collect()
}

/// Whether a run must fail when its backend is not there: in CI (`CI` set
/// to anything but `false` or `0`) or with
/// `LEASE_CONFORMANCE_REQUIRE_BACKEND=1`.
pub fn backend_required() -> bool {
    let set = |name: &str| {
        std::env::var(name)
            .is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
    };
    set("CI") || set("LEASE_CONFORMANCE_REQUIRE_BACKEND")
}

/// Runs `cases`, up to `jobs` at a time, calling `progress` as each ends.
/// Reports come back in the order of `cases`.
pub async fn run_cases(
    factory: Arc<dyn Factory>,
    cases: Vec<Case>,
    jobs: usize,
    mut progress: impl FnMut(&CaseReport),
) -> Vec<CaseReport> {
    let mut reports: Vec<(usize, CaseReport)> =
        futures::stream::iter(cases.into_iter().enumerate())
            .map(|(i, case)| {
                let factory = factory.clone();
                async move { (i, run_case(factory, &case).await) }
            })
            .buffer_unordered(jobs.max(1))
            .inspect(|(_, report)| progress(report))
            .collect()
            .await;
    reports.sort_by_key(|(i, _)| *i);
    reports.into_iter().map(|(_, report)| report).collect()
}

/// The test harness for a backend's conformance tests: one test per case,
/// built from the suite's own case lists, with libtest's arguments and
/// output (`cargo test -- NAME` filters by one name, `--list` lists). Call it from a
/// test target with `harness = false`, usually through
/// [`conformance_main!`](crate::conformance_main).
///
/// Before anything runs, the factory is opened once. Cases needing a hook
/// the factory does not offer ([`Hooks::offered`](crate::Hooks::offered))
/// are *ignored*, each named on stderr with the hook — never passed. A
/// backend that is not there ([`Unavailable`](crate::Unavailable)) makes
/// every case ignored, said loudly, on a developer's machine; where a
/// backend is required ([`backend_required`]: CI) every case fails
/// instead. A case whose runner stayed starved fails as *inconclusive*,
/// saying so: it was not checked, and it is no evidence against the
/// backend.
pub fn test_main(factory: impl Factory + 'static) -> std::process::ExitCode {
    let arguments = match crate::harness::Arguments::parse(std::env::args().skip(1)) {
        Ok(arguments) => arguments,
        Err(why) => {
            eprintln!("error: {why}");
            return std::process::ExitCode::from(101);
        }
    };
    let listing = arguments.list;
    let tests = stamped(factory, listing, backend_required());
    crate::harness::run(&arguments, tests)
}

pub use crate::harness::Stamped;

/// The tests [`test_main`] runs: one per case, ignored where the case
/// needs a hook the factory lacks, or where the backend is unavailable and
/// `require_backend` is false. `listing` skips the probe (nothing will
/// run).
#[doc(hidden)]
pub fn stamped(
    factory: impl Factory + 'static,
    listing: bool,
    require_backend: bool,
) -> Vec<Stamped> {
    let factory: Arc<dyn Factory> = Arc::new(factory);
    let probed = if listing {
        Probe::Offers(Hook::ALL.to_vec(), Vec::new())
    } else {
        runtime().block_on(probe(&*factory))
    };
    let cases = all_cases();
    match &probed {
        Probe::Unavailable(why) if require_backend => eprintln!(
            "\n!!! FAILING: every conformance case: {why}; a backend is required here (CI or LEASE_CONFORMANCE_REQUIRE_BACKEND)\n"
        ),
        Probe::Unavailable(why) => eprintln!(
            "\n!!! NOT RUN: every conformance case: {why} (set LEASE_CONFORMANCE_REQUIRE_BACKEND=1 to fail instead)\n"
        ),
        Probe::Offers(offered, reasons) => {
            for case in &cases {
                let missing = case.missing(offered);
                if !missing.is_empty() {
                    eprintln!(
                        "!!! NOT RUN: {}: {}",
                        case.name,
                        needs_message(&missing, reasons)
                    );
                }
            }
        }
    }
    cases
        .into_iter()
        .map(|case| {
            let ignored = match &probed {
                Probe::Unavailable(_) => !require_backend,
                Probe::Offers(offered, _) => !case.missing(offered).is_empty(),
            };
            let factory = factory.clone();
            let run = move || {
                let report = runtime().block_on(run_case(factory, &case));
                verdict(&case, report, require_backend)
            };
            Stamped {
                name: case.name,
                ignored,
                run: Box::new(run),
            }
        })
        .collect()
}

/// A stamped test's verdict on a case's report.
fn verdict(case: &Case, report: CaseReport, require_backend: bool) -> Result<(), String> {
    match report.outcome {
        Outcome::Passed => Ok(()),
        Outcome::Failed(why) => Err(format!(
            "checks: {}\nbroke: {}\n{why}",
            report.rule,
            case.contract
                .iter()
                .map(|r| format!("lease_core::Rule::{r}"))
                .collect::<Vec<_>>()
                .join("\n   and ")
        )),
        Outcome::Inconclusive(why) => Err(format!(
            "INCONCLUSIVE, not evidence against the backend: {why}"
        )),
        Outcome::NotRun(why) => Err(format!("not run: {why}")),
        Outcome::Unavailable(why) if require_backend => Err(format!(
            "{why}; a backend is required here (CI or LEASE_CONFORMANCE_REQUIRE_BACKEND)"
        )),
        Outcome::Unavailable(why) => Err(format!("the backend went away: {why}")),
    }
}

/// What opening the factory once showed.
enum Probe {
    /// The backend is there and offers these hooks; why not the others.
    Offers(Vec<Hook>, Vec<(Hook, String)>),
    /// The backend is not there.
    Unavailable(String),
}

/// Opens the factory once. A factory failing otherwise is left to each
/// case to report.
async fn probe(factory: &dyn Factory) -> Probe {
    match factory.open().await {
        Ok(subject) => {
            let offered = subject.hooks.offered().to_vec();
            let reasons = reasons(&*subject.hooks);
            subject.hooks.finish().await;
            Probe::Offers(offered, reasons)
        }
        Err(error) => match error.downcast_ref::<Unavailable>() {
            Some(unavailable) => Probe::Unavailable(unavailable.to_string()),
            None => Probe::Offers(Hook::ALL.to_vec(), Vec::new()),
        },
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A subject is `Send + Sync`: cases share it across tasks.
const _: fn() = || {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Subject>();
};
