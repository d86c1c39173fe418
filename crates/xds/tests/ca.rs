//! CA client and certificate rotation against a CA over real gRPC and TLS.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use zs_identity::Identity;
use zs_tls::CertificateHandle;
use zs_xds::auth::{BearerToken, CallCredentials, TokenSource};
use zs_xds::backoff::Backoff;
use zs_xds::ca::{CaClient, CaError, CertManager, CertState};
use zs_xds::channel::{self, ChannelConfig, Purpose, RootSource};
use zs_xds::testing::ca::CaBehavior;
use zs_xds::testing::pki::TestPki;

fn identity() -> Identity {
    "spiffe://cluster.local/ns/ecs-demo/sa/echo"
        .parse()
        .unwrap()
}

fn ca_client(istiod: &Istiod, credentials: CallCredentials, ttl: Duration) -> CaClient {
    let channel = channel::connect(&istiod.channel_config(Purpose::Ca)).unwrap();
    CaClient::new(channel, credentials, ttl)
}

/// Retries quickly so failure tests do not wait for the production backoff.
fn fast_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_millis(200), 0.2)
}

#[tokio::test]
async fn fetch_returns_a_certificate_for_the_requested_identity() {
    let istiod = Istiod::start().await;
    let credentials = CallCredentials::new(
        Some(TokenSource::Bearer(BearerToken::Literal("jwt-1".into()))),
        "Kubernetes",
        [("X-Extra", "ca-header")],
    )
    .unwrap();
    let ca = ca_client(&istiod, credentials, Duration::from_secs(3600));

    let cert = ca.fetch(&identity()).await.unwrap();
    assert_eq!(cert.identity(), Some(&identity()));
    assert!(!cert.is_expired(SystemTime::now()));
    let lifetime = cert.not_after().duration_since(SystemTime::now()).unwrap();
    assert!(lifetime <= Duration::from_secs(3600) && lifetime > Duration::from_secs(3500));
    assert_eq!(cert.roots_der().len(), 1);

    let calls = istiod.ca.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].validity_duration, 3600);
    assert_eq!(calls[0].csr_identity, Some(identity()));
    assert!(
        !calls[0].has_metadata,
        "no ImpersonatedIdentity in dedicated mode"
    );
    let md = &calls[0].metadata;
    assert_eq!(md.get("authorization").unwrap(), "Bearer jwt-1");
    assert_eq!(md.get("clusterid").unwrap(), "Kubernetes");
    assert_eq!(md.get("x-extra").unwrap(), "ca-header");
}

#[tokio::test]
async fn certificate_for_another_identity_is_rejected() {
    let istiod = Istiod::start().await;
    let other: Identity = "spiffe://cluster.local/ns/kube-system/sa/admin"
        .parse()
        .unwrap();
    istiod.ca.set_behavior(CaBehavior::IssueFor(other.clone()));
    let ca = ca_client(&istiod, CallCredentials::none(), Duration::from_secs(3600));

    let err = ca.fetch(&identity()).await.unwrap_err();
    match &err {
        CaError::WrongIdentity { requested, issued } => {
            assert_eq!(requested, &identity());
            assert_eq!(issued.as_ref(), Some(&other));
        }
        other => panic!("expected WrongIdentity, got {other}"),
    }
    assert_eq!(
        err.to_string(),
        "the CA issued a certificate for spiffe://cluster.local/ns/kube-system/sa/admin, \
         not for the requested spiffe://cluster.local/ns/ecs-demo/sa/echo"
    );
}

#[tokio::test]
async fn refused_credentials_are_reported_with_a_hint() {
    let istiod = Istiod::start().await;
    istiod.ca.set_behavior(CaBehavior::Fail(
        tonic::Code::Unauthenticated,
        "authentication failure".into(),
    ));
    let ca = ca_client(&istiod, CallCredentials::none(), Duration::from_secs(3600));
    let err = ca.fetch(&identity()).await.unwrap_err();
    assert!(matches!(err, CaError::Rpc { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("authentication failure"), "{message}");
    assert!(message.contains("check AUTH_TOKEN"), "{message}");
}

#[tokio::test]
async fn wrong_ca_root_gives_a_clear_error() {
    let istiod = Istiod::start().await;
    let config = ChannelConfig::new(
        istiod.url(),
        RootSource::InlinePem(TestPki::new("not istiod's root").root_pem().to_string()),
        Purpose::Ca,
    );
    let ca = CaClient::new(
        channel::connect(&config).unwrap(),
        CallCredentials::none(),
        Duration::from_secs(3600),
    );
    let err = ca.fetch(&identity()).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("CreateCertificate for spiffe://cluster.local/ns/ecs-demo/sa/echo failed: istiod's certificate at https://127.0.0.1:"),
        "{message}"
    );
    assert!(
        message.contains("does not verify against CA_ROOT_CA"),
        "{message}"
    );
    assert!(istiod.ca.calls().is_empty());
}

#[tokio::test]
async fn manager_puts_the_first_certificate_in_force() {
    let istiod = Istiod::start().await;
    let handle = CertificateHandle::new_empty();
    let manager = CertManager::start(
        ca_client(&istiod, CallCredentials::none(), Duration::from_secs(3600)),
        identity(),
        handle.clone(),
    );
    assert_eq!(manager.identity(), &identity());
    let cert = within("the first certificate", handle.wait_available()).await;
    assert_eq!(cert.identity(), Some(&identity()));
    eventually("state Available", || {
        manager.state() == CertState::Available
    })
    .await;
    assert_eq!(manager.expiry(), Some(cert.not_after()));
    assert_eq!(manager.state().to_string(), "Available");
}

#[tokio::test]
async fn rotation_replaces_a_short_lived_certificate() {
    let istiod = Istiod::start().await;
    let handle = CertificateHandle::new_empty();
    let mut changes = handle.subscribe();
    let _manager = CertManager::start(
        ca_client(&istiod, CallCredentials::none(), Duration::from_secs(3)),
        identity(),
        handle.clone(),
    );
    let first = within("the first certificate", changes.wait_for(|c| c.is_some()))
        .await
        .unwrap()
        .clone()
        .unwrap();
    let second = within(
        "a rotated certificate",
        changes.wait_for(|c| {
            c.as_ref()
                .is_some_and(|c| c.serial_number() != first.serial_number())
        }),
    )
    .await
    .unwrap()
    .clone()
    .unwrap();
    assert_eq!(second.identity(), Some(&identity()));
    assert!(second.not_after() > first.not_after());
    assert_eq!(istiod.ca.calls().len(), 2);
}

#[tokio::test]
async fn failing_renewal_keeps_the_still_valid_certificate() {
    let istiod = Istiod::start().await;
    let handle = CertificateHandle::new_empty();
    // Lifetime 6 s: renewal starts after about 3 s, the certificate is valid until 6 s.
    let manager = CertManager::start_with_backoff(
        ca_client(&istiod, CallCredentials::none(), Duration::from_secs(6)),
        identity(),
        handle.clone(),
        fast_backoff(),
    );
    let first = within("the first certificate", handle.wait_available()).await;
    istiod.ca.set_behavior(CaBehavior::Fail(
        tonic::Code::Unavailable,
        "CA overloaded".into(),
    ));

    eventually("a failed renewal", || manager.last_error().is_some()).await;
    let current = handle.current().unwrap();
    assert_eq!(current.serial_number(), first.serial_number());
    assert!(!current.is_expired(SystemTime::now()));
    assert_eq!(manager.state(), CertState::Available);
    assert!(manager.last_error().unwrap().contains("CA overloaded"));
    assert!(istiod.ca.calls().len() >= 2);
}

#[tokio::test]
async fn state_turns_unavailable_when_the_certificate_expires_unrenewed() {
    let istiod = Istiod::start().await;
    let handle = CertificateHandle::new_empty();
    let manager = CertManager::start_with_backoff(
        ca_client(&istiod, CallCredentials::none(), Duration::from_secs(2)),
        identity(),
        handle.clone(),
        fast_backoff(),
    );
    let first = within("the first certificate", handle.wait_available()).await;
    istiod.ca.set_behavior(CaBehavior::Fail(
        tonic::Code::Unavailable,
        "CA overloaded".into(),
    ));

    let mut state = manager.watch_state();
    within(
        "state Unavailable",
        state.wait_for(|s| matches!(s, CertState::Unavailable(_))),
    )
    .await
    .unwrap();
    assert!(first.is_expired(SystemTime::now()));
    let shown = manager.state().to_string();
    assert!(
        shown.starts_with(
            "Unavailable: CreateCertificate for spiffe://cluster.local/ns/ecs-demo/sa/echo failed"
        ),
        "{shown}"
    );
    assert!(shown.contains("CA overloaded"), "{shown}");
}

#[tokio::test]
async fn state_is_unavailable_when_the_first_fetch_fails() {
    let istiod = Istiod::start().await;
    istiod.ca.set_behavior(CaBehavior::Fail(
        tonic::Code::PermissionDenied,
        "unknown role".into(),
    ));
    let handle = CertificateHandle::new_empty();
    let manager = CertManager::start_with_backoff(
        ca_client(&istiod, CallCredentials::none(), Duration::from_secs(3600)),
        identity(),
        handle.clone(),
        fast_backoff(),
    );
    assert_eq!(manager.state(), CertState::Initializing);
    let mut state = manager.watch_state();
    within(
        "state Unavailable",
        state.wait_for(|s| matches!(s, CertState::Unavailable(_))),
    )
    .await
    .unwrap();
    assert!(handle.current().is_none());
    assert!(manager.state().to_string().contains("unknown role"));
    assert_eq!(manager.expiry(), None);
}

#[tokio::test]
async fn valid_certificate_already_in_the_handle_is_kept_until_its_refresh_time() {
    let istiod = Istiod::start().await;
    let existing = zs_tls::testing::TestCa::new().issue(&identity());
    let serial = existing.serial_number().to_string();
    let handle = CertificateHandle::new(existing);
    let manager = CertManager::start(
        ca_client(&istiod, CallCredentials::none(), Duration::from_secs(3600)),
        identity(),
        handle.clone(),
    );
    eventually("state Available", || {
        manager.state() == CertState::Available
    })
    .await;
    assert_eq!(handle.current().unwrap().serial_number(), serial);
    assert!(istiod.ca.calls().is_empty());
}
