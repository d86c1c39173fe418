//! AWS's and istiod's side of IAM authentication, for tests and a local
//! control plane.
//!
//! * [`EcsCredentialsServer`]: the ECS container credentials endpoint.
//! * [`verify_sigv4`]: SigV4 verification written from AWS's specification
//!   with `ring` (HMAC-SHA256, SHA-256), deliberately sharing no code with the
//!   signer, so that a wrong canonical request on the signing side fails.
//! * [`StsStandIn`]: an HTTP server answering `GetCallerIdentity` for known
//!   access keys after verifying the signature, as STS does.
//! * [`authenticate`]: what istiod does with `authorization: AWS <…>`: decode,
//!   replay to STS, read the caller ARN, map the assumed role to the IAM role;
//!   [`verify_presigned_request`] checks the same signature in memory.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::Full;
use ring::{digest, hmac};

use super::http::{HttpServer, Request, Response, plain, respond};
use crate::aws::{Credentials, FORM_CONTENT_TYPE, GET_CALLER_IDENTITY_BODY, PresignedRequest};

/// How far a request's `X-Amz-Date` may be from the verifier's clock (AWS: 15 minutes).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

// ---------------------------------------------------------------------------
// ECS container credentials endpoint

/// The ECS container credentials endpoint: serves a credentials document at
/// one path, optionally only to callers with the right `Authorization`.
#[derive(Debug)]
pub struct EcsCredentialsServer {
    server: HttpServer,
    state: Arc<Mutex<EcsState>>,
}

#[derive(Debug)]
struct EcsState {
    document: String,
    requests: usize,
}

impl EcsCredentialsServer {
    /// Serves `credentials` at `path`; with `required_authorization`, other
    /// callers get 401 like the real endpoint behind `..._FULL_URI`.
    pub async fn start(
        path: &str,
        credentials: &Credentials,
        required_authorization: Option<&str>,
    ) -> io::Result<Self> {
        let state = Arc::new(Mutex::new(EcsState {
            document: credentials_document(credentials),
            requests: 0,
        }));
        let (path, auth, handler_state) = (
            path.to_string(),
            required_authorization.map(str::to_string),
            state.clone(),
        );
        let server = HttpServer::bind(Arc::new(move |req: Request| {
            if req.method() != http::Method::GET || req.uri().path() != path {
                return plain(http::StatusCode::NOT_FOUND, "not found");
            }
            if let Some(expected) = &auth {
                let given = req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                if given != Some(expected.as_str()) {
                    return plain(http::StatusCode::UNAUTHORIZED, "unauthorized");
                }
            }
            let Ok(mut state) = handler_state.lock() else {
                return plain(http::StatusCode::INTERNAL_SERVER_ERROR, "poisoned");
            };
            state.requests += 1;
            respond(
                http::StatusCode::OK,
                "application/json",
                state.document.clone(),
            )
        }))
        .await?;
        Ok(EcsCredentialsServer { server, state })
    }

    /// `http://127.0.0.1:<port>`: the base a relative URI is appended to.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Serves `credentials` from now on (as ECS does when it rotates them).
    pub fn set_credentials(&self, credentials: &Credentials) {
        if let Ok(mut state) = self.state.lock() {
            state.document = credentials_document(credentials);
        }
    }

    /// How many credentials documents were served.
    pub fn requests(&self) -> usize {
        self.state.lock().map(|s| s.requests).unwrap_or_default()
    }
}

/// The JSON document the ECS endpoint serves.
pub fn credentials_document(c: &Credentials) -> String {
    let expiration = c.expiration.map(|t| {
        time::OffsetDateTime::from(t)
            .replace_nanosecond(0)
            .unwrap_or_else(|_| time::OffsetDateTime::from(t))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    });
    serde_json::json!({
        "RoleArn": "arn:aws:iam::000000000000:role/test",
        "AccessKeyId": c.access_key_id,
        "SecretAccessKey": c.secret_access_key,
        "Token": c.session_token,
        "Expiration": expiration,
    })
    .to_string()
}

// ---------------------------------------------------------------------------
// SigV4 verification

/// The parts of an HTTP request that SigV4 covers.
#[derive(Debug, Clone)]
pub struct SignedRequest<'a> {
    /// `POST`, `GET`, …
    pub method: &'a str,
    /// The request path (already URI-encoded as sent).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// Every header as received (any case).
    pub headers: &'a [(String, String)],
    /// The body.
    pub body: &'a [u8],
}

/// A known access key.
#[derive(Debug, Clone)]
pub struct KnownKey {
    /// The secret access key.
    pub secret_access_key: String,
    /// The session token that must accompany it (temporary credentials).
    pub session_token: Option<String>,
}

/// Why a signature was refused (named after AWS's error codes where they exist).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// No `Authorization` header.
    #[error("MissingAuthenticationToken: request has no Authorization header")]
    MissingAuthorization,
    /// The `Authorization` header is not `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
    #[error("IncompleteSignature: {0}")]
    MalformedAuthorization(String),
    /// The access key is not known.
    #[error("InvalidClientTokenId: unknown access key {0}")]
    UnknownAccessKey(String),
    /// The session token is missing or wrong.
    #[error("InvalidClientTokenId: the security token included in the request is invalid")]
    BadSessionToken,
    /// The credential scope names another region, service or date.
    #[error("SignatureDoesNotMatch: credential scope {0} is not valid here")]
    WrongScope(String),
    /// A header listed in `SignedHeaders` is absent, or `host`/`x-amz-date` is unsigned.
    #[error("SignatureDoesNotMatch: header {0} must be present and signed")]
    UnsignedHeader(String),
    /// `X-Amz-Date` is missing or malformed.
    #[error("IncompleteSignature: bad or missing X-Amz-Date")]
    BadDate,
    /// The request time is too far from now.
    #[error("SignatureDoesNotMatch: signature expired or not yet valid (request time {0})")]
    Expired(String),
    /// The recomputed signature differs.
    #[error(
        "SignatureDoesNotMatch: the request signature we calculated does not match the signature you provided"
    )]
    SignatureMismatch,
}

/// Verifies a SigV4 header-signed request for `region` and `service` at time
/// `now`, looking secrets up by access key. Returns the access key id.
pub fn verify_sigv4(
    request: &SignedRequest<'_>,
    keys: impl Fn(&str) -> Option<KnownKey>,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Result<String, SigV4Error> {
    let header = |name: &str| -> Vec<&str> {
        request
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let authorization = header("authorization");
    let authorization = authorization
        .first()
        .ok_or(SigV4Error::MissingAuthorization)?;
    let auth = parse_authorization(authorization)?;

    let key = keys(auth.access_key_id)
        .ok_or_else(|| SigV4Error::UnknownAccessKey(auth.access_key_id.to_string()))?;
    let sent_token = header("x-amz-security-token");
    match (&key.session_token, sent_token.first()) {
        (Some(expected), Some(sent)) if expected == sent => {}
        (None, None) => {}
        _ => return Err(SigV4Error::BadSessionToken),
    }

    let amz_date = header("x-amz-date");
    let amz_date = *amz_date.first().ok_or(SigV4Error::BadDate)?;
    let request_time = parse_amz_date(amz_date).ok_or(SigV4Error::BadDate)?;
    let skew = match now.duration_since(request_time) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if skew > MAX_CLOCK_SKEW {
        return Err(SigV4Error::Expired(amz_date.to_string()));
    }
    if auth.date != &amz_date[..8] || auth.region != region || auth.service != service {
        return Err(SigV4Error::WrongScope(format!(
            "{}/{}/{}/aws4_request",
            auth.date, auth.region, auth.service
        )));
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.contains(&required) {
            return Err(SigV4Error::UnsignedHeader(required.to_string()));
        }
    }

    // Task 1: the canonical request.
    let mut canonical = String::new();
    canonical.push_str(request.method);
    canonical.push('\n');
    canonical.push_str(&canonical_uri(request.path));
    canonical.push('\n');
    canonical.push_str(&canonical_query(request.query));
    canonical.push('\n');
    for name in &auth.signed_headers {
        let values = header(name);
        if values.is_empty() {
            return Err(SigV4Error::UnsignedHeader(name.to_string()));
        }
        let joined: Vec<String> = values.iter().map(|v| collapse_spaces(v)).collect();
        let _ = writeln!(canonical, "{name}:{}", joined.join(","));
    }
    canonical.push('\n');
    canonical.push_str(&auth.signed_headers.join(";"));
    canonical.push('\n');
    canonical.push_str(&hex(digest::digest(&digest::SHA256, request.body).as_ref()));

    // Task 2: the string to sign.
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );

    // Task 3: the signing key, then compare in constant time.
    let k_date = hmac_sha256(
        format!("AWS4{}", key.secret_access_key).as_bytes(),
        auth.date.as_bytes(),
    );
    let k_region = hmac_sha256(k_date.as_ref(), region.as_bytes());
    let k_service = hmac_sha256(k_region.as_ref(), service.as_bytes());
    let k_signing = hmac_sha256(k_service.as_ref(), b"aws4_request");
    let signature = unhex(auth.signature).ok_or(SigV4Error::SignatureMismatch)?;
    hmac::verify(
        &hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref()),
        string_to_sign.as_bytes(),
        &signature,
    )
    .map_err(|_| SigV4Error::SignatureMismatch)?;
    Ok(auth.access_key_id.to_string())
}

struct ParsedAuthorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<ParsedAuthorization<'_>, SigV4Error> {
    let bad = |what: &str| SigV4Error::MalformedAuthorization(what.to_string());
    let rest = value
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| bad("unsupported algorithm"))?
        .trim_start();
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        } else {
            return Err(bad("unexpected component"));
        }
    }
    let credential = credential.ok_or_else(|| bad("no Credential"))?;
    let signed_headers = signed_headers.ok_or_else(|| bad("no SignedHeaders"))?;
    let signature = signature.ok_or_else(|| bad("no Signature"))?;
    let mut scope = credential.split('/');
    let (Some(akid), Some(date), Some(region), Some(service), Some("aws4_request"), None) = (
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
    ) else {
        return Err(bad(
            "Credential is not <key>/<date>/<region>/<service>/aws4_request",
        ));
    };
    if date.len() != 8 {
        return Err(bad("credential date is not YYYYMMDD"));
    }
    let signed_headers: Vec<&str> = signed_headers.split(';').collect();
    let mut sorted = signed_headers.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted != signed_headers
        || signed_headers
            .iter()
            .any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase()))
    {
        return Err(bad("SignedHeaders must be lowercase, sorted and unique"));
    }
    Ok(ParsedAuthorization {
        access_key_id: akid,
        date,
        region,
        service,
        signed_headers,
        signature,
    })
}

/// `20231114T221320Z` → time.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let t = time::PrimitiveDateTime::parse(s, format).ok()?;
    Some(SystemTime::from(t.assume_utc()))
}

/// Each path segment URI-encoded again (non-S3 services encode twice).
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    path.split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/")
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k)),
                uri_encode(&percent_decode(v)),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn collapse_spaces(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

// ---------------------------------------------------------------------------
// STS stand-in

/// An identity STS knows: its key and the ARN `GetCallerIdentity` reports.
#[derive(Debug, Clone)]
pub struct StsCaller {
    /// The key material.
    pub key: KnownKey,
    /// The caller ARN, e.g. `arn:aws:sts::123456789012:assumed-role/echo/abc`.
    pub arn: String,
}

/// An STS stand-in answering `GetCallerIdentity` (JSON) for known access keys
/// after verifying the SigV4 signature.
#[derive(Debug)]
pub struct StsStandIn {
    server: HttpServer,
    callers: Arc<Mutex<HashMap<String, StsCaller>>>,
    log: Arc<Mutex<Vec<Result<String, String>>>>,
}

impl StsStandIn {
    /// Serves on loopback, verifying signatures for `region`.
    pub async fn start(region: &str) -> io::Result<Self> {
        let callers: Arc<Mutex<HashMap<String, StsCaller>>> = Arc::default();
        let log: Arc<Mutex<Vec<Result<String, String>>>> = Arc::default();
        let (region, handler_callers, handler_log) =
            (region.to_string(), callers.clone(), log.clone());
        let server = HttpServer::bind(Arc::new(move |req: Request| {
            let result = get_caller_identity(&req, &handler_callers, &region);
            if let Ok(mut log) = handler_log.lock() {
                log.push(
                    result
                        .as_ref()
                        .map(|(arn, _)| arn.clone())
                        .map_err(|e| e.to_string()),
                );
            }
            match result {
                Ok((_, body)) => respond(http::StatusCode::OK, "application/json", body),
                Err(e) => sts_error(&e),
            }
        }))
        .await?;
        Ok(StsStandIn {
            server,
            callers,
            log,
        })
    }

    /// Makes `access_key_id` known.
    pub fn add_caller(&self, access_key_id: &str, caller: StsCaller) {
        if let Ok(mut callers) = self.callers.lock() {
            callers.insert(access_key_id.to_string(), caller);
        }
    }

    /// `http://127.0.0.1:<port>`: where istiod's replay goes in tests.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Every request handled: the caller ARN, or the error returned.
    pub fn log(&self) -> Vec<Result<String, String>> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
enum StsError {
    #[error(transparent)]
    Signature(#[from] SigV4Error),
    #[error("InvalidAction: {0}")]
    InvalidAction(String),
}

fn get_caller_identity(
    req: &Request,
    callers: &Mutex<HashMap<String, StsCaller>>,
    region: &str,
) -> Result<(String, String), StsError> {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let signed = SignedRequest {
        method: req.method().as_str(),
        path: req.uri().path(),
        query: req.uri().query().unwrap_or(""),
        headers: &headers,
        body: req.body(),
    };
    let lookup = |akid: &str| {
        callers
            .lock()
            .ok()
            .and_then(|c| c.get(akid).map(|c| c.key.clone()))
    };
    let akid = verify_sigv4(&signed, lookup, region, "sts", SystemTime::now())?;
    let body = String::from_utf8_lossy(req.body());
    let mut action = None;
    for pair in body.split('&') {
        if let Some(v) = pair.strip_prefix("Action=") {
            action = Some(v.to_string());
        }
    }
    if req.method() != http::Method::POST || action.as_deref() != Some("GetCallerIdentity") {
        return Err(StsError::InvalidAction(format!(
            "{} {:?} is not GetCallerIdentity",
            req.method(),
            action
        )));
    }
    let arn = callers
        .lock()
        .ok()
        .and_then(|c| c.get(&akid).map(|c| c.arn.clone()))
        .ok_or_else(|| StsError::Signature(SigV4Error::UnknownAccessKey(akid.clone())))?;
    let account = arn.split(':').nth(4).unwrap_or_default().to_string();
    let session = arn.rsplit('/').next().unwrap_or_default();
    let json = serde_json::json!({
        "GetCallerIdentityResponse": {
            "GetCallerIdentityResult": {
                "Account": account,
                "Arn": arn,
                "UserId": format!("AROAEXAMPLE:{session}"),
            },
            "ResponseMetadata": {"RequestId": "00000000-0000-0000-0000-000000000000"}
        }
    });
    Ok((arn, json.to_string()))
}

fn sts_error(e: &StsError) -> Response {
    let message = e.to_string();
    let (code, rest) = message
        .split_once(": ")
        .unwrap_or(("AccessDenied", &message));
    let body = serde_json::json!({
        "Error": {"Code": code, "Message": rest, "Type": "Sender"},
        "RequestId": "00000000-0000-0000-0000-000000000000",
    });
    respond(
        http::StatusCode::FORBIDDEN,
        "application/json",
        body.to_string(),
    )
}

// ---------------------------------------------------------------------------
// istiod's side

/// What istiod learns from a valid AWS authorization header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCaller {
    /// The caller ARN STS reported (`…:assumed-role/<role>/<session>`).
    pub arn: String,
    /// The IAM role it maps to (`arn:aws:iam::<acct>:role/<role>`).
    pub role_arn: String,
}

/// Why istiod refuses an AWS authorization header.
#[derive(Debug, thiserror::Error)]
pub enum AwsAuthError {
    /// Not `AWS <base64>`.
    #[error("authorization is not of the form \"AWS <base64 JSON>\"")]
    NotAws,
    /// Base64 or JSON layer broken.
    #[error("AWS authorization payload is malformed: {0}")]
    Malformed(String),
    /// The host is not an STS endpoint (istiod must never replay elsewhere).
    #[error("AWS authorization names host {0:?}, which is not an STS endpoint")]
    NotSts(String),
    /// The replay could not be sent.
    #[error("replaying to STS failed: {0}")]
    Replay(#[from] crate::aws::HttpError),
    /// STS refused the request.
    #[error("STS refused the request ({status}): {body}")]
    Refused {
        /// HTTP status.
        status: http::StatusCode,
        /// STS's error body.
        body: String,
    },
    /// STS's answer could not be read.
    #[error("STS answer unreadable: {0}")]
    BadAnswer(String),
    /// The caller is not an assumed role.
    #[error("caller {0} is not an assumed role")]
    NotAssumedRole(String),
}

/// Decodes the value of `authorization: AWS <base64(JSON)>`.
pub fn decode_authorization(value: &str) -> Result<PresignedRequest, AwsAuthError> {
    let b64 = value.strip_prefix("AWS ").ok_or(AwsAuthError::NotAws)?;
    let json = STANDARD
        .decode(b64.trim())
        .map_err(|e| AwsAuthError::Malformed(e.to_string()))?;
    serde_json::from_slice(&json).map_err(|e| AwsAuthError::Malformed(e.to_string()))
}

/// Whether `host` is a public STS endpoint (`sts[.<region>].amazonaws.com[.cn]`).
pub fn is_sts_host(host: &str) -> bool {
    let Some(rest) = host.strip_prefix("sts.") else {
        return false;
    };
    let rest = rest.strip_suffix(".cn").unwrap_or(rest);
    let Some(region) = rest.strip_suffix("amazonaws.com") else {
        return false;
    };
    region.is_empty()
        || region.strip_suffix('.').is_some_and(|r| {
            !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Verifies a decoded header in memory, as STS would verify its replay: the
/// signed request is rebuilt (`POST /` to `host` with the STS body) and
/// checked with [`verify_sigv4`]. For a local control plane that knows the
/// keys and need not run an STS stand-in. Returns the access key id.
pub fn verify_presigned_request(
    presigned: &PresignedRequest,
    keys: impl Fn(&str) -> Option<KnownKey>,
    region: &str,
    now: SystemTime,
) -> Result<String, SigV4Error> {
    let mut headers: Vec<(String, String)> = presigned
        .headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host") && !k.eq_ignore_ascii_case("content-type"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers.push(("host".into(), presigned.host.clone()));
    headers.push(("content-type".into(), FORM_CONTENT_TYPE.into()));
    let request = SignedRequest {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: GET_CALLER_IDENTITY_BODY.as_bytes(),
    };
    verify_sigv4(&request, keys, region, "sts", now)
}

/// istiod's handling of an AWS authorization header: decode it, replay the
/// request to STS at `sts_base_url` (`https://<host>` in production; a
/// stand-in's URL in tests) with the original `Host`, and map the caller.
pub async fn authenticate(value: &str, sts_base_url: &str) -> Result<AwsCaller, AwsAuthError> {
    let presigned = decode_authorization(value)?;
    if !is_sts_host(&presigned.host) {
        return Err(AwsAuthError::NotSts(presigned.host));
    }
    let mut request = http::Request::post(format!("{}/", sts_base_url.trim_end_matches('/')))
        .body(Full::new(Bytes::from_static(
            GET_CALLER_IDENTITY_BODY.as_bytes(),
        )))
        .map_err(|e| AwsAuthError::Malformed(e.to_string()))?;
    let headers = request.headers_mut();
    for (name, value) in &presigned.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| AwsAuthError::Malformed(e.to_string()))?;
        let value = http::HeaderValue::from_str(value)
            .map_err(|e| AwsAuthError::Malformed(e.to_string()))?;
        // Set, not append: the replay must carry each header once.
        headers.insert(name, value);
    }
    let host = http::HeaderValue::from_str(&presigned.host)
        .map_err(|e| AwsAuthError::Malformed(e.to_string()))?;
    headers.insert(http::header::HOST, host);
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(FORM_CONTENT_TYPE),
    );
    headers.insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("application/json"),
    );
    let response = crate::http1::send(request, Duration::from_secs(5)).await?;
    if !response.status.is_success() {
        return Err(AwsAuthError::Refused {
            status: response.status,
            body: String::from_utf8_lossy(&response.body).into_owned(),
        });
    }
    let json: serde_json::Value = serde_json::from_slice(&response.body)
        .map_err(|e| AwsAuthError::BadAnswer(e.to_string()))?;
    let arn = json["GetCallerIdentityResponse"]["GetCallerIdentityResult"]["Arn"]
        .as_str()
        .ok_or_else(|| AwsAuthError::BadAnswer("no GetCallerIdentityResult.Arn".into()))?
        .to_string();
    let role_arn = role_arn_from_caller(&arn)?;
    Ok(AwsCaller { arn, role_arn })
}

/// `arn:aws:sts::<acct>:assumed-role/<role>/<session>` → `arn:aws:iam::<acct>:role/<role>`.
pub fn role_arn_from_caller(arn: &str) -> Result<String, AwsAuthError> {
    let not_role = || AwsAuthError::NotAssumedRole(arn.to_string());
    let mut fields = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("sts"), Some(""), Some(account), Some(resource)) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(not_role());
    };
    let mut parts = resource.split('/');
    let (Some("assumed-role"), Some(role), Some(session), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(not_role());
    };
    if partition.is_empty() || account.is_empty() || role.is_empty() || session.is_empty() {
        return Err(not_role());
    }
    Ok(format!("arn:{partition}:iam::{account}:role/{role}"))
}

/// An IAM role ARN with its path removed (`…:role/a/b/name` → `…:role/name`),
/// the form annotations are compared in.
pub fn strip_role_path(role_arn: &str) -> String {
    match role_arn.split_once(":role/") {
        Some((prefix, rest)) => {
            format!("{prefix}:role/{}", rest.rsplit('/').next().unwrap_or(rest))
        }
        None => role_arn.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assumed_role_maps_to_its_iam_role() {
        assert_eq!(
            role_arn_from_caller("arn:aws:sts::123456789012:assumed-role/echo-task-role/7f3a")
                .unwrap(),
            "arn:aws:iam::123456789012:role/echo-task-role"
        );
    }

    #[test]
    fn users_and_malformed_arns_are_not_roles() {
        for arn in [
            "arn:aws:iam::123456789012:user/alice",
            "arn:aws:sts::123456789012:federated-user/bob",
            "arn:aws:sts::123456789012:assumed-role/only-role",
            "arn:aws:sts::123456789012:assumed-role/r/s/extra",
            "not an arn",
        ] {
            assert!(role_arn_from_caller(arn).is_err(), "{arn}");
        }
    }

    #[test]
    fn role_paths_are_stripped() {
        assert_eq!(
            strip_role_path("arn:aws:iam::1:role/teams/mesh/echo"),
            "arn:aws:iam::1:role/echo"
        );
        assert_eq!(
            strip_role_path("arn:aws:iam::1:role/echo"),
            "arn:aws:iam::1:role/echo"
        );
    }

    #[test]
    fn only_sts_hosts_are_replayed_to() {
        assert!(is_sts_host("sts.us-east-2.amazonaws.com"));
        assert!(is_sts_host("sts.amazonaws.com"));
        assert!(is_sts_host("sts.cn-north-1.amazonaws.com.cn"));
        assert!(!is_sts_host("sts.us-east-2.amazonaws.com.evil.example"));
        assert!(!is_sts_host("evil.example"));
        assert!(!is_sts_host("sts..amazonaws.com"));
    }

    /// AWS's published SigV4 example (IAM ListUsers, 2015-08-30), so the
    /// verifier is checked against AWS's own numbers, not against our signer.
    #[test]
    fn verifier_accepts_the_aws_documentation_example() {
        let headers = vec![
            ("Host".to_string(), "iam.amazonaws.com".to_string()),
            (
                "Content-Type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("X-Amz-Date".to_string(), "20150830T123600Z".to_string()),
            (
                "Authorization".to_string(),
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, \
                 Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
                    .to_string(),
            ),
        ];
        let request = SignedRequest {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            headers: &headers,
            body: b"",
        };
        let keys = |_: &str| {
            Some(KnownKey {
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                session_token: None,
            })
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
        assert_eq!(
            verify_sigv4(&request, keys, "us-east-1", "iam", at).unwrap(),
            "AKIDEXAMPLE"
        );
        // One byte of the query changed: the signature no longer matches.
        let tampered = SignedRequest {
            query: "Action=ListUsers&Version=2010-05-09",
            ..request
        };
        assert_eq!(
            verify_sigv4(&tampered, keys, "us-east-1", "iam", at).unwrap_err(),
            SigV4Error::SignatureMismatch
        );
    }
}
