//! The whole conformance suite against real Redis servers, one per case.

lease_conformance::conformance_tests!(lease_tests::RedisServerFactory::default());
