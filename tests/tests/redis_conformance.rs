//! The whole conformance suite against real Redis servers, one per case.

lease_conformance::conformance_main!(lease_tests::RedisServerFactory::default());
