//! Graceful drain: one trigger, many watchers.
//!
//! Every listener and every proxied connection holds a [`DrainWatch`]. When the
//! process is asked to stop, [`DrainTrigger::start_drain`] tells them all at once:
//! listeners stop accepting, HBONE servers send GOAWAY, open connections keep
//! going. The trigger then waits until every watch has been dropped, or until
//! the deadline, whichever comes first.

use std::time::Duration;

use tokio::sync::watch;

/// Owned by whoever decides to stop.
#[derive(Debug)]
pub struct DrainTrigger {
    signal: watch::Sender<bool>,
}

/// Held by everything that must finish before the process exits.
#[derive(Clone, Debug)]
pub struct DrainWatch {
    signal: watch::Receiver<bool>,
}

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every watcher finished in time.
    Complete,
    /// The deadline passed with watchers still running.
    DeadlineExceeded,
}

/// A new trigger and its first watch.
pub fn channel() -> (DrainTrigger, DrainWatch) {
    let (tx, rx) = watch::channel(false);
    (DrainTrigger { signal: tx }, DrainWatch { signal: rx })
}

impl DrainTrigger {
    /// Tells every watcher to drain, then waits for all of them (at most `deadline`).
    pub async fn start_drain(self, deadline: Duration) -> DrainOutcome {
        let _ = self.signal.send(true);
        match tokio::time::timeout(deadline, self.signal.closed()).await {
            Ok(()) => DrainOutcome::Complete,
            Err(_) => DrainOutcome::DeadlineExceeded,
        }
    }

    /// Whether a drain was started.
    pub fn is_draining(&self) -> bool {
        *self.signal.borrow()
    }

    /// Number of live watches (for diagnostics).
    pub fn watchers(&self) -> usize {
        self.signal.receiver_count()
    }
}

impl DrainWatch {
    /// Resolves when a drain starts (immediately if it already has).
    pub async fn signaled(&mut self) {
        let _ = self.signal.wait_for(|d| *d).await;
    }

    /// An owned future that resolves when a drain starts, for `select!` with a
    /// clone of the watch (the clone is dropped when the future completes).
    pub fn signaled_owned(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut w = self.clone();
        async move { w.signaled().await }
    }

    pub fn is_draining(&self) -> bool {
        *self.signal.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_completes_when_the_last_watch_is_dropped() {
        let (trigger, watch) = channel();
        let mut w2 = watch.clone();
        let worker = tokio::spawn(async move {
            w2.signaled().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(w2);
        });
        drop(watch);
        assert_eq!(
            trigger.start_drain(Duration::from_secs(5)).await,
            DrainOutcome::Complete
        );
        worker.await.unwrap();
    }

    #[tokio::test]
    async fn drain_reports_the_deadline_when_a_watch_lingers() {
        let (trigger, watch) = channel();
        let _held = watch;
        assert_eq!(
            trigger.start_drain(Duration::from_millis(30)).await,
            DrainOutcome::DeadlineExceeded
        );
    }

    #[tokio::test]
    async fn a_watch_taken_after_the_drain_started_sees_it_at_once() {
        let (trigger, watch) = channel();
        let mut late = watch.clone();
        let _ = trigger.signal.send(true);
        tokio::time::timeout(Duration::from_secs(1), late.signaled())
            .await
            .expect("signaled immediately");
        assert!(watch.is_draining());
    }
}
