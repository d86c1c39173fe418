//! The mesh state store and its indexes.
//!
//! One `MeshState` holds everything istiod (or a local file) has said: workloads by
//! UID, services by `namespace/hostname`, authorization policies by name, plus the
//! indexes the data path needs (workload by IP, service by VIP, CIDR VIPs, services
//! by hostname, workloads by hostname). Writers apply a whole xDS response under one
//! lock (see `SharedMesh`), so readers always see a consistent state.
//!
//! Endpoints come from workloads, not from services: a workload names the services
//! it belongs to. A workload may arrive before its service; its endpoint is then
//! *staged* under the service key and attached when the service arrives (and put
//! back in staging if the service is removed, so a re-added service finds it again).
//!
//! Every update is O(number of services the workload is in): a single-workload
//! change in a mesh of ten thousand workloads touches a handful of map entries.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use smallvec::SmallVec;
use zs_authz::PolicyStore;

use crate::convert::WorkloadServicePorts;
use crate::lb_cache::LbCache;
use crate::model::*;

/// All workloads, services and policies known to this proxy, with lookup indexes.
#[derive(Default, Debug)]
pub struct MeshState {
    workloads: HashMap<Str, Arc<Workload>>,
    by_address: HashMap<NetworkAddress, SmallVec<[Str; 1]>>,
    workloads_by_hostname: HashMap<NamespacedHostname, SmallVec<[Str; 1]>>,
    services: HashMap<NamespacedHostname, Service>,
    by_vip: HashMap<NetworkAddress, SmallVec<[NamespacedHostname; 1]>>,
    cidr_vips: Vec<(NetworkCidr, NamespacedHostname)>,
    services_by_hostname: HashMap<Str, SmallVec<[Str; 1]>>,
    staged: HashMap<NamespacedHostname, BTreeMap<Str, Endpoint>>,
    policies: PolicyStore,
    /// Endpoint tiers of large services; cleared by every change to workloads
    /// or services.
    lb_cache: LbCache,
}

impl MeshState {
    pub fn new() -> Self {
        Self::default()
    }

    // ---- workloads -------------------------------------------------------------

    /// Inserts (or replaces, by UID) a workload and its per-service port maps.
    pub fn insert_workload(&mut self, workload: Workload, ports: WorkloadServicePorts) {
        self.lb_cache.clear();
        self.remove_workload(&workload.uid);
        let uid = workload.uid.clone();
        let workload = Arc::new(workload);
        if workload.network_mode != NetworkMode::HostNetwork {
            for ip in &workload.workload_ips {
                let list = self
                    .by_address
                    .entry(NetworkAddress::new(workload.network.clone(), *ip))
                    .or_default();
                // A UID naming a Pod wins when several workloads share an IP (ztunnel's rule).
                if uid.contains("//Pod/") {
                    list.insert(0, uid.clone());
                } else {
                    list.push(uid.clone());
                }
            }
        }
        if !workload.hostname.is_empty() {
            self.workloads_by_hostname
                .entry(NamespacedHostname::new(
                    workload.namespace.clone(),
                    workload.hostname.clone(),
                ))
                .or_default()
                .push(uid.clone());
        }
        for key in &workload.services {
            let endpoint = Endpoint {
                workload_uid: uid.clone(),
                port: ports.get(key).cloned().unwrap_or_default(),
                status: workload.status,
            };
            match self.services.get_mut(key) {
                Some(svc) => {
                    svc.endpoints.insert(uid.clone(), endpoint);
                }
                None => {
                    self.staged
                        .entry(key.clone())
                        .or_default()
                        .insert(uid.clone(), endpoint);
                }
            }
        }
        self.workloads.insert(uid, workload);
    }

    /// Removes a workload by UID, with its endpoints. Returns it if it existed.
    pub fn remove_workload(&mut self, uid: &str) -> Option<Arc<Workload>> {
        self.lb_cache.clear();
        let workload = self.workloads.remove(uid)?;
        for ip in &workload.workload_ips {
            let key = NetworkAddress::new(workload.network.clone(), *ip);
            remove_from_index(&mut self.by_address, &key, |u| &**u == uid);
        }
        if !workload.hostname.is_empty() {
            let key =
                NamespacedHostname::new(workload.namespace.clone(), workload.hostname.clone());
            remove_from_index(&mut self.workloads_by_hostname, &key, |u| &**u == uid);
        }
        for key in &workload.services {
            if let Some(svc) = self.services.get_mut(key) {
                svc.endpoints.remove(uid);
            }
            if let Some(staged) = self.staged.get_mut(key) {
                staged.remove(uid);
                if staged.is_empty() {
                    self.staged.remove(key);
                }
            }
        }
        Some(workload)
    }

    pub fn workload(&self, uid: &str) -> Option<&Arc<Workload>> {
        self.workloads.get(uid)
    }

    /// The workload with this IP on this network (host-network workloads are not indexed).
    pub fn workload_by_address(&self, addr: &NetworkAddress) -> Option<&Arc<Workload>> {
        self.by_address
            .get(addr)
            .and_then(|uids| uids.first())
            .and_then(|uid| self.workloads.get(uid))
    }

    /// A workload found by its `hostname` field within a namespace.
    pub fn workload_by_hostname(&self, key: &NamespacedHostname) -> Option<&Arc<Workload>> {
        self.workloads_by_hostname
            .get(key)
            .and_then(|uids| uids.first())
            .and_then(|uid| self.workloads.get(uid))
    }

    /// Finds a workload by namespace, name and service account (how a sidecar finds itself).
    pub fn find_workload(
        &self,
        namespace: &str,
        name: &str,
        service_account: &str,
    ) -> Option<&Arc<Workload>> {
        self.workloads
            .values()
            .filter(|w| {
                &*w.namespace == namespace
                    && &*w.name == name
                    && &*w.service_account == service_account
            })
            .min_by(|a, b| a.uid.cmp(&b.uid))
    }

    pub fn workloads(&self) -> impl Iterator<Item = &Arc<Workload>> {
        self.workloads.values()
    }

    pub fn workload_count(&self) -> usize {
        self.workloads.len()
    }

    // ---- services --------------------------------------------------------------

    /// Inserts (or replaces) a service. Endpoints are kept from the previous version
    /// and completed from staging: they belong to workloads, not to the resource.
    pub fn insert_service(&mut self, mut service: Service) {
        self.lb_cache.clear();
        let key = service.key();
        let mut endpoints = match self.remove_service_indexes(&key) {
            Some(old) => old.endpoints,
            None => BTreeMap::new(),
        };
        if let Some(staged) = self.staged.remove(&key) {
            endpoints.extend(staged);
        }
        service.endpoints = endpoints;
        for vip in &service.vips {
            self.by_vip
                .entry(vip.clone())
                .or_default()
                .push(key.clone());
        }
        for cidr in &service.cidr_vips {
            self.cidr_vips.push((cidr.clone(), key.clone()));
        }
        self.services_by_hostname
            .entry(service.hostname.clone())
            .or_default()
            .push(key.namespace.clone());
        self.services.insert(key, service);
    }

    /// Removes a service; its endpoints go back to staging for a later re-add.
    pub fn remove_service(&mut self, key: &NamespacedHostname) -> Option<Service> {
        self.lb_cache.clear();
        let mut service = self.remove_service_indexes(key)?;
        let endpoints = std::mem::take(&mut service.endpoints);
        if !endpoints.is_empty() {
            self.staged.insert(key.clone(), endpoints);
        }
        Some(service)
    }

    fn remove_service_indexes(&mut self, key: &NamespacedHostname) -> Option<Service> {
        let service = self.services.remove(key)?;
        for vip in &service.vips {
            remove_from_index(&mut self.by_vip, vip, |k| k == key);
        }
        if !service.cidr_vips.is_empty() {
            self.cidr_vips.retain(|(_, k)| k != key);
        }
        remove_from_index(&mut self.services_by_hostname, &service.hostname, |ns| {
            *ns == key.namespace
        });
        Some(service)
    }

    pub fn service(&self, key: &NamespacedHostname) -> Option<&Service> {
        self.services.get(key)
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Endpoints waiting for their service, by service key.
    pub fn staged_services(&self) -> &HashMap<NamespacedHostname, BTreeMap<Str, Endpoint>> {
        &self.staged
    }

    /// The service reachable at this exact VIP for a client in `client_namespace`:
    /// visible services only; ties go to the client's namespace, then `canonical`,
    /// then the first one by key. Falls back to CIDR VIPs (same namespace, longest
    /// prefix, canonical).
    pub fn service_by_vip(
        &self,
        addr: &NetworkAddress,
        client_namespace: &str,
    ) -> Option<&Service> {
        let exact = self
            .by_vip
            .get(addr)
            .into_iter()
            .flatten()
            .filter_map(|k| self.services.get(k))
            .filter(|s| s.visible_to(client_namespace))
            .min_by_key(|s| (&*s.namespace != client_namespace, !s.canonical, s.key()));
        if exact.is_some() {
            return exact;
        }
        self.cidr_vips
            .iter()
            .filter(|(c, _)| c.network == addr.network && c.cidr.contains(&addr.address))
            .filter_map(|(c, k)| self.services.get(k).map(|s| (c, s)))
            .filter(|(_, s)| s.visible_to(client_namespace))
            .min_by_key(|(c, s)| {
                (
                    &*s.namespace != client_namespace,
                    std::cmp::Reverse(c.cidr.prefix_len()),
                    !s.canonical,
                    s.key(),
                )
            })
            .map(|(_, s)| s)
    }

    /// Services with exactly this hostname, visible to the client; preferred first
    /// (client's namespace, then canonical, then by namespace).
    pub fn services_by_hostname(&self, hostname: &str, client_namespace: &str) -> Option<&Service> {
        self.services_by_hostname
            .get(hostname)
            .into_iter()
            .flatten()
            .filter_map(|ns| {
                self.services
                    .get(&NamespacedHostname::new(ns.clone(), Str::from(hostname)))
            })
            .filter(|s| s.visible_to(client_namespace))
            .min_by_key(|s| {
                (
                    &*s.namespace != client_namespace,
                    !s.canonical,
                    s.namespace.clone(),
                )
            })
    }

    /// Whether any service uses this hostname (for wildcard and suffix lookups).
    pub fn has_hostname(&self, hostname: &str) -> bool {
        self.services_by_hostname.contains_key(hostname)
    }

    /// Service hostnames that begin with `*.` (wildcard ServiceEntries).
    pub fn wildcard_hostnames(&self) -> impl Iterator<Item = &Str> {
        self.services_by_hostname
            .keys()
            .filter(|h| h.starts_with("*."))
    }

    // ---- policies --------------------------------------------------------------

    pub fn policies(&self) -> &PolicyStore {
        &self.policies
    }

    /// The endpoint-tier cache (used by load balancing).
    pub(crate) fn lb_cache(&self) -> &LbCache {
        &self.lb_cache
    }

    pub fn policies_mut(&mut self) -> &mut PolicyStore {
        &mut self.policies
    }

    /// All IPs of a workload on its network, for waypoint and gateway checks.
    pub fn workload_ips(&self, uid: &str) -> &[IpAddr] {
        self.workloads
            .get(uid)
            .map(|w| w.workload_ips.as_slice())
            .unwrap_or_default()
    }
}

fn remove_from_index<K, V, const N: usize>(
    index: &mut HashMap<K, SmallVec<[V; N]>>,
    key: &K,
    matches: impl Fn(&V) -> bool,
) where
    K: std::hash::Hash + Eq,
{
    if let Some(list) = index.get_mut(key) {
        list.retain(|v| !matches(v));
        if list.is_empty() {
            index.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wl(uid: &str, ip: &str, services: &[(&str, u16, u16)]) -> (Workload, WorkloadServicePorts) {
        let mut w = Workload::new(uid, "ns", uid, "sa");
        w.workload_ips = vec![ip.parse().unwrap()];
        let mut ports = WorkloadServicePorts::new();
        for (key, sp, tp) in services {
            let k: NamespacedHostname = key.parse().unwrap();
            w.services.push(k.clone());
            ports.entry(k).or_default().insert(*sp, *tp);
        }
        (w, ports)
    }

    fn svc(host: &str, vip: &str) -> Service {
        let mut s = Service::new("ns", host.split('.').next().unwrap(), host);
        s.vips = vec![format!("/{vip}").parse().unwrap()];
        s.ports = BTreeMap::from([(80, 8080)]);
        s
    }

    #[test]
    fn workload_arriving_before_its_service_is_staged_then_attached() {
        let mut m = MeshState::new();
        let (w, p) = wl("a", "10.0.0.1", &[("ns/echo", 80, 8080)]);
        m.insert_workload(w, p);
        let key = NamespacedHostname::new("ns", "echo");
        assert_eq!(m.staged_services()[&key].len(), 1);
        m.insert_service(svc("echo", "10.96.0.1"));
        assert!(m.staged_services().is_empty());
        assert_eq!(m.service(&key).unwrap().endpoints.len(), 1);
        assert_eq!(
            m.service(&key).unwrap().endpoints["a"].port,
            BTreeMap::from([(80, 8080)])
        );
    }

    #[test]
    fn service_update_keeps_endpoints_and_reindexes_vips() {
        let mut m = MeshState::new();
        m.insert_service(svc("echo", "10.96.0.1"));
        let (w, p) = wl("a", "10.0.0.1", &[("ns/echo", 80, 8080)]);
        m.insert_workload(w, p);
        m.insert_service(svc("echo", "10.96.0.2"));
        let old = NetworkAddress::new("", "10.96.0.1".parse().unwrap());
        let new = NetworkAddress::new("", "10.96.0.2".parse().unwrap());
        assert!(m.service_by_vip(&old, "ns").is_none());
        assert_eq!(m.service_by_vip(&new, "ns").unwrap().endpoints.len(), 1);
    }

    #[test]
    fn removed_service_returns_its_endpoints_to_staging() {
        let mut m = MeshState::new();
        m.insert_service(svc("echo", "10.96.0.1"));
        let (w, p) = wl("a", "10.0.0.1", &[("ns/echo", 80, 8080)]);
        m.insert_workload(w, p);
        let key = NamespacedHostname::new("ns", "echo");
        m.remove_service(&key);
        assert!(m.service(&key).is_none());
        m.insert_service(svc("echo", "10.96.0.1"));
        assert_eq!(m.service(&key).unwrap().endpoints.len(), 1);
    }

    #[test]
    fn workload_removal_cleans_every_index() {
        let mut m = MeshState::new();
        m.insert_service(svc("echo", "10.96.0.1"));
        let (mut w, p) = wl("a", "10.0.0.1", &[("ns/echo", 80, 8080)]);
        w.hostname = "a.example".into();
        m.insert_workload(w, p);
        m.remove_workload("a");
        let addr = NetworkAddress::new("", "10.0.0.1".parse().unwrap());
        assert!(m.workload_by_address(&addr).is_none());
        assert!(
            m.workload_by_hostname(&NamespacedHostname::new("ns", "a.example"))
                .is_none()
        );
        assert!(
            m.service(&NamespacedHostname::new("ns", "echo"))
                .unwrap()
                .endpoints
                .is_empty()
        );
        assert_eq!(m.workload_count(), 0);
    }

    #[test]
    fn workload_update_replaces_old_addresses() {
        let mut m = MeshState::new();
        let (w, p) = wl("a", "10.0.0.1", &[]);
        m.insert_workload(w, p);
        let (w, p) = wl("a", "10.0.0.2", &[]);
        m.insert_workload(w, p);
        let old = NetworkAddress::new("", "10.0.0.1".parse().unwrap());
        let new = NetworkAddress::new("", "10.0.0.2".parse().unwrap());
        assert!(m.workload_by_address(&old).is_none());
        assert_eq!(&*m.workload_by_address(&new).unwrap().uid, "a");
    }

    #[test]
    fn pod_uid_wins_a_shared_address() {
        let mut m = MeshState::new();
        let (w, p) = wl(
            "cluster//networking.istio.io/WorkloadEntry/ns/x",
            "10.0.0.1",
            &[],
        );
        m.insert_workload(w, p);
        let (w, p) = wl("cluster//Pod/ns/y", "10.0.0.1", &[]);
        m.insert_workload(w, p);
        let addr = NetworkAddress::new("", "10.0.0.1".parse().unwrap());
        assert_eq!(
            &*m.workload_by_address(&addr).unwrap().uid,
            "cluster//Pod/ns/y"
        );
    }

    #[test]
    fn host_network_workloads_are_not_indexed_by_address() {
        let mut m = MeshState::new();
        let (mut w, p) = wl("a", "10.0.0.1", &[]);
        w.network_mode = NetworkMode::HostNetwork;
        m.insert_workload(w, p);
        let addr = NetworkAddress::new("", "10.0.0.1".parse().unwrap());
        assert!(m.workload_by_address(&addr).is_none());
        assert!(m.workload("a").is_some());
    }

    #[test]
    fn vip_tie_prefers_client_namespace_then_canonical() {
        let mut m = MeshState::new();
        let mut other = svc("echo", "10.96.0.1");
        other.namespace = "other".into();
        other.canonical = true;
        m.insert_service(other);
        let mut mine = svc("echo", "10.96.0.1");
        mine.namespace = "mine".into();
        m.insert_service(mine);
        let vip = NetworkAddress::new("", "10.96.0.1".parse().unwrap());
        assert_eq!(&*m.service_by_vip(&vip, "mine").unwrap().namespace, "mine");
        assert_eq!(
            &*m.service_by_vip(&vip, "third").unwrap().namespace,
            "other"
        );
    }

    #[test]
    fn namespace_visible_service_is_hidden_from_other_namespaces() {
        let mut m = MeshState::new();
        let mut s = svc("echo", "10.96.0.1");
        s.visibility = Visibility::Namespace;
        m.insert_service(s);
        let vip = NetworkAddress::new("", "10.96.0.1".parse().unwrap());
        assert!(m.service_by_vip(&vip, "ns").is_some());
        assert!(m.service_by_vip(&vip, "elsewhere").is_none());
        assert!(m.services_by_hostname("echo", "elsewhere").is_none());
    }

    #[test]
    fn cidr_vip_prefers_the_longest_prefix() {
        let mut m = MeshState::new();
        let mut wide = Service::new("ns", "wide", "wide.example");
        wide.cidr_vips = vec![NetworkCidr {
            network: "".into(),
            cidr: "10.0.0.0/8".parse().unwrap(),
        }];
        let mut narrow = Service::new("ns", "narrow", "narrow.example");
        narrow.cidr_vips = vec![NetworkCidr {
            network: "".into(),
            cidr: "10.1.0.0/16".parse().unwrap(),
        }];
        m.insert_service(wide);
        m.insert_service(narrow);
        let a = NetworkAddress::new("", "10.1.2.3".parse().unwrap());
        assert_eq!(&*m.service_by_vip(&a, "ns").unwrap().name, "narrow");
        let b = NetworkAddress::new("", "10.2.0.1".parse().unwrap());
        assert_eq!(&*m.service_by_vip(&b, "ns").unwrap().name, "wide");
    }
}
