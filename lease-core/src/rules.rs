//! The contract every store meets, one rule at a time.
//!
//! Each [`Rule`] states one guarantee, once; the [`LeaseStore`] methods
//! link to the rules they keep, and every case of the conformance suite
//! names the rule it checks, so a failing case leads here in one hop.
//!
//! [`LeaseStore`]: crate::LeaseStore

/// Declares the rules: the doc of each variant is the rule, and
/// [`Rule::text`] returns it, so it is written once.
macro_rules! rules {
    ($(
        $(#[doc = $doc:literal])+
        $name:ident,
    )*) => {
        /// One rule of the lease contract. The doc of each variant is the
        /// rule itself; [`Rule::text`] gives it at run time.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Rule {
            $(
                $(#[doc = $doc])+
                $name,
            )*
        }

        impl Rule {
            /// Every rule, in the order of the contract.
            pub const ALL: &'static [Rule] = &[$(Rule::$name),*];

            /// The rule, as its doc states it.
            pub fn text(self) -> &'static str {
                match self {
                    $(Rule::$name => concat!($($doc),+),)*
                }
            }
        }
    };
}

rules! {
    /// A claim of a key with no live grant — never claimed, released,
    /// expired, or holding a corrupt record, which the claim repairs — is
    /// acquired with a fresh grant.
    ClaimFreeKey,
    /// While another holder (another id, or the same id with another
    /// incarnation) has the live grant, a claim is busy with that grant's
    /// record and changes nothing.
    ClaimBusyKey,
    /// A claim by the holder of the live grant (same id and incarnation)
    /// is acquired again with the same token and `fresh == false`, the
    /// grant live at least until the request's `sent + TTL` — and never
    /// shorter than before: a claim whose reply was lost can be retried
    /// safely, and the lost original, should it land after a longer
    /// renewal, ends nothing early ([`Rule::LateRequestsAreHarmless`]).
    ClaimOwnGrant,
    /// Every fresh grant of a key gets a token greater than every token
    /// handed out on that key before: after release, expiry, deletion,
    /// corruption, a server restart that lost the data, and a failover.
    /// Renewal keeps the token.
    TokensIncrease,
    /// A reclaim takes over a grant only while the record is still
    /// exactly the fence observed (compare-and-swap), with a higher token;
    /// when a newer grant replaced it, the reclaim is busy with that
    /// newer record. Of reclaims racing for one fence, one wins.
    ReclaimComparesAndSwaps,
    /// A renewal of the live grant keeps its token and sets its end to the
    /// renewal's TTL from the request, longer or shorter than before —
    /// unless a later renewal of the same store was applied first: then it
    /// changes nothing and answers the grant's time left
    /// ([`Rule::LateRequestsAreHarmless`], [`Stamp`](crate::Stamp)).
    RenewExtendsTheLiveGrant,
    /// A renewal of a fence that is not the live grant — released,
    /// expired, superseded or never granted — is refused with `Lost`
    /// carrying the current record, and never revives an expired grant.
    RenewRefusesAllElse,
    /// A batch renewal answers each fence exactly as `renew` would, in
    /// order; one bad fence never fails the others.
    RenewManyAnswersEach,
    /// A release ends the grant only while its fence is the current one,
    /// never a newer grant; it is idempotent and says whether it ended
    /// anything.
    ReleaseOnlyTheCurrentGrant,
    /// Inspect shows the live grant (holder, token, time left counting
    /// down by the store's clock) or none; a record that cannot be parsed
    /// is a `Corrupt` error naming the key, distinct from none. Once it
    /// shows a key free, the grant has ended for every call.
    InspectShowsTheLiveGrant,
    /// Check is true exactly while the fence is the current live grant.
    CheckFollowsTheLiveGrant,
    /// Markers have no TTL: a put succeeds when absent or equal and fails
    /// with the existing value when different; a delete needs the equal
    /// value; values are kept byte for byte; markers and leases of one key
    /// never collide.
    MarkersAreIfAbsent,
    /// A guarded write applies only while its fence is the current live
    /// grant, checked and written in one server-side step; values are
    /// kept byte for byte up to the declared limit.
    GuardedWritesAreFenced,
    /// A wait resolves true once the key has no live grant — promptly
    /// after a release, within the wake-up the store declares, and after
    /// an expiry — stays asleep through renewals and other keys' releases,
    /// and resolves false no earlier than its timeout.
    WaitWakesWhenFree,
    /// A listing shows every grant live for the whole listing under the
    /// prefix (segment-wise: `a` lists `a/…`, never `ab`), with holder,
    /// token and time left, corrupt records as such, expired ones never,
    /// paged with about the size asked.
    ListShowsLiveGrants,
    /// A TTL of zero, below the store's minimum or above its maximum is an
    /// `InvalidTtl` error naming the key, on every operation that takes
    /// one, and grants nothing; a TTL between granularity steps is rounded
    /// up and the grant reports the TTL granted.
    TtlsAreValidated,
    /// A grant's deadline is the instant its request was sent plus the
    /// TTL granted; until then no one else is granted the key (ownership
    /// windows of different holders never overlap), and a fenced resource
    /// never accepts a token older than one it accepted.
    DeadlinesNeverOverlap,
    /// Whatever the client loses — a reply lost after the server applied
    /// the request, a call cancelled at any await point, a dropped store —
    /// every grant ends by the last write the server applied to it plus
    /// its TTL plus the declared slack: nothing the client keeps alive
    /// extends a grant no live holder renews.
    BoundedByTheServer,
    /// A request the network delivers late — after its caller gave up, or
    /// after the same store made later calls — never ends a grant before a
    /// deadline its holder was told of, never revives an ended grant and
    /// never takes a key from a newer grant. One store's calls are not
    /// assumed to reach the server in the order they were made: a network
    /// backend orders one store's renewals by [`Stamp`](crate::Stamp).
    LateRequestsAreHarmless,
    /// What one client does, every client of the same store sees: a
    /// release, a renewal or an expiry shows the same on all of them.
    ClientsAgree,
    /// Keys and holders are compared exactly, whatever they contain:
    /// look-alikes (case, escapes, separators, prefixes) are other keys
    /// and other holders.
    NamesAreExact,
    /// What a store keeps stays O(live + recently ended) grants: nothing
    /// grows forever per key ever used.
    MemoryStaysBounded,
    /// The helpers built on the store keep its rules: a leaser keeps a
    /// lease alive and fires its lost signal when it is taken; a round has
    /// exactly one winner.
    HelpersKeepTheRules,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}: {}", self.text().trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_states_itself() {
        for rule in Rule::ALL {
            assert!(rule.text().trim().len() > 40, "{rule:?}");
        }
        assert!(
            Rule::ClaimOwnGrant
                .to_string()
                .starts_with("ClaimOwnGrant: A claim by the holder")
        );
    }
}
