//! `lease-conformance TARGET`: runs the conformance suite against the
//! in-memory store, a Redis server, Cluster or Sentinel deployment, or an
//! etcd cluster, and prints a table (JUnit XML and JSON on request). Every
//! target form of `lease-connect` runs as built by default.
//!
//! `lease-conformance check-history FILE` checks a saved history again
//! (what a failed workload case wrote).
//!
//! Exit status: 0 when every case that ran passed; 1 when a case failed (the
//! backend broke a rule); 3 when none failed but some stayed inconclusive
//! (the runner was too starved to judge them, so they were not checked);
//! 2 for bad arguments or a target that cannot be opened.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use lease_conformance::{Factory, MemoryFactory, Outcome, Subject, all_cases, run_cases};
use lease_connect::Backend;
use lease_core::BoxError;
use lease_etcd::testing::EtcdFactory;
use lease_redis::testing::RedisFactory;

mod report;

/// Run the lease conformance suite against a backend.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Exit status: 0 every case that ran passed; 1 a case failed (the backend broke a rule); \
3 none failed but some stayed inconclusive (the runner was too starved to judge them); \
2 bad arguments or a target that cannot be opened."
)]
struct Args {
    /// `memory`, `redis://HOST:PORT[/DB]`, `redis+cluster://HOST:PORT[,HOST:PORT...]`,
    /// `redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER`, `etcd://HOST:PORT[,HOST:PORT...]`
    /// (`rediss`, `etcds` for TLS).
    target: String,
    /// Write a JUnit XML report here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Write a JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run only the cases whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Cases run at once.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Sequences for the state-machine test (overrides LEASE_CONFORMANCE_CASES).
    #[arg(long)]
    cases: Option<u32>,
    /// Skip the fault cases (a fault proxy between a store and the
    /// server), which run by default wherever the target can be proxied;
    /// the report lists them as not run.
    #[arg(long)]
    no_faults: bool,
    /// List the cases and the rules they check, then exit.
    #[arg(long)]
    list: bool,
}

/// The factory for a target URL: the adapter's own test support, each
/// case in a fresh namespace of the server.
fn factory(target: &str) -> Result<Arc<dyn Factory>, String> {
    let parsed = lease_connect::parse(&lease_connect::Target::new(target));
    Ok(match parsed.map_err(|e| e.to_string())? {
        Backend::Memory => Arc::new(MemoryFactory),
        Backend::Redis(config) => Arc::new(RedisFactory::new(config)),
        Backend::Etcd(config) => Arc::new(EtcdFactory::new(config)),
    })
}

/// A factory whose subjects use the command line's sizes.
struct Tuned {
    inner: Arc<dyn Factory>,
    property_cases: Option<u32>,
    no_faults: bool,
}

#[async_trait::async_trait]
impl Factory for Tuned {
    async fn open(&self) -> Result<Subject, BoxError> {
        let mut subject = self.inner.open().await?;
        if let Some(cases) = self.property_cases {
            subject.settings.property_cases = cases;
        }
        if self.no_faults {
            subject = subject.withholding(
                lease_conformance::Hook::Network,
                "the fault cases were skipped by --no-faults",
            );
        }
        Ok(subject)
    }
}

/// `lease-conformance check-history FILE`: checks a history a fault or
/// workload case saved (JSON) again. Exit 0 linearizable, 1 not, 2 when
/// the file cannot be read.
fn check_history(file: Option<&String>) -> std::process::ExitCode {
    let Some(file) = file else {
        eprintln!("usage: lease-conformance check-history FILE");
        return std::process::ExitCode::from(2);
    };
    let history: lease_conformance::history::History = match std::fs::read(file)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
    {
        Ok(history) => history,
        Err(why) => {
            eprintln!("lease-conformance: cannot read the history {file}: {why}");
            return std::process::ExitCode::from(2);
        }
    };
    match lease_conformance::history::check(&history) {
        Ok(()) => {
            println!(
                "linearizable: {} calls over {} keys",
                history.calls.len(),
                history
                    .calls
                    .iter()
                    .map(|c| c.key.as_str())
                    .collect::<std::collections::HashSet<_>>()
                    .len()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(violation) => {
            println!("{violation}");
            std::process::ExitCode::from(1)
        }
    }
}

fn main() -> std::process::ExitCode {
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(String::as_str) == Some("check-history") {
        return check_history(raw.get(2));
    }
    let args = Args::parse();
    let mut cases = all_cases();
    if let Some(filter) = &args.filter {
        cases.retain(|case| case.name.contains(filter.as_str()));
    }
    if args.list {
        for case in &cases {
            println!("{:<48} {}", case.name, case.rule.trim());
        }
        return std::process::ExitCode::SUCCESS;
    }
    let factory = match factory(&args.target) {
        Ok(factory) => Arc::new(Tuned {
            inner: factory,
            property_cases: args.cases,
            no_faults: args.no_faults,
        }),
        Err(why) => {
            eprintln!("lease-conformance: {why}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // One store first: an unreachable or misconfigured target is one clear
    // error, not the same failure once per case.
    match runtime.block_on(factory.open()) {
        Ok(subject) => runtime.block_on(subject.hooks.finish()),
        Err(why) => {
            eprintln!(
                "lease-conformance: cannot open a store on {}: {why}",
                args.target
            );
            return std::process::ExitCode::from(2);
        }
    }
    let total = cases.len();
    eprintln!("lease-conformance: {total} cases against {}", args.target);
    if args.no_faults {
        eprintln!(
            "lease-conformance: !!! --no-faults: the fault cases are NOT RUN; a pass says nothing about lost replies, late requests, resets, partitions or a frozen server"
        );
    }
    let mut done = 0;
    let reports = runtime.block_on(run_cases(factory, cases, args.jobs, |r| {
        done += 1;
        eprintln!(
            "[{done:>3}/{total}] {:<7} {} ({:.2}s)",
            r.outcome.label(),
            r.name,
            r.seconds
        );
    }));
    print!("{}", report::table(&reports));
    let _ = std::io::stdout().flush();
    for (path, text) in [
        (
            &args.junit,
            args.junit
                .as_ref()
                .map(|_| report::junit(&args.target, &reports)),
        ),
        (
            &args.json,
            args.json
                .as_ref()
                .map(|_| report::json(&args.target, &reports)),
        ),
    ] {
        if let (Some(path), Some(text)) = (path, text)
            && let Err(why) = report::write(path, &text)
        {
            eprintln!("lease-conformance: {why}");
            return std::process::ExitCode::from(2);
        }
    }
    let ended = |f: fn(&Outcome) -> bool| reports.iter().any(|r| f(&r.outcome));
    if ended(|o| matches!(o, Outcome::Failed(_))) {
        std::process::ExitCode::FAILURE
    } else if ended(|o| matches!(o, Outcome::Inconclusive(_))) {
        std::process::ExitCode::from(3)
    } else {
        std::process::ExitCode::SUCCESS
    }
}
