//! The admin server on a real loopback socket: config dump, quitquitquit,
//! logging.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use common::fixtures::{build_info, mesh};
use common::{get, post, request, start};
use http::{Method, StatusCode};
use zs_admin::ConfigDump;
use zs_admin::admin_server::{self, Admin};
use zs_admin::config_dump::StaticConfig;
use zs_admin::telemetry::{self, LogFormat};
use zs_state::SharedMesh;

async fn start_admin(admin: Admin) -> common::Running {
    start(|listener, stop| async move {
        admin_server::serve(listener, admin, async {
            let _ = stop.await;
        })
        .await
    })
    .await
}

fn plain_admin() -> Admin {
    let dump = ConfigDump::new(
        mesh(),
        build_info(),
        serde_json::json!({"proxyMode": "dedicated"}),
    );
    Admin::new(dump, || {})
}

#[tokio::test]
async fn config_dump_lists_workloads_by_uid_services_by_hostname_policies_by_key() {
    let server = start_admin(plain_admin()).await;
    let answer = get(server.addr, "/config_dump").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let dump: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();

    let uids: Vec<&str> = dump["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["uid"].as_str().unwrap())
        .collect();
    assert_eq!(
        uids,
        [
            "Kubernetes//Pod/bookinfo/productpage-1",
            "Kubernetes//Pod/default/httpbin-1",
            "Kubernetes//Pod/default/httpbin-2",
            "Kubernetes//Pod/default/sleep-1",
        ]
    );
    let hostnames: Vec<&str> = dump["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(
        hostnames,
        [
            "httpbin.default.svc.cluster.local",
            "productpage.bookinfo.svc.cluster.local",
            "waypoint.default.svc.cluster.local",
        ]
    );
    let policies: Vec<(&str, &str)> = dump["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["namespace"].as_str().unwrap(),
                p["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        policies,
        [("bookinfo", "allow-all"), ("default", "deny-sleep")]
    );
}

#[tokio::test]
async fn config_dump_has_ztunnels_top_level_keys_in_alphabetical_order() {
    let server = start_admin(plain_admin()).await;
    let text = get(server.addr, "/config_dump").await.text().to_owned();
    let top_level: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("  \"") && !l.starts_with("   "))
        .map(|l| l.trim_start().split('"').nth(1).unwrap())
        .collect();
    assert_eq!(
        top_level,
        [
            "certificates",
            "config",
            "policies",
            "services",
            "stagedServices",
            "staticConfig",
            "version",
            "workloads",
        ]
    );
}

#[tokio::test]
async fn config_dump_shows_staged_endpoints_version_config_and_empty_static_config() {
    let server = start_admin(plain_admin()).await;
    let dump: serde_json::Value =
        serde_json::from_slice(&get(server.addr, "/config_dump").await.body).unwrap();
    assert_eq!(
        dump["stagedServices"],
        serde_json::json!({
            "default/notyet.default.svc.cluster.local": {
                "Kubernetes//Pod/default/sleep-1": {
                    "workloadUid": "Kubernetes//Pod/default/sleep-1",
                    "port": {},
                    "status": "Healthy"
                }
            }
        })
    );
    assert_eq!(
        dump["version"],
        serde_json::json!({
            "version": "0.1.0",
            "gitRevision": "abc123",
            "rustVersion": "1.88.0",
            "buildProfile": "release",
            "buildStatus": "Clean",
            "istioVersion": "1.28.0",
            "cryptoProvider": "ring"
        })
    );
    assert_eq!(
        dump["config"],
        serde_json::json!({"proxyMode": "dedicated"})
    );
    assert_eq!(
        dump["staticConfig"],
        serde_json::json!({"workloads": [], "policies": [], "services": []})
    );
    assert_eq!(dump["certificates"], serde_json::json!([]));
}

#[tokio::test]
async fn config_dump_rereads_the_static_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.yaml");
    std::fs::write(&path, "services: []\n").unwrap();
    let dump = ConfigDump::new(mesh(), build_info(), serde_json::Value::Null)
        .with_static_config(StaticConfig::File(path.clone()));
    let server = start_admin(Admin::new(dump, || {})).await;

    let first: serde_json::Value =
        serde_json::from_slice(&get(server.addr, "/config_dump").await.body).unwrap();
    assert_eq!(first["staticConfig"]["policies"], serde_json::json!([]));

    std::fs::write(
        &path,
        "policies:\n- name: deny-all\n  namespace: default\n  scope: Namespace\n  action: Deny\n  rules: []\n  dryRun: false\n",
    )
    .unwrap();
    let second: serde_json::Value =
        serde_json::from_slice(&get(server.addr, "/config_dump").await.body).unwrap();
    assert_eq!(second["staticConfig"]["policies"][0]["name"], "deny-all");

    std::fs::write(&path, "not: [valid").unwrap();
    let third: serde_json::Value =
        serde_json::from_slice(&get(server.addr, "/config_dump").await.body).unwrap();
    assert_eq!(
        third["staticConfig"],
        serde_json::json!({"workloads": [], "policies": [], "services": []})
    );
}

#[tokio::test]
async fn config_dump_answers_any_method() {
    let server = start_admin(plain_admin()).await;
    assert_eq!(
        post(server.addr, "/config_dump").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn index_lists_the_endpoints() {
    let server = start_admin(plain_admin()).await;
    let answer = get(server.addr, "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    for path in ["config_dump", "logging", "quitquitquit"] {
        assert!(
            answer.text().contains(&format!("href=\"{path}\"")),
            "{path}"
        );
    }
}

#[tokio::test]
async fn unknown_paths_get_404() {
    let server = start_admin(plain_admin()).await;
    assert_eq!(
        get(server.addr, "/stats/prometheus").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn quitquitquit_calls_the_shutdown_callback() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let dump = ConfigDump::new(mesh(), build_info(), serde_json::Value::Null);
    let admin = Admin::new(dump, move || {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let server = start_admin(admin).await;
    let answer = post(server.addr, "/quitquitquit").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "shutdown now\n");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn quitquitquit_refuses_get() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let dump = ConfigDump::new(mesh(), build_info(), serde_json::Value::Null);
    let admin = Admin::new(dump, move || {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let server = start_admin(admin).await;
    assert_eq!(
        get(server.addr, "/quitquitquit").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// A logger writing into a shared buffer, scoped to this thread.
fn captured_logger(
    filter: &str,
) -> (
    tracing::Dispatch,
    zs_admin::LogControl,
    Arc<parking_lot::Mutex<Vec<u8>>>,
) {
    let buf = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let sink = buf.clone();
    let (dispatch, control) =
        telemetry::dispatch(LogFormat::Text, filter, move || SharedWriter(sink.clone())).unwrap();
    (dispatch, control, buf)
}

struct SharedWriter(Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for SharedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged(buf: &parking_lot::Mutex<Vec<u8>>) -> String {
    String::from_utf8(buf.lock().clone()).unwrap()
}

fn admin_with_logging(control: zs_admin::LogControl) -> Admin {
    let dump = ConfigDump::new(SharedMesh::default(), build_info(), serde_json::Value::Null);
    Admin::new(dump, || {}).with_logging(control)
}

#[tokio::test]
async fn logging_without_parameters_shows_the_filter() {
    let (_dispatch, control, _buf) = captured_logger("info");
    let server = start_admin(admin_with_logging(control)).await;
    let answer = post(server.addr, "/logging").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "current log level is info\n");
}

#[tokio::test]
async fn logging_level_change_takes_effect_and_reset_restores_it() {
    let (dispatch, control, buf) = captured_logger("info");
    let server = start_admin(admin_with_logging(control)).await;
    let emit = |marker: &str| {
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::debug!(target: "zs_proxy", "{marker}");
        })
    };

    emit("before-change");
    assert!(!logged(&buf).contains("before-change"));

    let answer = post(server.addr, "/logging?level=debug").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "current log level is debug\n");
    emit("after-change");
    assert!(
        logged(&buf).contains("\tdebug\tzs_proxy\tafter-change\n"),
        "{}",
        logged(&buf)
    );

    let answer = post(server.addr, "/logging?reset").await;
    assert_eq!(answer.text(), "current log level is info\n");
    emit("after-reset");
    assert!(!logged(&buf).contains("after-reset"));
}

#[tokio::test]
async fn logging_accepts_per_target_levels() {
    let (dispatch, control, buf) = captured_logger("info");
    let server = start_admin(admin_with_logging(control)).await;
    let answer = post(server.addr, "/logging?level=zs_proxy=debug").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "current log level is zs_proxy=debug,info\n");
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::debug!(target: "zs_proxy", "proxy-debug");
        tracing::debug!(target: "zs_xds", "xds-debug");
    });
    let out = logged(&buf);
    assert!(out.contains("proxy-debug"), "{out}");
    assert!(!out.contains("xds-debug"), "{out}");
}

#[tokio::test]
async fn logging_refuses_a_bad_level_with_400_and_keeps_the_filter() {
    let (_dispatch, control, _buf) = captured_logger("info");
    let server = start_admin(admin_with_logging(control.clone())).await;
    let answer = post(server.addr, "/logging?level=loud").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer.text().starts_with(
            "invalid log level \"loud\": \"loud\" is not a level (off, error, warn, info, debug, trace)\n"
        ),
        "{}",
        answer.text()
    );
    assert_eq!(control.current().unwrap(), "info");
}

#[tokio::test]
async fn logging_refuses_get() {
    let (_dispatch, control, _buf) = captured_logger("info");
    let server = start_admin(admin_with_logging(control.clone())).await;
    let answer = request(server.addr, Method::GET, "/logging?level=debug", &[]).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(control.current().unwrap(), "info");
}

#[tokio::test]
async fn config_dump_cert_times_are_rfc3339_and_pem_is_base64() {
    use base64::Engine as _;
    use zs_admin::{CertInfo, CertState, CertificateDump};
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_owned();
    let info = CertInfo {
        pem: pem.clone(),
        serial_number: "255".into(),
        valid_from: UNIX_EPOCH + Duration::from_secs(1_678_514_246),
        expiration_time: UNIX_EPOCH + Duration::from_secs(1_678_600_646),
    };
    let identity: zs_identity::Identity = "spiffe://cluster.local/ns/default/sa/sleep"
        .parse()
        .unwrap();
    let dump = ConfigDump::new(SharedMesh::default(), build_info(), serde_json::Value::Null)
        .with_certificates(move || {
            vec![CertificateDump {
                identity: identity.clone(),
                state: CertState::Available,
                chain: vec![info.clone()],
                roots: vec![],
            }]
        });
    let server = start_admin(Admin::new(dump, || {})).await;
    let dump: serde_json::Value =
        serde_json::from_slice(&get(server.addr, "/config_dump").await.body).unwrap();
    assert_eq!(
        dump["certificates"],
        serde_json::json!([{
            "identity": "spiffe://cluster.local/ns/default/sa/sleep",
            "state": "Available",
            "certChain": [{
                "pem": base64::engine::general_purpose::STANDARD.encode(pem),
                "serialNumber": "255",
                "validFrom": "2023-03-11T05:57:26Z",
                "expirationTime": "2023-03-12T05:57:26Z"
            }],
            "rootCerts": []
        }])
    );
}
