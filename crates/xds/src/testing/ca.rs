//! istiod's CA, for tests: signs CSRs with a `zs-tls` certificate authority
//! honouring the requested lifetime, records what each call carried, and can
//! be told to fail or to issue the wrong identity.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::{Request, Response, Status};
use zs_identity::Identity;
use zs_proto::istio::v1::auth::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use zs_proto::istio::v1::auth::{IstioCertificateRequest, IstioCertificateResponse};
use zs_tls::ca::{CertificateAuthority, csr_identity};

/// How the CA answers.
#[derive(Debug, Clone)]
pub enum CaBehavior {
    /// Sign the CSR.
    Sign,
    /// Fail every call with this status.
    Fail(tonic::Code, String),
    /// Sign the CSR's key, but for this identity instead of the CSR's.
    IssueFor(Identity),
}

/// What one call carried.
#[derive(Debug, Clone)]
pub struct CaCall {
    /// gRPC metadata (authorization, clusterid, extra headers).
    pub metadata: tonic::metadata::MetadataMap,
    /// The identity in the CSR, if it parsed.
    pub csr_identity: Option<Identity>,
    /// `validity_duration` as sent.
    pub validity_duration: i64,
    /// Whether the request carried a `metadata` Struct (ImpersonatedIdentity).
    pub has_metadata: bool,
}

/// A CA service; clone it to keep a handle while the server owns another.
#[derive(Clone)]
pub struct TestCaService {
    inner: Arc<Inner>,
}

struct Inner {
    authority: CertificateAuthority,
    cert_pem: String,
    key_pem: String,
    behavior: Mutex<CaBehavior>,
    calls: Mutex<Vec<CaCall>>,
}

impl std::fmt::Debug for TestCaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCaService").finish_non_exhaustive()
    }
}

impl TestCaService {
    /// A CA with a fresh root that signs every CSR.
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate().expect("generate CA key");
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test istiod CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        Self::from_pem(&cert.pem(), &key.serialize_pem()).expect("load generated CA")
    }

    /// A CA issuing with an existing root certificate and its key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, zs_tls::TlsError> {
        let authority = CertificateAuthority::from_pem(cert_pem, key_pem, Vec::new(), cert_pem)?;
        Ok(TestCaService {
            inner: Arc::new(Inner {
                authority,
                cert_pem: cert_pem.to_string(),
                key_pem: key_pem.to_string(),
                behavior: Mutex::new(CaBehavior::Sign),
                calls: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Signs `csr_pem`'s key with `identity` as the only URI SAN.
    fn sign_as(
        &self,
        csr_pem: &str,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<Vec<String>, String> {
        let key = rcgen::KeyPair::from_pem(&self.inner.key_pem).map_err(|e| e.to_string())?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(&self.inner.cert_pem, key)
            .map_err(|e| e.to_string())?;
        let mut csr =
            rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| e.to_string())?;
        let uri = identity
            .to_string()
            .try_into()
            .map_err(|e: rcgen::Error| e.to_string())?;
        csr.params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
        let now = time::OffsetDateTime::now_utc();
        csr.params.not_before = now - Duration::from_secs(60);
        csr.params.not_after = now + ttl;
        let cert = csr.signed_by(&issuer).map_err(|e| e.to_string())?;
        Ok(vec![
            cert.pem(),
            self.inner.authority.roots_pem().to_string(),
        ])
    }

    /// The root bundle workload certificates chain to.
    pub fn roots_pem(&self) -> &str {
        self.inner.authority.roots_pem()
    }

    /// Changes how later calls are answered.
    pub fn set_behavior(&self, behavior: CaBehavior) {
        if let Ok(mut b) = self.inner.behavior.lock() {
            *b = behavior;
        }
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<CaCall> {
        self.inner
            .calls
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// The tonic service to add to a router.
    pub fn into_server(self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self)
    }
}

impl Default for TestCaService {
    fn default() -> Self {
        Self::new()
    }
}

#[tonic::async_trait]
impl IstioCertificateService for TestCaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let metadata = request.metadata().clone();
        let request = request.into_inner();
        let identity = csr_identity(&request.csr).ok();
        if let Ok(mut calls) = self.inner.calls.lock() {
            calls.push(CaCall {
                metadata,
                csr_identity: identity.clone(),
                validity_duration: request.validity_duration,
                has_metadata: request.metadata.is_some(),
            });
        }
        let behavior = self
            .inner
            .behavior
            .lock()
            .map(|b| b.clone())
            .map_err(|_| Status::internal("poisoned"))?;
        let ttl = match u64::try_from(request.validity_duration) {
            Ok(secs) if secs > 0 => Duration::from_secs(secs),
            _ => Duration::from_secs(24 * 3600),
        };
        let cert_chain = match behavior {
            CaBehavior::Fail(code, message) => return Err(Status::new(code, message)),
            CaBehavior::Sign => self
                .inner
                .authority
                .sign_csr(&request.csr, ttl)
                .map_err(|e| Status::invalid_argument(e.to_string()))?
                .ca_response(),
            CaBehavior::IssueFor(other) => self
                .sign_as(&request.csr, &other, ttl)
                .map_err(Status::invalid_argument)?,
        };
        Ok(Response::new(IstioCertificateResponse { cert_chain }))
    }
}
