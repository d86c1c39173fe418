//! The policy model and the matching procedure for one policy.
//!
//! The shape mirrors ztunnel's internal policy exactly, because the same serde
//! form is both the local-config YAML a user writes and the JSON that the admin
//! `/config_dump` prints: a policy has rules (OR-ed), a rule has clauses
//! (AND-ed), a clause has matches (OR-ed), and a match has field groups
//! (AND-ed) whose values are OR-ed. Matching is a pure function of the policy
//! and a [`Connection`]; it never allocates.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{Connection, Identity};

/// One L4 authorization policy, in ztunnel's model.
///
/// Serde gives the camelCase form ztunnel reads from its local config file and
/// prints in `/config_dump`. Every key is required (ztunnel has no defaults for
/// policies), and unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// Policy name.
    pub name: String,
    /// Policy namespace; the index key for [`Scope::Namespace`] policies.
    pub namespace: String,
    /// Which workloads the policy applies to.
    pub scope: Scope,
    /// What a match means.
    pub action: Action,
    /// OR-ed: the policy matches when any rule matches. No rules: matches nothing.
    pub rules: Vec<Rule>,
    /// Evaluated and reported, never enforced.
    pub dry_run: bool,
}

/// Which destination workloads a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Every workload in the mesh, whatever the policy's namespace.
    Global,
    /// Every workload in the policy's namespace.
    Namespace,
    /// Only workloads that list the policy by name in their
    /// `authorization_policies`.
    WorkloadSelector,
}

/// What matching a policy means for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// A match allows the connection (unless a DENY matched first).
    Allow,
    /// A match denies the connection.
    Deny,
}

/// A conjunction of clauses. Serialized as a plain list of clauses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Rule {
    /// AND-ed: the rule matches when every clause matches. No clauses: matches everything.
    pub clauses: Vec<Clause>,
}

/// A disjunction of matches. Serialized as a plain list of matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Clause {
    /// OR-ed: the clause matches when any non-empty match matches. No matches:
    /// matches everything. A match with every field empty is skipped.
    pub matches: Vec<Match>,
}

/// Conditions on one connection. Each populated group must pass; within a
/// positive group any value may match, within a `not_` group none may.
///
/// Unknown keys are rejected when deserializing. (ztunnel ignores them, which
/// silently turns a misspelt key into a wider match; refusing the file is the
/// safer reading of the same input.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// Tested against the namespace of the source identity; the empty string
    /// when the connection has no identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<StringMatch>,
    /// Negation of [`Match::namespaces`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<StringMatch>,
    /// Namespace and service account of the source identity, both equal.
    /// The trust domain is ignored; no identity never matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<ServiceAccountMatch>,
    /// Negation of [`Match::service_accounts`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<ServiceAccountMatch>,
    /// Tested against the source identity without `spiffe://`
    /// (`<trust domain>/ns/<namespace>/sa/<service account>`); no identity
    /// never matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<StringMatch>,
    /// Negation of [`Match::principals`]; passes when there is no identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<StringMatch>,
    /// CIDRs containing the source (TCP peer) IP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<IpNet>,
    /// Negation of [`Match::source_ips`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_source_ips: Vec<IpNet>,
    /// CIDRs containing the destination workload IP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_ips: Vec<IpNet>,
    /// Negation of [`Match::destination_ips`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_destination_ips: Vec<IpNet>,
    /// Exact destination (target) ports. There are no port ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_ports: Vec<u16>,
    /// Negation of [`Match::destination_ports`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_destination_ports: Vec<u16>,
}

/// A source service account: namespace and name must both be equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountMatch {
    /// Namespace of the service account.
    pub namespace: String,
    /// Name of the service account.
    pub service_account: String,
}

/// A string test. There is no wildcard syntax: the control plane turns `*`
/// patterns into prefix, suffix or presence matches before they get here.
///
/// Serde uses the externally tagged form: in YAML `!Exact x`, `!Prefix x`,
/// `!Suffix x`, `!Presence []`; in JSON `{"Exact":"x"}` … `{"Presence":[]}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(from = "StringMatchRepr<String>")]
pub enum StringMatch {
    /// Equal to the value.
    Exact(String),
    /// Starts with the value.
    Prefix(String),
    /// Ends with the value.
    Suffix(String),
    /// Not empty.
    Presence,
}

/// The wire shape of [`StringMatch`]: ztunnel's `Presence` is a tuple variant
/// with no fields, which is what makes serde write `!Presence []` /
/// `{"Presence":[]}` rather than a bare string. The public enum keeps a plain
/// unit variant and converts through this one.
#[derive(Serialize, Deserialize)]
enum StringMatchRepr<S> {
    Prefix(S),
    Suffix(S),
    Exact(S),
    Presence(),
}

impl From<StringMatchRepr<String>> for StringMatch {
    fn from(repr: StringMatchRepr<String>) -> Self {
        match repr {
            StringMatchRepr::Prefix(s) => StringMatch::Prefix(s),
            StringMatchRepr::Suffix(s) => StringMatch::Suffix(s),
            StringMatchRepr::Exact(s) => StringMatch::Exact(s),
            StringMatchRepr::Presence() => StringMatch::Presence,
        }
    }
}

impl Serialize for StringMatch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let repr = match self {
            StringMatch::Exact(s) => StringMatchRepr::Exact(s.as_str()),
            StringMatch::Prefix(s) => StringMatchRepr::Prefix(s.as_str()),
            StringMatch::Suffix(s) => StringMatchRepr::Suffix(s.as_str()),
            StringMatch::Presence => StringMatchRepr::Presence(),
        };
        repr.serialize(serializer)
    }
}

impl StringMatch {
    /// Tests one string.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == s,
            StringMatch::Prefix(s) => value.starts_with(s.as_str()),
            StringMatch::Suffix(s) => value.ends_with(s.as_str()),
            StringMatch::Presence => !value.is_empty(),
        }
    }

    /// Tests the principal of `identity` without building its string.
    fn matches_principal(&self, identity: &Identity) -> bool {
        let principal = Principal::of(identity);
        match self {
            StringMatch::Exact(s) => principal.equals(s),
            StringMatch::Prefix(s) => principal.starts_with(s),
            StringMatch::Suffix(s) => principal.ends_with(s),
            StringMatch::Presence => !principal.is_empty(),
        }
    }
}

impl ServiceAccountMatch {
    /// Whether the identity's namespace and service account are these.
    pub fn matches(&self, identity: Option<&Identity>) -> bool {
        identity.is_some_and(|id| {
            id.namespace() == self.namespace && id.service_account() == self.service_account
        })
    }
}

impl Policy {
    /// The name ztunnel reports the policy by: `<namespace>/<name>`. It is also
    /// the store key Istio uses for the xDS resource and the key of policies
    /// read from a local config file.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the policy matches the connection, ignoring scope, action and
    /// dry-run. A policy with no rules matches nothing.
    pub fn matches(&self, conn: &Connection) -> bool {
        self.matches_subject(&Subject::of(conn))
    }

    pub(crate) fn matches_subject(&self, subject: &Subject<'_>) -> bool {
        self.rules.iter().any(|rule| rule.matches(subject))
    }

    /// Indices of rules that can never match at L4 because one of their
    /// clauses holds only empty matches (what HTTP-only attributes become on
    /// their way to ztunnel).
    pub fn unmatchable_rules(&self) -> impl Iterator<Item = usize> + '_ {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.clauses.iter().any(Clause::is_unmatchable))
            .map(|(index, _)| index)
    }
}

impl Rule {
    fn matches(&self, subject: &Subject<'_>) -> bool {
        self.clauses.iter().all(|clause| clause.matches(subject))
    }
}

impl Clause {
    fn matches(&self, subject: &Subject<'_>) -> bool {
        self.matches.is_empty()
            || self
                .matches
                .iter()
                .any(|m| !m.is_empty() && m.matches(subject))
    }

    fn is_unmatchable(&self) -> bool {
        !self.matches.is_empty() && self.matches.iter().all(Match::is_empty)
    }
}

impl Match {
    /// Whether every field group is empty. ztunnel skips such a match, so it
    /// never makes its clause match.
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.not_namespaces.is_empty()
            && self.service_accounts.is_empty()
            && self.not_service_accounts.is_empty()
            && self.principals.is_empty()
            && self.not_principals.is_empty()
            && self.source_ips.is_empty()
            && self.not_source_ips.is_empty()
            && self.destination_ips.is_empty()
            && self.not_destination_ips.is_empty()
            && self.destination_ports.is_empty()
            && self.not_destination_ports.is_empty()
    }

    /// Cheap numeric groups first; identity strings last.
    fn matches(&self, s: &Subject<'_>) -> bool {
        group(&self.destination_ports, &self.not_destination_ports, |p| {
            *p == s.dst_port
        }) && group(&self.destination_ips, &self.not_destination_ips, |n| {
            n.contains(&s.dst_ip)
        }) && group(&self.source_ips, &self.not_source_ips, |n| {
            n.contains(&s.src_ip)
        }) && group(&self.service_accounts, &self.not_service_accounts, |m| {
            m.matches(s.identity)
        }) && group(&self.principals, &self.not_principals, |m| {
            s.identity.is_some_and(|id| m.matches_principal(id))
        }) && group(&self.namespaces, &self.not_namespaces, |m| {
            m.matches(s.namespace)
        })
    }
}

/// One (positive, negative) field pair: an empty list passes; otherwise any
/// positive value must match and no negative value may.
fn group<T>(positive: &[T], negative: &[T], test: impl Fn(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&test)) && !negative.iter().any(&test)
}

/// The facts one decision tests, computed once per decision.
pub(crate) struct Subject<'a> {
    src_ip: IpAddr,
    dst_ip: IpAddr,
    dst_port: u16,
    identity: Option<&'a Identity>,
    namespace: &'a str,
}

impl<'a> Subject<'a> {
    /// IPv4-mapped IPv6 addresses are tested as IPv4: ztunnel canonicalizes
    /// every socket address it accepts before authorization sees it, so doing
    /// it here keeps decisions identical whichever way the caller got the
    /// address.
    pub(crate) fn of(conn: &'a Connection) -> Self {
        let identity = conn.src_identity.as_ref();
        Subject {
            src_ip: conn.src_ip.to_canonical(),
            dst_ip: conn.dst.ip().to_canonical(),
            dst_port: conn.dst.port(),
            identity,
            namespace: identity.map_or("", Identity::namespace),
        }
    }
}

/// `<trust domain>/ns/<namespace>/sa/<service account>` as its five pieces,
/// so principal matches compare bytes in place instead of formatting a string
/// per decision.
struct Principal<'a>([&'a [u8]; 5]);

impl<'a> Principal<'a> {
    fn of(id: &'a Identity) -> Self {
        Principal([
            id.trust_domain().as_bytes(),
            b"/ns/",
            id.namespace().as_bytes(),
            b"/sa/",
            id.service_account().as_bytes(),
        ])
    }

    fn len(&self) -> usize {
        self.0.iter().map(|p| p.len()).sum()
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|p| p.is_empty())
    }

    fn equals(&self, s: &str) -> bool {
        self.len() == s.len() && self.starts_with(s)
    }

    fn starts_with(&self, prefix: &str) -> bool {
        let mut rest = prefix.as_bytes();
        for piece in self.0 {
            let (want, tail) = rest.split_at(piece.len().min(rest.len()));
            if !piece.starts_with(want) {
                return false;
            }
            rest = tail;
        }
        rest.is_empty()
    }

    fn ends_with(&self, suffix: &str) -> bool {
        let mut rest = suffix.as_bytes();
        for piece in self.0.iter().rev() {
            let (head, want) = rest.split_at(rest.len() - piece.len().min(rest.len()));
            if !piece.ends_with(want) {
                return false;
            }
            rest = head;
        }
        rest.is_empty()
    }
}

/// The serde spelling, so logs and config read alike.
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Global => "Global",
            Scope::Namespace => "Namespace",
            Scope::WorkloadSelector => "WorkloadSelector",
        })
    }
}

/// The serde spelling, so logs and config read alike.
impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "Allow",
            Action::Deny => "Deny",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(td: &str, ns: &str, sa: &str) -> Identity {
        Identity::new(td, ns, sa).unwrap()
    }

    /// Every way a principal match can straddle the piece boundaries must
    /// agree with the same match on the formatted string.
    #[test]
    fn principal_pieces_agree_with_the_formatted_string() {
        let ids = [id("td", "ns1", "sa1"), id("cluster.local", "a", "b")];
        for identity in &ids {
            let full = identity.principal();
            let mut patterns: Vec<String> = vec![String::new(), "x".into(), full.clone() + "x"];
            for i in 0..=full.len() {
                patterns.push(full[..i].to_string());
                patterns.push(full[i..].to_string());
                patterns.push(format!("{}x", &full[..i]));
                patterns.push(format!("x{}", &full[i..]));
            }
            for p in &patterns {
                for m in [
                    StringMatch::Exact(p.clone()),
                    StringMatch::Prefix(p.clone()),
                    StringMatch::Suffix(p.clone()),
                ] {
                    assert_eq!(
                        m.matches_principal(identity),
                        m.matches(&full),
                        "{m:?} against {full}"
                    );
                }
            }
            assert!(StringMatch::Presence.matches_principal(identity));
        }
    }

    #[test]
    fn string_match_tests_exact_prefix_suffix_presence() {
        assert!(StringMatch::Exact("foo".into()).matches("foo"));
        assert!(!StringMatch::Exact("foo".into()).matches("foobar"));
        assert!(!StringMatch::Exact("foo".into()).matches(""));
        assert!(StringMatch::Prefix("foo".into()).matches("foobar"));
        assert!(!StringMatch::Prefix("foo".into()).matches("barfoo"));
        assert!(StringMatch::Prefix(String::new()).matches(""));
        assert!(StringMatch::Suffix("foo".into()).matches("barfoo"));
        assert!(!StringMatch::Suffix("foo".into()).matches("foobar"));
        assert!(StringMatch::Presence.matches("x"));
        assert!(!StringMatch::Presence.matches(""));
    }
}
