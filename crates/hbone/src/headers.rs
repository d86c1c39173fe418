//! The HBONE request headers and the CONNECT authority, built and parsed
//! exactly as ztunnel writes and reads them.
//!
//! Builders run once per outbound connection, parsers once per inbound stream;
//! both avoid allocating beyond the header value itself. Parsers take untrusted
//! input and never panic: anything unrecognised is skipped or a typed error.

use std::fmt;
use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::{BufMut, BytesMut};
use http::{HeaderName, HeaderValue};

/// `baggage`: workload metadata (W3C baggage syntax, ztunnel's keys).
pub const BAGGAGE: HeaderName = HeaderName::from_static("baggage");
/// `traceparent`: W3C trace context; ztunnel starts a fresh trace per connection.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `forwarded` (RFC 7239): original client address and destination service.
pub const FORWARDED: HeaderName = http::header::FORWARDED;
/// `x-forwarded-network`: on the inner CONNECT of double HBONE, the source's network.
pub const X_FORWARDED_NETWORK: HeaderName = HeaderName::from_static("x-forwarded-network");

/// `for="<client ip:port>"`, plus `;host=<service hostname>` when the destination
/// service is known. IPv6 clients are bracketed: `for="[::1]:80"`. A host that
/// is not a valid header token is left out rather than corrupting the header.
pub fn forwarded(client: SocketAddr, host: Option<&str>) -> HeaderValue {
    let host = host.filter(|h| !h.is_empty() && h.bytes().all(is_token_byte));
    let mut buf = BytesMut::with_capacity(64 + host.map_or(0, str::len));
    // Writing to a BytesMut cannot fail.
    let _ = write!(Writer(&mut buf), "for=\"{client}\"");
    if let Some(host) = host {
        buf.put_slice(b";host=");
        buf.put_slice(host.as_bytes());
    }
    // The address renders as ASCII digits, dots, colons and brackets, and the host
    // was checked to be token bytes, so the value is always valid.
    HeaderValue::from_maybe_shared(buf.freeze()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A random W3C `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-00`.
pub fn traceparent() -> HeaderValue {
    let trace: u128 = rand::random();
    let parent: u64 = rand::random();
    let mut buf = [0u8; 55];
    buf[..3].copy_from_slice(b"00-");
    hex_into(&mut buf[3..35], &trace.to_be_bytes());
    buf[35] = b'-';
    hex_into(&mut buf[36..52], &parent.to_be_bytes());
    buf[52..].copy_from_slice(b"-00");
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The trace and parent ids of a `traceparent` value, if it is well-formed.
pub fn parse_traceparent(value: &[u8]) -> Option<(&str, &str)> {
    let s = std::str::from_utf8(value).ok()?;
    let mut parts = s.trim().split('-');
    let (_version, trace, parent, _flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |p: &str, len| p.len() == len && p.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(trace, 32) && hex(parent, 16)).then_some((trace, parent))
}

fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
}

/// The kind of controller that owns a workload, as the `k8s.<kind>.name` baggage key spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Deployment,
    CronJob,
    Pod,
    Job,
}

impl WorkloadKind {
    /// The lowercase name used in the baggage key.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::CronJob => "cronjob",
            WorkloadKind::Pod => "pod",
            WorkloadKind::Job => "job",
        }
    }
}

/// Workload metadata carried in `baggage`: the source's on requests, the
/// destination's on 200 responses. Empty fields are not sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Baggage {
    /// `k8s.cluster.name`
    pub cluster_id: String,
    /// `k8s.namespace.name`
    pub namespace: String,
    /// The `<kind>` of `k8s.<kind>.name`; `None` leaves the workload name out.
    pub workload_kind: Option<WorkloadKind>,
    /// `k8s.<kind>.name`
    pub workload_name: String,
    /// `service.name` (canonical service)
    pub service_name: String,
    /// `service.version` (canonical revision)
    pub service_version: String,
    /// `cloud.region`
    pub region: String,
    /// `cloud.availability_zone`
    pub zone: String,
}

impl Baggage {
    /// The header value: `key=value` pairs joined by commas, in ztunnel's order,
    /// only for non-empty values. Values that would break the syntax (separators,
    /// quotes, whitespace, non-ASCII) are left out.
    pub fn to_header_value(&self) -> HeaderValue {
        let mut buf = BytesMut::with_capacity(256);
        let mut put = |key: &[&str], value: &str| {
            if value.is_empty() || !value.bytes().all(is_baggage_value_byte) {
                return;
            }
            if !buf.is_empty() {
                buf.put_u8(b',');
            }
            for k in key {
                buf.put_slice(k.as_bytes());
            }
            buf.put_u8(b'=');
            buf.put_slice(value.as_bytes());
        };
        put(&["k8s.cluster.name"], &self.cluster_id);
        put(&["k8s.namespace.name"], &self.namespace);
        if let Some(kind) = self.workload_kind {
            put(&["k8s.", kind.as_str(), ".name"], &self.workload_name);
        }
        put(&["service.name"], &self.service_name);
        put(&["service.version"], &self.service_version);
        put(&["cloud.region"], &self.region);
        put(&["cloud.availability_zone"], &self.zone);
        HeaderValue::from_maybe_shared(buf.freeze())
            .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Parses one or more `baggage` header values. Unknown keys, entries without
    /// `=`, and non-UTF-8 values are ignored; W3C properties (`;…`) are dropped;
    /// a later entry for the same key wins.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Baggage {
        let mut baggage = Baggage::default();
        for value in values {
            if let Ok(s) = std::str::from_utf8(value.as_bytes()) {
                baggage.merge_str(s);
            }
        }
        baggage
    }

    /// Parses a single `baggage` value given as a string (see [`Baggage::parse`]).
    pub fn parse_str(value: &str) -> Baggage {
        let mut baggage = Baggage::default();
        baggage.merge_str(value);
        baggage
    }

    fn merge_str(&mut self, value: &str) {
        for member in value.split(',') {
            let member = member.split(';').next().unwrap_or_default();
            let Some((key, val)) = member.split_once('=') else {
                continue;
            };
            let (key, val) = (key.trim(), val.trim());
            let slot = match key {
                "k8s.cluster.name" => &mut self.cluster_id,
                "k8s.namespace.name" => &mut self.namespace,
                "k8s.deployment.name" => self.workload(WorkloadKind::Deployment),
                "k8s.cronjob.name" => self.workload(WorkloadKind::CronJob),
                "k8s.pod.name" => self.workload(WorkloadKind::Pod),
                "k8s.job.name" => self.workload(WorkloadKind::Job),
                "service.name" => &mut self.service_name,
                "service.version" => &mut self.service_version,
                "cloud.region" => &mut self.region,
                "cloud.availability_zone" => &mut self.zone,
                _ => continue,
            };
            val.clone_into(slot);
        }
    }

    fn workload(&mut self, kind: WorkloadKind) -> &mut String {
        self.workload_kind = Some(kind);
        &mut self.workload_name
    }
}

/// The `host=` parameter of a `Forwarded` value (quoted or not), as ztunnel reads
/// it to attribute the destination service. Non-ASCII input yields nothing.
pub fn forwarded_host(value: &str) -> Option<&str> {
    if !value.is_ascii() {
        return None;
    }
    // Only the first forwarded-element counts: later ones describe other hops.
    let element = value.split(',').next()?;
    element.split(';').find_map(|pair| {
        let (key, val) = pair.trim().split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("host") {
            return None;
        }
        let val = val.trim();
        let val = val.strip_prefix('"').unwrap_or(val);
        let val = val.strip_suffix('"').unwrap_or(val);
        (!val.is_empty()).then_some(val)
    })
}

/// A parsed CONNECT `:authority`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Authority {
    /// `ip:port` (IPv6 bracketed): a workload or VIP address.
    Addr(SocketAddr),
    /// `hostname:port`: a service by name (double HBONE).
    Host { host: String, port: u16 },
}

/// Why a CONNECT authority is unusable (the server answers 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("authority {0:?} has no port")]
    MissingPort(String),
    #[error("authority {0:?} has an invalid port")]
    InvalidPort(String),
    #[error("authority {0:?} has no host")]
    MissingHost(String),
    #[error("authority {0:?} has an invalid host")]
    InvalidHost(String),
}

/// Parses a CONNECT authority: first as a socket address, else as `host:port`
/// with both parts required and the host made of DNS name characters.
pub fn parse_authority(s: &str) -> Result<Authority, AuthorityError> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(Authority::Addr(addr));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(AuthorityError::MissingPort(s.to_owned()));
    };
    if host.is_empty() {
        return Err(AuthorityError::MissingHost(s.to_owned()));
    }
    if port.is_empty() {
        return Err(AuthorityError::MissingPort(s.to_owned()));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthorityError::InvalidPort(s.to_owned()));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| AuthorityError::InvalidPort(s.to_owned()))?;
    // An IP literal the socket-address parser refused (e.g. a zero-padded port)
    // is still an address, not a hostname.
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = literal.parse::<std::net::IpAddr>()
        && (ip.is_ipv4() != (literal.len() != host.len()))
    {
        return Ok(Authority::Addr(SocketAddr::new(ip, port)));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(AuthorityError::InvalidHost(s.to_owned()));
    }
    Ok(Authority::Host {
        host: host.to_owned(),
        port,
    })
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Authority::Addr(addr) => fmt::Display::fmt(addr, f),
            Authority::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// RFC 7230 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// W3C baggage `baggage-octet` minus `%` (we never percent-encode).
fn is_baggage_value_byte(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x24 | 0x26..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

struct Writer<'a>(&'a mut BytesMut);

impl fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_ipv4_with_host() {
        let v = forwarded(
            "10.0.0.5:43210".parse().unwrap(),
            Some("echo.default.svc.cluster.local"),
        );
        assert_eq!(
            v,
            r#"for="10.0.0.5:43210";host=echo.default.svc.cluster.local"#
        );
    }

    #[test]
    fn forwarded_for_ipv6_is_bracketed() {
        assert_eq!(
            forwarded("[::1]:80".parse().unwrap(), None),
            r#"for="[::1]:80""#
        );
    }

    #[test]
    fn forwarded_drops_a_host_that_is_not_a_token() {
        assert_eq!(
            forwarded("10.0.0.5:1".parse().unwrap(), Some("bad host\"")),
            r#"for="10.0.0.5:1""#
        );
    }

    #[test]
    fn traceparent_is_w3c_version_00_unsampled() {
        let v = traceparent();
        let s = v.to_str().unwrap();
        assert_eq!(s.len(), 55);
        assert!(s.starts_with("00-") && s.ends_with("-00"), "{s}");
        let (trace, parent) = parse_traceparent(v.as_bytes()).unwrap();
        assert_eq!((trace.len(), parent.len()), (32, 16));
        assert!(
            trace
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_ne!(traceparent(), v, "random per connection");
    }

    #[test]
    fn baggage_in_ztunnel_order_without_empty_values() {
        let b = Baggage {
            cluster_id: "Kubernetes".into(),
            namespace: "default".into(),
            workload_kind: Some(WorkloadKind::Deployment),
            workload_name: "echo".into(),
            service_name: "echo".into(),
            service_version: "v1".into(),
            region: String::new(),
            zone: "us-east-1a".into(),
        };
        assert_eq!(
            b.to_header_value(),
            "k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=echo,\
             service.name=echo,service.version=v1,cloud.availability_zone=us-east-1a"
        );
    }

    #[test]
    fn empty_baggage_is_an_empty_value() {
        assert_eq!(Baggage::default().to_header_value(), "");
    }

    #[test]
    fn baggage_round_trips() {
        let b = Baggage {
            cluster_id: "c1".into(),
            namespace: "ns".into(),
            workload_kind: Some(WorkloadKind::CronJob),
            workload_name: "nightly".into(),
            service_name: "svc".into(),
            service_version: "v2".into(),
            region: "eu-west-1".into(),
            zone: "eu-west-1b".into(),
        };
        assert_eq!(Baggage::parse([&b.to_header_value()]), b);
    }

    #[test]
    fn baggage_parse_ignores_unknown_and_malformed_members() {
        let b = Baggage::parse_str("foo=bar,novalue,k8s.namespace.name= ns1 ;prop=1,service.name=");
        assert_eq!(
            b,
            Baggage {
                namespace: "ns1".into(),
                ..Baggage::default()
            }
        );
    }

    #[test]
    fn forwarded_host_quoted_and_unquoted() {
        assert_eq!(
            forwarded_host(r#"for="10.0.0.5:43210";host=echo.default.svc.cluster.local"#),
            Some("echo.default.svc.cluster.local")
        );
        assert_eq!(forwarded_host(r#"for="1.2.3.4:5";host="a.b""#), Some("a.b"));
        assert_eq!(forwarded_host(r#"Host=x.y;for="1.2.3.4:5""#), Some("x.y"));
        assert_eq!(forwarded_host(r#"for="1.2.3.4:5""#), None);
        assert_eq!(forwarded_host("host="), None);
        assert_eq!(forwarded_host("host=é"), None);
    }

    #[test]
    fn authority_ip_forms() {
        assert_eq!(
            parse_authority("10.0.0.1:8080"),
            Ok(Authority::Addr("10.0.0.1:8080".parse().unwrap()))
        );
        assert_eq!(
            parse_authority("[ff06::c3]:80"),
            Ok(Authority::Addr("[ff06::c3]:80".parse().unwrap()))
        );
    }

    #[test]
    fn authority_host_form() {
        assert_eq!(
            parse_authority("remote.default.svc.cluster.local:8080"),
            Ok(Authority::Host {
                host: "remote.default.svc.cluster.local".into(),
                port: 8080
            })
        );
    }

    #[test]
    fn authority_errors_are_typed() {
        use AuthorityError::*;
        assert_eq!(
            parse_authority("example.com"),
            Err(MissingPort("example.com".into()))
        );
        assert_eq!(
            parse_authority("example.com:"),
            Err(MissingPort("example.com:".into()))
        );
        assert_eq!(parse_authority(":80"), Err(MissingHost(":80".into())));
        assert_eq!(
            parse_authority("a:99999"),
            Err(InvalidPort("a:99999".into()))
        );
        assert_eq!(parse_authority("a:+1"), Err(InvalidPort("a:+1".into())));
        assert_eq!(
            parse_authority("[::1]x:80"),
            Err(InvalidHost("[::1]x:80".into()))
        );
        assert_eq!(parse_authority("a b:80"), Err(InvalidHost("a b:80".into())));
    }

    #[test]
    fn authority_ip_with_padded_port_is_an_address() {
        assert_eq!(
            parse_authority("10.0.0.1:0080"),
            Ok(Authority::Addr("10.0.0.1:80".parse().unwrap()))
        );
        assert_eq!(
            parse_authority("[::1]:0443"),
            Ok(Authority::Addr("[::1]:443".parse().unwrap()))
        );
    }

    #[test]
    fn authority_display_round_trips() {
        for s in ["10.0.0.1:80", "[::1]:443", "svc.ns.svc.cluster.local:9090"] {
            assert_eq!(parse_authority(s).unwrap().to_string(), s);
        }
    }
}
