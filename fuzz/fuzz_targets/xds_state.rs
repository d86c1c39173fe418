//! xDS resources into the mesh state: arbitrary sequences of delta pushes
//! (Address and Authorization resources, as raw bytes or as protobufs built
//! from small vocabularies so that names, IPs and services collide often) and
//! removals, applied with `MeshState::apply_addresses` /
//! `apply_authorizations`, exactly as the xDS client applies istiod's pushes.
//!
//! Checked after every push:
//! * nothing panics;
//! * every stored workload is found by its UID, and by each of its addresses
//!   (when not host-network) some workload is found that really has that
//!   address, so no index entry outlives its workload or shadows a live one;
//! * every service is found by its key, by each VIP (from its own namespace)
//!   and by its hostname; every endpoint and staged endpoint belongs to a live
//!   workload that names that service;
//! * every resource a push reports as rejected is absent from the state
//!   unless an earlier push stored it;
//! * routing to any vocabulary address from any stored workload returns
//!   without panicking.
//!
//! At the end every workload, service and policy is removed by name: the
//! stores are empty and no lookup of any vocabulary address, VIP or hostname
//! finds anything.

#![no_main]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use zs_proto::istio::security as pb_sec;
use zs_proto::istio::workload as pb;
use zs_state::xds::ResourceRef;
use zs_state::{
    Destination, MeshState, NamespacedHostname, NetworkAddress, NetworkMode, RouteRequest,
};

const ADDRESS: &str = zs_proto::ADDRESS_TYPE_URL;
const AUTHZ: &str = zs_proto::AUTHORIZATION_TYPE_URL;

const UIDS: &[&str] = &[
    "c//Pod/a/w0",
    "c//Pod/a/w1",
    "c//networking.istio.io/WorkloadEntry/a/e0",
    "c//Pod/b/w2",
    "w4",
];
const NAMESPACES: &[&str] = &["a", "b"];
const HOSTS: &[&str] = &["echo.a.svc", "web.b.svc", "*.wild.example", "x"];
const NETWORKS: &[&str] = &["", "net2"];
const POLICY_NAMES: &[&str] = &["a/allow", "a/deny", "b/p", "global"];

fn ip(u: &mut Unstructured<'_>) -> arbitrary::Result<IpAddr> {
    Ok(match u.int_in_range(0..=3)? {
        0 | 1 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, u.int_in_range(1..=4)?)),
        2 => IpAddr::V4(Ipv4Addr::new(10, 96, 0, u.int_in_range(1..=3)?)),
        _ => IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0,
            0,
            0,
            0,
            0,
            0,
            u.int_in_range(1..=2)?,
        )),
    })
}

fn ip_bytes(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    Ok(match u.int_in_range(0..=9)? {
        // Occasionally a length no IP has.
        0 => u.arbitrary::<Vec<u8>>()?,
        _ => match ip(u)? {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        },
    })
}

fn pick<'a>(u: &mut Unstructured<'_>, from: &[&'a str]) -> arbitrary::Result<&'a str> {
    u.choose(from).copied()
}

fn service_key(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    Ok(format!("{}/{}", pick(u, NAMESPACES)?, pick(u, HOSTS)?))
}

fn workload(u: &mut Unstructured<'_>) -> arbitrary::Result<(String, pb::Workload)> {
    let uid = pick(u, UIDS)?.to_string();
    let mut services = std::collections::HashMap::new();
    for _ in 0..u.int_in_range(0..=2)? {
        let key = if u.ratio(1, 10)? {
            u.arbitrary::<String>()?
        } else {
            service_key(u)?
        };
        let ports = (0..u.int_in_range(0..=2)?)
            .map(|_| {
                Ok(pb::Port {
                    service_port: u.int_in_range(0..=3)? * 80,
                    target_port: u.int_in_range(0..=2)? * 8080,
                    app_protocol: 0,
                })
            })
            .collect::<arbitrary::Result<Vec<_>>>()?;
        services.insert(key, pb::PortList { ports });
    }
    let w = pb::Workload {
        uid: uid.clone(),
        name: uid.rsplit('/').next().unwrap_or_default().to_string(),
        namespace: pick(u, NAMESPACES)?.to_string(),
        addresses: (0..u.int_in_range(0..=2)?)
            .map(|_| ip_bytes(u).map(Into::into))
            .collect::<arbitrary::Result<Vec<_>>>()?,
        hostname: if u.ratio(1, 4)? {
            pick(u, HOSTS)?.to_string()
        } else {
            String::new()
        },
        network: pick(u, NETWORKS)?.to_string(),
        tunnel_protocol: u.int_in_range(0..=2)?,
        trust_domain: "cluster.local".into(),
        service_account: "sa".into(),
        status: u.int_in_range(0..=2)?,
        network_mode: u.int_in_range(0..=2)?,
        services,
        capacity: if u.ratio(1, 8)? {
            Some(u.arbitrary()?)
        } else {
            None
        },
        ..Default::default()
    };
    Ok((uid, w))
}

fn service(u: &mut Unstructured<'_>) -> arbitrary::Result<(String, pb::Service)> {
    let namespace = pick(u, NAMESPACES)?.to_string();
    let hostname = pick(u, HOSTS)?.to_string();
    let addresses = (0..u.int_in_range(0..=2)?)
        .map(|_| {
            let address = ip_bytes(u)?;
            Ok(pb::NetworkAddress {
                network: pick(u, NETWORKS)?.to_string(),
                length: if u.ratio(1, 6)? {
                    Some(u.int_in_range(0..=130)?)
                } else {
                    None
                },
                address,
            })
        })
        .collect::<arbitrary::Result<Vec<_>>>()?;
    let s = pb::Service {
        name: hostname.split('.').next().unwrap_or_default().to_string(),
        namespace: namespace.clone(),
        hostname: hostname.clone(),
        addresses,
        ports: (0..u.int_in_range(0..=2)?)
            .map(|_| {
                Ok(pb::Port {
                    service_port: u.int_in_range(0..=3)? * 80,
                    target_port: u.int_in_range(0..=2)? * 8080,
                    app_protocol: 0,
                })
            })
            .collect::<arbitrary::Result<Vec<_>>>()?,
        canonical: u.arbitrary()?,
        visibility: u.int_in_range(0..=2)?,
        ..Default::default()
    };
    // Usually named as istiod names it; sometimes not.
    let name = if u.ratio(1, 8)? {
        pick(u, UIDS)?.to_string()
    } else {
        format!("{namespace}/{hostname}")
    };
    Ok((name, s))
}

fn policy(u: &mut Unstructured<'_>) -> arbitrary::Result<(String, Vec<u8>)> {
    let name = pick(u, POLICY_NAMES)?.to_string();
    let (namespace, short) = name.split_once('/').unwrap_or(("", &name));
    let p = pb_sec::Authorization {
        name: short.to_string(),
        namespace: namespace.to_string(),
        scope: u.int_in_range(0..=3)?,
        action: u.int_in_range(0..=2)?,
        dry_run: u.ratio(1, 8)?,
        ..Default::default()
    };
    Ok((name, p.encode_to_vec()))
}

/// One resource: (name, type URL, body).
type Raw = (String, String, Vec<u8>);

fn body_mutation(u: &mut Unstructured<'_>, mut body: Vec<u8>) -> arbitrary::Result<Vec<u8>> {
    match u.int_in_range(0..=15)? {
        0 if !body.is_empty() => {
            let at = u.choose_index(body.len())?;
            body.truncate(at);
        }
        1 if !body.is_empty() => {
            let at = u.choose_index(body.len())?;
            body[at] ^= u.arbitrary::<u8>()? | 1;
        }
        _ => {}
    }
    Ok(body)
}

fn address_resource(u: &mut Unstructured<'_>) -> arbitrary::Result<Raw> {
    let (name, body) = match u.int_in_range(0..=9)? {
        0 => (pick(u, UIDS)?.to_string(), u.arbitrary::<Vec<u8>>()?),
        1 => (
            pick(u, UIDS)?.to_string(),
            pb::Address { r#type: None }.encode_to_vec(),
        ),
        2..=5 => {
            let (name, w) = workload(u)?;
            (
                name,
                pb::Address {
                    r#type: Some(pb::address::Type::Workload(w)),
                }
                .encode_to_vec(),
            )
        }
        _ => {
            let (name, s) = service(u)?;
            (
                name,
                pb::Address {
                    r#type: Some(pb::address::Type::Service(s)),
                }
                .encode_to_vec(),
            )
        }
    };
    let type_url = if u.ratio(1, 30)? { AUTHZ } else { ADDRESS };
    Ok((name, type_url.to_string(), body_mutation(u, body)?))
}

fn authz_resource(u: &mut Unstructured<'_>) -> arbitrary::Result<Raw> {
    let (name, body) = if u.ratio(1, 5)? {
        (
            pick(u, POLICY_NAMES)?.to_string(),
            u.arbitrary::<Vec<u8>>()?,
        )
    } else {
        policy(u)?
    };
    let type_url = if u.ratio(1, 30)? { ADDRESS } else { AUTHZ };
    Ok((name, type_url.to_string(), body_mutation(u, body)?))
}

fn removal(u: &mut Unstructured<'_>, vocab: &[&str]) -> arbitrary::Result<String> {
    Ok(match u.int_in_range(0..=5)? {
        0 => u.arbitrary::<String>()?,
        1 => service_key(u)?,
        _ => pick(u, vocab)?.to_string(),
    })
}

fn refs(raw: &[Raw]) -> Vec<ResourceRef<'_>> {
    raw.iter()
        .map(|(name, type_url, value)| ResourceRef {
            name,
            type_url,
            value,
        })
        .collect()
}

/// Every index agrees with the primary stores.
fn check_consistent(m: &MeshState) {
    let mut workload_count = 0;
    for w in m.workloads() {
        workload_count += 1;
        let by_uid = m
            .workload(&w.uid)
            .expect("a stored workload is found by UID");
        assert!(std::sync::Arc::ptr_eq(by_uid, w));
        if w.network_mode != NetworkMode::HostNetwork {
            for ip in &w.workload_ips {
                let addr = NetworkAddress::new(w.network.clone(), *ip);
                let found = m
                    .workload_by_address(&addr)
                    .expect("a workload's address finds a workload");
                assert!(found.workload_ips.contains(ip) && found.network == w.network);
                assert!(m.workload(&found.uid).is_some());
            }
        }
        if !w.hostname.is_empty() {
            let key = NamespacedHostname::new(w.namespace.clone(), w.hostname.clone());
            let found = m.workload_by_hostname(&key).expect("found by hostname");
            assert_eq!(found.hostname, w.hostname);
        }
    }
    assert_eq!(workload_count, m.workload_count());

    let mut service_count = 0;
    for s in m.services() {
        service_count += 1;
        let key = s.key();
        assert!(m.service(&key).is_some());
        for vip in &s.vips {
            let found = m
                .service_by_vip(vip, &s.namespace)
                .expect("a service's VIP finds a service from its own namespace");
            assert!(found.vips.contains(vip) || !found.cidr_vips.is_empty());
        }
        assert!(m.has_hostname(&s.hostname));
        let found = m
            .services_by_hostname(&s.hostname, &s.namespace)
            .expect("found by hostname from its own namespace");
        assert_eq!(found.hostname, s.hostname);
        for uid in s.endpoints.keys() {
            let w = m.workload(uid).expect("an endpoint's workload exists");
            assert!(
                w.services.contains(&key),
                "endpoint of a service its workload does not name"
            );
        }
    }
    assert_eq!(service_count, m.service_count());

    for (key, endpoints) in m.staged_services() {
        assert!(
            m.service(key).is_none(),
            "staged endpoints of a present service"
        );
        assert!(!endpoints.is_empty(), "empty staging entry kept");
        for uid in endpoints.keys() {
            let w = m
                .workload(uid)
                .expect("a staged endpoint's workload exists");
            assert!(w.services.contains(key));
        }
    }
}

fn vocabulary_addresses() -> Vec<NetworkAddress> {
    let mut out = Vec::new();
    for network in NETWORKS {
        for d in 1..=4 {
            out.push(NetworkAddress::new(
                *network,
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, d)),
            ));
        }
        for d in 1..=3 {
            out.push(NetworkAddress::new(
                *network,
                IpAddr::V4(Ipv4Addr::new(10, 96, 0, d)),
            ));
        }
        for d in 1..=2 {
            out.push(NetworkAddress::new(
                *network,
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, d)),
            ));
        }
    }
    out
}

/// Routing from every stored workload to every vocabulary address must not panic.
fn exercise_routes(m: &MeshState, u: &mut Unstructured<'_>) {
    let mut rng = rand_from(u);
    let sources: Vec<_> = m.workloads().take(2).cloned().collect();
    for source in &sources {
        for addr in vocabulary_addresses().iter().take(6) {
            let destination = Destination::Addr(SocketAddr::new(addr.address, 80));
            let _ = m.route(
                RouteRequest {
                    source,
                    destination: &destination,
                    exclude: &[],
                },
                &mut rng,
            );
        }
        for host in HOSTS {
            for ns in NAMESPACES {
                let destination = Destination::Service {
                    key: NamespacedHostname::new(*ns, *host),
                    port: 80,
                };
                let _ = m.route(
                    RouteRequest {
                        source,
                        destination: &destination,
                        exclude: &[],
                    },
                    &mut rng,
                );
            }
        }
    }
}

fn rand_from(u: &mut Unstructured<'_>) -> rand::rngs::SmallRng {
    use rand::SeedableRng;
    rand::rngs::SmallRng::seed_from_u64(u.arbitrary().unwrap_or(0))
}

/// Everything stored, comparable.
type Fingerprint = (
    BTreeMap<String, zs_state::Workload>,
    BTreeMap<String, zs_state::Service>,
    Vec<String>,
);

fn fingerprint(m: &MeshState) -> Fingerprint {
    (
        m.workloads()
            .map(|w| (w.uid.to_string(), (**w).clone()))
            .collect(),
        m.services()
            .map(|s| (s.key().to_string(), s.clone()))
            .collect(),
        m.policies().iter().map(|(n, _)| n.to_string()).collect(),
    )
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut m = MeshState::new();
    let steps = u.int_in_range(1..=24).unwrap_or(1);
    for _ in 0..steps {
        let addresses = u.ratio(2, 3).unwrap_or(true);
        let count = u.int_in_range(0..=6).unwrap_or(0);
        let mut raw = Vec::new();
        for _ in 0..count {
            let r = if addresses {
                address_resource(&mut u)
            } else {
                authz_resource(&mut u)
            };
            match r {
                Ok(r) => raw.push(r),
                Err(_) => break,
            }
        }
        let removed: Vec<String> = (0..u.int_in_range(0..=3).unwrap_or(0))
            .filter_map(|_| removal(&mut u, if addresses { UIDS } else { POLICY_NAMES }).ok())
            .collect();
        let resources = refs(&raw);
        let before = fingerprint(&m);
        let rejected = if addresses {
            m.apply_addresses(&resources, &removed)
        } else {
            m.apply_authorizations(&resources, &removed).rejected
        };
        for r in &rejected {
            assert!(
                raw.iter().any(|(n, _, _)| *n == r.name),
                "rejected a name not pushed"
            );
            assert!(!r.reason.is_empty());
        }
        // A push whose every resource is rejected, with no removals, changes nothing.
        if !raw.is_empty() && rejected.len() == raw.len() && removed.is_empty() {
            assert!(
                fingerprint(&m) == before,
                "a rejected push changed the state"
            );
        }
        check_consistent(&m);
    }
    exercise_routes(&m, &mut u);

    // Remove everything by name, as istiod would when the mesh empties. A
    // service whose namespace or hostname contains '/' could not be named by a
    // removal, so conversion rejects it: none may be in the state.
    let workloads: Vec<String> = m.workloads().map(|w| w.uid.to_string()).collect();
    let services: Vec<String> = m.services().map(|s| s.key().to_string()).collect();
    let unremovable: Vec<String> = m
        .services()
        .filter(|s| s.namespace.contains('/') || s.hostname.contains('/'))
        .map(|s| s.key().to_string())
        .collect();
    assert!(unremovable.is_empty(), "services with '/' were accepted: {unremovable:?}");
    let policies: Vec<String> = m.policies().iter().map(|(n, _)| n.to_string()).collect();
    let mut all = workloads;
    all.extend(services);
    let rejected = m.apply_addresses(&[], &all);
    assert!(rejected.is_empty());
    let update = m.apply_authorizations(&[], &policies);
    assert!(update.rejected.is_empty());
    assert_eq!(m.workload_count(), 0);
    let left: Vec<String> = m.services().map(|s| s.key().to_string()).collect();
    assert_eq!(
        left.len(),
        unremovable.len(),
        "left {left:?}, unremovable {unremovable:?}"
    );
    assert!(
        m.staged_services().is_empty(),
        "staging left behind: {:?}",
        m.staged_services()
    );
    assert!(m.policies().is_empty());
    if !unremovable.is_empty() {
        return;
    }
    assert_eq!(m.service_count(), 0);
    for addr in vocabulary_addresses() {
        assert!(m.workload_by_address(&addr).is_none());
        for ns in NAMESPACES {
            assert!(m.service_by_vip(&addr, ns).is_none());
        }
    }
    for host in HOSTS {
        assert!(!m.has_hostname(host));
        for ns in NAMESPACES {
            assert!(
                m.workload_by_hostname(&NamespacedHostname::new(*ns, *host))
                    .is_none()
            );
        }
    }
});
