//! Per-call gRPC metadata that authenticates the sidecar to istiod.
//!
//! istiod accepts one of: a Kubernetes ServiceAccount JWT
//! (`authorization: Bearer <token>`), or on ECS a presigned STS request
//! (`authorization: AWS <base64(JSON)>`, see [`crate::aws`]). Either way the
//! `clusterid` header names the cluster whose API server issued the identity.
//! Operators can add static headers (`XDS_HEADER_<name>`, `CA_HEADER_<name>`).
//!
//! Tokens change underneath a running process (projected tokens are rotated
//! on disk; AWS signatures expire), so the metadata is computed anew before
//! every call and every stream open. tonic interceptors are synchronous, so
//! instead of one the callers await [`CallCredentials::apply`] on the request
//! they are about to send.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};

use crate::aws::{AwsError, AwsIamAuth};

/// Errors producing call metadata.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token file could not be read.
    #[error("reading the istiod token from {path}: {source}")]
    ReadToken {
        /// The token file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The token is empty.
    #[error("the istiod token {origin} is empty")]
    EmptyToken {
        /// Where the token came from (`file <path>` or `given in AUTH_TOKEN`).
        origin: String,
    },
    /// The token contains characters not allowed in a header value.
    #[error("the istiod token {origin} contains characters not allowed in a gRPC header")]
    InvalidToken {
        /// Where the token came from.
        origin: String,
    },
    /// A configured static header is not a valid ASCII gRPC header.
    #[error("extra header {name:?} is not a valid gRPC ASCII header: {reason}")]
    InvalidHeader {
        /// The header name as configured.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The cluster id is not a valid header value.
    #[error("CLUSTER_ID {0:?} is not a valid gRPC header value")]
    InvalidClusterId(String),
    /// AWS IAM authentication failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
}

/// A bearer token: a file re-read on every call, or a literal value.
/// `Debug` never prints a literal token.
#[derive(Clone, PartialEq, Eq)]
pub enum BearerToken {
    /// A file holding the token (e.g. a projected ServiceAccount token).
    File(PathBuf),
    /// The token itself.
    Literal(String),
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BearerToken::File(path) => f.debug_tuple("File").field(path).finish(),
            BearerToken::Literal(_) => f.write_str("Literal(<redacted>)"),
        }
    }
}

impl BearerToken {
    /// Interprets an `AUTH_TOKEN` value: an existing path is a token file,
    /// anything else is the token itself.
    pub fn from_setting(value: &str) -> BearerToken {
        if Path::new(value).is_file() {
            BearerToken::File(PathBuf::from(value))
        } else {
            BearerToken::Literal(value.to_string())
        }
    }

    async fn header_value(&self) -> Result<AsciiMetadataValue, AuthError> {
        let origin = || match self {
            BearerToken::File(path) => format!("in file {}", path.display()),
            BearerToken::Literal(_) => "given in AUTH_TOKEN".to_string(),
        };
        let token = match self {
            BearerToken::File(path) => {
                tokio::fs::read_to_string(path)
                    .await
                    .map_err(|source| AuthError::ReadToken {
                        path: path.clone(),
                        source,
                    })?
            }
            BearerToken::Literal(s) => s.clone(),
        };
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::EmptyToken { origin: origin() });
        }
        AsciiMetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| AuthError::InvalidToken { origin: origin() })
    }
}

/// How the sidecar proves who it is.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// `authorization: Bearer <token>`.
    Bearer(BearerToken),
    /// `authorization: AWS <base64(JSON)>`.
    Aws(AwsIamAuth),
}

/// Computes the metadata for each call. Cheap to clone. `Debug` shows header
/// names, never values.
#[derive(Clone, Default)]
pub struct CallCredentials {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CallCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.inner.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("CallCredentials")
            .field("token", &self.inner.token)
            .field("cluster_id", &self.inner.cluster_id)
            .field("headers", &names)
            .finish()
    }
}

#[derive(Default)]
struct Inner {
    token: Option<TokenSource>,
    cluster_id: Option<AsciiMetadataValue>,
    headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
}

const AUTHORIZATION: &str = "authorization";
const CLUSTER_ID: &str = "clusterid";

impl CallCredentials {
    /// No authentication and no extra headers (istiod with authentication
    /// disabled, or a local control plane).
    pub fn none() -> Self {
        Self::default()
    }

    /// Credentials from a token source (sent with `clusterid: <cluster_id>`)
    /// and extra static headers (`(name, value)` pairs, e.g. the suffixes and
    /// values of `XDS_HEADER_*`). Header names are case-insensitive.
    pub fn new<N: AsRef<str>, V: AsRef<str>>(
        token: Option<TokenSource>,
        cluster_id: &str,
        headers: impl IntoIterator<Item = (N, V)>,
    ) -> Result<Self, AuthError> {
        let cluster_id = match token {
            Some(_) => Some(
                AsciiMetadataValue::try_from(cluster_id)
                    .map_err(|_| AuthError::InvalidClusterId(cluster_id.to_string()))?,
            ),
            None => None,
        };
        let headers = headers
            .into_iter()
            .map(|(name, value)| {
                let (name, value) = (name.as_ref(), value.as_ref());
                let key = AsciiMetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                    .map_err(|_| AuthError::InvalidHeader {
                        name: name.to_string(),
                        reason: "invalid header name",
                    })?;
                let value =
                    AsciiMetadataValue::try_from(value).map_err(|_| AuthError::InvalidHeader {
                        name: name.to_string(),
                        reason: "invalid header value",
                    })?;
                Ok((key, value))
            })
            .collect::<Result<Vec<_>, AuthError>>()?;
        Ok(CallCredentials {
            inner: Arc::new(Inner {
                token,
                cluster_id,
                headers,
            }),
        })
    }

    /// Whether a token source is configured.
    pub fn has_token(&self) -> bool {
        self.inner.token.is_some()
    }

    /// The metadata for one call, computed now (token file read, AWS request signed).
    pub async fn metadata(&self) -> Result<MetadataMap, AuthError> {
        let mut map = MetadataMap::with_capacity(self.inner.headers.len() + 2);
        for (k, v) in &self.inner.headers {
            map.append(k.clone(), v.clone());
        }
        let authorization = match &self.inner.token {
            None => None,
            Some(TokenSource::Bearer(token)) => Some(token.header_value().await?),
            Some(TokenSource::Aws(aws)) => {
                let value = aws.authorization().await?;
                // base64 and the `AWS ` prefix are always valid ASCII header text.
                Some(
                    AsciiMetadataValue::try_from(value)
                        .map_err(|e| AuthError::Aws(AwsError::Sign(e.to_string())))?,
                )
            }
        };
        if let Some(value) = authorization {
            map.insert(AUTHORIZATION, value);
        }
        if let Some(cluster_id) = &self.inner.cluster_id {
            map.insert(CLUSTER_ID, cluster_id.clone());
        }
        Ok(map)
    }

    /// Adds this call's metadata to `request`, replacing headers of the same name.
    pub async fn apply<T>(&self, request: &mut tonic::Request<T>) -> Result<(), AuthError> {
        let metadata = self.metadata().await?;
        let target = request.metadata_mut();
        for kv in metadata.iter() {
            if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
                target.insert(k.clone(), v.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(map: &'a MetadataMap, key: &str) -> Option<&'a str> {
        map.get(key).and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn literal_bearer_token_and_cluster_id() {
        let creds = CallCredentials::new(
            Some(TokenSource::Bearer(BearerToken::from_setting(
                "abc.def.ghi",
            ))),
            "Kubernetes",
            Vec::<(String, String)>::new(),
        )
        .unwrap();
        let md = creds.metadata().await.unwrap();
        assert_eq!(get(&md, "authorization"), Some("Bearer abc.def.ghi"));
        assert_eq!(get(&md, "clusterid"), Some("Kubernetes"));
    }

    #[tokio::test]
    async fn no_token_source_sends_no_cluster_id() {
        let creds = CallCredentials::new(None, "Kubernetes", [("X-Team", "mesh")]).unwrap();
        let md = creds.metadata().await.unwrap();
        assert_eq!(get(&md, "authorization"), None);
        assert_eq!(get(&md, "clusterid"), None);
        assert_eq!(get(&md, "x-team"), Some("mesh"));
    }

    #[tokio::test]
    async fn token_file_is_read_on_every_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("istio-token");
        std::fs::write(&path, "first\n").unwrap();
        let source = BearerToken::from_setting(path.to_str().unwrap());
        assert_eq!(source, BearerToken::File(path.clone()));
        let creds = CallCredentials::new(
            Some(TokenSource::Bearer(source)),
            "c1",
            Vec::<(&str, &str)>::new(),
        )
        .unwrap();
        assert_eq!(
            get(&creds.metadata().await.unwrap(), "authorization"),
            Some("Bearer first")
        );
        std::fs::write(&path, "second").unwrap();
        assert_eq!(
            get(&creds.metadata().await.unwrap(), "authorization"),
            Some("Bearer second")
        );
    }

    #[tokio::test]
    async fn empty_token_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("istio-token");
        std::fs::write(&path, "  \n").unwrap();
        let creds = CallCredentials::new(
            Some(TokenSource::Bearer(BearerToken::File(path))),
            "c1",
            Vec::<(&str, &str)>::new(),
        )
        .unwrap();
        let err = creds.metadata().await.unwrap_err();
        assert!(matches!(err, AuthError::EmptyToken { .. }), "{err}");
    }

    #[tokio::test]
    async fn deleted_token_file_is_a_read_error() {
        let creds = CallCredentials::new(
            Some(TokenSource::Bearer(BearerToken::File(
                "/nonexistent/istio-token".into(),
            ))),
            "c1",
            Vec::<(&str, &str)>::new(),
        )
        .unwrap();
        let err = creds.metadata().await.unwrap_err();
        assert!(matches!(err, AuthError::ReadToken { .. }), "{err}");
    }

    #[tokio::test]
    async fn empty_literal_token_is_an_error() {
        let creds = CallCredentials::new(
            Some(TokenSource::Bearer(BearerToken::Literal(String::new()))),
            "c1",
            Vec::<(&str, &str)>::new(),
        )
        .unwrap();
        assert!(matches!(
            creds.metadata().await.unwrap_err(),
            AuthError::EmptyToken { .. }
        ));
    }

    #[test]
    fn debug_output_hides_a_literal_token() {
        let creds = CallCredentials::new(
            Some(TokenSource::Bearer(BearerToken::Literal(
                "s3cr3t-jwt".into(),
            ))),
            "c",
            Vec::<(&str, &str)>::new(),
        )
        .unwrap();
        let printed = format!("{creds:?}");
        assert!(!printed.contains("s3cr3t-jwt"), "{printed}");
        assert!(printed.contains("Literal(<redacted>)"), "{printed}");
    }

    #[test]
    fn invalid_header_name_is_rejected() {
        let err = CallCredentials::new(None, "c", [("bad header", "v")]).unwrap_err();
        assert!(matches!(err, AuthError::InvalidHeader { .. }), "{err}");
    }

    #[test]
    fn binary_header_name_is_rejected() {
        let err = CallCredentials::new(None, "c", [("trace-bin", "v")]).unwrap_err();
        assert!(matches!(err, AuthError::InvalidHeader { .. }), "{err}");
    }

    #[tokio::test]
    async fn token_replaces_a_static_authorization_header() {
        let creds = CallCredentials::new(
            Some(TokenSource::Bearer(BearerToken::Literal("t".into()))),
            "c",
            [("Authorization", "static")],
        )
        .unwrap();
        let mut req = tonic::Request::new(());
        creds.apply(&mut req).await.unwrap();
        let values: Vec<_> = req.metadata().get_all("authorization").iter().collect();
        assert_eq!(values.len(), 1);
        assert_eq!(values[0], "Bearer t");
    }
}
