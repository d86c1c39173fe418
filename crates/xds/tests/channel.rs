//! The TLS channel to istiod: server-name rules for east-west gateways, SNI,
//! root sources, and the errors a user sees.

mod common;

use std::time::Duration;

use common::*;
use zs_identity::Identity;
use zs_xds::auth::CallCredentials;
use zs_xds::ca::{CaClient, CaError};
use zs_xds::channel::{self, ChannelConfig, ChannelError, Purpose, RootSource};
use zs_xds::testing::pki::TestPki;

fn identity() -> Identity {
    "spiffe://cluster.local/ns/ecs-demo/sa/echo"
        .parse()
        .unwrap()
}

/// One real gRPC call (CreateCertificate) over a channel built from `config`.
async fn call(config: &ChannelConfig) -> Result<(), CaError> {
    let channel = channel::connect(config).unwrap();
    let ca = CaClient::new(channel, CallCredentials::none(), Duration::from_secs(3600));
    ca.fetch(&identity()).await.map(drop)
}

fn channel_error(err: &CaError) -> &ChannelError {
    match err {
        CaError::Rpc { status, .. } => channel::find_channel_error(status)
            .unwrap_or_else(|| panic!("no channel error in {status:?}")),
        other => panic!("expected an RPC error, got {other}"),
    }
}

#[tokio::test]
async fn certificate_for_istiods_service_name_is_refused_by_ip_url() {
    let istiod = Istiod::start_with_names(&[ISTIOD_SVC]).await;
    let err = call(&istiod.channel_config(Purpose::Xds))
        .await
        .unwrap_err();
    match channel_error(&err) {
        ChannelError::NameMismatch {
            accepted,
            presented,
            ..
        } => {
            assert_eq!(accepted, &["127.0.0.1"]);
            assert_eq!(presented, &["istiod.istio-system.svc"]);
        }
        other => panic!("expected a name mismatch, got {other}"),
    }
    let message = err.to_string();
    assert!(message.contains("set ALT_XDS_HOSTNAME"), "{message}");
    assert!(message.contains("istiod's service names"), "{message}");
}

#[tokio::test]
async fn istiod_service_names_are_accepted_and_sent_as_sni() {
    let istiod = Istiod::start_with_names(&[ISTIOD_SVC]).await;
    let mut config = istiod.channel_config(Purpose::Xds);
    config.istiod_server_name = Some(ISTIOD_SVC.into());
    call(&config).await.unwrap();
    assert_eq!(
        istiod.server.server_names_seen(),
        [Some(ISTIOD_SVC.to_string())]
    );
}

#[tokio::test]
async fn a_revisioned_istiod_name_is_accepted_and_sent_as_sni() {
    let name = "istiod-1-24.istio-system.svc";
    let istiod = Istiod::start_with_names(&[name]).await;
    let mut config = istiod.channel_config(Purpose::Xds);
    config.istiod_server_name = Some(name.into());
    call(&config).await.unwrap();
    assert_eq!(istiod.server.server_names_seen(), [Some(name.to_string())]);
}

#[tokio::test]
async fn longer_service_name_in_the_certificate_is_accepted() {
    let istiod = Istiod::start_with_names(&["istiod.istio-system.svc.cluster.local"]).await;
    let mut config = istiod.channel_config(Purpose::Ca);
    config.istiod_server_name = Some(ISTIOD_SVC.into());
    call(&config).await.unwrap();
}

#[tokio::test]
async fn alternate_hostname_is_accepted_without_changing_sni() {
    let istiod = Istiod::start_with_names(&["istiod.mesh.example"]).await;
    let mut config = istiod.channel_config(Purpose::Ca);
    config.alt_hostname = Some("istiod.mesh.example".into());
    call(&config).await.unwrap();
    // The URL host is an IP address, and TLS sends no SNI for IP addresses.
    assert_eq!(istiod.server.server_names_seen(), [None]);
}

#[tokio::test]
async fn dns_url_host_is_sent_as_sni() {
    let istiod = Istiod::start_with_names(&["localhost"]).await;
    let mut config = istiod.channel_config(Purpose::Xds);
    config.address = format!("localhost:{}", istiod.addr().port());
    call(&config).await.unwrap();
    assert_eq!(
        istiod.server.server_names_seen(),
        [Some("localhost".to_string())]
    );
}

#[tokio::test]
async fn wrong_root_is_reported_as_untrusted_with_the_variable_to_fix() {
    let istiod = Istiod::start().await;
    let other = TestPki::new("some other root");
    let config = ChannelConfig::new(
        istiod.url(),
        RootSource::InlinePem(other.root_pem().to_string()),
        Purpose::Ca,
    );
    let err = call(&config).await.unwrap_err();
    assert!(
        matches!(
            channel_error(&err),
            ChannelError::UntrustedCertificate {
                var: "CA_ROOT_CA",
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("does not verify against CA_ROOT_CA (inline PEM)"),
        "{message}"
    );
    assert!(message.contains("UnknownIssuer"), "{message}");
}

#[tokio::test]
async fn root_file_is_reread_when_reconnecting() {
    let istiod = Istiod::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("root-cert.pem");
    std::fs::write(&path, TestPki::new("stale root").root_pem()).unwrap();
    let config = ChannelConfig::new(istiod.url(), RootSource::File(path.clone()), Purpose::Xds);
    let channel = channel::connect(&config).unwrap();
    let ca = CaClient::new(channel, CallCredentials::none(), Duration::from_secs(3600));

    let err = ca.fetch(&identity()).await.unwrap_err();
    assert!(
        matches!(
            channel_error(&err),
            ChannelError::UntrustedCertificate { .. }
        ),
        "{err}"
    );

    std::fs::write(&path, istiod.pki.root_pem()).unwrap();
    // The same channel dials again and reads the new root.
    let mut result = ca.fetch(&identity()).await;
    for _ in 0..5 {
        if result.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        result = ca.fetch(&identity()).await;
    }
    result.unwrap();
}

#[tokio::test]
async fn missing_root_file_names_the_file() {
    let istiod = Istiod::start().await;
    let config = ChannelConfig::new(
        istiod.url(),
        RootSource::parse("./var/run/secrets/istio/root-cert.pem"),
        Purpose::Xds,
    );
    let err = channel::check(&config).await.unwrap_err();
    assert!(
        matches!(
            err,
            ChannelError::Roots {
                var: "XDS_ROOT_CA",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("file ./var/run/secrets/istio/root-cert.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn pem_without_certificates_is_refused() {
    let istiod = Istiod::start().await;
    let config = ChannelConfig::new(
        istiod.url(),
        RootSource::InlinePem("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into()),
        Purpose::Xds,
    );
    let err = channel::check(&config).await.unwrap_err();
    assert!(matches!(err, ChannelError::Roots { .. }), "{err}");
}

#[tokio::test]
async fn check_succeeds_against_a_matching_certificate() {
    let istiod = Istiod::start().await;
    channel::check(&istiod.channel_config(Purpose::Xds))
        .await
        .unwrap();
}

#[tokio::test]
async fn check_reports_a_name_mismatch() {
    let istiod = Istiod::start_with_names(&[ISTIOD_SVC]).await;
    let mut config = istiod.channel_config(Purpose::Ca);
    config.alt_hostname = Some("istiod.elsewhere".into());
    let err = channel::check(&config).await.unwrap_err();
    match &err {
        ChannelError::NameMismatch {
            accepted, alt_var, ..
        } => {
            assert_eq!(accepted, &["127.0.0.1", "istiod.elsewhere"]);
            assert_eq!(*alt_var, "ALT_CA_HOSTNAME");
        }
        other => panic!("expected a name mismatch, got {other}"),
    }
}

#[tokio::test]
async fn refused_connection_names_the_address() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let pki = TestPki::new("root");
    let config = ChannelConfig::new(
        addr.to_string(),
        RootSource::InlinePem(pki.root_pem().to_string()),
        Purpose::Xds,
    );
    let err = channel::check(&config).await.unwrap_err();
    assert!(matches!(err, ChannelError::Connect { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot connect to istiod at https://{addr}")),
        "{err}"
    );
}
