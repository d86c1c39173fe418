//! Istio L4 authorization, decided the way ztunnel decides it.
//!
//! This crate is the decision procedure for Istio `AuthorizationPolicy` at
//! layer 4, with ztunnel's semantics to the letter: which policies apply to a
//! destination workload (GLOBAL, its namespace's, and the ones it names), the
//! order they are consulted in (DENY before ALLOW, dry-run never enforced),
//! and what each field of a match means (source and destination CIDRs,
//! destination ports, source namespaces, service accounts and principals
//! taken from the peer's SPIFFE identity). It holds the policy model in the
//! form istiod sends over xDS ([`Policy`] converts from and to
//! `istio.security.Authorization`) and in the camelCase YAML/JSON form
//! ztunnel reads from its local config and prints in `/config_dump`.
//!
//! It is pure logic: no I/O, no logging, no clocks. [`PolicyStore::evaluate`]
//! returns a [`Decision`] value (with what dry-run policies would have done)
//! and [`PolicyStore::insert`] returns a [`Warning`] value; the caller logs,
//! counts and closes connections. Evaluation allocates nothing and only
//! visits policies that can apply to the target, however many the mesh has.
//!
//! What it is not: an L7 engine. HTTP attributes (methods, paths, headers,
//! JWT claims) cannot be checked by a proxy that sees only TCP; istiod drops
//! them on the way to ztunnel, leaving empty matches that never match. A
//! waypoint proxy enforces those. Nor does it track connections or re-check
//! them when policies change; that belongs to the proxy.
//!
//! Where ztunnel's behaviour follows from its data structures rather than
//! from a stated rule, this crate reproduces it, so both proxies decide alike
//! on every input: a NAMESPACE-scoped policy with an empty namespace applies
//! to every workload (ztunnel files GLOBAL policies under the empty
//! namespace); a workload's named policies are looked up by key whatever
//! their scope; xDS ports and prefix lengths are narrowed to 16 and 8 bits.
//! Two deliberate differences: IPv4-mapped IPv6 addresses are tested as IPv4
//! (ztunnel canonicalizes them when it accepts a socket, before authorization),
//! and unknown keys inside a YAML match are rejected instead of ignored, so a
//! misspelt key cannot silently widen a policy.
//!
//! Users: the inbound data path of the sidecar (authorize each HBONE or
//! plaintext connection before dialing the application), the mesh state
//! (conversion of xDS pushes and of local YAML), the admin server (config
//! dump), and the local control plane (serving YAML policies over xDS).
//!
//! ```
//! use zs_authz::{Action, Connection, Identity, Match, Policy, PolicyStore, Rule, Clause, Scope, StringMatch, Target};
//!
//! let mut store = PolicyStore::new();
//! store.insert("shop/allow-frontend", Policy {
//!     name: "allow-frontend".into(),
//!     namespace: "shop".into(),
//!     scope: Scope::Namespace,
//!     action: Action::Allow,
//!     dry_run: false,
//!     rules: vec![Rule { clauses: vec![Clause { matches: vec![Match {
//!         principals: vec![StringMatch::Exact("cluster.local/ns/shop/sa/frontend".into())],
//!         ..Match::default()
//!     }] }] }],
//! });
//! let names: [&str; 0] = [];
//! let target = Target::new("shop", &names);
//! let conn = Connection {
//!     src_ip: "10.0.0.7".parse().unwrap(),
//!     dst: "10.0.0.9:8080".parse().unwrap(),
//!     src_identity: Some("spiffe://cluster.local/ns/shop/sa/frontend".parse().unwrap()),
//! };
//! assert!(store.evaluate(&target, &conn).is_allowed());
//! let stranger = Connection { src_identity: None, ..conn };
//! assert_eq!(
//!     store.evaluate(&target, &stranger).to_string(),
//!     "allow policies exist, but none allowed",
//! );
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod convert;
mod decision;
mod policy;
mod store;

pub use convert::ConversionError;
pub use decision::{Decision, DenyReason, DryRun};
pub use policy::{Action, Clause, Match, Policy, Rule, Scope, ServiceAccountMatch, StringMatch};
pub use store::{Connection, PolicyStore, Target, Warning};
pub use zs_identity::Identity;
