//! The whole suite against the in-memory reference store, one test per case.

lease_conformance::conformance_main!(lease_conformance::MemoryFactory);
