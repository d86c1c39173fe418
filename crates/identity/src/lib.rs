//! SPIFFE workload identities, `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
//!
//! This is the one name every part of the mesh agrees on: the CA puts it in the
//! certificate's URI SAN, the HBONE client checks the server's against a list of
//! expected identities, the HBONE server hands the client's to authorization, and
//! metrics and access logs print it. The parsing rules are ztunnel's: the
//! `spiffe://` prefix and exactly five `/`-separated path segments with the
//! literal `ns` and `sa` in positions two and four. Anything else is not an
//! identity (a certificate may carry other URIs; they are ignored, not errors).
//!
//! The crate is deliberately tiny and dependency-free so that the pure-logic
//! crates (authorization, mesh state) and the TLS crate can share the type
//! without depending on each other.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The default trust domain of an Istio mesh.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

const SPIFFE_PREFIX: &str = "spiffe://";

/// A SPIFFE identity of the Istio form. Cheap to clone (shared strings).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    trust_domain: Arc<str>,
    namespace: Arc<str>,
    service_account: Arc<str>,
}

/// Why a string is not an Istio SPIFFE identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity {0:?} does not start with spiffe://")]
    NotSpiffe(String),
    #[error(
        "identity {0:?} is not of the form spiffe://<trust domain>/ns/<namespace>/sa/<service account>"
    )]
    Malformed(String),
}

impl Identity {
    /// Builds an identity from its parts. Parts must be non-empty and contain no `/`.
    pub fn new(
        trust_domain: impl AsRef<str>,
        namespace: impl AsRef<str>,
        service_account: impl AsRef<str>,
    ) -> Result<Self, IdentityError> {
        let (td, ns, sa) = (
            trust_domain.as_ref(),
            namespace.as_ref(),
            service_account.as_ref(),
        );
        let ok = |s: &str| !s.is_empty() && !s.contains('/');
        if !(ok(td) && ok(ns) && ok(sa)) {
            return Err(IdentityError::Malformed(format!(
                "{SPIFFE_PREFIX}{td}/ns/{ns}/sa/{sa}"
            )));
        }
        Ok(Identity {
            trust_domain: td.into(),
            namespace: ns.into(),
            service_account: sa.into(),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The identity without its `spiffe://` prefix (`<td>/ns/<ns>/sa/<sa>`), which
    /// is what authorization `principals` matches are tested against.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(rest) = s.strip_prefix(SPIFFE_PREFIX) else {
            return Err(IdentityError::NotSpiffe(s.to_string()));
        };
        let mut parts = rest.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None)
                if !td.is_empty() && !ns.is_empty() && !sa.is_empty() =>
            {
                Identity::new(td, ns, sa)
            }
            _ => Err(IdentityError::Malformed(s.to_string())),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SPIFFE_PREFIX}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Identity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Identity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_istio_form() {
        let id: Identity = "spiffe://cluster.local/ns/ecs-demo-1/sa/echo"
            .parse()
            .unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "ecs-demo-1");
        assert_eq!(id.service_account(), "echo");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/ecs-demo-1/sa/echo"
        );
        assert_eq!(id.principal(), "cluster.local/ns/ecs-demo-1/sa/echo");
    }

    #[test]
    fn rejects_other_shapes() {
        for bad in [
            "cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a/sa",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/namespace/a/sa/b",
            "spiffe://cluster.local/ns/a/serviceaccount/b",
            "spiffe:///ns/a/sa/b",
            "spiffe://td/ns//sa/b",
            "spiffe://td/ns/a/sa/",
            "",
        ] {
            assert!(bad.parse::<Identity>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn new_rejects_slashes_and_empty_parts() {
        assert!(Identity::new("td", "a/b", "c").is_err());
        assert!(Identity::new("", "a", "c").is_err());
        assert!(Identity::new("td", "a", "c").is_ok());
    }

    #[test]
    fn serde_uses_the_uri_string() {
        let id = Identity::new("td", "ns1", "sa1").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"spiffe://td/ns/ns1/sa/sa1\"");
        let back: Identity = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
    }
}
