//! The generated checks: the state-machine property test and the concurrent
//! safety check. Both are cases like the others.

mod cancellation;
mod judge;
mod model;
mod safety;
mod state_machine;
mod steps;

use crate::{CaseError, ensure};

cases! {
    /// Random sequences of claim, reclaim, renew, release, inspect, guarded writes, markers and waits from several holders (including one id with two incarnations) agree with the reference model, within the timing uncertainty of a real server.
    #[rule(DeadlinesNeverOverlap)]
    async fn state_machine_agrees_with_the_model(s) {
        let tried = state_machine::run(s.store.clone(), s.timing(), s.lag.clone(), s.settings.property_cases, s.settings.property_steps)
            .await
            .map_err(CaseError::Failed)?;
        s.note_tries(tried);
        Ok(())
    }

    /// Calls cut off at random points (before sending, in flight, after the server applied them), and leased holds dropped mid-renewal, never leave a grant alive: another client claims the key by the last moment a cut-off call could have written + TTL + slack, never before a deadline the holder was told of, with a higher token, and the holder's fences are refused afterwards.
    #[rule(BoundedByTheServer, LateRequestsAreHarmless)]
    async fn cancelled_calls_leave_no_grant_behind(s) {
        // Seen from another client where the factory offers one, so a grant
        // the first client keeps alive (its own connection) is caught too.
        let observer = if s.hooks.offered().contains(&crate::Hook::SecondClient) {
            s.hooks.second_client().await.map_err(crate::hooks::hook_failed(crate::Hook::SecondClient))?
        } else {
            s.store.clone()
        };
        let seed = s.settings.seed.unwrap_or_else(rand::random);
        let cut = cancellation::run(s.store.clone(), observer, s.timing(), s.settings.property_cases, seed)
            .await
            .map_err(|why| match why.find(cancellation::STARVED) {
                Some(at) => CaseError::Starved(why[..at].to_owned() + &why[at + cancellation::STARVED.len()..]),
                None => CaseError::Failed(why),
            })?;
        ensure!(cut > 0, "no call was cut off (seed {seed}): the check proved nothing");
        s.note_tries(cut);
        Ok(())
    }

    /// Under contention with pauses past the deadline, holders' ownership windows on a key never overlap, later grants get higher tokens, no write inside a window is refused by the fenced resource, and no certainly-live grant is refused renewal.
    #[rule(DeadlinesNeverOverlap)]
    async fn concurrent_holders_never_overlap(s) {
        let grants = safety::run(s.store.clone(), s.timing(), s.settings.safety_ttls)
            .await
            .map_err(CaseError::Failed)?;
        ensure!(grants > 0, "no grant was made in the whole run");
        s.note_tries(grants);
        Ok(())
    }
}
