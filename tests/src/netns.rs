//! Network namespaces for tests that need real, separate networks.
//!
//! Loopback blocks (`net.rs`) are enough while every task sits on one network.
//! Routing across networks needs hosts that cannot reach each other except
//! through a gateway, so these tests build them from network namespaces: a
//! [`Netns`] per task, joined by veth pairs to a bridge per network (see
//! `networks.rs`). Everything is created under a random per-test prefix and
//! deleted on drop, also when the test fails, so parallel tests never collide.
//!
//! The test process itself stays in its own namespace. It reaches into a task's
//! namespace by creating sockets there ([`Netns::connect`], [`Netns::listen`],
//! [`Netns::udp`]), which keep their namespace for life while their I/O runs on
//! the test's runtime, or by running a whole future on a thread that lives in
//! the namespace ([`Netns::run`]), e.g. to start and probe a sidecar. Processes
//! start inside with `ip netns exec`, which also bind-mounts per-namespace
//! `resolv.conf` and `hosts` files ([`Netns::set_etc_file`]).
//!
//! Needs root and `ip(8)`; tests call [`netns_supported`] (or the
//! `require_netns!` macro) and skip with a message otherwise.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Whether this process may create network namespaces: root, with `ip(8)`.
pub fn netns_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // SAFETY: geteuid(2) takes no arguments and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        root && Command::new("ip")
            .args(["netns", "list"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Returns from the calling test with a message when namespaces are unavailable.
#[macro_export]
macro_rules! require_netns {
    () => {
        if !$crate::netns::netns_supported() {
            println!("skipped: needs root and ip(8)");
            return;
        }
    };
}

/// A random tag shared by everything one test creates.
pub fn unique_tag() -> String {
    use rand::Rng;
    format!("{:06x}", rand::rng().random_range(0..0x100_0000u32))
}

/// Runs `ip <args>`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    run_checked(Command::new("ip").args(args));
}

fn run_checked(cmd: &mut Command) {
    let out = cmd.output().expect("run a network setup command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted (with the per-namespace `/etc` files) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with its loopback interface up.
    pub fn new(name: &str) -> Netns {
        assert!(netns_supported(), "network namespaces need root and ip(8)");
        ip(&["netns", "add", name]);
        let ns = Netns { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <this> <args>`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// A command that runs `program` inside (through `ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Writes `/etc/netns/<name>/<file>`, which `ip netns exec` mounts over
    /// `/etc/<file>` for processes started inside (e.g. `resolv.conf`, `hosts`).
    pub fn set_etc_file(&self, file: &str, contents: &str) {
        let dir = self.etc_dir();
        std::fs::create_dir_all(&dir).expect("create /etc/netns/<name>");
        std::fs::write(dir.join(file), contents).expect("write per-namespace /etc file");
    }

    fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }

    /// Runs `f` on a thread that has entered this namespace; sockets `f` creates
    /// live here.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = std::fs::File::open(format!("/run/netns/{}", self.name))
            .expect("open the namespace handle");
        std::thread::scope(|s| {
            s.spawn(|| {
                set_thread_netns(&file);
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Runs a future to completion on its own runtime, on a thread inside this
    /// namespace, without blocking the caller's runtime. What it returns must
    /// not hold sockets (they would belong to that runtime, which ends here).
    pub async fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let file = std::fs::File::open(format!("/run/netns/{}", self.name))
            .expect("open the namespace handle");
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            set_thread_netns(&file);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(f())));
            let _ = tx.send(result);
        });
        match rx.await.expect("namespace thread vanished") {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Opens a TCP connection from inside this namespace.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = self
            .enter(|| Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)))?;
        socket.set_nonblocking(true)?;
        let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
        socket.connect(addr).await
    }

    /// A TCP listener bound inside this namespace.
    pub fn listen(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let listener = self.enter(|| std::net::TcpListener::bind(addr))?;
        listener.set_nonblocking(true)?;
        TcpListener::from_std(listener)
    }

    /// A UDP socket bound inside this namespace.
    pub fn udp(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        let socket = self.enter(|| std::net::UdpSocket::bind(addr))?;
        socket.set_nonblocking(true)?;
        UdpSocket::from_std(socket)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Interfaces inside go with the namespace; processes still inside keep
        // it alive anonymously until they exit, but the name is free at once.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}

fn set_thread_netns(file: &std::fs::File) {
    // SAFETY: setns(2) with an open namespace file descriptor owned by `file`
    // and CLONE_NEWNET moves only the calling thread (a thread this module
    // spawned for the purpose, which ends with the work) into that network
    // namespace; no memory is shared or handed to the kernel.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
}
