//! Running cases and reporting their outcomes.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;

use crate::{Case, CaseError, Factory, Subject, Unavailable};

/// How long one case may take before it counts as failed.
pub const CASE_LIMIT: Duration = Duration::from_secs(600);

/// How a case ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    /// The backend met the rule.
    Passed,
    /// The backend broke the rule, or could not be reached.
    Failed(String),
    /// The case could not run (a hook the factory lacks).
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
            Outcome::NotRun(_) | Outcome::Unavailable(_) => "NOT RUN",
        }
    }
}

/// One case's report.
#[derive(Clone, Debug, Serialize)]
pub struct CaseReport {
    /// The case.
    pub name: &'static str,
    /// The rule it checks.
    pub rule: &'static str,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took.
    pub seconds: f64,
    /// For generated checks: sequences or grants tried.
    pub tries: Option<u32>,
}

/// Every case of the suite, in report order.
pub fn all_cases() -> Vec<Case> {
    crate::cases::all()
}

/// The case called `name`.
pub fn find_case(name: &str) -> Option<Case> {
    all_cases().into_iter().find(|case| case.name == name)
}

/// Runs one case on a fresh subject from `factory`.
pub async fn run_case(factory: &dyn Factory, case: &Case) -> CaseReport {
    let started = Instant::now();
    let (outcome, tries) = match factory.open().await {
        Err(error) => match error.downcast_ref::<Unavailable>() {
            Some(unavailable) => (Outcome::Unavailable(unavailable.to_string()), None),
            None => (
                Outcome::Failed(format!("the factory could not open a store: {error}")),
                None,
            ),
        },
        Ok(subject) => {
            let subject = Arc::new(subject);
            let run = tokio::spawn((case.run)(subject.clone()));
            let outcome = match tokio::time::timeout(CASE_LIMIT, run).await {
                Err(_) => Outcome::Failed(format!("did not finish within {CASE_LIMIT:?}")),
                Ok(Err(panic)) => Outcome::Failed(format!("panicked: {panic}")),
                Ok(Ok(Ok(()))) => Outcome::Passed,
                Ok(Ok(Err(CaseError::Failed(why)))) => Outcome::Failed(why),
                Ok(Ok(Err(CaseError::NotRun(why)))) => Outcome::NotRun(why),
            };
            subject.hooks.finish().await;
            let tries = subject.tries.load(std::sync::atomic::Ordering::Relaxed);
            (outcome, (tries > 0).then_some(tries))
        }
    };
    CaseReport {
        name: case.name,
        rule: case.rule.trim(),
        outcome,
        seconds: started.elapsed().as_secs_f64(),
        tries,
    }
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
                async move { (i, run_case(&*factory, &case).await) }
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
/// Before anything runs, the factory is opened once: a backend that is not
/// there ([`Unavailable`](crate::Unavailable)) makes every case *ignored*,
/// said loudly — never passed. Cases the factory declares in
/// [`Factory::expected_not_run`] are ignored too. A case that ends not run
/// without being declared fails.
pub fn test_main(factory: impl Factory + 'static) -> std::process::ExitCode {
    let mut arguments = libtest_mimic::Arguments::from_args();
    if arguments.test_threads.is_none() {
        arguments.test_threads = std::env::var("RUST_TEST_THREADS")
            .ok()
            .and_then(|n| n.parse().ok());
    }
    let listing = arguments.list;
    libtest_mimic::run(&arguments, trials(factory, listing)).exit_code()
}

/// The tests [`test_main`] runs: one per case, ignored where the backend is
/// unavailable or the factory declares the case not run. `listing` skips
/// the probe (nothing will run).
#[doc(hidden)]
pub fn trials(factory: impl Factory + 'static, listing: bool) -> Vec<libtest_mimic::Trial> {
    let factory: Arc<dyn Factory> = Arc::new(factory);
    let unavailable = if listing {
        None
    } else {
        runtime().block_on(probe(&*factory))
    };
    if let Some(why) = &unavailable {
        eprintln!("\n!!! NOT RUN: every conformance case: {why}\n");
    }
    let declared = factory.expected_not_run().to_vec();
    all_cases()
        .into_iter()
        .map(|case| {
            let ignored = unavailable.is_some() || declared.contains(&case.name);
            let factory = factory.clone();
            libtest_mimic::Trial::test(case.name, move || {
                let report = runtime().block_on(run_case(&*factory, &case));
                match report.outcome {
                    Outcome::Passed => Ok(()),
                    Outcome::Failed(why) => Err(format!("rule: {}\n{why}", report.rule).into()),
                    Outcome::NotRun(why) => Err(format!(
                        "not run: {why}.\nOffer the hook, or list the case in Factory::expected_not_run."
                    )
                    .into()),
                    Outcome::Unavailable(why) => Err(format!("the backend went away: {why}").into()),
                }
            })
            .with_ignored_flag(ignored)
        })
        .collect()
}

/// Why the factory's backend is not there, if it says so.
async fn probe(factory: &dyn Factory) -> Option<String> {
    match factory.open().await {
        Ok(subject) => {
            subject.hooks.finish().await;
            None
        }
        Err(error) => error.downcast_ref::<Unavailable>().map(ToString::to_string),
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
