//! The delta Aggregated Discovery Service client.
//!
//! One bidirectional gRPC stream carries every subscribed type. At stream
//! start the client sends one wildcard request per type (workloads/services
//! first, then authorization policies), with the node and, after a reconnect,
//! the versions of every resource it still holds so istiod sends only what
//! changed. Each response goes to the [`XdsHandler`], which decodes and applies
//! it to the mesh state and reports the resources it rejected; the client
//! answers with an ACK, or a NACK naming those resources (the valid ones stay
//! applied, as in ztunnel).
//!
//! When istiod is unreachable the handler is simply not called: the mesh state
//! keeps serving what it last received. The client reconnects with jittered
//! exponential backoff following ztunnel's rules for which failures deserve a
//! delay. Readiness turns true once the first response of every subscribed type
//! has been applied and ACKed, and stays true across reconnects.

pub mod node;

mod metrics;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::registry::Registry;
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tracing::{Instrument as _, debug, info, info_span, warn};
use zs_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use zs_proto::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};

pub use metrics::TerminationReason;
pub use node::Node;

use crate::auth::{AuthError, CallCredentials};
use crate::backoff::Backoff;
use crate::channel::describe_status;

/// Largest response accepted from istiod (a full push of a large mesh).
pub const MAX_MESSAGE_SIZE: usize = 200 * 1024 * 1024;

/// One resource of a response, still encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct XdsResource {
    /// The resource name (xDS primary key).
    pub name: String,
    /// The version istiod gave it.
    pub version: String,
    /// The encoded resource; `type_url` says what it is.
    pub body: prost_types::Any,
}

/// A resource the handler did not apply, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The resource name.
    pub name: String,
    /// Why it was rejected (sent to istiod in the NACK).
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.reason)
    }
}

/// Receives every response of a subscribed type. Implemented by the owner of
/// the mesh state. Called on the client's task: keep it to in-memory work (no
/// blocking I/O), since the stream is not read while it runs.
pub trait XdsHandler: Send + Sync + 'static {
    /// Applies one response: adds or replaces `resources`, deletes `removed`.
    /// Valid resources are applied even when others are rejected; the
    /// rejected ones are returned and reported to istiod.
    fn apply(
        &self,
        type_url: &str,
        resources: &[XdsResource],
        removed: &[String],
    ) -> Vec<Rejection>;
}

/// What to subscribe to and as whom.
#[derive(Debug, Clone)]
pub struct AdsConfig {
    /// The node sent in initial requests.
    pub node: Node,
    /// Type URLs subscribed (wildcard), in the order of the initial requests.
    pub type_urls: Vec<String>,
    /// Reconnect backoff.
    pub backoff: Backoff,
}

impl AdsConfig {
    /// ztunnel's subscription: workloads/services, then authorization policies.
    pub fn new(node: Node) -> Self {
        AdsConfig {
            node,
            type_urls: vec![
                zs_proto::ADDRESS_TYPE_URL.to_string(),
                zs_proto::AUTHORIZATION_TYPE_URL.to_string(),
            ],
            backoff: Backoff::xds(),
        }
    }
}

/// Observes the client: readiness, connection, last ACK, last error. Cheap to clone.
#[derive(Debug, Clone)]
pub struct XdsStatus {
    ready: watch::Receiver<bool>,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    connected: AtomicBool,
    /// Milliseconds since the Unix epoch; 0 = never.
    last_ack_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl XdsStatus {
    /// Whether the first response of every subscribed type has been applied and ACKed.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until ready.
    pub async fn wait_ready(&mut self) {
        // An error means the client is gone; there is nothing more to wait for.
        let _ = self.ready.wait_for(|r| *r).await;
    }

    /// A receiver that sees readiness change.
    pub fn watch_ready(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Whether a stream to istiod is open now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// When the last ACK or NACK was sent.
    pub fn last_ack(&self) -> Option<SystemTime> {
        match self.shared.last_ack_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }

    /// The last reason a stream could not be opened or ended with an error;
    /// cleared once a response arrives.
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }
}

/// How one stream ended.
enum StreamEnd {
    Credentials(AuthError),
    Connect(tonic::Status),
    Status(tonic::Status),
    Closed,
    RequestChannelClosed,
}

/// The delta ADS client. Build it, keep its [`XdsStatus`], and spawn [`AdsClient::run`].
pub struct AdsClient {
    client: AggregatedDiscoveryServiceClient<Channel>,
    credentials: CallCredentials,
    handler: Arc<dyn XdsHandler>,
    node: zs_proto::envoy::config::core::v3::Node,
    type_urls: Vec<String>,
    backoff: Backoff,
    /// Per type: resource name → version of every resource held (rejected ones excluded).
    versions: HashMap<String, HashMap<String, String>>,
    /// Types whose first response has not been ACKed yet.
    awaiting_first_ack: HashSet<String>,
    ready_tx: watch::Sender<bool>,
    shared: Arc<Shared>,
    metrics: metrics::XdsMetrics,
}

impl fmt::Debug for AdsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdsClient")
            .field("node", &self.node.id)
            .field("type_urls", &self.type_urls)
            .finish_non_exhaustive()
    }
}

impl AdsClient {
    /// A client streaming over `channel` (see [`crate::channel::connect`]),
    /// registering its metrics into `registry`.
    pub fn new(
        channel: Channel,
        config: AdsConfig,
        credentials: CallCredentials,
        handler: Arc<dyn XdsHandler>,
        registry: &mut Registry,
    ) -> AdsClient {
        let client = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_SIZE);
        let (ready_tx, _) = watch::channel(config.type_urls.is_empty());
        AdsClient {
            client,
            credentials,
            handler,
            node: config.node.to_proto(),
            awaiting_first_ack: config.type_urls.iter().cloned().collect(),
            type_urls: config.type_urls,
            backoff: config.backoff,
            versions: HashMap::new(),
            ready_tx,
            shared: Arc::default(),
            metrics: metrics::XdsMetrics::register(registry),
        }
    }

    /// A handle observing this client.
    pub fn status(&self) -> XdsStatus {
        XdsStatus {
            ready: self.ready_tx.subscribe(),
            shared: self.shared.clone(),
        }
    }

    /// Streams forever, reconnecting as needed. Abort the task to stop.
    pub async fn run(mut self) {
        let mut connection: u64 = 0;
        loop {
            connection += 1;
            let end = self
                .run_stream()
                .instrument(info_span!("xds", connection))
                .await;
            let delay = self.after_stream(end);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }

    fn initial_request(&self, type_url: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node: Some(self.node.clone()),
            type_url: type_url.to_string(),
            initial_resource_versions: self.versions.get(type_url).cloned().unwrap_or_default(),
            ..Default::default()
        }
    }

    async fn run_stream(&mut self) -> StreamEnd {
        // Room for the initial requests plus one ACK in flight: ACKs are sent
        // one per response, and the next response is read only after.
        let (tx, rx) = mpsc::channel(self.type_urls.len() + 1);
        for type_url in &self.type_urls {
            let request = self.initial_request(type_url);
            debug!(
                type_url,
                known = request.initial_resource_versions.len(),
                "sending initial request"
            );
            if tx.try_send(request).is_err() {
                return StreamEnd::RequestChannelClosed;
            }
        }
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Err(e) = self.credentials.apply(&mut request).await {
            return StreamEnd::Credentials(e);
        }
        let mut inbound = match self.client.delta_aggregated_resources(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return StreamEnd::Connect(status),
        };
        info!("discovery stream to istiod established");
        self.set_connected(true);
        let end = loop {
            match inbound.message().await {
                Ok(Some(response)) => {
                    self.backoff.reset();
                    self.set_last_error(None);
                    if !self.handle_response(response, &tx).await {
                        break StreamEnd::RequestChannelClosed;
                    }
                }
                Ok(None) => break StreamEnd::Closed,
                Err(status) => break StreamEnd::Status(status),
            }
        };
        self.set_connected(false);
        end
    }

    /// Applies one response and answers it. Returns false when the request
    /// side of the stream is gone.
    async fn handle_response(
        &mut self,
        response: DeltaDiscoveryResponse,
        tx: &mpsc::Sender<DeltaDiscoveryRequest>,
    ) -> bool {
        self.metrics
            .received(&response.type_url, response.encoded_len());
        let DeltaDiscoveryResponse {
            type_url,
            nonce,
            resources,
            removed_resources,
            ..
        } = response;
        debug!(
            type_url,
            nonce,
            resources = resources.len(),
            removed = removed_resources.len(),
            "received response"
        );

        let error = if self.type_urls.contains(&type_url) {
            let rejections = self.apply(&type_url, resources, &removed_resources);
            if rejections.is_empty() {
                None
            } else {
                let message = rejections
                    .iter()
                    .map(Rejection::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                warn!(
                    type_url,
                    nonce,
                    error = message,
                    "rejecting resources (NACK)"
                );
                Some(message)
            }
        } else {
            warn!(
                type_url,
                "response for a type not subscribed to; ignoring it"
            );
            None
        };

        let is_ack = error.is_none();
        let reply = DeltaDiscoveryRequest {
            type_url: type_url.clone(),
            response_nonce: nonce,
            error_detail: error.map(|message| zs_proto::google::rpc::Status {
                message,
                ..Default::default()
            }),
            ..Default::default()
        };
        if tx.send(reply).await.is_err() {
            return false;
        }
        self.record_ack_sent();
        if is_ack && self.awaiting_first_ack.remove(&type_url) && self.awaiting_first_ack.is_empty()
        {
            info!("first response of every type applied; xDS is ready");
            self.ready_tx.send_replace(true);
        }
        true
    }

    /// Hands the resources to the handler and records the versions of the
    /// ones it kept.
    fn apply(
        &mut self,
        type_url: &str,
        resources: Vec<zs_proto::envoy::service::discovery::v3::Resource>,
        removed: &[String],
    ) -> Vec<Rejection> {
        let mut rejections = Vec::new();
        let mut decoded = Vec::with_capacity(resources.len());
        for r in resources {
            match r.resource {
                Some(body) => decoded.push(XdsResource {
                    name: r.name,
                    version: r.version,
                    body,
                }),
                None => rejections.push(Rejection {
                    name: r.name,
                    reason: "resource has no body".to_string(),
                }),
            }
        }
        rejections.extend(self.handler.apply(type_url, &decoded, removed));

        let versions = self.versions.entry(type_url.to_string()).or_default();
        let rejected: HashSet<&str> = rejections.iter().map(|r| r.name.as_str()).collect();
        for r in decoded {
            if rejected.contains(r.name.as_str()) {
                versions.remove(&r.name);
            } else {
                versions.insert(r.name, r.version);
            }
        }
        for name in removed {
            versions.remove(name);
        }
        for r in &rejections {
            // A rejected resource is not held, so istiod must send it again.
            versions.remove(&r.name);
        }
        rejections
    }

    /// Counts the termination and decides how long to wait (ztunnel's rules).
    fn after_stream(&mut self, end: StreamEnd) -> Duration {
        let (reason, delay, error) = match end {
            StreamEnd::Credentials(e) => {
                // Not a network failure, but retrying at once would spin on a
                // missing token file; treat it like a failed connection.
                let delay = self.backoff.double_then_delay();
                (
                    TerminationReason::ConnectionError,
                    delay,
                    Some(e.to_string()),
                )
            }
            StreamEnd::Connect(status) => {
                let delay = self.backoff.double_then_delay();
                (
                    TerminationReason::ConnectionError,
                    delay,
                    Some(describe_status(&status)),
                )
            }
            StreamEnd::Status(status) if is_reconnect(&status) => {
                debug!(status = %describe_status(&status), "istiod closed the stream; reconnecting");
                (
                    TerminationReason::Reconnect,
                    self.backoff.reset_delay(),
                    None,
                )
            }
            StreamEnd::Status(status) => {
                let delay = self.backoff.double_then_delay();
                (
                    TerminationReason::Error,
                    delay,
                    Some(describe_status(&status)),
                )
            }
            StreamEnd::Closed => {
                self.backoff.reset();
                (TerminationReason::Complete, Duration::ZERO, None)
            }
            StreamEnd::RequestChannelClosed => (
                TerminationReason::Error,
                self.backoff.reset_delay(),
                Some("request stream closed".to_string()),
            ),
        };
        self.metrics.terminated(reason);
        if let Some(error) = &error {
            warn!(?reason, retry_in = ?delay, error, "xDS stream to istiod ended");
        } else {
            info!(?reason, retry_in = ?delay, "xDS stream to istiod ended");
        }
        if error.is_some() {
            self.set_last_error(error);
        }
        delay
    }

    fn set_connected(&self, connected: bool) {
        self.shared.connected.store(connected, Ordering::Relaxed);
        self.metrics.set_connected(connected);
    }

    fn set_last_error(&self, error: Option<String>) {
        if let Ok(mut slot) = self.shared.last_error.lock() {
            *slot = error;
        }
    }

    fn record_ack_sent(&self) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.shared
            .last_ack_ms
            .store(now.as_millis() as u64, Ordering::Relaxed);
        self.metrics.set_last_ack(now.as_secs_f64());
    }
}

/// Statuses that mean "the server let the stream go; come back" (max
/// connection age, graceful shutdown) rather than a failure.
fn is_reconnect(status: &tonic::Status) -> bool {
    use tonic::Code;
    match status.code() {
        Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => true,
        Code::Unavailable => {
            let m = status.message();
            m.contains("transport is closing") || m.contains("received prior goaway")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_formats_as_name_colon_reason() {
        let r = Rejection {
            name: "ns/svc.example".into(),
            reason: "bad VIP".into(),
        };
        assert_eq!(r.to_string(), "ns/svc.example: bad VIP");
    }

    #[test]
    fn reconnect_statuses_follow_ztunnel() {
        use tonic::{Code, Status};
        assert!(is_reconnect(&Status::new(Code::Unknown, "")));
        assert!(is_reconnect(&Status::new(Code::Cancelled, "")));
        assert!(is_reconnect(&Status::new(Code::DeadlineExceeded, "")));
        assert!(is_reconnect(&Status::unavailable(
            "error reading from server: transport is closing"
        )));
        assert!(is_reconnect(&Status::unavailable(
            "received prior goaway: code: NO_ERROR"
        )));
        assert!(!is_reconnect(&Status::unavailable("connection refused")));
        assert!(!is_reconnect(&Status::permission_denied("bad token")));
    }
}
