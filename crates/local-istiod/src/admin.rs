//! The admin endpoint (plain HTTP/1.1, `--admin ADDR`): controls for tests
//! that simulate control-plane outages, and a status document.
//!
//! | request | effect |
//! |---|---|
//! | `POST /pause` | drop every ADS stream; refuse ADS and CA calls with `UNAVAILABLE` |
//! | `POST /resume` | serve again |
//! | `POST /reload` | re-read the mesh file now |
//! | `GET /status` | JSON [`crate::status::StatusReport`] |
//! | `GET /root-cert.pem` | the trust anchors |
//!
//! Bind it to loopback: it has no authentication.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use crate::server::Core;

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

fn handle(core: &Core, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let text = |status, body: &'static str| respond(status, "text/plain", body);
    match (method, path) {
        (&Method::POST, "/pause") => {
            core.set_paused(true);
            text(StatusCode::OK, "paused\n")
        }
        (&Method::POST, "/resume") => {
            core.set_paused(false);
            text(StatusCode::OK, "resumed\n")
        }
        (&Method::POST, "/reload") => {
            core.reload.notify_one();
            text(StatusCode::OK, "reloading\n")
        }
        (&Method::GET, "/status") => match serde_json::to_vec_pretty(&core.report()) {
            Ok(json) => respond(StatusCode::OK, "application/json", json),
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "status unavailable\n"),
        },
        (&Method::GET, "/root-cert.pem") => respond(
            StatusCode::OK,
            "application/x-pem-file",
            core.pki.authority().roots_pem().to_string(),
        ),
        (_, "/pause" | "/resume" | "/reload" | "/status" | "/root-cert.pem") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Serves the admin endpoint until shutdown.
pub(crate) async fn serve(
    listener: TcpListener,
    core: Arc<Core>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            _ = crate::server::until_set(&mut shutdown) => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!("admin accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let core = core.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = handle(&core, req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_and_resume_flip_the_flag() {
        let core = Core::for_tests();
        assert_eq!(handle(&core, &Method::POST, "/pause").status(), 200);
        assert!(core.is_paused());
        assert!(core.report().paused);
        assert_eq!(handle(&core, &Method::POST, "/resume").status(), 200);
        assert!(!core.is_paused());
    }

    #[test]
    fn wrong_method_and_unknown_path_are_refused() {
        let core = Core::for_tests();
        assert_eq!(handle(&core, &Method::GET, "/pause").status(), 405);
        assert_eq!(handle(&core, &Method::POST, "/status").status(), 405);
        assert_eq!(handle(&core, &Method::GET, "/nope").status(), 404);
        assert!(!core.is_paused());
    }
}
