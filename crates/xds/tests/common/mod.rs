//! Shared fixtures: an istiod stand-in (scripted ADS + test CA over real TLS)
//! and a recording xDS handler.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tonic::transport::Server;
use zs_xds::ads::{AdsClient, AdsConfig, Node, Rejection, XdsHandler, XdsResource, XdsStatus};
use zs_xds::auth::CallCredentials;
use zs_xds::backoff::Backoff;
use zs_xds::channel::{self, ChannelConfig, Purpose, RootSource};
use zs_xds::testing::ads::ScriptedAds;
use zs_xds::testing::ca::TestCaService;
use zs_xds::testing::pki::TestPki;
use zs_xds::testing::server::TlsServer;

pub const ADDRESS: &str = zs_proto::ADDRESS_TYPE_URL;
pub const AUTHZ: &str = zs_proto::AUTHORIZATION_TYPE_URL;
pub const ISTIOD_SVC: &str = "istiod.istio-system.svc";

/// Waits for `f` to hold, polling; panics after 20 s.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Awaits `fut` or panics after 20 s.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// istiod stand-in: scripted ADS and a CA behind TLS with a certificate for
/// `names`.
pub struct Istiod {
    pub pki: TestPki,
    pub ads: ScriptedAds,
    pub ca: TestCaService,
    pub server: TlsServer,
    names: Vec<String>,
}

impl Istiod {
    /// Serves with a certificate for 127.0.0.1 (reachable by URL as is).
    pub async fn start() -> Self {
        Self::start_with_names(&["127.0.0.1"]).await
    }

    /// Serves with a certificate for `names` only.
    pub async fn start_with_names(names: &[&str]) -> Self {
        let pki = TestPki::new("istiod test root");
        let ads = ScriptedAds::new();
        let ca = TestCaService::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = serve(&pki, names, &ads, &ca, listener);
        Istiod {
            pki,
            ads,
            ca,
            server,
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Kills the server and starts a new one on the same port with the same
    /// PKI, ADS script and CA (istiod restarting).
    pub async fn restart(&mut self) {
        let addr = self.server.addr();
        self.server.kill();
        let listener = within("rebinding the port", async {
            loop {
                match TcpListener::bind(addr).await {
                    Ok(l) => break l,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await;
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        self.server = serve(&self.pki, &names, &self.ads, &self.ca, listener);
    }

    pub fn channel_config(&self, purpose: Purpose) -> ChannelConfig {
        ChannelConfig::new(
            self.url(),
            RootSource::InlinePem(self.pki.root_pem().to_string()),
            purpose,
        )
    }
}

fn serve(
    pki: &TestPki,
    names: &[&str],
    ads: &ScriptedAds,
    ca: &TestCaService,
    listener: TcpListener,
) -> TlsServer {
    let router = Server::builder()
        .add_service(ads.clone().into_server())
        .add_service(ca.clone().into_server());
    TlsServer::start(listener, pki.server_config(names), router)
}

/// One `apply` call: type URL, resource names, removed names.
pub type ApplyCall = (String, Vec<String>, Vec<String>);

/// A handler that keeps what it applied and rejects bodies equal to `bad`.
#[derive(Default)]
pub struct RecordingHandler {
    pub state: Mutex<BTreeMap<(String, String), Vec<u8>>>,
    pub calls: Mutex<Vec<ApplyCall>>,
}

impl RecordingHandler {
    pub fn names(&self, type_url: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .keys()
            .filter(|(t, _)| t == type_url)
            .map(|(_, n)| n.clone())
            .collect()
    }

    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl XdsHandler for RecordingHandler {
    fn apply(
        &self,
        type_url: &str,
        resources: &[XdsResource],
        removed: &[String],
    ) -> Vec<Rejection> {
        let mut rejections = Vec::new();
        let mut state = self.state.lock().unwrap();
        for r in resources {
            if r.body.value == b"bad" {
                rejections.push(Rejection {
                    name: r.name.clone(),
                    reason: "malformed".into(),
                });
            } else {
                state.insert((type_url.to_string(), r.name.clone()), r.body.value.clone());
            }
        }
        for name in removed {
            state.remove(&(type_url.to_string(), name.clone()));
        }
        self.calls.lock().unwrap().push((
            type_url.to_string(),
            resources.iter().map(|r| r.name.clone()).collect(),
            removed.to_vec(),
        ));
        rejections
    }
}

/// A running ADS client.
pub struct Client {
    pub handler: Arc<RecordingHandler>,
    pub status: XdsStatus,
    pub registry: Registry,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts an ADS client against `config` with `credentials`.
pub fn start_client(config: &ChannelConfig, credentials: CallCredentials) -> Client {
    let channel = channel::connect(config).unwrap();
    let handler = Arc::new(RecordingHandler::default());
    let mut registry = Registry::default();
    let mut ads_config = AdsConfig::new(Node::ztunnel([
        ("INSTANCE_IP", "10.0.0.5"),
        ("POD_NAME", "echo"),
        ("POD_NAMESPACE", "ecs-demo"),
        ("ISTIO_META_CLUSTER_ID", "ecs"),
    ]));
    // Small backoff so reconnect tests do not wait long; the rules are the same.
    ads_config.backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(200), 0.2);
    let client = AdsClient::new(
        channel,
        ads_config,
        credentials,
        handler.clone(),
        &mut registry,
    );
    let status = client.status();
    let task = tokio::spawn(client.run());
    Client {
        handler,
        status,
        registry,
        task,
    }
}

/// The text exposition of `registry`.
pub fn metrics_text(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
    out
}
