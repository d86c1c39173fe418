//! The process-wide logger (its own test binary: a global logger can be
//! installed once per process).

use std::io::Write;
use std::sync::Arc;

use parking_lot::Mutex;
use zs_admin::TelemetryError;
use zs_admin::telemetry::{self, LogFormat};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn global_logger_is_installed_once_and_controls_every_thread() {
    let out = Capture::default();
    let sink = out.clone();
    let control =
        telemetry::init_with_writer(LogFormat::Json, "info", move || sink.clone()).unwrap();

    let second = telemetry::init(LogFormat::Text, "info").unwrap_err();
    assert!(
        matches!(second, TelemetryError::AlreadyInitialized),
        "{second}"
    );

    std::thread::spawn(|| tracing::debug!(target: "zs_proxy", "hidden"))
        .join()
        .unwrap();
    control.apply(false, "zs_proxy=debug").unwrap();
    std::thread::spawn(|| tracing::debug!(target: "zs_proxy", "shown"))
        .join()
        .unwrap();

    let text = String::from_utf8(out.0.lock().clone()).unwrap();
    let messages: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["scope"] == "zs_proxy")
        .map(|v| v["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(messages, ["shown"]);
}
