//! The certificate in force, shared between whoever rotates it (the CA client or
//! a file watcher) and whoever uses it (every new HBONE connection).
//!
//! Readers are on the connection path, so [`CertificateHandle::current`] is a
//! lock-free atomic load. Rotation is rare; it also publishes on a `watch`
//! channel so tasks can react (rebuild cached configs, become ready).

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use crate::WorkloadCertificate;

/// A cheaply clonable handle to the workload certificate currently in force.
#[derive(Clone)]
pub struct CertificateHandle {
    inner: Arc<Inner>,
}

struct Inner {
    current: ArcSwapOption<WorkloadCertificate>,
    changes: watch::Sender<Option<Arc<WorkloadCertificate>>>,
}

impl CertificateHandle {
    /// A handle with no certificate yet.
    pub fn new_empty() -> Self {
        CertificateHandle {
            inner: Arc::new(Inner {
                current: ArcSwapOption::empty(),
                changes: watch::Sender::new(None),
            }),
        }
    }

    /// A handle that starts with `cert`.
    pub fn new(cert: WorkloadCertificate) -> Self {
        let handle = Self::new_empty();
        handle.set(cert);
        handle
    }

    /// Puts `cert` in force. Connections already established keep the certificate
    /// they were made with; new ones use this one.
    pub fn set(&self, cert: WorkloadCertificate) -> Arc<WorkloadCertificate> {
        let cert = Arc::new(cert);
        self.inner.current.store(Some(cert.clone()));
        self.inner.changes.send_replace(Some(cert.clone()));
        cert
    }

    /// The certificate in force, if any.
    pub fn current(&self) -> Option<Arc<WorkloadCertificate>> {
        self.inner.current.load_full()
    }

    /// A receiver that sees every certificate put in force from now on.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<WorkloadCertificate>>> {
        self.inner.changes.subscribe()
    }

    /// Waits until a certificate is in force and returns it.
    pub async fn wait_available(&self) -> Arc<WorkloadCertificate> {
        if let Some(cert) = self.current() {
            return cert;
        }
        let mut rx = self.subscribe();
        loop {
            if let Some(cert) = rx.borrow_and_update().clone() {
                return cert;
            }
            // The sender lives in `self.inner`, which `self` keeps alive, so the
            // channel cannot close while we wait.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Default for CertificateHandle {
    fn default() -> Self {
        Self::new_empty()
    }
}

impl std::fmt::Debug for CertificateHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CertificateHandle")
            .field(&self.current())
            .finish()
    }
}
