//! The suite's reports: a table for people, JUnit XML and JSON for machines.

use std::fmt::Write as _;
use std::path::Path;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use lease_conformance::{CaseReport, Outcome};

/// A plain-text table: case, result, time, tries.
pub fn table(reports: &[CaseReport]) -> String {
    let width = reports
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:<7}  {:>8}  {:>6}",
        "case", "result", "time", "tries"
    );
    let _ = writeln!(out, "{}", "-".repeat(width + 29));
    for r in reports {
        let tries = r.tries.map(|t| t.to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<width$}  {:<7}  {:>7.2}s  {:>6}",
            r.name,
            r.outcome.label(),
            r.seconds,
            tries
        );
    }
    let count = |label| {
        reports
            .iter()
            .filter(|r| r.outcome.label() == label)
            .count()
    };
    let _ = writeln!(
        out,
        "\nconformance: {} passed, {} failed, {} inconclusive, {} not run",
        count("PASS"),
        count("FAIL"),
        count("INCONCLUSIVE"),
        count("NOT RUN")
    );
    for r in reports {
        if let Outcome::Failed(why)
        | Outcome::Inconclusive(why)
        | Outcome::NotRun(why)
        | Outcome::Unavailable(why) = &r.outcome
        {
            let _ = writeln!(
                out,
                "\n{} {}\n  checks: {}\n  rules: lease_core::Rule::{}\n  {}",
                r.outcome.label(),
                r.name,
                r.rule,
                r.contract.join(", lease_core::Rule::"),
                why.replace('\n', "\n  ")
            );
        }
    }
    out
}

/// JUnit XML, one test case per case; inconclusive cases are `<error>`
/// (the run could not judge them), not-run cases `<skipped>`.
pub fn junit(target: &str, reports: &[CaseReport]) -> String {
    let mut suite = TestSuite::new(format!("lease-conformance {target}"));
    for r in reports {
        let status = match &r.outcome {
            Outcome::Passed => TestCaseStatus::success(),
            Outcome::Failed(why) => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_message(why.lines().next().unwrap_or_default().to_owned());
                status.set_description(why.clone());
                status
            }
            // Not a failure of the backend: the runner could not judge.
            Outcome::Inconclusive(why) => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
                status.set_message(format!(
                    "inconclusive: {}",
                    why.lines().next().unwrap_or_default()
                ));
                status.set_description(why.clone());
                status
            }
            Outcome::NotRun(why) | Outcome::Unavailable(why) => {
                let mut status = TestCaseStatus::skipped();
                status.set_message(why.clone());
                status
            }
        };
        let mut case = TestCase::new(r.name, status);
        case.set_classname("lease_conformance");
        case.set_time(std::time::Duration::from_secs_f64(r.seconds));
        suite.add_test_case(case);
    }
    let mut report = Report::new("lease-conformance");
    report.add_test_suite(suite);
    report
        .to_string()
        .unwrap_or_else(|e| format!("<!-- junit serialisation failed: {e} -->"))
}

/// The reports as JSON: `{"target", "cases": [{"name", "rule",
/// "contract", "outcome": {"result", "detail"}, "seconds", "tries",
/// "attempts", "starved"}]}`.
pub fn json(target: &str, reports: &[CaseReport]) -> String {
    let cases: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "rule": r.rule,
                "contract": r.contract,
                "outcome": { "result": r.outcome.name(), "detail": r.outcome.detail() },
                "seconds": r.seconds,
                "tries": r.tries,
                "attempts": r.attempts,
                "starved": r.starved,
            })
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({ "target": target, "cases": cases }))
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Writes `text` to `path`, naming the path on failure.
pub fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
