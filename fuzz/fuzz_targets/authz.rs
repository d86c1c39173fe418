//! Authorization: random policy stores (built from structured input and from
//! raw xDS bytes), targets and connections.
//!
//! Checked:
//! * nothing panics;
//! * every decision equals the one a naive, allocation-happy re-statement of
//!   ztunnel's procedure reaches (differential check of indexing, ordering
//!   and field matching), including the dry-run report;
//! * DENY wins: when an enforced DENY that applies to the target matches,
//!   the decision is an explicit deny by such a policy;
//! * adding an enforced DENY that matches the connection to any store turns
//!   its decision into an explicit deny;
//! * a converted xDS policy survives Policy -> xDS -> Policy and JSON.

#![no_main]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use arbitrary::Unstructured;
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use zs_authz::{
    Action, Clause, Connection, Decision, DenyReason, Identity, Match, Policy, PolicyStore, Rule,
    Scope, ServiceAccountMatch, StringMatch, Target,
};
use zs_proto::istio::security as xds;

/// Small vocabularies, so that random policies actually match random
/// connections often enough to exercise both outcomes.
const NAMESPACES: &[&str] = &["", "a", "b", "ns-a"];
const NAMES: &[&str] = &["p0", "p1", "p2", "p3"];
const IDENTITIES: &[&str] = &[
    "spiffe://cluster.local/ns/a/sa/x",
    "spiffe://td/ns/b/sa/y",
    "spiffe://cluster.local/ns/ns-a/sa/x",
];
const FRAGMENTS: &[&str] = &[
    "",
    "a",
    "x",
    "ns-a",
    "cluster.local/",
    "cluster.local/ns/a/sa/x",
    "td/ns/b/sa/y",
    "/sa/x",
    "/ns/",
    "spiffe://cluster.local/ns/a/sa/x",
];
const PORTS: &[u16] = &[0, 80, 8080, 9090];

fn ip(u: &mut Unstructured<'_>) -> arbitrary::Result<IpAddr> {
    Ok(match u.int_in_range(0..=5)? {
        0 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, u.int_in_range(1..=3)?)),
        1 => IpAddr::V4(Ipv4Addr::new(10, 1, u.arbitrary()?, 1)),
        2 => IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0,
            0,
            0,
            0,
            0,
            0,
            u.int_in_range(1..=3)?,
        )),
        3 => IpAddr::V6(Ipv4Addr::new(10, 0, 0, u.int_in_range(1..=3)?).to_ipv6_mapped()),
        _ => u.arbitrary()?,
    })
}

fn cidr(u: &mut Unstructured<'_>) -> arbitrary::Result<IpNet> {
    let addr = ip(u)?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    Ok(IpNet::new(addr, u.int_in_range(0..=max)?).expect("prefix within range"))
}

fn text(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    if u.ratio(1, 8)? {
        u.arbitrary()
    } else {
        Ok((*u.choose(FRAGMENTS)?).to_string())
    }
}

fn string_match(u: &mut Unstructured<'_>) -> arbitrary::Result<StringMatch> {
    Ok(match u.int_in_range(0..=3)? {
        0 => StringMatch::Exact(text(u)?),
        1 => StringMatch::Prefix(text(u)?),
        2 => StringMatch::Suffix(text(u)?),
        _ => StringMatch::Presence,
    })
}

fn service_account(u: &mut Unstructured<'_>) -> arbitrary::Result<ServiceAccountMatch> {
    Ok(ServiceAccountMatch {
        namespace: (*u.choose(NAMESPACES)?).to_string(),
        service_account: (*u.choose(&["x", "y"])?).to_string(),
    })
}

fn few<T>(
    u: &mut Unstructured<'_>,
    max: usize,
    mut each: impl FnMut(&mut Unstructured<'_>) -> arbitrary::Result<T>,
) -> arbitrary::Result<Vec<T>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| each(u)).collect()
}

/// How many values a match group gets: usually none, so matches stay
/// satisfiable.
fn count(u: &mut Unstructured<'_>) -> arbitrary::Result<usize> {
    Ok(if u.ratio(1, 4)? {
        u.int_in_range(1..=2)?
    } else {
        0
    })
}

fn a_match(u: &mut Unstructured<'_>) -> arbitrary::Result<Match> {
    Ok(Match {
        namespaces: (0..count(u)?)
            .map(|_| string_match(u))
            .collect::<Result<_, _>>()?,
        not_namespaces: (0..count(u)?)
            .map(|_| string_match(u))
            .collect::<Result<_, _>>()?,
        service_accounts: (0..count(u)?)
            .map(|_| service_account(u))
            .collect::<Result<_, _>>()?,
        not_service_accounts: (0..count(u)?)
            .map(|_| service_account(u))
            .collect::<Result<_, _>>()?,
        principals: (0..count(u)?)
            .map(|_| string_match(u))
            .collect::<Result<_, _>>()?,
        not_principals: (0..count(u)?)
            .map(|_| string_match(u))
            .collect::<Result<_, _>>()?,
        source_ips: (0..count(u)?).map(|_| cidr(u)).collect::<Result<_, _>>()?,
        not_source_ips: (0..count(u)?).map(|_| cidr(u)).collect::<Result<_, _>>()?,
        destination_ips: (0..count(u)?).map(|_| cidr(u)).collect::<Result<_, _>>()?,
        not_destination_ips: (0..count(u)?).map(|_| cidr(u)).collect::<Result<_, _>>()?,
        destination_ports: (0..count(u)?)
            .map(|_| u.choose(PORTS).copied())
            .collect::<Result<_, _>>()?,
        not_destination_ports: (0..count(u)?)
            .map(|_| u.choose(PORTS).copied())
            .collect::<Result<_, _>>()?,
    })
}

fn rules(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<Rule>> {
    few(u, 3, |u| {
        Ok(Rule {
            clauses: few(u, 3, |u| {
                Ok(Clause {
                    matches: few(u, 3, a_match)?,
                })
            })?,
        })
    })
}

fn policy(u: &mut Unstructured<'_>) -> arbitrary::Result<Policy> {
    Ok(Policy {
        name: (*u.choose(NAMES)?).to_string(),
        namespace: (*u.choose(NAMESPACES)?).to_string(),
        scope: *u.choose(&[Scope::Global, Scope::Namespace, Scope::WorkloadSelector])?,
        action: *u.choose(&[Action::Allow, Action::Deny])?,
        rules: rules(u)?,
        dry_run: u.ratio(1, 4)?,
    })
}

fn connection(u: &mut Unstructured<'_>) -> arbitrary::Result<Connection> {
    let identity = if u.ratio(1, 4)? {
        None
    } else {
        Some(
            u.choose(IDENTITIES)?
                .parse::<Identity>()
                .expect("valid identity"),
        )
    };
    Ok(Connection {
        src_ip: ip(u)?,
        dst: SocketAddr::new(ip(u)?, *u.choose(PORTS)?),
        src_identity: identity,
    })
}

/// An enforced DENY built to match `conn`: one rule, one clause, one match on
/// a fact of the connection (or a rule with no clauses).
fn matching_deny(
    u: &mut Unstructured<'_>,
    conn: &Connection,
    namespace: &str,
) -> arbitrary::Result<Policy> {
    let canonical = |ip: IpAddr| ip.to_canonical();
    let src = canonical(conn.src_ip);
    let fact = match u.int_in_range(0..=6)? {
        0 => None,
        1 => Some(Match {
            source_ips: vec![IpNet::new(src, if src.is_ipv4() { 24 } else { 64 }).expect("valid")],
            ..Match::default()
        }),
        2 => Some(Match {
            destination_ports: vec![conn.dst.port()],
            ..Match::default()
        }),
        3 => Some(Match {
            destination_ips: vec![IpNet::from(canonical(conn.dst.ip()))],
            ..Match::default()
        }),
        4 => Some(match &conn.src_identity {
            Some(id) => Match {
                principals: vec![StringMatch::Exact(id.principal())],
                ..Match::default()
            },
            None => Match {
                not_principals: vec![StringMatch::Presence],
                ..Match::default()
            },
        }),
        5 => Some(Match {
            namespaces: vec![StringMatch::Exact(
                conn.src_identity
                    .as_ref()
                    .map_or("", Identity::namespace)
                    .to_string(),
            )],
            ..Match::default()
        }),
        _ => Some(match &conn.src_identity {
            Some(id) => Match {
                service_accounts: vec![ServiceAccountMatch {
                    namespace: id.namespace().into(),
                    service_account: id.service_account().into(),
                }],
                ..Match::default()
            },
            None => Match {
                not_service_accounts: vec![ServiceAccountMatch {
                    namespace: "a".into(),
                    service_account: "x".into(),
                }],
                ..Match::default()
            },
        }),
    };
    let mut rules = rules(u)?;
    rules.push(Rule {
        clauses: fact
            .into_iter()
            .map(|m| Clause { matches: vec![m] })
            .collect(),
    });
    Ok(Policy {
        name: "extra-deny".into(),
        namespace: namespace.into(),
        scope: *u.choose(&[Scope::Global, Scope::Namespace, Scope::WorkloadSelector])?,
        action: Action::Deny,
        rules,
        dry_run: false,
    })
}

// ---- the naive re-statement of ztunnel's procedure -------------------------------

fn ref_group<T>(pos: &[T], neg: &[T], f: impl Fn(&T) -> bool) -> bool {
    let p = if pos.is_empty() {
        true
    } else {
        pos.iter().any(&f)
    };
    let n = if neg.is_empty() {
        true
    } else {
        !neg.iter().any(&f)
    };
    p && n
}

fn ref_matches(p: &Policy, c: &Connection) -> bool {
    let id = c
        .src_identity
        .as_ref()
        .map(|i| i.to_string())
        .unwrap_or_default();
    let ns = c
        .src_identity
        .as_ref()
        .map(|i| i.namespace().to_string())
        .unwrap_or_default();
    let src = c.src_ip.to_canonical();
    let dst = c.dst.ip().to_canonical();
    let principal = |m: &StringMatch| match id.strip_prefix("spiffe://") {
        Some(rest) => m.matches(rest),
        None => false,
    };
    if p.rules.is_empty() {
        return false;
    }
    p.rules.iter().any(|rule| {
        rule.clauses.iter().all(|clause| {
            clause.matches.is_empty()
                || clause.matches.iter().any(|m| {
                    !m.is_empty()
                        && ref_group(&m.destination_ips, &m.not_destination_ips, |n| {
                            n.contains(&dst)
                        })
                        && ref_group(&m.source_ips, &m.not_source_ips, |n| n.contains(&src))
                        && ref_group(&m.destination_ports, &m.not_destination_ports, |p| {
                            *p == c.dst.port()
                        })
                        && ref_group(&m.service_accounts, &m.not_service_accounts, |s| {
                            c.src_identity.as_ref().is_some_and(|i| {
                                i.namespace() == s.namespace
                                    && i.service_account() == s.service_account
                            })
                        })
                        && ref_group(&m.principals, &m.not_principals, principal)
                        && ref_group(&m.namespaces, &m.not_namespaces, |s| s.matches(&ns))
                })
        })
    })
}

/// The policies ztunnel would consider, as (namespace/name label, policy),
/// possibly with repeats.
fn ref_applicable<'a>(
    all: &'a BTreeMap<String, Policy>,
    namespace: &str,
    names: &[Arc<str>],
) -> Vec<&'a Policy> {
    let by_index = |p: &Policy, ns: &str| match p.scope {
        Scope::Namespace => p.namespace == ns,
        Scope::Global => ns.is_empty(),
        Scope::WorkloadSelector => false,
    };
    let mut out: Vec<&Policy> = all.values().filter(|p| by_index(p, namespace)).collect();
    out.extend(all.values().filter(|p| by_index(p, "")));
    out.extend(names.iter().filter_map(|n| all.get(&**n)));
    out
}

fn labels(list: &[Arc<str>]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn check(
    store: &PolicyStore,
    all: &BTreeMap<String, Policy>,
    ns: &str,
    names: &[Arc<str>],
    conn: &Connection,
) -> Decision {
    let decision = store.evaluate(&Target::new(ns, names), conn);
    let applicable = ref_applicable(all, ns, names);
    let of = |action: Action, dry: bool| {
        applicable
            .iter()
            .copied()
            .filter(move |p| p.action == action && p.dry_run == dry)
    };
    let matched_labels = |action: Action| {
        let mut v: Vec<String> = of(action, true)
            .filter(|p| ref_matches(p, conn))
            .map(Policy::key)
            .collect();
        v.sort();
        v.dedup();
        v
    };

    assert_eq!(
        labels(decision.dry_run().denied_by()),
        matched_labels(Action::Deny)
    );

    let deny_matches = of(Action::Deny, false).any(|p| ref_matches(p, conn));
    if deny_matches {
        // DENY wins, and the policy named is one that applies and matches.
        let Decision::Deny(DenyReason::ExplicitDeny { policy, .. }) = &decision else {
            panic!("an enforced DENY matched but the decision is {decision:?}");
        };
        assert!(
            of(Action::Deny, false).any(|p| p.key() == **policy && ref_matches(p, conn)),
            "reported {policy}, which does not apply or match"
        );
        assert!(decision.dry_run().allowed_by().is_empty());
        return decision;
    }

    assert_eq!(
        labels(decision.dry_run().allowed_by()),
        matched_labels(Action::Allow)
    );
    let allows: Vec<&Policy> = of(Action::Allow, false).collect();
    let expect_allowed = allows.is_empty() || allows.iter().any(|p| ref_matches(p, conn));
    match &decision {
        Decision::Allow { policy, dry_run } => {
            assert!(
                expect_allowed,
                "allowed but the reference denies: {decision:?}"
            );
            match policy {
                Some(key) => assert!(
                    allows
                        .iter()
                        .any(|p| p.key() == **key && ref_matches(p, conn))
                ),
                None => assert!(allows.is_empty()),
            }
            let dry_allows = of(Action::Allow, true).count();
            assert_eq!(
                dry_run.none_allowed(),
                allows.is_empty() && dry_allows > 0 && dry_run.allowed_by().is_empty()
            );
        }
        Decision::Deny(DenyReason::NoAllowMatched { .. }) => {
            assert!(!expect_allowed, "denied but the reference allows");
        }
        Decision::Deny(DenyReason::ExplicitDeny { .. }) => {
            panic!("explicit deny with no matching DENY")
        }
    }
    decision
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let mut store = PolicyStore::new();
    let mut all = BTreeMap::new();
    for _ in 0..u.int_in_range(0..=12)? {
        let p = policy(u)?;
        let key = p.key();
        store.insert(key.clone(), p.clone());
        all.insert(key, p);
    }
    for _ in 0..u.int_in_range(0..=2)? {
        let bytes: Vec<u8> = u.arbitrary()?;
        let decoded = xds::Authorization::decode(bytes.as_slice()).map_err(|_| ());
        if let Ok(p) = decoded.and_then(|msg| Policy::try_from(msg).map_err(|_| ())) {
            let back =
                Policy::try_from(xds::Authorization::from(&p)).expect("own message converts");
            assert_eq!(back, p);
            let json = serde_json::to_string(&p).expect("serializes");
            assert_eq!(
                serde_json::from_str::<Policy>(&json).expect("parses back"),
                p
            );
            let key = p.key();
            store.insert(key.clone(), p.clone());
            all.insert(key, p);
        }
    }
    // Removals keep the indexes honest.
    for _ in 0..u.int_in_range(0..=2)? {
        let key = format!("{}/{}", u.choose(NAMESPACES)?, u.choose(NAMES)?);
        assert_eq!(store.remove(&key), all.remove(&key));
    }
    assert_eq!(store.len(), all.len());

    let ns = *u.choose(NAMESPACES)?;
    let mut names: Vec<Arc<str>> = few(u, 3, |u| {
        Ok(Arc::from(format!(
            "{}/{}",
            u.choose(NAMESPACES)?,
            u.choose(NAMES)?
        )))
    })?;
    let conn = connection(u)?;
    check(&store, &all, ns, &names, &conn);

    // Adding an enforced DENY that matches the connection and applies to the
    // target must deny, whatever else the store holds.
    let deny = matching_deny(u, &conn, ns)?;
    assert!(ref_matches(&deny, &conn), "built to match: {deny:?}");
    let key = "~extra/deny".to_string();
    if deny.scope == Scope::WorkloadSelector {
        names.push(Arc::from(key.as_str()));
    }
    store.insert(key.clone(), deny.clone());
    let decision = store.evaluate(&Target::new(ns, &names), &conn);
    assert!(
        matches!(decision, Decision::Deny(DenyReason::ExplicitDeny { .. })),
        "matching DENY added, decision is {decision:?}"
    );
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
