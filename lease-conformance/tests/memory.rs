//! The whole suite against the in-memory reference store, one test per case.

lease_conformance::conformance_tests!(lease_conformance::MemoryFactory);
