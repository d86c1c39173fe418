//! What one evaluation returns: the verdict, why, and what dry-run policies
//! would have done. The caller logs and counts; this crate only decides.

use std::fmt;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::Action;

/// The verdict for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the connection through.
    Allow {
        /// The enforced ALLOW policy (`<namespace>/<name>`) that matched, or
        /// `None` when no enforced ALLOW policy applies to the target.
        policy: Option<Arc<str>>,
        /// What dry-run policies would have done.
        dry_run: DryRun,
    },
    /// Refuse the connection (HTTP 401 on HBONE; close a plaintext one).
    Deny(DenyReason),
}

/// Why a connection was denied. `Display` gives ztunnel's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DenyReason {
    /// An enforced DENY policy matched.
    #[error("explicitly denied by: {policy}")]
    ExplicitDeny {
        /// The policy that matched, as `<namespace>/<name>`.
        policy: Arc<str>,
        /// What dry-run DENY policies would have done (dry-run ALLOW
        /// policies are not evaluated once a DENY decided).
        dry_run: DryRun,
    },
    /// Enforced ALLOW policies apply to the target and none matched.
    #[error("allow policies exist, but none allowed")]
    NoAllowMatched {
        /// What dry-run policies would have done.
        dry_run: DryRun,
    },
}

impl Decision {
    /// Whether the connection may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The reason, when denied.
    pub fn deny_reason(&self) -> Option<&DenyReason> {
        match self {
            Decision::Allow { .. } => None,
            Decision::Deny(reason) => Some(reason),
        }
    }

    /// What dry-run policies would have done, whatever the verdict.
    pub fn dry_run(&self) -> &DryRun {
        match self {
            Decision::Allow { dry_run, .. } => dry_run,
            Decision::Deny(reason) => reason.dry_run(),
        }
    }
}

impl DenyReason {
    /// What dry-run policies would have done.
    pub fn dry_run(&self) -> &DryRun {
        match self {
            DenyReason::ExplicitDeny { dry_run, .. } | DenyReason::NoAllowMatched { dry_run } => {
                dry_run
            }
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allow {
                policy: Some(p), ..
            } => write!(f, "allowed by: {p}"),
            Decision::Allow { policy: None, .. } => f.write_str("no allow policies, allow"),
            Decision::Deny(reason) => reason.fmt(f),
        }
    }
}

/// Outcome of the dry-run policies of one evaluation, in ztunnel's order:
/// dry-run DENY before enforced DENY, dry-run ALLOW after it. Names are
/// `<namespace>/<name>`. Held inline, so the common case (none or a couple of
/// dry-run policies) costs no allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DryRun {
    denied_by: SmallVec<[Arc<str>; 2]>,
    allowed_by: SmallVec<[Arc<str>; 2]>,
    none_allowed: bool,
}

impl DryRun {
    /// Dry-run DENY policies that matched: enforcing any of them would deny.
    pub fn denied_by(&self) -> &[Arc<str>] {
        &self.denied_by
    }

    /// Dry-run ALLOW policies that matched.
    pub fn allowed_by(&self) -> &[Arc<str>] {
        &self.allowed_by
    }

    /// Only dry-run ALLOW policies apply (no enforced ALLOW) and none of
    /// them matched: enforcing them would deny this connection.
    pub fn none_allowed(&self) -> bool {
        self.none_allowed
    }

    /// Nothing to report.
    pub fn is_empty(&self) -> bool {
        self.denied_by.is_empty() && self.allowed_by.is_empty() && !self.none_allowed
    }

    /// Records a matching dry-run policy once, even when the target reaches
    /// it twice (by namespace and by name).
    pub(crate) fn record(&mut self, action: Action, policy: &Arc<str>) {
        let list = match action {
            Action::Deny => &mut self.denied_by,
            Action::Allow => &mut self.allowed_by,
        };
        if !list.iter().any(|p| Arc::ptr_eq(p, policy)) {
            list.push(Arc::clone(policy));
        }
    }

    pub(crate) fn set_none_allowed(&mut self) {
        self.none_allowed = true;
    }
}
