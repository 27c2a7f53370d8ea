//! The search for a linearization of one key's calls.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use super::model::State;
use super::{Call, CallOp, CallOutcome, History, Micros, Violation};

/// Checks every key's calls: `Ok` when the whole history is linearizable.
///
/// # Errors
/// The first key (in name order) whose calls are not, with the call no
/// configuration explains.
pub fn check(history: &History) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
    for call in &history.calls {
        by_key.entry(&call.key).or_default().push(call);
    }
    for (key, calls) in by_key {
        check_key(key, &calls, history.slack_us)?;
    }
    Ok(())
}

/// A configuration: the model's state and which calls are linearized.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Config {
    state: State,
    /// Indices (into the key's calls) linearized so far and still pending
    /// in the walk; calls completed leave the set once linearized.
    done: Vec<usize>,
}

/// How many configurations a key may hold before the search gives up
/// (a pathological history: reported, not hidden).
pub const MAX_CONFIGS: usize = 200_000;

fn check_key(key: &str, calls: &[&Call], slack: Micros) -> Result<(), Violation> {
    // Events: invocations and replies, replies first at equal times (a
    // call replied at t precedes one invoked at t).
    let mut events: Vec<(Micros, bool, usize)> = Vec::new();
    for (i, call) in calls.iter().enumerate() {
        events.push((call.invoked_us, true, i));
        if let (Some(at), false) = (call.replied_us, call.outcome == CallOutcome::Unknown) {
            events.push((at, false, i));
        }
    }
    events.sort_by_key(|(at, invoke, i)| (*at, *invoke, *i));
    let mut pending: Vec<usize> = Vec::new();
    let mut configs: HashSet<Config> = HashSet::from([Config {
        state: State::FREE,
        done: Vec::new(),
    }]);
    let mut invoked = vec![false; calls.len()];
    for (at, invoke, i) in events {
        // A call replied in the microsecond it was invoked sorts its reply
        // first: it is invoked then.
        if !invoked[i] {
            invoked[i] = true;
            pending.push(i);
        }
        if invoke {
            continue;
        }
        // Reply of call i at `at`: every configuration linearizes it now,
        // after any of the calls pending beside it.
        let mut frontier: Vec<Config> = configs.drain().collect();
        let mut seen: HashSet<Config> = frontier.iter().cloned().collect();
        while let Some(config) = frontier.pop() {
            for &j in &pending {
                if config.done.contains(&j) {
                    continue;
                }
                let call = calls[j];
                for state in config.state.apply(call, call.invoked_us, at, slack) {
                    let mut done = config.done.clone();
                    done.push(j);
                    done.sort_unstable();
                    let next = Config { state, done };
                    if seen.insert(next.clone()) {
                        if seen.len() > MAX_CONFIGS {
                            let mut undecided = violation(key, calls, i);
                            undecided.undecided = true;
                            return Err(undecided);
                        }
                        frontier.push(next);
                    }
                }
            }
        }
        // Whatever linearized call i, now or before, explains its reply.
        let reached: Vec<Config> = seen
            .into_iter()
            .filter(|config| config.done.contains(&i))
            .collect();
        if reached.is_empty() {
            return Err(violation(key, calls, i));
        }
        pending.retain(|&j| j != i);
        // Call i leaves every set; configurations that differ only in it
        // merge.
        configs = reached
            .into_iter()
            .map(|mut config| {
                config.done.retain(|&j| j != i);
                config
            })
            .collect();
    }
    Ok(())
}

fn violation(key: &str, calls: &[&Call], i: usize) -> Violation {
    let mut order: Vec<&Call> = calls.to_vec();
    order.sort_by_key(|c| c.invoked_us);
    let mut timeline = String::new();
    for call in order {
        let mark = if std::ptr::eq(call, calls[i]) {
            ">>"
        } else {
            "  "
        };
        let _ = writeln!(
            timeline,
            "{mark} client {:>2}  {:<24}  {}",
            call.client,
            span(call),
            describe(call)
        );
    }
    Violation {
        key: key.to_owned(),
        call: Box::new(calls[i].clone()),
        timeline,
        undecided: false,
    }
}

pub(super) fn span(call: &Call) -> String {
    let ms = |us: Micros| us as f64 / 1e3;
    match call.replied_us {
        Some(at) => format!("{:.1}–{:.1} ms", ms(call.invoked_us), ms(at)),
        None => format!("{:.1} ms – (none)", ms(call.invoked_us)),
    }
}

pub(super) fn describe(call: &Call) -> String {
    let asked = match &call.op {
        CallOp::Claim { holder, ttl_us } => format!("claim {holder} ttl {}ms", ttl_us / 1000),
        CallOp::Renew {
            holder,
            token,
            ttl_us,
        } => format!("renew {holder}/{token} ttl {}ms", ttl_us / 1000),
        CallOp::Release { holder, token } => format!("release {holder}/{token}"),
        CallOp::Inspect => "inspect".to_owned(),
    };
    let answered = match &call.outcome {
        CallOutcome::Acquired { token, fresh } => {
            format!("acquired {token}{}", if *fresh { "" } else { " (own)" })
        }
        CallOutcome::Busy { holder, token } => format!("busy: {holder}/{token}"),
        CallOutcome::Renewed => "renewed".to_owned(),
        CallOutcome::Lost => "lost".to_owned(),
        CallOutcome::Released { released } => format!("released: {released}"),
        CallOutcome::Seen {
            holder: Some(holder),
            token: Some(token),
        } => format!("seen {holder}/{token}"),
        CallOutcome::Seen { .. } => "seen free".to_owned(),
        CallOutcome::Unknown => "unknown".to_owned(),
    };
    format!("{asked} → {answered}")
}

/// Checks `history`; on a violation, writes it as JSON to a file in the
/// temporary directory and returns the violation with the file's path
/// (`lease-conformance check-history FILE` checks it again).
///
/// # Errors
/// The violation's description, timeline and file.
pub fn check_and_keep(history: &History) -> Result<(), (Violation, String)> {
    check(history).map_err(|violation| {
        let path = std::env::temp_dir().join(format!(
            "lease-conformance-history-{:016x}.json",
            rand::random::<u64>()
        ));
        let saved = serde_json::to_vec_pretty(history)
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(&path, json).map_err(|e| e.to_string()));
        let note = match saved {
            Ok(()) => format!("history saved to {}", path.display()),
            Err(why) => format!("history could not be saved: {why}"),
        };
        (violation, note)
    })
}
