//! Log line formats, captured through a real subscriber.

use std::io::Write;
use std::sync::Arc;

use parking_lot::Mutex;
use zs_admin::telemetry::{self, LogFormat};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().clone()).unwrap()
    }
}

impl Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture(format: LogFormat, filter: &str, f: impl FnOnce()) -> String {
    let out = Capture::default();
    let sink = out.clone();
    let (dispatch, _control) = telemetry::dispatch(format, filter, move || sink.clone()).unwrap();
    tracing::dispatcher::with_default(&dispatch, f);
    out.text()
}

/// An access-log event as the proxy emits it.
fn access_log() {
    let src_addr: std::net::SocketAddr = "10.0.0.1:41338".parse().unwrap();
    let hbone_addr: std::net::SocketAddr = "10.0.0.9:80".parse().unwrap();
    tracing::event!(
        target: "access",
        tracing::Level::INFO,
        src.addr = %src_addr,
        src.workload = "sleep",
        src.identity = "spiffe://cluster.local/ns/default/sa/sleep",
        dst.hbone_addr = %hbone_addr,
        direction = "outbound",
        bytes_sent = 75u64,
        bytes_recv = 250u64,
        duration = "2ms",
        "connection complete"
    );
}

/// Drops the leading timestamp (up to the first tab).
fn without_time(line: &str) -> &str {
    line.split_once('\t').unwrap().1
}

#[test]
fn text_access_log_matches_ztunnels_layout() {
    let out = capture(LogFormat::Text, "info", access_log);
    let line = out.strip_suffix('\n').unwrap();
    assert_eq!(
        without_time(line),
        "info\taccess\tconnection complete\tsrc.addr=10.0.0.1:41338 src.workload=\"sleep\" \
         src.identity=\"spiffe://cluster.local/ns/default/sa/sleep\" dst.hbone_addr=10.0.0.9:80 \
         direction=\"outbound\" bytes_sent=75 bytes_recv=250 duration=\"2ms\""
    );
}

#[test]
fn text_timestamp_is_rfc3339_utc_with_microseconds() {
    let out = capture(LogFormat::Text, "info", || tracing::info!("hello"));
    let (time, rest) = out.split_once('\t').unwrap();
    assert_eq!(rest, "info\ttelemetry\thello\n");
    // 2024-05-03T20:06:03.785484Z
    assert_eq!(time.len(), 27, "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
}

#[test]
fn text_shows_spans_and_their_fields() {
    let out = capture(LogFormat::Text, "info", || {
        let span = tracing::info_span!("outbound", id = 7);
        let _g = span.enter();
        tracing::warn!(peer = "10.0.0.9:15008", "pool full");
    });
    assert_eq!(
        without_time(out.trim_end()),
        "warn\ttelemetry:outbound{id=7}\tpool full\tpeer=\"10.0.0.9:15008\""
    );
}

#[test]
fn json_access_log_puts_dotted_fields_at_the_top_level() {
    let out = capture(LogFormat::Json, "info", access_log);
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["level"], "info");
    assert_eq!(v["scope"], "access");
    assert_eq!(v["message"], "connection complete");
    assert_eq!(v["src.addr"], "10.0.0.1:41338");
    assert_eq!(v["src.workload"], "sleep");
    assert_eq!(
        v["src.identity"],
        "spiffe://cluster.local/ns/default/sa/sleep"
    );
    assert_eq!(v["dst.hbone_addr"], "10.0.0.9:80");
    assert_eq!(v["direction"], "outbound");
    assert_eq!(v["bytes_sent"], 75);
    assert_eq!(v["bytes_recv"], 250);
    assert_eq!(v["duration"], "2ms");
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn json_keys_come_in_ztunnels_order() {
    let out = capture(LogFormat::Json, "info", || tracing::info!(a = 1, "m"));
    let time_end = out.find("\",\"scope\"").unwrap();
    let time_start = out.find("\"time\":\"").unwrap() + 8;
    let masked = format!("{}T{}", &out[..time_start], &out[time_end..]);
    assert_eq!(
        masked,
        "{\"level\":\"info\",\"time\":\"T\",\"scope\":\"telemetry\",\"message\":\"m\",\"a\":1}\n"
    );
}

#[test]
fn json_errors_and_span_fields_are_serialized() {
    let out = capture(LogFormat::Json, "info", || {
        let span = tracing::info_span!("inbound", conn = "c1");
        let _g = span.enter();
        let err = std::io::Error::other("reset by peer");
        tracing::error!(error = %err, "connection failed");
    });
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["level"], "error");
    assert_eq!(v["error"], "reset by peer");
    assert_eq!(v["inbound"], serde_json::json!({"conn": "c1"}));
}

#[test]
fn filter_drops_events_below_the_level() {
    let out = capture(LogFormat::Text, "warn,access=info", || {
        tracing::info!("dropped");
        tracing::info!(target: "access", "kept");
    });
    assert!(!out.contains("dropped"), "{out}");
    assert!(out.contains("\taccess\tkept\n"), "{out}");
}

#[test]
fn empty_filter_means_info() {
    let out = capture(LogFormat::Text, "", || {
        tracing::debug!("dropped");
        tracing::info!("kept");
    });
    assert!(!out.contains("dropped") && out.contains("kept"), "{out}");
}

#[test]
fn invalid_startup_filter_is_refused() {
    let err = telemetry::dispatch(LogFormat::Text, "zs_proxy=loud", std::io::sink).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid log level \"zs_proxy=loud\""),
        "{err}"
    );
}

#[test]
fn log_control_adds_to_the_filter_and_resets() {
    let (_dispatch, control) = telemetry::dispatch(LogFormat::Text, "info", std::io::sink).unwrap();
    assert_eq!(control.current().unwrap(), "info");
    assert_eq!(
        control.apply(false, "zs_proxy=debug").unwrap(),
        "zs_proxy=debug,info"
    );
    assert_eq!(control.apply(false, "warn").unwrap(), "zs_proxy=debug,warn");
    assert_eq!(control.apply(true, "").unwrap(), "info");
    assert_eq!(
        control.apply(true, "access=off").unwrap(),
        "access=off,info"
    );
}
