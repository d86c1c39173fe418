//! Locating (and building, once per test run) the binaries under test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

fn profile_dir() -> PathBuf {
    // The test binary lives in target/<profile>/deps/.
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| target_dir().join("debug"))
}

/// Builds the workspace binaries once per test run. nextest runs each test in
/// its own process; the run id and a lock file make the build happen once.
fn ensure_built() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = profile_dir();
        if std::env::var_os("ZS_E2E_NO_BUILD").is_some() {
            return dir;
        }
        let run =
            std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| std::process::id().to_string());
        let marker = dir.join(format!(".e2e-built-{run}"));
        let lock_path = dir.join(".e2e-build.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .expect("open build lock");
        lock_exclusive(&lock);
        if !marker.exists() {
            let release = dir.file_name().is_some_and(|n| n == "release");
            let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.args(["build", "--quiet", "--bins"])
                .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
            if release {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build");
            assert!(status.success(), "building the binaries under test failed");
            let _ = std::fs::write(&marker, b"");
        }
        drop(lock);
        dir
    })
}

fn lock_exclusive(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a valid, open file descriptor owned by `f`; the lock is
    // released when the descriptor is closed.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock failed");
}

/// Path of a workspace binary, built if needed.
pub fn bin(name: &str) -> PathBuf {
    let path = ensure_built().join(name);
    assert!(
        path.exists(),
        "{} not found; build the workspace binaries first",
        path.display()
    );
    path
}
