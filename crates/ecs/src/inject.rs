//! The task-definition injector: what `ztunnel-sidecar inject` does.
//!
//! It takes an ECS task definition as `aws ecs describe-task-definition` prints
//! it (`{"taskDefinition": {...}, "tags": [...]}`) or the bare task definition
//! object, and returns the mesh-enabled task definition in the shape
//! `aws ecs register-task-definition --cli-input-json` accepts:
//!
//! - the fields ECS sets itself and refuses on registration are removed
//!   ([`READ_ONLY_FIELDS`]); the describe output's top-level `tags` move into
//!   the task definition;
//! - any container named `ztunnel` (an earlier injection, ours or
//!   `istioctl ecs add-service`'s) and every `dependsOn` on it are removed, and
//!   a fresh `ztunnel` container is appended (see [`inject`] for its fields);
//! - every other container gets `dependsOn: ztunnel HEALTHY`, after its own
//!   dependencies, so no application starts before the sidecar is ready;
//! - application containers selected by [`ProxyEnv`] get the proxy variables
//!   that send their outbound traffic to the sidecar;
//! - with [`Capture::ProxyConfiguration`], an `APPMESH` `proxyConfiguration`
//!   block makes the platform redirect traffic to the sidecar transparently;
//! - everything else is left untouched, in its original key order.
//!
//! Running it on its own output changes nothing: the result is byte-identical.
//! It is pure text in, text out; reading files and calling AWS are the CLI's
//! business.

use std::fmt;
use std::str::FromStr;

use crate::json::{Object, Value};

/// Name of the sidecar container, as `istioctl ecs add-service` names it.
pub const SIDECAR_CONTAINER: &str = "ztunnel";

/// The UID the sidecar runs as (`user` of the container). The container image
/// runs as this user too, and [`Capture::ProxyConfiguration`] exempts it from
/// redirection (`IgnoredUID`), which is what keeps the sidecar's own upstream
/// connections from looping back into itself.
pub const SIDECAR_UID: u32 = 1337;

/// Image used when `--image` is not given: this release of the sidecar.
pub const DEFAULT_IMAGE: &str = concat!(
    "ghcr.io/ztunnel-sidecar/ztunnel-sidecar:",
    env!("CARGO_PKG_VERSION")
);

/// Health check command of the sidecar container.
///
/// This is exactly what `istioctl ecs add-service` writes, without a leading
/// `"CMD"`, although the ECS API reference says the array should start with
/// `CMD` or `CMD-SHELL`. Task definitions written by `istioctl` run with it
/// today, and matching it keeps a task definition injected by either tool the
/// same; the image has `ztunnel` on its `PATH` so the exec form resolves.
pub const HEALTH_CHECK_COMMAND: [&str; 2] = ["ztunnel", "healthcheck"];

/// `ALL_PROXY` value: the sidecar's SOCKS5 listener, with names resolved by
/// the proxy (`socks5h`) so mesh hostnames need no DNS in the task.
pub const SOCKS5_PROXY_URL: &str = "socks5h://127.0.0.1:15080";

/// `HTTP_PROXY`/`HTTPS_PROXY` value: the sidecar's HTTP proxy listener
/// (CONNECT and absolute-URI requests). Go, gRPC, Node and Java clients only
/// speak HTTP proxies, and clients prefer the scheme-specific variable over
/// `ALL_PROXY`, so both kinds are set.
pub const HTTP_PROXY_URL: &str = "http://127.0.0.1:15081";

/// Hosts that must never go through the proxy: the ECS credentials and task
/// metadata endpoint, the instance metadata endpoint, and loopback. Existing
/// `NO_PROXY` entries are kept after these.
pub const NO_PROXY_HOSTS: [&str; 5] = [
    "169.254.170.2",
    "169.254.169.254",
    "localhost",
    "127.0.0.1",
    "::1",
];

/// `ProxyEgressPort` of the written `proxyConfiguration`: the port ztunnel
/// captures outbound traffic on.
pub const CAPTURE_EGRESS_PORT: u16 = 15001;

/// `ProxyIngressPort` of the written `proxyConfiguration`: the port ztunnel
/// captures plaintext inbound traffic on.
pub const CAPTURE_INGRESS_PORT: u16 = 15006;

/// `EgressIgnoredIPs` of the written `proxyConfiguration`: the ECS credentials
/// and metadata endpoints stay reachable directly.
pub const CAPTURE_EGRESS_IGNORED_IPS: &str = "169.254.170.2,169.254.169.254";

/// Soft memory limit of the sidecar container, in MiB (`memoryReservation`).
/// A reservation, not a cap: the sidecar may use more when the task has it.
pub const SIDECAR_MEMORY_RESERVATION_MIB: u64 = 64;

/// Fields `describe-task-definition` prints but `register-task-definition`
/// rejects; [`inject`] removes them.
pub const READ_ONLY_FIELDS: [&str; 8] = [
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
];

/// Ports the sidecar listens on inside the task (SOCKS5, HTTP proxy, HBONE,
/// admin, metrics, readiness). An application mapping one of them could not
/// start next to the sidecar.
const SIDECAR_PORTS: [u16; 6] = [15080, 15081, 15008, 15000, 15020, 15021];

/// How to inject. Each field is one flag of `ztunnel-sidecar inject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectOptions {
    /// `--image <IMAGE>`: the sidecar image. Default [`DEFAULT_IMAGE`].
    pub image: String,
    /// `--bootstrap-token <TOKEN>`: the bootstrap token, written in clear as the
    /// `BOOTSTRAP_TOKEN` environment variable (what `istioctl` does). Fine for
    /// `--auth iam` tokens, which hold no secret; anyone who can read the task
    /// definition can read it.
    pub bootstrap_token: Option<String>,
    /// `--bootstrap-token-secret <ARN>`: a Secrets Manager secret or SSM
    /// parameter ARN holding the token, written as `secrets: [{name:
    /// BOOTSTRAP_TOKEN, valueFrom: <ARN>}]`. ECS fetches it with the task
    /// execution role at start, so the token never appears in the task
    /// definition. The safer choice for `--auth token`, whose token carries a
    /// Kubernetes credential. Exactly one of the two token options is required.
    pub bootstrap_token_secret: Option<String>,
    /// `--proxy-env all|none|<name>,<name>…`: which application containers get
    /// the proxy variables. Default `all`.
    pub proxy_env: ProxyEnv,
    /// `--capture proxy-configuration`: also write an `APPMESH`
    /// `proxyConfiguration` for transparent capture. Default: keep whatever
    /// `proxyConfiguration` the task definition has.
    pub capture: Capture,
    /// `--auth iam|token`: how the sidecar authenticates to istiod. Default
    /// `iam`, which needs a `taskRoleArn`.
    pub auth: Auth,
    /// `--dry-run`: print `diff(&output.before, &output.json)` instead of the
    /// task definition. [`inject`] itself ignores it; it lives here so the
    /// whole command line parses into one value.
    pub dry_run: bool,
}

impl Default for InjectOptions {
    /// Default image, no token (a token option must be set before
    /// [`inject`] succeeds), proxy variables in all application containers,
    /// no capture change, IAM authentication.
    fn default() -> Self {
        InjectOptions {
            image: DEFAULT_IMAGE.to_owned(),
            bootstrap_token: None,
            bootstrap_token_secret: None,
            proxy_env: ProxyEnv::All,
            capture: Capture::Keep,
            auth: Auth::Iam,
            dry_run: false,
        }
    }
}

/// Which application containers get proxy variables (`--proxy-env`).
///
/// Variables set by an earlier run are not removed from containers that are
/// no longer selected: the injector cannot tell them from the user's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyEnv {
    /// `all`: every container except the sidecar.
    All,
    /// `none`: no container; applications reach the mesh some other way
    /// (transparent capture, or their own proxy settings).
    None,
    /// `<name>,<name>…`: these containers; each must exist.
    Containers(Vec<String>),
}

impl ProxyEnv {
    fn selects(&self, container: &str) -> bool {
        match self {
            ProxyEnv::All => true,
            ProxyEnv::None => false,
            ProxyEnv::Containers(names) => names.iter().any(|n| n == container),
        }
    }
}

impl FromStr for ProxyEnv {
    type Err = ParseOptionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(ProxyEnv::All),
            "none" => Ok(ProxyEnv::None),
            _ => {
                let names: Vec<String> = s.split(',').map(|n| n.trim().to_owned()).collect();
                if names.iter().any(String::is_empty) {
                    return Err(ParseOptionError {
                        flag: "--proxy-env",
                        value: s.to_owned(),
                        expected: "all, none, or a comma-separated list of container names",
                    });
                }
                Ok(ProxyEnv::Containers(names))
            }
        }
    }
}

/// Whether to write transparent-capture configuration (`--capture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// Flag absent: keep any existing `proxyConfiguration` unchanged. If it
    /// already names the `ztunnel` container (an earlier
    /// `--capture proxy-configuration`), the sidecar keeps capture enabled.
    Keep,
    /// `proxy-configuration`: write an `APPMESH` `proxyConfiguration` naming
    /// the sidecar, and set `CAPTURE_MODE=proxy-configuration` on it. Needs
    /// Fargate platform 1.3.0 or later and at least one application port.
    ProxyConfiguration,
}

impl FromStr for Capture {
    type Err = ParseOptionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "proxy-configuration" => Ok(Capture::ProxyConfiguration),
            _ => Err(ParseOptionError {
                flag: "--capture",
                value: s.to_owned(),
                expected: "proxy-configuration",
            }),
        }
    }
}

/// How the sidecar authenticates to istiod (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `iam`: with the task role (bootstrap token platform `ecs`). The task
    /// definition must have a `taskRoleArn`.
    Iam,
    /// `token`: with a Kubernetes service account token carried in the
    /// bootstrap token (generic platform). No task role needed.
    Token,
}

impl FromStr for Auth {
    type Err = ParseOptionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "iam" => Ok(Auth::Iam),
            "token" => Ok(Auth::Token),
            _ => Err(ParseOptionError {
                flag: "--auth",
                value: s.to_owned(),
                expected: "iam or token",
            }),
        }
    }
}

/// A command-line value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} for {flag}: expected {expected}")]
pub struct ParseOptionError {
    /// The flag, e.g. `--capture`.
    pub flag: &'static str,
    /// The value given.
    pub value: String,
    /// What is accepted.
    pub expected: &'static str,
}

/// The result of [`inject`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectOutput {
    /// The mesh-enabled task definition: pretty-printed JSON, two-space
    /// indentation, trailing newline. Input for
    /// `aws ecs register-task-definition --cli-input-json file://…`.
    pub json: String,
    /// The input task definition (unwrapped, tags moved in, nothing else
    /// changed) printed in the same style as `json`, for `--dry-run` diffs.
    pub before: String,
    /// One line per change made, for humans.
    pub changes: Vec<String>,
}

/// Why a task definition cannot be injected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// The input is not JSON.
    #[error("task definition is not valid JSON (line {line}, column {column}): {message}")]
    Json {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the parser found.
        message: String,
    },
    /// The input is JSON but not an object.
    #[error("task definition must be a JSON object, found {found}")]
    NotAnObject {
        /// The JSON type found.
        found: &'static str,
    },
    /// A field has the wrong type.
    #[error("{path} must be {expected}")]
    InvalidField {
        /// Where, e.g. `container "web" dependsOn`.
        path: String,
        /// The type expected.
        expected: &'static str,
    },
    /// No `containerDefinitions`.
    #[error("task definition has no containerDefinitions")]
    MissingContainerDefinitions,
    /// A container without a name.
    #[error("containerDefinitions[{index}] has no name")]
    ContainerWithoutName {
        /// Its position in `containerDefinitions`.
        index: usize,
    },
    /// The network mode is not `awsvpc`.
    #[error(
        "network mode is {}; Fargate and the mesh need awsvpc network mode: tasks share one network namespace so 127.0.0.1 reaches the sidecar",
        found.as_deref().map_or_else(|| "not set".to_owned(), |m| format!("{m:?}"))
    )]
    NotAwsvpc {
        /// The `networkMode` found, if any.
        found: Option<String>,
    },
    /// IAM authentication without a task role.
    #[error(
        "task definition has no taskRoleArn: with --auth iam the sidecar proves its identity to istiod with the task role; add a task role or use --auth token"
    )]
    NoTaskRole,
    /// A token secret without an execution role to fetch it.
    #[error(
        "task definition has no executionRoleArn: ECS fetches --bootstrap-token-secret with the task execution role"
    )]
    NoExecutionRole,
    /// Only the sidecar (or nothing) is in the task.
    #[error("task definition has no application container besides \"ztunnel\"")]
    NoAppContainer,
    /// `--proxy-env` names a container that is not an application container.
    #[error(
        "--proxy-env names {name:?}, which is not an application container of this task definition"
    )]
    UnknownContainer {
        /// The name given.
        name: String,
    },
    /// Neither token option given.
    #[error("a bootstrap token is required: pass --bootstrap-token or --bootstrap-token-secret")]
    MissingBootstrapToken,
    /// Both token options given.
    #[error("--bootstrap-token and --bootstrap-token-secret are mutually exclusive")]
    ConflictingBootstrapToken,
    /// `--image` is empty.
    #[error("--image must not be empty")]
    EmptyImage,
    /// Capture needs application ports.
    #[error(
        "--capture proxy-configuration needs at least one containerPort in the application containers' portMappings (ECS requires AppPorts)"
    )]
    NoAppPorts,
    /// An application maps a port the sidecar listens on.
    #[error(
        "container {container:?} maps port {port}, which the sidecar listens on in the same network namespace"
    )]
    PortConflict {
        /// The application container.
        container: String,
        /// The port.
        port: u16,
    },
}

/// Where the sidecar's bootstrap token comes from.
enum TokenSource<'a> {
    Value(&'a str),
    Secret(&'a str),
}

impl InjectOptions {
    fn token_source(&self) -> Result<TokenSource<'_>, InjectError> {
        match (&self.bootstrap_token, &self.bootstrap_token_secret) {
            (Some(_), Some(_)) => Err(InjectError::ConflictingBootstrapToken),
            (Some(token), None) if !token.is_empty() => Ok(TokenSource::Value(token)),
            (None, Some(arn)) if !arn.is_empty() => Ok(TokenSource::Secret(arn)),
            _ => Err(InjectError::MissingBootstrapToken),
        }
    }
}

/// Injects the sidecar into a task definition.
///
/// The `ztunnel` container written:
///
/// | field | value |
/// |---|---|
/// | `name` | `ztunnel` |
/// | `image` | `--image` |
/// | `cpu` | `0`: no reserved CPU units; the sidecar shares the task's CPU |
/// | `memoryReservation` | [`SIDECAR_MEMORY_RESERVATION_MIB`] (soft limit) |
/// | `essential` | `true`: without the sidecar the task has no mesh traffic |
/// | `user` | `"1337"` ([`SIDECAR_UID`]) |
/// | `environment` | `BOOTSTRAP_TOKEN` (with `--bootstrap-token`), `CAPTURE_MODE=proxy-configuration` when capture is on |
/// | `secrets` | `BOOTSTRAP_TOKEN` from `--bootstrap-token-secret` |
/// | `healthCheck` | [`HEALTH_CHECK_COMMAND`], interval 5 s, timeout 5 s, 3 retries, start period 10 s |
/// | `logConfiguration` | `awslogs` into the first application container's `awslogs-group` (and `awslogs-region`), stream prefix `ztunnel`; absent when no application container logs with `awslogs` |
///
/// `awslogs-create-group` is not set: the application's group exists, and
/// setting it would need `logs:CreateLogGroup`, which the usual execution
/// role policy lacks.
///
/// Application containers selected by `--proxy-env` get `ALL_PROXY`,
/// `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` in both upper and lower case
/// (curl reads only lowercase `http_proxy`; gRPC reads lowercase). Existing
/// entries with these names are replaced in place; `NO_PROXY` keeps the
/// entries it had after [`NO_PROXY_HOSTS`].
///
/// With [`Capture::ProxyConfiguration`] the task gets:
///
/// ```json
/// "proxyConfiguration": {
///   "type": "APPMESH",
///   "containerName": "ztunnel",
///   "properties": [
///     {"name": "IgnoredUID", "value": "1337"},
///     {"name": "ProxyIngressPort", "value": "15006"},
///     {"name": "ProxyEgressPort", "value": "15001"},
///     {"name": "AppPorts", "value": "<application containerPorts>"},
///     {"name": "EgressIgnoredIPs", "value": "169.254.170.2,169.254.169.254"}
///   ]
/// }
/// ```
pub fn inject(input: &str, opts: &InjectOptions) -> Result<InjectOutput, InjectError> {
    let token = opts.token_source()?;
    if opts.image.trim().is_empty() {
        return Err(InjectError::EmptyImage);
    }
    let document: Value = serde_json::from_str(input).map_err(json_error)?;
    let (mut td, wrapper_tags) = unwrap(document)?;
    let before = {
        let mut original = td.clone();
        if let Some(tags) = &wrapper_tags {
            original.insert("tags", tags.clone());
        }
        Value::Object(original).to_pretty()
    };

    check_network_mode(&td)?;
    if opts.auth == Auth::Iam && td.get_str("taskRoleArn").is_none_or(str::is_empty) {
        return Err(InjectError::NoTaskRole);
    }
    if matches!(token, TokenSource::Secret(_))
        && td.get_str("executionRoleArn").is_none_or(str::is_empty)
    {
        return Err(InjectError::NoExecutionRole);
    }

    let mut changes = Vec::new();
    let removed: Vec<&str> = READ_ONLY_FIELDS
        .into_iter()
        .filter(|field| td.remove(field).is_some())
        .collect();
    if !removed.is_empty() {
        changes.push(format!("removed read-only fields: {}", removed.join(", ")));
    }

    let existing_capture = td
        .get("proxyConfiguration")
        .and_then(Value::as_object)
        .and_then(|pc| pc.get_str("containerName"))
        .map(str::to_owned);
    let capture = opts.capture == Capture::ProxyConfiguration
        || existing_capture.as_deref() == Some(SIDECAR_CONTAINER);

    let containers = match td.get_mut("containerDefinitions") {
        None | Some(Value::Null) => return Err(InjectError::MissingContainerDefinitions),
        Some(value) => value
            .as_array_mut()
            .ok_or_else(|| InjectError::InvalidField {
                path: "containerDefinitions".to_owned(),
                expected: "an array",
            })?,
    };
    let app_ports = rewrite_containers(containers, opts, &token, capture, &mut changes)?;

    if opts.capture == Capture::ProxyConfiguration {
        if app_ports.is_empty() {
            return Err(InjectError::NoAppPorts);
        }
        let ports = app_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        match &existing_capture {
            Some(name) if name != SIDECAR_CONTAINER => changes.push(format!(
                "replaced proxyConfiguration that redirected to {name:?}"
            )),
            _ => {}
        }
        changes.push(format!(
            "proxyConfiguration: APPMESH redirect to \"ztunnel\" (ingress {CAPTURE_INGRESS_PORT}, egress {CAPTURE_EGRESS_PORT}, AppPorts {ports})"
        ));
        td.insert("proxyConfiguration", proxy_configuration(&ports));
    } else if let Some(name) = &existing_capture {
        changes.push(format!(
            "kept existing proxyConfiguration (redirects to {name:?})"
        ));
    }

    if let Some(tags) = wrapper_tags {
        td.insert("tags", tags);
    }
    Ok(InjectOutput {
        json: Value::Object(td).to_pretty(),
        before,
        changes,
    })
}

/// Removes the old sidecar, rewires every application container, appends the
/// new sidecar. Returns the application ports (for `AppPorts`).
fn rewrite_containers(
    containers: &mut Vec<Value>,
    opts: &InjectOptions,
    token: &TokenSource<'_>,
    capture: bool,
    changes: &mut Vec<String>,
) -> Result<Vec<u16>, InjectError> {
    for (index, container) in containers.iter().enumerate() {
        let object = container
            .as_object()
            .ok_or_else(|| InjectError::InvalidField {
                path: format!("containerDefinitions[{index}]"),
                expected: "an object",
            })?;
        if object.get_str("name").is_none_or(str::is_empty) {
            return Err(InjectError::ContainerWithoutName { index });
        }
    }
    let name_of = |container: &Value| {
        container
            .as_object()
            .and_then(|c| c.get_str("name"))
            .unwrap_or_default()
            .to_owned()
    };

    let mut old_images = Vec::new();
    containers.retain(|container| {
        let is_sidecar = name_of(container) == SIDECAR_CONTAINER;
        if is_sidecar {
            old_images.push(
                container
                    .as_object()
                    .and_then(|c| c.get_str("image"))
                    .unwrap_or("no image")
                    .to_owned(),
            );
        }
        !is_sidecar
    });
    if containers.is_empty() {
        return Err(InjectError::NoAppContainer);
    }
    if let ProxyEnv::Containers(names) = &opts.proxy_env
        && let Some(unknown) = names
            .iter()
            .find(|n| !containers.iter().any(|c| name_of(c) == **n))
    {
        return Err(InjectError::UnknownContainer {
            name: unknown.clone(),
        });
    }

    let log = app_log_destination(containers);
    let mut app_ports: Vec<u16> = Vec::new();
    for container in containers.iter_mut() {
        let name = name_of(container);
        let Some(object) = container.as_object_mut() else {
            continue;
        };
        for port in container_ports(object, &name)? {
            let taken = SIDECAR_PORTS.contains(&port)
                || (capture && (port == CAPTURE_EGRESS_PORT || port == CAPTURE_INGRESS_PORT));
            if taken {
                return Err(InjectError::PortConflict {
                    container: name,
                    port,
                });
            }
            if !app_ports.contains(&port) {
                app_ports.push(port);
            }
        }
        depend_on_sidecar(object, &name)?;
        changes.push(format!("container {name:?}: dependsOn \"ztunnel\" HEALTHY"));
        if opts.proxy_env.selects(&name) {
            let no_proxy = set_proxy_env(object, &name)?;
            changes.push(format!(
                "container {name:?}: ALL_PROXY={SOCKS5_PROXY_URL}, HTTPS_PROXY/HTTP_PROXY={HTTP_PROXY_URL}, NO_PROXY={no_proxy} (also lowercase)"
            ));
        }
    }

    containers.push(sidecar_container(opts, token, log.as_ref(), capture));
    changes.push(match old_images.as_slice() {
        [] => format!("added container \"ztunnel\" (image {})", opts.image),
        old => format!(
            "replaced container \"ztunnel\" (image {} -> {})",
            old.join(", "),
            opts.image
        ),
    });
    if log.is_none() {
        changes.push(
            "\"ztunnel\" has no logConfiguration: no application container logs with awslogs"
                .to_owned(),
        );
    }
    Ok(app_ports)
}

/// Splits the describe-output wrapper, if any, into the task definition and
/// its top-level `tags`.
fn unwrap(document: Value) -> Result<(Object, Option<Value>), InjectError> {
    let Value::Object(mut top) = document else {
        return Err(InjectError::NotAnObject {
            found: document.kind(),
        });
    };
    match top.remove("taskDefinition") {
        None => Ok((top, None)),
        Some(Value::Object(td)) => {
            let tags = top.remove("tags");
            if let Some(tags) = &tags
                && tags.as_array().is_none()
            {
                return Err(InjectError::InvalidField {
                    path: "tags".to_owned(),
                    expected: "an array",
                });
            }
            Ok((td, tags))
        }
        Some(_) => Err(InjectError::InvalidField {
            path: "taskDefinition".to_owned(),
            expected: "an object",
        }),
    }
}

fn check_network_mode(td: &Object) -> Result<(), InjectError> {
    match td.get("networkMode") {
        Some(Value::String(mode)) if mode == "awsvpc" => Ok(()),
        Some(Value::String(mode)) => Err(InjectError::NotAwsvpc {
            found: Some(mode.clone()),
        }),
        None | Some(Value::Null) => Err(InjectError::NotAwsvpc { found: None }),
        Some(_) => Err(InjectError::InvalidField {
            path: "networkMode".to_owned(),
            expected: "a string",
        }),
    }
}

/// Where the application logs with `awslogs`: (group, region).
struct LogDestination {
    group: String,
    region: Option<String>,
}

/// The first application container's `awslogs` group and region, which the
/// sidecar logs into as well (as `istioctl` does), under its own stream prefix.
fn app_log_destination(containers: &[Value]) -> Option<LogDestination> {
    containers
        .iter()
        .filter_map(Value::as_object)
        .find_map(|c| {
            let config = c.get("logConfiguration")?.as_object()?;
            if config.get_str("logDriver")? != "awslogs" {
                return None;
            }
            let options = config.get("options")?.as_object()?;
            Some(LogDestination {
                group: options.get_str("awslogs-group")?.to_owned(),
                region: options.get_str("awslogs-region").map(str::to_owned),
            })
        })
}

/// The `containerPort`s of a container's `portMappings`.
fn container_ports(container: &Object, name: &str) -> Result<Vec<u16>, InjectError> {
    let Some(mappings) = container.get("portMappings") else {
        return Ok(Vec::new());
    };
    let mappings = match mappings {
        Value::Null => return Ok(Vec::new()),
        Value::Array(mappings) => mappings,
        _ => {
            return Err(InjectError::InvalidField {
                path: format!("container {name:?} portMappings"),
                expected: "an array",
            });
        }
    };
    let mut ports = Vec::with_capacity(mappings.len());
    for (index, mapping) in mappings.iter().enumerate() {
        let port = mapping
            .as_object()
            .and_then(|m| m.get("containerPort"))
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| InjectError::InvalidField {
                path: format!("container {name:?} portMappings[{index}].containerPort"),
                expected: "a port number",
            })?;
        ports.push(port);
    }
    Ok(ports)
}

/// The array at `key`, created (at the end of the object) when absent or null.
fn array_field<'a>(
    container: &'a mut Object,
    key: &str,
    name: &str,
) -> Result<&'a mut Vec<Value>, InjectError> {
    let slot = container.entry_or_insert_with(key, || Value::Array(Vec::new()));
    if matches!(slot, Value::Null) {
        *slot = Value::Array(Vec::new());
    }
    slot.as_array_mut()
        .ok_or_else(|| InjectError::InvalidField {
            path: format!("container {name:?} {key}"),
            expected: "an array",
        })
}

/// Drops any dependency on the sidecar and appends `ztunnel HEALTHY`, so the
/// container's own dependencies keep their order and come first.
fn depend_on_sidecar(container: &mut Object, name: &str) -> Result<(), InjectError> {
    let depends_on = array_field(container, "dependsOn", name)?;
    depends_on.retain(|dep| {
        dep.as_object().and_then(|d| d.get_str("containerName")) != Some(SIDECAR_CONTAINER)
    });
    depends_on.push(
        Object::from_pairs([
            ("containerName", Value::str(SIDECAR_CONTAINER)),
            ("condition", Value::str("HEALTHY")),
        ])
        .into(),
    );
    Ok(())
}

/// Sets the proxy variables; returns the merged `NO_PROXY` value.
fn set_proxy_env(container: &mut Object, name: &str) -> Result<String, InjectError> {
    let env = array_field(container, "environment", name)?;
    let mut no_proxy: Vec<&str> = NO_PROXY_HOSTS.to_vec();
    for entry in env.iter() {
        if let Some(entry) = entry.as_object()
            && matches!(entry.get_str("name"), Some("NO_PROXY" | "no_proxy"))
            && let Some(value) = entry.get_str("value")
        {
            for host in value.split(',').map(str::trim) {
                if !host.is_empty() && !no_proxy.contains(&host) {
                    no_proxy.push(host);
                }
            }
        }
    }
    let no_proxy = no_proxy.join(",");
    for (key, value) in [
        ("ALL_PROXY", SOCKS5_PROXY_URL),
        ("all_proxy", SOCKS5_PROXY_URL),
        ("HTTPS_PROXY", HTTP_PROXY_URL),
        ("https_proxy", HTTP_PROXY_URL),
        ("HTTP_PROXY", HTTP_PROXY_URL),
        ("http_proxy", HTTP_PROXY_URL),
        ("NO_PROXY", &no_proxy),
        ("no_proxy", &no_proxy),
    ] {
        set_env(env, key, value);
    }
    Ok(no_proxy)
}

/// Replaces the value of the first `name` entry in place (dropping later
/// duplicates), or appends one.
fn set_env(env: &mut Vec<Value>, name: &str, value: &str) {
    let mut found = false;
    env.retain_mut(|entry| {
        let Some(entry) = entry.as_object_mut() else {
            return true;
        };
        if entry.get_str("name") != Some(name) {
            return true;
        }
        if found {
            return false;
        }
        found = true;
        entry.insert("value", Value::str(value));
        true
    });
    if !found {
        env.push(name_value("value", name, value));
    }
}

/// `{"name": <name>, <value_key>: <value>}`, the shape of ECS environment,
/// secret and proxy-property entries.
fn name_value(value_key: &str, name: &str, value: &str) -> Value {
    Object::from_pairs([("name", Value::str(name)), (value_key, Value::str(value))]).into()
}

fn sidecar_container(
    opts: &InjectOptions,
    token: &TokenSource<'_>,
    log: Option<&LogDestination>,
    capture: bool,
) -> Value {
    let mut container = Object::from_pairs([
        ("name", Value::str(SIDECAR_CONTAINER)),
        ("image", Value::str(&opts.image)),
        ("cpu", Value::int(0)),
        (
            "memoryReservation",
            Value::int(SIDECAR_MEMORY_RESERVATION_MIB),
        ),
        ("essential", Value::Bool(true)),
        ("user", Value::String(SIDECAR_UID.to_string())),
    ]);
    let mut environment = Vec::new();
    if let TokenSource::Value(token) = token {
        environment.push(name_value("value", "BOOTSTRAP_TOKEN", token));
    }
    if capture {
        environment.push(name_value("value", "CAPTURE_MODE", "proxy-configuration"));
    }
    if !environment.is_empty() {
        container.insert("environment", Value::Array(environment));
    }
    if let TokenSource::Secret(arn) = token {
        container.insert(
            "secrets",
            Value::Array(vec![name_value("valueFrom", "BOOTSTRAP_TOKEN", arn)]),
        );
    }
    container.insert(
        "healthCheck",
        Object::from_pairs([
            (
                "command",
                Value::Array(HEALTH_CHECK_COMMAND.map(Value::str).to_vec()),
            ),
            ("interval", Value::int(5)),
            ("timeout", Value::int(5)),
            ("retries", Value::int(3)),
            ("startPeriod", Value::int(10)),
        ])
        .into(),
    );
    if let Some(log) = log {
        let mut options = Object::from_pairs([("awslogs-group", Value::str(&log.group))]);
        if let Some(region) = &log.region {
            options.insert("awslogs-region", Value::str(region));
        }
        options.insert("awslogs-stream-prefix", Value::str(SIDECAR_CONTAINER));
        container.insert(
            "logConfiguration",
            Object::from_pairs([
                ("logDriver", Value::str("awslogs")),
                ("options", options.into()),
            ])
            .into(),
        );
    }
    container.into()
}

fn proxy_configuration(app_ports: &str) -> Value {
    let properties = [
        ("IgnoredUID", SIDECAR_UID.to_string()),
        ("ProxyIngressPort", CAPTURE_INGRESS_PORT.to_string()),
        ("ProxyEgressPort", CAPTURE_EGRESS_PORT.to_string()),
        ("AppPorts", app_ports.to_owned()),
        ("EgressIgnoredIPs", CAPTURE_EGRESS_IGNORED_IPS.to_owned()),
    ]
    .iter()
    .map(|(name, value)| name_value("value", name, value))
    .collect();
    Object::from_pairs([
        ("type", Value::str("APPMESH")),
        ("containerName", Value::str(SIDECAR_CONTAINER)),
        ("properties", Value::Array(properties)),
    ])
    .into()
}

/// serde_json's message without the location it appends (kept separately).
fn json_error(err: serde_json::Error) -> InjectError {
    let (line, column) = (err.line(), err.column());
    let full = err.to_string();
    let suffix = format!(" at line {line} column {column}");
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    InjectError::Json {
        line,
        column,
        message,
    }
}

impl fmt::Display for ProxyEnv {
    /// The `--proxy-env` spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyEnv::All => f.write_str("all"),
            ProxyEnv::None => f.write_str("none"),
            ProxyEnv::Containers(names) => f.write_str(&names.join(",")),
        }
    }
}
