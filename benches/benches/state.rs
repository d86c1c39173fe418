//! The mesh state at the size of a large mesh: 10,000 workloads and 1,000
//! services, each workload an endpoint of one service (ten per service), with
//! fields sized like Kubernetes pods and ECS tasks (UIDs, node names, two
//! service ports, locality).
//!
//! * `state/full_push`: one delta push of all 11,000 `istio.workload.Address`
//!   resources applied to an empty state with `apply_addresses`: protobuf
//!   decode, conversion and indexing, as at a sidecar's first sync.
//! * `state/update_one_workload`: one workload resource (its IP changed)
//!   applied to the full state: the common steady-state push.
//! * `state/route_by_vip` and `state/route_by_workload_ip`: one outbound
//!   route decision in the full state (service VIP with load balancing across
//!   ten endpoints; a pod IP directly).
//! * `state/route_failover_1000_endpoints`: one route decision for a service
//!   with 1,000 endpoints spread over two regions and six zones, locality
//!   FAILOVER (network, region, zone), from a client in one zone: ranking,
//!   filtering to the best tier, and the weighted pick.
//!
//! Before the timings, the bench prints the heap held by the full state,
//! measured with a counting global allocator (counting only while a
//! measurement is running; otherwise it forwards to the system allocator).
//!
//! Targets: one update < 50 µs, full push < 100 ms, state < 40 MiB;
//! endpoint selection among 1,000 endpoints with FAILOVER < 2 µs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use prost::Message;
use rand::SeedableRng;
use zs_proto::istio::workload as pb;
use zs_state::xds::ResourceRef;
use zs_state::{Destination, MeshState, RouteRequest};

// ---------------------------------------------------------------------------
// Heap accounting

/// Forwards to the system allocator; while `COUNTING` is set, keeps the net
/// number of bytes allocated.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the counters are plain atomics
// and never touch the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is (see the impl's comment).
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Net heap bytes allocated by `f` (and still held by what it returns).
fn heap_held_by<T>(f: impl FnOnce() -> T) -> (T, isize) {
    LIVE.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let value = f();
    COUNTING.store(false, Ordering::SeqCst);
    (value, LIVE.load(Ordering::SeqCst))
}

// ---------------------------------------------------------------------------
// The mesh

const WORKLOADS: usize = 10_000;
const SERVICES: usize = 1_000;
const NAMESPACES: usize = 50;

fn namespace(svc: usize) -> String {
    format!("team-{:02}", svc % NAMESPACES)
}

fn service_host(svc: usize) -> String {
    format!("svc-{svc:04}.{}.svc.cluster.local", namespace(svc))
}

fn vip(svc: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, (svc / 250) as u8, (svc % 250) as u8 + 1)
}

fn pod_ip(i: usize, generation: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 100 + generation, (i / 250) as u8, (i % 250) as u8 + 1)
}

fn workload_uid(i: usize) -> String {
    let svc = i % SERVICES;
    format!(
        "Kubernetes//Pod/{}/svc-{svc:04}-7c9f8d6b5-{:05x}",
        namespace(svc),
        i * 7919 % 0xfffff
    )
}

fn workload(i: usize, generation: u8) -> pb::Address {
    let svc = i % SERVICES;
    let ns = namespace(svc);
    let uid = workload_uid(i);
    let name = uid.rsplit('/').next().unwrap_or_default().to_string();
    let port = |service_port, target_port| pb::Port {
        service_port,
        target_port,
        app_protocol: 0,
    };
    let services = std::collections::HashMap::from([(
        format!("{ns}/{}", service_host(svc)),
        pb::PortList {
            ports: vec![port(80, 8080), port(9090, 9090)],
        },
    )]);
    pb::Address {
        r#type: Some(pb::address::Type::Workload(pb::Workload {
            uid,
            name,
            namespace: ns,
            addresses: vec![pod_ip(i, generation).octets().to_vec().into()],
            network: String::new(),
            tunnel_protocol: pb::TunnelProtocol::Hbone as i32,
            trust_domain: "cluster.local".into(),
            service_account: format!("svc-{svc:04}"),
            node: format!("ip-10-0-{}-{}.us-east-2.compute.internal", i % 200, i % 250),
            canonical_name: format!("svc-{svc:04}"),
            canonical_revision: "v1".into(),
            workload_type: pb::WorkloadType::Pod as i32,
            workload_name: format!("svc-{svc:04}"),
            services,
            cluster_id: "Kubernetes".into(),
            locality: Some(pb::Locality {
                region: "us-east-2".into(),
                zone: format!("us-east-2{}", ["a", "b", "c"][i % 3]),
                subzone: String::new(),
            }),
            ..Default::default()
        })),
    }
}

fn service(svc: usize) -> pb::Address {
    let port = |service_port, target_port| pb::Port {
        service_port,
        target_port,
        app_protocol: 0,
    };
    pb::Address {
        r#type: Some(pb::address::Type::Service(pb::Service {
            name: format!("svc-{svc:04}"),
            namespace: namespace(svc),
            hostname: service_host(svc),
            addresses: vec![pb::NetworkAddress {
                network: String::new(),
                address: vip(svc).octets().to_vec(),
                ..Default::default()
            }],
            ports: vec![port(80, 8080), port(9090, 9090)],
            subject_alt_names: vec![format!(
                "spiffe://cluster.local/ns/{}/sa/svc-{svc:04}",
                namespace(svc)
            )],
            ..Default::default()
        })),
    }
}

/// An encoded resource: (name, body).
struct Encoded {
    name: String,
    body: Vec<u8>,
}

fn full_push() -> Vec<Encoded> {
    let mut out = Vec::with_capacity(WORKLOADS + SERVICES);
    for svc in 0..SERVICES {
        out.push(Encoded {
            name: format!("{}/{}", namespace(svc), service_host(svc)),
            body: service(svc).encode_to_vec(),
        });
    }
    for i in 0..WORKLOADS {
        out.push(Encoded {
            name: workload_uid(i),
            body: workload(i, 0).encode_to_vec(),
        });
    }
    out
}

fn refs(push: &[Encoded]) -> Vec<ResourceRef<'_>> {
    push.iter()
        .map(|e| ResourceRef {
            name: &e.name,
            type_url: zs_proto::ADDRESS_TYPE_URL,
            value: &e.body,
        })
        .collect()
}

fn apply(state: &mut MeshState, push: &[ResourceRef<'_>]) {
    let rejected = state.apply_addresses(push, &[]);
    assert!(
        rejected.is_empty(),
        "bench resources rejected: {rejected:?}"
    );
}

fn report_memory(push: &[Encoded]) {
    let refs = refs(push);
    let (state, bytes) = heap_held_by(|| {
        let mut state = MeshState::new();
        apply(&mut state, &refs);
        state
    });
    assert_eq!(
        (state.workload_count(), state.service_count()),
        (WORKLOADS, SERVICES)
    );
    let input: usize = push.iter().map(|e| e.body.len()).sum();
    println!(
        "state memory: {:.2} MiB held by {WORKLOADS} workloads and {SERVICES} services \
         ({} bytes per workload on average; the encoded push itself is {:.2} MiB)",
        bytes as f64 / (1024.0 * 1024.0),
        bytes / WORKLOADS as isize,
        input as f64 / (1024.0 * 1024.0),
    );
}

fn bench_state(c: &mut Criterion) {
    let push = full_push();
    report_memory(&push);
    let push_refs = refs(&push);

    let mut g = c.benchmark_group("state");
    g.sample_size(20);
    g.bench_function("full_push", |b| {
        b.iter_batched(
            MeshState::new,
            |mut state| {
                apply(&mut state, black_box(&push_refs));
                state
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let mut state = MeshState::new();
    apply(&mut state, &push_refs);

    // The same workload alternating between two addresses, so every
    // iteration is a real change (re-index, endpoint update).
    let target = 4_242;
    let versions: Vec<Encoded> = (0..2u8)
        .map(|generation| Encoded {
            name: workload_uid(target),
            body: workload(target, generation).encode_to_vec(),
        })
        .collect();
    let mut g = c.benchmark_group("state");
    let mut flip = 0usize;
    g.bench_function("update_one_workload", |b| {
        b.iter(|| {
            flip ^= 1;
            let v = &versions[flip];
            let one = [ResourceRef {
                name: &v.name,
                type_url: zs_proto::ADDRESS_TYPE_URL,
                value: &v.body,
            }];
            apply(&mut state, black_box(&one));
        })
    });

    let source = state
        .workload(&workload_uid(1))
        .expect("source workload")
        .clone();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let by_vip = Destination::Addr(SocketAddr::new(IpAddr::V4(vip(517)), 80));
    bench_route(&mut g, "route_by_vip", &state, &source, &by_vip, &mut rng);
    let by_ip = Destination::Addr(SocketAddr::new(IpAddr::V4(pod_ip(7_001, 0)), 8080));
    bench_route(
        &mut g,
        "route_by_workload_ip",
        &state,
        &source,
        &by_ip,
        &mut rng,
    );
    g.finish();
}

/// Benchmarks one outbound route decision from `source` to `destination`.
fn bench_route(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    state: &MeshState,
    source: &zs_state::model::Workload,
    destination: &Destination,
    rng: &mut rand::rngs::SmallRng,
) {
    g.bench_function(name, |b| {
        b.iter(|| {
            let route = state.route(
                RouteRequest {
                    source,
                    destination: black_box(destination),
                    exclude: &[],
                },
                rng,
            );
            black_box(route.expect(name))
        })
    });
}

// ---------------------------------------------------------------------------
// One big service with locality failover

const BIG_ENDPOINTS: usize = 1_000;
const BIG_VIP: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 1);

fn zone_of(i: usize) -> (&'static str, &'static str) {
    const ZONES: [(&str, &str); 6] = [
        ("us-east-2", "us-east-2a"),
        ("us-east-2", "us-east-2b"),
        ("us-east-2", "us-east-2c"),
        ("us-west-2", "us-west-2a"),
        ("us-west-2", "us-west-2b"),
        ("us-west-2", "us-west-2c"),
    ];
    ZONES[i % ZONES.len()]
}

fn big_mesh() -> Vec<Encoded> {
    let host = "big.team-00.svc.cluster.local";
    let mut out = vec![Encoded {
        name: format!("team-00/{host}"),
        body: pb::Address {
            r#type: Some(pb::address::Type::Service(pb::Service {
                name: "big".into(),
                namespace: "team-00".into(),
                hostname: host.into(),
                addresses: vec![pb::NetworkAddress {
                    network: String::new(),
                    address: BIG_VIP.octets().to_vec(),
                    ..Default::default()
                }],
                ports: vec![pb::Port {
                    service_port: 80,
                    target_port: 8080,
                    app_protocol: 0,
                }],
                load_balancing: Some(pb::LoadBalancing {
                    routing_preference: vec![
                        pb::load_balancing::Scope::Network as i32,
                        pb::load_balancing::Scope::Region as i32,
                        pb::load_balancing::Scope::Zone as i32,
                    ],
                    mode: pb::load_balancing::Mode::Failover as i32,
                    health_policy: 0,
                }),
                ..Default::default()
            })),
        }
        .encode_to_vec(),
    }];
    // Endpoints 0..1000, plus the client (index 1000, not in the service).
    for i in 0..=BIG_ENDPOINTS {
        let (region, zone) = zone_of(i);
        let uid = format!("Kubernetes//Pod/team-00/big-{i:04}");
        let services = if i < BIG_ENDPOINTS {
            std::collections::HashMap::from([(
                format!("team-00/{host}"),
                pb::PortList {
                    ports: vec![pb::Port {
                        service_port: 80,
                        target_port: 8080,
                        app_protocol: 0,
                    }],
                },
            )])
        } else {
            Default::default()
        };
        out.push(Encoded {
            name: uid.clone(),
            body: pb::Address {
                r#type: Some(pb::address::Type::Workload(pb::Workload {
                    uid,
                    name: format!("big-{i:04}"),
                    namespace: "team-00".into(),
                    addresses: vec![
                        Ipv4Addr::new(10, 120, (i / 250) as u8, (i % 250) as u8 + 1)
                            .octets()
                            .to_vec()
                            .into(),
                    ],
                    tunnel_protocol: pb::TunnelProtocol::Hbone as i32,
                    trust_domain: "cluster.local".into(),
                    service_account: "big".into(),
                    services,
                    cluster_id: "Kubernetes".into(),
                    locality: Some(pb::Locality {
                        region: region.into(),
                        zone: zone.into(),
                        subzone: String::new(),
                    }),
                    ..Default::default()
                })),
            }
            .encode_to_vec(),
        });
    }
    out
}

fn bench_failover(c: &mut Criterion) {
    let push = big_mesh();
    let mut state = MeshState::new();
    apply(&mut state, &refs(&push));
    // The client is workload 1000, in zone_of(1000) (us-west-2b).
    let client_uid = format!("Kubernetes//Pod/team-00/big-{BIG_ENDPOINTS:04}");
    let source = state
        .workload(&client_uid)
        .expect("client workload")
        .clone();
    let client_zone = zone_of(BIG_ENDPOINTS);
    let destination = Destination::Addr(SocketAddr::new(IpAddr::V4(BIG_VIP), 80));
    let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
    // FAILOVER must keep every pick in the client's own zone.
    for _ in 0..100 {
        let route = state
            .route(
                RouteRequest {
                    source: &source,
                    destination: &destination,
                    exclude: &[],
                },
                &mut rng,
            )
            .expect("route to the big service");
        let picked = route.endpoint.expect("a service endpoint");
        let i: usize = picked
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("endpoint index");
        assert_eq!(
            zone_of(i),
            client_zone,
            "FAILOVER picked another zone: {picked}"
        );
    }
    let mut g = c.benchmark_group("state");
    bench_route(
        &mut g,
        "route_failover_1000_endpoints",
        &state,
        &source,
        &destination,
        &mut rng,
    );
    g.finish();
}

criterion_group!(benches, bench_state, bench_failover);
criterion_main!(benches);
