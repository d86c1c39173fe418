//! Who is calling: istiod's authentication, reduced to what a local control
//! plane needs.
//!
//! * No credentials configured: every call is accepted (an open server, for
//!   demos on one machine).
//! * Bearer tokens (`--token TOKEN[=NS/SA]`): `authorization: Bearer TOKEN`.
//!   A token bound to a service account authenticates as it, as a Kubernetes
//!   ServiceAccount token does; an unbound token authenticates without an
//!   identity and may then ask for any identity of the trust domain.
//! * AWS IAM (`--sts-url`, `--iam-role ARN=NS/SA`): `authorization: AWS …`, a
//!   presigned STS `GetCallerIdentity` that is replayed to the STS endpoint,
//!   as istiod does; the caller's role (path stripped) must be mapped to a
//!   service account.
//!
//! The result is a [`Caller`]; the CA checks a CSR against it.

use std::collections::HashMap;
use std::fmt;

use tonic::metadata::MetadataMap;
use zs_xds::testing::aws::{authenticate, strip_role_path};

/// A Kubernetes-style service account: namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceAccount {
    /// The namespace.
    pub namespace: String,
    /// The service account name.
    pub name: String,
}

impl std::str::FromStr for ServiceAccount {
    type Err = String;

    /// `namespace/name`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() && !sa.contains('/') => {
                Ok(ServiceAccount {
                    namespace: ns.to_string(),
                    name: sa.to_string(),
                })
            }
            _ => Err(format!("{s:?} is not <namespace>/<service account>")),
        }
    }
}

impl fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A caller that passed authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Authentication is off.
    Open,
    /// A bearer token, bound to a service account or not.
    Token(Option<ServiceAccount>),
    /// An IAM role, mapped to a service account.
    Aws {
        /// The IAM role ARN (path stripped).
        role_arn: String,
        /// The service account it maps to.
        account: ServiceAccount,
    },
}

impl Caller {
    /// The service account the caller is, if authentication established one.
    pub fn account(&self) -> Option<&ServiceAccount> {
        match self {
            Caller::Open | Caller::Token(None) => None,
            Caller::Token(Some(a)) | Caller::Aws { account: a, .. } => Some(a),
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Open => f.write_str("anonymous (authentication off)"),
            Caller::Token(None) => f.write_str("token (any identity)"),
            Caller::Token(Some(a)) => write!(f, "token for {a}"),
            Caller::Aws { role_arn, account } => write!(f, "IAM role {role_arn} as {account}"),
        }
    }
}

/// Why a call was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` header (or not ASCII).
    #[error("no authorization header; this server requires a bearer token or AWS IAM credentials")]
    Missing,
    /// A bearer token that is not configured.
    #[error("bearer token not accepted")]
    UnknownToken,
    /// An `AWS …` header, but IAM authentication is not configured.
    #[error("AWS IAM authentication is not enabled on this server (no --sts-url)")]
    AwsDisabled,
    /// The STS replay failed or was refused.
    #[error("AWS IAM authentication failed: {0}")]
    Aws(#[from] zs_xds::testing::aws::AwsAuthError),
    /// A valid IAM role that no service account is mapped to.
    #[error("IAM role {0} is not mapped to a service account (--iam-role)")]
    UnmappedRole(String),
    /// Neither `Bearer` nor `AWS`.
    #[error("unsupported authorization scheme (expected \"Bearer\" or \"AWS\")")]
    Scheme,
}

impl AuthError {
    /// The gRPC status istiod answers with.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            AuthError::UnmappedRole(_) => tonic::Status::permission_denied(self.to_string()),
            _ => tonic::Status::unauthenticated(self.to_string()),
        }
    }
}

/// The configured credentials.
#[derive(Clone, Debug, Default)]
pub struct Authenticator {
    /// SHA-256 of each token → its service account binding. Hashes make the
    /// comparison independent of where a wrong token first differs.
    tokens: HashMap<[u8; 32], Option<ServiceAccount>>,
    sts_url: Option<String>,
    /// Role ARN (path stripped) → service account.
    roles: HashMap<String, ServiceAccount>,
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Authenticator {
    /// Tokens (with optional bindings), the STS endpoint for IAM, and role mappings.
    pub fn new(
        tokens: &[(String, Option<ServiceAccount>)],
        sts_url: Option<String>,
        roles: &[(String, ServiceAccount)],
    ) -> Self {
        Authenticator {
            tokens: tokens.iter().map(|(t, a)| (digest(t), a.clone())).collect(),
            sts_url,
            roles: roles
                .iter()
                .map(|(r, a)| (strip_role_path(r), a.clone()))
                .collect(),
        }
    }

    /// Whether any credential is required.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty() && self.sts_url.is_none()
    }

    /// Authenticates a call from its metadata.
    pub async fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, AuthError> {
        if self.is_open() {
            return Ok(Caller::Open);
        }
        let value = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or(AuthError::Missing)?;
        if let Some(token) = value.strip_prefix("Bearer ") {
            return match self.tokens.get(&digest(token.trim())) {
                Some(account) => Ok(Caller::Token(account.clone())),
                None => Err(AuthError::UnknownToken),
            };
        }
        if value.starts_with("AWS ") {
            let sts = self.sts_url.as_deref().ok_or(AuthError::AwsDisabled)?;
            let caller = authenticate(value, sts).await?;
            let role_arn = strip_role_path(&caller.role_arn);
            return match self.roles.get(&role_arn) {
                Some(account) => Ok(Caller::Aws {
                    role_arn,
                    account: account.clone(),
                }),
                None => Err(AuthError::UnmappedRole(role_arn)),
            };
        }
        Err(AuthError::Scheme)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    fn sa(s: &str) -> ServiceAccount {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn no_credentials_configured_means_open() {
        let a = Authenticator::default();
        assert_eq!(
            a.authenticate(&MetadataMap::new()).await.unwrap(),
            Caller::Open
        );
    }

    #[tokio::test]
    async fn bound_token_authenticates_as_its_service_account() {
        let a = Authenticator::new(
            &[("t1".into(), Some(sa("ns/echo"))), ("admin".into(), None)],
            None,
            &[],
        );
        assert_eq!(
            a.authenticate(&md("Bearer t1")).await.unwrap(),
            Caller::Token(Some(sa("ns/echo")))
        );
        assert_eq!(
            a.authenticate(&md("Bearer admin")).await.unwrap(),
            Caller::Token(None)
        );
    }

    #[tokio::test]
    async fn wrong_missing_or_foreign_credentials_are_unauthenticated() {
        let a = Authenticator::new(&[("t1".into(), None)], None, &[]);
        let cases = [
            (Some("Bearer t2"), "bearer token not accepted"),
            (
                None,
                "no authorization header; this server requires a bearer token or AWS IAM credentials",
            ),
            (
                Some("Basic dXNlcg=="),
                "unsupported authorization scheme (expected \"Bearer\" or \"AWS\")",
            ),
            (
                Some("AWS e30="),
                "AWS IAM authentication is not enabled on this server (no --sts-url)",
            ),
        ];
        for (header, expected) in cases {
            let m = header.map(md).unwrap_or_default();
            let err = a.authenticate(&m).await.unwrap_err();
            assert_eq!(err.to_string(), expected);
            assert_eq!(err.to_status().code(), tonic::Code::Unauthenticated);
        }
    }

    #[test]
    fn service_accounts_parse_strictly() {
        assert_eq!(sa("ns/sa").to_string(), "ns/sa");
        for bad in ["ns", "/sa", "ns/", "a/b/c"] {
            assert!(bad.parse::<ServiceAccount>().is_err(), "{bad}");
        }
    }
}
