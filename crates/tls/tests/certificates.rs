//! Parsing workload certificates, CSRs, the issuing CA and the certificate handle.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509CertificationRequest};
use zs_tls::ca::{CertificateAuthority, csr_identity};
use zs_tls::testing::TestCa;
use zs_tls::{CertificateHandle, Identity, TlsError, WorkloadCertificate, generate_csr};

fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

const WORKLOAD: &str = "spiffe://cluster.local/ns/demo/sa/echo";

#[test]
fn ca_response_with_only_a_leaf_is_rejected() {
    let ca = TestCa::new();
    let issued = ca.issue_valid(
        &id(WORKLOAD),
        SystemTime::now(),
        SystemTime::now() + Duration::from_secs(60),
    );
    let err = WorkloadCertificate::from_ca_response(
        std::slice::from_ref(&issued.issued.leaf_pem),
        &issued.key_pem,
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::NoRootCertificate));
    assert_eq!(err.to_string(), "no root certificate present");
}

#[test]
fn empty_ca_response_is_rejected() {
    let err = WorkloadCertificate::from_ca_response(&[], "").unwrap_err();
    assert!(matches!(err, TlsError::EmptyCaResponse));
}

#[test]
fn ca_response_splits_leaf_intermediates_and_root_bundle() {
    let root_a = CertificateAuthority::new_root("a").unwrap();
    let intermediate = root_a.new_intermediate("a-int").unwrap();
    let root_b = CertificateAuthority::new_root("b").unwrap();
    let now = SystemTime::now();
    let (issued, key) = intermediate
        .issue(&id(WORKLOAD), now, now + Duration::from_secs(3600))
        .unwrap();
    let response = vec![
        issued.leaf_pem.clone(),
        intermediate.cert_pem().to_string(),
        format!("{}{}", root_a.roots_pem(), root_b.roots_pem()),
    ];
    let cert = WorkloadCertificate::from_ca_response(&response, &key).unwrap();
    assert_eq!(cert.chain_der().len(), 2);
    assert_eq!(cert.roots_der().len(), 2);
    assert_eq!(cert.identity(), Some(&id(WORKLOAD)));
    assert_eq!(
        cert.chain_der()[1],
        CertificateDer::from_pem_slice(intermediate.cert_pem().as_bytes()).unwrap()
    );
}

#[test]
fn ca_response_key_must_be_pkcs8() {
    let ca = TestCa::new();
    let now = SystemTime::now();
    let issued = ca.issue_valid(&id(WORKLOAD), now, now + Duration::from_secs(60));
    // Same key material, presented as a SEC1 block: rejected by type, before any parsing.
    let sec1 = issued
        .key_pem
        .replace("BEGIN PRIVATE KEY", "BEGIN EC PRIVATE KEY")
        .replace("END PRIVATE KEY", "END EC PRIVATE KEY");
    let err =
        WorkloadCertificate::from_ca_response(&issued.issued.ca_response(), &sec1).unwrap_err();
    assert!(matches!(err, TlsError::KeyNotPkcs8));
}

#[test]
fn ca_response_without_key_is_rejected() {
    let ca = TestCa::new();
    let now = SystemTime::now();
    let issued = ca.issue_valid(&id(WORKLOAD), now, now + Duration::from_secs(60));
    let err = WorkloadCertificate::from_ca_response(&issued.issued.ca_response(), "").unwrap_err();
    assert!(matches!(err, TlsError::NoPrivateKey));
}

#[test]
fn ca_response_with_garbage_certificate_is_rejected() {
    let err = WorkloadCertificate::from_ca_response(
        &["not a pem".to_string(), "neither".to_string()],
        "",
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
}

#[test]
fn key_of_another_certificate_is_rejected() {
    let ca = TestCa::new();
    let now = SystemTime::now();
    let a = ca.issue_valid(&id(WORKLOAD), now, now + Duration::from_secs(60));
    let b = ca.issue_valid(&id(WORKLOAD), now, now + Duration::from_secs(60));
    let err =
        WorkloadCertificate::from_ca_response(&a.issued.ca_response(), &b.key_pem).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch));
}

#[test]
fn identity_is_the_first_parseable_spiffe_uri() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    for uri in [
        "https://example.com/x",
        "spiffe://cluster.local/ns/a/sa/b/extra",
        "spiffe://cluster.local/ns/first/sa/one",
        "spiffe://cluster.local/ns/second/sa/two",
    ] {
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(uri.try_into().unwrap()));
    }
    let cert = params.self_signed(&key).unwrap();
    let wc = WorkloadCertificate::from_pem(
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
        cert.pem().as_bytes(),
    )
    .unwrap();
    assert_eq!(
        wc.identity(),
        Some(&id("spiffe://cluster.local/ns/first/sa/one"))
    );
    assert_eq!(
        zs_tls::identities(cert.der()),
        vec![
            id("spiffe://cluster.local/ns/first/sa/one"),
            id("spiffe://cluster.local/ns/second/sa/two")
        ]
    );
}

#[test]
fn validity_refresh_and_expiry_follow_the_leaf() {
    let ca = TestCa::new();
    let nb = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let na = nb + Duration::from_secs(24 * 3600);
    let cert = ca.issue_valid(&id(WORKLOAD), nb, na).cert;
    assert_eq!(cert.not_before(), nb);
    assert_eq!(cert.not_after(), na);
    assert_eq!(cert.refresh_at(), nb + Duration::from_secs(12 * 3600));
    assert!(!cert.is_expired(na));
    assert!(cert.is_expired(na + Duration::from_secs(1)));
    assert!(!cert.is_expired(nb));
}

#[test]
fn dump_info_has_serials_validity_and_pem() {
    let ca = TestCa::with_intermediate();
    let now = SystemTime::now();
    let issued = ca.issue_valid(
        &id(WORKLOAD),
        now - Duration::from_secs(10),
        now + Duration::from_secs(600),
    );
    let cert = &issued.cert;
    assert_eq!(cert.chain_info().len(), 2);
    assert_eq!(cert.roots_info().len(), 1);
    let leaf = &cert.chain_info()[0];
    assert_eq!(leaf.pem(), issued.issued.leaf_pem.replace("\r\n", "\n"));
    assert_eq!(leaf.not_after(), cert.not_after());
    assert_eq!(
        cert.roots_info()[0].pem(),
        ca.roots_pem().replace("\r\n", "\n")
    );
    // Decimal, as x509 tools and ztunnel print it.
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(leaf.der()).unwrap();
    assert_eq!(
        leaf.serial_number(),
        parsed.tbs_certificate.serial.to_str_radix(10)
    );
    assert!(leaf.serial_number().bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(cert.serial_number(), leaf.serial_number());
}

#[test]
fn istio_cert_dir_round_trips() {
    let ca = TestCa::with_intermediate();
    let dir = tempfile::tempdir().unwrap();
    let written = ca.write_cert_dir(&id(WORKLOAD), dir.path()).unwrap();
    let read = WorkloadCertificate::from_pem(
        &std::fs::read(dir.path().join("cert-chain.pem")).unwrap(),
        &std::fs::read(dir.path().join("key.pem")).unwrap(),
        &std::fs::read(dir.path().join("root-cert.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(read.chain_der(), written.chain_der());
    assert_eq!(read.roots_der(), written.roots_der());
    assert_eq!(read.identity(), Some(&id(WORKLOAD)));
}

#[test]
fn csr_has_empty_subject_one_critical_uri_san_and_p256_key() {
    let (csr_pem, key_pem) = generate_csr(&id(WORKLOAD)).unwrap();
    let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .unwrap();
    let (_, csr) = X509CertificationRequest::from_der(der.as_ref()).unwrap();
    csr.verify_signature().expect("self-signature verifies");

    let info = &csr.certification_request_info;
    assert_eq!(info.subject.iter().count(), 0, "subject must be empty");
    // id-ecPublicKey with namedCurve prime256v1
    assert_eq!(
        info.subject_pki.algorithm.algorithm.to_id_string(),
        "1.2.840.10045.2.1"
    );
    let curve = info
        .subject_pki
        .algorithm
        .parameters
        .as_ref()
        .unwrap()
        .as_oid()
        .unwrap();
    assert_eq!(curve.to_id_string(), "1.2.840.10045.3.1.7");
    // ecdsa-with-SHA256
    assert_eq!(
        csr.signature_algorithm.algorithm.to_id_string(),
        "1.2.840.10045.4.3.2"
    );

    let extensions: Vec<_> = csr.requested_extensions().unwrap().collect();
    assert_eq!(extensions.len(), 1);
    let ParsedExtension::SubjectAlternativeName(san) = extensions[0] else {
        panic!("only extension must be SAN, got {:?}", extensions[0]);
    };
    assert_eq!(san.general_names, vec![GeneralName::URI(WORKLOAD)]);
    let raw_ext = csr
        .certification_request_info
        .attributes()
        .iter()
        .find_map(|a| match a.parsed_attribute() {
            x509_parser::prelude::ParsedCriAttribute::ExtensionRequest(req) => Some(req),
            _ => None,
        })
        .unwrap();
    assert!(raw_ext.extensions[0].critical, "SAN must be critical");

    assert!(
        key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "PKCS#8 key"
    );
}

#[test]
fn csr_signed_by_the_ca_becomes_a_workload_certificate() {
    let ca = TestCa::with_intermediate();
    let (csr_pem, key_pem) = generate_csr(&id(WORKLOAD)).unwrap();
    assert_eq!(csr_identity(&csr_pem).unwrap(), id(WORKLOAD));
    let chain = ca.sign_csr(&csr_pem, Duration::from_secs(3600)).unwrap();
    assert_eq!(chain.len(), 3, "leaf, intermediate, root bundle");
    let cert = WorkloadCertificate::from_ca_response(&chain, &key_pem).unwrap();
    assert_eq!(cert.identity(), Some(&id(WORKLOAD)));
    let ttl = cert.not_after().duration_since(SystemTime::now()).unwrap();
    assert!(ttl <= Duration::from_secs(3600) && ttl > Duration::from_secs(3500));
}

#[test]
fn ca_refuses_csr_without_spiffe_uri() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["example.com".to_string()]).unwrap();
    let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let ca = CertificateAuthority::new_root("r").unwrap();
    let err = ca.sign_csr(&csr_pem, Duration::from_secs(60)).unwrap_err();
    assert!(matches!(err, TlsError::InvalidCsr { .. }), "{err}");
}

#[test]
fn ca_refuses_csr_with_two_identities() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    for uri in [WORKLOAD, "spiffe://cluster.local/ns/demo/sa/other"] {
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(uri.try_into().unwrap()));
    }
    let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let err = csr_identity(&csr_pem).unwrap_err();
    assert_eq!(err.to_string(), "invalid CSR: more than one URI SAN");
}

#[test]
fn ca_refuses_garbage_csr() {
    let err = csr_identity(
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::InvalidCsr { .. }));
}

#[test]
fn ca_loaded_from_pem_issues_like_the_original() {
    let root = CertificateAuthority::new_root("root").unwrap();
    let int = root.new_intermediate("int").unwrap();
    let reloaded = CertificateAuthority::from_pem(
        int.cert_pem(),
        &int.key_pem(),
        int.parents_pem().to_vec(),
        int.roots_pem(),
    )
    .unwrap();
    let (csr_pem, key_pem) = generate_csr(&id(WORKLOAD)).unwrap();
    let issued = reloaded
        .sign_csr(&csr_pem, Duration::from_secs(600))
        .unwrap();
    assert_eq!(issued.intermediates_pem, vec![int.cert_pem().to_string()]);
    assert_eq!(issued.roots_pem, root.roots_pem());
    let cert = WorkloadCertificate::from_ca_response(&issued.ca_response(), &key_pem).unwrap();
    assert_eq!(cert.chain_der().len(), 2);
}

#[tokio::test]
async fn handle_publishes_rotations() {
    let ca = TestCa::new();
    let handle = CertificateHandle::new_empty();
    assert!(handle.current().is_none());
    let mut rx = handle.subscribe();

    let waiter = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.wait_available().await })
    };
    let first = handle.set(ca.issue(&id(WORKLOAD)));
    let got = waiter.await.unwrap();
    assert!(std::sync::Arc::ptr_eq(&got, &first));

    rx.changed().await.unwrap();
    let second = handle.set(ca.issue(&id(WORKLOAD)));
    assert!(std::sync::Arc::ptr_eq(&handle.current().unwrap(), &second));
    assert!(std::sync::Arc::ptr_eq(
        rx.borrow_and_update().as_ref().unwrap(),
        &second
    ));
    assert_ne!(first.serial_number(), second.serial_number());
}
