//! `istio.v1.auth.IstioCertificateService/CreateCertificate`: signs a
//! workload's CSR with the local CA, as istiod's CA does.
//!
//! The checks follow istiod: the caller must be authenticated (when
//! authentication is on), the CSR must name exactly one SPIFFE identity in the
//! server's trust domain, and, when the caller's credentials carry a service
//! account, the CSR must ask for that service account and no other. The
//! lifetime is the requested `validity_duration`, capped at
//! `--secret-ttl-max`. The response is `[leaf, intermediates…, root bundle]`.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use tracing::{info, warn};
use zs_proto::istio::v1::auth::istio_certificate_service_server::IstioCertificateService;
use zs_proto::istio::v1::auth::{IstioCertificateRequest, IstioCertificateResponse};
use zs_tls::ca::csr_identity;

use crate::server::{Core, PAUSED, PeerInfo};

/// The CA service.
#[derive(Clone)]
pub struct CaService {
    core: Arc<Core>,
}

impl CaService {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        CaService { core }
    }

    fn refuse(&self, peer: &str, status: Status) -> Status {
        warn!(%peer, code = ?status.code(), "CreateCertificate refused: {}", status.message());
        self.core.status.refused(status.message());
        status
    }
}

/// The lifetime to issue: the request's, within `(0, max]`; `max` when the
/// request asks for nothing sensible.
pub fn lifetime(requested_secs: i64, max: Duration) -> Duration {
    match u64::try_from(requested_secs) {
        Ok(secs) if secs > 0 => Duration::from_secs(secs).min(max),
        _ => max,
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let core = &self.core;
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .map(|p| p.addr.to_string())
            .unwrap_or_default();
        if core.is_paused() {
            return Err(Status::unavailable(PAUSED));
        }
        let caller = core
            .auth
            .authenticate(request.metadata())
            .await
            .map_err(|e| self.refuse(&peer, e.to_status()))?;
        let headers = crate::status::custom_headers(request.metadata());
        let request = request.into_inner();
        let identity = csr_identity(&request.csr)
            .map_err(|e| self.refuse(&peer, Status::invalid_argument(format!("bad CSR: {e}"))))?;
        if identity.trust_domain() != core.trust_domain {
            return Err(self.refuse(
                &peer,
                Status::permission_denied(format!(
                    "the CSR asks for {identity}, outside this CA's trust domain {:?}",
                    core.trust_domain
                )),
            ));
        }
        if let Some(account) = caller.account()
            && (identity.namespace() != account.namespace
                || identity.service_account() != account.name)
        {
            return Err(self.refuse(
                &peer,
                Status::permission_denied(format!(
                    "the CSR asks for {identity}, but the caller is authenticated as {account}"
                )),
            ));
        }
        let ttl = lifetime(request.validity_duration, core.secret_ttl_max);
        let cert_chain = if core.test.expired_certs {
            core.pki.sign_expired(&request.csr, &identity)
        } else {
            core.pki
                .authority()
                .sign_csr(&request.csr, ttl)
                .map(|issued| issued.ca_response())
                .map_err(|e| crate::pki::PkiError::Issue {
                    what: "a workload certificate",
                    reason: e.to_string(),
                })
        }
        .map_err(|e| self.refuse(&peer, Status::internal(e.to_string())))?;
        core.status.issued(&identity.to_string(), headers);
        info!(%peer, %identity, %caller, ttl = ?ttl, expired = core.test.expired_certs, "issued a workload certificate");
        Ok(Response::new(IstioCertificateResponse { cert_chain }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_honours_the_request_below_the_cap() {
        let max = Duration::from_secs(86400);
        assert_eq!(lifetime(4, max), Duration::from_secs(4));
        assert_eq!(lifetime(86400 * 7, max), max);
        assert_eq!(lifetime(0, max), max);
        assert_eq!(lifetime(-5, max), max);
    }
}
