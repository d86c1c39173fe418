//! The `LOCAL_XDS_PATH` / `LOCAL_XDS` YAML file: workloads, services and policies
//! written by hand, in upstream ztunnel's local-config format, so that one file
//! configures either program.
//!
//! The format is ztunnel's internal model in camelCase (see [`crate::model`]),
//! parsed with the same YAML library and the same struct shapes, so both programs
//! accept and reject the same files. Note that, unlike xDS, omitted fields get no
//! Istio defaults (an omitted `trustDomain` is empty, not `cluster.local`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zs_authz::Policy;
use zs_proto::istio::security as pb_security;
use zs_proto::istio::workload as pb;

use crate::convert::{WorkloadServicePorts, service_to_proto, workload_to_proto};
use crate::model::*;
use crate::store::MeshState;

/// An authorization policy with its xDS resource name.
pub type NamedPolicy = (String, pb_security::Authorization);

/// One workload entry: the workload plus its per-service port maps
/// (`services: {"<ns>/<hostname>": {<service port>: <target port>}}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalWorkload {
    #[serde(flatten)]
    pub workload: Workload,
    pub services: BTreeMap<String, BTreeMap<u16, u16>>,
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalConfig {
    #[serde(default)]
    pub workloads: Vec<LocalWorkload>,
    #[serde(default)]
    pub policies: Vec<Policy>,
    #[serde(default)]
    pub services: Vec<Service>,
}

/// What replacing one version of the file by another did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalUpdate {
    /// Policies that cannot be fully enforced at L4 (name, explanation).
    pub warnings: Vec<(String, String)>,
    pub policies_changed: bool,
}

/// Why a local config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum LocalConfigError {
    #[error("invalid local config YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("workload {uid:?}: {reason}")]
    Workload { uid: String, reason: String },
}

impl LocalWorkload {
    fn ports(&self) -> Result<WorkloadServicePorts, LocalConfigError> {
        self.services
            .iter()
            .map(|(k, v)| {
                let key: NamespacedHostname =
                    k.parse().map_err(|reason| LocalConfigError::Workload {
                        uid: self.workload.uid.to_string(),
                        reason,
                    })?;
                Ok((key, v.clone()))
            })
            .collect()
    }
}

impl LocalConfig {
    pub fn from_yaml(text: &str) -> Result<Self, LocalConfigError> {
        let cfg: LocalConfig = serde_yaml::from_str(text)?;
        // Validate the service keys up front so that applying cannot fail half-way.
        for w in &cfg.workloads {
            w.ports()?;
        }
        Ok(cfg)
    }

    /// Inserts everything into the state; returns policy warnings (name, text).
    pub fn apply(&self, state: &mut MeshState) -> Vec<(String, String)> {
        for s in &self.services {
            state.insert_service(s.clone());
        }
        for w in &self.workloads {
            let ports = w.ports().unwrap_or_default();
            let mut workload = w.workload.clone();
            workload.services = ports.keys().cloned().collect();
            state.insert_workload(workload, ports);
        }
        let mut warnings = Vec::new();
        for p in &self.policies {
            let key = format!("{}/{}", p.namespace, p.name);
            if let Some(w) = state.policies_mut().insert(key.clone(), p.clone()) {
                warnings.push((key, w.to_string()));
            }
        }
        warnings
    }

    /// Moves the state from `previous` (what an earlier version of the file put
    /// there) to `self`: entries that disappeared are removed, the rest is
    /// (re)applied. Returns policy warnings and whether the policy set changed
    /// (open connections must then be re-checked).
    pub fn replace(&self, previous: &LocalConfig, state: &mut MeshState) -> LocalUpdate {
        let uids: std::collections::HashSet<&str> =
            self.workloads.iter().map(|w| &*w.workload.uid).collect();
        for w in &previous.workloads {
            if !uids.contains(&*w.workload.uid) {
                state.remove_workload(&w.workload.uid);
            }
        }
        let keys: std::collections::HashSet<NamespacedHostname> =
            self.services.iter().map(Service::key).collect();
        for s in &previous.services {
            if !keys.contains(&s.key()) {
                state.remove_service(&s.key());
            }
        }
        let names: std::collections::HashSet<String> =
            self.policies.iter().map(Policy::key).collect();
        for p in &previous.policies {
            if !names.contains(&p.key()) {
                state.policies_mut().remove(&p.key());
            }
        }
        let warnings = self.apply(state);
        LocalUpdate {
            warnings,
            policies_changed: self.policies != previous.policies,
        }
    }

    /// The file as xDS resources, for a control plane that serves it:
    /// `(resource name, Address)` and `(resource name, Authorization)`.
    pub fn to_xds(&self) -> (Vec<(String, pb::Address)>, Vec<NamedPolicy>) {
        let mut addresses = Vec::new();
        for w in &self.workloads {
            let ports = w.ports().unwrap_or_default();
            let wl = workload_to_proto(&w.workload, &ports);
            addresses.push((
                w.workload.uid.to_string(),
                pb::Address {
                    r#type: Some(pb::address::Type::Workload(wl)),
                },
            ));
        }
        for s in &self.services {
            addresses.push((
                s.key().to_string(),
                pb::Address {
                    r#type: Some(pb::address::Type::Service(service_to_proto(s))),
                },
            ));
        }
        let policies = self
            .policies
            .iter()
            .map(|p| (format!("{}/{}", p.namespace, p.name), p.into()))
            .collect();
        (addresses, policies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
workloads:
- uid: cluster1//v1/Pod/default/local
  name: local
  namespace: default
  serviceAccount: default
  workloadIps: ["127.0.0.1"]
  protocol: HBONE
  node: local
  network: ""
  services:
    "default/example.com":
      80: 8080
- uid: cluster1//v1/Pod/default/local-tcp
  name: local-tcp
  namespace: default
  workloadIps: ["127.0.0.2"]
  protocol: TCP
  services: {}
policies:
- name: allow-eks
  namespace: ecs-demo-1
  scope: Namespace
  action: Allow
  dryRun: false
  rules:
  - - - namespaces: [!Exact default]
        destinationPorts: [8080]
services:
- name: local
  namespace: default
  hostname: example.com
  vips:
  - /127.10.0.1
  ports:
    80: 8080
  subjectAltNames:
  - spiffe://cluster.local/ns/default/sa/local
  canonical: true
"#;

    #[test]
    fn upstream_example_file_loads() {
        let cfg = LocalConfig::from_yaml(EXAMPLE).unwrap();
        assert_eq!(cfg.workloads.len(), 2);
        assert_eq!(cfg.policies.len(), 1);
        let mut m = MeshState::new();
        let warnings = cfg.apply(&mut m);
        assert!(warnings.is_empty());
        let svc = m
            .service(&NamespacedHostname::new("default", "example.com"))
            .unwrap();
        assert_eq!(
            svc.endpoints["cluster1//v1/Pod/default/local"].port,
            BTreeMap::from([(80, 8080)])
        );
        let tcp = m.workload("cluster1//v1/Pod/default/local-tcp").unwrap();
        assert_eq!(tcp.protocol, InboundProtocol::TCP);
        // Local files get no Istio defaults.
        assert_eq!(&*tcp.trust_domain, "");
        assert!(m.policies().get("ecs-demo-1/allow-eks").is_some());
    }

    #[test]
    fn replacing_the_file_removes_what_disappeared() {
        let first = LocalConfig::from_yaml(EXAMPLE).unwrap();
        let mut m = MeshState::new();
        first.apply(&mut m);
        let mut second = first.clone();
        second.workloads.retain(|w| &*w.workload.name == "local");
        second.services.clear();
        second.policies.clear();
        let update = second.replace(&first, &mut m);
        assert!(update.policies_changed);
        assert!(m.workload("cluster1//v1/Pod/default/local-tcp").is_none());
        assert!(m.workload("cluster1//v1/Pod/default/local").is_some());
        assert!(
            m.service(&NamespacedHostname::new("default", "example.com"))
                .is_none()
        );
        assert!(m.policies().get("ecs-demo-1/allow-eks").is_none());
        let unchanged = second.replace(&second, &mut m);
        assert!(!unchanged.policies_changed);
    }

    #[test]
    fn unknown_top_level_key_is_rejected() {
        let err = LocalConfig::from_yaml("workloads: []\ngateways: []\n").unwrap_err();
        assert!(err.to_string().contains("gateways"), "{err}");
    }

    #[test]
    fn workload_without_ips_is_rejected_like_upstream() {
        let yaml = "workloads:\n- uid: a\n  namespace: ns\n  services: {}\n";
        assert!(LocalConfig::from_yaml(yaml).is_err());
    }

    #[test]
    fn bad_service_key_names_the_workload() {
        let yaml = "workloads:\n- uid: a\n  namespace: ns\n  workloadIps: []\n  services:\n    nohost: {}\n";
        let err = LocalConfig::from_yaml(yaml).unwrap_err();
        assert!(err.to_string().contains("\"a\""), "{err}");
    }

    #[test]
    fn to_xds_round_trips_into_an_equal_state() {
        let cfg = LocalConfig::from_yaml(EXAMPLE).unwrap();
        let (addresses, policies) = cfg.to_xds();
        assert_eq!(addresses.len(), 3);
        assert_eq!(policies[0].0, "ecs-demo-1/allow-eks");
        let mut m = MeshState::new();
        for (name, a) in addresses {
            match a.r#type.unwrap() {
                pb::address::Type::Workload(w) => {
                    assert_eq!(name, w.uid);
                    let (w, p) = crate::convert::workload_from_proto(w).unwrap();
                    m.insert_workload(w, p);
                }
                pb::address::Type::Service(s) => {
                    m.insert_service(crate::convert::service_from_proto(s).unwrap());
                }
            }
        }
        let svc = m
            .service(&NamespacedHostname::new("default", "example.com"))
            .unwrap();
        assert_eq!(svc.endpoints.len(), 1);
    }
}
