//! Per-connection HBONE costs that are pure computation: building the CONNECT
//! headers, parsing what the server reads, and hashing/comparing pool keys
//! (done on every outbound connection to find a pooled HTTP/2 connection).

use std::collections::hash_map::DefaultHasher;
use std::hash::{BuildHasher, Hash, Hasher};
use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use zs_hbone::PoolKey;
use zs_hbone::headers::{self, Baggage, WorkloadKind};
use zs_identity::Identity;

fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

fn baggage() -> Baggage {
    Baggage {
        cluster_id: "Kubernetes".into(),
        namespace: "ecs-demo".into(),
        workload_kind: Some(WorkloadKind::Deployment),
        workload_name: "checkout".into(),
        service_name: "checkout".into(),
        service_version: "v3".into(),
        region: "us-east-1".into(),
        zone: "us-east-1a".into(),
    }
}

fn build_headers(c: &mut Criterion) {
    let mut g = c.benchmark_group("hbone_headers");
    let client: SocketAddr = "10.0.0.5:43210".parse().unwrap();
    let client6: SocketAddr = "[fd00::5]:43210".parse().unwrap();
    g.bench_function("forwarded/ipv4_with_host", |b| {
        b.iter(|| {
            headers::forwarded(
                black_box(client),
                Some("checkout.ecs-demo.svc.cluster.local"),
            )
        })
    });
    g.bench_function("forwarded/ipv6_no_host", |b| {
        b.iter(|| headers::forwarded(black_box(client6), None))
    });
    g.bench_function("traceparent", |b| b.iter(headers::traceparent));
    let bag = baggage();
    g.bench_function("baggage/build_all_fields", |b| {
        b.iter(|| black_box(&bag).to_header_value())
    });
    let value = bag.to_header_value();
    g.bench_function("baggage/parse", |b| {
        b.iter(|| Baggage::parse([black_box(&value)]))
    });
    let fwd = headers::forwarded(client, Some("checkout.ecs-demo.svc.cluster.local"));
    let fwd = fwd.to_str().unwrap();
    g.bench_function("forwarded_host/parse", |b| {
        b.iter(|| headers::forwarded_host(black_box(fwd)))
    });
    g.bench_function("authority/parse_ip", |b| {
        b.iter(|| headers::parse_authority(black_box("10.0.0.9:8080")))
    });
    g.bench_function("authority/parse_host", |b| {
        b.iter(|| headers::parse_authority(black_box("checkout.ecs-demo.svc.cluster.local:8080")))
    });
    g.finish();
}

fn pool_keys(c: &mut Criterion) {
    let mut g = c.benchmark_group("hbone_pool_key");
    let src = id("spiffe://cluster.local/ns/ecs-demo/sa/frontend");
    let dst: SocketAddr = "10.0.3.17:15008".parse().unwrap();
    let one = PoolKey {
        src: src.clone(),
        dst_identities: vec![id("spiffe://cluster.local/ns/ecs-demo/sa/checkout")],
        dst,
    };
    let three = PoolKey {
        src: src.clone(),
        dst_identities: vec![
            id("spiffe://cluster.local/ns/ecs-demo/sa/checkout"),
            id("spiffe://cluster.local/ns/ecs-demo/sa/checkout-canary"),
            id("spiffe://cluster.local/ns/ecs-demo/sa/checkout-legacy"),
        ],
        dst,
    };
    let hasher = std::collections::hash_map::RandomState::new();
    g.bench_function("hash/1_identity", |b| {
        b.iter(|| hasher.hash_one(black_box(&one)))
    });
    g.bench_function("hash/3_identities", |b| {
        b.iter(|| hasher.hash_one(black_box(&three)))
    });
    g.bench_function("hash/3_identities_sip", |b| {
        b.iter(|| {
            let mut h = DefaultHasher::new();
            black_box(&three).hash(&mut h);
            h.finish()
        })
    });
    // Equal keys built separately share no allocations: the comparison walks the strings.
    let three_again = PoolKey {
        src: id("spiffe://cluster.local/ns/ecs-demo/sa/frontend"),
        dst_identities: three
            .dst_identities
            .iter()
            .map(|i| id(&i.to_string()))
            .collect(),
        dst,
    };
    g.bench_function("eq/3_identities_equal", |b| {
        b.iter(|| black_box(&three) == black_box(&three_again))
    });
    g.bench_function("eq/different_dst", |b| {
        let other = PoolKey {
            dst: "10.0.3.18:15008".parse().unwrap(),
            ..three.clone()
        };
        b.iter(|| black_box(&three) == black_box(&other))
    });
    g.bench_function("clone/3_identities", |b| {
        b.iter(|| black_box(&three).clone())
    });
    g.finish();
}

criterion_group!(benches, build_headers, pool_keys);
criterion_main!(benches);
