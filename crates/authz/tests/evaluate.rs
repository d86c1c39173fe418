//! The decision procedure: which policies apply to a target, in which order
//! they are consulted, and what dry-run means. Field-level matching is in
//! `matching.rs`.

mod common;

use std::sync::Arc;

use common::*;
use zs_authz::{Action, Decision, DenyReason, Match, Scope, Target, Warning};

fn deny_reason(d: &Decision) -> String {
    d.deny_reason().map(ToString::to_string).unwrap_or_default()
}

// ---- scope selection -------------------------------------------------------

#[test]
fn namespace_policy_applies_to_workloads_in_its_namespace() {
    let s = store(vec![policy(
        "app",
        "deny-all",
        Scope::Namespace,
        Action::Deny,
        everything(),
    )]);
    let d = s.evaluate(&Target::new("app", NO_NAMES), &mtls());
    assert_eq!(deny_reason(&d), "explicitly denied by: app/deny-all");
}

#[test]
fn namespace_policy_does_not_apply_to_other_namespaces() {
    let s = store(vec![policy(
        "app",
        "deny-all",
        Scope::Namespace,
        Action::Deny,
        everything(),
    )]);
    assert!(
        s.evaluate(&Target::new("other", NO_NAMES), &mtls())
            .is_allowed()
    );
}

#[test]
fn global_policy_applies_in_every_namespace_whatever_its_own() {
    let s = store(vec![policy(
        "istio-system",
        "deny-all",
        Scope::Global,
        Action::Deny,
        everything(),
    )]);
    for ns in ["app", "other", "istio-system", ""] {
        let d = s.evaluate(&Target::new(ns, NO_NAMES), &mtls());
        assert_eq!(
            deny_reason(&d),
            "explicitly denied by: istio-system/deny-all",
            "{ns}"
        );
    }
}

#[test]
fn workload_selector_policy_applies_only_to_targets_that_name_it() {
    let s = store(vec![policy(
        "app",
        "deny-sel",
        Scope::WorkloadSelector,
        Action::Deny,
        everything(),
    )]);
    let named = names(&["app/deny-sel"]);
    assert!(
        !s.evaluate(&Target::new("app", &named), &mtls())
            .is_allowed()
    );
    assert!(
        s.evaluate(&Target::new("app", NO_NAMES), &mtls())
            .is_allowed()
    );
}

#[test]
fn workload_selector_policy_is_looked_up_by_store_key() {
    let mut s = store(vec![]);
    s.insert(
        "custom-resource-name",
        policy(
            "app",
            "deny-sel",
            Scope::WorkloadSelector,
            Action::Deny,
            everything(),
        ),
    );
    let by_label = names(&["app/deny-sel"]);
    let by_key = names(&["custom-resource-name"]);
    assert!(
        s.evaluate(&Target::new("app", &by_label), &mtls())
            .is_allowed()
    );
    let d = s.evaluate(&Target::new("app", &by_key), &mtls());
    // ztunnel reports the policy by namespace/name, not by resource name.
    assert_eq!(deny_reason(&d), "explicitly denied by: app/deny-sel");
}

#[test]
fn unknown_referenced_policy_is_skipped() {
    let s = store(vec![]);
    let named = ["app/not-yet-pushed", "app/gone"];
    let target = Target::new("app", &named[..]);
    assert!(s.evaluate(&target, &mtls()).is_allowed());
    assert_eq!(
        s.unknown_policies(&target).collect::<Vec<_>>(),
        vec!["app/not-yet-pushed", "app/gone"]
    );
}

#[test]
fn named_policy_applies_whatever_its_scope() {
    // A target naming a NAMESPACE policy of another namespace gets it too:
    // names are looked up without looking at scope.
    let s = store(vec![policy(
        "elsewhere",
        "deny-all",
        Scope::Namespace,
        Action::Deny,
        everything(),
    )]);
    let named = names(&["elsewhere/deny-all"]);
    assert!(
        !s.evaluate(&Target::new("app", &named), &mtls())
            .is_allowed()
    );
}

#[test]
fn namespace_policy_with_empty_namespace_applies_everywhere_like_a_global_one() {
    let s = store(vec![policy(
        "",
        "deny-all",
        Scope::Namespace,
        Action::Deny,
        everything(),
    )]);
    assert_eq!(
        deny_reason(&s.evaluate(&Target::new("app", NO_NAMES), &mtls())),
        "explicitly denied by: /deny-all"
    );
}

#[test]
fn target_accepts_any_string_type_for_names() {
    let s = store(vec![policy(
        "app",
        "deny-sel",
        Scope::WorkloadSelector,
        Action::Deny,
        everything(),
    )]);
    let as_strings = vec!["app/deny-sel".to_string()];
    assert!(
        !s.evaluate(&Target::new("app", &as_strings), &mtls())
            .is_allowed()
    );
}

// ---- evaluation order --------------------------------------------------------

#[test]
fn no_policies_allow() {
    let d = store(vec![]).evaluate(&Target::new("app", NO_NAMES), &mtls());
    assert_eq!(
        d,
        Decision::Allow {
            policy: None,
            dry_run: Default::default()
        }
    );
}

#[test]
fn deny_wins_over_a_matching_allow() {
    let s = store(vec![
        policy(
            "app",
            "allow-all",
            Scope::Namespace,
            Action::Allow,
            everything(),
        ),
        policy(
            "app",
            "deny-8080",
            Scope::Namespace,
            Action::Deny,
            only(ports(&[8080])),
        ),
    ]);
    let d = s.evaluate(&Target::new("app", NO_NAMES), &mtls());
    assert_eq!(deny_reason(&d), "explicitly denied by: app/deny-8080");
}

#[test]
fn deny_that_does_not_match_lets_evaluation_continue() {
    let s = store(vec![policy(
        "app",
        "deny-9090",
        Scope::Namespace,
        Action::Deny,
        only(ports(&[9090])),
    )]);
    assert!(
        s.evaluate(&Target::new("app", NO_NAMES), &mtls())
            .is_allowed()
    );
}

#[test]
fn no_enforced_allow_policy_allows() {
    let s = store(vec![policy(
        "app",
        "deny-9090",
        Scope::Namespace,
        Action::Deny,
        only(ports(&[9090])),
    )]);
    let d = s.evaluate(&Target::new("app", NO_NAMES), &mtls());
    assert_eq!(d.to_string(), "no allow policies, allow");
}

#[test]
fn matching_allow_allows_and_names_the_policy() {
    let s = store(vec![policy(
        "app",
        "allow-8080",
        Scope::Namespace,
        Action::Allow,
        only(ports(&[8080])),
    )]);
    let d = s.evaluate(&Target::new("app", NO_NAMES), &mtls());
    assert_eq!(
        d,
        Decision::Allow {
            policy: Some(Arc::from("app/allow-8080")),
            dry_run: Default::default()
        }
    );
}

#[test]
fn allow_policies_that_exist_but_do_not_match_deny() {
    let s = store(vec![policy(
        "app",
        "allow-9090",
        Scope::Namespace,
        Action::Allow,
        only(ports(&[9090])),
    )]);
    let d = s.evaluate(&Target::new("app", NO_NAMES), &mtls());
    assert_eq!(
        d,
        Decision::Deny(DenyReason::NoAllowMatched {
            dry_run: Default::default()
        })
    );
    assert_eq!(deny_reason(&d), "allow policies exist, but none allowed");
}

#[test]
fn allow_in_another_namespace_does_not_make_allow_policies_exist() {
    let s = store(vec![policy(
        "other",
        "allow-9090",
        Scope::Namespace,
        Action::Allow,
        only(ports(&[9090])),
    )]);
    assert!(
        s.evaluate(&Target::new("app", NO_NAMES), &mtls())
            .is_allowed()
    );
}

#[test]
fn allow_with_zero_rules_denies_everything_when_it_is_the_only_allow() {
    let s = store(vec![policy(
        "app",
        "allow-nothing",
        Scope::Namespace,
        Action::Allow,
        vec![],
    )]);
    assert_eq!(
        deny_reason(&s.evaluate(&Target::new("app", NO_NAMES), &mtls())),
        "allow policies exist, but none allowed"
    );
    assert!(
        !s.evaluate(&Target::new("app", NO_NAMES), &plaintext())
            .is_allowed()
    );
}

#[test]
fn allow_with_zero_rules_does_not_block_another_matching_allow() {
    let s = store(vec![
        policy(
            "app",
            "allow-nothing",
            Scope::Namespace,
            Action::Allow,
            vec![],
        ),
        policy(
            "app",
            "allow-8080",
            Scope::Namespace,
            Action::Allow,
            only(ports(&[8080])),
        ),
    ]);
    assert!(
        s.evaluate(&Target::new("app", NO_NAMES), &mtls())
            .is_allowed()
    );
}

#[test]
fn deny_with_zero_rules_denies_nothing() {
    let s = store(vec![policy(
        "app",
        "deny-nothing",
        Scope::Namespace,
        Action::Deny,
        vec![],
    )]);
    assert!(
        s.evaluate(&Target::new("app", NO_NAMES), &mtls())
            .is_allowed()
    );
}

#[test]
fn rule_with_zero_clauses_matches_everything() {
    let s = store(vec![policy(
        "app",
        "deny",
        Scope::Namespace,
        Action::Deny,
        vec![rule(vec![])],
    )]);
    assert!(
        !s.evaluate(&Target::new("app", NO_NAMES), &plaintext())
            .is_allowed()
    );
}

#[test]
fn clause_with_zero_matches_matches_everything() {
    let s = store(vec![policy(
        "app",
        "deny",
        Scope::Namespace,
        Action::Deny,
        vec![rule(vec![vec![]])],
    )]);
    assert!(
        !s.evaluate(&Target::new("app", NO_NAMES), &plaintext())
            .is_allowed()
    );
}

#[test]
fn clause_of_only_empty_matches_never_matches() {
    let s = store(vec![policy(
        "app",
        "deny",
        Scope::Namespace,
        Action::Deny,
        vec![rule(vec![vec![Match::default(), Match::default()]])],
    )]);
    assert!(
        s.evaluate(&Target::new("app", NO_NAMES), &mtls())
            .is_allowed()
    );
}

#[test]
fn empty_match_beside_a_matching_one_is_skipped() {
    let s = store(vec![policy(
        "app",
        "deny",
        Scope::Namespace,
        Action::Deny,
        vec![rule(vec![vec![Match::default(), ports(&[8080])]])],
    )]);
    assert!(
        !s.evaluate(&Target::new("app", NO_NAMES), &mtls())
            .is_allowed()
    );
}

#[test]
fn rule_matches_only_when_every_clause_matches() {
    let and_rule = |second: u16| vec![rule(vec![vec![ports(&[8080])], vec![ports(&[second])]])];
    let both = store(vec![policy(
        "app",
        "deny",
        Scope::Namespace,
        Action::Deny,
        and_rule(8080),
    )]);
    let one = store(vec![policy(
        "app",
        "deny",
        Scope::Namespace,
        Action::Deny,
        and_rule(9090),
    )]);
    assert!(
        !both
            .evaluate(&Target::new("app", NO_NAMES), &mtls())
            .is_allowed()
    );
    assert!(
        one.evaluate(&Target::new("app", NO_NAMES), &mtls())
            .is_allowed()
    );
}

#[test]
fn clause_matches_when_any_match_matches() {
    let s = store(vec![policy(
        "app",
        "deny",
        Scope::Namespace,
        Action::Deny,
        vec![rule(vec![vec![ports(&[9090]), ports(&[8080])]])],
    )]);
    assert!(
        !s.evaluate(&Target::new("app", NO_NAMES), &mtls())
            .is_allowed()
    );
}

#[test]
fn policy_matches_when_any_rule_matches() {
    let s = store(vec![policy(
        "app",
        "deny",
        Scope::Namespace,
        Action::Deny,
        vec![
            rule(vec![vec![ports(&[9090])]]),
            rule(vec![vec![ports(&[8080])]]),
        ],
    )]);
    assert!(
        !s.evaluate(&Target::new("app", NO_NAMES), &mtls())
            .is_allowed()
    );
}

#[test]
fn first_matching_deny_in_key_order_is_reported() {
    let s = store(vec![
        policy(
            "app",
            "b-deny",
            Scope::Namespace,
            Action::Deny,
            everything(),
        ),
        policy(
            "app",
            "a-deny",
            Scope::Namespace,
            Action::Deny,
            everything(),
        ),
    ]);
    assert_eq!(
        deny_reason(&s.evaluate(&Target::new("app", NO_NAMES), &mtls())),
        "explicitly denied by: app/a-deny"
    );
}

// ---- dry run -------------------------------------------------------------------

fn dry(mut p: zs_authz::Policy) -> zs_authz::Policy {
    p.dry_run = true;
    p
}

#[test]
fn dry_run_deny_is_reported_and_not_enforced() {
    let s = store(vec![dry(policy(
        "app",
        "deny-all",
        Scope::Namespace,
        Action::Deny,
        everything(),
    ))]);
    let d = s.evaluate(&Target::new("app", NO_NAMES), &mtls());
    assert!(d.is_allowed());
    assert_eq!(d.dry_run().denied_by(), [Arc::from("app/deny-all")]);
}

#[test]
fn dry_run_allow_that_does_not_match_is_not_enforced() {
    let s = store(vec![dry(policy(
        "app",
        "allow-9090",
        Scope::Namespace,
        Action::Allow,
        only(ports(&[9090])),
    ))]);
    let d = s.evaluate(&Target::new("app", NO_NAMES), &mtls());
    assert!(d.is_allowed());
    assert!(d.dry_run().none_allowed());
    assert!(d.dry_run().allowed_by().is_empty());
}

#[test]
fn dry_run_allow_match_is_reported() {
    let s = store(vec![dry(policy(
        "app",
        "allow-8080",
        Scope::Namespace,
        Action::Allow,
        only(ports(&[8080])),
    ))]);
    let d = s.evaluate(&Target::new("app", NO_NAMES), &mtls());
    assert!(d.is_allowed());
    assert_eq!(d.dry_run().allowed_by(), [Arc::from("app/allow-8080")]);
    assert!(!d.dry_run().none_allowed());
}

#[test]
fn dry_run_allow_does_not_rescue_a_connection_enforced_allows_deny() {
    let s = store(vec![
        policy(
            "app",
            "allow-9090",
            Scope::Namespace,
            Action::Allow,
            only(ports(&[9090])),
        ),
        dry(policy(
            "app",
            "allow-8080",
            Scope::Namespace,
            Action::Allow,
            only(ports(&[8080])),
        )),
    ]);
    let d = s.evaluate(&Target::new("app", NO_NAMES), &mtls());
    assert_eq!(deny_reason(&d), "allow policies exist, but none allowed");
    assert_eq!(d.dry_run().allowed_by(), [Arc::from("app/allow-8080")]);
}

#[test]
fn dry_run_deny_is_reported_alongside_an_explicit_deny() {
    let s = store(vec![
        dry(policy(
            "app",
            "dry-deny",
            Scope::Namespace,
            Action::Deny,
            everything(),
        )),
        policy("app", "deny", Scope::Namespace, Action::Deny, everything()),
        dry(policy(
            "app",
            "dry-allow",
            Scope::Namespace,
            Action::Allow,
            everything(),
        )),
    ]);
    let d = s.evaluate(&Target::new("app", NO_NAMES), &mtls());
    assert_eq!(deny_reason(&d), "explicitly denied by: app/deny");
    assert_eq!(d.dry_run().denied_by(), [Arc::from("app/dry-deny")]);
    // Dry-run ALLOW comes after the enforced DENY and is not reached.
    assert!(d.dry_run().allowed_by().is_empty());
}

#[test]
fn dry_run_policy_reached_twice_is_reported_once() {
    let s = store(vec![dry(policy(
        "app",
        "deny-all",
        Scope::Namespace,
        Action::Deny,
        everything(),
    ))]);
    let named = names(&["app/deny-all"]);
    let d = s.evaluate(&Target::new("app", &named), &mtls());
    assert_eq!(d.dry_run().denied_by(), [Arc::from("app/deny-all")]);
}

// ---- store maintenance ---------------------------------------------------------

#[test]
fn reinserting_with_another_scope_moves_the_policy() {
    let mut s = store(vec![policy(
        "app",
        "deny",
        Scope::Namespace,
        Action::Deny,
        everything(),
    )]);
    s.insert(
        "app/deny",
        policy(
            "app",
            "deny",
            Scope::WorkloadSelector,
            Action::Deny,
            everything(),
        ),
    );
    assert_eq!(s.len(), 1);
    assert!(
        s.evaluate(&Target::new("app", NO_NAMES), &mtls())
            .is_allowed()
    );
}

#[test]
fn reinserting_with_another_action_replaces_the_policy() {
    let mut s = store(vec![policy(
        "app",
        "p",
        Scope::Namespace,
        Action::Deny,
        everything(),
    )]);
    s.insert(
        "app/p",
        policy("app", "p", Scope::Namespace, Action::Allow, everything()),
    );
    let d = s.evaluate(&Target::new("app", NO_NAMES), &mtls());
    assert_eq!(d.to_string(), "allowed by: app/p");
}

#[test]
fn removed_policy_no_longer_applies() {
    let mut s = store(vec![
        policy("app", "deny", Scope::Namespace, Action::Deny, everything()),
        policy(
            "istio-system",
            "g",
            Scope::Global,
            Action::Deny,
            everything(),
        ),
    ]);
    let removed = s.remove("app/deny").expect("was stored");
    assert_eq!(removed.name, "deny");
    assert_eq!(
        deny_reason(&s.evaluate(&Target::new("app", NO_NAMES), &mtls())),
        "explicitly denied by: istio-system/g"
    );
    assert!(s.remove("istio-system/g").is_some());
    assert!(s.remove("istio-system/g").is_none());
    assert!(s.is_empty());
    assert!(
        s.evaluate(&Target::new("app", NO_NAMES), &mtls())
            .is_allowed()
    );
}

#[test]
fn iter_lists_policies_sorted_by_key() {
    let s = store(vec![
        policy("b", "x", Scope::Namespace, Action::Deny, vec![]),
        policy("a", "y", Scope::Global, Action::Allow, vec![]),
        policy("a", "x", Scope::WorkloadSelector, Action::Deny, vec![]),
    ]);
    let keys: Vec<&str> = s.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["a/x", "a/y", "b/x"]);
    assert_eq!(s.get("a/y").map(|p| p.scope), Some(Scope::Global));
}

#[test]
fn insert_warns_about_rules_that_cannot_match_at_l4() {
    let mut s = store(vec![]);
    let p = policy(
        "app",
        "get-only",
        Scope::Namespace,
        Action::Deny,
        vec![
            rule(vec![vec![Match::default()]]),
            rule(vec![vec![ports(&[80])]]),
            rule(vec![vec![ports(&[81])], vec![Match::default()]]),
        ],
    );
    let warning = s.insert("app/get-only", p).expect("a warning");
    assert_eq!(
        warning,
        Warning::UnmatchableRules {
            policy: Arc::from("app/get-only"),
            action: Action::Deny,
            rules: vec![0, 2],
        }
    );
    assert_eq!(
        warning.to_string(),
        "policy app/get-only: rules 0, 2 can never match at L4 (a clause has only empty \
         matches, which is what HTTP-only attributes become; enforce those with a waypoint), \
         so they deny nothing"
    );
    // Stored and enforced as written all the same.
    assert!(s.contains_key("app/get-only"));
}

#[test]
fn insert_does_not_warn_about_policies_without_rules_or_clauses() {
    let mut s = store(vec![]);
    assert_eq!(
        s.insert(
            "app/a",
            policy("app", "a", Scope::Namespace, Action::Allow, vec![])
        ),
        None
    );
    assert_eq!(
        s.insert(
            "app/b",
            policy("app", "b", Scope::Namespace, Action::Allow, everything())
        ),
        None
    );
}
