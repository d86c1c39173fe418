//! One authorization decision for a workload to which 10 policies apply, in
//! a mesh that holds either just those 10 or 10,000 policies. The two sizes
//! should cost the same: evaluation must only visit what can apply.
//!
//! The 10 that apply: 4 NAMESPACE-scoped (one dry-run), 3 GLOBAL, 3
//! WORKLOAD_SELECTOR named by the target. The 9,990 that do not: NAMESPACE-
//! scoped policies of 999 other namespaces and WORKLOAD_SELECTOR policies no
//! one names.
//!
//! Paths measured: `allow` (an ALLOW matches after every DENY was checked),
//! `deny_no_allow` (all 10 evaluated, none allows: the longest path) and
//! `deny_explicit` (a GLOBAL DENY on the source IP matches).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use zs_authz::{
    Action, Clause, Connection, Match, Policy, PolicyStore, Rule, Scope, ServiceAccountMatch,
    StringMatch, Target,
};

const TARGET_NS: &str = "shop";

fn policy(namespace: &str, name: &str, scope: Scope, action: Action, m: Match) -> Policy {
    Policy {
        name: name.into(),
        namespace: namespace.into(),
        scope,
        action,
        rules: vec![Rule {
            clauses: vec![Clause { matches: vec![m] }],
        }],
        dry_run: false,
    }
}

fn principal(m: StringMatch) -> Match {
    Match {
        principals: vec![m],
        ..Match::default()
    }
}

fn applying() -> Vec<Policy> {
    let net = |s: &str| s.parse().expect("bench cidr");
    let mut dry = policy(
        TARGET_NS,
        "audit-legacy",
        Scope::Namespace,
        Action::Deny,
        Match {
            namespaces: vec![StringMatch::Exact("legacy".into())],
            ..Match::default()
        },
    );
    dry.dry_run = true;
    vec![
        // GLOBAL
        policy(
            "istio-system",
            "deny-attacker",
            Scope::Global,
            Action::Deny,
            principal(StringMatch::Exact(
                "cluster.local/ns/evil/sa/attacker".into(),
            )),
        ),
        policy(
            "istio-system",
            "deny-test-net",
            Scope::Global,
            Action::Deny,
            Match {
                source_ips: vec![net("192.0.2.0/24")],
                ..Match::default()
            },
        ),
        policy(
            "istio-system",
            "allow-metrics-scrape",
            Scope::Global,
            Action::Allow,
            Match {
                namespaces: vec![StringMatch::Exact("monitoring".into())],
                destination_ports: vec![15020],
                ..Match::default()
            },
        ),
        // NAMESPACE
        dry,
        policy(
            TARGET_NS,
            "deny-ssh",
            Scope::Namespace,
            Action::Deny,
            Match {
                destination_ports: vec![22],
                ..Match::default()
            },
        ),
        policy(
            TARGET_NS,
            "allow-batch",
            Scope::Namespace,
            Action::Allow,
            Match {
                service_accounts: vec![ServiceAccountMatch {
                    namespace: "batch".into(),
                    service_account: "cron".into(),
                }],
                ..Match::default()
            },
        ),
        policy(
            TARGET_NS,
            "allow-frontend",
            Scope::Namespace,
            Action::Allow,
            Match {
                principals: vec![StringMatch::Prefix("cluster.local/ns/frontend/".into())],
                destination_ports: vec![8080],
                ..Match::default()
            },
        ),
        // WORKLOAD_SELECTOR, named by the target
        policy(
            TARGET_NS,
            "deny-plaintext",
            Scope::WorkloadSelector,
            Action::Deny,
            Match {
                not_principals: vec![StringMatch::Presence],
                ..Match::default()
            },
        ),
        policy(
            TARGET_NS,
            "allow-api-clients",
            Scope::WorkloadSelector,
            Action::Allow,
            Match {
                principals: vec![StringMatch::Suffix("/sa/api-client".into())],
                destination_ips: vec![net("10.1.0.0/16")],
                ..Match::default()
            },
        ),
        policy(
            TARGET_NS,
            "allow-health",
            Scope::WorkloadSelector,
            Action::Allow,
            Match {
                source_ips: vec![net("10.0.0.0/8")],
                destination_ports: vec![15021],
                ..Match::default()
            },
        ),
    ]
}

/// Policies that look like real ones but cannot apply to the target.
fn elsewhere(count: usize) -> Vec<Policy> {
    (0..count)
        .map(|i| {
            let ns = format!("team-{}", i / 10);
            let (scope, action) = match i % 10 {
                9 => (Scope::WorkloadSelector, Action::Allow),
                n if n % 3 == 0 => (Scope::Namespace, Action::Deny),
                _ => (Scope::Namespace, Action::Allow),
            };
            policy(
                &ns,
                &format!("policy-{i}"),
                scope,
                action,
                principal(StringMatch::Exact(format!(
                    "cluster.local/ns/{ns}/sa/sa-{i}"
                ))),
            )
        })
        .collect()
}

fn store(total: usize) -> PolicyStore {
    let mut store = PolicyStore::new();
    let applying = applying();
    for p in elsewhere(total - applying.len())
        .into_iter()
        .chain(applying)
    {
        store.insert(p.key(), p);
    }
    assert_eq!(store.len(), total);
    store
}

fn conn(src: &str, identity: Option<&str>) -> Connection {
    Connection {
        src_ip: src.parse().expect("bench ip"),
        dst: "10.1.2.3:8080".parse().expect("bench addr"),
        src_identity: identity.map(|s| s.parse().expect("bench identity")),
    }
}

fn bench(c: &mut Criterion) {
    let names: Vec<Arc<str>> = ["deny-plaintext", "allow-api-clients", "allow-health"]
        .iter()
        .map(|n| Arc::from(format!("{TARGET_NS}/{n}")))
        .collect();
    let target = Target::new(TARGET_NS, &names);
    let cases = [
        (
            "allow",
            conn(
                "10.0.5.5",
                Some("spiffe://cluster.local/ns/frontend/sa/web"),
            ),
        ),
        (
            "deny_no_allow",
            conn("10.0.5.5", Some("spiffe://cluster.local/ns/other/sa/web")),
        ),
        (
            "deny_explicit",
            conn(
                "192.0.2.7",
                Some("spiffe://cluster.local/ns/frontend/sa/web"),
            ),
        ),
    ];
    let mut group = c.benchmark_group("authz");
    for total in [10, 10_000] {
        let store = store(total);
        for (path, conn) in &cases {
            let expect_allowed = *path == "allow";
            assert_eq!(
                store.evaluate(&target, conn).is_allowed(),
                expect_allowed,
                "{path}"
            );
            group.bench_function(format!("{path}/{total}"), |b| {
                b.iter(|| black_box(&store).evaluate(black_box(&target), black_box(conn)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
