//! A backend that is not there is reported as such: every case ignored by
//! the harness and *unavailable* in reports — never passed, never failed.

use async_trait::async_trait;
use lease_conformance::{
    Factory, Outcome, Subject, Unavailable, all_cases, find_case, run_case, trials,
};
use lease_core::BoxError;

struct Absent;

#[async_trait]
impl Factory for Absent {
    async fn open(&self) -> Result<Subject, BoxError> {
        Err(Box::new(Unavailable("no server on 127.0.0.1:1".into())))
    }
}

struct Broken;

#[async_trait]
impl Factory for Broken {
    async fn open(&self) -> Result<Subject, BoxError> {
        Err("connection refused".into())
    }
}

#[tokio::test]
async fn an_unavailable_backend_is_reported_unavailable_not_failed() {
    let case = find_case("claim_acquires_a_free_key").unwrap();
    let report = run_case(&Absent, &case).await;
    assert!(
        matches!(&report.outcome, Outcome::Unavailable(why) if why.contains("127.0.0.1:1")),
        "{:?}",
        report.outcome
    );
    assert_eq!(report.outcome.label(), "NOT RUN");
}

#[tokio::test]
async fn a_factory_that_fails_otherwise_fails_the_case() {
    let case = find_case("claim_acquires_a_free_key").unwrap();
    let report = run_case(&Broken, &case).await;
    assert!(
        matches!(report.outcome, Outcome::Failed(_)),
        "{:?}",
        report.outcome
    );
}

#[test]
fn the_harness_ignores_every_case_of_an_unavailable_backend() {
    let trials = trials(Absent, false);
    assert_eq!(trials.len(), all_cases().len());
    assert!(trials.iter().all(|t| t.has_ignored_flag()));
}

#[test]
fn the_harness_runs_every_case_of_an_available_backend() {
    let trials = trials(lease_conformance::MemoryFactory, false);
    let ignored: Vec<_> = trials
        .iter()
        .filter(|t| t.has_ignored_flag())
        .map(|t| t.name())
        .collect();
    // Only what the memory factory declares it cannot run.
    assert_eq!(ignored, ["tokens_increase_across_server_restart"]);
}
