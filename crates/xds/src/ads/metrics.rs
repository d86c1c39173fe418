//! xDS client metrics, named as ztunnel names them so that existing
//! dashboards work, plus two sidecar-specific gauges for connection state.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why an xDS stream ended (label `reason`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum TerminationReason {
    /// The stream could not be opened.
    ConnectionError,
    /// The stream failed with a gRPC error.
    Error,
    /// The server closed the stream in a way that asks for a plain reconnect
    /// (e.g. max connection age).
    Reconnect,
    /// The stream ended cleanly.
    Complete,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: TerminationReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UrlLabels {
    url: String,
}

/// Handles to the registered metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct XdsMetrics {
    terminations: Family<ReasonLabels, Counter>,
    messages: Family<UrlLabels, Counter>,
    message_bytes: Family<UrlLabels, Counter>,
    connected: Gauge,
    last_ack: Gauge<f64, AtomicU64>,
}

impl XdsMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = XdsMetrics::default();
        // prometheus-client appends `_total` to counters.
        registry.register(
            "istio_xds_connection_terminations",
            "The total number of completed connections to xds server (unstable)",
            m.terminations.clone(),
        );
        registry.register(
            "istio_xds_message",
            "Total number of messages received (unstable)",
            m.messages.clone(),
        );
        registry.register(
            "istio_xds_message_bytes",
            "Total number of bytes received (unstable)",
            m.message_bytes.clone(),
        );
        registry.register(
            "ztunnel_sidecar_xds_connected",
            "1 while a discovery stream to istiod is open, else 0",
            m.connected.clone(),
        );
        registry.register(
            "ztunnel_sidecar_xds_last_ack_timestamp_seconds",
            "Unix time of the last ACK or NACK sent to istiod",
            m.last_ack.clone(),
        );
        m
    }

    pub(crate) fn terminated(&self, reason: TerminationReason) {
        self.terminations
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub(crate) fn received(&self, type_url: &str, bytes: usize) {
        let labels = UrlLabels {
            url: type_url.to_string(),
        };
        self.messages.get_or_create(&labels).inc();
        self.message_bytes
            .get_or_create(&labels)
            .inc_by(bytes as u64);
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.set(i64::from(connected));
    }

    pub(crate) fn set_last_ack(&self, unix_seconds: f64) {
        self.last_ack.set(unix_seconds);
    }
}
