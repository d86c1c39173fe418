//! The `BOOTSTRAP_TOKEN` that `istioctl ecs add-service` writes into a task
//! definition: `base64(base64(JSON))`, standard alphabet with padding.
//!
//! The token is the only thing an enrolled task is given, so everything the
//! sidecar needs to reach istiod (URL, root certificate, its own namespace and
//! service account, the control plane's network) may come from it. Every field
//! is optional; the binary decides which ones it requires and how they combine
//! with explicit environment variables. Decoding reports which of the three
//! layers (outer base64, inner base64, JSON) is broken, because a token pasted
//! with one encoding too few is the usual mistake.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// The platform a bootstrap token was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Platform {
    /// A sidecar on ECS (Fargate): authenticates with its AWS task role.
    Ecs,
    /// ztunnel on an ECS EC2 instance.
    EcsEc2,
    /// Any other platform: authenticates with the token's `token` field.
    #[default]
    Generic,
}

/// A decoded bootstrap token. Fields absent from the JSON are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootstrapToken {
    /// istiod's URL as reachable from the task, e.g. `https://<east-west LB>:15012`.
    pub url: Option<String>,
    /// PEM root certificate that istiod's TLS certificate chains to.
    pub ca_cert: Option<String>,
    /// Namespace of the workload's identity.
    pub namespace: Option<String>,
    /// Service account of the workload's identity.
    pub service_account: Option<String>,
    /// The platform the token was issued for.
    pub platform: Platform,
    /// A bearer token for the generic platform (a Kubernetes ServiceAccount token).
    pub token: Option<String>,
    /// The Istio network of the control plane side.
    pub network: Option<String>,
    /// Whether the workload sits outside that network (istiod is reached
    /// through the east-west gateway).
    pub remote: bool,
}

/// Why a bootstrap token could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The token is empty (or only whitespace).
    #[error("BOOTSTRAP_TOKEN is empty")]
    Empty,
    /// The outer layer is not standard base64.
    #[error("BOOTSTRAP_TOKEN is not base64 (outer layer): {0}")]
    OuterBase64(#[source] base64::DecodeError),
    /// The outer layer decoded to bytes that are not base64 text.
    #[error("BOOTSTRAP_TOKEN is base64 only once: the decoded value is not base64 again: {0}")]
    InnerBase64(#[source] base64::DecodeError),
    /// The inner layer decoded but is not the expected JSON object.
    #[error("BOOTSTRAP_TOKEN does not contain a JSON object with the expected fields: {0}")]
    Json(#[source] serde_json::Error),
    /// `platform` has a value this sidecar does not know.
    #[error("BOOTSTRAP_TOKEN has unknown platform {0:?} (expected \"ecs\", \"ecs-ec2\" or empty)")]
    UnknownPlatform(String),
}

/// The JSON as written by `istioctl`; kept separate so that the public type
/// can use `Option`s and an enum without serde attributes leaking into it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    ca_cert: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    service_account: Option<String>,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    network: Option<String>,
    #[serde(default)]
    remote: Option<bool>,
}

impl BootstrapToken {
    /// Decodes `base64(base64(JSON))`. Whitespace around the token and around
    /// the inner layer is ignored (a token copied from a terminal often carries
    /// a newline).
    pub fn decode(s: &str) -> Result<BootstrapToken, BootstrapError> {
        let outer = s.trim();
        if outer.is_empty() {
            return Err(BootstrapError::Empty);
        }
        let inner = STANDARD
            .decode(outer)
            .map_err(BootstrapError::OuterBase64)?;
        let json = STANDARD
            .decode(inner.trim_ascii())
            .map_err(BootstrapError::InnerBase64)?;
        let wire: Wire = serde_json::from_slice(&json).map_err(BootstrapError::Json)?;
        let platform = match wire.platform.as_deref().unwrap_or("") {
            "" => Platform::Generic,
            "ecs" => Platform::Ecs,
            "ecs-ec2" => Platform::EcsEc2,
            other => return Err(BootstrapError::UnknownPlatform(other.to_string())),
        };
        let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
        Ok(BootstrapToken {
            url: non_empty(wire.url),
            ca_cert: non_empty(wire.ca_cert),
            namespace: non_empty(wire.namespace),
            service_account: non_empty(wire.service_account),
            platform,
            token: non_empty(wire.token),
            network: non_empty(wire.network),
            remote: wire.remote.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_twice(json: &str) -> String {
        STANDARD.encode(STANDARD.encode(json))
    }

    #[test]
    fn decodes_every_field_of_an_ecs_token() {
        let json = r#"{"url":"https://gw.example.com:15012","caCert":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n","namespace":"ecs-demo-1","serviceAccount":"echo-service","platform":"ecs","network":"eks","remote":true}"#;
        let token = BootstrapToken::decode(&encode_twice(json)).unwrap();
        assert_eq!(
            token,
            BootstrapToken {
                url: Some("https://gw.example.com:15012".into()),
                ca_cert: Some(
                    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()
                ),
                namespace: Some("ecs-demo-1".into()),
                service_account: Some("echo-service".into()),
                platform: Platform::Ecs,
                token: None,
                network: Some("eks".into()),
                remote: true,
            }
        );
    }

    #[test]
    fn generic_token_carries_a_bearer_token() {
        let json = r#"{"url":"https://istiod:15012","platform":"","token":"eyJhbGciOi"}"#;
        let token = BootstrapToken::decode(&encode_twice(json)).unwrap();
        assert_eq!(token.platform, Platform::Generic);
        assert_eq!(token.token.as_deref(), Some("eyJhbGciOi"));
        assert!(!token.remote);
    }

    #[test]
    fn ecs_ec2_platform_is_recognised() {
        let token = BootstrapToken::decode(&encode_twice(r#"{"platform":"ecs-ec2"}"#)).unwrap();
        assert_eq!(token.platform, Platform::EcsEc2);
    }

    #[test]
    fn empty_object_gives_all_fields_absent() {
        let token = BootstrapToken::decode(&encode_twice("{}")).unwrap();
        assert_eq!(token, BootstrapToken::default());
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        let token = format!("  {}\n", encode_twice(r#"{"namespace":"ns1"}"#));
        assert_eq!(
            BootstrapToken::decode(&token).unwrap().namespace.as_deref(),
            Some("ns1")
        );
    }

    #[test]
    fn empty_token_is_rejected() {
        assert!(matches!(
            BootstrapToken::decode(" \n"),
            Err(BootstrapError::Empty)
        ));
    }

    #[test]
    fn broken_outer_layer_is_reported_as_outer() {
        let err = BootstrapToken::decode("not base64 at all!").unwrap_err();
        assert!(matches!(err, BootstrapError::OuterBase64(_)), "{err}");
        assert!(err.to_string().contains("outer layer"));
    }

    #[test]
    fn token_encoded_only_once_is_reported_as_inner() {
        let err = BootstrapToken::decode(&STANDARD.encode(r#"{"url":"x"}"#)).unwrap_err();
        assert!(matches!(err, BootstrapError::InnerBase64(_)), "{err}");
        assert!(err.to_string().contains("base64 only once"));
    }

    #[test]
    fn non_json_payload_is_reported_as_json() {
        let err = BootstrapToken::decode(&encode_twice("url=https://x")).unwrap_err();
        assert!(matches!(err, BootstrapError::Json(_)), "{err}");
    }

    #[test]
    fn wrongly_typed_field_is_reported_as_json() {
        let err = BootstrapToken::decode(&encode_twice(r#"{"remote":"yes"}"#)).unwrap_err();
        assert!(matches!(err, BootstrapError::Json(_)), "{err}");
    }

    #[test]
    fn unknown_platform_is_rejected() {
        let err = BootstrapToken::decode(&encode_twice(r#"{"platform":"azure"}"#)).unwrap_err();
        assert!(matches!(err, BootstrapError::UnknownPlatform(ref p) if p == "azure"));
    }
}
