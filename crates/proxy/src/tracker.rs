//! Live inbound connections, so that a policy change can close the ones it now denies.
//!
//! Every inbound connection that passed authorization registers here with the
//! inputs it was authorized on. When istiod pushes an Authorization change,
//! [`ConnectionTracker::reevaluate`] decides each one again against the new
//! policies; denied ones are cancelled at once (their copy loops stop and the
//! streams are reset), allowed ones are untouched.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use parking_lot::Mutex;
use zs_state::MeshState;
use zs_state::Workload;
use zs_state::zs_authz::{Connection, Decision, Target};

/// What the tracker and the connection share: the inputs it was authorized on
/// and a one-shot cancel flag. One small allocation per connection (a
/// `CancellationToken` tree node and its `Notify` would be three times the size,
/// and every idle inbound connection carries this).
struct Tracked {
    conn: Connection,
    cancelled: AtomicBool,
    waker: AtomicWaker,
}

impl Tracked {
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

/// The set of open, authorized inbound connections.
#[derive(Clone, Default)]
pub struct ConnectionTracker {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    open: Mutex<HashMap<u64, Arc<Tracked>>>,
    next: AtomicU64,
}

impl std::fmt::Debug for ConnectionTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionTracker")
            .field("open", &self.len())
            .finish()
    }
}

/// Removes the connection from the tracker when dropped.
pub struct TrackGuard {
    id: u64,
    tracker: Arc<Inner>,
    shared: Arc<Tracked>,
}

impl std::fmt::Debug for TrackGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackGuard")
            .field("id", &self.id)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl TrackGuard {
    /// The inputs this connection was authorized on.
    pub fn connection(&self) -> &Connection {
        &self.shared.conn
    }

    /// Whether a policy change has denied this connection.
    pub fn is_cancelled(&self) -> bool {
        self.shared.is_cancelled()
    }

    /// Ready once a policy change denies this connection.
    pub fn poll_cancelled(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.is_cancelled() {
            return Poll::Ready(());
        }
        self.shared.waker.register(cx.waker());
        // Re-check: a cancel between the load and the registration woke nobody.
        if self.shared.is_cancelled() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Completes once a policy change denies this connection. Only one task
    /// may wait on a guard at a time (the connection's own).
    pub async fn cancelled(&self) {
        poll_fn(|cx| self.poll_cancelled(cx)).await
    }
}

impl Drop for TrackGuard {
    fn drop(&mut self) {
        self.tracker.open.lock().remove(&self.id);
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
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Tracked {
            conn,
            cancelled: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        self.inner.open.lock().insert(id, shared.clone());
        TrackGuard {
            id,
            tracker: self.inner.clone(),
            shared,
        }
    }

    pub fn len(&self) -> usize {
        self.inner.open.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides every tracked connection again against `state`'s policies for the
    /// local workload, cancelling the ones now denied. Returns them.
    pub fn reevaluate(&self, state: &MeshState, local: &Workload) -> Vec<Closed> {
        let target = Target::new(&local.namespace, &local.authorization_policies);
        let mut closed = Vec::new();
        let open = self.inner.open.lock();
        for t in open.values() {
            if t.is_cancelled() {
                continue;
            }
            if let Decision::Deny(reason) = state.policies().evaluate(&target, &t.conn) {
                t.cancel();
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
        assert!(a.is_cancelled());
        assert!(!b.is_cancelled());
        assert_eq!(closed[0].reason, "explicitly denied by: ecs-demo-1/deny-c2");
    }

    #[tokio::test]
    async fn a_waiting_connection_is_woken_by_the_cancel() {
        let tracker = ConnectionTracker::new();
        let local = Workload::new("dst", "ecs-demo-1", "dst", "echo");
        let guard = tracker.track(conn("ecs-demo-2"));
        let waiter = tokio::spawn(async move {
            guard.cancelled().await;
            guard.connection().dst
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let mut state = MeshState::new();
        let deny: Policy = serde_yaml::from_str(
            "name: deny-all\nnamespace: ecs-demo-1\nscope: Namespace\naction: Deny\ndryRun: false\nrules:\n- []\n",
        )
        .unwrap();
        state.policies_mut().insert("ecs-demo-1/deny-all", deny);
        assert_eq!(tracker.reevaluate(&state, &local).len(), 1);
        let dst = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiting connection was woken")
            .unwrap();
        assert_eq!(dst, "10.0.0.2:8080".parse().unwrap());
        // Cancelled connections are not closed twice.
        assert!(tracker.reevaluate(&state, &local).is_empty());
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
