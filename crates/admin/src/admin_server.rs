//! The admin server: `/config_dump`, `/quitquitquit`, `/logging` and an index.
//!
//! It is meant for localhost only (the caller binds it there, as ztunnel
//! binds 127.0.0.1 and ::1): it can stop the process and change logging.
//!
//! | Path | Method | Answer |
//! |---|---|---|
//! | `/` | any | HTML index of the endpoints |
//! | `/config_dump` | any | 200, pretty JSON (see [`crate::config_dump`]); 500 with the reason if it cannot be built |
//! | `/quitquitquit` | POST | calls the shutdown callback, 200 `shutdown now\n`; other methods 405 |
//! | `/logging` | POST | see below; other methods 405 with usage |
//! | other | any | 404 |
//!
//! `/logging` with no parameters answers `current log level is <filter>\n`.
//! `?level=<spec>` adds to the filter (`debug`, or `zs_proxy=debug,access=off`),
//! `?reset` restores the startup filter (and `?reset&level=<spec>` adds to it);
//! both answer with the new filter. A bad spec gets 400 with the reason and
//! changes nothing.

use std::future::Future;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config_dump::ConfigDump;
use crate::http::{self as h, Body};
use crate::telemetry::{LogControl, TelemetryError};

/// Usage of `/logging`, appended to its error answers.
const LOGGING_USAGE: &str = "\
usage: POST /logging                                   (show the current filter)
usage: POST /logging?level=<level>                     (change the default level)
usage: POST /logging?level=<target>=<level>,...        (change levels per target)
usage: POST /logging?reset                             (restore the startup filter)

levels: off, error, warn, info, debug, trace
targets: a module path such as zs_proxy::outbound, or access for access logs
";

/// What the admin server needs: the config dump, the log control, and what to
/// do on `/quitquitquit`.
pub struct Admin {
    config_dump: ConfigDump,
    logging: Option<LogControl>,
    shutdown: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("config_dump", &self.config_dump)
            .field("logging", &self.logging.is_some())
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// An admin server that dumps `config_dump` and calls `shutdown` on
    /// `POST /quitquitquit`. The callback should only start the shutdown (the
    /// answer is sent after it returns).
    pub fn new(config_dump: ConfigDump, shutdown: impl Fn() + Send + Sync + 'static) -> Self {
        Admin {
            config_dump,
            logging: None,
            shutdown: Box::new(shutdown),
        }
    }

    /// Lets `/logging` read and change the filter through `control`. Without
    /// it, `/logging` answers 500.
    pub fn with_logging(mut self, control: LogControl) -> Self {
        self.logging = Some(control);
        self
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, admin: Admin, shutdown: impl Future<Output = ()>) {
    let admin = Arc::new(admin);
    h::serve(
        "admin",
        listener,
        move |req| {
            let admin = admin.clone();
            async move { admin.handle(req).await }
        },
        shutdown,
    )
    .await
}

impl Admin {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        match req.uri().path() {
            "/" => index(),
            "/config_dump" => self.config_dump().await,
            "/quitquitquit" => self.quit(req.method()),
            "/logging" => self.logging(req.method(), req.uri().query()),
            _ => h::empty(StatusCode::NOT_FOUND),
        }
    }

    async fn config_dump(&self) -> Response<Body> {
        match self.config_dump.render().await {
            Ok(json) => h::with_content_type(StatusCode::OK, "application/json", json),
            Err(err) => {
                warn!(error = %err, "config dump failed");
                h::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n"))
            }
        }
    }

    fn quit(&self, method: &Method) -> Response<Body> {
        if method != Method::POST {
            return h::empty(StatusCode::METHOD_NOT_ALLOWED);
        }
        info!("shutdown requested through the admin endpoint");
        (self.shutdown)();
        h::text(StatusCode::OK, "shutdown now\n")
    }

    fn logging(&self, method: &Method, query: Option<&str>) -> Response<Body> {
        if method != Method::POST {
            return h::text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("invalid HTTP method: use POST\n\n{LOGGING_USAGE}"),
            );
        }
        let Some(control) = &self.logging else {
            return h::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "logging control is not available\n",
            );
        };
        let mut level = None;
        let mut reset = false;
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match &*key {
                "level" => level = Some(value.into_owned()),
                "reset" => reset = true,
                _ => {}
            }
        }
        let level = level.unwrap_or_default();
        let result = if reset || !level.is_empty() {
            control.apply(reset, &level)
        } else {
            control.current()
        };
        match result {
            Ok(filter) => h::text(StatusCode::OK, format!("current log level is {filter}\n")),
            Err(err @ TelemetryError::InvalidFilter { .. }) => {
                h::text(StatusCode::BAD_REQUEST, format!("{err}\n\n{LOGGING_USAGE}"))
            }
            Err(err) => h::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
        }
    }
}

fn index() -> Response<Body> {
    const ENDPOINTS: [(&str, &str); 3] = [
        (
            "config_dump",
            "the workloads, services, policies, certificates and configuration in force (JSON)",
        ),
        (
            "logging",
            "POST: show or change the log filter (?level=&lt;level&gt; or &lt;target&gt;=&lt;level&gt;,..., ?reset)",
        ),
        ("quitquitquit", "POST: drain and shut down"),
    ];
    let mut rows = String::new();
    for (path, what) in ENDPOINTS {
        rows.push_str(&format!(
            "<tr><td><a href=\"{path}\">/{path}</a></td><td>{what}</td></tr>\n"
        ));
    }
    let page = format!(
        "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>ztunnel-sidecar admin</title></head>\n\
         <body>\n<h1>ztunnel-sidecar admin</h1>\n<table>\n<tr><th>Endpoint</th><th>Description</th></tr>\n{rows}</table>\n</body>\n</html>\n"
    );
    h::with_content_type(StatusCode::OK, "text/html; charset=utf-8", page)
}
