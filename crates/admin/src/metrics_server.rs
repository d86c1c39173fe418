//! The Prometheus endpoint (`/stats/prometheus` and `/metrics`), the
//! `istio_build` gauge, and the process descriptor gauges.
//!
//! The registry is encoded on every scrape, so a scrape costs the scraper's
//! time on the runtime that serves it and nothing on the data path (metric
//! updates are plain atomics).
//!
//! The body is what ztunnel serves: the OpenMetrics text encoding of the
//! registry, ending in `# EOF`, for every scraper. Only the `Content-Type`
//! differs: `application/openmetrics-text;charset=utf-8;version=1.0.0` when the
//! `Accept` header names `application/openmetrics-text`, else
//! `text/plain; charset=utf-8`. A scraper that parses the classic text format
//! reads this body as ztunnel's (the `# EOF` and `# UNIT` lines are comments
//! there, and series keep their `_total` names), so dashboards and alerts
//! written against ztunnel see the same series and the same names here.
//!
//! Responses are gzip- or deflate-compressed when `Accept-Encoding` asks for
//! it, as ztunnel does (it also offers br and zstd; scrapers ask for gzip).

use std::future::Future;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::{GzEncoder, ZlibEncoder};
use http::{HeaderMap, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::warn;

use crate::http::{self as h, Body};

/// Content type of a scrape answered in the default format (ztunnel's value).
pub const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";
/// Content type of a scrape whose `Accept` header asks for OpenMetrics (ztunnel's value).
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text;charset=utf-8;version=1.0.0";

/// The paths the registry is served on.
pub const METRICS_PATHS: [&str; 2] = ["/stats/prometheus", "/metrics"];

/// Serves `registry` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()>,
) {
    // The last body size, so the next scrape allocates once instead of
    // growing its buffer step by step.
    let size_hint = Arc::new(AtomicUsize::new(4096));
    h::serve(
        "stats",
        listener,
        move |req| {
            let response = handle(&registry, &size_hint, &req);
            async move { response }
        },
        shutdown,
    )
    .await
}

fn handle(registry: &Registry, size_hint: &AtomicUsize, req: &Request<Incoming>) -> Response<Body> {
    if !METRICS_PATHS.contains(&req.uri().path()) {
        return h::empty(StatusCode::NOT_FOUND);
    }
    let mut body = String::with_capacity(size_hint.load(Ordering::Relaxed));
    if let Err(err) = prometheus_client::encoding::text::encode(&mut body, registry) {
        warn!(error = %err, "encoding metrics failed");
        return h::text(StatusCode::INTERNAL_SERVER_ERROR, err.to_string());
    }
    size_hint.store(body.len(), Ordering::Relaxed);
    let content_type = content_type(req.headers());
    let mut resp = match negotiate_encoding(req.headers()) {
        Some(encoding) => match compress(encoding, body.as_bytes()) {
            Ok(compressed) => {
                let mut resp = h::with_content_type(StatusCode::OK, content_type, compressed);
                resp.headers_mut().insert(
                    header::CONTENT_ENCODING,
                    header::HeaderValue::from_static(encoding.name()),
                );
                resp
            }
            Err(err) => {
                warn!(error = %err, "compressing metrics failed; sending them uncompressed");
                h::with_content_type(StatusCode::OK, content_type, body)
            }
        },
        None => h::with_content_type(StatusCode::OK, content_type, body),
    };
    resp.headers_mut().insert(
        header::VARY,
        header::HeaderValue::from_static("accept-encoding"),
    );
    resp
}

/// The content type to answer with: OpenMetrics when any `Accept` entry's media
/// type is `application/openmetrics-text` (whatever its parameters or q-value,
/// as ztunnel decides), else plain text.
pub fn content_type(headers: &HeaderMap) -> &'static str {
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|entry| {
            entry.split(';').next().is_some_and(|media| {
                media
                    .trim()
                    .eq_ignore_ascii_case("application/openmetrics-text")
            })
        });
    if wants_openmetrics {
        CONTENT_TYPE_OPENMETRICS
    } else {
        CONTENT_TYPE_TEXT
    }
}

/// A response compression this server offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `gzip` (what Prometheus asks for).
    Gzip,
    /// `deflate`: zlib-wrapped deflate, as RFC 9110 defines it.
    Deflate,
}

impl Encoding {
    /// The token used in `Accept-Encoding` and `Content-Encoding`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
        }
    }
}

/// Picks the compression with the highest q-value in `Accept-Encoding` among
/// those offered (gzip wins ties); `None` for identity. Entries with `q=0` and
/// malformed q-values are ignored.
pub fn negotiate_encoding(headers: &HeaderMap) -> Option<Encoding> {
    let mut best: Option<(Encoding, u16)> = None;
    let entries = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for entry in entries {
        let mut parts = entry.split(';');
        let token = parts.next().unwrap_or_default().trim();
        let encoding = if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip")
        {
            Encoding::Gzip
        } else if token.eq_ignore_ascii_case("deflate") {
            Encoding::Deflate
        } else {
            continue;
        };
        let Some(q) = parts
            .find_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .or_else(|| p.trim().strip_prefix("Q="))
            })
            .map_or(Some(1000), parse_qvalue)
        else {
            continue;
        };
        if q == 0 {
            continue;
        }
        let better = match best {
            None => true,
            Some((current, best_q)) => {
                q > best_q
                    || (q == best_q && encoding == Encoding::Gzip && current != Encoding::Gzip)
            }
        };
        if better {
            best = Some((encoding, q));
        }
    }
    best.map(|(encoding, _)| encoding)
}

/// Parses an RFC 9110 q-value ("0", "0.5", "1.000") into thousandths.
fn parse_qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

fn compress(encoding: Encoding, data: &[u8]) -> std::io::Result<Bytes> {
    // Fast compression: metrics text compresses well at any level, and the
    // scrape should stay cheap for the runtime that serves it.
    let level = Compression::fast();
    let out = Vec::with_capacity(data.len() / 4);
    let out = match encoding {
        Encoding::Gzip => {
            let mut enc = GzEncoder::new(out, level);
            enc.write_all(data)?;
            enc.finish()?
        }
        Encoding::Deflate => {
            let mut enc = ZlibEncoder::new(out, level);
            enc.write_all(data)?;
            enc.finish()?
        }
    };
    Ok(Bytes::from(out))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    component: String,
    tag: String,
}

/// Registers `istio_build{component="ztunnel",tag="<tag>"} 1`, which Istio's
/// dashboards use to tell which version runs. `tag` is the Istio version
/// (ztunnel reads it from `ISTIO_META_ISTIO_VERSION`, `unknown` when unset).
pub fn register_build_info(registry: &mut Registry, tag: &str) {
    let family = Family::<BuildLabels, Gauge>::default();
    family
        .get_or_create(&BuildLabels {
            // Istio's tooling keys on the component name, so it stays "ztunnel".
            component: "ztunnel".to_owned(),
            tag: tag.to_owned(),
        })
        .set(1);
    registry.register("istio_build", "Istio component build info", family);
}

/// Registers `process_open_fds` and `process_max_fds`, read at each scrape.
pub fn register_process_metrics(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessMetrics));
}

/// Reads descriptor counts from `/proc` at scrape time. A value that cannot be
/// read is left out of the scrape rather than reported as zero.
#[derive(Debug)]
struct ProcessMetrics;

impl Collector for ProcessMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(open) = open_fds() {
            let gauge = ConstGauge::new(open);
            let metric = encoder.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        if let Some(max) = max_fds() {
            let gauge = ConstGauge::new(max);
            let metric = encoder.encode_descriptor(
                "process_max_fds",
                "Maximum number of file descriptors",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// Open descriptors of this process, not counting the one used to list them.
pub fn open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    let count = entries.count() as u64;
    Some(count.saturating_sub(1))
}

/// The soft limit on open descriptors (`RLIMIT_NOFILE`), from `/proc/self/limits`;
/// `None` when unlimited or unreadable.
pub fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_max_open_files(&limits)
}

/// Finds the soft limit in the text of `/proc/self/limits`, whose line reads
/// `Max open files  <soft>  <hard>  files`.
fn parse_max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let rest = line.strip_prefix("Max open files")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, header::HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn openmetrics_is_chosen_from_any_accept_entry() {
        let prometheus_3 = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
        assert_eq!(
            content_type(&headers(&[("accept", prometheus_3)])),
            CONTENT_TYPE_OPENMETRICS
        );
        assert_eq!(
            content_type(&headers(&[
                ("accept", "application/json"),
                ("accept", "Application/OpenMetrics-Text; other")
            ])),
            CONTENT_TYPE_OPENMETRICS
        );
        assert_eq!(
            content_type(&headers(&[("accept", "application/json")])),
            CONTENT_TYPE_TEXT
        );
        assert_eq!(content_type(&HeaderMap::new()), CONTENT_TYPE_TEXT);
    }

    #[test]
    fn encoding_follows_q_values_and_prefers_gzip_on_ties() {
        let pick = |v: &'static str| negotiate_encoding(&headers(&[("accept-encoding", v)]));
        assert_eq!(pick("gzip"), Some(Encoding::Gzip));
        assert_eq!(pick("deflate, gzip"), Some(Encoding::Gzip));
        assert_eq!(pick("gzip;q=0.5, deflate"), Some(Encoding::Deflate));
        assert_eq!(pick("gzip;q=0, deflate;q=0"), None);
        assert_eq!(pick("br, zstd"), None);
        assert_eq!(pick("identity"), None);
        assert_eq!(pick("gzip;q=2"), None);
        assert_eq!(pick("gzip;q=0.001"), Some(Encoding::Gzip));
    }

    #[test]
    fn max_open_files_is_the_soft_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(parse_max_open_files(unlimited), None);
    }
}
