//! The local-config YAML form and the `/config_dump` JSON form, which are one
//! serde representation: ztunnel's.

mod common;

use common::*;
use zs_authz::{Action, Match, Policy, Scope, ServiceAccountMatch, StringMatch};

const EXAMPLE: &str = r#"
name: allow-eks
namespace: ecs-demo-1
scope: Namespace        # Global | Namespace | WorkloadSelector
action: Allow           # Allow | Deny
dryRun: false
rules:                  # rules (OR) -> clauses (AND) -> matches (OR)
- - - namespaces: [!Exact default]
      destinationPorts: [8080]
"#;

fn example() -> Policy {
    policy(
        "ecs-demo-1",
        "allow-eks",
        Scope::Namespace,
        Action::Allow,
        only(Match {
            namespaces: vec![StringMatch::Exact("default".into())],
            destination_ports: vec![8080],
            ..Match::default()
        }),
    )
}

/// A policy that uses every match key and every string match kind.
fn every_key() -> Policy {
    let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
    Policy {
        dry_run: true,
        ..policy(
            "ns",
            "all",
            Scope::WorkloadSelector,
            Action::Deny,
            only(Match {
                namespaces: vec![StringMatch::Exact("a".into())],
                not_namespaces: vec![StringMatch::Prefix("b".into())],
                service_accounts: vec![ServiceAccountMatch {
                    namespace: "c".into(),
                    service_account: "d".into(),
                }],
                not_service_accounts: vec![ServiceAccountMatch {
                    namespace: "e".into(),
                    service_account: "f".into(),
                }],
                principals: vec![StringMatch::Suffix("/sa/admin".into())],
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

const EVERY_KEY_YAML: &str = r#"
name: all
namespace: ns
scope: WorkloadSelector
action: Deny
rules:
- - - namespaces: [!Exact a]
      notNamespaces: [!Prefix b]
      serviceAccounts: [{namespace: c, serviceAccount: d}]
      notServiceAccounts: [{namespace: e, serviceAccount: f}]
      principals: [!Suffix /sa/admin]
      notPrincipals: [!Presence []]
      sourceIps: [10.0.0.0/8]
      notSourceIps: [10.1.0.0/16]
      destinationIps: ["fd00::/64"]
      notDestinationIps: [10.0.0.1/32]
      destinationPorts: [80]
      notDestinationPorts: [81]
dryRun: true
"#;

#[test]
fn local_config_example_policy_parses() {
    let parsed: Policy = serde_yaml::from_str(EXAMPLE).unwrap();
    assert_eq!(parsed, example());
    assert_eq!(parsed.key(), "ecs-demo-1/allow-eks");
}

#[test]
fn every_match_key_parses() {
    let parsed: Policy = serde_yaml::from_str(EVERY_KEY_YAML).unwrap();
    assert_eq!(parsed, every_key());
}

#[test]
fn string_match_map_form_is_rejected() {
    let yaml = EXAMPLE.replace("!Exact default", "{Exact: default}");
    assert!(serde_yaml::from_str::<Policy>(&yaml).is_err());
}

#[test]
fn untagged_string_match_is_rejected() {
    let yaml = EXAMPLE.replace("!Exact default", "default");
    assert!(serde_yaml::from_str::<Policy>(&yaml).is_err());
}

#[test]
fn unknown_policy_field_is_rejected() {
    let yaml = format!("{EXAMPLE}selector: {{app: x}}\n");
    let err = serde_yaml::from_str::<Policy>(&yaml)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `selector`"), "{err}");
}

#[test]
fn unknown_match_field_is_rejected() {
    let yaml = EXAMPLE.replace("destinationPorts", "destinationPort");
    let err = serde_yaml::from_str::<Policy>(&yaml)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `destinationPort`"), "{err}");
}

#[test]
fn unknown_service_account_field_is_rejected() {
    let yaml = EVERY_KEY_YAML.replace(
        "{namespace: c, serviceAccount: d}",
        "{namespace: c, serviceAccount: d, td: x}",
    );
    assert!(serde_yaml::from_str::<Policy>(&yaml).is_err());
}

#[test]
fn every_policy_key_is_required_as_in_ztunnel() {
    let lines = [
        ("name", "name: n"),
        ("namespace", "namespace: ns"),
        ("scope", "scope: Global"),
        ("action", "action: Deny"),
        ("dryRun", "dryRun: false"),
        ("rules", "rules: []"),
    ];
    assert!(serde_yaml::from_str::<Policy>(&lines.map(|(_, l)| l).join("\n")).is_ok());
    for (key, _) in lines {
        let yaml: Vec<&str> = lines
            .iter()
            .filter(|(k, _)| *k != key)
            .map(|(_, l)| *l)
            .collect();
        let err = serde_yaml::from_str::<Policy>(&yaml.join("\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("missing field `{key}`")), "{err}");
    }
}

#[test]
fn lowercase_enum_values_are_rejected() {
    let yaml = EXAMPLE.replace("action: Allow", "action: ALLOW");
    assert!(serde_yaml::from_str::<Policy>(&yaml).is_err());
}

#[test]
fn yaml_round_trips() {
    for p in [example(), every_key()] {
        let yaml = serde_yaml::to_string(&p).unwrap();
        assert_eq!(serde_yaml::from_str::<Policy>(&yaml).unwrap(), p, "{yaml}");
    }
}

#[test]
fn yaml_writes_string_matches_as_tags() {
    let yaml = serde_yaml::to_string(&every_key()).unwrap();
    assert!(yaml.contains("!Exact a"), "{yaml}");
    assert!(yaml.contains("!Presence []"), "{yaml}");
}

#[test]
fn config_dump_json_has_ztunnels_shape() {
    let json = serde_json::to_string(&example()).unwrap();
    assert_eq!(
        json,
        r#"{"name":"allow-eks","namespace":"ecs-demo-1","scope":"Namespace","action":"Allow","rules":[[[{"namespaces":[{"Exact":"default"}],"destinationPorts":[8080]}]]],"dryRun":false}"#
    );
}

#[test]
fn config_dump_json_of_every_key_has_ztunnels_order_and_spelling() {
    let json = serde_json::to_string(&every_key()).unwrap();
    assert_eq!(
        json,
        concat!(
            r#"{"name":"all","namespace":"ns","scope":"WorkloadSelector","action":"Deny","rules":[[[{"#,
            r#""namespaces":[{"Exact":"a"}],"notNamespaces":[{"Prefix":"b"}],"#,
            r#""serviceAccounts":[{"namespace":"c","serviceAccount":"d"}],"#,
            r#""notServiceAccounts":[{"namespace":"e","serviceAccount":"f"}],"#,
            r#""principals":[{"Suffix":"/sa/admin"}],"notPrincipals":[{"Presence":[]}],"#,
            r#""sourceIps":["10.0.0.0/8"],"notSourceIps":["10.1.0.0/16"],"#,
            r#""destinationIps":["fd00::/64"],"notDestinationIps":["10.0.0.1/32"],"#,
            r#""destinationPorts":[80],"notDestinationPorts":[81]}]]],"dryRun":true}"#
        )
    );
}

#[test]
fn json_round_trips() {
    let p = every_key();
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), p);
}

#[test]
fn store_serializes_as_the_config_dump_policies_array_sorted_by_key() {
    let s = store(vec![
        policy("b", "x", Scope::Global, Action::Deny, vec![]),
        policy("a", "y", Scope::Namespace, Action::Allow, vec![]),
    ]);
    assert_eq!(
        serde_json::to_string(&s).unwrap(),
        concat!(
            r#"[{"name":"y","namespace":"a","scope":"Namespace","action":"Allow","rules":[],"dryRun":false},"#,
            r#"{"name":"x","namespace":"b","scope":"Global","action":"Deny","rules":[],"dryRun":false}]"#
        )
    );
}
