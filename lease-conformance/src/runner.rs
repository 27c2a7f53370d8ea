//! Running cases and reporting their outcomes.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;

use crate::{Case, CaseError, Factory, Subject};

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
        Err(error) => (
            Outcome::Failed(format!("the factory could not open a store: {error}")),
            None,
        ),
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

/// Runs the case `name` for a stamped `#[test]`, on a runtime of its own.
/// Panics (failing the test) unless it passes, or ends not run and the
/// factory declared it in [`Factory::expected_not_run`].
pub fn run_test(name: &str, factory: impl Factory + 'static) {
    let case = find_case(name).unwrap_or_else(|| panic!("no conformance case named {name}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let report = runtime.block_on(run_case(&factory, &case));
    match report.outcome {
        Outcome::Passed => {}
        Outcome::Failed(why) => panic!("{name} failed.\nrule: {}\n{why}", report.rule),
        Outcome::Unavailable(why) => {
            eprintln!("\n!!! NOT RUN: {name}: {why}\n");
        }
        Outcome::NotRun(why) if factory.expected_not_run().contains(&name) => {
            eprintln!("NOT RUN (declared by the factory): {name}: {why}");
        }
        Outcome::NotRun(why) => panic!(
            "{name} was not run: {why}.\nOffer the hook, or list the case in Factory::expected_not_run."
        ),
    }
}

/// Fails unless `stamped` names every case of the suite exactly once.
pub fn assert_all_stamped(stamped: &[&str]) {
    let all: Vec<&str> = all_cases().iter().map(|c| c.name).collect();
    let missing: Vec<_> = all.iter().filter(|n| !stamped.contains(n)).collect();
    let unknown: Vec<_> = stamped.iter().filter(|n| !all.contains(n)).collect();
    assert!(
        missing.is_empty() && unknown.is_empty() && stamped.len() == all.len(),
        "conformance_tests! is out of date: missing {missing:?}, unknown {unknown:?}"
    );
}

/// A subject is `Send + Sync`: cases share it across tasks.
const _: fn() = || {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Subject>();
};
