//! The whole conformance suite against real etcd clusters, one per case.

lease_conformance::conformance_main!(lease_tests::EtcdServerFactory);
