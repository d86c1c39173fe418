//! What each match field means. Every test asks one question through the
//! public API: does a global ALLOW policy holding this one match let this
//! connection through? (`true` = the match matched.)

mod common;

use common::*;
use zs_authz::{Match, ServiceAccountMatch, StringMatch};

fn exact(s: &str) -> StringMatch {
    StringMatch::Exact(s.into())
}

fn cidrs(list: &[&str]) -> Vec<ipnet::IpNet> {
    list.iter().map(|s| s.parse().expect("test cidr")).collect()
}

fn sa(namespace: &str, service_account: &str) -> ServiceAccountMatch {
    ServiceAccountMatch {
        namespace: namespace.into(),
        service_account: service_account.into(),
    }
}

// ---- namespaces ------------------------------------------------------------------

#[test]
fn namespaces_test_the_identity_namespace() {
    let m = |v| Match {
        namespaces: vec![exact(v)],
        ..Match::default()
    };
    assert!(allowed_by_match(m("client-ns"), &mtls()));
    assert!(!allowed_by_match(m("other"), &mtls()));
}

#[test]
fn namespaces_test_the_empty_string_without_identity() {
    let m = |v| Match {
        namespaces: vec![v],
        ..Match::default()
    };
    assert!(!allowed_by_match(m(exact("client-ns")), &plaintext()));
    assert!(!allowed_by_match(m(StringMatch::Presence), &plaintext()));
    assert!(allowed_by_match(m(exact("")), &plaintext()));
}

#[test]
fn not_namespaces_exclude_the_identity_namespace() {
    let m = |v| Match {
        not_namespaces: vec![exact(v)],
        ..Match::default()
    };
    assert!(!allowed_by_match(m("client-ns"), &mtls()));
    assert!(allowed_by_match(m("other"), &mtls()));
    assert!(allowed_by_match(m("client-ns"), &plaintext()));
}

#[test]
fn namespaces_use_prefix_suffix_and_presence() {
    let m = |v| Match {
        namespaces: vec![v],
        ..Match::default()
    };
    assert!(allowed_by_match(
        m(StringMatch::Prefix("client-".into())),
        &mtls()
    ));
    assert!(!allowed_by_match(
        m(StringMatch::Prefix("ns".into())),
        &mtls()
    ));
    assert!(allowed_by_match(
        m(StringMatch::Suffix("-ns".into())),
        &mtls()
    ));
    assert!(!allowed_by_match(
        m(StringMatch::Suffix("client".into())),
        &mtls()
    ));
    assert!(allowed_by_match(m(StringMatch::Presence), &mtls()));
}

// ---- principals --------------------------------------------------------------------

fn principals(v: StringMatch) -> Match {
    Match {
        principals: vec![v],
        ..Match::default()
    }
}

fn not_principals(v: StringMatch) -> Match {
    Match {
        not_principals: vec![v],
        ..Match::default()
    }
}

#[test]
fn principals_exact_is_tested_without_the_spiffe_prefix() {
    assert!(allowed_by_match(
        principals(exact("cluster.local/ns/client-ns/sa/client-sa")),
        &mtls()
    ));
    assert!(!allowed_by_match(
        principals(exact("spiffe://cluster.local/ns/client-ns/sa/client-sa")),
        &mtls()
    ));
    assert!(!allowed_by_match(
        principals(exact("cluster.local/ns/client-ns/sa/other")),
        &mtls()
    ));
}

#[test]
fn principals_prefix_is_tested_from_the_trust_domain() {
    assert!(allowed_by_match(
        principals(StringMatch::Prefix("cluster.local/ns/client-ns/".into())),
        &mtls()
    ));
    assert!(allowed_by_match(
        principals(StringMatch::Prefix("cluster.lo".into())),
        &mtls()
    ));
    assert!(!allowed_by_match(
        principals(StringMatch::Prefix("spiffe://".into())),
        &mtls()
    ));
    assert!(!allowed_by_match(
        principals(StringMatch::Prefix("other.local/".into())),
        &mtls()
    ));
}

#[test]
fn principals_suffix_is_tested_against_the_service_account_end() {
    assert!(allowed_by_match(
        principals(StringMatch::Suffix("/sa/client-sa".into())),
        &mtls()
    ));
    assert!(allowed_by_match(
        principals(StringMatch::Suffix("ns/client-ns/sa/client-sa".into())),
        &mtls()
    ));
    assert!(!allowed_by_match(
        principals(StringMatch::Suffix("/sa/admin".into())),
        &mtls()
    ));
}

#[test]
fn principals_presence_matches_any_identity() {
    assert!(allowed_by_match(principals(StringMatch::Presence), &mtls()));
}

#[test]
fn principals_never_match_without_identity() {
    assert!(!allowed_by_match(
        principals(StringMatch::Presence),
        &plaintext()
    ));
    assert!(!allowed_by_match(
        principals(StringMatch::Prefix(String::new())),
        &plaintext()
    ));
    assert!(!allowed_by_match(principals(exact("")), &plaintext()));
}

#[test]
fn not_principals_pass_without_identity() {
    assert!(allowed_by_match(
        not_principals(StringMatch::Presence),
        &plaintext()
    ));
}

#[test]
fn not_principals_exclude_the_identity() {
    assert!(!allowed_by_match(
        not_principals(StringMatch::Presence),
        &mtls()
    ));
    assert!(!allowed_by_match(
        not_principals(exact("cluster.local/ns/client-ns/sa/client-sa")),
        &mtls()
    ));
    assert!(allowed_by_match(
        not_principals(exact("cluster.local/ns/client-ns/sa/other")),
        &mtls()
    ));
}

// ---- service accounts ----------------------------------------------------------

#[test]
fn service_accounts_match_namespace_and_name_ignoring_trust_domain() {
    let m = |s| Match {
        service_accounts: vec![s],
        ..Match::default()
    };
    let foreign_td = conn(
        "10.0.0.1",
        "10.0.1.1:8080",
        Some("spiffe://other.domain/ns/client-ns/sa/client-sa"),
    );
    assert!(allowed_by_match(m(sa("client-ns", "client-sa")), &mtls()));
    assert!(allowed_by_match(
        m(sa("client-ns", "client-sa")),
        &foreign_td
    ));
    assert!(!allowed_by_match(m(sa("client-ns", "other")), &mtls()));
    assert!(!allowed_by_match(m(sa("other", "client-sa")), &mtls()));
}

#[test]
fn service_accounts_never_match_without_identity() {
    let m = Match {
        service_accounts: vec![sa("client-ns", "client-sa")],
        ..Match::default()
    };
    assert!(!allowed_by_match(m, &plaintext()));
}

#[test]
fn not_service_accounts_exclude_the_identity_and_pass_without_one() {
    let m = || Match {
        not_service_accounts: vec![sa("client-ns", "client-sa")],
        ..Match::default()
    };
    assert!(!allowed_by_match(m(), &mtls()));
    assert!(allowed_by_match(m(), &plaintext()));
}

// ---- IPs and ports --------------------------------------------------------------

#[test]
fn source_ips_test_cidr_containment_of_the_peer_ip() {
    let m = |list: &[&str]| Match {
        source_ips: cidrs(list),
        ..Match::default()
    };
    assert!(allowed_by_match(m(&["10.0.0.0/24"]), &mtls()));
    assert!(allowed_by_match(
        m(&["192.168.0.0/16", "10.0.0.1/32"]),
        &mtls()
    ));
    assert!(!allowed_by_match(m(&["10.0.1.0/24"]), &mtls()));
    assert!(!allowed_by_match(m(&["::/0"]), &mtls()));
}

#[test]
fn not_source_ips_exclude_the_peer_ip() {
    let m = |list: &[&str]| Match {
        not_source_ips: cidrs(list),
        ..Match::default()
    };
    assert!(!allowed_by_match(m(&["10.0.0.0/8"]), &mtls()));
    assert!(allowed_by_match(m(&["10.0.1.0/24"]), &mtls()));
}

#[test]
fn destination_ips_test_cidr_containment_of_the_workload_ip() {
    let m = |list: &[&str]| Match {
        destination_ips: cidrs(list),
        ..Match::default()
    };
    assert!(allowed_by_match(m(&["10.0.1.0/24"]), &mtls()));
    assert!(!allowed_by_match(m(&["10.0.0.0/24"]), &mtls()));
}

#[test]
fn not_destination_ips_exclude_the_workload_ip() {
    let m = |list: &[&str]| Match {
        not_destination_ips: cidrs(list),
        ..Match::default()
    };
    assert!(!allowed_by_match(m(&["10.0.1.1/32"]), &mtls()));
    assert!(allowed_by_match(m(&["10.0.0.1/32"]), &mtls()));
}

#[test]
fn cidr_with_host_bits_matches_its_whole_network() {
    let m = Match {
        source_ips: cidrs(&["10.0.0.99/24"]),
        ..Match::default()
    };
    assert!(allowed_by_match(m, &mtls()));
}

#[test]
fn ipv6_cidrs_match_ipv6_addresses() {
    let c = conn("fd00::1", "[fd00:1::2]:8080", None);
    let src = Match {
        source_ips: cidrs(&["fd00::/64"]),
        ..Match::default()
    };
    let dst = Match {
        destination_ips: cidrs(&["fd00:1::/64"]),
        ..Match::default()
    };
    let v4 = Match {
        source_ips: cidrs(&["0.0.0.0/0"]),
        ..Match::default()
    };
    assert!(allowed_by_match(src, &c));
    assert!(allowed_by_match(dst, &c));
    assert!(!allowed_by_match(v4, &c));
}

#[test]
fn ipv4_mapped_ipv6_addresses_are_tested_as_ipv4() {
    let c = conn("::ffff:10.0.0.1", "[::ffff:10.0.1.1]:8080", None);
    let src = Match {
        source_ips: cidrs(&["10.0.0.0/24"]),
        ..Match::default()
    };
    let dst = Match {
        destination_ips: cidrs(&["10.0.1.1/32"]),
        ..Match::default()
    };
    assert!(allowed_by_match(src, &c));
    assert!(allowed_by_match(dst, &c));
}

#[test]
fn destination_ports_test_exact_equality_with_the_target_port() {
    assert!(allowed_by_match(ports(&[8080]), &mtls()));
    assert!(allowed_by_match(ports(&[80, 8080]), &mtls()));
    assert!(!allowed_by_match(ports(&[8081]), &mtls()));
    assert!(!allowed_by_match(ports(&[80]), &mtls()));
}

#[test]
fn not_destination_ports_exclude_the_target_port() {
    let m = |p: &[u16]| Match {
        not_destination_ports: p.to_vec(),
        ..Match::default()
    };
    assert!(!allowed_by_match(m(&[8080]), &mtls()));
    assert!(allowed_by_match(m(&[9999]), &mtls()));
}

// ---- combining groups ----------------------------------------------------------

#[test]
fn every_populated_group_of_a_match_must_pass() {
    let m = |port: u16, ns: &str| Match {
        destination_ports: vec![port],
        namespaces: vec![exact(ns)],
        ..Match::default()
    };
    assert!(allowed_by_match(m(8080, "client-ns"), &mtls()));
    assert!(!allowed_by_match(m(8080, "other"), &mtls()));
    assert!(!allowed_by_match(m(9090, "client-ns"), &mtls()));
}

#[test]
fn positive_and_negative_of_one_field_both_apply() {
    let m = Match {
        source_ips: cidrs(&["10.0.0.0/8"]),
        not_source_ips: cidrs(&["10.0.0.0/24"]),
        ..Match::default()
    };
    assert!(!allowed_by_match(m.clone(), &mtls()));
    assert!(allowed_by_match(
        m,
        &conn("10.9.9.9", "10.0.1.1:8080", None)
    ));
}
