//! The mesh file: loading it, and noticing when it changes.
//!
//! The file is polled (modification time, size and inode, so an editor's
//! rename-into-place counts as a change) every `--poll-interval`; `SIGHUP`
//! and the admin endpoint's `POST /reload` force a reload. A file that fails
//! to parse is reported (once per distinct error) and the previous snapshot
//! keeps being served, as istiod keeps serving its last good configuration. A
//! reload whose content is byte-for-byte unchanged publishes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tracing::{info, warn};
use zs_state::local::{LocalConfig, LocalConfigError};

use crate::server::{Core, TestKnobs};
use crate::snapshot::Snapshot;

/// Why the mesh file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// It could not be read.
    #[error("mesh file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// It is not a valid local config.
    #[error("mesh file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: LocalConfigError,
    },
}

/// What identifies one version of the file on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// A loaded file.
#[derive(Debug)]
pub struct Loaded {
    /// The parsed content.
    pub config: LocalConfig,
    /// The file's stamp when it was read (taken before reading, so a write
    /// racing the read shows up as a change at the next poll).
    pub stamp: Option<Stamp>,
    /// The raw bytes, to skip reloads that change nothing.
    pub text: String,
}

/// Reads and parses the mesh file.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let stamp = stamp(path);
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let config = LocalConfig::from_yaml(&text).map_err(|source| LoadError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Loaded {
        config,
        stamp,
        text,
    })
}

/// The snapshot served for `config`, with the test knobs applied.
pub fn build(config: &LocalConfig, generation: u64, test: &TestKnobs) -> Snapshot {
    Snapshot::from_config(config, generation, &test.corrupt_resources)
}

/// The next SIGHUP, or never when not listening for it.
async fn hangup(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Watches `path` until shutdown, publishing a new snapshot on every change.
pub(crate) async fn run(
    core: Arc<Core>,
    path: PathBuf,
    initial: Option<Stamp>,
    interval: Duration,
    sighup: bool,
    test: TestKnobs,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut hangups = if sighup {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    } else {
        None
    };
    let mut last_stamp = initial;
    let mut last_text = std::fs::read_to_string(&path).ok();
    let mut last_error: Option<String> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = crate::server::until_set(&mut shutdown) => return,
            _ = tick.tick() => false,
            _ = hangup(&mut hangups) => { info!("SIGHUP: reloading the mesh file"); true },
            _ = core.reload.notified() => { info!("reload requested"); true },
        };
        let now = stamp(&path);
        if !forced && now == last_stamp {
            continue;
        }
        match load(&path) {
            Ok(loaded) => {
                last_stamp = loaded.stamp;
                if last_error.take().is_some() {
                    core.status.config_error(None);
                }
                if last_text.as_deref() == Some(loaded.text.as_str()) {
                    continue;
                }
                last_text = Some(loaded.text);
                let generation = core.snapshots.borrow().generation() + 1;
                let snapshot = build(&loaded.config, generation, &test);
                info!(generation, resources = ?snapshot.counts(), "mesh file changed: pushing the difference");
                core.snapshots.send_replace(Arc::new(snapshot));
            }
            Err(e) => {
                // The stamp is not recorded, so the next poll tries again: the
                // file may have been caught half-written.
                let message = e.to_string();
                if last_error.as_deref() != Some(message.as_str()) {
                    warn!("keeping the last good mesh: {message}");
                    core.status.config_error(Some(message.clone()));
                    last_error = Some(message);
                }
            }
        }
    }
}
