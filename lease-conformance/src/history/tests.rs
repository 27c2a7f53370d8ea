use super::*;

const MS: Micros = 1000;
const TTL: Micros = 100 * MS;

fn call(client: u32, op: CallOp, at: (Micros, Option<Micros>), outcome: CallOutcome) -> Call {
    Call {
        client,
        key: "k".into(),
        op,
        invoked_us: at.0 * MS,
        replied_us: at.1.map(|r| r * MS),
        outcome,
    }
}

fn claim(holder: &str) -> CallOp {
    CallOp::Claim {
        holder: holder.into(),
        ttl_us: TTL,
    }
}

fn acquired(token: u64) -> CallOutcome {
    CallOutcome::Acquired { token, fresh: true }
}

fn busy(holder: &str, token: u64) -> CallOutcome {
    CallOutcome::Busy {
        holder: holder.into(),
        token,
    }
}

fn judged(calls: Vec<Call>) -> Result<(), Violation> {
    check(&History {
        slack_us: 10 * MS,
        calls,
    })
}

#[test]
fn overlapping_claims_may_go_either_way() {
    let history = vec![
        call(1, claim("a"), (0, Some(5)), acquired(1)),
        call(2, claim("b"), (1, Some(6)), busy("a", 1)),
    ];
    judged(history).unwrap();
    // b first is as good: b's claim took effect before a's.
    let history = vec![
        call(1, claim("a"), (0, Some(5)), busy("b", 1)),
        call(2, claim("b"), (1, Some(6)), acquired(1)),
    ];
    judged(history).unwrap();
}

#[test]
fn a_call_answered_in_the_microsecond_it_was_made_is_judged() {
    let history = vec![
        call(1, claim("a"), (0, Some(0)), acquired(1)),
        call(2, claim("b"), (1, Some(1)), busy("a", 1)),
    ];
    judged(history).unwrap();
}

#[test]
fn two_holders_granted_at_once_are_refused() {
    let history = vec![
        call(1, claim("a"), (0, Some(5)), acquired(1)),
        call(2, claim("b"), (10, Some(15)), acquired(2)),
    ];
    let violation = judged(history).unwrap_err();
    assert_eq!(violation.call.client, 2);
    assert!(violation.timeline.contains(">> client  2"), "{violation}");
}

#[test]
fn expiry_is_allowed_only_inside_its_window() {
    // a's grant, written in [0, 5], ends in [100, 115).
    let early = vec![
        call(1, claim("a"), (0, Some(5)), acquired(1)),
        call(2, claim("b"), (90, Some(95)), acquired(2)),
    ];
    judged(early).unwrap_err();
    let either = vec![
        call(1, claim("a"), (0, Some(5)), acquired(1)),
        call(2, claim("b"), (104, Some(106)), acquired(2)),
        call(3, claim("c"), (107, Some(108)), busy("b", 2)),
    ];
    judged(either).unwrap();
    let held_too_long = vec![
        call(1, claim("a"), (0, Some(5)), acquired(1)),
        call(2, claim("b"), (116, Some(118)), busy("a", 1)),
    ];
    judged(held_too_long).unwrap_err();
}

#[test]
fn tokens_must_increase() {
    let history = vec![
        call(1, claim("a"), (0, Some(5)), acquired(7)),
        call(
            1,
            CallOp::Release {
                holder: "a".into(),
                token: 7,
            },
            (6, Some(8)),
            CallOutcome::Released { released: true },
        ),
        call(2, claim("b"), (9, Some(10)), acquired(7)),
    ];
    judged(history).unwrap_err();
}

#[test]
fn an_unknown_claim_may_have_taken_effect_or_not() {
    // The lost claim did take effect: b is busy with a's grant.
    let applied = vec![
        call(1, claim("a"), (0, None), CallOutcome::Unknown),
        call(2, claim("b"), (20, Some(21)), busy("a", 3)),
        call(2, claim("b"), (150, Some(151)), acquired(4)),
    ];
    judged(applied).unwrap();
    // Or not: b acquires at once.
    let not_applied = vec![
        call(1, claim("a"), (0, None), CallOutcome::Unknown),
        call(2, claim("b"), (20, Some(21)), acquired(1)),
    ];
    judged(not_applied).unwrap();
    // But a grant it never told anyone of cannot outlive its TTL from
    // the last moment it can have been written... unless written late:
    // an unknown call may land at any time, so busy much later is fine
    // once, and tokens still order.
    let reused = vec![
        call(1, claim("a"), (0, None), CallOutcome::Unknown),
        call(2, claim("b"), (20, Some(21)), busy("a", 3)),
        call(2, claim("b"), (150, Some(151)), acquired(3)),
    ];
    judged(reused).unwrap_err();
}

#[test]
fn a_renewal_refused_for_a_live_grant_is_caught() {
    let history = vec![
        call(1, claim("a"), (0, Some(5)), acquired(1)),
        call(
            1,
            CallOp::Renew {
                holder: "a".into(),
                token: 1,
                ttl_us: TTL,
            },
            (20, Some(25)),
            CallOutcome::Lost,
        ),
    ];
    judged(history).unwrap_err();
}

#[test]
fn a_reclaim_never_shortens_and_a_renewal_may() {
    let short = CallOp::Claim {
        holder: "a".into(),
        ttl_us: 10 * MS,
    };
    let own = CallOutcome::Acquired {
        token: 1,
        fresh: false,
    };
    // Claimed for 100 ms, re-claimed for 10: still held at 60.
    let reclaimed = vec![
        call(1, claim("a"), (0, Some(5)), acquired(1)),
        call(1, short.clone(), (20, Some(21)), own.clone()),
        call(2, claim("b"), (60, Some(61)), acquired(2)),
    ];
    judged(reclaimed).unwrap_err();
    let renewed = vec![
        call(1, claim("a"), (0, Some(5)), acquired(1)),
        call(
            1,
            CallOp::Renew {
                holder: "a".into(),
                token: 1,
                ttl_us: 10 * MS,
            },
            (20, Some(21)),
            CallOutcome::Renewed,
        ),
        call(2, claim("b"), (60, Some(61)), acquired(2)),
    ];
    judged(renewed).unwrap();
}

#[test]
fn a_release_frees_at_once_and_a_stale_one_touches_nothing() {
    let release = |token| CallOp::Release {
        holder: "a".into(),
        token,
    };
    let history = vec![
        call(1, claim("a"), (0, Some(5)), acquired(1)),
        call(
            1,
            release(1),
            (10, Some(11)),
            CallOutcome::Released { released: true },
        ),
        call(2, claim("b"), (12, Some(13)), acquired(2)),
        call(
            1,
            release(1),
            (14, Some(15)),
            CallOutcome::Released { released: true },
        ),
    ];
    judged(history).unwrap_err();
}

#[test]
fn inspect_sees_what_is_live() {
    let seen = |holder: Option<&str>, token| CallOutcome::Seen {
        holder: holder.map(Into::into),
        token,
    };
    let free_too_soon = vec![
        call(1, claim("a"), (0, Some(5)), acquired(1)),
        call(2, CallOp::Inspect, (50, Some(51)), seen(None, None)),
    ];
    judged(free_too_soon).unwrap_err();
    let fine = vec![
        call(1, claim("a"), (0, Some(5)), acquired(1)),
        call(2, CallOp::Inspect, (50, Some(51)), seen(Some("a"), Some(1))),
        call(2, CallOp::Inspect, (120, Some(121)), seen(None, None)),
    ];
    judged(fine).unwrap();
}

#[test]
fn histories_round_trip_through_json() {
    let history = History {
        slack_us: 5,
        calls: vec![call(1, claim("a"), (0, None), CallOutcome::Unknown)],
    };
    let text = serde_json::to_string(&history).unwrap();
    assert_eq!(serde_json::from_str::<History>(&text).unwrap(), history);
}
