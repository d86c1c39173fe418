//! The resources served at one moment: the mesh file as xDS resources.
//!
//! A snapshot is immutable; a file change produces a new one and every stream
//! diffs it against what it already sent. Versions are content hashes (of the
//! type URL and the encoded bytes), so they are equal across restarts for
//! equal content: that is what lets a reconnecting client's
//! `initial_resource_versions` skip what it already has, even when the server
//! process is new.
//!
//! Besides its name, a resource can be found by the aliases ztunnel uses for
//! on-demand lookups (`<network>/<ip>` of a workload or a service VIP), so an
//! on-demand subscription is answered under the name the client asked for.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use prost::Message as _;
use prost_types::Any;
use zs_proto::istio::workload as pb;
use zs_proto::{ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL};
use zs_state::local::LocalConfig;

/// One resource body with its version.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned {
    /// Content hash: 16 hex digits of SHA-256 over the type URL and the bytes.
    pub version: Arc<str>,
    /// The body, as sent.
    pub body: Arc<Any>,
}

impl Versioned {
    fn new(type_url: &str, value: Vec<u8>) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(type_url.as_bytes());
        ctx.update(&[0]);
        ctx.update(&value);
        let digest = ctx.finish();
        let version: String = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Versioned {
            version: version.into(),
            body: Arc::new(Any {
                type_url: type_url.to_string(),
                value,
            }),
        }
    }
}

/// The resources of one type.
#[derive(Clone, Debug, Default)]
pub struct TypeSnapshot {
    resources: BTreeMap<String, Versioned>,
    /// Alias (`<network>/<ip>`) → resource name.
    aliases: HashMap<String, String>,
}

impl TypeSnapshot {
    /// Every resource, by name.
    pub fn resources(&self) -> &BTreeMap<String, Versioned> {
        &self.resources
    }

    /// The resource known by `name` or by an alias of it.
    pub fn resolve(&self, name: &str) -> Option<&Versioned> {
        self.resources.get(name).or_else(|| {
            self.aliases
                .get(name)
                .and_then(|real| self.resources.get(real))
        })
    }

    fn insert(&mut self, name: String, v: Versioned) {
        if self.resources.insert(name.clone(), v).is_some() {
            tracing::warn!(resource = %name, "duplicate resource name in the mesh file: the last one wins");
        }
    }
}

/// Everything served, by type URL.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    generation: u64,
    types: BTreeMap<String, TypeSnapshot>,
}

/// What [`Snapshot::from_config`] does to the resources it is told to corrupt.
pub const CORRUPTION: &str = "its IP addresses replaced by one 3-byte address";

impl Snapshot {
    /// An empty snapshot (generation 0): nothing to serve yet.
    pub fn empty() -> Self {
        Snapshot::default()
    }

    /// The mesh file as resources: workloads by UID and services by
    /// `<namespace>/<hostname>` (`istio.workload.Address`), policies by
    /// `<namespace>/<name>` (`istio.security.Authorization`).
    ///
    /// Address resources named in `corrupt` are served malformed
    /// ([`CORRUPTION`]): they still decode as protobuf but cannot be
    /// converted, as a broken or incompatible istiod's might. That exists
    /// only to test how clients NACK.
    pub fn from_config(config: &LocalConfig, generation: u64, corrupt: &[String]) -> Self {
        let (addresses, policies) = config.to_xds();
        let mut address = TypeSnapshot::default();
        for (name, mut a) in addresses {
            for alias in aliases(&a) {
                address.aliases.insert(alias, name.clone());
            }
            if corrupt.contains(&name) {
                corrupt_addresses(&mut a);
            }
            address.insert(name, Versioned::new(ADDRESS_TYPE_URL, a.encode_to_vec()));
        }
        let mut authorization = TypeSnapshot::default();
        for (name, p) in policies {
            authorization.insert(
                name,
                Versioned::new(AUTHORIZATION_TYPE_URL, p.encode_to_vec()),
            );
        }
        let mut types = BTreeMap::new();
        types.insert(ADDRESS_TYPE_URL.to_string(), address);
        types.insert(AUTHORIZATION_TYPE_URL.to_string(), authorization);
        Snapshot { generation, types }
    }

    /// Which load of the file this is (0 = nothing loaded yet).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The resources of `type_url` (none for a type this server does not know).
    pub fn of_type(&self, type_url: &str) -> Option<&TypeSnapshot> {
        self.types.get(type_url)
    }

    /// Resource counts by type URL.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.types
            .iter()
            .map(|(t, r)| (t.clone(), r.resources.len()))
            .collect()
    }
}

/// Replaces every IP address of a workload or service with one that is
/// 3 bytes long: valid protobuf, invalid content.
fn corrupt_addresses(a: &mut pb::Address) {
    const BAD: &[u8] = &[10, 0, 0];
    match &mut a.r#type {
        Some(pb::address::Type::Workload(w)) => {
            w.addresses = vec![bytes::Bytes::from_static(BAD)];
        }
        Some(pb::address::Type::Service(s)) => {
            let network = s
                .addresses
                .first()
                .map(|a| a.network.clone())
                .unwrap_or_default();
            s.addresses = vec![pb::NetworkAddress {
                network,
                address: BAD.to_vec(),
                ..Default::default()
            }];
        }
        None => {}
    }
}

/// The `<network>/<ip>` names ztunnel may ask for on demand.
fn aliases(address: &pb::Address) -> Vec<String> {
    match &address.r#type {
        Some(pb::address::Type::Workload(w)) => w
            .addresses
            .iter()
            .filter_map(|b| ip_from_bytes(b))
            .map(|ip| format!("{}/{ip}", w.network))
            .collect(),
        Some(pb::address::Type::Service(s)) => s
            .addresses
            .iter()
            .filter_map(|a| ip_from_bytes(&a.address).map(|ip| format!("{}/{ip}", a.network)))
            .collect(),
        None => Vec::new(),
    }
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: &str = r#"
workloads:
- uid: cluster1//Pod/ns/a
  name: a
  namespace: ns
  serviceAccount: a
  trustDomain: cluster.local
  workloadIps: ["10.0.0.1"]
  protocol: HBONE
  services:
    "ns/echo.ns.svc.cluster.local":
      80: 8080
services:
- name: echo
  namespace: ns
  hostname: echo.ns.svc.cluster.local
  vips: ["/10.96.0.1"]
  ports:
    80: 8080
policies:
- name: deny-all
  namespace: ns
  scope: Namespace
  action: Deny
  dryRun: false
  rules: []
"#;

    fn snapshot() -> Snapshot {
        Snapshot::from_config(&LocalConfig::from_yaml(MESH).unwrap(), 1, &[])
    }

    #[test]
    fn resources_are_named_as_istiod_names_them() {
        let s = snapshot();
        let names: Vec<&String> = s
            .of_type(ADDRESS_TYPE_URL)
            .unwrap()
            .resources()
            .keys()
            .collect();
        assert_eq!(
            names,
            ["cluster1//Pod/ns/a", "ns/echo.ns.svc.cluster.local"]
        );
        let policies: Vec<&String> = s
            .of_type(AUTHORIZATION_TYPE_URL)
            .unwrap()
            .resources()
            .keys()
            .collect();
        assert_eq!(policies, ["ns/deny-all"]);
    }

    #[test]
    fn versions_depend_only_on_content() {
        let (a, b) = (snapshot(), snapshot());
        let va = &a.of_type(ADDRESS_TYPE_URL).unwrap().resources()["cluster1//Pod/ns/a"];
        let vb = &b.of_type(ADDRESS_TYPE_URL).unwrap().resources()["cluster1//Pod/ns/a"];
        assert_eq!(va.version, vb.version);
        assert_eq!(va.version.len(), 16);
        let changed = LocalConfig::from_yaml(&MESH.replace("10.0.0.1", "10.0.0.2")).unwrap();
        let c = Snapshot::from_config(&changed, 2, &[]);
        let vc = &c.of_type(ADDRESS_TYPE_URL).unwrap().resources()["cluster1//Pod/ns/a"];
        assert_ne!(va.version, vc.version);
        // The service did not change, so neither did its version.
        let key = "ns/echo.ns.svc.cluster.local";
        assert_eq!(
            a.of_type(ADDRESS_TYPE_URL).unwrap().resources()[key].version,
            c.of_type(ADDRESS_TYPE_URL).unwrap().resources()[key].version
        );
    }

    #[test]
    fn workload_and_vip_addresses_resolve_as_aliases() {
        let s = snapshot();
        let t = s.of_type(ADDRESS_TYPE_URL).unwrap();
        assert_eq!(
            t.resolve("/10.0.0.1"),
            t.resources().get("cluster1//Pod/ns/a")
        );
        assert_eq!(
            t.resolve("/10.96.0.1"),
            t.resources().get("ns/echo.ns.svc.cluster.local")
        );
        assert!(t.resolve("/10.0.0.9").is_none());
    }

    #[test]
    fn corrupted_resources_decode_but_do_not_convert() {
        let config = LocalConfig::from_yaml(MESH).unwrap();
        let corrupt = [
            "cluster1//Pod/ns/a".to_string(),
            "ns/echo.ns.svc.cluster.local".to_string(),
        ];
        let s = Snapshot::from_config(&config, 1, &corrupt);
        let t = s.of_type(ADDRESS_TYPE_URL).unwrap();
        let refs: Vec<zs_state::xds::ResourceRef<'_>> = t
            .resources()
            .iter()
            .map(|(name, v)| zs_state::xds::ResourceRef {
                name,
                type_url: &v.body.type_url,
                value: &v.body.value,
            })
            .collect();
        let mut state = zs_state::MeshState::new();
        let rejected = state.apply_addresses(&refs, &[]);
        let reasons: Vec<(&str, &str)> = rejected
            .iter()
            .map(|r| (r.name.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    "cluster1//Pod/ns/a",
                    "IP address must be 4 or 16 bytes, got 3"
                ),
                (
                    "ns/echo.ns.svc.cluster.local",
                    "IP address must be 4 or 16 bytes, got 3"
                ),
            ]
        );
        // Names not in the file are simply absent.
        let s = Snapshot::from_config(&config, 1, &["nothing".to_string()]);
        assert_eq!(s.of_type(ADDRESS_TYPE_URL).unwrap().resources().len(), 2);
    }
}
