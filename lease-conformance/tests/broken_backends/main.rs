//! The suite tested against deliberately broken backends: each flaw below
//! breaks one rule, and the suite must catch it with the named case. The
//! same store without a flaw passes everything, so the failures come from
//! the flaws, not from the test double.
//!
//! Here: the table of flaws and the tests. The double's state and shared
//! decisions are in `flawed.rs`, its operations in `store.rs`, the factory
//! and hooks the suite opens it through in `factory.rs`, and the flaws of
//! a client in front of its wire in `client.rs`.

use std::sync::Arc;

use lease_conformance::{Hook, Outcome, all_cases, find_case, run_cases};

/// The flaws a broken double can have, each with the test that runs the
/// cases that must catch it: one table, so a flaw cannot go untested.
/// (`StallsItsRunner` breaks no rule; its own test checks the suite never
/// calls it broken.)
macro_rules! flaws {
    ($($(#[$doc:meta])* $flaw:ident $(=> $test:ident: [$($case:literal),+ $(,)?])?;)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Flaw {
            $($(#[$doc])* $flaw,)*
        }

        $($(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                // The cases that must catch the flaw; the unflawed double
                // passes every case, so their failures come from the flaw.
                let failed = failures(Some(Flaw::$flaw), Some(&[$($case),+])).await;
                let names: Vec<_> = failed.iter().map(|(name, _)| *name).collect();
                for case in [$($case),+] {
                    assert!(names.contains(&case), "{:?} was not caught by {case}; failed: {names:?}", Flaw::$flaw);
                }
            }
        )?)*
    };
}

flaws! {
    ReclaimKeepsToken => reclaim_keeping_the_token_is_caught: ["reclaim_takes_over_the_observed_grant"];
    TokenReusedAfterExpiry => token_reuse_after_expiry_is_caught: ["claim_after_expiry_gets_higher_token", "elections_hand_over_increasing_terms"];
    ReleaseClearsNewerGrant => release_clearing_a_newer_grant_is_caught: ["release_never_clears_a_newer_grant"];
    RenewAcceptsSuperseded => renew_of_a_superseded_grant_is_caught: ["renew_refuses_a_superseded_grant"];
    RenewRevivesExpired => renew_reviving_an_expired_grant_is_caught: ["renew_never_revives_an_expired_grant"];
    IncarnationIgnored => ignored_incarnation_is_caught: ["claim_by_other_incarnation_is_busy", "renew_refuses_unknown_fences"];
    ReclaimByHolderGetsNewToken => new_token_on_reclaim_by_holder_is_caught: ["claim_by_current_holder_keeps_token", "reclaim_retry_by_the_winner_keeps_token"];
    NeverExpires => missing_expiry_is_caught: ["claim_after_expiry_gets_higher_token", "wait_wakes_on_expiry", "check_follows_the_live_grant"];
    TtlClamped => clamped_ttl_is_caught: ["invalid_ttls_are_refused"];
    ReclaimWithoutCompare => reclaim_without_compare_is_caught: ["reclaim_loses_to_a_newer_grant"];
    MarkerDeleteIgnoresValue => marker_delete_ignoring_the_value_is_caught: ["marker_delete_only_with_the_equal_value"];
    MarkerPutOverwrites => marker_put_overwriting_is_caught: ["marker_put_is_if_absent_or_equal"];
    GuardedWriteUnchecked => unchecked_guarded_write_is_caught: ["guarded_write_refused_without_the_live_fence"];
    ExpiresEarly => early_expiry_is_caught: ["concurrent_holders_never_overlap", "state_machine_agrees_with_the_model"];
    CorruptReadsAsFree => corrupt_read_as_free_is_caught: ["inspect_reports_a_corrupt_record"];
    WaitPollsSlowly => slow_polling_wait_is_caught: ["wait_wakes_on_release"];
    TtlRoundedDown => ttl_rounded_down_is_caught: ["ttl_rounding_is_reported", "state_machine_agrees_with_the_model"];
    LateDeadline => late_deadline_is_caught: ["claim_acquires_a_free_key", "renew_keeps_token_and_extends", "state_machine_agrees_with_the_model"];
    WaitIgnoresTimeout => wait_ignoring_its_timeout_is_caught: ["wait_times_out_while_held"];
    WaitWakesOnAnyRelease => wait_waking_on_any_release_is_caught: ["wait_wakes_on_release"];
    /// Like a client that ends grants by a local timer it sets once the
    /// reply is in: a call cut off in between leaves a grant that never ends.
    CutOffGrantNeverEnds => cut_off_grant_that_never_ends_is_caught: ["cancelled_calls_leave_no_grant_behind"];
    RenewAcceptsInvalidTtl => renew_accepting_invalid_ttls_is_caught: ["every_operation_validates_its_ttl"];
    ReclaimAcceptsInvalidTtl => reclaim_accepting_invalid_ttls_is_caught: ["every_operation_validates_its_ttl"];
    MaxTtlRefused => refused_maximum_ttl_is_caught: ["every_operation_validates_its_ttl"];
    RenewKeepsFirstTtl => renewal_keeping_the_first_ttl_is_caught: ["renewal_changes_the_ttl_both_ways"];
    RenewNeverShortens => renewal_that_never_shortens_is_caught: ["renewal_changes_the_ttl_both_ways"];
    TimeLeftFrozen => frozen_time_left_is_caught: ["time_left_counts_down"];
    /// Inspect calls a grant free in its last half, as a store that
    /// rounds time left down to whole units would, while renewals still
    /// find it.
    InspectFreesEarly => inspect_freeing_early_is_caught: ["a_key_inspect_shows_free_is_ended"];
    /// Holder compared as `id:incarnation`.
    HolderJoinedWithColon => holder_joined_with_a_colon_is_caught: ["look_alike_holders_stay_apart"];
    /// Holder compared as `id` followed by `incarnation`.
    HolderConcatenated => concatenated_holder_is_caught: ["look_alike_holders_stay_apart"];
    KeysCaseFolded => case_folded_keys_are_caught: ["look_alike_keys_stay_apart"];
    KeysPercentDecoded => percent_decoded_keys_are_caught: ["look_alike_keys_stay_apart"];
    CheckIgnoresToken => check_ignoring_the_token_is_caught: ["older_grants_of_the_same_holder_are_refused"];
    ReleaseIgnoresToken => release_ignoring_the_token_is_caught: ["older_grants_of_the_same_holder_are_refused"];
    EmptyGuardedReadsAsNone => empty_value_read_as_none_is_caught: ["values_keep_every_byte_up_to_the_limit"];
    /// Guarded values kept as (lossy) UTF-8 text.
    GuardedValuesMangled => mangled_binary_values_are_caught: ["values_keep_every_byte_up_to_the_limit"];
    MaxValueRefused => refused_maximum_value_is_caught: ["values_keep_every_byte_up_to_the_limit"];
    ReclaimNotAtomic => non_atomic_reclaim_is_caught: ["concurrent_reclaims_have_one_winner"];
    /// A claim finds the key free, then writes after a gap regardless.
    ClaimNotAtomic => non_atomic_claim_is_caught: ["concurrent_claims_by_one_holder_share_one_grant", "concurrent_holders_never_overlap", "permits_never_exceed_the_pool"];
    /// Claims made at once are answered with each other's outcomes, as a
    /// batch that pairs replies with the wrong callers would.
    ClaimsMisrouted => misrouted_claims_are_caught: ["concurrent_claims_of_many_keys_each_get_their_own_grant"];
    ReleaseNotAtomic => non_atomic_release_is_caught: ["concurrent_releases_release_once"];
    /// Releases made beside another (one shared call, as a batching
    /// client sends them) compare the record as first claimed: a grant
    /// renewed since is left to run out its TTL.
    SharedReleaseMissesRenewed => a_shared_release_missing_renewed_grants_is_caught: ["concurrent_releases_of_renewed_grants_free_every_key"];
    RenewNotAtomic => non_atomic_renew_is_caught: ["renewals_racing_a_takeover_never_undo_it"];
    MarkerPutNotAtomic => non_atomic_marker_put_is_caught: ["concurrent_marker_puts_keep_one_value"];
    GuardedWriteNotAtomic => non_atomic_guarded_write_is_caught: ["guarded_writes_stop_at_a_takeover"];
    /// Markers kept with a TTL of a few seconds.
    MarkersExpire => expiring_markers_are_caught: ["markers_outlive_seconds_and_leases"];
    WaitWakesOnRenewal => wait_woken_by_renewals_is_caught: ["wait_sleeps_through_renewals"];
    WaitIgnoresCorrupt => wait_ignoring_corrupt_records_is_caught: ["wait_treats_a_corrupt_record_as_free"];
    /// Keeps a record per key ever used.
    RecordsKeptForever => records_kept_forever_are_caught: ["records_stay_bounded_by_live_and_recent_grants"];
    /// One refused fence fails the whole batch.
    RenewManyFailsWhole => batch_failing_whole_is_caught: ["renew_many_answers_each_fence_as_renew_would"];
    /// A batch answers its renewals sorted, successes first.
    RenewManyOutOfOrder => batch_out_of_order_is_caught: ["renew_many_answers_each_fence_as_renew_would"];
    /// A batch compares holder and token but not expiry.
    RenewManyRevives => batch_reviving_expired_grants_is_caught: ["renew_many_answers_each_fence_as_renew_would"];
    /// A batch renews every fence with the first one's TTL.
    RenewManyFirstTtl => batch_with_the_first_ttl_is_caught: ["renew_many_answers_each_fence_as_renew_would"];
    /// Lists every key whose text starts with the prefix (`ab` under `a`).
    ListByTextPrefix => listing_by_text_prefix_is_caught: ["list_shows_live_grants_under_a_prefix", "list_markers_shows_markers_under_a_prefix"];
    /// Lists grants past their expiry.
    ListIncludesExpired => listing_expired_grants_is_caught: ["list_leaves_out_expired_grants"];
    /// Leaves corrupt records out of listings.
    ListHidesCorrupt => hiding_corrupt_records_is_caught: ["list_reports_corrupt_records"];
    /// Skips the first key of every page after the first.
    ListLosesAtPageBreaks => losing_keys_at_page_breaks_is_caught: ["list_pages_through_every_grant", "list_markers_shows_markers_under_a_prefix"];
    /// Waiters are woken only by a re-check every 500 ms, though the store
    /// declares notifications: they silently fail.
    NotificationsDead => dead_notifications_are_caught: ["wait_wakes_on_release", "release_is_seen_by_other_clients"];
    /// Keys compared by their first 300 bytes only.
    KeysTruncated => truncated_keys_are_caught: ["longest_keys_sharing_a_prefix_stay_apart"];
    /// Grants end after half an hour at most, whatever TTL they report.
    MaxTtlCut => a_cut_maximum_ttl_is_caught: ["a_grant_at_the_maximum_ttl_lasts_that_long"];
    /// A batch answers a key's later fences as its first fence was.
    RenewManyByKey => a_batch_answering_by_key_is_caught: ["renew_many_answers_odd_batches_entry_by_entry"];
    /// A batch compares holder ids, not incarnations.
    RenewManyIgnoresIncarnation => a_batch_ignoring_incarnations_is_caught: ["renew_many_answers_odd_batches_entry_by_entry"];
    /// An empty batch is answered with an error.
    RenewManyEmptyAnswered => an_answered_empty_batch_is_caught: ["renew_many_answers_odd_batches_entry_by_entry"];
    /// Pages by offset: a key ended before the cursor makes the next page
    /// skip one.
    ListPagesByOffset => paging_by_offset_is_caught: ["list_keeps_steady_keys_while_others_come_and_go"];
    /// Returns everything on one page, whatever the limit.
    ListIgnoresLimit => ignoring_the_page_size_is_caught: ["list_keeps_steady_keys_while_others_come_and_go"];
    /// Matches prefixes on the decoded text, so an escaped `/` splits a
    /// segment.
    ListPrefixDecoded => decoded_prefixes_are_caught: ["list_matches_escaped_segments_and_shows_renewed_time_left"];
    /// Lists the time left of a grant's first TTL, not of its renewals.
    ListStaleTimeLeft => stale_listed_time_left_is_caught: ["list_matches_escaped_segments_and_shows_renewed_time_left"];
    /// Inspect answers from a copy it read up to a second ago.
    InspectCached => cached_inspects_are_caught: ["inspect_shows_other_clients_changes_at_once", "elections_hand_over_increasing_terms"];
    /// A claim of one's own live grant sets its end to the claim's TTL,
    /// shortening it: against the rule in order too (the state machine
    /// catches it by chance), fatal when the network delivers the claim
    /// late, after a longer renewal.
    ClaimOwnShortens => a_late_claim_shortening_a_grant_is_caught: ["a_late_claim_never_shortens_a_grant_its_holder_was_told_of"];
    /// Renewals applied in the order they arrive, not the order their
    /// store sent them (no `lease_core::Stamp`): harmless in order, fatal
    /// when a renewal with a short TTL arrives after a longer one.
    RenewalsUnordered => a_late_renewal_shortening_a_grant_is_caught: ["a_late_renewal_never_shortens_a_grant_its_holder_was_told_of"];
    /// The client reports a call that got no reply as failed for sure
    /// (`is_indeterminate() == false`), though the server may have
    /// applied it.
    TimeoutsSayKnown => timeouts_claiming_a_known_outcome_are_caught: ["a_claim_whose_reply_is_lost_ends_by_the_servers_clock", "a_renewal_whose_reply_is_lost_ends_by_the_servers_clock"];
    /// The client re-sends a claim that got no reply from a background
    /// task, and keeps the grant it then gets alive, after its caller was
    /// told the claim failed.
    KeepsAliveAfterCutOff => a_grant_kept_alive_after_a_cut_off_claim_is_caught: ["a_claim_whose_reply_is_lost_ends_by_the_servers_clock"];
    /// A batch renewal cut by a reset answers every fence as lost.
    BatchCutSaysLost => a_cut_batch_calling_grants_lost_is_caught: ["a_reset_in_the_middle_of_a_batch_loses_no_live_grant"];
    /// Renewals push a grant's end out by what the client works out it
    /// needs (`ends = ends + extension`, as an SQL `UPDATE` would), and the
    /// client sends a renewal whose reply was lost again on a new
    /// connection: the server applies both, and the extension counts
    /// twice.
    RetriedRenewalCountedTwice => a_retried_renewal_counted_twice_is_caught: ["a_renewal_whose_reply_is_lost_ends_by_the_servers_clock"];
    /// Not a broken rule: now and then a renewal blocks the runner's
    /// thread for a while after it is decided, as a starved machine does. The suite must never call this
    /// backend broken.
    StallsItsRunner;
}

mod client;
mod factory;
mod flawed;
mod store;

use factory::FlawedFactory;

/// Runs `cases` (every case when `None`) on the flawed store and returns
/// the failed ones.
async fn failures(flaw: Option<Flaw>, cases: Option<&[&str]>) -> Vec<(&'static str, String)> {
    let cases = match cases {
        None => all_cases(),
        Some(names) => names
            .iter()
            .map(|name| find_case(name).unwrap_or_else(|| panic!("no case {name}")))
            .collect(),
    };
    let reports = run_cases(Arc::new(FlawedFactory(flaw)), cases, 16, |_| {}).await;
    // Every case ran: the double offers every hook it needs but a restart.
    for r in &reports {
        if let Outcome::NotRun(why) | Outcome::Inconclusive(why) = &r.outcome {
            assert!(
                r.name == "tokens_increase_across_server_restart",
                "{} ended {}: {why}",
                r.name,
                r.outcome.label()
            );
        }
    }
    reports
        .into_iter()
        .filter_map(|r| match r.outcome {
            Outcome::Failed(why) => Some((r.name, why)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unflawed_double_passes_everything() {
    let failed = failures(None, None).await;
    assert!(
        failed.is_empty(),
        "the test double itself is broken: {failed:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_runner_is_never_called_a_broken_backend() {
    let reports = run_cases(
        Arc::new(FlawedFactory(Some(Flaw::StallsItsRunner))),
        all_cases(),
        16,
        |r| {
            eprintln!(
                "{} {} after {} tries: {:?}",
                r.outcome.label(),
                r.name,
                r.attempts,
                r.starved
            )
        },
    )
    .await;
    let failed: Vec<_> = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .map(|r| (r.name, &r.outcome))
        .collect();
    assert!(
        failed.is_empty(),
        "a correct backend on a stalled runner was failed: {failed:#?}"
    );
    // The stalls were noticed: some case was tried again with more room,
    // or ended inconclusive, naming the starvation.
    let noticed: Vec<_> = reports.iter().filter(|r| r.attempts > 1).collect();
    assert!(!noticed.is_empty(), "no case noticed its runner stalling");
    for r in &noticed {
        assert!(
            r.starved.iter().all(|why| why.contains('+')),
            "{}: a starvation report without the instants measured: {:?}",
            r.name,
            r.starved
        );
    }
}

/// The flaws only a network fault shows pass every case that injects
/// none: fault mode is what catches them. `ClaimOwnShortens` is not
/// among them: a re-claim with a shorter TTL shortens the grant on a
/// healthy network too, and the random state-machine workload catches
/// that whenever it happens to draw one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_only_flaws_pass_without_faults() {
    let quiet: Vec<&str> = all_cases()
        .into_iter()
        .filter(|case| !case.needs.contains(&Hook::Network))
        .map(|case| case.name)
        .collect();
    for flaw in [
        Flaw::KeepsAliveAfterCutOff,
        Flaw::BatchCutSaysLost,
        Flaw::RenewalsUnordered,
        Flaw::RetriedRenewalCountedTwice,
    ] {
        let failed = failures(Some(flaw), Some(&quiet)).await;
        assert!(
            failed.is_empty(),
            "{flaw:?} was caught without a fault: {failed:?}"
        );
    }
}

/// The history checker, on the mixed workloads, catches flaws it was not
/// written for: a random workload finds them by chance, so each gets a
/// few runs (a flaw-specific case above catches it every time); each was
/// caught 10 runs in 10, with the machine loaded. The bursty workload
/// finds the flaws of calls made at once, as a store that shares one
/// server call between them would have: it caught the shared release 20
/// runs in 20, the random pace 1 in 10, so it gets two runs, and a bursty
/// case that lost its bursts fails here 99 times in 100. A client keeping
/// a cut-off claim alive is caught too, but too seldom to be listed here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_workload_histories_catch_broken_stores() {
    let plain = "a_mixed_workload_is_linearizable";
    let bursty = "a_bursty_mixed_workload_is_linearizable";
    for (flaw, case, runs) in [
        (Flaw::ReclaimByHolderGetsNewToken, plain, 5),
        (Flaw::NeverExpires, plain, 5),
        (Flaw::ExpiresEarly, plain, 5),
        (Flaw::TokenReusedAfterExpiry, plain, 5),
        (Flaw::SharedReleaseMissesRenewed, bursty, 2),
        (Flaw::ClaimsMisrouted, bursty, 5),
        (Flaw::ClaimNotAtomic, bursty, 5),
    ] {
        let mut caught = false;
        for _ in 0..runs {
            let failed = failures(Some(flaw), Some(&[case])).await;
            if let Some((_, why)) = failed.first() {
                assert!(
                    why.contains("not linearizable") || why.contains("unexpected error"),
                    "{flaw:?}: {why}"
                );
                caught = true;
                break;
            }
        }
        assert!(caught, "{flaw:?} was not caught by {case} in {runs} runs");
    }
}
