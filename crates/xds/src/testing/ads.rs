//! A scripted delta ADS server: the test reads every request the client sends
//! (with the stream's metadata and SNI) and decides every response, so each
//! protocol step can be asserted on the wire.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use zs_proto::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use zs_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};

use super::server::TlsConnectInfo;

/// How long [`ScriptedAds::next_request`] waits before failing the test.
pub const WAIT: Duration = Duration::from_secs(20);

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// Which stream it came on (1 = first stream).
    pub stream: usize,
    /// The request.
    pub request: DeltaDiscoveryRequest,
    /// The stream's gRPC metadata.
    pub metadata: MetadataMap,
    /// The SNI of the connection the stream arrived on.
    pub server_name: Option<String>,
}

type Outbound = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

/// The scripted server. Clone it to keep a handle while the router owns another.
#[derive(Clone)]
pub struct ScriptedAds {
    inner: Arc<Inner>,
}

struct Inner {
    requests_tx: mpsc::UnboundedSender<ReceivedRequest>,
    requests_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<ReceivedRequest>>,
    current: Mutex<Option<Outbound>>,
    streams: AtomicUsize,
}

impl std::fmt::Debug for ScriptedAds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedAds")
            .field("streams", &self.streams())
            .finish_non_exhaustive()
    }
}

impl ScriptedAds {
    /// A server with no stream yet.
    pub fn new() -> Self {
        let (requests_tx, requests_rx) = mpsc::unbounded_channel();
        ScriptedAds {
            inner: Arc::new(Inner {
                requests_tx,
                requests_rx: tokio::sync::Mutex::new(requests_rx),
                current: Mutex::new(None),
                streams: AtomicUsize::new(0),
            }),
        }
    }

    /// The tonic service to add to a router.
    pub fn into_server(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
    }

    /// The next request received on any stream. Panics after [`WAIT`].
    pub async fn next_request(&self) -> ReceivedRequest {
        let mut rx = self.inner.requests_rx.lock().await;
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("the client sent no request in time")
            .expect("request channel open")
    }

    /// Sends `response` on the most recent stream.
    pub async fn push(&self, response: DeltaDiscoveryResponse) {
        let tx = self.current().expect("no stream to push to");
        tx.send(Ok(response))
            .await
            .expect("the stream to push to is closed");
    }

    /// Ends the most recent stream with `status`.
    pub async fn end_stream(&self, status: Status) {
        if let Some(tx) = self.current() {
            let _ = tx.send(Err(status)).await;
        }
        if let Ok(mut current) = self.inner.current.lock() {
            *current = None;
        }
    }

    /// How many streams have been opened.
    pub fn streams(&self) -> usize {
        self.inner.streams.load(Ordering::SeqCst)
    }

    fn current(&self) -> Option<Outbound> {
        self.inner.current.lock().ok().and_then(|c| c.clone())
    }
}

impl Default for ScriptedAds {
    fn default() -> Self {
        Self::new()
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for ScriptedAds {
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let stream = self.inner.streams.fetch_add(1, Ordering::SeqCst) + 1;
        let metadata = request.metadata().clone();
        let server_name = request
            .extensions()
            .get::<TlsConnectInfo>()
            .and_then(|i| i.server_name.clone());
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        if let Ok(mut current) = self.inner.current.lock() {
            *current = Some(tx);
        }
        let requests = self.inner.requests_tx.clone();
        tokio::spawn(async move {
            while let Ok(Some(request)) = inbound.message().await {
                let _ = requests.send(ReceivedRequest {
                    stream,
                    request,
                    metadata: metadata.clone(),
                    server_name: server_name.clone(),
                });
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A resource with an encoded body of type `type_url`.
pub fn resource(name: &str, version: &str, type_url: &str, body: Vec<u8>) -> Resource {
    Resource {
        name: name.to_string(),
        version: version.to_string(),
        resource: Some(prost_types::Any {
            type_url: type_url.to_string(),
            value: body,
        }),
        ..Default::default()
    }
}

/// A response of `type_url` with `nonce`.
pub fn response(
    type_url: &str,
    nonce: &str,
    resources: Vec<Resource>,
    removed: &[&str],
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: type_url.to_string(),
        nonce: nonce.to_string(),
        resources,
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}
