//! The conformance suite every lease store meets, as a library anyone can
//! run against their own backend.
//!
//! # What it checks
//!
//! - **Behaviour cases**: one `pub async fn` per rule of the lease
//!   contract, named for the behaviour, its doc line quoting the rule
//!   ([`cases`]). Each gets a fresh, isolated store.
//! - **A state-machine property test** ([`cases`]'s
//!   `state_machine_agrees_with_the_model`): random sequences of every
//!   operation from several holders — one id with two incarnations among
//!   them — over a few keys, checked against a reference model that accepts
//!   either answer inside the timing uncertainty of a real server and
//!   nothing outside it. Failures shrink to a minimal sequence.
//! - **A concurrent safety check** (`concurrent_holders_never_overlap`):
//!   holders contend, write to fenced resources, pause past deadlines; their
//!   ownership windows must never overlap and tokens must increase.
//! - **Fault cases** ([`cases::faults`]): a [`faults::FaultProxy`] between
//!   a store and its server loses replies the server applied, delivers a
//!   held request late after the store reconnected, resets connections
//!   mid-batch, partitions for longer than the TTL and freezes the server;
//!   grants must still end by the server's clock and late requests must
//!   change nothing they may not. A factory opts in with
//!   [`Hook::Network`]; an in-process store is served on loopback by
//!   [`wire::Wire`].
//! - **Cross-client cases**: with a second client on the same namespace,
//!   expiry, release (and the wait it wakes) and renewal made by one client
//!   are seen by the other.
//!
//! # Timing
//!
//! An operation's effect happened somewhere between sending it and getting
//! the reply. A grant is certainly live until `sent + ttl` and certainly
//! expired after `replied + ttl + slack`; in between either answer is
//! correct. Backends declare minimum TTL, rounding and slack through
//! [`lease_core::Capabilities`]: these time the checks and never switch a
//! rule off.
//!
//! # Running it
//!
//! Implement [`Factory`] (a fresh namespace per case; optional [`Hooks`]),
//! then give it a test target with `harness = false` whose `main` runs one
//! test per case ([`conformance_main!`], built on [`test_main`]):
//!
//! ```no_run
//! // tests/conformance.rs of your backend crate
//! lease_conformance::conformance_main!(lease_conformance::MemoryFactory);
//! ```
//!
//! The tests come from the suite's own case lists, so a new case needs no
//! change on your side.
//!
//! # Verdicts
//!
//! A case *passes* when the rule was checked and held, and *fails* only on
//! evidence that the backend broke it: every failure names its
//! [`lease_core::Rule`] and, for a judgement in time, the instants
//! measured. A case whose runner was too slow to judge — a step it needed
//! before a deadline came after it, or the runner stalled through a
//! measurement — is tried again with twice the TTLs, up to
//! [`STARVED_TRIES`] times, and then reported *inconclusive*: neither
//! evidence nor a pass. Each try runs on a thread and a runtime of its own
//! beside a ticker that notes how late that thread runs, so a stall is
//! seen whether the machine or the store caused it.
//!
//! Cases that need a test hook declare it ([`Case::needs`]); they run
//! exactly when the factory's [`Hooks::offered`] lists it, and are
//! reported *not run*, naming the hook, otherwise. A factory whose backend
//! is not there ([`Unavailable`]) makes every case ignored, loudly, on a
//! developer's machine and failed where a backend is required
//! ([`backend_required`]: `CI`, or `LEASE_CONFORMANCE_REQUIRE_BACKEND=1`).
//! The `lease-conformance` binary (crate `lease-conformance-cli`) runs the
//! same cases against the in-memory store, Redis or etcd and writes a
//! table, JUnit XML and JSON. This library depends on `lease-core` and
//! what the cases need, nothing else: a backend crate depends on it, and
//! the adapters keep their factories behind their `testing` features.
//!
//! Property test sizes come from the environment ([`Settings`]):
//! `LEASE_CONFORMANCE_CASES`, `LEASE_CONFORMANCE_STEPS`,
//! `LEASE_CONFORMANCE_SAFETY_TTLS`.

#[macro_use]
pub mod cases;
mod check;
pub mod faults;
mod harness;
pub mod history;
mod hooks;
pub mod lag;
mod memory;
mod properties;
mod runner;
mod subject;
pub mod wire;

pub use cases::Case;
pub use check::{CaseError, CaseResult, Timed, Timing, acquire, holder, key, timed_claim};
pub use hooks::{Hook, Hooks, NoHooks};
pub use memory::MemoryFactory;
pub use runner::{
    CASE_LIMIT, CaseReport, Outcome, STARVED_TRIES, all_cases, backend_required, find_case,
    run_case, run_cases, stamped, test_main,
};
pub use subject::{Factory, Settings, Subject, Unavailable, fresh_namespace};

/// The `main` of a conformance test target (`harness = false`): one test
/// per case of the suite, for a factory expression. Each failure is
/// reported on its own, with the rule it broke.
///
/// ```toml
/// [[test]]
/// name = "conformance"
/// harness = false
/// ```
///
/// ```no_run
/// // tests/conformance.rs
/// lease_conformance::conformance_main!(lease_conformance::MemoryFactory);
/// ```
#[macro_export]
macro_rules! conformance_main {
    ($factory:expr) => {
        fn main() -> ::std::process::ExitCode {
            $crate::test_main($factory)
        }
    };
}

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
