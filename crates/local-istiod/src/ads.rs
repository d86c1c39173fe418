//! Delta ADS (`DeltaAggregatedResources`), as istiod serves it to ztunnel.
//!
//! Each stream keeps, per type URL, what the client subscribed to (wildcard
//! and/or explicit names) and which version of every resource it was last
//! sent. Every response is then a diff between that record and the current
//! [`Snapshot`]: resources whose version differs are sent, names the client
//! holds that no longer exist are listed in `removed_resources`. The same
//! diff serves all three occasions:
//!
//! * the first request of a type: the record starts from the client's
//!   `initial_resource_versions` (so a reconnecting client gets only what
//!   changed, and removals for what disappeared while it was away), and a
//!   response is sent even when empty, because the client's readiness waits
//!   for one;
//! * a snapshot change (the mesh file was edited): only non-empty diffs are sent;
//! * a subscription to explicit names (on demand): those names are answered,
//!   with the resource found by name or alias, or as removed when unknown, so
//!   the client never waits for an answer that will not come.
//!
//! ACKs and NACKs (a request carrying `response_nonce`, with `error_detail` for
//! a NACK) are recorded in the [`crate::status`] book and logged; the stream
//! goes on either way, as with istiod.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};
use zs_proto::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use zs_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};

use crate::server::{Core, PAUSED, PeerInfo, STOPPING};
use crate::snapshot::{Snapshot, TypeSnapshot};

/// The delta ADS service.
#[derive(Clone)]
pub struct AdsService {
    core: Arc<Core>,
}

impl AdsService {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        AdsService { core }
    }
}

type Outbound = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let core = &self.core;
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .map(|p| p.addr.to_string())
            .unwrap_or_default();
        if core.is_paused() {
            return Err(Status::unavailable(PAUSED));
        }
        let caller = core
            .auth
            .authenticate(request.metadata())
            .await
            .map_err(|e| {
                warn!(%peer, "ADS stream refused: {e}");
                e.to_status()
            })?;
        let id = core.next_stream.fetch_add(1, Ordering::Relaxed) + 1;
        let headers = crate::status::custom_headers(request.metadata());
        core.status
            .stream_opened(id, peer.clone(), caller.to_string(), headers);
        info!(stream = id, %peer, %caller, "ADS stream opened");
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(run_stream(core.clone(), id, request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn run_stream(
    core: Arc<Core>,
    id: u64,
    mut inbound: Streaming<DeltaDiscoveryRequest>,
    tx: Outbound,
) {
    let mut snapshots = core.snapshots.subscribe();
    let mut paused = core.paused.subscribe();
    let mut stopping = core.stopping.subscribe();
    let mut stream = StreamState::new(id);
    let reason: String = loop {
        let responses = tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(request)) => {
                    let snapshot = snapshots.borrow().clone();
                    stream.on_request(request, &snapshot, &core)
                }
                Ok(None) => break "the client closed the stream".into(),
                Err(status) => break format!("stream error: {}", status.message()),
            },
            changed = snapshots.changed() => {
                if changed.is_err() {
                    break "the server is shutting down".into();
                }
                let snapshot = snapshots.borrow_and_update().clone();
                stream.on_snapshot(&snapshot, &core)
            },
            _ = crate::server::until_set(&mut paused) => {
                let _ = tx.send(Err(Status::unavailable(PAUSED))).await;
                break "paused".into();
            },
            _ = crate::server::until_set(&mut stopping) => {
                let _ = tx.send(Err(Status::unavailable(STOPPING))).await;
                break "the server is stopping".into();
            },
            _ = tx.closed() => break "the client went away".into(),
        };
        let mut sent_all = true;
        for response in responses {
            if tx.send(Ok(response)).await.is_err() {
                sent_all = false;
                break;
            }
        }
        if !sent_all {
            break "the client went away".into();
        }
    };
    core.status.stream_closed(id);
    info!(stream = id, node = stream.node_id(), %reason, "ADS stream closed");
}

/// What one client subscribed to for one type, and what it was sent.
#[derive(Debug, Default)]
struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Resource name → version the client holds.
    sent: HashMap<String, Arc<str>>,
}

/// One stream's record of its client.
#[derive(Debug)]
pub(crate) struct StreamState {
    id: u64,
    node: Option<String>,
    subscriptions: BTreeMap<String, Subscription>,
}

impl StreamState {
    pub(crate) fn new(id: u64) -> Self {
        StreamState {
            id,
            node: None,
            subscriptions: BTreeMap::new(),
        }
    }

    fn node_id(&self) -> String {
        self.node
            .clone()
            .unwrap_or_else(|| format!("stream-{}", self.id))
    }

    /// Handles one request; returns the responses to send (zero or one).
    pub(crate) fn on_request(
        &mut self,
        request: DeltaDiscoveryRequest,
        snapshot: &Snapshot,
        core: &Core,
    ) -> Vec<DeltaDiscoveryResponse> {
        if self.node.is_none()
            && let Some(node) = &request.node
        {
            self.node = Some(node.id.clone());
            core.status.stream_node(self.id, &node.id);
        }
        let type_url = request.type_url;
        if !request.response_nonce.is_empty() {
            let node = self.node_id();
            match &request.error_detail {
                Some(error) => {
                    warn!(%node, %type_url, nonce = %request.response_nonce, "NACK: {}", error.message);
                    core.status
                        .nack(&node, &type_url, &request.response_nonce, &error.message);
                }
                None => {
                    debug!(%node, %type_url, nonce = %request.response_nonce, "ACK");
                    core.status.ack(&node, &type_url, &request.response_nonce);
                }
            }
        }

        let first = !self.subscriptions.contains_key(&type_url);
        let sub = self.subscriptions.entry(type_url.clone()).or_default();
        if first {
            // An empty first subscription is the legacy wildcard (what ztunnel sends).
            sub.wildcard = request.resource_names_subscribe.is_empty();
            sub.sent = request
                .initial_resource_versions
                .into_iter()
                .map(|(name, version)| (name, Arc::from(version)))
                .collect();
        }
        let mut requested = Vec::new();
        let mut wildcard_added = false;
        for name in request.resource_names_subscribe {
            if name == "*" {
                wildcard_added |= !sub.wildcard;
                sub.wildcard = true;
            } else {
                if !first {
                    // Asking again means the client wants it again.
                    sub.sent.remove(&name);
                }
                sub.names.insert(name.clone());
                requested.push(name);
            }
        }
        for name in request.resource_names_unsubscribe {
            if name == "*" {
                sub.wildcard = false;
            } else {
                sub.names.remove(&name);
                sub.sent.remove(&name);
            }
        }
        if !first && requested.is_empty() && !wildcard_added {
            return Vec::new();
        }
        let (resources, removed) = diff(sub, snapshot.of_type(&type_url), &requested);
        vec![self.response(core, snapshot, type_url, resources, removed)]
    }

    /// Handles a new snapshot: the changes for every subscribed type.
    pub(crate) fn on_snapshot(
        &mut self,
        snapshot: &Snapshot,
        core: &Core,
    ) -> Vec<DeltaDiscoveryResponse> {
        let mut out = Vec::new();
        let types: Vec<String> = self.subscriptions.keys().cloned().collect();
        for type_url in types {
            let Some(sub) = self.subscriptions.get_mut(&type_url) else {
                continue;
            };
            let (resources, removed) = diff(sub, snapshot.of_type(&type_url), &[]);
            if resources.is_empty() && removed.is_empty() {
                continue;
            }
            out.push(self.response(core, snapshot, type_url, resources, removed));
        }
        out
    }

    fn response(
        &self,
        core: &Core,
        snapshot: &Snapshot,
        type_url: String,
        resources: Vec<Resource>,
        removed: Vec<String>,
    ) -> DeltaDiscoveryResponse {
        let nonce = (core.next_nonce.fetch_add(1, Ordering::Relaxed) + 1).to_string();
        info!(
            node = %self.node_id(),
            %type_url,
            %nonce,
            resources = resources.len(),
            removed = removed.len(),
            "push"
        );
        DeltaDiscoveryResponse {
            system_version_info: snapshot.generation().to_string(),
            resources,
            type_url,
            nonce,
            removed_resources: removed,
        }
    }
}

/// What `sub` lacks of `current`: resources to send and names to remove.
/// Updates `sub.sent` as if the result had been delivered. `requested` are
/// names just subscribed to, which get an answer even when unknown.
fn diff(
    sub: &mut Subscription,
    current: Option<&TypeSnapshot>,
    requested: &[String],
) -> (Vec<Resource>, Vec<String>) {
    let empty = TypeSnapshot::default();
    let current = current.unwrap_or(&empty);
    let mut resources: BTreeMap<String, Resource> = BTreeMap::new();
    let mut removed: BTreeSet<String> = BTreeSet::new();
    let mut add = |name: &str, v: &crate::snapshot::Versioned, sub: &Subscription| {
        if sub.sent.get(name) != Some(&v.version) {
            resources.insert(
                name.to_string(),
                Resource {
                    name: name.to_string(),
                    version: v.version.to_string(),
                    resource: Some((*v.body).clone()),
                    ..Default::default()
                },
            );
        }
    };
    if sub.wildcard {
        for (name, v) in current.resources() {
            add(name, v, sub);
        }
    }
    for name in &sub.names {
        match current.resolve(name) {
            Some(v) => add(name, v, sub),
            None => {
                if sub.sent.contains_key(name) || requested.contains(name) {
                    removed.insert(name.clone());
                }
            }
        }
    }
    if sub.wildcard {
        for name in sub.sent.keys() {
            if current.resolve(name).is_none() {
                removed.insert(name.clone());
            }
        }
    } else {
        // Versions the client reported for names it no longer subscribes to are moot.
        let names = &sub.names;
        sub.sent.retain(|name, _| names.contains(name));
    }
    for (name, r) in &resources {
        sub.sent.insert(name.clone(), Arc::from(r.version.as_str()));
    }
    for name in &removed {
        sub.sent.remove(name);
    }
    (
        resources.into_values().collect(),
        removed.into_iter().collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use zs_proto::ADDRESS_TYPE_URL;
    use zs_state::local::LocalConfig;

    /// Workloads `w<i>` with the given IPs.
    fn mesh(ips: &[&str]) -> Snapshot {
        let named: Vec<(String, &str)> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| (format!("w{i}"), *ip))
            .collect();
        mesh_of(&named)
    }

    fn mesh_of(workloads: &[(String, &str)]) -> Snapshot {
        let mut yaml = String::from("workloads:\n");
        for (uid, ip) in workloads {
            yaml.push_str(&format!(
                "- uid: {uid}\n  name: {uid}\n  namespace: ns\n  workloadIps: [\"{ip}\"]\n  services: {{}}\n"
            ));
        }
        Snapshot::from_config(&LocalConfig::from_yaml(&yaml).unwrap(), 1, &[])
    }

    fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
        r.resources.iter().map(|r| r.name.as_str()).collect()
    }

    fn wildcard_request() -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: ADDRESS_TYPE_URL.into(),
            ..Default::default()
        }
    }

    #[test]
    fn first_wildcard_request_gets_everything() {
        let core = Core::for_tests();
        let mut s = StreamState::new(1);
        let out = s.on_request(wildcard_request(), &mesh(&["10.0.0.1", "10.0.0.2"]), &core);
        assert_eq!(out.len(), 1);
        assert_eq!(names(&out[0]), ["w0", "w1"]);
        assert!(out[0].removed_resources.is_empty());
        assert_eq!(out[0].type_url, ADDRESS_TYPE_URL);
        assert!(!out[0].nonce.is_empty());
    }

    #[test]
    fn first_request_is_answered_even_when_there_is_nothing() {
        let core = Core::for_tests();
        let mut s = StreamState::new(1);
        let out = s.on_request(wildcard_request(), &Snapshot::empty(), &core);
        assert_eq!(out.len(), 1);
        assert!(out[0].resources.is_empty());
    }

    #[test]
    fn snapshot_change_pushes_only_the_difference() {
        let core = Core::for_tests();
        let mut s = StreamState::new(1);
        s.on_request(wildcard_request(), &mesh(&["10.0.0.1", "10.0.0.2"]), &core);
        // w0 changes, w1 disappears, w2 appears.
        let next = mesh_of(&[("w0".into(), "10.0.0.9"), ("w2".into(), "10.0.0.3")]);
        let out = s.on_snapshot(&next, &core);
        assert_eq!(out.len(), 1);
        assert_eq!(names(&out[0]), ["w0", "w2"]);
        assert_eq!(out[0].removed_resources, ["w1"]);
        // Nothing changed: nothing is sent.
        assert!(s.on_snapshot(&next, &core).is_empty());
    }

    #[test]
    fn pure_ack_gets_no_response_and_is_recorded() {
        let core = Core::for_tests();
        let mut s = StreamState::new(1);
        let first = s.on_request(wildcard_request(), &mesh(&["10.0.0.1"]), &core);
        let ack = DeltaDiscoveryRequest {
            type_url: ADDRESS_TYPE_URL.into(),
            response_nonce: first[0].nonce.clone(),
            ..Default::default()
        };
        assert!(s.on_request(ack, &mesh(&["10.0.0.1"]), &core).is_empty());
        let report = core.status.report(false, 1, Default::default());
        let rec = &report.nodes["stream-1"][ADDRESS_TYPE_URL];
        assert_eq!(rec.acks, 1);
        assert_eq!(rec.last_ack.as_ref().unwrap().nonce, first[0].nonce);
    }

    #[test]
    fn reconnect_with_initial_versions_gets_changes_and_removals_only() {
        let core = Core::for_tests();
        let before = mesh(&["10.0.0.1", "10.0.0.2"]);
        let mut old = StreamState::new(1);
        let first = old.on_request(wildcard_request(), &before, &core);
        let versions: HashMap<String, String> = first[0]
            .resources
            .iter()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect();
        // While the client was away: w1 was removed, w0 stayed the same.
        let after = mesh(&["10.0.0.1"]);
        let mut new = StreamState::new(2);
        let out = new.on_request(
            DeltaDiscoveryRequest {
                initial_resource_versions: versions,
                ..wildcard_request()
            },
            &after,
            &core,
        );
        assert_eq!(out.len(), 1);
        assert!(out[0].resources.is_empty());
        assert_eq!(out[0].removed_resources, ["w1"]);
    }

    #[test]
    fn on_demand_names_are_answered_by_alias_or_as_removed() {
        let core = Core::for_tests();
        let snap = mesh(&["10.0.0.1"]);
        let mut s = StreamState::new(1);
        // ztunnel's on-demand idiom: subscribe to nothing.
        let out = s.on_request(
            DeltaDiscoveryRequest {
                resource_names_subscribe: vec!["*".into()],
                resource_names_unsubscribe: vec!["*".into()],
                ..wildcard_request()
            },
            &snap,
            &core,
        );
        assert_eq!(out.len(), 1);
        assert!(out[0].resources.is_empty());
        let out = s.on_request(
            DeltaDiscoveryRequest {
                resource_names_subscribe: vec!["/10.0.0.1".into(), "/10.0.0.7".into()],
                ..wildcard_request()
            },
            &snap,
            &core,
        );
        assert_eq!(names(&out[0]), ["/10.0.0.1"]);
        assert_eq!(out[0].removed_resources, ["/10.0.0.7"]);
    }
}
