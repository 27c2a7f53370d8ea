//! The CLI runner, as a user runs it.

use std::process::Command;

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lease-conformance"))
}

#[test]
fn memory_run_prints_the_table_and_writes_valid_reports() {
    let listed = cli()
        .args(["memory", "--list", "--filter", "release_"])
        .output()
        .unwrap();
    let expected = String::from_utf8_lossy(&listed.stdout).lines().count();
    assert!(expected >= 5, "the filter picks several cases");
    let dir = std::env::temp_dir().join(format!("lease-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (junit, json) = (dir.join("report.xml"), dir.join("report.json"));
    let output = cli()
        .args(["memory", "--filter", "release_", "--junit"])
        .arg(&junit)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("release_never_clears_a_newer_grant"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "conformance: {expected} passed, 0 failed, 0 inconclusive, 0 not run"
        )),
        "{stdout}"
    );

    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("well-formed JUnit XML");
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), expected);
    assert!(
        cases
            .iter()
            .all(|c| c.attribute("name").is_some() && c.attribute("time").is_some())
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["cases"].as_array().unwrap().len(), expected);
    assert_eq!(report["cases"][0]["outcome"]["result"], "passed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn not_run_cases_are_shown_as_such() {
    let output = cli()
        .args(["memory", "--filter", "server_restart"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(
        stdout.contains("NOT RUN")
            && stdout.contains("0 passed, 0 failed, 0 inconclusive, 1 not run")
            && stdout.contains("needs the hook restart_server"),
        "{stdout}"
    );
}

#[test]
fn fault_cases_run_by_default_and_no_faults_skips_them_loudly() {
    let run = |extra: &[&str]| {
        let mut args = vec!["memory", "--filter", "reply_is_lost"];
        args.extend_from_slice(extra);
        let output = cli().args(&args).output().unwrap();
        assert!(output.status.success(), "{output:?}");
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (stdout, _) = run(&[]);
    assert!(
        stdout.contains("2 passed, 0 failed, 0 inconclusive, 0 not run"),
        "{stdout}"
    );
    let (stdout, stderr) = run(&["--no-faults"]);
    assert!(
        stdout.contains("0 passed, 0 failed, 0 inconclusive, 2 not run")
            && stdout.contains("skipped by --no-faults")
            && stderr.contains("the fault cases are NOT RUN"),
        "{stdout}\n{stderr}"
    );
}

#[test]
fn check_history_judges_a_saved_history() {
    let dir = std::env::temp_dir().join(format!("lease-cli-history-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let claim = |client: u32, at: u64, token: u64| {
        format!(
            r#"{{"client":{client},"key":"k","op":{{"op":"claim","holder":"c{client}#1","ttl_us":100000}},"invoked_us":{at},"replied_us":{},"outcome":{{"outcome":"acquired","token":{token},"fresh":true}}}}"#,
            at + 1000
        )
    };
    // Two holders granted 10 ms apart with a 100 ms TTL: not linearizable.
    let overlapping = format!(
        r#"{{"slack_us":5000,"calls":[{},{}]}}"#,
        claim(1, 0, 1),
        claim(2, 10_000, 2)
    );
    // The second grant after the first certainly ended: fine.
    let sequential = format!(
        r#"{{"slack_us":5000,"calls":[{},{}]}}"#,
        claim(1, 0, 1),
        claim(2, 200_000, 2)
    );
    let run = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        cli().arg("check-history").arg(&path).output().unwrap()
    };
    let bad = run("overlapping.json", &overlapping);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stdout).contains(">> client  2"));
    let good = run("sequential.json", &sequential);
    assert_eq!(good.status.code(), Some(0), "{good:?}");
    let broken = run("broken.json", "{");
    assert_eq!(broken.status.code(), Some(2), "{broken:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unknown_target_is_a_clear_error() {
    let output = cli().arg("mongodb://localhost").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("target \"mongodb://localhost\"") && stderr.contains("must be memory"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_server_is_one_clear_error() {
    let output = cli().arg("redis://127.0.0.1:1").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot open a store on redis://127.0.0.1:1"),
        "{stderr}"
    );
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(
        output.stdout.is_empty(),
        "no table for a run that never started"
    );
}

#[test]
fn every_target_form_is_built_in() {
    for target in [
        "redis+cluster://127.0.0.1:1",
        "redis+sentinel://127.0.0.1:1/leases",
        "etcd://127.0.0.1:1",
    ] {
        let output = cli().arg(target).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{target}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("cannot open a store on {target}")),
            "{target}: {stderr}"
        );
        assert!(!stderr.contains("feature"), "{target}: {stderr}");
    }
}
