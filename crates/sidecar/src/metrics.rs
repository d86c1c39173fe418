//! Gauges read at scrape time: certificate expiry and HBONE pool size.
//!
//! (xDS connection state and last ACK are registered by the xDS client; traffic
//! metrics by the proxy.)

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use zs_proxy::ProxyContext;
use zs_tls::CertificateHandle;
use zs_xds::ads::XdsStatus;

#[derive(Debug)]
pub struct SidecarCollector {
    pub ctx: Arc<ProxyContext>,
    pub xds: Option<XdsStatus>,
    pub certs: CertificateHandle,
}

impl Collector for SidecarCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(cert) = self.certs.current() {
            let expiry = cert
                .not_after()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let g = ConstGauge::new(expiry);
            g.encode(encoder.encode_descriptor(
                "ztunnel_sidecar_certificate_expiry_timestamp_seconds",
                "When the workload certificate in use expires (Unix time)",
                None,
                g.metric_type(),
            )?)?;
        }
        let pool = ConstGauge::new(self.ctx.pool.connections() as i64);
        pool.encode(encoder.encode_descriptor(
            "ztunnel_sidecar_hbone_pool_connections",
            "Open HBONE client connections in the pool",
            None,
            pool.metric_type(),
        )?)?;
        let inner = ConstGauge::new(self.ctx.inner_pool.connections() as i64);
        inner.encode(encoder.encode_descriptor(
            "ztunnel_sidecar_hbone_inner_connections",
            "Open inner (double HBONE) connections reused through east-west gateways",
            None,
            inner.metric_type(),
        )?)?;
        let tracked = ConstGauge::new(self.ctx.tracker.len() as i64);
        tracked.encode(encoder.encode_descriptor(
            "ztunnel_sidecar_inbound_authorized_connections",
            "Open inbound connections that passed authorization (re-checked on policy change)",
            None,
            tracked.metric_type(),
        )?)?;
        let _ = &self.xds;
        Ok(())
    }
}
