//! The metrics server on a real loopback socket, scraped as Prometheus does.

mod common;

use std::io::Read as _;
use std::sync::Arc;

use common::{get, request, start};
use http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use zs_admin::metrics_server::{self, register_build_info, register_process_metrics};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    reporter: String,
    source_workload: String,
    response_flags: String,
}

/// A registry with one labelled counter family under the `istio` prefix (as
/// the proxy registers its traffic counters) and the build gauge.
fn registry() -> Registry {
    let mut registry = Registry::default();
    let opened = Family::<Labels, Counter>::default();
    registry.sub_registry_with_prefix("istio").register(
        "tcp_connections_opened",
        "The total number of TCP connections opened",
        opened.clone(),
    );
    opened
        .get_or_create(&Labels {
            reporter: "source".into(),
            source_workload: "sleep".into(),
            response_flags: "-".into(),
        })
        .inc_by(3);
    register_build_info(&mut registry, "1.28.0");
    registry
}

async fn start_metrics(registry: Registry) -> common::Running {
    let registry = Arc::new(registry);
    start(|listener, stop| async move {
        metrics_server::serve(listener, registry, async {
            let _ = stop.await;
        })
        .await
    })
    .await
}

/// What ztunnel serves for the same registry (a registry's own metrics come
/// before those of its prefixed sub-registries).
const EXPOSITION: &str = "\
# HELP istio_build Istio component build info.
# TYPE istio_build gauge
istio_build{component=\"ztunnel\",tag=\"1.28.0\"} 1
# HELP istio_tcp_connections_opened The total number of TCP connections opened.
# TYPE istio_tcp_connections_opened counter
istio_tcp_connections_opened_total{reporter=\"source\",source_workload=\"sleep\",response_flags=\"-\"} 3
# EOF
";

#[tokio::test]
async fn plain_scrape_is_ztunnels_body_as_text_plain() {
    let server = start_metrics(registry()).await;
    let answer = get(server.addr, "/stats/prometheus").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(answer.header("content-encoding"), None);
    assert_eq!(answer.text(), EXPOSITION);
}

#[tokio::test]
async fn openmetrics_is_served_when_accept_asks_for_it() {
    let server = start_metrics(registry()).await;
    let prometheus_accept =
        "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
    let answer = request(
        server.addr,
        Method::GET,
        "/metrics",
        &[("accept", prometheus_accept)],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.header("content-type"),
        Some("application/openmetrics-text;charset=utf-8;version=1.0.0")
    );
    assert_eq!(answer.text(), EXPOSITION);
    assert!(answer.text().ends_with("# EOF\n"));
}

#[tokio::test]
async fn both_paths_serve_the_same_registry() {
    let server = start_metrics(registry()).await;
    let a = get(server.addr, "/metrics").await;
    let b = get(server.addr, "/stats/prometheus").await;
    assert_eq!(a.body, b.body);
}

#[tokio::test]
async fn counters_read_at_scrape_time() {
    let mut registry = Registry::default();
    let counter = Counter::<u64>::default();
    registry.register(
        "istio_xds_message",
        "Total number of messages received",
        counter.clone(),
    );
    let server = start_metrics(registry).await;
    assert!(
        get(server.addr, "/metrics")
            .await
            .text()
            .contains("\nistio_xds_message_total 0\n")
    );
    counter.inc_by(7);
    assert!(
        get(server.addr, "/metrics")
            .await
            .text()
            .contains("\nistio_xds_message_total 7\n")
    );
}

#[tokio::test]
async fn gzip_is_used_when_asked_and_round_trips() {
    let server = start_metrics(registry()).await;
    let answer = request(
        server.addr,
        Method::GET,
        "/stats/prometheus",
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-encoding"), Some("gzip"));
    assert_eq!(answer.header("vary"), Some("accept-encoding"));
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(&answer.body[..])
        .read_to_string(&mut decoded)
        .expect("valid gzip");
    assert_eq!(decoded, EXPOSITION);
}

#[tokio::test]
async fn deflate_is_used_when_preferred() {
    let server = start_metrics(registry()).await;
    let answer = request(
        server.addr,
        Method::GET,
        "/metrics",
        &[("accept-encoding", "gzip;q=0.1, deflate")],
    )
    .await;
    assert_eq!(answer.header("content-encoding"), Some("deflate"));
    let mut decoded = String::new();
    flate2::read::ZlibDecoder::new(&answer.body[..])
        .read_to_string(&mut decoded)
        .expect("valid zlib");
    assert_eq!(decoded, EXPOSITION);
}

#[tokio::test]
async fn unsupported_encodings_get_identity() {
    let server = start_metrics(registry()).await;
    let answer = request(
        server.addr,
        Method::GET,
        "/metrics",
        &[("accept-encoding", "br, zstd")],
    )
    .await;
    assert_eq!(answer.header("content-encoding"), None);
    assert_eq!(answer.text(), EXPOSITION);
}

#[tokio::test]
async fn process_metrics_report_descriptors() {
    let mut registry = Registry::default();
    register_process_metrics(&mut registry);
    let server = start_metrics(registry).await;
    let text = get(server.addr, "/metrics").await.text().to_owned();
    assert!(text.contains("# TYPE process_open_fds gauge\n"), "{text}");
    assert!(text.contains("# TYPE process_max_fds gauge\n"), "{text}");
    let value = |name: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing in {text}"));
        line[name.len() + 1..].parse().expect("integer")
    };
    let open = value("process_open_fds");
    let max = value("process_max_fds");
    // This process holds at least stdin/out/err and the listener.
    assert!(open >= 4, "open fds {open}");
    assert!(max >= open, "max {max} < open {open}");
    assert_eq!(Some(max), metrics_server::max_fds());
}

#[tokio::test]
async fn other_paths_get_404() {
    let server = start_metrics(registry()).await;
    assert_eq!(
        get(server.addr, "/stats").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(server.addr, "/healthz/ready").await.status,
        StatusCode::NOT_FOUND
    );
}
