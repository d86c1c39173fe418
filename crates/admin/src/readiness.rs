//! Readiness: a set of named startup tasks, and the `/healthz/ready` server.
//!
//! Each part of the sidecar that must finish before traffic may be sent to it
//! (first certificate, first xDS sync, listeners bound) registers a task and
//! holds the returned [`BlockReady`] guard; dropping or releasing the guard
//! marks the task done. The process is ready when no task is pending.
//!
//! Draining is the one way back: [`Readiness::set_not_ready`] makes the
//! process not ready for good, with a reason that is reported like a pending
//! task, so an ECS or load-balancer health check stops sending new work while
//! open connections finish.
//!
//! The server answers exactly as ztunnel's: `GET /healthz/ready` gives
//! `200 ready\n` or `500 not ready, pending: <sorted, comma-separated>\n`;
//! any other method gives 405 and any other path 404.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tracing::info;

use crate::http::{self as h, Body};

/// The path readiness is served on.
pub const READY_PATH: &str = "/healthz/ready";

/// Tracks whether the process is ready. Cheap to clone; all clones share state.
#[derive(Clone, Debug)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    started: Instant,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Task name → number of live guards with that name. Counting lets two
    /// components register the same name without one release hiding the other.
    pending: BTreeMap<String, usize>,
    /// Set once, when draining starts; never cleared.
    not_ready: Option<String>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// A tracker with nothing pending (ready until a task is registered).
    pub fn new() -> Self {
        Readiness {
            inner: Arc::new(Inner {
                started: Instant::now(),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Registers a pending task. The process is not ready until the returned
    /// guard is dropped or [`BlockReady::release`]d.
    pub fn register(&self, name: impl Into<String>) -> BlockReady {
        let name = name.into();
        *self
            .inner
            .state
            .lock()
            .pending
            .entry(name.clone())
            .or_default() += 1;
        BlockReady {
            parent: self.clone(),
            name,
        }
    }

    /// Makes the process not ready permanently, with `reason` reported among the
    /// pending tasks (used when draining starts). Later calls keep the first reason.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        let mut state = self.inner.state.lock();
        if state.not_ready.is_none() {
            let reason = reason.into();
            info!(%reason, "marking server not ready");
            state.not_ready = Some(reason);
        }
    }

    /// The names of pending tasks (and the not-ready reason, if set), sorted and
    /// without duplicates.
    pub fn pending(&self) -> Vec<String> {
        let state = self.inner.state.lock();
        let mut names: Vec<String> = state.pending.keys().cloned().collect();
        if let Some(reason) = &state.not_ready
            && let Err(at) = names.binary_search(reason)
        {
            names.insert(at, reason.clone());
        }
        names
    }

    /// Whether nothing is pending and draining has not started.
    pub fn is_ready(&self) -> bool {
        let state = self.inner.state.lock();
        state.pending.is_empty() && state.not_ready.is_none()
    }

    fn release(&self, name: &str) {
        let mut state = self.inner.state.lock();
        if let Some(count) = state.pending.get_mut(name) {
            *count -= 1;
            if *count == 0 {
                state.pending.remove(name);
            }
        }
        let left = state.pending.len();
        drop(state);
        let elapsed = self.inner.started.elapsed();
        if left == 0 {
            info!(task = name, ?elapsed, "task complete, nothing pending");
        } else {
            info!(task = name, ?elapsed, left, "task complete, still pending");
        }
    }
}

/// Keeps a task pending until dropped.
#[derive(Debug)]
#[must_use = "the task is marked done as soon as the guard is dropped"]
pub struct BlockReady {
    parent: Readiness,
    name: String,
}

impl BlockReady {
    /// Marks the task done (same as dropping the guard, but says so).
    pub fn release(self) {}

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for BlockReady {
    fn drop(&mut self) {
        self.parent.release(&self.name);
    }
}

/// Serves `/healthz/ready` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    shutdown: impl Future<Output = ()>,
) {
    h::serve(
        "readiness",
        listener,
        move |req| {
            let response = handle(&readiness, &req);
            async move { response }
        },
        shutdown,
    )
    .await
}

fn handle(readiness: &Readiness, req: &Request<Incoming>) -> Response<Body> {
    if req.uri().path() != READY_PATH {
        return h::empty(StatusCode::NOT_FOUND);
    }
    if req.method() != Method::GET {
        return h::empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    let pending = readiness.pending();
    if pending.is_empty() {
        h::text(StatusCode::OK, "ready\n")
    } else {
        h::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("not ready, pending: {}\n", pending.join(", ")),
        )
    }
}
