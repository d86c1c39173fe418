//! The `/config_dump` document, in ztunnel's JSON shape.
//!
//! `istioctl ztunnel-config workloads|services|policies|certificates` reads this
//! document, so its shape is a wire format: top-level keys `workloads` (sorted
//! by UID), `services` (sorted by hostname, then namespace), `policies` (sorted
//! by key), `stagedServices` (`namespace/hostname` → UID → endpoint),
//! `staticConfig` (the local config file, re-read at each dump), `version`,
//! `config` (the effective configuration) and `certificates`. The model types
//! of `zs-state` already serialize as ztunnel's; this module assembles them.
//!
//! Like ztunnel's, the document goes through a JSON value before printing, so
//! every object's keys come out in alphabetical order.
//!
//! The mesh is read under its lock only long enough to copy what is printed
//! (workloads are shared pointers), so a large dump never holds up an xDS
//! update or the data path while it is serialized.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use zs_identity::Identity;
use zs_state::local::LocalConfig;
use zs_state::zs_authz::Policy;
use zs_state::{Endpoint, NamespacedHostname, Service, SharedMesh, Str, Workload};

/// Build facts printed under `version` (ztunnel's field names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    /// This program's version.
    pub version: String,
    /// The commit it was built from.
    pub git_revision: String,
    /// The compiler that built it.
    pub rust_version: String,
    /// `release` or `debug`.
    pub build_profile: String,
    /// `Clean` or `Modified` (the state of the work tree at build time).
    pub build_status: String,
    /// The Istio version this proxy reports (`unknown` when not given).
    pub istio_version: String,
    /// The TLS crypto provider.
    pub crypto_provider: String,
}

/// The state of one identity's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertState {
    /// Nothing fetched yet and nothing failed.
    Initializing,
    /// A valid certificate is in use.
    Available,
    /// No valid certificate; the last error.
    Unavailable(String),
}

impl CertState {
    /// The string ztunnel prints (`Unavailable: <err>` carries the error).
    fn render(&self) -> String {
        match self {
            CertState::Initializing => "Initializing".to_owned(),
            CertState::Available => "Available".to_owned(),
            CertState::Unavailable(err) => format!("Unavailable: {err}"),
        }
    }
}

/// What the dump shows about one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The certificate as PEM text (printed base64-encoded, as ztunnel does).
    pub pem: String,
    /// The serial number in **decimal**: istioctl parses it base 10 and
    /// prints it in hex.
    pub serial_number: String,
    /// Start of validity.
    pub valid_from: SystemTime,
    /// End of validity.
    pub expiration_time: SystemTime,
}

/// The certificates of one identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateDump {
    /// The workload identity the certificates are for.
    pub identity: Identity,
    /// Where fetching stands.
    pub state: CertState,
    /// Leaf first, then intermediates.
    pub chain: Vec<CertInfo>,
    /// Trust roots.
    pub roots: Vec<CertInfo>,
}

/// Where the local (static) workload config comes from, so the dump can show
/// it as the file says now (ztunnel re-reads it at each dump).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StaticConfig {
    /// No local config: the dump shows empty lists.
    #[default]
    None,
    /// A YAML file, re-read at each dump.
    File(PathBuf),
    /// YAML given inline.
    Inline(String),
}

/// Supplies the certificate part of the dump, fresh at each request.
pub trait CertificateSource: Send + Sync + 'static {
    /// The certificates of every identity this proxy holds.
    fn certificates(&self) -> Vec<CertificateDump>;
}

impl<F> CertificateSource for F
where
    F: Fn() -> Vec<CertificateDump> + Send + Sync + 'static,
{
    fn certificates(&self) -> Vec<CertificateDump> {
        self()
    }
}

/// Why a dump could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDumpError {
    /// The document did not serialize (a model type produced a non-JSON shape).
    #[error("serializing the config dump: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The serializing task did not finish (the runtime is shutting down).
    #[error("the config dump task was aborted: {0}")]
    Aborted(String),
}

/// Produces the `/config_dump` document from the live mesh state and the
/// process facts given at construction.
pub struct ConfigDump {
    mesh: SharedMesh,
    version: Arc<BuildInfo>,
    config: Arc<serde_json::Value>,
    static_config: StaticConfig,
    certificates: Option<Box<dyn CertificateSource>>,
}

impl std::fmt::Debug for ConfigDump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigDump")
            .field("version", &self.version)
            .field("static_config", &self.static_config)
            .field("certificates", &self.certificates.is_some())
            .finish_non_exhaustive()
    }
}

impl ConfigDump {
    /// A dump of `mesh`, with `version` and the effective `config` (printed as
    /// given). No static config and no certificates until set.
    pub fn new(mesh: SharedMesh, version: BuildInfo, config: serde_json::Value) -> Self {
        ConfigDump {
            mesh,
            version: Arc::new(version),
            config: Arc::new(config),
            static_config: StaticConfig::None,
            certificates: None,
        }
    }

    /// Shows this local config under `staticConfig`.
    pub fn with_static_config(mut self, source: StaticConfig) -> Self {
        self.static_config = source;
        self
    }

    /// Takes the `certificates` list from `source` at each dump.
    pub fn with_certificates(mut self, source: impl CertificateSource) -> Self {
        self.certificates = Some(Box::new(source));
        self
    }

    /// The document as pretty-printed JSON (what `/config_dump` serves).
    ///
    /// Serializing a large mesh takes tens of milliseconds; it runs on the
    /// blocking pool so the runtime serving the request (shared with the xDS
    /// client in the sidecar) keeps going meanwhile.
    pub async fn render(&self) -> Result<String, ConfigDumpError> {
        let dump = self.snapshot(self.load_static_config().await);
        tokio::task::spawn_blocking(move || {
            let value = serde_json::to_value(&dump)?;
            Ok(serde_json::to_string_pretty(&value)?)
        })
        .await
        .map_err(|e| ConfigDumpError::Aborted(e.to_string()))?
    }

    /// The document as a JSON value, with `static_config` as the local config.
    pub fn to_value(
        &self,
        static_config: LocalConfig,
    ) -> Result<serde_json::Value, ConfigDumpError> {
        Ok(serde_json::to_value(self.snapshot(static_config))?)
    }

    /// Copies what the dump prints, holding the mesh lock only for the copy.
    fn snapshot(&self, static_config: LocalConfig) -> DumpJson {
        let (mut workloads, mut services, policies, staged_services) = {
            let state = self.mesh.read();
            (
                state.workloads().cloned().collect::<Vec<_>>(),
                state.services().cloned().collect::<Vec<_>>(),
                state
                    .policies()
                    .iter()
                    .map(|(_, p)| p.clone())
                    .collect::<Vec<_>>(),
                state.staged_services().clone(),
            )
        };
        workloads.sort_by(|a, b| a.uid.cmp(&b.uid));
        services.sort_by(|a, b| (&a.hostname, &a.namespace).cmp(&(&b.hostname, &b.namespace)));
        let mut certificates: Vec<CertsJson> = self
            .certificates
            .as_ref()
            .map(|source| source.certificates())
            .unwrap_or_default()
            .iter()
            .map(CertsJson::from)
            .collect();
        certificates.sort_by(|a, b| a.identity.cmp(&b.identity));
        DumpJson {
            workloads,
            services,
            policies,
            staged_services,
            static_config,
            version: self.version.clone(),
            config: self.config.clone(),
            certificates,
        }
    }

    async fn load_static_config(&self) -> LocalConfig {
        let text = match &self.static_config {
            StaticConfig::None => return LocalConfig::default(),
            StaticConfig::Inline(text) => text.clone(),
            StaticConfig::File(path) => match tokio::fs::read_to_string(path).await {
                Ok(text) => text,
                Err(err) => {
                    tracing::error!(path = %path.display(), error = %err, "reading the local config for the config dump failed");
                    return LocalConfig::default();
                }
            },
        };
        match LocalConfig::from_yaml(&text) {
            Ok(config) => config,
            Err(err) => {
                tracing::error!(error = %err, "parsing the local config for the config dump failed");
                LocalConfig::default()
            }
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DumpJson {
    workloads: Vec<Arc<Workload>>,
    services: Vec<Service>,
    policies: Vec<Policy>,
    staged_services: HashMap<NamespacedHostname, BTreeMap<Str, Endpoint>>,
    static_config: LocalConfig,
    version: Arc<BuildInfo>,
    config: Arc<serde_json::Value>,
    certificates: Vec<CertsJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CertsJson {
    identity: String,
    state: String,
    cert_chain: Vec<CertJson>,
    root_certs: Vec<CertJson>,
}

impl From<&CertificateDump> for CertsJson {
    fn from(c: &CertificateDump) -> Self {
        CertsJson {
            identity: c.identity.to_string(),
            state: c.state.render(),
            cert_chain: c.chain.iter().map(CertJson::from).collect(),
            root_certs: c.roots.iter().map(CertJson::from).collect(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CertJson {
    pem: String,
    serial_number: String,
    valid_from: String,
    expiration_time: String,
}

impl From<&CertInfo> for CertJson {
    fn from(c: &CertInfo) -> Self {
        CertJson {
            pem: STANDARD.encode(c.pem.as_bytes()),
            serial_number: c.serial_number.clone(),
            valid_from: rfc3339(c.valid_from),
            expiration_time: rfc3339(c.expiration_time),
        }
    }
}

/// RFC 3339 in UTC to the second (`2023-03-11T05:57:26Z`), as ztunnel prints
/// certificate times. A time outside years 0–9999 prints as the empty string,
/// which istioctl shows as `NA`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).ok(),
        // Round toward the past, as truncating a positive time does.
        Err(e) => {
            let d = e.duration();
            i64::try_from(d.as_secs())
                .ok()
                .map(|s| -s - i64::from(d.subsec_nanos() > 0))
        }
    };
    secs.and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|dt| {
            dt.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_print_to_the_second_in_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_678_514_246_900);
        assert_eq!(rfc3339(t), "2023-03-11T05:57:26Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_millis(500)),
            "1969-12-31T23:59:59Z"
        );
    }

    #[test]
    fn cert_state_prints_like_ztunnel() {
        assert_eq!(CertState::Initializing.render(), "Initializing");
        assert_eq!(CertState::Available.render(), "Available");
        assert_eq!(
            CertState::Unavailable("CA unreachable".into()).render(),
            "Unavailable: CA unreachable"
        );
    }
}
