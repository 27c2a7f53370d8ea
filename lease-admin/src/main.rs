//! `lease-admin`: look at and mend the leases of a store during an
//! incident — who holds what (an election's leader and value too),
//! release a grant by its token, get, set and
//! clear the markers that stop work on a poisoned resource.
//!
//! ```text
//! lease-admin redis://127.0.0.1:6379 --namespace billing list jobs
//! lease-admin etcd://10.0.0.1:2379 --prefix billing inspect jobs/nightly
//! lease-admin redis://… leader elections/primary
//! lease-admin redis://… release jobs/nightly --token 1764575400123456
//! lease-admin redis://… marker clear exports/2026-11 --value poisoned
//! ```
//!
//! Exit codes: 0 done; 1 refused (no such grant or marker, another token,
//! another value); 2 bad input, an unreachable server or a failed call.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lease_connect::{Target, connect};
use lease_core::{DynLeaseStore, LeaseError, LeaseKey, Listed};
use serde_json::json;

/// Look at and mend the leases of a store: list and inspect grants,
/// release one by its token, get, set and clear markers.
#[derive(Parser, Debug)]
#[command(name = "lease-admin", version, after_help = AFTER_HELP)]
struct Args {
    /// The store: redis://[USER:PASSWORD@]HOST:PORT[/DB], rediss://… (TLS),
    /// redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…] (Redis Cluster),
    /// redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…]/MASTER (Sentinel),
    /// etcd://HOST:PORT[,HOST:PORT…] or etcds://… (TLS).
    target: String,
    /// Redis namespace of the leases (as the application configured it).
    #[arg(long, default_value = "lease")]
    namespace: String,
    /// etcd key prefix of the leases (as the application configured it).
    #[arg(long, default_value = "lease")]
    prefix: String,
    /// etcd user; the password is read from LEASE_ADMIN_ETCD_PASSWORD.
    #[arg(long)]
    user: Option<String>,
    /// CA certificate (PEM) to trust for rediss:// and etcds://.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the live grants (and corrupt records) on KEY and below it.
    List {
        /// The key prefix: `jobs` lists `jobs` and `jobs/…`.
        prefix: String,
        /// List the markers instead of the grants.
        #[arg(long)]
        markers: bool,
    },
    /// Show the live grant on KEY: holder, token, time left.
    Inspect { key: String },
    /// Show the leader of the election on KEY: holder, term, the value it
    /// published, time left. (Its grant lists like any other; a pool of
    /// permits is the leases `NAME/0` … `NAME/{n-1}`: `list NAME`.)
    Leader { key: String },
    /// End the grant on KEY, only if its token is still TOKEN.
    Release {
        key: String,
        /// The grant's token, as `inspect` shows it.
        #[arg(long)]
        token: u64,
    },
    /// Get, set or clear a marker.
    Marker {
        #[command(subcommand)]
        action: MarkerAction,
    },
}

#[derive(Subcommand, Debug)]
enum MarkerAction {
    /// Show the marker on KEY.
    Get { key: String },
    /// Set the marker on KEY to VALUE (refused if it holds another value).
    Set { key: String, value: String },
    /// Clear the marker on KEY, only if it holds VALUE.
    Clear {
        key: String,
        /// The value the marker holds, as `marker get` shows it.
        #[arg(long)]
        value: String,
    },
}

const AFTER_HELP: &str = "\
Recovering a poisoned resource: find the marker with `list PREFIX --markers`,
mend the resource, then `marker clear KEY --value VALUE` with the value shown.

Exit codes: 0 done; 1 refused (nothing to do, another token or value);
2 bad input, an unreachable server or a failed call.";

/// What a command came to: printed, then the exit code.
enum Outcome {
    Done(String, serde_json::Value),
    Refused(String, serde_json::Value),
}

fn key(text: &str) -> Result<LeaseKey, LeaseError> {
    LeaseKey::new(text)
}

async fn run(store: DynLeaseStore, command: Command) -> Result<Outcome, LeaseError> {
    Ok(match command {
        Command::List { prefix, markers } => {
            let prefix = key(&prefix)?;
            let (mut lines, mut items) = (Vec::new(), Vec::new());
            if markers {
                for (k, value) in lease_core::list_all_markers(&*store, &prefix).await? {
                    lines.push(format!("{k}\t{value:?}"));
                    items.push(json!({ "key": k.as_str(), "value": value }));
                }
            } else {
                for entry in lease_core::list_all(&*store, &prefix).await? {
                    match entry {
                        Listed::Held(r) => {
                            lines.push(format!(
                                "{}\theld by {}\ttoken {}\t{:.1} s left",
                                r.key,
                                r.holder,
                                r.token,
                                r.remaining.as_secs_f64()
                            ));
                            items.push(record_json(&r));
                        }
                        Listed::Corrupt { key, detail } => {
                            lines.push(format!("{key}\tCORRUPT\t{detail}"));
                            items.push(json!({ "key": key.as_str(), "corrupt": detail }));
                        }
                    }
                }
            }
            lines.sort();
            if lines.is_empty() {
                lines.push(format!(
                    "nothing {} under {prefix}",
                    if markers { "marked" } else { "held" }
                ));
            }
            Outcome::Done(lines.join("\n"), json!(items))
        }
        Command::Inspect { key: text } => {
            let k = key(&text)?;
            match store.inspect(&k).await? {
                Some(r) => Outcome::Done(
                    format!(
                        "{}: held by {}, token {}, {:.1} s left",
                        r.key,
                        r.holder,
                        r.token,
                        r.remaining.as_secs_f64()
                    ),
                    record_json(&r),
                ),
                None => Outcome::Refused(
                    format!("{k}: not held"),
                    json!({ "key": k.as_str(), "held": false }),
                ),
            }
        }
        Command::Leader { key: text } => {
            let k = key(&text)?;
            let observer = lease_core::Observer::new(store, k.clone(), Duration::from_secs(1));
            match observer.leader().await? {
                Some(leader) => {
                    let value = leader
                        .value
                        .as_deref()
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                    Outcome::Done(
                        format!(
                            "{k}: led by {}, term {}, value {}, {:.1} s left",
                            leader.holder,
                            leader.term,
                            value
                                .as_ref()
                                .map_or("none".to_owned(), |v| format!("{v:?}")),
                            leader.remaining.as_secs_f64()
                        ),
                        json!({
                            "key": k.as_str(),
                            "holder": holder_json(&leader.holder),
                            "term": leader.term.0,
                            "value": value,
                            "remaining_ms": u64::try_from(leader.remaining.as_millis()).unwrap_or(u64::MAX),
                        }),
                    )
                }
                None => Outcome::Refused(
                    format!("{k}: no leader"),
                    json!({ "key": k.as_str(), "led": false }),
                ),
            }
        }
        Command::Release { key: text, token } => {
            let k = key(&text)?;
            // Release takes the whole fence; the holder comes from the
            // grant that has this token. A grant that changed in between
            // is left alone: release compares holder and token itself.
            match store.inspect(&k).await? {
                Some(r) if r.token.0 == token => {
                    let released = store.release(&r.fence()).await?;
                    let text = if released {
                        format!("{k}: released the grant of {} with token {token}", r.holder)
                    } else {
                        format!("{k}: the grant with token {token} ended before the release")
                    };
                    let value = json!({ "key": k.as_str(), "token": token, "released": released });
                    if released {
                        Outcome::Done(text, value)
                    } else {
                        Outcome::Refused(text, value)
                    }
                }
                Some(r) => Outcome::Refused(
                    format!(
                        "{k}: the live grant has token {}, not {token}; nothing released",
                        r.token
                    ),
                    json!({ "key": k.as_str(), "token": token, "released": false, "current": record_json(&r) }),
                ),
                None => Outcome::Refused(
                    format!("{k}: not held; nothing released"),
                    json!({ "key": k.as_str(), "token": token, "released": false }),
                ),
            }
        }
        Command::Marker { action } => marker(&*store, action).await?,
    })
}

async fn marker(
    store: &dyn lease_core::LeaseStore,
    action: MarkerAction,
) -> Result<Outcome, LeaseError> {
    Ok(match action {
        MarkerAction::Get { key: text } => {
            let k = key(&text)?;
            match store.get_marker(&k).await? {
                Some(value) => Outcome::Done(
                    format!("{k}: {value:?}"),
                    json!({ "key": k.as_str(), "value": value }),
                ),
                None => Outcome::Refused(
                    format!("{k}: no marker"),
                    json!({ "key": k.as_str(), "value": null }),
                ),
            }
        }
        MarkerAction::Set { key: text, value } => {
            let k = key(&text)?;
            match store.put_marker(&k, &value).await {
                Ok(()) => Outcome::Done(
                    format!("{k}: set to {value:?}"),
                    json!({ "key": k.as_str(), "value": value }),
                ),
                Err(LeaseError::Conflict { existing, .. }) => Outcome::Refused(
                    format!("{k}: holds {existing:?}; clear it first"),
                    json!({ "key": k.as_str(), "existing": existing }),
                ),
                Err(other) => return Err(other),
            }
        }
        MarkerAction::Clear { key: text, value } => {
            let k = key(&text)?;
            match store.delete_marker(&k, &value).await {
                Ok(true) => Outcome::Done(
                    format!("{k}: cleared"),
                    json!({ "key": k.as_str(), "cleared": true }),
                ),
                Ok(false) => Outcome::Refused(
                    format!("{k}: no marker; nothing cleared"),
                    json!({ "key": k.as_str(), "cleared": false }),
                ),
                Err(LeaseError::Conflict { existing, .. }) => Outcome::Refused(
                    format!("{k}: holds {existing:?}, not {value:?}; nothing cleared"),
                    json!({ "key": k.as_str(), "cleared": false, "existing": existing }),
                ),
                Err(other) => return Err(other),
            }
        }
    })
}

fn holder_json(holder: &lease_core::Holder) -> serde_json::Value {
    json!({ "id": holder.id(), "incarnation": holder.incarnation() })
}

fn record_json(r: &lease_core::LeaseRecord) -> serde_json::Value {
    json!({
        "key": r.key.as_str(),
        "holder": holder_json(&r.holder),
        "token": r.token.0,
        "remaining_ms": u64::try_from(r.remaining.as_millis()).unwrap_or(u64::MAX),
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lease-admin: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        let store = connect(&target(&args)?).await?;
        run(store, args.command).await
    });
    match outcome {
        Ok(Outcome::Done(text, value)) => {
            print(json, &text, &value);
            ExitCode::SUCCESS
        }
        Ok(Outcome::Refused(text, value)) => {
            print(json, &text, &value);
            ExitCode::from(1)
        }
        Err(error) => {
            if json {
                println!("{}", json!({ "error": error.to_string() }));
            }
            eprintln!("lease-admin: {error}");
            ExitCode::from(2)
        }
    }
}

fn target(args: &Args) -> Result<Target, LeaseError> {
    let credentials = match &args.user {
        None => None,
        Some(user) => {
            let password = std::env::var("LEASE_ADMIN_ETCD_PASSWORD").map_err(|_| {
                LeaseError::InvalidConfig {
                    backend: "lease-admin",
                    what: format!("etcd user {user:?}"),
                    rule: "needs its password in LEASE_ADMIN_ETCD_PASSWORD".to_owned(),
                }
            })?;
            Some((user.clone(), password))
        }
    };
    Ok(Target {
        url: args.target.clone(),
        namespace: args.namespace.clone(),
        prefix: args.prefix.clone(),
        credentials,
        ca: args.ca.clone(),
    })
}

fn print(json: bool, text: &str, value: &serde_json::Value) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}
