//! Configuration: every environment variable the sidecar reads, parsed once into
//! one typed struct with documented defaults.
//!
//! Names follow upstream ztunnel wherever it has one (`PROXY_WORKLOAD_INFO`,
//! `XDS_ADDRESS`, `CA_ROOT_CA`, `SECRET_TTL`, `HTTP2_*`, …); the sidecar-only
//! settings (listener addresses, capture modes) have their own names. Nothing
//! else in the program reads the environment. An invalid value stops the
//! program with one line naming the variable, the value and what is expected.
//!
//! `BOOTSTRAP_TOKEN` alone is a complete configuration (as written into task
//! definitions by `istioctl ecs add-service`): it supplies istiod's URL and root
//! certificate, the namespace and service account, the network, and whether
//! istiod is reached through an east-west gateway. Explicit variables override it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// An invalid setting: `VAR=value: expected ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {}={:?}: expected {}",
            self.var, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

fn err(var: &str, value: &str, expected: impl Into<String>) -> ConfigError {
    ConfigError {
        var: var.to_string(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// Which workload this sidecar is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkloadInfo {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
}

/// Where the sidecar's own identity comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum IdentitySource {
    /// `PROXY_WORKLOAD_INFO`, or a workload named explicitly.
    Explicit(WorkloadInfo),
    /// On ECS: the name is derived from task metadata at startup.
    EcsTask {
        namespace: String,
        service_account: String,
        metadata_uri: String,
    },
}

/// A root certificate source for the TLS connection to istiod.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RootCa {
    /// A PEM file, re-read on every connection.
    File(PathBuf),
    /// PEM text given inline.
    Pem(String),
    /// The operating system's trust store.
    System,
}

impl RootCa {
    /// ztunnel's rule: `SYSTEM`, else an existing path, else inline PEM.
    fn parse(var: &str, value: &str) -> Result<RootCa, ConfigError> {
        if value == "SYSTEM" {
            Ok(RootCa::System)
        } else if std::path::Path::new(value).is_file() {
            Ok(RootCa::File(value.into()))
        } else if value.contains("-----BEGIN CERTIFICATE-----") {
            Ok(RootCa::Pem(value.to_string()))
        } else {
            // Unlike ztunnel (which then trusts nothing and fails later), say so now.
            Err(err(
                var,
                value,
                "SYSTEM, the path of an existing PEM file, or inline PEM certificates",
            ))
        }
    }
}

/// How to reach one istiod endpoint (xDS or CA).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IstiodEndpoint {
    pub url: String,
    pub root: RootCa,
    /// Another name the server certificate may carry (`ALT_XDS_HOSTNAME` / `ALT_CA_HOSTNAME`).
    pub alt_hostname: Option<String>,
    /// When set, istiod's certificate is checked against this name and it is sent
    /// as SNI (reaching istiod through an east-west gateway by its load balancer).
    pub server_name: Option<String>,
    /// Extra gRPC metadata (`XDS_HEADER_*` / `CA_HEADER_*`).
    pub headers: Vec<(String, String)>,
}

/// How the sidecar proves who it is to istiod.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum AuthSource {
    None,
    /// `authorization: Bearer`: a file re-read per call, or a literal.
    Token(TokenValue),
    /// The task's IAM role: a presigned STS GetCallerIdentity.
    AwsIam {
        region: String,
        /// The ECS credentials endpoint (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`
        /// on 169.254.170.2, or `AWS_CONTAINER_CREDENTIALS_FULL_URI`).
        credentials: AwsCredentialsEndpoint,
    },
}

/// Where the task role's credentials are served (set by ECS in every container).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsCredentialsEndpoint {
    pub base: String,
    pub relative_uri: Option<String>,
    pub full_uri: Option<String>,
    #[serde(skip)]
    pub authorization_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TokenValue {
    File(PathBuf),
    #[serde(serialize_with = "redacted")]
    Literal(String),
}

fn redacted<S: serde::Serializer>(_: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<redacted>")
}

/// Where the workload certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CertSource {
    /// `CERT_DIR` with `cert-chain.pem`, `key.pem`, `root-cert.pem`.
    Dir(PathBuf),
    /// istiod's CA.
    Ca {
        endpoint: IstiodEndpoint,
        #[serde(with = "humantime_serde_secs")]
        ttl: Duration,
    },
}

mod humantime_serde_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

/// Inline or file local config (`LOCAL_XDS` / `LOCAL_XDS_PATH`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LocalXds {
    Path(PathBuf),
    Inline(String),
}

/// Outbound traffic to destinations outside the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundPolicy {
    /// `ALLOW_ANY`: plain TCP passthrough (ztunnel's behaviour).
    AllowAny,
    /// `REGISTRY_ONLY`: refused; only mesh destinations are reachable.
    RegistryOnly,
}

/// Where inbound mesh traffic is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InboundDelivery {
    /// `127.0.0.1:<port>` (or `::1`): an app bound to loopback is only reachable through the mesh.
    Loopback,
    /// The task IP the HBONE connection arrived on (ztunnel's behaviour).
    TaskIp,
}

/// Transparent capture through the task definition's `proxyConfiguration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CaptureMode {
    None,
    /// Listen on every address (the platform's REDIRECT sends outbound
    /// connections to loopback and inbound ones to the task's address).
    ProxyConfiguration {
        egress: SocketAddr,
        ingress: SocketAddr,
    },
}

/// One `LOCAL_UPSTREAMS` entry: listen locally, forward into the mesh.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LocalUpstream {
    pub listen: SocketAddr,
    pub host: String,
    pub port: u16,
}

/// HTTP/2 and pool settings for HBONE.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Http2Settings {
    pub stream_window: u32,
    pub connection_window: u32,
    pub frame_size: u32,
    pub pool_max_streams_per_connection: u32,
    #[serde(with = "humantime_serde_secs")]
    pub pool_unused_release_timeout: Duration,
}

/// The complete, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    pub identity: IdentitySource,
    pub trust_domain: String,
    pub cluster_id: String,
    pub cluster_domain: String,
    pub network: String,
    pub local_xds: Option<LocalXds>,
    pub xds: Option<IstiodEndpoint>,
    pub certs: CertSource,
    pub auth: AuthSource,
    /// Proxy metadata sent to istiod in the xDS node (from `ISTIO_META_*` etc.).
    pub node_env: Vec<(String, String)>,
    pub socks5_addr: Option<SocketAddr>,
    pub http_proxy_addr: Option<SocketAddr>,
    pub hbone_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub stats_addr: SocketAddr,
    pub readiness_addr: SocketAddr,
    pub local_upstreams: Vec<LocalUpstream>,
    pub capture: CaptureMode,
    pub inbound_delivery: InboundDelivery,
    pub outbound_policy: OutboundPolicy,
    pub http2: Http2Settings,
    pub tls12: bool,
    pub worker_threads: usize,
    #[serde(with = "humantime_serde_secs")]
    pub termination_deadline: Duration,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub istio_version: String,
    pub response_baggage: bool,
    pub authz_info_logging: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Environment variables, as a map (so tests can pass their own).
pub type Env = BTreeMap<String, String>;

struct Vars<'a> {
    env: &'a Env,
}

impl<'a> Vars<'a> {
    /// A set, non-empty value.
    fn get(&self, k: &str) -> Option<&'a str> {
        self.env
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Set at all (an explicitly empty value counts: it disables some features).
    fn is_set(&self, k: &str) -> bool {
        self.env.contains_key(k)
    }

    fn parse<T: std::str::FromStr>(
        &self,
        k: &str,
        expected: &str,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| err(k, v, expected)),
        }
    }

    fn bool(&self, k: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(err(k, v, "true or false")),
            },
        }
    }

    fn duration(&self, k: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => parse_duration(v).ok_or_else(|| {
                err(
                    k,
                    v,
                    "a duration such as 30s, 5m, 24h (or a number of seconds)",
                )
            }),
        }
    }

    /// A listener address; `off` (or an explicitly empty value) disables it.
    fn listener(&self, k: &str, default: SocketAddr) -> Result<Option<SocketAddr>, ConfigError> {
        match self.env.get(k).map(String::as_str) {
            None => Ok(Some(default)),
            Some("") | Some("off") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| err(k, v, "an address such as 127.0.0.1:15080, or off")),
        }
    }

    fn required_listener(&self, k: &str, default: SocketAddr) -> Result<SocketAddr, ConfigError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| err(k, v, "an address such as [::]:15008 or 0.0.0.0:15008")),
        }
    }

    fn prefixed(&self, prefix: &str) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|h| (h.to_string(), v.clone())))
            .filter(|(h, _)| !h.is_empty())
            .collect()
    }
}

/// Durations as ztunnel accepts them: Go-style (`30s`, `5m`, `1h30m`, `100ms`) or bare seconds.
pub fn parse_duration(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    humantime::parse_duration(v).ok()
}

/// The bootstrap token's content (see `zs_xds::bootstrap`); decoded before parsing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bootstrap {
    pub url: Option<String>,
    pub ca_cert: Option<String>,
    pub namespace: Option<String>,
    pub service_account: Option<String>,
    pub platform: Option<String>,
    pub token: Option<String>,
    pub network: Option<String>,
    pub remote: bool,
}

/// istiod's service name, which its certificate always carries.
pub const ISTIOD_SERVICE_NAME: &str = "istiod.istio-system.svc";

fn wildcard(port: u16, ipv6: bool) -> SocketAddr {
    if ipv6 {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)
    } else {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn with_scheme(url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("https://{url}")
    }
}

fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = hostport.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)
}

impl Config {
    /// Parses the environment. `bootstrap` is the decoded `BOOTSTRAP_TOKEN`, if any.
    /// `ipv6_available` says whether `[::]` can be bound (else wildcards are `0.0.0.0`).
    pub fn from_env(
        env: &Env,
        bootstrap: Option<&Bootstrap>,
        ipv6_available: bool,
    ) -> Result<Config, ConfigError> {
        let v = Vars { env };
        let bs = bootstrap.cloned().unwrap_or_default();

        if let Some(mode) = v.get("PROXY_MODE")
            && mode != "dedicated"
        {
            return Err(err(
                "PROXY_MODE",
                mode,
                "dedicated (a sidecar proxies exactly one workload; shared mode needs the Istio CNI node agent)",
            ));
        }

        // --- who am I ---
        let trust_domain = v
            .get("TRUST_DOMAIN")
            .unwrap_or(zs_identity::DEFAULT_TRUST_DOMAIN)
            .to_string();
        let identity = if let Some(info) = v.get("PROXY_WORKLOAD_INFO") {
            let parts: Vec<&str> = info.split('/').collect();
            match parts.as_slice() {
                [ns, name, sa] if !ns.is_empty() && !name.is_empty() && !sa.is_empty() => {
                    IdentitySource::Explicit(WorkloadInfo {
                        namespace: ns.to_string(),
                        name: name.to_string(),
                        service_account: sa.to_string(),
                    })
                }
                _ => {
                    return Err(err(
                        "PROXY_WORKLOAD_INFO",
                        info,
                        "namespace/name/serviceAccount",
                    ));
                }
            }
        } else if let Some(uri) = v.get("ECS_CONTAINER_METADATA_URI_V4") {
            IdentitySource::EcsTask {
                namespace: bs
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "istio-system".into()),
                service_account: bs
                    .service_account
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                metadata_uri: uri.to_string(),
            }
        } else if let (Some(ns), Some(sa)) = (&bs.namespace, &bs.service_account) {
            // A generic bootstrap token (any platform) names the namespace and
            // service account; the workload is this host.
            let name = v
                .get("POD_NAME")
                .map(str::to_string)
                .or_else(|| v.get("HOSTNAME").map(str::to_string))
                .or_else(|| {
                    std::fs::read_to_string("/etc/hostname")
                        .ok()
                        .map(|h| h.trim().to_string())
                })
                .filter(|n| !n.is_empty() && !n.contains('/'))
                .ok_or_else(|| {
                    err(
                        "PROXY_WORKLOAD_INFO",
                        "",
                        "namespace/name/serviceAccount, or POD_NAME/HOSTNAME to name this workload",
                    )
                })?;
            IdentitySource::Explicit(WorkloadInfo {
                namespace: ns.clone(),
                name,
                service_account: sa.clone(),
            })
        } else {
            return Err(err(
                "PROXY_WORKLOAD_INFO",
                "",
                "namespace/name/serviceAccount (required outside ECS, where task metadata names the workload)",
            ));
        };
        if let IdentitySource::Explicit(w) = &identity
            && zs_identity::Identity::new(&trust_domain, &w.namespace, &w.service_account).is_err()
        {
            return Err(err(
                "PROXY_WORKLOAD_INFO",
                v.get("PROXY_WORKLOAD_INFO").unwrap_or_default(),
                "namespace and service account without '/'",
            ));
        }

        let cluster_id = v
            .get("ISTIO_META_CLUSTER_ID")
            .or(v.get("CLUSTER_ID"))
            .unwrap_or("Kubernetes")
            .to_string();
        let network = v
            .get("NETWORK")
            .or(v.get("ISTIO_META_NETWORK"))
            .map(str::to_string)
            .or_else(|| (!bs.remote).then(|| bs.network.clone()).flatten())
            .unwrap_or_default();

        // --- local config ---
        let local_xds = match (v.get("LOCAL_XDS_PATH"), v.get("LOCAL_XDS")) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "LOCAL_XDS",
                    "(set)",
                    "only one of LOCAL_XDS_PATH and LOCAL_XDS",
                ));
            }
            (Some(p), None) => Some(LocalXds::Path(p.into())),
            (None, Some(y)) => Some(LocalXds::Inline(y.to_string())),
            (None, None) => None,
        };

        // --- istiod ---
        let token_root = bs.ca_cert.clone();
        let root = |var: &str| -> Result<RootCa, ConfigError> {
            match v.get(var) {
                Some(val) => RootCa::parse(var, val),
                None => match &token_root {
                    Some(pem) => Ok(RootCa::Pem(pem.clone())),
                    None => Ok(RootCa::File("./var/run/secrets/istio/root-cert.pem".into())),
                },
            }
        };
        // Through an east-west gateway the URL names the gateway's load balancer;
        // istiod's certificate names istiod's service.
        let server_name_for = |url: &str| -> Option<String> {
            match v.get("ISTIOD_SERVER_NAME") {
                Some(n) => Some(n.to_string()),
                None if bootstrap.is_some() && !url_host(url).starts_with("istiod.") => {
                    Some(ISTIOD_SERVICE_NAME.to_string())
                }
                None => None,
            }
        };
        let xds_url = if v.is_set("XDS_ADDRESS") {
            v.get("XDS_ADDRESS").map(with_scheme)
        } else {
            bs.url.as_deref().map(with_scheme)
        };
        let xds = match xds_url {
            Some(url) => Some(IstiodEndpoint {
                root: root("XDS_ROOT_CA")?,
                alt_hostname: v.get("ALT_XDS_HOSTNAME").map(str::to_string),
                server_name: server_name_for(&url),
                headers: v.prefixed("XDS_HEADER_"),
                url,
            }),
            None => None,
        };
        if xds.is_none() && local_xds.is_none() {
            return Err(err(
                "XDS_ADDRESS",
                v.get("XDS_ADDRESS").unwrap_or_default(),
                "istiod's URL (or BOOTSTRAP_TOKEN, or a LOCAL_XDS_PATH file): the sidecar has no source of mesh configuration",
            ));
        }

        let ttl = v.duration("SECRET_TTL", Duration::from_secs(24 * 3600))?;
        let certs = match (v.get("CERT_DIR"), v.is_set("CA_ADDRESS")) {
            (Some(dir), false) => CertSource::Dir(dir.into()),
            (_, true) if v.get("CA_ADDRESS").is_none() => match v.get("CERT_DIR") {
                Some(dir) => CertSource::Dir(dir.into()),
                None => {
                    return Err(err(
                        "CA_ADDRESS",
                        "",
                        "istiod's CA URL, or CERT_DIR with cert-chain.pem, key.pem and root-cert.pem",
                    ));
                }
            },
            _ => {
                let url = match v.get("CA_ADDRESS") {
                    Some(u) => with_scheme(u),
                    None => match &xds {
                        Some(x) => x.url.clone(),
                        None => {
                            return Err(err(
                                "CERT_DIR",
                                "",
                                "a directory with cert-chain.pem, key.pem and root-cert.pem, or CA_ADDRESS/XDS_ADDRESS for istiod's CA",
                            ));
                        }
                    },
                };
                CertSource::Ca {
                    endpoint: IstiodEndpoint {
                        root: root("CA_ROOT_CA")?,
                        alt_hostname: v.get("ALT_CA_HOSTNAME").map(str::to_string),
                        server_name: server_name_for(&url),
                        headers: v.prefixed("CA_HEADER_"),
                        url,
                    },
                    ttl,
                }
            }
        };

        let auth = if let Some(t) = v.get("AUTH_TOKEN") {
            if std::path::Path::new(t).exists() {
                AuthSource::Token(TokenValue::File(t.into()))
            } else {
                AuthSource::Token(TokenValue::Literal(t.to_string()))
            }
        } else if let Some(t) = &bs.token {
            AuthSource::Token(TokenValue::Literal(t.clone()))
        } else if matches!(bs.platform.as_deref(), Some("ecs") | Some("ecs-ec2")) {
            let region = v
                .get("AWS_REGION")
                .or(v.get("AWS_DEFAULT_REGION"))
                .ok_or_else(|| {
                    err(
                        "AWS_REGION",
                        "",
                        "the task's AWS region (Fargate sets it), needed to sign the IAM identity proof for istiod",
                    )
                })?;
            let credentials = AwsCredentialsEndpoint {
                base: v
                    .get("ECS_CREDENTIALS_ENDPOINT")
                    .unwrap_or("http://169.254.170.2")
                    .to_string(),
                relative_uri: v
                    .get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
                    .map(str::to_string),
                full_uri: v
                    .get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
                    .map(str::to_string),
                authorization_token: v
                    .get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
                    .map(str::to_string),
            };
            if credentials.relative_uri.is_none() && credentials.full_uri.is_none() {
                return Err(err(
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    "",
                    "the ECS credentials path (ECS sets it when the task has a task role; IAM authentication to istiod needs one)",
                ));
            }
            AuthSource::AwsIam {
                region: region.to_string(),
                credentials,
            }
        } else if std::path::Path::new("./var/run/secrets/tokens/istio-token").exists() {
            AuthSource::Token(TokenValue::File(
                "./var/run/secrets/tokens/istio-token".into(),
            ))
        } else {
            AuthSource::None
        };

        let mut node_env: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| {
                k.starts_with("ISTIO_META_")
                    || k.starts_with("ISTIO_METAJSON_")
                    || ["POD_NAME", "POD_NAMESPACE", "INSTANCE_IP", "NODE_NAME"]
                        .contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !network.is_empty() && !env.contains_key("ISTIO_META_NETWORK") {
            node_env.push(("ISTIO_META_NETWORK".into(), network.clone()));
        }

        // --- listeners ---
        let ipv6 = ipv6_available && v.bool("IPV6_ENABLED", true)?;
        let socks5_addr = v.listener("SOCKS5_ADDR", loopback(15080))?;
        let http_proxy_addr = v.listener("HTTP_PROXY_ADDR", loopback(15081))?;
        let hbone_addr = v.required_listener("HBONE_ADDR", wildcard(15008, ipv6))?;
        let admin_addr = v.required_listener("ADMIN_ADDR", loopback(15000))?;
        let stats_addr = v.required_listener("STATS_ADDR", wildcard(15020, ipv6))?;
        let readiness_addr = v.required_listener("READINESS_ADDR", wildcard(15021, ipv6))?;
        if !admin_addr.ip().is_loopback() && !v.bool("ADMIN_ALLOW_REMOTE", false)? {
            return Err(err(
                "ADMIN_ADDR",
                &admin_addr.to_string(),
                "a loopback address (the admin endpoint can shut the sidecar down and dumps its config; set ADMIN_ALLOW_REMOTE=true to override)",
            ));
        }

        let local_upstreams = match v.get("LOCAL_UPSTREAMS") {
            None => Vec::new(),
            Some(list) => parse_local_upstreams(list)?,
        };

        let capture = match v.get("CAPTURE_MODE") {
            None | Some("none") => CaptureMode::None,
            Some("proxy-configuration") => CaptureMode::ProxyConfiguration {
                egress: wildcard(
                    v.parse("CAPTURE_EGRESS_PORT", "a port number")?
                        .unwrap_or(15001),
                    ipv6,
                ),
                ingress: wildcard(
                    v.parse("CAPTURE_INGRESS_PORT", "a port number")?
                        .unwrap_or(15006),
                    ipv6,
                ),
            },
            Some(other) => {
                return Err(err("CAPTURE_MODE", other, "none or proxy-configuration"));
            }
        };

        let inbound_delivery = match v.get("INBOUND_DELIVERY") {
            None | Some("loopback") => InboundDelivery::Loopback,
            Some("task-ip") => InboundDelivery::TaskIp,
            Some(other) => return Err(err("INBOUND_DELIVERY", other, "loopback or task-ip")),
        };
        let outbound_policy = match v.get("OUTBOUND_TRAFFIC_POLICY") {
            None | Some("ALLOW_ANY") => OutboundPolicy::AllowAny,
            Some("REGISTRY_ONLY") => OutboundPolicy::RegistryOnly,
            Some(other) => {
                return Err(err(
                    "OUTBOUND_TRAFFIC_POLICY",
                    other,
                    "ALLOW_ANY or REGISTRY_ONLY",
                ));
            }
        };

        let window = |k: &str, d: u32| -> Result<u32, ConfigError> {
            Ok(v.parse::<u32>(k, "a size in bytes")?.unwrap_or(d))
        };
        let http2 = Http2Settings {
            stream_window: window("HTTP2_STREAM_WINDOW_SIZE", 4 * 1024 * 1024)?,
            connection_window: window("HTTP2_CONNECTION_WINDOW_SIZE", 16 * 1024 * 1024)?,
            frame_size: window("HTTP2_FRAME_SIZE", 1024 * 1024)?,
            pool_max_streams_per_connection: v
                .parse("POOL_MAX_STREAMS_PER_CONNECTION", "a positive number")?
                .unwrap_or(100),
            pool_unused_release_timeout: v
                .duration("POOL_UNUSED_RELEASE_TIMEOUT", Duration::from_secs(300))?,
        };
        if !(16_384..=16_777_215).contains(&http2.frame_size) {
            return Err(err(
                "HTTP2_FRAME_SIZE",
                &http2.frame_size.to_string(),
                "between 16384 and 16777215 (the HTTP/2 limits)",
            ));
        }
        if http2.pool_max_streams_per_connection == 0 {
            return Err(err(
                "POOL_MAX_STREAMS_PER_CONNECTION",
                "0",
                "a positive number",
            ));
        }

        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let worker_threads = match v.get("ZTUNNEL_WORKER_THREADS") {
            None => cores.clamp(1, 2),
            Some(s) => parse_threads(s, cores).ok_or_else(|| {
                err(
                    "ZTUNNEL_WORKER_THREADS",
                    s,
                    "a number of threads, or a percentage of cores such as 50%",
                )
            })?,
        };

        let termination_deadline = match v.get("CONNECTION_TERMINATION_DEADLINE") {
            Some(_) => v.duration("CONNECTION_TERMINATION_DEADLINE", Duration::from_secs(5))?,
            None => {
                match v.parse::<u64>("TERMINATION_GRACE_PERIOD_SECONDS", "a number of seconds")? {
                    // ECS gives containers stopTimeout (default 30 s) between SIGTERM and SIGKILL.
                    Some(secs) if secs > 10 => Duration::from_secs(secs - 5),
                    Some(secs) => Duration::from_secs(secs.saturating_sub(1).max(1)),
                    None => Duration::from_secs(25),
                }
            }
        };

        let log_format = match v.get("LOG_FORMAT") {
            None | Some("text") | Some("plain") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(err("LOG_FORMAT", other, "text or json")),
        };

        Ok(Config {
            identity,
            trust_domain,
            cluster_id,
            cluster_domain: v
                .get("CLUSTER_DOMAIN")
                .unwrap_or("cluster.local")
                .to_string(),
            network,
            local_xds,
            xds,
            certs,
            auth,
            node_env,
            socks5_addr,
            http_proxy_addr,
            hbone_addr,
            admin_addr,
            stats_addr,
            readiness_addr,
            local_upstreams,
            capture,
            inbound_delivery,
            outbound_policy,
            http2,
            tls12: v.bool("TLS12_ENABLED", false)?,
            worker_threads,
            termination_deadline,
            log_format,
            log_filter: v.get("RUST_LOG").unwrap_or("info").to_string(),
            istio_version: v
                .get("ISTIO_META_ISTIO_VERSION")
                .unwrap_or("unknown")
                .to_string(),
            response_baggage: v.bool("ENABLE_RESPONSE_BAGGAGE", true)?,
            authz_info_logging: v.bool("AUTHZ_POLICY_INFO_LOGGING", false)?,
        })
    }

    /// The proxy's own ports, which no inbound request may target.
    pub fn illegal_ports(&self) -> Vec<u16> {
        let mut ports = vec![15001, 15006, self.hbone_addr.port()];
        if let Some(a) = self.socks5_addr {
            ports.push(a.port());
        }
        if let Some(a) = self.http_proxy_addr {
            ports.push(a.port());
        }
        ports.extend([
            self.admin_addr.port(),
            self.stats_addr.port(),
            self.readiness_addr.port(),
        ]);
        if let CaptureMode::ProxyConfiguration { egress, ingress } = self.capture {
            ports.extend([egress.port(), ingress.port()]);
        }
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

fn parse_threads(s: &str, cores: usize) -> Option<usize> {
    if let Some(pct) = s.strip_suffix('%') {
        let p: usize = pct.parse().ok().filter(|p| (1..=100).contains(p))?;
        return Some((cores * p).div_ceil(100).max(1));
    }
    match s.parse::<usize>().ok()? {
        0 => Some(cores),
        n => Some(n),
    }
}

/// `LOCAL_UPSTREAMS="127.0.0.1:9000=echo-service.ecs-demo-1.ecs.local:8080,…"`.
fn parse_local_upstreams(list: &str) -> Result<Vec<LocalUpstream>, ConfigError> {
    let expected = "comma-separated listen=host:port entries, e.g. 127.0.0.1:9000=echo-service.ns.ecs.local:8080";
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let bad = || err("LOCAL_UPSTREAMS", entry, expected);
            let (listen, target) = entry.split_once('=').ok_or_else(bad)?;
            let listen: SocketAddr = listen.trim().parse().map_err(|_| bad())?;
            let (host, port) = target.trim().rsplit_once(':').ok_or_else(bad)?;
            let port: u16 = port.parse().map_err(|_| bad())?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() || port == 0 {
                return Err(bad());
            }
            Ok(LocalUpstream {
                listen,
                host: host.to_string(),
                port,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base() -> Env {
        env(&[
            ("PROXY_WORKLOAD_INFO", "ecs-demo-1/task-1/echo"),
            ("LOCAL_XDS_PATH", "/etc/mesh.yaml"),
            ("CERT_DIR", "/certs"),
        ])
    }

    #[test]
    fn static_configuration_gets_ztunnel_defaults() {
        let c = Config::from_env(&base(), None, true).unwrap();
        assert_eq!(
            c.identity,
            IdentitySource::Explicit(WorkloadInfo {
                namespace: "ecs-demo-1".into(),
                name: "task-1".into(),
                service_account: "echo".into()
            })
        );
        assert_eq!(c.socks5_addr, Some("127.0.0.1:15080".parse().unwrap()));
        assert_eq!(c.http_proxy_addr, Some("127.0.0.1:15081".parse().unwrap()));
        assert_eq!(c.hbone_addr, "[::]:15008".parse().unwrap());
        assert_eq!(c.admin_addr, "127.0.0.1:15000".parse().unwrap());
        assert_eq!(c.stats_addr, "[::]:15020".parse().unwrap());
        assert_eq!(c.readiness_addr, "[::]:15021".parse().unwrap());
        assert_eq!(c.xds, None);
        assert_eq!(c.certs, CertSource::Dir("/certs".into()));
        assert_eq!(c.http2.stream_window, 4_194_304);
        assert_eq!(c.http2.connection_window, 16_777_216);
        assert_eq!(c.http2.frame_size, 1_048_576);
        assert_eq!(c.http2.pool_max_streams_per_connection, 100);
        assert_eq!(c.trust_domain, "cluster.local");
        assert_eq!(c.cluster_id, "Kubernetes");
        assert_eq!(c.inbound_delivery, InboundDelivery::Loopback);
        assert_eq!(c.outbound_policy, OutboundPolicy::AllowAny);
        assert_eq!(c.termination_deadline, Duration::from_secs(25));
    }

    #[test]
    fn without_ipv6_wildcards_are_ipv4() {
        let c = Config::from_env(&base(), None, false).unwrap();
        assert_eq!(c.hbone_addr, "0.0.0.0:15008".parse().unwrap());
    }

    #[test]
    fn invalid_values_name_the_variable_the_value_and_the_expectation() {
        let mut e = base();
        e.insert("SOCKS5_ADDR".into(), "localhost".into());
        assert_eq!(
            Config::from_env(&e, None, true).unwrap_err().to_string(),
            "invalid SOCKS5_ADDR=\"localhost\": expected an address such as 127.0.0.1:15080, or off"
        );
        let mut e = base();
        e.insert("PROXY_WORKLOAD_INFO".into(), "ns/name".into());
        assert_eq!(
            Config::from_env(&e, None, true).unwrap_err().to_string(),
            "invalid PROXY_WORKLOAD_INFO=\"ns/name\": expected namespace/name/serviceAccount"
        );
        let mut e = base();
        e.insert("SECRET_TTL".into(), "soon".into());
        assert!(
            Config::from_env(&e, None, true)
                .unwrap_err()
                .to_string()
                .starts_with("invalid SECRET_TTL=\"soon\"")
        );
        let mut e = base();
        e.insert("PROXY_MODE".into(), "shared".into());
        assert_eq!(
            Config::from_env(&e, None, true).unwrap_err().var,
            "PROXY_MODE"
        );
    }

    #[test]
    fn a_listener_can_be_turned_off() {
        let mut e = base();
        e.insert("HTTP_PROXY_ADDR".into(), "off".into());
        e.insert("SOCKS5_ADDR".into(), "".into());
        let c = Config::from_env(&e, None, true).unwrap();
        assert_eq!((c.http_proxy_addr, c.socks5_addr), (None, None));
    }

    #[test]
    fn admin_must_stay_on_loopback() {
        let mut e = base();
        e.insert("ADMIN_ADDR".into(), "0.0.0.0:15000".into());
        assert_eq!(
            Config::from_env(&e, None, true).unwrap_err().var,
            "ADMIN_ADDR"
        );
    }

    #[test]
    fn no_source_of_mesh_configuration_is_an_error() {
        let e = env(&[("PROXY_WORKLOAD_INFO", "a/b/c"), ("CERT_DIR", "/certs")]);
        assert_eq!(
            Config::from_env(&e, None, true).unwrap_err().var,
            "XDS_ADDRESS"
        );
    }

    #[test]
    fn bootstrap_token_alone_configures_istiod_identity_and_iam() {
        let bs = Bootstrap {
            url: Some("https://eastwest-lb.elb.amazonaws.com:15012".into()),
            ca_cert: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
            namespace: Some("ecs-demo-1".into()),
            service_account: Some("echo".into()),
            platform: Some("ecs".into()),
            token: None,
            network: Some("eks".into()),
            remote: true,
        };
        let e = env(&[
            (
                "ECS_CONTAINER_METADATA_URI_V4",
                "http://169.254.170.2/v4/abc",
            ),
            ("AWS_REGION", "us-east-2"),
            (
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/v2/credentials/abc",
            ),
            ("BOOTSTRAP_TOKEN", "x"),
        ]);
        let c = Config::from_env(&e, Some(&bs), true).unwrap();
        assert_eq!(
            c.identity,
            IdentitySource::EcsTask {
                namespace: "ecs-demo-1".into(),
                service_account: "echo".into(),
                metadata_uri: "http://169.254.170.2/v4/abc".into()
            }
        );
        let xds = c.xds.as_ref().unwrap();
        assert_eq!(xds.url, "https://eastwest-lb.elb.amazonaws.com:15012");
        assert_eq!(xds.server_name.as_deref(), Some("istiod.istio-system.svc"));
        assert!(matches!(xds.root, RootCa::Pem(_)));
        match &c.certs {
            CertSource::Ca { endpoint, ttl } => {
                assert_eq!(endpoint.url, xds.url);
                assert_eq!(*ttl, Duration::from_secs(86400));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.auth,
            AuthSource::AwsIam {
                region: "us-east-2".into(),
                credentials: AwsCredentialsEndpoint {
                    base: "http://169.254.170.2".into(),
                    relative_uri: Some("/v2/credentials/abc".into()),
                    full_uri: None,
                    authorization_token: None,
                }
            }
        );
        // A remote workload is not on the control plane's network.
        assert_eq!(c.network, "");
    }

    #[test]
    fn generic_bootstrap_token_names_the_workload_after_the_host() {
        let bs = Bootstrap {
            url: Some("https://istiod.istio-system.svc:15012".into()),
            namespace: Some("azure-apps".into()),
            service_account: Some("web".into()),
            token: Some("t".into()),
            ..Default::default()
        };
        let e = env(&[("HOSTNAME", "vm-web-1")]);
        let c = Config::from_env(&e, Some(&bs), true).unwrap();
        assert_eq!(
            c.identity,
            IdentitySource::Explicit(WorkloadInfo {
                namespace: "azure-apps".into(),
                name: "vm-web-1".into(),
                service_account: "web".into()
            })
        );
    }

    #[test]
    fn explicit_variables_override_the_bootstrap_token() {
        let bs = Bootstrap {
            url: Some("https://lb:15012".into()),
            platform: Some("ecs".into()),
            ..Default::default()
        };
        let e = env(&[
            ("PROXY_WORKLOAD_INFO", "a/b/c"),
            ("XDS_ADDRESS", "istiod.istio-system.svc:15012"),
            ("XDS_ROOT_CA", "SYSTEM"),
            ("AUTH_TOKEN", "literal-token"),
            ("AWS_REGION", "us-east-2"),
        ]);
        let c = Config::from_env(&e, Some(&bs), true).unwrap();
        let xds = c.xds.unwrap();
        assert_eq!(xds.url, "https://istiod.istio-system.svc:15012");
        assert_eq!(xds.server_name, None);
        assert_eq!(xds.root, RootCa::System);
        assert_eq!(
            c.auth,
            AuthSource::Token(TokenValue::Literal("literal-token".into()))
        );
    }

    #[test]
    fn iam_auth_needs_a_region() {
        let bs = Bootstrap {
            url: Some("https://lb:15012".into()),
            platform: Some("ecs".into()),
            ..Default::default()
        };
        let e = env(&[("PROXY_WORKLOAD_INFO", "a/b/c")]);
        assert_eq!(
            Config::from_env(&e, Some(&bs), true).unwrap_err().var,
            "AWS_REGION"
        );
    }

    #[test]
    fn root_ca_that_is_neither_file_nor_pem_is_refused() {
        let mut e = base();
        e.insert("XDS_ADDRESS".into(), "istiod:15012".into());
        e.insert("XDS_ROOT_CA".into(), "/no/such/file.pem".into());
        assert_eq!(
            Config::from_env(&e, None, true).unwrap_err().var,
            "XDS_ROOT_CA"
        );
    }

    #[test]
    fn headers_and_node_metadata_are_collected() {
        let mut e = base();
        e.insert("XDS_ADDRESS".into(), "istiod:15012".into());
        e.insert("XDS_ROOT_CA".into(), "SYSTEM".into());
        e.insert("XDS_HEADER_x-team".into(), "payments".into());
        e.insert("ISTIO_META_ISTIO_VERSION".into(), "1.28.0".into());
        let c = Config::from_env(&e, None, true).unwrap();
        assert_eq!(
            c.xds.unwrap().headers,
            vec![("x-team".to_string(), "payments".to_string())]
        );
        assert_eq!(c.istio_version, "1.28.0");
        assert!(
            c.node_env
                .contains(&("ISTIO_META_ISTIO_VERSION".into(), "1.28.0".into()))
        );
    }

    #[test]
    fn local_upstreams_parse_and_reject_garbage() {
        let got = parse_local_upstreams(
            "127.0.0.1:9000=echo-service.ecs-demo-1.ecs.local:8080, 127.0.0.1:9001=[fd00::1]:80",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                LocalUpstream {
                    listen: "127.0.0.1:9000".parse().unwrap(),
                    host: "echo-service.ecs-demo-1.ecs.local".into(),
                    port: 8080
                },
                LocalUpstream {
                    listen: "127.0.0.1:9001".parse().unwrap(),
                    host: "fd00::1".into(),
                    port: 80
                }
            ]
        );
        for bad in [
            "127.0.0.1:9000",
            "x=y:1",
            "127.0.0.1:9000=host",
            "127.0.0.1:9000=host:0",
        ] {
            assert!(parse_local_upstreams(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn termination_deadline_follows_the_grace_period() {
        let mut e = base();
        e.insert("TERMINATION_GRACE_PERIOD_SECONDS".into(), "30".into());
        assert_eq!(
            Config::from_env(&e, None, true)
                .unwrap()
                .termination_deadline,
            Duration::from_secs(25)
        );
        e.insert("TERMINATION_GRACE_PERIOD_SECONDS".into(), "5".into());
        assert_eq!(
            Config::from_env(&e, None, true)
                .unwrap()
                .termination_deadline,
            Duration::from_secs(4)
        );
        e.insert("CONNECTION_TERMINATION_DEADLINE".into(), "2s".into());
        assert_eq!(
            Config::from_env(&e, None, true)
                .unwrap()
                .termination_deadline,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn worker_threads_accept_counts_and_percentages() {
        assert_eq!(parse_threads("3", 8), Some(3));
        assert_eq!(parse_threads("0", 8), Some(8));
        assert_eq!(parse_threads("25%", 8), Some(2));
        assert_eq!(parse_threads("1%", 2), Some(1));
        assert_eq!(parse_threads("150%", 2), None);
        assert_eq!(parse_threads("many", 2), None);
    }

    #[test]
    fn illegal_ports_include_every_listener() {
        let c = Config::from_env(&base(), None, true).unwrap();
        assert_eq!(
            c.illegal_ports(),
            vec![15000, 15001, 15006, 15008, 15020, 15021, 15080, 15081]
        );
    }

    #[test]
    fn url_host_handles_ports_and_ipv6() {
        assert_eq!(url_host("https://a.b:15012"), "a.b");
        assert_eq!(url_host("https://[fd00::1]:15012/x"), "fd00::1");
        assert_eq!(url_host("istiod"), "istiod");
    }
}
