//! The behaviour cases: one per rule of the contract, each named for the
//! behaviour and documented with the rule it checks.

use futures::future::BoxFuture;
use std::sync::Arc;

use crate::{CaseResult, Hook, Subject};

/// A case as the runner sees it.
#[derive(Clone, Copy)]
pub struct Case {
    /// The case's name (its function's name).
    pub name: &'static str,
    /// What it checks (its doc line).
    pub rule: &'static str,
    /// The rules of the contract it checks.
    pub contract: &'static [lease_core::Rule],
    /// The test hooks it needs: it runs exactly when the factory offers
    /// them all.
    pub needs: &'static [Hook],
    /// Runs it.
    pub run: fn(Arc<Subject>) -> BoxFuture<'static, CaseResult>,
}

impl Case {
    /// The hooks this case needs that `offered` lacks.
    pub fn missing(&self, offered: &[Hook]) -> Vec<Hook> {
        self.needs
            .iter()
            .copied()
            .filter(|hook| !offered.contains(hook))
            .collect()
    }
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Case({})", self.name)
    }
}

/// Declares cases: each becomes a `pub async fn` taking the subject, and an
/// entry of the module's `CASES` with its doc as what it checks, the rule of
/// the contract named in `#[rule(...)]` and the hooks named in
/// `#[needs(...)]` as what it needs.
macro_rules! cases {
    ($(
        $(#[doc = $doc:literal])+
        $(#[needs($($hook:ident),+)])?
        #[rule($($rule:ident),+)]
        async fn $name:ident($subject:ident) $body:block
    )*) => {
        $(
            $(#[doc = $doc])+
            #[doc = ""]
            #[doc = concat!("Checks", $(" [`lease_core::Rule::", stringify!($rule), "`]"),+, ".")]
            pub async fn $name($subject: &$crate::Subject) -> $crate::CaseResult $body
        )*

        pub(crate) const CASES: &[$crate::Case] = &[$(
            $crate::Case {
                name: stringify!($name),
                rule: concat!($($doc),+),
                needs: &[$($($crate::Hook::$hook),+)?],
                contract: &[$(lease_core::Rule::$rule),+],
                run: |subject| Box::pin(async move { $name(&subject).await }),
            }
        ),*];
    };
}

pub mod atomic;
pub mod claim;
pub mod clients;
pub mod edges;
pub mod faults;
pub mod guarded;
pub mod helpers;
pub mod inspect;
pub mod linearizable;
pub mod list;
pub mod markers;
pub mod recipes;
pub mod reclaim;
pub mod records;
pub mod release;
pub mod renew;
pub mod wait;

/// Every case, in report order.
pub fn all() -> Vec<Case> {
    [
        claim::CASES,
        reclaim::CASES,
        renew::CASES,
        release::CASES,
        inspect::CASES,
        list::CASES,
        markers::CASES,
        guarded::CASES,
        wait::CASES,
        helpers::CASES,
        recipes::CASES,
        clients::CASES,
        edges::CASES,
        atomic::CASES,
        records::CASES,
        faults::CASES,
        linearizable::CASES,
        crate::properties::CASES,
    ]
    .concat()
}
