//! `local-istiod bootstrap-token`: prints a `BOOTSTRAP_TOKEN` for a workload,
//! in the format `istioctl ecs add-service` writes into task definitions
//! (`base64(base64(JSON))`), pointing at this server, so that a demo sidecar
//! can be configured with that one variable.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The token's content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenSpec {
    /// The URL the workload reaches this server at.
    pub url: String,
    /// The root certificate (PEM) the server's certificate chains to.
    pub ca_cert: String,
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's service account.
    pub service_account: String,
    /// `ecs`, `ecs-ec2`, or empty (generic).
    pub platform: String,
    /// A bearer token (generic platform).
    pub token: Option<String>,
    /// The control plane's network.
    pub network: Option<String>,
    /// Whether the workload is outside that network.
    pub remote: bool,
}

impl TokenSpec {
    /// `base64(base64(JSON))`, standard alphabet with padding.
    pub fn encode(&self) -> String {
        let mut json = serde_json::json!({
            "url": self.url,
            "caCert": self.ca_cert,
            "namespace": self.namespace,
            "serviceAccount": self.service_account,
            "platform": self.platform,
            "remote": self.remote,
        });
        if let Some(t) = &self.token {
            json["token"] = t.clone().into();
        }
        if let Some(n) = &self.network {
            json["network"] = n.clone().into();
        }
        STANDARD.encode(STANDARD.encode(json.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zs_xds::bootstrap::{BootstrapToken, Platform};

    #[test]
    fn the_sidecar_decodes_what_is_printed() {
        let spec = TokenSpec {
            url: "https://127.0.0.1:15012".into(),
            ca_cert: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            namespace: "ecs-demo-1".into(),
            service_account: "echo".into(),
            platform: "ecs".into(),
            token: None,
            network: Some("eks".into()),
            remote: true,
        };
        let decoded = BootstrapToken::decode(&spec.encode()).unwrap();
        assert_eq!(
            decoded,
            BootstrapToken {
                url: Some("https://127.0.0.1:15012".into()),
                ca_cert: Some(spec.ca_cert.clone()),
                namespace: Some("ecs-demo-1".into()),
                service_account: Some("echo".into()),
                platform: Platform::Ecs,
                token: None,
                network: Some("eks".into()),
                remote: true,
            }
        );
    }
}
