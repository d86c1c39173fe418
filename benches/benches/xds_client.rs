//! The istiod client's own cost, over real gRPC and TLS on loopback:
//!
//! * `ads_push_to_ack/<n>`: istiod pushes one delta response of `n` resources
//!   (about 200 bytes each, like small workloads) until the client's ACK
//!   arrives, with a handler that does nothing. This is the transport, decode
//!   and bookkeeping overhead that comes on top of applying the resources to
//!   the mesh state.
//! * `ca_fetch`: one `CreateCertificate` (key and CSR generation, the RPC, the
//!   CA signing, parsing the chain) on a warm channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use prometheus_client::registry::Registry;
use tonic::transport::Server;
use zs_xds::ads::{AdsClient, AdsConfig, Node, Rejection, XdsHandler, XdsResource};
use zs_xds::auth::CallCredentials;
use zs_xds::ca::CaClient;
use zs_xds::channel::{self, ChannelConfig, Purpose, RootSource};
use zs_xds::testing::ads::{ScriptedAds, resource, response};
use zs_xds::testing::ca::TestCaService;
use zs_xds::testing::pki::TestPki;
use zs_xds::testing::server::TlsServer;

struct NoopHandler;

impl XdsHandler for NoopHandler {
    fn apply(&self, _: &str, _: &[XdsResource], _: &[String]) -> Vec<Rejection> {
        Vec::new()
    }
}

struct Fixture {
    ads: ScriptedAds,
    ca: CaClient,
    _server: TlsServer,
    _client: tokio::task::JoinHandle<()>,
}

async fn fixture() -> Fixture {
    let pki = TestPki::new("bench root");
    let ads = ScriptedAds::new();
    let ca_service = TestCaService::new();
    let router = Server::builder()
        .add_service(ads.clone().into_server())
        .add_service(ca_service.into_server());
    let server = TlsServer::bind(pki.server_config(&["127.0.0.1"]), router)
        .await
        .unwrap();
    let roots = RootSource::InlinePem(pki.root_pem().to_string());
    let xds = channel::connect(&ChannelConfig::new(
        server.url(),
        roots.clone(),
        Purpose::Xds,
    ))
    .unwrap();
    let client = AdsClient::new(
        xds,
        AdsConfig::new(Node::ztunnel([
            ("POD_NAME", "bench"),
            ("POD_NAMESPACE", "bench"),
        ])),
        CallCredentials::none(),
        Arc::new(NoopHandler),
        &mut Registry::default(),
    );
    let client = tokio::spawn(client.run());
    ads.next_request().await;
    ads.next_request().await;
    let ca_channel =
        channel::connect(&ChannelConfig::new(server.url(), roots, Purpose::Ca)).unwrap();
    Fixture {
        ads,
        ca: CaClient::new(
            ca_channel,
            CallCredentials::none(),
            Duration::from_secs(3600),
        ),
        _server: server,
        _client: client,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(fixture());
    let type_url = zs_proto::ADDRESS_TYPE_URL;

    let mut group = c.benchmark_group("ads_push_to_ack");
    group.sample_size(20);
    for n in [1usize, 1_000, 10_000] {
        let resources: Vec<_> = (0..n)
            .map(|i| {
                resource(
                    &format!("cluster1//Pod/ns/wl-{i}"),
                    "1",
                    type_url,
                    vec![7u8; 200],
                )
            })
            .collect();
        let mut nonce = 0u64;
        group.bench_with_input(
            BenchmarkId::from_parameter(n),
            &resources,
            |b, resources| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            nonce += 1;
                            let push =
                                response(type_url, &nonce.to_string(), resources.clone(), &[]);
                            let start = Instant::now();
                            f.ads.push(push).await;
                            let ack = f.ads.next_request().await;
                            total += start.elapsed();
                            assert_eq!(ack.request.response_nonce, nonce.to_string());
                        }
                        total
                    })
                })
            },
        );
    }
    group.finish();

    let identity = "spiffe://cluster.local/ns/bench/sa/bench".parse().unwrap();
    c.bench_function("ca_fetch", |b| {
        b.iter(|| rt.block_on(f.ca.fetch(&identity)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
