//! The whole conformance suite against real etcd clusters, one per case.

lease_conformance::conformance_tests!(lease_tests::EtcdServerFactory);
