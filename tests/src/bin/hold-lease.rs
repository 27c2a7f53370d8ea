//! `hold-lease TARGET KEY TTL_MS [lead]`: holds one lease and keeps it
//! alive until killed — a holder process for crash tests. TARGET is
//! `etcd://HOST:PORT` or a `redis://` URL. Prints `held TOKEN` once it
//! holds the lease; with `lead`, campaigns in the election on KEY instead
//! and prints `leads TERM` once it leads.

use std::process::ExitCode;
use std::time::Duration;

use lease_core::{Acquire, Election, Holder, LeaseKey, Leaser};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (lead, [target, key, ttl_ms]) = (match &args[..] {
        [_, _, _] => (false, &args[..]),
        [rest @ .., mode] if mode == "lead" => (true, rest),
        _ => (false, &[][..]),
    }) else {
        eprintln!("usage: hold-lease TARGET KEY TTL_MS [lead]");
        return ExitCode::from(2);
    };
    match hold(target, key, ttl_ms, lead).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("hold-lease: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn hold(
    target: &str,
    key: &str,
    ttl_ms: &str,
    lead: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let ttl = Duration::from_millis(ttl_ms.parse()?);
    let key = LeaseKey::new(key)?;
    let store = lease_connect::connect(&lease_connect::Target::new(target)).await?;
    let leaser = Leaser::new(store, Holder::unique("hold-lease")?, ttl);
    if lead {
        let election = Election::new(leaser, key.clone());
        let Some(leading) = election.campaign(ttl * 10).await? else {
            return Err(format!("{key} stayed led by another").into());
        };
        println!("leads {}", leading.term());
        leading.lost().cancelled().await;
        return Err(format!("lost the lead of {key}").into());
    }
    let Acquire::Held(lease) = leaser.acquire(&key, ttl * 10).await? else {
        return Err(format!("{key} stayed busy").into());
    };
    println!("held {}", lease.fence().token);
    lease.lost().cancelled().await;
    Err(format!("lost {key}: {:?}", lease.lost_reason()).into())
}
