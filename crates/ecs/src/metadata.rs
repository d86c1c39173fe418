//! The task's own identity, read from the ECS task metadata endpoint (v4).
//!
//! Fargate gives every container `ECS_CONTAINER_METADATA_URI_V4`, a plain-HTTP
//! link-local URL (`http://169.254.170.2/v4/<id>`). `GET <uri>/task` answers a
//! JSON document describing the task: its ARN (which carries the account,
//! region, cluster and task id), family, revision, availability zone and, per
//! container, the addresses of the task's network interface. From those the
//! sidecar derives the name istiod gives the task's WorkloadEntry, its
//! locality, and the IPs inbound traffic arrives on.
//!
//! The endpoint answers within milliseconds once the task runs, but can refuse
//! or stall for a moment while the task starts; requests are bounded in time
//! and retried a few times with backoff. Everything the endpoint sends is
//! treated as untrusted input: malformed documents give a typed error, never a
//! panic.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

/// The environment variable ECS sets in every container to the metadata
/// endpoint's base URI. Its presence is how the sidecar knows it runs on ECS.
pub const METADATA_URI_ENV: &str = "ECS_CONTAINER_METADATA_URI_V4";

/// Namespace istiod uses for a task without an `ecs.solo.io/namespace` tag.
pub const DEFAULT_NAMESPACE: &str = "istio-system";

/// Service account istiod uses for a task without an
/// `ecs.solo.io/service-account` tag.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// Largest metadata document accepted. A task with ten containers produces
/// about 20 KiB; anything near this limit is not a metadata document.
const MAX_BODY: usize = 1024 * 1024;

/// What the sidecar knows about its task.
///
/// Fields the endpoint left out are empty strings; only the task ARN (and,
/// with old-format ARNs, the cluster) and at least one address are required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMetadata {
    /// The full task ARN, e.g.
    /// `arn:aws:ecs:us-east-2:111122223333:task/ecs-demo-1/0f2a…`.
    pub task_arn: String,
    /// The AWS account id from the ARN.
    pub account: String,
    /// The AWS region from the ARN, e.g. `us-east-2`.
    pub region: String,
    /// The cluster name (never its ARN).
    pub cluster: String,
    /// The task id: the last segment of the ARN.
    pub task_id: String,
    /// The task definition family.
    pub family: String,
    /// The task definition revision, as a decimal string.
    pub revision: String,
    /// The availability zone, e.g. `us-east-2a`.
    pub availability_zone: String,
    /// The task's addresses, IPv4 first, each once.
    pub ips: Vec<IpAddr>,
}

impl TaskMetadata {
    /// The name istiod gives this task's WorkloadEntry:
    /// `ecs-task-<account>-<region>-<cluster>-<task id>`, with the cluster's
    /// name (not its ARN). The sidecar finds its own workload in WDS by it.
    pub fn workload_name(&self) -> String {
        format!(
            "ecs-task-{}-{}-{}-{}",
            self.account, self.region, self.cluster, self.task_id
        )
    }

    /// Locality as istiod sets it for the task: (region, zone).
    pub fn locality(&self) -> (&str, &str) {
        (&self.region, &self.availability_zone)
    }

    /// The task's IP addresses, IPv4 first. In `awsvpc` mode every container
    /// of the task shares them.
    pub fn task_ips(&self) -> &[IpAddr] {
        &self.ips
    }
}

/// The workload identity the sidecar runs as: the equivalent of ztunnel's
/// `PROXY_WORKLOAD_INFO` (`namespace/name/service-account`) in dedicated mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadInfo {
    /// Kubernetes namespace of the WorkloadEntry.
    pub namespace: String,
    /// WorkloadEntry name ([`TaskMetadata::workload_name`]).
    pub name: String,
    /// Kubernetes service account the workload's certificate names.
    pub service_account: String,
}

impl fmt::Display for WorkloadInfo {
    /// `namespace/name/service-account`, ztunnel's `PROXY_WORKLOAD_INFO` format.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.namespace, self.name, self.service_account
        )
    }
}

/// The identity of the task as istiod registers it.
///
/// `namespace` and `service_account` come from the bootstrap token; empty
/// values take istiod's defaults for untagged tasks ([`DEFAULT_NAMESPACE`],
/// [`DEFAULT_SERVICE_ACCOUNT`]) so that both sides agree on the identity.
pub fn workload_info(namespace: &str, service_account: &str, task: &TaskMetadata) -> WorkloadInfo {
    let or_default = |value: &str, default: &str| {
        if value.is_empty() {
            default.to_owned()
        } else {
            value.to_owned()
        }
    };
    WorkloadInfo {
        namespace: or_default(namespace, DEFAULT_NAMESPACE),
        name: task.workload_name(),
        service_account: or_default(service_account, DEFAULT_SERVICE_ACCOUNT),
    }
}

/// How hard to try when fetching metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Deadline for one attempt: connect, request and whole response.
    pub timeout: Duration,
    /// Attempts in all (at least one is always made).
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each one after.
    pub backoff: Duration,
}

impl Default for FetchOptions {
    /// 2 s per attempt, 5 attempts, waits of 100, 200, 400 and 800 ms between
    /// them: a task that is still starting has about 1.5 s to bring the
    /// endpoint up.
    fn default() -> Self {
        FetchOptions {
            timeout: Duration::from_secs(2),
            attempts: 5,
            backoff: Duration::from_millis(100),
        }
    }
}

/// Why the task metadata could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The base URI is not `http://host[:port]/path`.
    #[error("invalid task metadata URI {uri:?}: expected http://host[:port]/path")]
    InvalidUri {
        /// The URI given.
        uri: String,
    },
    /// The TCP connection to the endpoint failed.
    #[error("cannot connect to the task metadata endpoint {url}: {source}")]
    Connect {
        /// The URL requested.
        url: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed (connection reset, malformed response).
    #[error("HTTP request to the task metadata endpoint {url} failed: {source}")]
    Http {
        /// The URL requested.
        url: String,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// No complete response within the per-attempt deadline.
    #[error("the task metadata endpoint {url} did not answer within {timeout:?}")]
    Timeout {
        /// The URL requested.
        url: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The endpoint answered with a status other than 200.
    #[error("the task metadata endpoint {url} answered HTTP {status}")]
    Status {
        /// The URL requested.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The response body exceeded the size limit.
    #[error("the task metadata endpoint {url} sent more than {MAX_BODY} bytes")]
    TooLarge {
        /// The URL requested.
        url: String,
    },
    /// Every attempt failed with a transient error; `last` is the final one.
    #[error("task metadata unavailable after {attempts} attempts: {last}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The error of the last attempt.
        #[source]
        last: Box<MetadataError>,
    },
    /// The body is not the expected JSON document.
    #[error("task metadata is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A required field is absent.
    #[error("task metadata has no {0} field")]
    MissingField(&'static str),
    /// The task ARN does not have the shape ECS gives it.
    #[error("task ARN {arn:?} is malformed: {reason}")]
    InvalidTaskArn {
        /// The ARN received.
        arn: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An address in a container's network is not an IP address.
    #[error("container {container:?} lists {address:?} as an address, which is not an IP address")]
    InvalidAddress {
        /// The container it was listed for.
        container: String,
        /// The value received.
        address: String,
    },
    /// No container lists any address: the task has no network interface the
    /// sidecar can serve (it needs `awsvpc` network mode).
    #[error("task metadata lists no IPv4 or IPv6 address for any container")]
    NoAddresses,
}

impl MetadataError {
    /// Whether another attempt may succeed: the endpoint was unreachable,
    /// slow, or answered 5xx/429 (the agent is still starting). A 4xx or a bad
    /// document will not change by asking again.
    fn is_transient(&self) -> bool {
        match self {
            MetadataError::Connect { .. }
            | MetadataError::Http { .. }
            | MetadataError::Timeout { .. } => true,
            MetadataError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// Fetches and parses `GET <base_uri>/task` with [`FetchOptions::default`].
///
/// `base_uri` is the value of [`METADATA_URI_ENV`].
pub async fn fetch_task_metadata(base_uri: &str) -> Result<TaskMetadata, MetadataError> {
    fetch_task_metadata_with(base_uri, &FetchOptions::default()).await
}

/// Fetches and parses `GET <base_uri>/task`, retrying transient failures as
/// `options` says.
pub async fn fetch_task_metadata_with(
    base_uri: &str,
    options: &FetchOptions,
) -> Result<TaskMetadata, MetadataError> {
    let target = Target::parse(base_uri)?;
    let attempts = options.attempts.max(1);
    let mut delay = options.backoff;
    let mut attempt = 1;
    loop {
        match get(&target, options.timeout).await {
            Ok(body) => return parse_task_metadata(&body),
            Err(err) if err.is_transient() && attempt < attempts => {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
                attempt += 1;
            }
            Err(err) if err.is_transient() && attempts > 1 => {
                return Err(MetadataError::Unavailable {
                    attempts,
                    last: Box::new(err),
                });
            }
            Err(err) => return Err(err),
        }
    }
}

/// Parses a task metadata v4 `/task` document.
pub fn parse_task_metadata(body: &[u8]) -> Result<TaskMetadata, MetadataError> {
    let raw: RawTask = serde_json::from_slice(body).map_err(MetadataError::Json)?;
    let task_arn = raw.task_arn.ok_or(MetadataError::MissingField("TaskARN"))?;
    let arn = parse_task_arn(&task_arn)?;
    let cluster = match arn.cluster {
        Some(cluster) => cluster.to_owned(),
        None => {
            let cluster = raw
                .cluster
                .as_deref()
                .filter(|c| !c.is_empty())
                .ok_or(MetadataError::MissingField("Cluster"))?;
            cluster_name(cluster).to_owned()
        }
    };

    let mut v4: Vec<Ipv4Addr> = Vec::new();
    let mut v6: Vec<Ipv6Addr> = Vec::new();
    let mut seen: HashSet<IpAddr> = HashSet::new();
    for container in raw.containers.unwrap_or_default() {
        let name = container.name.unwrap_or_default();
        for network in container.networks.unwrap_or_default() {
            let listed = network
                .ipv4_addresses
                .unwrap_or_default()
                .into_iter()
                .chain(network.ipv6_addresses.unwrap_or_default());
            for address in listed {
                let ip: IpAddr = address.parse().map_err(|_| MetadataError::InvalidAddress {
                    container: name.clone(),
                    address: address.clone(),
                })?;
                if seen.insert(ip) {
                    match ip {
                        IpAddr::V4(ip) => v4.push(ip),
                        IpAddr::V6(ip) => v6.push(ip),
                    }
                }
            }
        }
    }
    if v4.is_empty() && v6.is_empty() {
        return Err(MetadataError::NoAddresses);
    }
    let ips = v4
        .into_iter()
        .map(IpAddr::V4)
        .chain(v6.into_iter().map(IpAddr::V6))
        .collect();

    Ok(TaskMetadata {
        account: arn.account.to_owned(),
        region: arn.region.to_owned(),
        cluster,
        task_id: arn.task_id.to_owned(),
        family: raw.family.unwrap_or_default(),
        revision: raw.revision.map(Revision::into_string).unwrap_or_default(),
        availability_zone: raw.availability_zone.unwrap_or_default(),
        ips,
        task_arn,
    })
}

/// The parts of a task ARN.
struct TaskArn<'a> {
    region: &'a str,
    account: &'a str,
    /// Present in the current ARN format only.
    cluster: Option<&'a str>,
    task_id: &'a str,
}

/// Splits `arn:<partition>:ecs:<region>:<account>:task/[<cluster>/]<task id>`.
fn parse_task_arn(arn: &str) -> Result<TaskArn<'_>, MetadataError> {
    let invalid = |reason| MetadataError::InvalidTaskArn {
        arn: arn.to_owned(),
        reason,
    };
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(invalid(
            "expected arn:<partition>:ecs:<region>:<account>:task/…",
        ));
    };
    if partition.is_empty() || service != "ecs" {
        return Err(invalid("not an ECS ARN"));
    }
    if region.is_empty() {
        return Err(invalid("no region"));
    }
    if account.is_empty() {
        return Err(invalid("no account"));
    }
    let Some(path) = resource.strip_prefix("task/") else {
        return Err(invalid("not a task ARN"));
    };
    let (cluster, task_id) = match path.split_once('/') {
        Some((cluster, task_id)) => (Some(cluster), task_id),
        None => (None, path),
    };
    if cluster.is_some_and(str::is_empty) {
        return Err(invalid("empty cluster name"));
    }
    if task_id.is_empty() || task_id.contains('/') {
        return Err(invalid("no task id after the cluster"));
    }
    Ok(TaskArn {
        region,
        account,
        cluster,
        task_id,
    })
}

/// The name in `arn:aws:ecs:<region>:<account>:cluster/<name>`, or the value
/// itself when it is already a name.
fn cluster_name(cluster: &str) -> &str {
    if cluster.starts_with("arn:")
        && let Some((_, name)) = cluster.rsplit_once(":cluster/")
    {
        return name;
    }
    cluster
}

/// The fields of the `/task` document this crate reads; the rest is ignored.
#[derive(Deserialize)]
struct RawTask {
    #[serde(rename = "TaskARN")]
    task_arn: Option<String>,
    #[serde(rename = "Cluster")]
    cluster: Option<String>,
    #[serde(rename = "Family")]
    family: Option<String>,
    #[serde(rename = "Revision")]
    revision: Option<Revision>,
    #[serde(rename = "AvailabilityZone")]
    availability_zone: Option<String>,
    #[serde(rename = "Containers")]
    containers: Option<Vec<RawContainer>>,
}

#[derive(Deserialize)]
struct RawContainer {
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "Networks")]
    networks: Option<Vec<RawNetwork>>,
}

#[derive(Deserialize)]
struct RawNetwork {
    #[serde(rename = "IPv4Addresses")]
    ipv4_addresses: Option<Vec<String>>,
    #[serde(rename = "IPv6Addresses")]
    ipv6_addresses: Option<Vec<String>>,
}

/// v4 documents the revision as a string; some agents have sent a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Revision {
    Text(String),
    Number(u64),
}

impl Revision {
    fn into_string(self) -> String {
        match self {
            Revision::Text(text) => text,
            Revision::Number(n) => n.to_string(),
        }
    }
}

/// Where `GET <base>/task` goes.
struct Target {
    /// Host to dial (IPv6 without brackets).
    host: String,
    port: u16,
    /// `Host` header value.
    authority: http::uri::Authority,
    /// Origin-form request target.
    path: http::Uri,
    /// The full URL, for messages.
    url: String,
}

impl Target {
    fn parse(base_uri: &str) -> Result<Target, MetadataError> {
        let invalid = || MetadataError::InvalidUri {
            uri: base_uri.to_owned(),
        };
        let uri: http::Uri = base_uri.parse().map_err(|_| invalid())?;
        if uri.scheme_str() != Some("http") || uri.query().is_some() {
            return Err(invalid());
        }
        let authority = uri.authority().ok_or_else(invalid)?.clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(invalid());
        }
        let port = authority.port_u16().unwrap_or(80);
        let path = format!("{}/task", uri.path().trim_end_matches('/'));
        let url = format!("http://{authority}{path}");
        let path = path.parse().map_err(|_| invalid())?;
        Ok(Target {
            host,
            port,
            authority,
            path,
            url,
        })
    }
}

/// One GET, bounded by `timeout`, returning the body of a 200 response.
async fn get(target: &Target, timeout: Duration) -> Result<Bytes, MetadataError> {
    let url = || target.url.clone();
    let exchange = async {
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|source| MetadataError::Connect { url: url(), source })?;
        let http_error = |source| MetadataError::Http { url: url(), source };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(http_error)?;
        // The connection task ends with this function: aborted on drop, so a
        // stalled endpoint cannot keep a socket open after the deadline.
        let connection = AbortOnDrop(tokio::spawn(connection));
        let request = http::Request::get(target.path.clone())
            .header(http::header::HOST, target.authority.as_str())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|_| MetadataError::InvalidUri { uri: url() })?;
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status();
        if status != http::StatusCode::OK {
            return Err(MetadataError::Status {
                url: url(),
                status: status.as_u16(),
            });
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|err| match err.downcast::<hyper::Error>() {
                Ok(source) => MetadataError::Http {
                    url: url(),
                    source: *source,
                },
                Err(_) => MetadataError::TooLarge { url: url() },
            })?;
        drop(connection);
        Ok(body.to_bytes())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(MetadataError::Timeout {
                url: url(),
                timeout,
            })
        })
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_task_arn_carries_the_cluster() {
        let arn = parse_task_arn(
            "arn:aws:ecs:us-east-2:111122223333:task/ecs-demo-1/5c3f0ad1d2a84b5e9b3a2f4e1d0c9b8a",
        )
        .expect("valid ARN");
        assert_eq!(arn.region, "us-east-2");
        assert_eq!(arn.account, "111122223333");
        assert_eq!(arn.cluster, Some("ecs-demo-1"));
        assert_eq!(arn.task_id, "5c3f0ad1d2a84b5e9b3a2f4e1d0c9b8a");
    }

    #[test]
    fn old_task_arn_has_no_cluster() {
        let arn = parse_task_arn(
            "arn:aws:ecs:eu-west-1:111122223333:task/8f1e2c3d-4b5a-6978-8a9b-0c1d2e3f4a5b",
        )
        .expect("valid ARN");
        assert_eq!(arn.cluster, None);
        assert_eq!(arn.task_id, "8f1e2c3d-4b5a-6978-8a9b-0c1d2e3f4a5b");
    }

    #[test]
    fn china_partition_arn_is_accepted() {
        let arn = parse_task_arn("arn:aws-cn:ecs:cn-north-1:111122223333:task/c1/abc")
            .expect("valid ARN");
        assert_eq!(arn.region, "cn-north-1");
    }

    #[test]
    fn malformed_task_arns_are_rejected_with_the_reason() {
        let cases = [
            (
                "task/c/abc",
                "expected arn:<partition>:ecs:<region>:<account>:task/…",
            ),
            (
                "arn:aws:s3:us-east-2:111122223333:task/c/abc",
                "not an ECS ARN",
            ),
            ("arn:aws:ecs::111122223333:task/c/abc", "no region"),
            ("arn:aws:ecs:us-east-2::task/c/abc", "no account"),
            (
                "arn:aws:ecs:us-east-2:111122223333:service/c/abc",
                "not a task ARN",
            ),
            (
                "arn:aws:ecs:us-east-2:111122223333:task//abc",
                "empty cluster name",
            ),
            (
                "arn:aws:ecs:us-east-2:111122223333:task/c/",
                "no task id after the cluster",
            ),
            (
                "arn:aws:ecs:us-east-2:111122223333:task/c/a/b",
                "no task id after the cluster",
            ),
        ];
        for (arn, expected) in cases {
            match parse_task_arn(arn) {
                Err(MetadataError::InvalidTaskArn { reason, .. }) => {
                    assert_eq!(reason, expected, "for {arn}")
                }
                Err(other) => panic!("{arn}: unexpected error {other}"),
                Ok(_) => panic!("{arn}: accepted"),
            }
        }
    }

    #[test]
    fn cluster_arn_gives_its_name() {
        assert_eq!(
            cluster_name("arn:aws:ecs:us-east-2:111122223333:cluster/ecs-demo-1"),
            "ecs-demo-1"
        );
        assert_eq!(cluster_name("ecs-demo-1"), "ecs-demo-1");
    }

    #[test]
    fn base_uri_gets_task_appended_once() {
        let target = Target::parse("http://169.254.170.2/v4/0f2a-1234/").expect("valid URI");
        assert_eq!(target.url, "http://169.254.170.2/v4/0f2a-1234/task");
        assert_eq!(target.port, 80);
        let target = Target::parse("http://[::1]:5182/v4/x").expect("valid URI");
        assert_eq!(target.host, "::1");
        assert_eq!(target.port, 5182);
        assert_eq!(target.url, "http://[::1]:5182/v4/x/task");
    }

    #[test]
    fn non_http_base_uris_are_rejected() {
        for uri in [
            "https://169.254.170.2/v4/x",
            "169.254.170.2/v4/x",
            "",
            "http:///v4",
        ] {
            assert!(
                matches!(Target::parse(uri), Err(MetadataError::InvalidUri { .. })),
                "{uri:?} accepted"
            );
        }
    }
}
