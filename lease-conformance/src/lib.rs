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
//! then stamp one `#[test]` per case:
//!
//! ```no_run
//! // tests/conformance.rs of your backend crate
//! lease_conformance::conformance_tests!(lease_conformance::MemoryFactory);
//! ```
//!
//! Cases that need a hook the factory lacks end *not run* — never passed —
//! and fail their test unless the factory lists them in
//! [`Factory::expected_not_run`]. The `lease-conformance` binary runs the
//! same cases against the in-memory store, Redis or etcd and writes a table,
//! JUnit XML and JSON.
//!
//! Property test sizes come from the environment ([`Settings`]):
//! `LEASE_CONFORMANCE_CASES`, `LEASE_CONFORMANCE_STEPS`,
//! `LEASE_CONFORMANCE_SAFETY_TTLS`.

#[macro_use]
pub mod cases;
mod check;
mod properties;
pub mod report;
mod runner;
mod subject;
pub mod targets;

pub use cases::Case;
pub use check::{CaseError, CaseResult, Timed, Timing, acquire, holder, key, timed_claim};
pub use runner::{
    CASE_LIMIT, CaseReport, Outcome, all_cases, assert_all_stamped, find_case, run_case, run_cases,
    run_test,
};
pub use subject::{Factory, Hooks, MemoryFactory, NoHooks, Settings, Subject, Unavailable};

/// Stamps one `#[test]` per conformance case for a factory expression,
/// plus a test that the list is complete. Each failure is reported on its
/// own, with the rule it broke.
///
/// ```no_run
/// lease_conformance::conformance_tests!(lease_conformance::MemoryFactory);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@stamp ($factory)
            claim_acquires_a_free_key,
            claim_is_busy_while_another_holds,
            claim_by_other_incarnation_is_busy,
            claim_by_current_holder_keeps_token,
            claim_after_release_gets_higher_token,
            claim_after_expiry_gets_higher_token,
            claim_repairs_a_corrupt_record,
            tokens_increase_across_server_restart,
            guarded_write_applies_with_the_live_fence,
            guarded_write_refused_without_the_live_fence,
            invalid_ttls_are_refused,
            ttl_rounding_is_reported,
            check_follows_the_live_grant,
            round_has_exactly_one_winner,
            leaser_keeps_alive_and_signals_loss,
            expiry_is_seen_by_other_clients,
            release_is_seen_by_other_clients,
            renewal_is_seen_by_other_clients,
            inspect_of_a_free_key_is_none,
            inspect_shows_holder_token_and_time_left,
            inspect_reports_a_corrupt_record,
            keys_are_stored_exactly,
            marker_put_is_if_absent_or_equal,
            marker_delete_only_with_the_equal_value,
            markers_do_not_expire_or_collide_with_leases,
            marker_values_are_kept_exactly,
            reclaim_takes_over_the_observed_grant,
            reclaim_loses_to_a_newer_grant,
            reclaim_retry_by_the_winner_keeps_token,
            reclaim_of_a_free_key_acquires,
            release_frees_the_key,
            release_is_idempotent,
            release_never_clears_a_newer_grant,
            release_of_an_expired_grant_releases_nothing,
            renew_keeps_token_and_extends,
            renew_never_revives_an_expired_grant,
            renew_refuses_a_released_grant,
            renew_refuses_a_superseded_grant,
            renew_refuses_unknown_fences,
            wait_on_a_free_key_returns_at_once,
            wait_wakes_on_release,
            wait_wakes_on_expiry,
            wait_times_out_while_held,
            cancelled_calls_leave_no_grant_behind,
            state_machine_agrees_with_the_model,
            concurrent_holders_never_overlap,
        );
    };
    (@stamp ($factory:expr) $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                $crate::run_test(stringify!($case), $factory);
            }
        )*

        #[test]
        fn conformance_tests_cover_every_case() {
            $crate::assert_all_stamped(&[$(stringify!($case)),*]);
        }
    };
}

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
