//! The mesh model: workloads, services and the addresses that tie them together.
//!
//! These types are ztunnel's internal model, and their serde form is ztunnel's
//! too: it is both the `LOCAL_XDS_PATH` YAML a user writes and the JSON that
//! `/config_dump` prints (and that `istioctl ztunnel-config` reads). Field names,
//! order, and which defaults are omitted follow upstream exactly, so do not
//! reorder fields or change a `skip_serializing_if` without checking the wire.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zs_identity::Identity;

/// Shared, immutable string: cheap to clone into routes, metrics and logs.
pub type Str = Arc<str>;

pub(crate) fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

/// An IP address within a named network (`"<network>/<ip>"`; the network may be empty).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkAddress {
    pub network: Str,
    pub address: IpAddr,
}

impl NetworkAddress {
    pub fn new(network: impl Into<Str>, address: IpAddr) -> Self {
        NetworkAddress {
            network: network.into(),
            address,
        }
    }
}

impl fmt::Display for NetworkAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.address)
    }
}

impl FromStr for NetworkAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (network, ip) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not of the form <network>/<ip>"))?;
        let address = ip
            .parse()
            .map_err(|_| format!("{s:?}: {ip:?} is not an IP address"))?;
        Ok(NetworkAddress::new(network, address))
    }
}

/// A service (or workload) hostname qualified by namespace: `"<namespace>/<hostname>"`.
/// It is the xDS resource name of a service and the key workloads use to name
/// the services they are endpoints of.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamespacedHostname {
    pub namespace: Str,
    pub hostname: Str,
}

impl NamespacedHostname {
    pub fn new(namespace: impl Into<Str>, hostname: impl Into<Str>) -> Self {
        NamespacedHostname {
            namespace: namespace.into(),
            hostname: hostname.into(),
        }
    }
}

impl fmt::Display for NamespacedHostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.hostname)
    }
}

impl FromStr for NamespacedHostname {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, host)) if !host.contains('/') => Ok(NamespacedHostname::new(ns, host)),
            _ => Err(format!("{s:?} is not of the form <namespace>/<hostname>")),
        }
    }
}

macro_rules! string_serde {
    ($t:ty, $what:literal) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(|e: String| {
                    serde::de::Error::custom(format!("invalid {}: {e}", $what))
                })
            }
        }
    };
}
string_serde!(NetworkAddress, "network address");
string_serde!(NamespacedHostname, "namespaced hostname");

/// A CIDR service VIP within a network.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetworkCidr {
    pub network: Str,
    pub cidr: ipnet::IpNet,
}

/// Where a waypoint or network gateway is: by IP (VIP or workload IP) or by hostname.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GatewayDestination {
    Address(NetworkAddress),
    Hostname(NamespacedHostname),
}

/// A waypoint or east-west gateway reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayAddress {
    pub destination: GatewayDestination,
    pub hbone_mtls_port: u16,
}

/// How a workload accepts inbound mesh traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum InboundProtocol {
    /// Plain TCP: not in the mesh (or behind a sidecar that does not speak HBONE).
    #[default]
    TCP,
    /// HBONE on port 15008.
    HBONE,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NetworkMode {
    #[default]
    Standard,
    /// Host-network workloads share the node's IP, so they are not indexed by address.
    HostNetwork,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HealthStatus {
    #[default]
    Healthy,
    Unhealthy,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Locality {
    #[serde(default)]
    pub region: Str,
    #[serde(default)]
    pub zone: Str,
    #[serde(default)]
    pub subzone: Str,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum AppTunnelProtocol {
    #[default]
    NONE,
    PROXY,
}

/// How inbound traffic is handed to the application (PROXY protocol, other port).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationTunnel {
    pub protocol: AppTunnelProtocol,
    #[serde(default)]
    pub port: Option<u16>,
}

/// A workload: a pod, a WorkloadEntry, an ECS task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    pub workload_ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub waypoint: Option<GatewayAddress>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub network_gateway: Option<GatewayAddress>,
    #[serde(default)]
    pub protocol: InboundProtocol,
    #[serde(default)]
    pub network_mode: NetworkMode,
    #[serde(default, skip_serializing_if = "is_default")]
    pub uid: Str,
    #[serde(default)]
    pub name: Str,
    pub namespace: Str,
    #[serde(default, skip_serializing_if = "is_default")]
    pub trust_domain: Str,
    #[serde(default, skip_serializing_if = "is_default")]
    pub service_account: Str,
    #[serde(default, skip_serializing_if = "is_default")]
    pub network: Str,
    #[serde(default, skip_serializing_if = "is_default")]
    pub workload_name: Str,
    #[serde(default, skip_serializing_if = "is_default")]
    pub workload_type: Str,
    #[serde(default, skip_serializing_if = "is_default")]
    pub canonical_name: Str,
    #[serde(default, skip_serializing_if = "is_default")]
    pub canonical_revision: Str,
    #[serde(default, skip_serializing_if = "is_default")]
    pub hostname: Str,
    #[serde(default, skip_serializing_if = "is_default")]
    pub node: Str,
    #[serde(default, skip_serializing_if = "is_default")]
    pub native_tunnel: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub application_tunnel: Option<ApplicationTunnel>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub authorization_policies: Vec<Str>,
    #[serde(default)]
    pub status: HealthStatus,
    #[serde(default)]
    pub cluster_id: Str,
    #[serde(default, skip_serializing_if = "is_default")]
    pub locality: Locality,
    /// The services this workload is an endpoint of (their per-service port maps are
    /// kept on the service's endpoint entries).
    #[serde(default, skip_serializing_if = "is_default")]
    pub services: Vec<NamespacedHostname>,
    #[serde(default = "default_capacity")]
    pub capacity: u32,
}

fn default_capacity() -> u32 {
    1
}

impl Workload {
    /// The workload's SPIFFE identity, or `None` when a part is empty (possible for
    /// hand-written local configs, which get no defaults).
    pub fn identity(&self) -> Option<Identity> {
        Identity::new(
            &*self.trust_domain,
            &*self.namespace,
            &*self.service_account,
        )
        .ok()
    }

    /// A minimal workload, for tests and for a sidecar that must describe itself
    /// before istiod has sent its record.
    pub fn new(
        uid: impl Into<Str>,
        namespace: impl Into<Str>,
        name: impl Into<Str>,
        service_account: impl Into<Str>,
    ) -> Self {
        Workload {
            workload_ips: Vec::new(),
            waypoint: None,
            network_gateway: None,
            protocol: InboundProtocol::HBONE,
            network_mode: NetworkMode::Standard,
            uid: uid.into(),
            name: name.into(),
            namespace: namespace.into(),
            trust_domain: zs_identity::DEFAULT_TRUST_DOMAIN.into(),
            service_account: service_account.into(),
            network: "".into(),
            workload_name: "".into(),
            workload_type: "".into(),
            canonical_name: "".into(),
            canonical_revision: "".into(),
            hostname: "".into(),
            node: "".into(),
            native_tunnel: false,
            application_tunnel: None,
            authorization_policies: Vec::new(),
            status: HealthStatus::Healthy,
            cluster_id: "".into(),
            locality: Locality::default(),
            services: Vec::new(),
            capacity: 1,
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} (uid {})", self.namespace, self.name, self.uid)
    }
}

/// One endpoint of a service: a workload plus its service-port → target-port map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    pub workload_uid: Str,
    /// Endpoint-specific service port → target port (overrides the service's).
    pub port: BTreeMap<u16, u16>,
    pub status: HealthStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LoadBalancerMode {
    /// No locality ranking: capacity-weighted random.
    Standard,
    /// Only endpoints matching every routing preference.
    Strict,
    /// The best-ranked group of endpoints.
    Failover,
    /// No endpoint selection: traffic goes to the address the client dialed.
    Passthrough,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LoadBalancerHealthPolicy {
    #[default]
    OnlyHealthy,
    AllowAll,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LoadBalancerScope {
    Region,
    Zone,
    Subzone,
    Node,
    Cluster,
    Network,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    pub routing_preferences: Vec<LoadBalancerScope>,
    pub mode: LoadBalancerMode,
    pub health_policy: LoadBalancerHealthPolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IpFamily {
    Dual,
    IPv4,
    IPv6,
}

impl IpFamily {
    pub fn accepts(self, ip: IpAddr) -> bool {
        match self {
            IpFamily::Dual => true,
            IpFamily::IPv4 => ip.is_ipv4(),
            IpFamily::IPv6 => ip.is_ipv6(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Visibility {
    #[default]
    Public,
    /// Only resolvable and routable from clients in the service's namespace.
    Namespace,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedWaypoint {
    pub destination: GatewayAddress,
    pub weight: u32,
}

/// A service: a hostname, VIPs, ports and the workloads behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    pub name: Str,
    pub namespace: Str,
    pub hostname: Str,
    pub vips: Vec<NetworkAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidr_vips: Vec<NetworkCidr>,
    /// Service port → target port (0 = named port, resolved per endpoint).
    pub ports: BTreeMap<u16, u16>,
    /// Endpoints keyed by workload UID; filled from workloads, never from the service resource.
    #[serde(default)]
    pub endpoints: BTreeMap<Str, Endpoint>,
    #[serde(default)]
    pub subject_alt_names: Vec<Str>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub waypoint: Option<GatewayAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weighted_waypoints: Vec<WeightedWaypoint>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub ip_families: Option<IpFamily>,
    #[serde(default)]
    pub canonical: bool,
    #[serde(default)]
    pub visibility: Visibility,
}

impl Service {
    pub fn key(&self) -> NamespacedHostname {
        NamespacedHostname::new(self.namespace.clone(), self.hostname.clone())
    }

    /// Whether a client in `namespace` may see this service.
    pub fn visible_to(&self, namespace: &str) -> bool {
        self.visibility != Visibility::Namespace || &*self.namespace == namespace
    }

    /// Whether endpoints with this health take traffic.
    pub fn admits(&self, status: HealthStatus) -> bool {
        status == HealthStatus::Healthy
            || self
                .load_balancer
                .as_ref()
                .is_some_and(|lb| lb.health_policy == LoadBalancerHealthPolicy::AllowAll)
    }

    /// The service's SANs that parse as SPIFFE identities (others are skipped).
    pub fn san_identities(&self) -> impl Iterator<Item = Identity> + '_ {
        self.subject_alt_names.iter().filter_map(|s| s.parse().ok())
    }

    /// A minimal service, for tests.
    pub fn new(namespace: impl Into<Str>, name: impl Into<Str>, hostname: impl Into<Str>) -> Self {
        Service {
            name: name.into(),
            namespace: namespace.into(),
            hostname: hostname.into(),
            vips: Vec::new(),
            cidr_vips: Vec::new(),
            ports: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            subject_alt_names: Vec::new(),
            waypoint: None,
            weighted_waypoints: Vec::new(),
            load_balancer: None,
            ip_families: None,
            canonical: false,
            visibility: Visibility::Public,
        }
    }
}

/// What metrics and logs say about a destination service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceDescription {
    pub hostname: Str,
    pub name: Str,
    pub namespace: Str,
}

impl From<&Service> for ServiceDescription {
    fn from(s: &Service) -> Self {
        ServiceDescription {
            hostname: s.hostname.clone(),
            name: s.name.clone(),
            namespace: s.namespace.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_address_round_trips_through_its_string_form() {
        let a: NetworkAddress = "remote/10.0.0.1".parse().unwrap();
        assert_eq!(&*a.network, "remote");
        assert_eq!(a.to_string(), "remote/10.0.0.1");
        let b: NetworkAddress = "/::1".parse().unwrap();
        assert_eq!(&*b.network, "");
        assert!("10.0.0.1".parse::<NetworkAddress>().is_err());
        assert!("net/not-an-ip".parse::<NetworkAddress>().is_err());
    }

    #[test]
    fn gateway_destination_prefers_an_address_then_a_hostname() {
        let a: GatewayDestination = serde_json::from_str("\"net/10.1.1.1\"").unwrap();
        assert!(matches!(a, GatewayDestination::Address(_)));
        let h: GatewayDestination =
            serde_json::from_str("\"istio-system/eastwest.istio-system.svc\"").unwrap();
        assert!(matches!(h, GatewayDestination::Hostname(_)));
    }

    #[test]
    fn workload_json_omits_defaults_like_ztunnel() {
        let mut w = Workload::new("uid1", "ns", "wl", "sa");
        w.workload_ips = vec!["10.0.0.1".parse().unwrap()];
        w.trust_domain = "".into();
        let json = serde_json::to_value(&w).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        // serde_json without preserve_order sorts keys; compare as a set.
        let mut expected = vec![
            "workloadIps",
            "protocol",
            "networkMode",
            "uid",
            "name",
            "namespace",
            "serviceAccount",
            "status",
            "clusterId",
            "capacity",
        ];
        expected.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, expected);
        assert_eq!(json["protocol"], "HBONE");
        assert_eq!(json["status"], "Healthy");
    }
}
