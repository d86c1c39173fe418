//! Traffic metrics and access logs, with ztunnel's names, labels and fields.
//!
//! Dashboards and alerts built for ambient mesh read `istio_tcp_*` series with a
//! fixed label set in a fixed order; this module reproduces them exactly (label
//! order is the field order of [`TrafficLabels`], missing values are `unknown`).
//!
//! Cost on the data path: labels are built and counters looked up once per
//! connection; the copy loop then adds each chunk's size to the byte counters
//! it was handed (one uncontended atomic add per chunk of up to 256 KiB), so
//! long-lived connections show their traffic while they run.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use zs_identity::Identity;
use zs_state::{ServiceDescription, Str, Workload};

/// A label value that renders `unknown` when absent or empty, as ztunnel does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Value(Option<Str>);

impl Value {
    pub fn new(s: impl Into<Str>) -> Self {
        let s = s.into();
        Value((!s.is_empty()).then_some(s))
    }

    fn from_opt(s: Option<&Str>) -> Self {
        Value(s.filter(|s| !s.is_empty()).cloned())
    }

    fn of_identity(id: Option<&Identity>) -> Self {
        Value(id.map(|i| Str::from(i.to_string())))
    }
}

impl EncodeLabelValue for Value {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0.as_deref().unwrap_or("unknown"))
    }
}

/// Which side of the connection reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Reporter {
    /// The client side (outbound).
    source,
    /// The server side (inbound).
    destination,
}

/// ztunnel's response flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ResponseFlags {
    #[default]
    None,
    /// Denied by authorization policy.
    Deny,
    /// Upstream connect failed.
    Connect,
    TlsFailure,
    H2HandshakeFailure,
    /// Dial timed out (likely a network policy blocking 15008).
    NetworkPolicy,
    IdentityError,
}

impl EncodeLabelValue for ResponseFlags {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            ResponseFlags::None => "-",
            ResponseFlags::Deny => "DENY",
            ResponseFlags::Connect => "CONNECT",
            ResponseFlags::TlsFailure => "TLS_FAILURE",
            ResponseFlags::H2HandshakeFailure => "H2_HANDSHAKE_FAILURE",
            ResponseFlags::NetworkPolicy => "NETWORK_POLICY",
            ResponseFlags::IdentityError => "IDENTITY_ERROR",
        })
    }
}

/// `mutual_tls` for HBONE, `unknown` for plain TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecurityPolicy {
    MutualTls,
    Unknown,
}

impl EncodeLabelValue for SecurityPolicy {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            SecurityPolicy::MutualTls => "mutual_tls",
            SecurityPolicy::Unknown => "unknown",
        })
    }
}

/// The common traffic label set, in ztunnel's order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TrafficLabels {
    pub reporter: Reporter,
    pub source_workload: Value,
    pub source_canonical_service: Value,
    pub source_canonical_revision: Value,
    pub source_workload_namespace: Value,
    pub source_principal: Value,
    pub source_app: Value,
    pub source_version: Value,
    pub source_cluster: Value,
    pub destination_service: Value,
    pub destination_service_namespace: Value,
    pub destination_service_name: Value,
    pub destination_workload: Value,
    pub destination_canonical_service: Value,
    pub destination_canonical_revision: Value,
    pub destination_workload_namespace: Value,
    pub destination_principal: Value,
    pub destination_app: Value,
    pub destination_version: Value,
    pub destination_cluster: Value,
    pub request_protocol: Value,
    pub response_flags: ResponseFlags,
    pub connection_security_policy: SecurityPolicy,
    pub source_region: Value,
    pub source_zone: Value,
    pub destination_region: Value,
    pub destination_zone: Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReporterLabel {
    reporter: Reporter,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Everything metrics and access logs say about one proxied connection.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub reporter: Reporter,
    pub src_addr: SocketAddr,
    pub src_workload: Option<Arc<Workload>>,
    pub src_identity: Option<Identity>,
    /// The L4 next hop (e.g. `10.0.0.9:15008`) or the app address inbound.
    pub dst_addr: Option<String>,
    /// The CONNECT authority, for HBONE.
    pub dst_hbone_addr: Option<String>,
    pub dst_service: Option<ServiceDescription>,
    pub dst_workload: Option<Arc<Workload>>,
    pub dst_identity: Option<Identity>,
    pub mtls: bool,
}

impl ConnectionInfo {
    fn labels(&self, flags: ResponseFlags) -> TrafficLabels {
        let src = self.src_workload.as_deref();
        let dst = self.dst_workload.as_deref();
        let svc = self.dst_service.as_ref();
        TrafficLabels {
            reporter: self.reporter,
            source_workload: Value::from_opt(src.map(workload_name)),
            source_canonical_service: Value::from_opt(src.map(|w| &w.canonical_name)),
            source_canonical_revision: Value::from_opt(src.map(|w| &w.canonical_revision)),
            source_workload_namespace: Value::from_opt(src.map(|w| &w.namespace)),
            source_principal: Value::of_identity(self.src_identity.as_ref()),
            source_app: Value::from_opt(src.map(|w| &w.canonical_name)),
            source_version: Value::from_opt(src.map(|w| &w.canonical_revision)),
            source_cluster: Value::from_opt(src.map(|w| &w.cluster_id)),
            destination_service: Value::from_opt(svc.map(|s| &s.hostname)),
            destination_service_namespace: Value::from_opt(svc.map(|s| &s.namespace)),
            destination_service_name: Value::from_opt(svc.map(|s| &s.name)),
            destination_workload: Value::from_opt(dst.map(workload_name)),
            destination_canonical_service: Value::from_opt(dst.map(|w| &w.canonical_name)),
            destination_canonical_revision: Value::from_opt(dst.map(|w| &w.canonical_revision)),
            destination_workload_namespace: Value::from_opt(dst.map(|w| &w.namespace)),
            destination_principal: Value::of_identity(self.dst_identity.as_ref()),
            destination_app: Value::from_opt(dst.map(|w| &w.canonical_name)),
            destination_version: Value::from_opt(dst.map(|w| &w.canonical_revision)),
            destination_cluster: Value::from_opt(dst.map(|w| &w.cluster_id)),
            request_protocol: Value::new("tcp"),
            response_flags: flags,
            connection_security_policy: if self.mtls {
                SecurityPolicy::MutualTls
            } else {
                SecurityPolicy::Unknown
            },
            source_region: Value::from_opt(src.map(|w| &w.locality.region)),
            source_zone: Value::from_opt(src.map(|w| &w.locality.zone)),
            destination_region: Value::from_opt(dst.map(|w| &w.locality.region)),
            destination_zone: Value::from_opt(dst.map(|w| &w.locality.zone)),
        }
    }
}

/// ztunnel labels `*_workload` with the workload name (the deployment), falling
/// back to the pod name.
fn workload_name(w: &Workload) -> &Str {
    if w.workload_name.is_empty() {
        &w.name
    } else {
        &w.workload_name
    }
}

/// The traffic metric families, registered once and shared by all listeners.
#[derive(Debug, Default)]
pub struct TrafficMetrics {
    opened: Family<TrafficLabels, Counter>,
    closed: Family<TrafficLabels, Counter>,
    failed: Family<TrafficLabels, Counter>,
    received_bytes: Family<TrafficLabels, Counter>,
    sent_bytes: Family<TrafficLabels, Counter>,
    sockets_open: Family<ReporterLabel, Gauge>,
    socks5_failures: Family<ReasonLabel, Counter>,
    policy_denials_live: Counter,
    leaked: Counter,
    inbound_failures: Counter,
}

impl TrafficMetrics {
    /// Creates the families and registers them (names without the `_total` suffix,
    /// which the encoder adds to counters).
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(TrafficMetrics::default());
        let istio = registry.sub_registry_with_prefix("istio");
        istio.register(
            "tcp_connections_opened",
            "The total number of TCP connections opened",
            m.opened.clone(),
        );
        istio.register(
            "tcp_connections_closed",
            "The total number of TCP connections closed",
            m.closed.clone(),
        );
        istio.register(
            "tcp_connections_failed",
            "The total number of TCP connections that failed to establish",
            m.failed.clone(),
        );
        istio.register(
            "tcp_received_bytes",
            "The size of total bytes received during request in case of a TCP connection",
            m.received_bytes.clone(),
        );
        istio.register(
            "tcp_sent_bytes",
            "The size of total bytes sent during response in case of TCP connection",
            m.sent_bytes.clone(),
        );
        istio.register(
            "tcp_sockets_open",
            "The current number of open sockets",
            m.sockets_open.clone(),
        );
        let own = registry.sub_registry_with_prefix("ztunnel_sidecar");
        own.register(
            "socks5_handshake_failures",
            "SOCKS5 handshakes that failed, by reason",
            m.socks5_failures.clone(),
        );
        own.register(
            "policy_closed_connections",
            "Open inbound connections closed because a policy change denied them",
            m.policy_denials_live.clone(),
        );
        own.register(
            "hbone_inbound_handshake_failures",
            "Inbound HBONE connections that failed before any request (TLS, HTTP/2, garbage)",
            m.inbound_failures.clone(),
        );
        own.register(
            "mesh_bypass_connections",
            "Plaintext connections to the application port from outside the sidecar (a client that ignored the proxy settings)",
            m.leaked.clone(),
        );
        m
    }

    /// Counts a failed SOCKS5 handshake.
    pub fn socks5_failure(&self, reason: &'static str) {
        self.socks5_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts an inbound connection closed by a policy change.
    pub fn policy_closed(&self) {
        self.policy_denials_live.inc();
    }

    /// Counts an inbound HBONE connection that failed its handshakes.
    pub fn inbound_failure(&self) {
        self.inbound_failures.inc();
    }

    /// Counts a plaintext connection that bypassed the mesh.
    pub fn mesh_bypass(&self) {
        self.leaked.inc();
    }

    /// Records the opening of a connection and returns the handle that records
    /// bytes and the close. Drop without `finish` records a close with no error.
    pub fn open(self: &Arc<Self>, info: ConnectionInfo) -> ConnectionRecorder {
        let labels = info.labels(ResponseFlags::None);
        self.opened.get_or_create(&labels).inc();
        let received = self.received_bytes.get_or_create(&labels).clone();
        let sent = self.sent_bytes.get_or_create(&labels).clone();
        let sockets = self
            .sockets_open
            .get_or_create(&ReporterLabel {
                reporter: info.reporter,
            })
            .clone();
        sockets.inc();
        ConnectionRecorder {
            metrics: self.clone(),
            info: Box::new(info),
            counters: Box::new((received, sent)),
            sockets,
            start: Instant::now(),
            finished: false,
        }
    }

    /// Records a connection that failed before being established (with an access log line).
    pub fn failed(self: &Arc<Self>, info: ConnectionInfo, flags: ResponseFlags, error: &str) {
        let labels = info.labels(flags);
        self.opened.get_or_create(&labels).inc();
        self.closed.get_or_create(&labels).inc();
        self.failed.get_or_create(&labels).inc();
        access_log(&info, 0, 0, std::time::Duration::ZERO, Some(error));
    }
}

/// Feeds a copy loop's byte counts into a connection's traffic counters. `a` is
/// the side the client is on (`received` = client → server), `b` the server side.
#[derive(Debug)]
pub struct ByteObserver {
    received: Counter,
    sent: Counter,
    /// Inbound copies run app ⇄ peer, so client → server is `b → a` there.
    client_is_b: bool,
}

impl zs_hbone::copy::Observer for ByteObserver {
    fn direct_counter(&self, a_to_b: bool) -> Option<zs_hbone::copy::DirectCounter> {
        // Same mapping as `a_to_b` / `b_to_a` below.
        let counter = if a_to_b == self.client_is_b {
            self.sent.clone()
        } else {
            self.received.clone()
        };
        Some(std::sync::Arc::new(move |n| {
            counter.inc_by(n);
        }))
    }
    fn a_to_b(&self, n: u64) {
        if self.client_is_b {
            self.sent.inc_by(n);
        } else {
            self.received.inc_by(n);
        }
    }
    fn b_to_a(&self, n: u64) {
        if self.client_is_b {
            self.received.inc_by(n);
        } else {
            self.sent.inc_by(n);
        }
    }
}

/// Tracks one established connection: byte counts and its close. Kept small
/// (everything boxed): one lives for as long as each proxied connection.
#[derive(Debug)]
pub struct ConnectionRecorder {
    metrics: Arc<TrafficMetrics>,
    info: Box<ConnectionInfo>,
    /// (`istio_tcp_received_bytes`, `istio_tcp_sent_bytes`) for this connection's labels.
    counters: Box<(Counter, Counter)>,
    sockets: Gauge,
    start: Instant,
    finished: bool,
}

impl ConnectionRecorder {
    /// Counters the copy loop adds to as bytes flow:
    /// (`istio_tcp_received_bytes`: client → server, `istio_tcp_sent_bytes`: server → client).
    pub fn byte_counters(&self) -> (Counter, Counter) {
        (*self.counters).clone()
    }

    /// The observer for a copy loop whose `a` side is the client (outbound) or,
    /// with `client_is_b`, whose `b` side is the client (inbound: app ⇄ peer).
    pub fn observer(&self, client_is_b: bool) -> ByteObserver {
        let (received, sent) = self.byte_counters();
        ByteObserver {
            received,
            sent,
            client_is_b,
        }
    }

    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// Records the close with the connection's byte totals
    /// (client → server, server → client), and an error if it ended in one.
    pub fn finish(mut self, totals: (u64, u64), flags: ResponseFlags, error: Option<&str>) {
        self.record(totals, flags, error);
    }

    fn record(&mut self, (received, sent): (u64, u64), flags: ResponseFlags, error: Option<&str>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let labels = self.info.labels(flags);
        let m = &self.metrics;
        m.closed.get_or_create(&labels).inc();
        if flags != ResponseFlags::None {
            m.failed.get_or_create(&labels).inc();
        }
        self.sockets.dec();
        // bytes_sent/bytes_recv are from the local application's point of view.
        let (app_sent, app_recv) = match self.info.reporter {
            Reporter::source => (received, sent),
            Reporter::destination => (sent, received),
        };
        access_log(&self.info, app_sent, app_recv, self.start.elapsed(), error);
    }
}

impl Drop for ConnectionRecorder {
    fn drop(&mut self) {
        self.record((0, 0), ResponseFlags::None, None);
    }
}

/// A known, non-empty string field value.
fn text(v: Option<&Str>) -> Option<&str> {
    v.filter(|s| !s.is_empty()).map(|s| &**s)
}

/// How access logs name a workload: ztunnel logs the pod name (where metrics
/// use the workload name), else the canonical name.
fn log_name(w: &Workload) -> &Str {
    if w.name.is_empty() {
        &w.canonical_name
    } else {
        &w.name
    }
}

/// Emits ztunnel's "connection complete" access log line (target `access`).
/// Names are recorded as strings (quoted in text logs, as ztunnel prints them),
/// addresses and counts bare, and unknown fields are omitted.
fn access_log(
    info: &ConnectionInfo,
    bytes_sent: u64,
    bytes_recv: u64,
    duration: std::time::Duration,
    error: Option<&str>,
) {
    let direction = match info.reporter {
        Reporter::source => "outbound",
        Reporter::destination => "inbound",
    };
    let mut dur = String::with_capacity(12);
    let _ = write!(dur, "{}ms", duration.as_millis());
    let src = info.src_workload.as_deref();
    let dst = info.dst_workload.as_deref();
    let src_identity = info.src_identity.as_ref().map(|i| i.to_string());
    let dst_identity = info.dst_identity.as_ref().map(|i| i.to_string());
    macro_rules! log_line {
        ($level:expr, $($extra:tt)*) => {
            tracing::event!(
                target: "access",
                $level,
                src.addr = %info.src_addr,
                src.workload = text(src.map(log_name)),
                src.namespace = text(src.map(|w| &w.namespace)),
                src.identity = src_identity.as_deref(),
                src.cluster = text(src.map(|w| &w.cluster_id)),
                dst.addr = info.dst_addr.as_deref().map(tracing::field::display),
                dst.hbone_addr = info.dst_hbone_addr.as_deref().map(tracing::field::display),
                dst.service = text(info.dst_service.as_ref().map(|s| &s.hostname)),
                dst.workload = text(dst.map(log_name)),
                dst.namespace = text(dst.map(|w| &w.namespace)),
                dst.identity = dst_identity.as_deref(),
                dst.cluster = text(dst.map(|w| &w.cluster_id)),
                direction,
                bytes_sent,
                bytes_recv,
                duration = dur.as_str(),
                $($extra)*
            )
        };
    }
    match error {
        None => log_line!(tracing::Level::INFO, "connection complete"),
        Some(error) => log_line!(tracing::Level::ERROR, error, "connection complete"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn info() -> ConnectionInfo {
        let mut src = Workload::new("u1", "ecs-demo-1", "task-1", "shell");
        src.workload_name = "shell-task".into();
        src.canonical_name = "shell".into();
        src.canonical_revision = "v1".into();
        src.cluster_id = "ecs-demo-1".into();
        ConnectionInfo {
            reporter: Reporter::source,
            src_addr: "127.0.0.1:40000".parse().unwrap(),
            src_workload: Some(Arc::new(src)),
            src_identity: Some(
                "spiffe://cluster.local/ns/ecs-demo-1/sa/shell"
                    .parse()
                    .unwrap(),
            ),
            dst_addr: Some("10.0.0.7:15008".into()),
            dst_hbone_addr: Some("10.0.0.7:8080".into()),
            dst_service: None,
            dst_workload: None,
            dst_identity: None,
            mtls: true,
        }
    }

    fn scrape(registry: &Registry) -> String {
        let mut out = String::new();
        encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn opened_and_closed_counters_carry_ztunnels_labels_in_order() {
        let mut registry = Registry::default();
        let m = TrafficMetrics::register(&mut registry);
        let rec = m.open(info());
        let (rx, tx) = rec.byte_counters();
        rx.inc_by(5);
        tx.inc_by(7);
        rec.finish((5, 7), ResponseFlags::None, None);
        let text = scrape(&registry);
        let expected_labels = "reporter=\"source\",source_workload=\"shell-task\",source_canonical_service=\"shell\",source_canonical_revision=\"v1\",source_workload_namespace=\"ecs-demo-1\",source_principal=\"spiffe://cluster.local/ns/ecs-demo-1/sa/shell\",source_app=\"shell\",source_version=\"v1\",source_cluster=\"ecs-demo-1\",destination_service=\"unknown\",destination_service_namespace=\"unknown\",destination_service_name=\"unknown\",destination_workload=\"unknown\",destination_canonical_service=\"unknown\",destination_canonical_revision=\"unknown\",destination_workload_namespace=\"unknown\",destination_principal=\"unknown\",destination_app=\"unknown\",destination_version=\"unknown\",destination_cluster=\"unknown\",request_protocol=\"tcp\",response_flags=\"-\",connection_security_policy=\"mutual_tls\",source_region=\"unknown\",source_zone=\"unknown\",destination_region=\"unknown\",destination_zone=\"unknown\"";
        assert!(
            text.contains(&format!(
                "istio_tcp_connections_opened_total{{{expected_labels}}} 1"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "istio_tcp_connections_closed_total{{{expected_labels}}} 1"
        )));
        assert!(text.contains(&format!(
            "istio_tcp_received_bytes_total{{{expected_labels}}} 5"
        )));
        assert!(text.contains(&format!(
            "istio_tcp_sent_bytes_total{{{expected_labels}}} 7"
        )));
        assert!(text.contains("istio_tcp_sockets_open{reporter=\"source\"} 0"));
    }

    #[test]
    fn a_failure_is_counted_with_its_flag() {
        let mut registry = Registry::default();
        let m = TrafficMetrics::register(&mut registry);
        m.failed(info(), ResponseFlags::Deny, "denied");
        let text = scrape(&registry);
        assert!(text.contains("istio_tcp_connections_failed_total{reporter=\"source\""));
        assert!(text.contains("response_flags=\"DENY\""));
    }

    #[test]
    fn dropping_a_recorder_records_the_close_once() {
        let mut registry = Registry::default();
        let m = TrafficMetrics::register(&mut registry);
        let rec = m.open(info());
        drop(rec);
        let text = scrape(&registry);
        assert!(text.contains("istio_tcp_sockets_open{reporter=\"source\"} 0"));
        let closed = text
            .lines()
            .find(|l| l.starts_with("istio_tcp_connections_closed_total{"))
            .unwrap();
        assert!(closed.ends_with(" 1"), "{closed}");
    }
}
