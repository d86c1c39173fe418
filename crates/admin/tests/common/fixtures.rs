//! A small but complete mesh for config-dump tests.

use std::collections::BTreeMap;
use std::net::IpAddr;

use zs_admin::BuildInfo;
use zs_state::zs_authz::{Action, Policy, Scope};
use zs_state::{
    AppTunnelProtocol, ApplicationTunnel, GatewayAddress, GatewayDestination, HealthStatus,
    InboundProtocol, IpFamily, LoadBalancer, LoadBalancerHealthPolicy, LoadBalancerMode,
    LoadBalancerScope, Locality, MeshState, NamespacedHostname, NetworkAddress, Service,
    SharedMesh, Workload,
};

pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: "0.1.0".into(),
        git_revision: "abc123".into(),
        rust_version: "1.88.0".into(),
        build_profile: "release".into(),
        build_status: "Clean".into(),
        istio_version: "1.28.0".into(),
        crypto_provider: "ring".into(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn workload(uid: &str, ns: &str, name: &str, addr: &str, node: &str) -> Workload {
    let mut w = Workload::new(uid, ns, name, name);
    w.workload_ips = vec![ip(addr)];
    w.node = node.into();
    w
}

fn svc(ns: &str, name: &str, vip: &str) -> Service {
    let mut s = Service::new(ns, name, format!("{name}.{ns}.svc.cluster.local"));
    s.vips = vec![NetworkAddress::new("", ip(vip))];
    s.ports = BTreeMap::from([(80, 8080)]);
    s
}

fn key(ns: &str, name: &str) -> NamespacedHostname {
    NamespacedHostname::new(ns, format!("{name}.{ns}.svc.cluster.local"))
}

fn policy(ns: &str, name: &str, action: Action, scope: Scope) -> Policy {
    Policy {
        name: name.into(),
        namespace: ns.into(),
        scope,
        action,
        rules: vec![],
        dry_run: false,
    }
}

/// A small mesh, inserted deliberately out of order: three services (one a
/// waypoint), four workloads (one behind the waypoint, one unhealthy, one in a
/// service that does not exist yet, so its endpoint is staged) and two policies.
pub fn mesh() -> SharedMesh {
    let mut state = MeshState::new();
    state.insert_service(svc("default", "waypoint", "10.96.0.20"));
    let mut httpbin_svc = svc("default", "httpbin", "10.96.0.10");
    httpbin_svc.load_balancer = Some(LoadBalancer {
        routing_preferences: vec![LoadBalancerScope::Region, LoadBalancerScope::Zone],
        mode: LoadBalancerMode::Failover,
        health_policy: LoadBalancerHealthPolicy::OnlyHealthy,
    });
    httpbin_svc.ip_families = Some(IpFamily::IPv4);
    httpbin_svc.subject_alt_names = vec!["spiffe://cluster.local/ns/default/sa/httpbin".into()];
    state.insert_service(httpbin_svc);
    state.insert_service(svc("bookinfo", "productpage", "10.96.1.10"));

    let mut httpbin = workload(
        "Kubernetes//Pod/default/httpbin-1",
        "default",
        "httpbin-1",
        "10.244.0.8",
        "node-b",
    );
    httpbin.services = vec![key("default", "httpbin")];
    httpbin.waypoint = Some(GatewayAddress {
        destination: GatewayDestination::Address(NetworkAddress::new("", ip("10.96.0.20"))),
        hbone_mtls_port: 15008,
    });
    let mut httpbin_ports = BTreeMap::new();
    httpbin_ports.insert(key("default", "httpbin"), BTreeMap::from([(80, 8080)]));
    state.insert_workload(httpbin, httpbin_ports);

    let mut httpbin2 = workload(
        "Kubernetes//Pod/default/httpbin-2",
        "default",
        "httpbin-2",
        "10.244.0.9",
        "node-a",
    );
    httpbin2.services = vec![key("default", "httpbin")];
    httpbin2.status = HealthStatus::Unhealthy;
    state.insert_workload(httpbin2, Default::default());

    let mut sleep = workload(
        "Kubernetes//Pod/default/sleep-1",
        "default",
        "sleep-1",
        "10.244.0.7",
        "node-a",
    );
    sleep.protocol = InboundProtocol::TCP;
    sleep.services = vec![key("default", "notyet")];
    state.insert_workload(sleep, Default::default());

    let mut product = workload(
        "Kubernetes//Pod/bookinfo/productpage-1",
        "bookinfo",
        "productpage-1",
        "10.244.1.5",
        "node-a",
    );
    product.locality = Locality {
        region: "eu-west-1".into(),
        zone: "eu-west-1a".into(),
        subzone: "".into(),
    };
    product.application_tunnel = Some(ApplicationTunnel {
        protocol: AppTunnelProtocol::PROXY,
        port: Some(15088),
    });
    product.canonical_name = "productpage".into();
    product.cluster_id = "Kubernetes".into();
    state.insert_workload(product, Default::default());

    state.policies_mut().insert(
        "default/deny-sleep",
        policy("default", "deny-sleep", Action::Deny, Scope::Namespace),
    );
    // One policy with every kind of match value, so a type istioctl cannot
    // read (a number where it wants a string, say) shows up.
    // Parsed from text: serde_json's `Value` deserializer cannot produce the
    // empty tuple variant behind `{"Presence": []}`, its text parser can.
    let allow: Policy = serde_json::from_str(
        &serde_json::json!({
            "name": "allow-all",
            "namespace": "bookinfo",
            "scope": "WorkloadSelector",
            "action": "Allow",
            "rules": [[[{
                "namespaces": [{"Exact": "default"}],
                "notPrincipals": [{"Suffix": "/sa/evil"}],
                "principals": [{"Presence": []}],
                "serviceAccounts": [{"namespace": "default", "serviceAccount": "sleep"}],
                "sourceIps": ["10.0.0.0/8"],
                "destinationPorts": [8080]
            }]]],
            "dryRun": false
        })
        .to_string(),
    )
    .expect("policy fixture");
    state.policies_mut().insert("bookinfo/allow-all", allow);
    SharedMesh::new(state)
}
