//! AWS IAM authentication to istiod for sidecars on ECS (bootstrap platform `ecs`).
//!
//! The task proves its IAM role without handing its credentials to istiod: it
//! signs (SigV4) an STS `GetCallerIdentity` request but does not send it.
//! Instead the signed headers travel to istiod as gRPC metadata
//! `authorization: AWS <base64(JSON)>`; istiod replays the request to STS and
//! learns the caller's role from the answer. A signature is valid for 15
//! minutes and the task's credentials rotate, so every call is signed anew.
//!
//! Two parts:
//! * [`EcsCredentialsProvider`] reads the task role's credentials from the ECS
//!   container credentials endpoint and caches them until shortly before they
//!   expire;
//! * [`StsPresigner`] turns credentials into the metadata value.
//!
//! [`AwsIamAuth`] combines both for [`crate::auth`].

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

pub use crate::http1::HttpError;

/// Base of `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` on ECS.
pub const ECS_CREDENTIALS_BASE: &str = "http://169.254.170.2";

/// The STS request body that is signed (and replayed by istiod).
pub const GET_CALLER_IDENTITY_BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";

/// Content type of the STS request.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// How long before their expiry cached credentials are refreshed. ECS rotates
/// task credentials well ahead of expiry, so this only needs to cover clock
/// skew and a slow fetch.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How long credentials without an `Expiration` are reused before fetching again.
const UNDATED_CREDENTIALS_TTL: Duration = Duration::from_secs(15 * 60);

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of AWS IAM authentication.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// Neither `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` nor `..._FULL_URI` is set.
    #[error(
        "no AWS container credentials endpoint: set AWS_CONTAINER_CREDENTIALS_RELATIVE_URI \
         (ECS sets it when the task has a task role) or AWS_CONTAINER_CREDENTIALS_FULL_URI"
    )]
    NoCredentialsEndpoint,
    /// The credentials endpoint URI is not usable.
    #[error(
        "AWS container credentials URI {uri:?} is not allowed: {reason} \
         (only plain http to the ECS endpoint or loopback is supported)"
    )]
    InvalidCredentialsUri {
        /// The URI as configured.
        uri: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The authorization token for the credentials endpoint is not a valid header value.
    #[error("AWS_CONTAINER_AUTHORIZATION_TOKEN is not a valid HTTP header value")]
    InvalidAuthorizationToken,
    /// The credentials endpoint could not be reached.
    #[error("fetching AWS credentials from {uri}: {source}")]
    Fetch {
        /// The endpoint.
        uri: String,
        /// The HTTP failure.
        #[source]
        source: HttpError,
    },
    /// The credentials endpoint answered with an error status.
    #[error("AWS credentials endpoint {uri} answered {status}: {body}")]
    FetchStatus {
        /// The endpoint.
        uri: String,
        /// The HTTP status.
        status: http::StatusCode,
        /// The start of the response body, for diagnosis.
        body: String,
    },
    /// The credentials document is not what ECS serves.
    #[error("AWS credentials from {uri} are malformed: {reason}")]
    MalformedCredentials {
        /// The endpoint.
        uri: String,
        /// What is wrong with the document.
        reason: String,
    },
    /// SigV4 signing failed (bad region or credentials shape).
    #[error("signing the STS GetCallerIdentity request failed: {0}")]
    Sign(String),
}

/// Task-role credentials. `Debug` does not print the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `AccessKeyId`.
    pub access_key_id: String,
    /// `SecretAccessKey`.
    pub secret_access_key: String,
    /// `Token` (always present for role credentials).
    pub session_token: Option<String>,
    /// `Expiration`, when the endpoint gave one.
    pub expiration: Option<SystemTime>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// Where to fetch credentials from, and with which `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialsEndpoint {
    uri: http::Uri,
    authorization: Option<http::HeaderValue>,
}

impl fmt::Debug for CredentialsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialsEndpoint")
            .field("uri", &self.uri)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl CredentialsEndpoint {
    /// Resolves the endpoint from the values of
    /// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, `AWS_CONTAINER_CREDENTIALS_FULL_URI`
    /// and `AWS_CONTAINER_AUTHORIZATION_TOKEN`, as the AWS SDKs do: the
    /// relative URI wins and is appended to `base` ([`ECS_CREDENTIALS_BASE`]
    /// outside tests); the token is sent only with the full URI.
    pub fn from_settings(
        base: &str,
        relative_uri: Option<&str>,
        full_uri: Option<&str>,
        authorization_token: Option<&str>,
    ) -> Result<Self, AwsError> {
        fn non_empty(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|s| !s.is_empty())
        }
        if let Some(relative) = non_empty(relative_uri) {
            let joined = format!("{}{}", base.trim_end_matches('/'), relative);
            let uri = parse_http_uri(&joined)?;
            return Ok(CredentialsEndpoint {
                uri,
                authorization: None,
            });
        }
        if let Some(full) = non_empty(full_uri) {
            let uri = parse_http_uri(full)?;
            let host = uri.host().unwrap_or_default();
            if !is_allowed_full_uri_host(host) {
                return Err(AwsError::InvalidCredentialsUri {
                    uri: full.to_string(),
                    reason: "host must be loopback or the ECS/EKS credentials address",
                });
            }
            let authorization = match non_empty(authorization_token) {
                Some(t) => Some(
                    http::HeaderValue::from_str(t)
                        .map_err(|_| AwsError::InvalidAuthorizationToken)?,
                ),
                None => None,
            };
            return Ok(CredentialsEndpoint { uri, authorization });
        }
        Err(AwsError::NoCredentialsEndpoint)
    }

    /// The URI credentials are fetched from.
    pub fn uri(&self) -> &http::Uri {
        &self.uri
    }

    /// Fetches credentials once (no caching).
    pub async fn fetch(&self) -> Result<Credentials, AwsError> {
        let uri_string = self.uri.to_string();
        let mut builder =
            http::Request::get(self.uri.clone()).header(http::header::ACCEPT, "application/json");
        if let Some(auth) = &self.authorization {
            builder = builder.header(http::header::AUTHORIZATION, auth.clone());
        }
        let request =
            builder
                .body(Full::new(Bytes::new()))
                .map_err(|e| AwsError::MalformedCredentials {
                    uri: uri_string.clone(),
                    reason: e.to_string(),
                })?;
        let response = crate::http1::send(request, FETCH_TIMEOUT)
            .await
            .map_err(|source| AwsError::Fetch {
                uri: uri_string.clone(),
                source,
            })?;
        if !response.status.is_success() {
            let body = String::from_utf8_lossy(&response.body[..response.body.len().min(256)])
                .into_owned();
            return Err(AwsError::FetchStatus {
                uri: uri_string,
                status: response.status,
                body,
            });
        }
        parse_credentials(&response.body).map_err(|reason| AwsError::MalformedCredentials {
            uri: uri_string,
            reason,
        })
    }
}

fn parse_http_uri(s: &str) -> Result<http::Uri, AwsError> {
    let uri: http::Uri = s.parse().map_err(|_| AwsError::InvalidCredentialsUri {
        uri: s.to_string(),
        reason: "not a valid URI",
    })?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(AwsError::InvalidCredentialsUri {
            uri: s.to_string(),
            reason: "must be an absolute http:// URI",
        });
    }
    Ok(uri)
}

/// Plain HTTP carries the credentials in clear text, so (like the AWS SDKs)
/// only addresses that never leave the host or the task are accepted.
fn is_allowed_full_uri_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => true,
        Ok(ip) => ["169.254.170.2", "169.254.170.23", "fd00:ec2::23"]
            .iter()
            .any(|allowed| allowed.parse::<IpAddr>().ok() == Some(ip)),
        Err(_) => false,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CredentialsDocument {
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
}

fn parse_credentials(body: &[u8]) -> Result<Credentials, String> {
    let doc: CredentialsDocument = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if doc.access_key_id.is_empty() || doc.secret_access_key.is_empty() {
        return Err("AccessKeyId or SecretAccessKey is empty".into());
    }
    let expiration = match doc.expiration.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => {
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|e| format!("Expiration {s:?} is not RFC 3339: {e}"))?;
            Some(SystemTime::from(t))
        }
        None => None,
    };
    Ok(Credentials {
        access_key_id: doc.access_key_id,
        secret_access_key: doc.secret_access_key,
        session_token: doc.token.filter(|t| !t.is_empty()),
        expiration,
    })
}

/// Fetches credentials from the ECS endpoint and caches them until
/// `refresh_margin` before their expiry. Concurrent callers share one fetch.
#[derive(Debug)]
pub struct EcsCredentialsProvider {
    endpoint: CredentialsEndpoint,
    refresh_margin: Duration,
    cache: Mutex<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    credentials: Credentials,
    refresh_at: SystemTime,
}

impl EcsCredentialsProvider {
    /// A provider for `endpoint` that refreshes [`DEFAULT_REFRESH_MARGIN`] early.
    pub fn new(endpoint: CredentialsEndpoint) -> Self {
        Self::with_refresh_margin(endpoint, DEFAULT_REFRESH_MARGIN)
    }

    /// A provider that refreshes `refresh_margin` before expiry.
    pub fn with_refresh_margin(endpoint: CredentialsEndpoint, refresh_margin: Duration) -> Self {
        EcsCredentialsProvider {
            endpoint,
            refresh_margin,
            cache: Mutex::new(None),
        }
    }

    /// The endpoint credentials come from.
    pub fn endpoint(&self) -> &CredentialsEndpoint {
        &self.endpoint
    }

    /// Current credentials: cached ones while fresh, else fetched. If a refresh
    /// fails while the cached credentials have not yet expired, those are
    /// returned (with a warning) so that a short endpoint hiccup does not break
    /// calls to istiod.
    pub async fn credentials(&self) -> Result<Credentials, AwsError> {
        let mut cache = self.cache.lock().await;
        let now = SystemTime::now();
        if let Some(cached) = cache.as_ref()
            && now < cached.refresh_at
        {
            return Ok(cached.credentials.clone());
        }
        match self.endpoint.fetch().await {
            Ok(credentials) => {
                let refresh_at = match credentials.expiration {
                    Some(exp) => exp
                        .checked_sub(self.refresh_margin)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                    None => now + UNDATED_CREDENTIALS_TTL,
                };
                *cache = Some(Cached {
                    credentials: credentials.clone(),
                    refresh_at,
                });
                Ok(credentials)
            }
            Err(err) => match cache.as_ref() {
                Some(cached) if cached.credentials.expiration.is_some_and(|exp| now < exp) => {
                    tracing::warn!(error = %err, "refreshing AWS credentials failed; using the cached ones until they expire");
                    Ok(cached.credentials.clone())
                }
                _ => Err(err),
            },
        }
    }
}

/// Presigns STS `GetCallerIdentity` for a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsPresigner {
    region: String,
    host: String,
}

/// The JSON carried (base64-encoded) after `AWS ` in the authorization metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresignedRequest {
    /// The headers of the signed request, by canonical name.
    pub headers: std::collections::BTreeMap<String, String>,
    /// Always empty for this flow; kept because istiod's decoder expects it.
    pub token: String,
    /// The STS host the request is meant for, `sts.<region>.amazonaws.com`.
    pub host: String,
}

impl StsPresigner {
    /// A presigner for the regional STS endpoint of `region` (e.g. `us-east-2`).
    pub fn new(region: impl Into<String>) -> Self {
        let region = region.into();
        let host = format!("sts.{region}.amazonaws.com");
        StsPresigner { region, host }
    }

    /// The STS host requests are signed for.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Signs the request at time `now` and returns the structured form.
    pub fn presign_request(
        &self,
        credentials: &Credentials,
        now: SystemTime,
    ) -> Result<PresignedRequest, AwsError> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};

        let identity: aws_smithy_runtime_api::client::identity::Identity =
            aws_credential_types::Credentials::new(
                credentials.access_key_id.clone(),
                credentials.secret_access_key.clone(),
                credentials.session_token.clone(),
                credentials.expiration,
                "ecs-container-credentials",
            )
            .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("sts")
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| AwsError::Sign(e.to_string()))?
            .into();
        let uri = format!("https://{}/", self.host);
        let request = SignableRequest::new(
            "POST",
            uri.as_str(),
            std::iter::once(("content-type", FORM_CONTENT_TYPE)),
            SignableBody::Bytes(GET_CALLER_IDENTITY_BODY.as_bytes()),
        )
        .map_err(|e| AwsError::Sign(e.to_string()))?;
        let (instructions, _signature) = sign(request, &params)
            .map_err(|e| AwsError::Sign(e.to_string()))?
            .into_parts();

        let mut headers = std::collections::BTreeMap::new();
        headers.insert("Content-Type".to_string(), FORM_CONTENT_TYPE.to_string());
        headers.insert("Host".to_string(), self.host.clone());
        for (name, value) in instructions.headers() {
            headers.insert(canonical_header_name(name), value.to_string());
        }
        Ok(PresignedRequest {
            headers,
            token: String::new(),
            host: self.host.clone(),
        })
    }

    /// Signs the request at time `now` and returns the metadata value
    /// `AWS <base64(JSON)>`.
    pub fn presign(&self, credentials: &Credentials, now: SystemTime) -> Result<String, AwsError> {
        let request = self.presign_request(credentials, now)?;
        // Serializing a map of strings cannot fail.
        let json = serde_json::to_vec(&request).map_err(|e| AwsError::Sign(e.to_string()))?;
        Ok(format!("AWS {}", STANDARD.encode(json)))
    }
}

/// `x-amz-date` → `X-Amz-Date`: the form Go's `http.Header` uses, so that
/// istiod finds the headers whichever way it reads the map.
fn canonical_header_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if upper {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        upper = c == '-';
    }
    out
}

/// Credentials from the ECS endpoint plus the presigner: one metadata value per call.
#[derive(Debug, Clone)]
pub struct AwsIamAuth {
    provider: Arc<EcsCredentialsProvider>,
    presigner: StsPresigner,
}

impl AwsIamAuth {
    /// Combines a credentials provider and a presigner.
    pub fn new(provider: Arc<EcsCredentialsProvider>, presigner: StsPresigner) -> Self {
        AwsIamAuth {
            provider,
            presigner,
        }
    }

    /// A fresh `AWS <base64(JSON)>` value, signed now.
    pub async fn authorization(&self) -> Result<String, AwsError> {
        let credentials = self.provider.credentials().await?;
        self.presigner.presign(&credentials, SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_uri_is_appended_to_the_ecs_base() {
        let ep = CredentialsEndpoint::from_settings(
            ECS_CREDENTIALS_BASE,
            Some("/v2/credentials/abc"),
            Some("http://127.0.0.1:9/ignored"),
            Some("tok"),
        )
        .unwrap();
        assert_eq!(
            ep.uri().to_string(),
            "http://169.254.170.2/v2/credentials/abc"
        );
        assert!(ep.authorization.is_none());
    }

    #[test]
    fn full_uri_carries_the_authorization_token() {
        let ep = CredentialsEndpoint::from_settings(
            ECS_CREDENTIALS_BASE,
            None,
            Some("http://127.0.0.1:51679/creds"),
            Some("secret-token"),
        )
        .unwrap();
        assert_eq!(ep.uri().to_string(), "http://127.0.0.1:51679/creds");
        assert_eq!(ep.authorization.unwrap(), "secret-token");
    }

    #[test]
    fn full_uri_to_a_remote_host_is_refused() {
        let err = CredentialsEndpoint::from_settings(
            ECS_CREDENTIALS_BASE,
            None,
            Some("http://203.0.113.7/creds"),
            None,
        )
        .unwrap_err();
        assert!(
            matches!(err, AwsError::InvalidCredentialsUri { .. }),
            "{err}"
        );
    }

    #[test]
    fn https_full_uri_is_refused() {
        let err = CredentialsEndpoint::from_settings(
            ECS_CREDENTIALS_BASE,
            None,
            Some("https://localhost/creds"),
            None,
        )
        .unwrap_err();
        assert!(
            matches!(err, AwsError::InvalidCredentialsUri { .. }),
            "{err}"
        );
    }

    #[test]
    fn missing_endpoint_is_an_error() {
        let err = CredentialsEndpoint::from_settings(ECS_CREDENTIALS_BASE, None, Some(""), None)
            .unwrap_err();
        assert!(matches!(err, AwsError::NoCredentialsEndpoint));
    }

    #[test]
    fn parses_the_ecs_credentials_document() {
        let creds = parse_credentials(
            br#"{"RoleArn":"arn:aws:iam::123456789012:role/echo","AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"wJalr","Token":"IQoJb3","Expiration":"2030-01-02T03:04:05Z"}"#,
        )
        .unwrap();
        assert_eq!(creds.access_key_id, "ASIAEXAMPLE");
        assert_eq!(creds.secret_access_key, "wJalr");
        assert_eq!(creds.session_token.as_deref(), Some("IQoJb3"));
        assert_eq!(
            creds.expiration.unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_553_445)
        );
    }

    #[test]
    fn credentials_without_keys_are_rejected() {
        assert!(parse_credentials(br#"{"AccessKeyId":"","SecretAccessKey":"x"}"#).is_err());
        assert!(parse_credentials(br#"{"Token":"x"}"#).is_err());
        assert!(parse_credentials(b"not json").is_err());
        assert!(
            parse_credentials(br#"{"AccessKeyId":"a","SecretAccessKey":"b","Expiration":"soon"}"#)
                .is_err()
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let creds = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("session-secret".into()),
            expiration: None,
        };
        let printed = format!("{creds:?}");
        assert!(printed.contains("AKID"));
        assert!(!printed.contains("very-secret"));
        assert!(!printed.contains("session-secret"));
    }

    #[test]
    fn presigned_request_has_the_sts_shape() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: Some("session-token".into()),
            expiration: None,
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000); // 2023-11-14T22:13:20Z
        let req = StsPresigner::new("us-east-2")
            .presign_request(&creds, now)
            .unwrap();
        assert_eq!(req.host, "sts.us-east-2.amazonaws.com");
        assert_eq!(req.token, "");
        assert_eq!(req.headers["Host"], "sts.us-east-2.amazonaws.com");
        assert_eq!(req.headers["Content-Type"], FORM_CONTENT_TYPE);
        assert_eq!(req.headers["X-Amz-Date"], "20231114T221320Z");
        assert_eq!(req.headers["X-Amz-Security-Token"], "session-token");
        let auth = &req.headers["Authorization"];
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-2/sts/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
            ),
            "{auth}"
        );
    }

    #[test]
    fn metadata_value_is_aws_prefixed_base64_json() {
        let creds = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "secret".into(),
            session_token: None,
            expiration: None,
        };
        let value = StsPresigner::new("eu-west-1")
            .presign(&creds, SystemTime::now())
            .unwrap();
        let b64 = value.strip_prefix("AWS ").unwrap();
        let decoded: serde_json::Value =
            serde_json::from_slice(&STANDARD.decode(b64).unwrap()).unwrap();
        assert_eq!(decoded["host"], "sts.eu-west-1.amazonaws.com");
        assert_eq!(decoded["token"], "");
        assert!(decoded["headers"]["Authorization"].is_string());
        assert!(decoded["headers"].get("X-Amz-Security-Token").is_none());
    }

    #[test]
    fn header_names_are_go_canonical() {
        assert_eq!(
            canonical_header_name("x-amz-security-token"),
            "X-Amz-Security-Token"
        );
        assert_eq!(canonical_header_name("authorization"), "Authorization");
    }
}
