//! Nothing is skipped in silence: a case runs exactly when the factory
//! offers what it needs, a case that cannot run says which hook it lacks,
//! and a backend that is not there is reported as such — ignored on a
//! developer's machine, a failure where a backend is required.

use std::sync::Arc;

use async_trait::async_trait;
use lease_conformance::{
    Factory, Hook, Hooks, MemoryFactory, Outcome, Subject, Unavailable, all_cases, find_case,
    run_case, stamped,
};
use lease_core::{BoxError, MemoryStore};

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

/// Offers `hooks` without implementing any of them.
struct Offers(&'static [Hook]);

struct OffersHooks(&'static [Hook]);

impl Hooks for OffersHooks {
    fn offered(&self) -> &[Hook] {
        self.0
    }
}

#[async_trait]
impl Factory for Offers {
    async fn open(&self) -> Result<Subject, BoxError> {
        Ok(Subject::new(Arc::new(MemoryStore::new())).with_hooks(Arc::new(OffersHooks(self.0))))
    }
}

/// Runs one stamped test as the harness would: whether it was ignored, and
/// whether it passed.
fn run_trial(factory: impl Factory + 'static, name: &str, require_backend: bool) -> (bool, bool) {
    let test = stamped(factory, false, require_backend)
        .into_iter()
        .find(|t| t.name == name)
        .expect("the case is stamped");
    (test.ignored, (test.run)().is_ok())
}

#[tokio::test]
async fn an_unavailable_backend_is_reported_unavailable_not_failed() {
    let case = find_case("claim_acquires_a_free_key").unwrap();
    let report = run_case(Arc::new(Absent), &case).await;
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
    let report = run_case(Arc::new(Broken), &case).await;
    assert!(
        matches!(report.outcome, Outcome::Failed(_)),
        "{:?}",
        report.outcome
    );
}

#[test]
fn the_harness_ignores_every_case_of_an_unavailable_backend_on_a_developers_machine() {
    let trials = stamped(Absent, false, false);
    assert_eq!(trials.len(), all_cases().len());
    assert!(trials.iter().all(|t| t.ignored));
}

#[test]
fn an_unavailable_backend_fails_every_case_where_a_backend_is_required() {
    let trials = stamped(Absent, false, true);
    assert!(trials.iter().all(|t| !t.ignored));
    let (ignored, passed) = run_trial(Absent, "claim_acquires_a_free_key", true);
    assert!(!ignored && !passed, "an unavailable backend passed in CI");
}

#[test]
fn the_harness_runs_every_case_whose_hooks_are_offered() {
    let trials = stamped(MemoryFactory, false, false);
    let ignored: Vec<_> = trials
        .iter()
        .filter(|t| t.ignored)
        .map(|t| t.name)
        .collect();
    // The memory factory offers every hook but a server restart.
    let needing_restart: Vec<_> = all_cases()
        .into_iter()
        .filter(|c| c.needs.contains(&Hook::RestartServer))
        .map(|c| c.name)
        .collect();
    assert_eq!(ignored, needing_restart);
    assert!(!needing_restart.is_empty());
}

#[tokio::test]
async fn a_case_needing_a_hook_that_is_not_offered_is_not_run_and_names_the_hook() {
    let case = find_case("claim_repairs_a_corrupt_record").unwrap();
    assert_eq!(case.needs, [Hook::CorruptRecord]);
    let report = run_case(Arc::new(Offers(&[])), &case).await;
    assert!(
        matches!(&report.outcome, Outcome::NotRun(why) if why.contains("plant_corrupt_record")),
        "{:?}",
        report.outcome
    );
}

#[tokio::test]
async fn a_hook_offered_but_not_implemented_fails_the_case() {
    // Offering a hook runs the case that needs it; a hook that then does
    // nothing is the factory's bug, reported as a failure.
    let case = find_case("claim_repairs_a_corrupt_record").unwrap();
    let report = run_case(Arc::new(Offers(&[Hook::CorruptRecord])), &case).await;
    assert!(
        matches!(&report.outcome, Outcome::Failed(why) if why.contains("plant_corrupt_record")),
        "{:?}",
        report.outcome
    );
}

#[test]
fn an_offered_hook_is_never_skipped_by_the_harness() {
    let (ignored, passed) = run_trial(
        Offers(&[Hook::CorruptRecord]),
        "claim_repairs_a_corrupt_record",
        false,
    );
    assert!(!ignored, "a case whose hook is offered was ignored");
    assert!(!passed, "a hook that does nothing passed");
}

#[test]
fn every_hook_is_needed_by_some_case() {
    // A hook no case uses would be offered for nothing.
    for hook in Hook::ALL {
        assert!(
            all_cases().iter().any(|c| c.needs.contains(&hook)),
            "no case needs {hook}"
        );
    }
}

#[test]
fn every_rule_of_the_contract_is_checked_by_some_case() {
    for rule in lease_core::Rule::ALL {
        assert!(
            all_cases().iter().any(|c| c.contract.contains(rule)),
            "no case checks {rule}"
        );
    }
}
