//! Workload certificates from istiod's CA, and keeping them fresh.
//!
//! [`CaClient::fetch`] does one `CreateCertificate`: a fresh P-256 key and CSR
//! for the identity (from `zs-tls`), the requested lifetime (`SECRET_TTL`),
//! the caller's credentials as metadata. The answer is accepted only if its
//! leaf is for the identity asked for: a CA that hands out someone else's
//! identity must not make this proxy present it.
//!
//! [`CertManager`] owns the rotation loop for one identity: fetch, put the
//! certificate in force through a [`CertificateHandle`] (new connections use it,
//! existing ones keep theirs), sleep until half the lifetime has passed, fetch
//! again. When a fetch fails it retries with jittered exponential backoff while
//! the previous certificate, if still valid, keeps serving; the next attempt is
//! never later than that certificate's expiry.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tonic::transport::Channel;
use zs_identity::Identity;
use zs_proto::istio::v1::auth::IstioCertificateRequest;
use zs_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
use zs_tls::{CertificateHandle, TlsError, WorkloadCertificate};

use crate::auth::{AuthError, CallCredentials};
use crate::backoff::Backoff;
use crate::channel::describe_status;

/// Default requested certificate lifetime (`SECRET_TTL`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long one `CreateCertificate` may take (connect included) before it is
/// abandoned and retried: a hung CA must not stall rotation forever.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a certificate could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CSR could not be generated.
    #[error("cannot create a CSR for {identity}: {source}")]
    Csr {
        /// The identity requested.
        identity: Identity,
        /// zs-tls' error.
        #[source]
        source: TlsError,
    },
    /// The call metadata could not be produced.
    #[error("cannot authenticate the certificate request for {identity}: {source}")]
    Credentials {
        /// The identity requested.
        identity: Identity,
        /// Why.
        #[source]
        source: AuthError,
    },
    /// The CA refused or could not be reached.
    #[error("CreateCertificate for {identity} failed: {detail}{}", hint(.status.code()))]
    Rpc {
        /// The identity requested.
        identity: Identity,
        /// The gRPC status.
        status: tonic::Status,
        /// The most useful description (the connection error when there is one).
        detail: String,
    },
    /// The CA's answer is not a usable certificate chain.
    #[error("the CA's answer for {identity} is not usable: {source}")]
    InvalidResponse {
        /// The identity requested.
        identity: Identity,
        /// Why the chain was refused.
        #[source]
        source: TlsError,
    },
    /// The CA issued a certificate for a different identity.
    #[error(
        "the CA issued a certificate for {}, not for the requested {requested}",
        issued.as_ref().map(|i| i.to_string()).unwrap_or_else(|| "no SPIFFE identity".to_string())
    )]
    WrongIdentity {
        /// The identity requested.
        requested: Identity,
        /// The identity in the leaf, if any.
        issued: Option<Identity>,
    },
    /// The CA issued a certificate that is already expired.
    #[error("the CA issued an already expired certificate for {identity}")]
    Expired {
        /// The identity requested.
        identity: Identity,
    },
}

fn hint(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            " (istiod rejected the caller's credentials: check AUTH_TOKEN, CLUSTER_ID, or the IAM role's ServiceAccount mapping)"
        }
        _ => "",
    }
}

/// A client of istiod's `IstioCertificateService`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CaClient {
    client: IstioCertificateServiceClient<Channel>,
    credentials: CallCredentials,
    ttl: Duration,
}

impl CaClient {
    /// A client over `channel` (see [`crate::channel::connect`]) requesting
    /// certificates valid for `ttl`.
    pub fn new(channel: Channel, credentials: CallCredentials, ttl: Duration) -> Self {
        CaClient {
            client: IstioCertificateServiceClient::new(channel),
            credentials,
            ttl,
        }
    }

    /// Requests a certificate for `identity`.
    pub async fn fetch(&self, identity: &Identity) -> Result<WorkloadCertificate, CaError> {
        let (csr, key_pem) = zs_tls::generate_csr(identity).map_err(|source| CaError::Csr {
            identity: identity.clone(),
            source,
        })?;
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr,
            validity_duration: i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX),
            // Only a node proxy acting for other pods sends ImpersonatedIdentity;
            // a sidecar asks for its own identity.
            metadata: None,
        });
        self.credentials
            .apply(&mut request)
            .await
            .map_err(|source| CaError::Credentials {
                identity: identity.clone(),
                source,
            })?;
        let mut client = self.client.clone();
        let call = client.create_certificate(request);
        let response = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(result) => result,
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "no answer from the CA within {CALL_TIMEOUT:?}"
            ))),
        }
        .map_err(|status| CaError::Rpc {
            identity: identity.clone(),
            detail: describe_status(&status),
            status,
        })?
        .into_inner();
        let cert = WorkloadCertificate::from_ca_response(&response.cert_chain, &key_pem).map_err(
            |source| CaError::InvalidResponse {
                identity: identity.clone(),
                source,
            },
        )?;
        if cert.identity() != Some(identity) {
            return Err(CaError::WrongIdentity {
                requested: identity.clone(),
                issued: cert.identity().cloned(),
            });
        }
        if cert.is_expired(SystemTime::now()) {
            return Err(CaError::Expired {
                identity: identity.clone(),
            });
        }
        Ok(cert)
    }
}

/// The certificate state of an identity, as the config dump shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertState {
    /// No certificate has been obtained yet and no attempt has failed.
    Initializing,
    /// A valid certificate is in force (possibly an old one while renewal fails).
    Available,
    /// No valid certificate is in force; the last error.
    Unavailable(String),
}

impl fmt::Display for CertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertState::Initializing => f.write_str("Initializing"),
            CertState::Available => f.write_str("Available"),
            CertState::Unavailable(e) => write!(f, "Unavailable: {e}"),
        }
    }
}

/// Keeps the certificate of one identity fresh. Dropping it stops rotation
/// (the handle keeps the last certificate).
#[derive(Debug)]
pub struct CertManager {
    identity: Identity,
    handle: CertificateHandle,
    state: watch::Receiver<CertState>,
    last_error: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CertManager {
    /// Starts rotating the certificate of `identity` into `handle` (on the
    /// current Tokio runtime). If `handle` already holds a valid certificate
    /// for `identity`, the first fetch waits until its refresh time.
    pub fn start(ca: CaClient, identity: Identity, handle: CertificateHandle) -> CertManager {
        Self::start_with_backoff(ca, identity, handle, Backoff::certificate())
    }

    /// [`CertManager::start`] with a chosen retry backoff.
    pub fn start_with_backoff(
        ca: CaClient,
        identity: Identity,
        handle: CertificateHandle,
        backoff: Backoff,
    ) -> CertManager {
        let (state_tx, state) = watch::channel(CertState::Initializing);
        let last_error = Arc::new(Mutex::new(None));
        let rotation = Rotation {
            ca,
            identity: identity.clone(),
            handle: handle.clone(),
            state: state_tx,
            last_error: last_error.clone(),
            backoff,
        };
        let task = tokio::spawn(rotation.run());
        CertManager {
            identity,
            handle,
            state,
            last_error,
            task,
        }
    }

    /// The identity managed.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The handle certificates are put into.
    pub fn handle(&self) -> &CertificateHandle {
        &self.handle
    }

    /// The current state.
    pub fn state(&self) -> CertState {
        self.state.borrow().clone()
    }

    /// A receiver that sees state changes.
    pub fn watch_state(&self) -> watch::Receiver<CertState> {
        self.state.clone()
    }

    /// The last fetch error, kept while an older certificate still serves.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    /// Expiry of the certificate in force (for a metric).
    pub fn expiry(&self) -> Option<SystemTime> {
        self.handle.current().map(|c| c.not_after())
    }
}

impl Drop for CertManager {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Rotation {
    ca: CaClient,
    identity: Identity,
    handle: CertificateHandle,
    state: watch::Sender<CertState>,
    last_error: Arc<Mutex<Option<String>>>,
    backoff: Backoff,
}

impl Rotation {
    async fn run(mut self) {
        if let Some(cert) = self.valid_current(SystemTime::now()) {
            self.state.send_replace(CertState::Available);
            sleep_until(cert.refresh_at()).await;
        }
        loop {
            match self.ca.fetch(&self.identity).await {
                Ok(cert) => {
                    self.backoff.reset();
                    let refresh_at = refresh_time(&cert, SystemTime::now());
                    tracing::info!(
                        identity = %self.identity,
                        expires = %humanize(cert.not_after()),
                        refresh = %humanize(refresh_at),
                        "workload certificate issued"
                    );
                    self.handle.set(cert);
                    self.set_last_error(None);
                    self.state.send_replace(CertState::Available);
                    sleep_until(refresh_at).await;
                }
                Err(err) => {
                    let now = SystemTime::now();
                    let mut delay = self.backoff.next_delay();
                    let message = err.to_string();
                    match self.valid_current(now) {
                        Some(cert) => {
                            let until_expiry =
                                cert.not_after().duration_since(now).unwrap_or_default();
                            delay = delay.min(until_expiry);
                            tracing::warn!(
                                identity = %self.identity,
                                error = %message,
                                retry_in = ?delay,
                                "renewing the workload certificate failed; the current one stays in use until it expires"
                            );
                            self.state.send_replace(CertState::Available);
                        }
                        None => {
                            tracing::warn!(
                                identity = %self.identity,
                                error = %message,
                                retry_in = ?delay,
                                "fetching the workload certificate failed"
                            );
                            self.state
                                .send_replace(CertState::Unavailable(message.clone()));
                        }
                    }
                    self.set_last_error(Some(message));
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// The certificate in force, if it is this identity's and not expired.
    fn valid_current(&self, now: SystemTime) -> Option<Arc<WorkloadCertificate>> {
        self.handle
            .current()
            .filter(|c| c.identity() == Some(&self.identity) && !c.is_expired(now))
    }

    fn set_last_error(&self, error: Option<String>) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = error;
        }
    }
}

/// When to renew `cert`: half-way through its lifetime, as ztunnel does. CAs
/// backdate `notBefore` (for clock skew), which for short lifetimes can put the
/// half-way point in the past at issuance; then half of the remaining lifetime
/// is used instead, so a fresh certificate is never renewed at once.
fn refresh_time(cert: &WorkloadCertificate, now: SystemTime) -> SystemTime {
    let half_life = cert.refresh_at();
    if half_life > now {
        return half_life;
    }
    now + cert.not_after().duration_since(now).unwrap_or_default() / 2
}

async fn sleep_until(at: SystemTime) {
    let delay = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    tokio::time::sleep(delay).await;
}

fn humanize(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{t:?}"))
}
