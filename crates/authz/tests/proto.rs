//! Conversion from and to the xDS message `istio.security.Authorization`.

mod common;

use common::*;
use zs_authz::{
    Action, ConversionError, Match, Policy, Scope, ServiceAccountMatch, StringMatch, Target,
};
use zs_proto::istio::security as xds;
use zs_proto::istio::security::string_match::MatchType;

fn sm(t: MatchType) -> xds::StringMatch {
    xds::StringMatch {
        match_type: Some(t),
    }
}

fn addr(bytes: &[u8], length: u32) -> xds::Address {
    xds::Address {
        address: bytes.to_vec(),
        length,
    }
}

fn message(m: xds::Match) -> xds::Authorization {
    xds::Authorization {
        name: "p".into(),
        namespace: "ns".into(),
        scope: xds::Scope::Namespace as i32,
        action: xds::Action::Deny as i32,
        rules: vec![xds::Rule {
            clauses: vec![xds::Clause { matches: vec![m] }],
        }],
        dry_run: true,
        extensions: vec![],
    }
}

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

fn full_match() -> xds::Match {
    xds::Match {
        namespaces: vec![sm(MatchType::Exact("a".into()))],
        not_namespaces: vec![sm(MatchType::Prefix("b".into()))],
        principals: vec![sm(MatchType::Suffix("/sa/c".into()))],
        not_principals: vec![sm(MatchType::Presence(()))],
        source_ips: vec![addr(&[10, 0, 0, 0], 8)],
        not_source_ips: vec![addr(&[10, 1, 0, 0], 16)],
        destination_ips: vec![addr(
            &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            64,
        )],
        not_destination_ips: vec![addr(&[10, 0, 0, 1], 32)],
        destination_ports: vec![80],
        not_destination_ports: vec![81],
        service_accounts: vec![xds::ServiceAccountMatch {
            namespace: "d".into(),
            service_account: "e".into(),
        }],
        not_service_accounts: vec![xds::ServiceAccountMatch {
            namespace: "f".into(),
            service_account: "g".into(),
        }],
        extensions: vec![],
    }
}

fn full_policy() -> Policy {
    Policy {
        dry_run: true,
        ..policy(
            "ns",
            "p",
            Scope::Namespace,
            Action::Deny,
            only(Match {
                namespaces: vec![StringMatch::Exact("a".into())],
                not_namespaces: vec![StringMatch::Prefix("b".into())],
                service_accounts: vec![ServiceAccountMatch {
                    namespace: "d".into(),
                    service_account: "e".into(),
                }],
                not_service_accounts: vec![ServiceAccountMatch {
                    namespace: "f".into(),
                    service_account: "g".into(),
                }],
                principals: vec![StringMatch::Suffix("/sa/c".into())],
                not_principals: vec![StringMatch::Presence],
                source_ips: vec![net("10.0.0.0/8")],
                not_source_ips: vec![net("10.1.0.0/16")],
                destination_ips: vec![net("fd00::/64")],
                not_destination_ips: vec![net("10.0.0.1/32")],
                destination_ports: vec![80],
                not_destination_ports: vec![81],
            }),
        )
    }
}

#[test]
fn every_field_converts() {
    assert_eq!(
        Policy::try_from(message(full_match())).unwrap(),
        full_policy()
    );
}

#[test]
fn scopes_and_actions_convert() {
    let with = |scope: xds::Scope, action: xds::Action| {
        let msg = xds::Authorization {
            scope: scope as i32,
            action: action as i32,
            ..message(full_match())
        };
        let p = Policy::try_from(msg).unwrap();
        (p.scope, p.action)
    };
    assert_eq!(
        with(xds::Scope::Global, xds::Action::Allow),
        (Scope::Global, Action::Allow)
    );
    assert_eq!(
        with(xds::Scope::Namespace, xds::Action::Deny),
        (Scope::Namespace, Action::Deny)
    );
    assert_eq!(
        with(xds::Scope::WorkloadSelector, xds::Action::Allow),
        (Scope::WorkloadSelector, Action::Allow)
    );
}

#[test]
fn unknown_scope_is_rejected() {
    let msg = xds::Authorization {
        scope: 7,
        ..message(full_match())
    };
    let err = Policy::try_from(msg).unwrap_err();
    assert_eq!(
        err,
        ConversionError::UnknownScope {
            policy: "ns/p".into(),
            value: 7
        }
    );
    assert_eq!(
        err.to_string(),
        "authorization policy ns/p: unknown scope value 7"
    );
}

#[test]
fn unknown_action_is_rejected() {
    // 2 would be AUDIT in Istio's API; ztunnel knows only ALLOW and DENY.
    let msg = xds::Authorization {
        action: 2,
        ..message(full_match())
    };
    assert_eq!(
        Policy::try_from(msg).unwrap_err(),
        ConversionError::UnknownAction {
            policy: "ns/p".into(),
            value: 2
        }
    );
}

#[test]
fn invalid_addresses_are_dropped_from_the_match() {
    let msg = message(xds::Match {
        source_ips: vec![
            addr(&[10, 0, 0], 8),        // 3 bytes
            addr(&[192, 168, 0, 0], 16), // kept
            addr(&[10, 0, 0, 0, 0], 8),  // 5 bytes
            addr(&[10, 0, 0, 0], 33),    // prefix too long for IPv4
            addr(&[], 0),                // empty
        ],
        destination_ips: vec![addr(&[0; 16], 129), addr(&[0; 16], 0)],
        ..xds::Match::default()
    });
    let p = Policy::try_from(msg).unwrap();
    assert_eq!(
        p.rules[0].clauses[0].matches[0],
        Match {
            source_ips: vec![net("192.168.0.0/16")],
            destination_ips: vec![net("::/0")],
            ..Match::default()
        }
    );
}

#[test]
fn match_left_empty_by_dropped_addresses_is_skipped() {
    // A DENY whose only condition was an invalid address denies nothing.
    let msg = xds::Authorization {
        scope: xds::Scope::Global as i32,
        dry_run: false,
        ..message(xds::Match {
            source_ips: vec![addr(&[1, 2, 3], 24)],
            ..xds::Match::default()
        })
    };
    let p = Policy::try_from(msg).unwrap();
    assert_eq!(p.rules[0].clauses[0].matches[0], Match::default());
    let s = store(vec![p]);
    assert!(
        s.evaluate(&Target::new("app", NO_NAMES), &mtls())
            .is_allowed()
    );
}

#[test]
fn string_match_without_a_variant_is_dropped() {
    let msg = message(xds::Match {
        principals: vec![
            xds::StringMatch { match_type: None },
            sm(MatchType::Exact("td/ns/a/sa/b".into())),
        ],
        namespaces: vec![xds::StringMatch { match_type: None }],
        ..xds::Match::default()
    });
    let p = Policy::try_from(msg).unwrap();
    assert_eq!(
        p.rules[0].clauses[0].matches[0],
        Match {
            principals: vec![StringMatch::Exact("td/ns/a/sa/b".into())],
            ..Match::default()
        }
    );
}

#[test]
fn ports_above_16_bits_are_narrowed_as_ztunnel_narrows_them() {
    let msg = message(xds::Match {
        destination_ports: vec![65536 + 8080],
        not_destination_ports: vec![65535],
        ..xds::Match::default()
    });
    let p = Policy::try_from(msg).unwrap();
    assert_eq!(
        p.rules[0].clauses[0].matches[0],
        Match {
            destination_ports: vec![8080],
            not_destination_ports: vec![65535],
            ..Match::default()
        }
    );
}

#[test]
fn prefix_length_is_narrowed_to_a_byte_as_ztunnel_narrows_it() {
    let msg = message(xds::Match {
        source_ips: vec![addr(&[10, 0, 0, 0], 256 + 24)],
        ..xds::Match::default()
    });
    let p = Policy::try_from(msg).unwrap();
    assert_eq!(
        p.rules[0].clauses[0].matches[0].source_ips,
        vec![net("10.0.0.0/24")]
    );
}

#[test]
fn extensions_are_ignored() {
    let ext = zs_proto::istio::workload::Extension::default();
    let mut msg = message(full_match());
    msg.extensions = vec![ext.clone()];
    msg.rules[0].clauses[0].matches[0].extensions = vec![ext];
    assert_eq!(Policy::try_from(msg).unwrap(), full_policy());
}

#[test]
fn policy_converts_to_the_xds_message() {
    assert_eq!(
        xds::Authorization::from(&full_policy()),
        message(full_match())
    );
}

#[test]
fn host_bits_survive_a_round_trip() {
    let p = policy(
        "ns",
        "p",
        Scope::Global,
        Action::Allow,
        only(Match {
            source_ips: vec![net("10.0.0.7/8")],
            ..Match::default()
        }),
    );
    let msg = xds::Authorization::from(&p);
    assert_eq!(
        msg.rules[0].clauses[0].matches[0].source_ips,
        vec![addr(&[10, 0, 0, 7], 8)]
    );
    assert_eq!(Policy::try_from(msg).unwrap(), p);
}

#[test]
fn policy_round_trips_through_the_wire() {
    use prost::Message;
    let bytes = xds::Authorization::from(&full_policy()).encode_to_vec();
    let decoded = xds::Authorization::decode(bytes.as_slice()).unwrap();
    assert_eq!(Policy::try_from(decoded).unwrap(), full_policy());
}
