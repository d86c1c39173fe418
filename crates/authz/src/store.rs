//! The policy store and the decision procedure.
//!
//! Policies are indexed when they are inserted so that a decision only ever
//! touches the policies that apply to its target: the NAMESPACE-scoped ones of
//! the target's namespace, the GLOBAL ones, and the ones the target names.
//! Within each index the policies are already split by action and dry-run, in
//! key order, so evaluation walks short lists in ztunnel's order and allocates
//! nothing.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hashbrown::HashMap;
use smallvec::SmallVec;

use crate::Identity;
use crate::decision::{Decision, DenyReason, DryRun};
use crate::policy::{Action, Policy, Scope, Subject};

/// The destination workload, as far as authorization cares.
///
/// `S` is whatever string type the caller keeps the workload's policy names
/// in (`Arc<str>`, `String`, `&str`, ...).
#[derive(Debug)]
pub struct Target<'a, S = Arc<str>> {
    /// The workload's namespace: selects NAMESPACE-scoped policies.
    pub namespace: &'a str,
    /// The workload's `authorization_policies`: store keys of the policies
    /// selected for it. Names the store does not hold are skipped.
    pub policies: &'a [S],
}

// Manual impls: a target only borrows, so it is `Copy` whatever `S` is.
impl<S> Clone for Target<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Target<'_, S> {}

impl<'a, S> Target<'a, S> {
    /// A target in `namespace` that names `policies`.
    pub fn new(namespace: &'a str, policies: &'a [S]) -> Self {
        Target {
            namespace,
            policies,
        }
    }
}

/// What is known about the connection being authorized.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Connection {
    /// The TCP peer: for HBONE the peer proxy's IP, not a `Forwarded` header.
    pub src_ip: IpAddr,
    /// Destination workload IP and target port (after service-port
    /// translation, or the application tunnel port when the workload has one).
    pub dst: SocketAddr,
    /// The peer's SPIFFE identity from its client certificate; `None` for
    /// plaintext.
    pub src_identity: Option<Identity>,
}

/// Something about an inserted policy that the operator should know. The
/// policy is stored and enforced as written either way; the caller logs the
/// warning once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// Some rules hold a clause whose matches are all empty, so those rules
    /// can never match. This is what a rule made of HTTP attributes (methods,
    /// paths, headers) looks like once it reaches an L4 proxy: only a waypoint
    /// can enforce it.
    UnmatchableRules {
        /// `<namespace>/<name>`.
        policy: Arc<str>,
        /// The policy's action, which decides what the loss means.
        action: Action,
        /// Zero-based indices of the rules that can never match.
        rules: Vec<usize>,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::UnmatchableRules {
                policy,
                action,
                rules,
            } => {
                write!(f, "policy {policy}: rule")?;
                if rules.len() > 1 {
                    f.write_str("s")?;
                }
                for (i, rule) in rules.iter().enumerate() {
                    f.write_str(if i == 0 { " " } else { ", " })?;
                    write!(f, "{rule}")?;
                }
                let effect = match action {
                    Action::Allow => "allow nothing",
                    Action::Deny => "deny nothing",
                };
                write!(
                    f,
                    " can never match at L4 (a clause has only empty matches, which is what \
                     HTTP-only attributes become; enforce those with a waypoint), so they \
                     {effect}"
                )
            }
        }
    }
}

/// All authorization policies, keyed by xDS resource name (Istio uses
/// `<namespace>/<name>`), indexed for evaluation.
///
/// Cloning is cheap (policies are shared), for copy-on-write snapshots.
/// Serializes as the `policies` array of `/config_dump`: every policy,
/// sorted by key.
#[derive(Debug, Default, Clone)]
pub struct PolicyStore {
    by_key: HashMap<Arc<str>, Arc<Entry>>,
    by_namespace: HashMap<Arc<str>, Bucket>,
    global: Bucket,
}

#[derive(Debug)]
struct Entry {
    key: Arc<str>,
    /// `<namespace>/<name>`: what ztunnel names the policy by in decisions
    /// and logs. Shares `key`'s allocation when they are equal (always, with
    /// istiod).
    label: Arc<str>,
    class: Class,
    policy: Policy,
}

/// The four groups evaluation visits, in the order it visits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    DryRunDeny = 0,
    Deny = 1,
    DryRunAllow = 2,
    Allow = 3,
}

impl Class {
    fn of(policy: &Policy) -> Self {
        match (policy.action, policy.dry_run) {
            (Action::Deny, true) => Class::DryRunDeny,
            (Action::Deny, false) => Class::Deny,
            (Action::Allow, true) => Class::DryRunAllow,
            (Action::Allow, false) => Class::Allow,
        }
    }
}

/// Policies of one index, one list per class, each sorted by key so that
/// decisions (which DENY is reported) are deterministic.
#[derive(Debug, Default, Clone)]
struct Bucket([Vec<Arc<Entry>>; 4]);

impl Bucket {
    fn list(&self, class: Class) -> &[Arc<Entry>] {
        &self.0[class as usize]
    }

    fn insert(&mut self, entry: Arc<Entry>) {
        let list = &mut self.0[entry.class as usize];
        match list.binary_search_by(|e| e.key.cmp(&entry.key)) {
            Ok(at) => list[at] = entry,
            Err(at) => list.insert(at, entry),
        }
    }

    fn remove(&mut self, entry: &Entry) {
        let list = &mut self.0[entry.class as usize];
        if let Ok(at) = list.binary_search_by(|e| e.key.cmp(&entry.key)) {
            list.remove(at);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(Vec::is_empty)
    }
}

impl serde::Serialize for PolicyStore {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(|(_, policy)| policy))
    }
}

/// Where a policy is indexed.
enum Index<'a> {
    Global,
    Namespace(&'a str),
    ByNameOnly,
}

impl<'a> Index<'a> {
    /// ztunnel files GLOBAL policies under the empty namespace, so a
    /// NAMESPACE-scoped policy whose namespace is empty applies to every
    /// workload too. Kept, so that both proxies decide alike.
    fn of(policy: &'a Policy) -> Self {
        match policy.scope {
            Scope::Global => Index::Global,
            Scope::Namespace if policy.namespace.is_empty() => Index::Global,
            Scope::Namespace => Index::Namespace(&policy.namespace),
            Scope::WorkloadSelector => Index::ByNameOnly,
        }
    }
}

impl PolicyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the policy stored under `key`. Returns a warning when
    /// part of the policy can never match at L4.
    pub fn insert(&mut self, key: impl Into<Arc<str>>, policy: Policy) -> Option<Warning> {
        let key = key.into();
        self.remove(&key);
        let label = if is_label(&key, &policy) {
            Arc::clone(&key)
        } else {
            Arc::from(policy.key())
        };
        let unmatchable: Vec<usize> = policy.unmatchable_rules().collect();
        let warning = (!unmatchable.is_empty()).then(|| Warning::UnmatchableRules {
            policy: Arc::clone(&label),
            action: policy.action,
            rules: unmatchable,
        });
        let entry = Arc::new(Entry {
            key: Arc::clone(&key),
            label,
            class: Class::of(&policy),
            policy,
        });
        match Index::of(&entry.policy) {
            Index::Global => self.global.insert(Arc::clone(&entry)),
            Index::Namespace(ns) => self
                .by_namespace
                .entry_ref(ns)
                .or_default()
                .insert(Arc::clone(&entry)),
            Index::ByNameOnly => {}
        }
        self.by_key.insert(key, entry);
        warning
    }

    /// Removes and returns the policy stored under `key`.
    pub fn remove(&mut self, key: &str) -> Option<Policy> {
        let entry = self.by_key.remove(key)?;
        match Index::of(&entry.policy) {
            Index::Global => self.global.remove(&entry),
            Index::Namespace(ns) => {
                if let Some(bucket) = self.by_namespace.get_mut(ns) {
                    bucket.remove(&entry);
                    if bucket.is_empty() {
                        self.by_namespace.remove(ns);
                    }
                }
            }
            Index::ByNameOnly => {}
        }
        // Every index reference is gone, so this is the last one.
        Some(match Arc::try_unwrap(entry) {
            Ok(entry) => entry.policy,
            Err(shared) => shared.policy.clone(),
        })
    }

    /// Removes every policy.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// The policy stored under `key`.
    pub fn get(&self, key: &str) -> Option<&Policy> {
        self.by_key.get(key).map(|e| &e.policy)
    }

    /// Whether a policy is stored under `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    /// Every policy with its key, sorted by key (the order `/config_dump`
    /// prints them in).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Policy)> {
        let mut all: Vec<(&str, &Policy)> =
            self.by_key.iter().map(|(k, e)| (&**k, &e.policy)).collect();
        all.sort_unstable_by_key(|(k, _)| *k);
        all.into_iter()
    }

    /// Number of stored policies.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether the store holds no policy.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Names the target references that the store does not hold. ztunnel
    /// skips them with a warning (usually a push still in flight); the caller
    /// can log them.
    pub fn unknown_policies<'t, S: AsRef<str>>(
        &self,
        target: &Target<'t, S>,
    ) -> impl Iterator<Item = &'t str> {
        target
            .policies
            .iter()
            .map(AsRef::as_ref)
            .filter(|k| !self.by_key.contains_key(*k))
    }

    /// Decides one connection to `target`, with ztunnel's procedure:
    ///
    /// 1. dry-run DENY policies are evaluated and reported;
    /// 2. an enforced DENY that matches denies;
    /// 3. dry-run ALLOW policies are evaluated and reported;
    /// 4. with no enforced ALLOW policy, allow;
    /// 5. an enforced ALLOW that matches allows; otherwise deny.
    pub fn evaluate<S: AsRef<str>>(&self, target: &Target<'_, S>, conn: &Connection) -> Decision {
        let subject = Subject::of(conn);
        let applicable = Applicable {
            namespace: self.by_namespace.get(target.namespace),
            global: &self.global,
            selected: target
                .policies
                .iter()
                .filter_map(|k| self.by_key.get(k.as_ref()).map(|e| &**e))
                .collect(),
        };
        let mut dry_run = DryRun::default();

        for e in applicable.iter(Class::DryRunDeny) {
            if e.policy.matches_subject(&subject) {
                dry_run.record(Action::Deny, &e.label);
            }
        }
        if let Some(e) = applicable
            .iter(Class::Deny)
            .find(|e| e.policy.matches_subject(&subject))
        {
            return Decision::Deny(DenyReason::ExplicitDeny {
                policy: Arc::clone(&e.label),
                dry_run,
            });
        }
        let mut any_dry_run_allow = false;
        for e in applicable.iter(Class::DryRunAllow) {
            any_dry_run_allow = true;
            if e.policy.matches_subject(&subject) {
                dry_run.record(Action::Allow, &e.label);
            }
        }
        let mut any_allow = false;
        for e in applicable.iter(Class::Allow) {
            any_allow = true;
            if e.policy.matches_subject(&subject) {
                return Decision::Allow {
                    policy: Some(Arc::clone(&e.label)),
                    dry_run,
                };
            }
        }
        if any_allow {
            return Decision::Deny(DenyReason::NoAllowMatched { dry_run });
        }
        if any_dry_run_allow && dry_run.allowed_by().is_empty() {
            dry_run.set_none_allowed();
        }
        Decision::Allow {
            policy: None,
            dry_run,
        }
    }
}

/// The policies that apply to one target. A workload normally names a
/// handful of policies, so the resolved list lives on the stack.
struct Applicable<'s> {
    namespace: Option<&'s Bucket>,
    global: &'s Bucket,
    selected: SmallVec<[&'s Entry; 8]>,
}

impl<'s> Applicable<'s> {
    /// Namespace policies, then global ones, then the ones named by the
    /// target (looked up by name whatever their scope, as ztunnel does).
    fn iter(&self, class: Class) -> impl Iterator<Item = &'s Entry> + '_ {
        self.namespace
            .map_or(&[][..], |b| b.list(class))
            .iter()
            .chain(self.global.list(class))
            .map(|e| &**e)
            .chain(
                self.selected
                    .iter()
                    .copied()
                    .filter(move |e| e.class == class),
            )
    }
}

/// Whether `key` is exactly `<namespace>/<name>` of `policy`.
fn is_label(key: &str, policy: &Policy) -> bool {
    key.strip_prefix(policy.namespace.as_str())
        .and_then(|rest| rest.strip_prefix('/'))
        == Some(policy.name.as_str())
}
