//! Applying delta xDS responses to the mesh state.
//!
//! The xDS client hands over raw resources; decoding and conversion happen here
//! so that the whole path from bytes on the wire to state is in one pure,
//! fuzzable place. A response is applied as one unit under the caller's write
//! lock; resources that fail to decode or convert are skipped and reported (the
//! client NACKs them by name) while the valid ones still apply.

use prost::Message;
use zs_proto::istio::security as pb_security;
use zs_proto::istio::workload as pb;

use crate::convert::{ConversionError, service_from_proto, workload_from_proto};
use crate::model::NamespacedHostname;
use crate::store::MeshState;

/// One resource from a delta response.
#[derive(Clone, Copy, Debug)]
pub struct ResourceRef<'a> {
    /// The xDS resource name (workload UID, `namespace/hostname`, or policy key).
    pub name: &'a str,
    /// The `Any.type_url` of the body.
    pub type_url: &'a str,
    /// The `Any.value` bytes.
    pub value: &'a [u8],
}

/// A resource that was not applied, and why (for the NACK message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub name: String,
    pub reason: String,
}

/// What applying an Authorization response did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyUpdate {
    pub rejected: Vec<Rejected>,
    /// Policies that cannot be fully enforced at L4 (name, explanation).
    pub warnings: Vec<(String, String)>,
    /// Whether the policy set changed (existing connections must be re-checked).
    pub changed: bool,
}

fn reject(name: &str, e: impl std::fmt::Display) -> Rejected {
    Rejected {
        name: name.to_string(),
        reason: e.to_string(),
    }
}

fn check_type(r: &ResourceRef<'_>, expected: &str) -> Result<(), ConversionError> {
    if r.type_url == expected {
        Ok(())
    } else {
        Err(ConversionError::Decode {
            type_url: r.type_url.to_string(),
            reason: format!("expected {expected}"),
        })
    }
}

impl MeshState {
    /// Applies an `istio.workload.Address` response: upserts, then removals.
    pub fn apply_addresses(
        &mut self,
        resources: &[ResourceRef<'_>],
        removed: &[String],
    ) -> Vec<Rejected> {
        let mut rejected = Vec::new();
        for r in resources {
            if let Err(e) = self.apply_address(r) {
                rejected.push(reject(r.name, e));
            }
        }
        for name in removed {
            self.remove_address(name);
        }
        rejected
    }

    fn apply_address(&mut self, r: &ResourceRef<'_>) -> Result<(), ConversionError> {
        check_type(r, zs_proto::ADDRESS_TYPE_URL)?;
        let address = pb::Address::decode(r.value).map_err(|e| ConversionError::Decode {
            type_url: r.type_url.to_string(),
            reason: e.to_string(),
        })?;
        match address.r#type {
            Some(pb::address::Type::Workload(w)) => {
                let (w, ports) = workload_from_proto(w)?;
                self.insert_workload(w, ports);
            }
            Some(pb::address::Type::Service(s)) => {
                self.insert_service(service_from_proto(s)?);
            }
            None => return Err(ConversionError::EmptyAddress),
        }
        Ok(())
    }

    /// Removes an Address resource by name: a workload UID, else `namespace/hostname`.
    pub fn remove_address(&mut self, name: &str) {
        if self.remove_workload(name).is_some() {
            return;
        }
        if let Ok(key) = name.parse::<NamespacedHostname>() {
            self.remove_service(&key);
        }
    }

    /// Applies an `istio.security.Authorization` response.
    pub fn apply_authorizations(
        &mut self,
        resources: &[ResourceRef<'_>],
        removed: &[String],
    ) -> PolicyUpdate {
        let mut update = PolicyUpdate::default();
        for r in resources {
            let decoded = check_type(r, zs_proto::AUTHORIZATION_TYPE_URL).and_then(|()| {
                pb_security::Authorization::decode(r.value).map_err(|e| ConversionError::Decode {
                    type_url: r.type_url.to_string(),
                    reason: e.to_string(),
                })
            });
            let policy = match decoded {
                Ok(p) => zs_authz::Policy::try_from(p).map_err(|e| reject(r.name, e)),
                Err(e) => Err(reject(r.name, e)),
            };
            match policy {
                Ok(policy) => {
                    update.changed = true;
                    if let Some(w) = self.policies_mut().insert(r.name, policy) {
                        update.warnings.push((r.name.to_string(), w.to_string()));
                    }
                }
                Err(rej) => update.rejected.push(rej),
            }
        }
        for name in removed {
            update.changed |= self.policies_mut().remove(name).is_some();
        }
        update
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn workload_bytes(uid: &str, addr: &[u8]) -> Vec<u8> {
        pb::Address {
            r#type: Some(pb::address::Type::Workload(pb::Workload {
                uid: uid.into(),
                name: uid.into(),
                namespace: "ns".into(),
                addresses: vec![Bytes::copy_from_slice(addr)],
                ..Default::default()
            })),
        }
        .encode_to_vec()
    }

    #[test]
    fn a_bad_resource_is_rejected_while_the_rest_apply() {
        let mut m = MeshState::new();
        let good = workload_bytes("good", &[10, 0, 0, 1]);
        let bad = workload_bytes("bad", &[10, 0, 0]);
        let rejected = m.apply_addresses(
            &[
                ResourceRef {
                    name: "good",
                    type_url: zs_proto::ADDRESS_TYPE_URL,
                    value: &good,
                },
                ResourceRef {
                    name: "bad",
                    type_url: zs_proto::ADDRESS_TYPE_URL,
                    value: &bad,
                },
            ],
            &[],
        );
        assert_eq!(
            rejected,
            vec![Rejected {
                name: "bad".into(),
                reason: "IP address must be 4 or 16 bytes, got 3".into()
            }]
        );
        assert!(m.workload("good").is_some());
        assert!(m.workload("bad").is_none());
    }

    #[test]
    fn garbage_bytes_are_rejected_not_panicked_on() {
        let mut m = MeshState::new();
        let rejected = m.apply_addresses(
            &[ResourceRef {
                name: "x",
                type_url: zs_proto::ADDRESS_TYPE_URL,
                value: &[0xff, 0xff, 0xff],
            }],
            &[],
        );
        assert_eq!(rejected.len(), 1);
        assert!(rejected[0].reason.starts_with("failed to decode"));
    }

    #[test]
    fn wrong_type_url_is_rejected() {
        let mut m = MeshState::new();
        let good = workload_bytes("good", &[10, 0, 0, 1]);
        let rejected = m.apply_addresses(
            &[ResourceRef {
                name: "good",
                type_url: zs_proto::AUTHORIZATION_TYPE_URL,
                value: &good,
            }],
            &[],
        );
        assert_eq!(rejected.len(), 1);
        assert!(m.workload("good").is_none());
    }

    #[test]
    fn removal_by_uid_then_by_service_key() {
        let mut m = MeshState::new();
        let w = workload_bytes("cluster//v1/Pod/ns/a", &[10, 0, 0, 1]);
        let s = pb::Address {
            r#type: Some(pb::address::Type::Service(pb::Service {
                name: "echo".into(),
                namespace: "ns".into(),
                hostname: "echo.ns.svc.cluster.local".into(),
                ..Default::default()
            })),
        }
        .encode_to_vec();
        m.apply_addresses(
            &[
                ResourceRef {
                    name: "cluster//v1/Pod/ns/a",
                    type_url: zs_proto::ADDRESS_TYPE_URL,
                    value: &w,
                },
                ResourceRef {
                    name: "ns/echo.ns.svc.cluster.local",
                    type_url: zs_proto::ADDRESS_TYPE_URL,
                    value: &s,
                },
            ],
            &[],
        );
        assert_eq!((m.workload_count(), m.service_count()), (1, 1));
        m.apply_addresses(
            &[],
            &[
                "cluster//v1/Pod/ns/a".into(),
                "ns/echo.ns.svc.cluster.local".into(),
            ],
        );
        assert_eq!((m.workload_count(), m.service_count()), (0, 0));
    }

    #[test]
    fn policy_push_reports_change_and_removal() {
        let mut m = MeshState::new();
        let p = pb_security::Authorization {
            name: "deny".into(),
            namespace: "ns".into(),
            action: pb_security::Action::Deny as i32,
            ..Default::default()
        }
        .encode_to_vec();
        let update = m.apply_authorizations(
            &[ResourceRef {
                name: "ns/deny",
                type_url: zs_proto::AUTHORIZATION_TYPE_URL,
                value: &p,
            }],
            &[],
        );
        assert!(update.changed);
        assert!(update.rejected.is_empty());
        assert!(m.policies().get("ns/deny").is_some());
        let update = m.apply_authorizations(&[], &["ns/deny".into()]);
        assert!(update.changed);
        assert!(m.policies().get("ns/deny").is_none());
        let update = m.apply_authorizations(&[], &["ns/unknown".into()]);
        assert!(!update.changed);
    }
}
