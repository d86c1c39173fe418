//! `istioctl ztunnel-config` against our `/config_dump`.
//!
//! The dump is read the way istioctl reads it (`zs_admin::istioctl`: Go's
//! structs mirrored field for field, its table printers redone), so a change of
//! shape that would break istioctl (a renamed key, a number where Go wants a
//! string) breaks these tests.

mod common;

use std::collections::BTreeMap;
use std::time::SystemTime;

use common::fixtures::{build_info, mesh};
use common::{get, start};
use serde_json::Value;
use zs_admin::admin_server::{self, Admin};
use zs_admin::istioctl::{
    ZtunnelDump, policy_summary, prime, secret_summary, service_summary, workload_summary,
};
use zs_admin::{CertInfo, CertState, CertificateDump, ConfigDump};
use zs_identity::Identity;

// ---- the server -----------------------------------------------------------

async fn dump_of(config_dump: ConfigDump) -> ZtunnelDump {
    let admin = Admin::new(config_dump, || {});
    let server = start(|listener, stop| async move {
        admin_server::serve(listener, admin, async {
            let _ = stop.await;
        })
        .await
    })
    .await;
    let answer = get(server.addr, "/config_dump").await;
    assert_eq!(answer.status, 200);
    prime(&answer.body).expect("istioctl reads the dump")
}

fn mesh_dump() -> ConfigDump {
    ConfigDump::new(mesh(), build_info(), Value::Null)
}

#[tokio::test]
async fn workloads_table_matches_istioctl() {
    let dump = dump_of(mesh_dump()).await;
    assert_eq!(
        workload_summary(&dump),
        "\
NAMESPACE POD NAME      ADDRESS    NODE   WAYPOINT PROTOCOL
bookinfo  productpage-1 10.244.1.5 node-a None     HBONE
default   httpbin-1     10.244.0.8 node-b waypoint HBONE
default   httpbin-2     10.244.0.9 node-a None     HBONE
default   sleep-1       10.244.0.7 node-a None     TCP
"
    );
    // Fields istioctl's `-o json` re-marshals come through typed.
    let product = dump
        .workloads
        .iter()
        .find(|w| w.name == "productpage-1")
        .unwrap();
    assert_eq!(product.locality.zone, "eu-west-1a");
    assert_eq!(product.application_tunnel.protocol, "PROXY");
    assert_eq!(product.application_tunnel.port, Some(15088));
    assert_eq!(product.capacity, 1);
    assert_eq!(product.trust_domain, "cluster.local");
    assert_eq!(product.service_account, "productpage-1");
    assert_eq!(product.cluster_id, "Kubernetes");
}

#[tokio::test]
async fn services_table_matches_istioctl() {
    let dump = dump_of(mesh_dump()).await;
    assert_eq!(
        service_summary(&dump),
        "\
NAMESPACE SERVICE NAME SERVICE VIP WAYPOINT ENDPOINTS
bookinfo  productpage  10.96.1.10  None     0/0
default   httpbin      10.96.0.10  None     1/2
default   waypoint     10.96.0.20  None     0/0
"
    );
    let httpbin = dump.services.iter().find(|s| s.name == "httpbin").unwrap();
    assert_eq!(httpbin.ports, BTreeMap::from([("80".to_owned(), 8080)]));
    assert_eq!(httpbin.ip_families, "IPv4");
    assert_eq!(httpbin.load_balancer.as_ref().unwrap().mode, "Failover");
    assert_eq!(
        httpbin.load_balancer.as_ref().unwrap().routing_preferences,
        ["Region", "Zone"]
    );
    let endpoint = &httpbin.endpoints["Kubernetes//Pod/default/httpbin-1"];
    assert_eq!(endpoint.workload_uid, "Kubernetes//Pod/default/httpbin-1");
    assert_eq!(endpoint.port, BTreeMap::from([(80, 8080)]));
}

#[tokio::test]
async fn policies_table_matches_istioctl() {
    let dump = dump_of(mesh_dump()).await;
    assert_eq!(
        policy_summary(&dump),
        "\
NAMESPACE POLICY NAME ACTION SCOPE
bookinfo  allow-all   Allow  WorkloadSelector
default   deny-sleep  Deny   Namespace
"
    );
    let allow = dump
        .policies
        .iter()
        .find(|p| p.name == "allow-all")
        .unwrap();
    let m = allow.rules[0][0][0].as_ref().unwrap();
    assert_eq!(m.namespaces[0].exact, "default");
    assert_eq!(m.not_principals[0].suffix, "/sa/evil");
    assert!(m.principals[0].presence.is_some());
    assert_eq!(m.service_accounts[0].service_account, "sleep");
    assert_eq!(m.source_ips, ["10.0.0.0/8"]);
    assert_eq!(m.destination_ports, [8080]);
}

/// A real CA and leaf from rcgen, described the way the TLS crate does.
fn cert(
    serial: &[u8],
    not_before: (i32, u8, u8),
    not_after: (i32, u8, u8),
) -> (rcgen::CertificateParams, SystemTime, SystemTime) {
    let mut params = rcgen::CertificateParams::default();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
    params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let from = SystemTime::from(params.not_before);
    let until = SystemTime::from(params.not_after);
    (params, from, until)
}

#[tokio::test]
async fn certificates_table_matches_istioctl() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let (mut ca_params, ca_from, ca_until) = cert(&[0x01, 0x00], (2024, 1, 1), (2099, 12, 31));
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let (mut leaf_params, leaf_from, leaf_until) = cert(
        &[0x12, 0x34, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67],
        (2025, 6, 1),
        (2099, 6, 2),
    );
    leaf_params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://cluster.local/ns/default/sa/sleep"
            .try_into()
            .unwrap(),
    )];
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let available: Identity = "spiffe://cluster.local/ns/default/sa/sleep"
        .parse()
        .unwrap();
    let failing: Identity = "spiffe://cluster.local/ns/default/sa/broken"
        .parse()
        .unwrap();
    let certs = vec![
        CertificateDump {
            identity: available,
            state: CertState::Available,
            chain: vec![CertInfo {
                pem: leaf.pem(),
                // 0x1234abcdef01234567 in decimal, as the TLS crate reports it.
                serial_number: "335836746864161670503".into(),
                valid_from: leaf_from,
                expiration_time: leaf_until,
            }],
            roots: vec![CertInfo {
                pem: ca.pem(),
                serial_number: "256".into(),
                valid_from: ca_from,
                expiration_time: ca_until,
            }],
        },
        CertificateDump {
            identity: failing,
            state: CertState::Unavailable("CA unreachable".into()),
            chain: vec![],
            roots: vec![],
        },
    ];
    let config_dump = mesh_dump().with_certificates(move || certs.clone());
    let dump = dump_of(config_dump).await;
    assert_eq!(
        secret_summary(&dump),
        "\
CERTIFICATE NAME                                TYPE     STATUS          VALID CERT     SERIAL NUMBER          NOT AFTER                NOT BEFORE
spiffe://cluster.local/ns/default/sa/broken     NA       Unavailable     false          NA                     NA                       NA
spiffe://cluster.local/ns/default/sa/sleep      Leaf     Available       true           1234abcdef01234567     2099-06-02T00:00:00Z     2025-06-01T00:00:00Z
spiffe://cluster.local/ns/default/sa/sleep      Root     Available       true           100                    2099-12-31T00:00:00Z     2024-01-01T00:00:00Z
"
    );
    // The PEM istioctl's `-o json` shows decodes to the certificate itself.
    use base64::Engine as _;
    let sleep = dump
        .certificates
        .iter()
        .find(|c| c.identity.ends_with("/sleep"))
        .unwrap();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(&sleep.cert_chain[0].pem)
        .unwrap();
    assert_eq!(String::from_utf8(pem).unwrap(), leaf.pem());
}
