//! The `leader_election` recipe's story (see `lease_examples::recipes::leader_election`), on the
//! store named on the command line: `memory` (the default),
//! `redis://HOST:PORT` or `etcd://HOST:PORT`.

#[tokio::main]
async fn main() -> Result<(), lease_core::LeaseError> {
    let store = lease_examples::store_from_args().await?;
    lease_examples::print(&lease_examples::recipes::leader_election::demo(store).await?);
    Ok(())
}
