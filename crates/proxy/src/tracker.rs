//! Live inbound connections, so that a policy change can close the ones it now denies.
//!
//! Every inbound connection that passed authorization registers here with the
//! inputs it was authorized on. When istiod pushes an Authorization change,
//! [`ConnectionTracker::reevaluate`] decides each one again against the new
//! policies; denied ones are cancelled at once (their copy loops stop and the
//! streams are reset), allowed ones are untouched.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use zs_state::MeshState;
use zs_state::Workload;
use zs_state::zs_authz::{Connection, Decision, Target};

struct Tracked {
    conn: Connection,
    cancel: CancellationToken,
}

/// The set of open, authorized inbound connections.
#[derive(Clone, Default)]
pub struct ConnectionTracker {
    inner: Arc<Mutex<HashMap<u64, Tracked>>>,
    next: Arc<AtomicU64>,
}

impl std::fmt::Debug for ConnectionTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionTracker")
            .field("open", &self.len())
            .finish()
    }
}

/// Removes the connection from the tracker when dropped.
#[derive(Debug)]
pub struct TrackGuard {
    id: u64,
    tracker: ConnectionTracker,
    cancel: CancellationToken,
}

impl TrackGuard {
    /// Cancelled when a policy change denies this connection.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }
}

impl Drop for TrackGuard {
    fn drop(&mut self) {
        self.tracker.inner.lock().remove(&self.id);
    }
}

/// A connection closed by re-evaluation, for logs.
#[derive(Debug, Clone)]
pub struct Closed {
    pub conn: Connection,
    pub reason: String,
}

impl ConnectionTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an authorized connection.
    pub fn track(&self, conn: Connection) -> TrackGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        self.inner.lock().insert(
            id,
            Tracked {
                conn,
                cancel: cancel.clone(),
            },
        );
        TrackGuard {
            id,
            tracker: self.clone(),
            cancel,
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides every tracked connection again against `state`'s policies for the
    /// local workload, cancelling the ones now denied. Returns them.
    pub fn reevaluate(&self, state: &MeshState, local: &Workload) -> Vec<Closed> {
        let target = Target::new(&local.namespace, &local.authorization_policies);
        let mut closed = Vec::new();
        let inner = self.inner.lock();
        for t in inner.values() {
            if t.cancel.is_cancelled() {
                continue;
            }
            if let Decision::Deny(reason) = state.policies().evaluate(&target, &t.conn) {
                t.cancel.cancel();
                closed.push(Closed {
                    conn: t.conn.clone(),
                    reason: reason.to_string(),
                });
            }
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zs_state::zs_authz::{Action, Policy, Scope};

    fn conn(ns: &str) -> Connection {
        Connection {
            src_ip: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2:8080".parse().unwrap(),
            src_identity: Some(
                format!("spiffe://cluster.local/ns/{ns}/sa/x")
                    .parse()
                    .unwrap(),
            ),
        }
    }

    #[test]
    fn a_new_deny_closes_only_the_matching_connection() {
        let tracker = ConnectionTracker::new();
        let local = Workload::new("dst", "ecs-demo-1", "dst", "echo");
        let a = tracker.track(conn("ecs-demo-2"));
        let b = tracker.track(conn("default"));
        let mut state = MeshState::new();
        assert!(tracker.reevaluate(&state, &local).is_empty());
        let deny: Policy = serde_yaml::from_str(
            "name: deny-c2\nnamespace: ecs-demo-1\nscope: Namespace\naction: Deny\ndryRun: false\nrules:\n- - - namespaces: [!Exact ecs-demo-2]\n",
        )
        .unwrap();
        assert_eq!((deny.scope, deny.action), (Scope::Namespace, Action::Deny));
        state.policies_mut().insert("ecs-demo-1/deny-c2", deny);
        let closed = tracker.reevaluate(&state, &local);
        assert_eq!(closed.len(), 1);
        assert!(a.cancelled().is_cancelled());
        assert!(!b.cancelled().is_cancelled());
        assert_eq!(closed[0].reason, "explicitly denied by: ecs-demo-1/deny-c2");
    }

    #[test]
    fn dropping_the_guard_untracks() {
        let tracker = ConnectionTracker::new();
        let g = tracker.track(conn("x"));
        assert_eq!(tracker.len(), 1);
        drop(g);
        assert!(tracker.is_empty());
    }
}
