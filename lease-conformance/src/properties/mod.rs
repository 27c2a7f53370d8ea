//! The generated checks: the state-machine property test and the concurrent
//! safety check. Both are cases like the others.

mod model;
mod safety;
mod state_machine;

use crate::{CaseError, ensure};

cases! {
    /// Random sequences of claim, reclaim, renew, release, inspect, guarded writes, markers and waits from several holders (including one id with two incarnations) agree with the reference model, within the timing uncertainty of a real server.
    async fn state_machine_agrees_with_the_model(s) {
        let tried = state_machine::run(s.store.clone(), s.timing(), s.settings.property_cases, s.settings.property_steps)
            .await
            .map_err(CaseError::Failed)?;
        s.note_tries(tried);
        Ok(())
    }

    /// Under contention with pauses past the deadline, holders' ownership windows on a key never overlap, later grants get higher tokens, no write inside a window is refused by the fenced resource, and no certainly-live grant is refused renewal.
    async fn concurrent_holders_never_overlap(s) {
        let grants = safety::run(s.store.clone(), s.timing(), s.settings.safety_ttls)
            .await
            .map_err(CaseError::Failed)?;
        ensure!(grants > 0, "no grant was made in the whole run");
        s.note_tries(grants);
        Ok(())
    }
}
