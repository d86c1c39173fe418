//! Builders shared by the integration tests, so each test states only what it
//! is about.

#![allow(dead_code)]

use std::sync::Arc;

use zs_authz::{
    Action, Clause, Connection, Identity, Match, Policy, PolicyStore, Rule, Scope, Target,
};

pub const NO_NAMES: &[&str] = &[];

pub fn id(s: &str) -> Identity {
    s.parse().expect("test identity")
}

/// A connection from `src` (IP) to `dst` (IP:port) with an optional SPIFFE identity.
pub fn conn(src: &str, dst: &str, identity: Option<&str>) -> Connection {
    Connection {
        src_ip: src.parse().expect("test src ip"),
        dst: dst.parse().expect("test dst addr"),
        src_identity: identity.map(id),
    }
}

/// mTLS connection from `spiffe://cluster.local/ns/client-ns/sa/client-sa`.
pub fn mtls() -> Connection {
    conn(
        "10.0.0.1",
        "10.0.1.1:8080",
        Some("spiffe://cluster.local/ns/client-ns/sa/client-sa"),
    )
}

/// The same connection without an identity (plaintext).
pub fn plaintext() -> Connection {
    Connection {
        src_identity: None,
        ..mtls()
    }
}

pub fn policy(
    namespace: &str,
    name: &str,
    scope: Scope,
    action: Action,
    rules: Vec<Rule>,
) -> Policy {
    Policy {
        name: name.into(),
        namespace: namespace.into(),
        scope,
        action,
        rules,
        dry_run: false,
    }
}

/// A rule of clauses of matches, nested as the YAML form is.
pub fn rule(clauses: Vec<Vec<Match>>) -> Rule {
    Rule {
        clauses: clauses
            .into_iter()
            .map(|matches| Clause { matches })
            .collect(),
    }
}

/// One rule with one clause with one match.
pub fn only(m: Match) -> Vec<Rule> {
    vec![rule(vec![vec![m]])]
}

/// A rule that matches every connection (one clause, no matches).
pub fn everything() -> Vec<Rule> {
    vec![rule(vec![vec![]])]
}

pub fn ports(ports: &[u16]) -> Match {
    Match {
        destination_ports: ports.to_vec(),
        ..Match::default()
    }
}

/// Inserts under the Istio key `<namespace>/<name>`.
pub fn store(policies: Vec<Policy>) -> PolicyStore {
    let mut store = PolicyStore::new();
    for p in policies {
        store.insert(p.key(), p);
    }
    store
}

/// Whether a global ALLOW policy holding just `m` lets `conn` through:
/// the shortest way to ask "does this match match?" through the public API.
pub fn allowed_by_match(m: Match, conn: &Connection) -> bool {
    let s = store(vec![policy(
        "ns",
        "p",
        Scope::Global,
        Action::Allow,
        only(m),
    )]);
    s.evaluate(&Target::new("app-ns", NO_NAMES), conn)
        .is_allowed()
}

pub fn names(list: &[&str]) -> Vec<Arc<str>> {
    list.iter().map(|s| Arc::from(*s)).collect()
}
