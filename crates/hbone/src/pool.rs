//! The outbound connection pool: HBONE connections shared by every CONNECT to
//! the same destination with the same identities.
//!
//! A connection is shared only between requests with an equal [`PoolKey`] —
//! same source identity, same ordered list of acceptable destination
//! identities, same destination address — because the TLS handshake checked
//! exactly those. Per key:
//!
//! * at most one dial is in flight; concurrent requesters wait for it and then
//!   share the new connection;
//! * a connection is handed out while it is ready (no GOAWAY, no error) and
//!   below its stream limit, `min(max_streams_per_connection, server's
//!   SETTINGS_MAX_CONCURRENT_STREAMS)`; when every connection is full the next
//!   request dials another;
//! * up to [`PoolConfig::parallel_connections`] connections, streams are
//!   spread: a request finding every connection busy (one stream or more)
//!   dials another rather than joining one, then requests go to the connection
//!   with the fewest streams. One HTTP/2 connection is one TLS session
//!   behind one lock, so every stream on it is encrypted and decrypted by one
//!   thread at a time; spreading lets concurrent transfers to one destination use each of the
//!   data plane's threads, as Envoy's per-worker pools do. With 1 (ztunnel's
//!   behaviour) a connection is shared until full. If the extra dial fails, the
//!   request joins a busy connection instead;
//! * a connection not handed out for `idle_timeout` leaves the pool and closes
//!   once its last stream ends.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;
use zs_identity::Identity;
use zs_tls::TlsError;

use crate::client::connect_to;
use crate::readbuf::ReadBuffered;
use crate::socket::SocketOptions;
use crate::stream::StreamSlot;
use crate::{ConnectRequest, H2Config, H2Connection, H2Stream, HboneError, PoolConfig};

/// What a pooled connection was verified for. Connections are shared only
/// between requests with equal keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    // Field order is comparison order: the address first, since keys that differ
    // usually differ there and it is the cheapest to compare.
    /// The HBONE peer address (usually `<ip>:15008`).
    pub dst: SocketAddr,
    /// Our identity (the client certificate presented).
    pub src: Identity,
    /// The identities the server was accepted for, in order.
    pub dst_identities: Vec<Identity>,
}

impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}[", self.src, self.dst)?;
        for (i, id) in self.dst_identities.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{id}")?;
        }
        f.write_str("]")
    }
}

/// Opens the byte streams HBONE connections run over. The default dials TCP;
/// tests, or a tunnel through another proxy, can supply their own.
pub trait Connector: Send + Sync + 'static {
    /// The stream type produced.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Opens a stream to `dst`. The pool applies the connect timeout.
    fn connect(&self, dst: SocketAddr) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

/// Dials TCP with [`SocketOptions`] (nodelay, keepalive, mark).
#[derive(Clone, Debug, Default)]
pub struct TcpConnector {
    pub options: SocketOptions,
}

impl Connector for TcpConnector {
    type Io = TcpStream;

    fn connect(&self, dst: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send {
        self.options.connect(dst)
    }
}

/// A pool of HBONE client connections, keyed by [`PoolKey`]. Cheap to clone.
pub struct Pool<C: Connector = TcpConnector> {
    inner: Arc<Inner<C>>,
}

impl<C: Connector> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<C> {
    h2: H2Config,
    cfg: PoolConfig,
    connector: C,
    entries: Mutex<HashMap<PoolKey, Arc<Entry>>>,
    /// Dropped with the pool, which tells the idle watchers to let go of their
    /// connections: tunnels end when the pool does.
    alive: tokio::sync::watch::Sender<()>,
}

impl<C> Inner<C> {
    /// Drops the key's entry when it has no connections and nobody but the map
    /// and the caller refers to it (no request waiting to dial or send), so keys
    /// of destinations that failed or went idle do not accumulate.
    fn forget_if_unused(&self, key: &PoolKey, entry: Arc<Entry>) {
        let mut entries = lock(&self.entries);
        if lock(&entry.conns).is_empty() && Arc::strong_count(&entry) == 2 {
            entries.remove(key);
        }
    }
}

#[derive(Default)]
struct Entry {
    conns: Mutex<Vec<H2Connection>>,
    /// Serializes dials for this key.
    dial: tokio::sync::Mutex<()>,
}

/// What [`Entry::checkout`] found.
enum Checkout {
    /// A connection to use, with a stream slot taken on it.
    Use(H2Connection, StreamSlot),
    /// Every connection with room is busy and another may be dialed; the one
    /// with the fewest streams is there to fall back on if that dial fails.
    Busy(H2Connection),
    /// No connection can take a stream: dial.
    Full,
}

impl Entry {
    /// The ready connection with the fewest streams, below its stream limit,
    /// with a slot taken on it — unless it is busy and fewer than `parallel`
    /// connections exist, in which case the caller should dial another.
    /// Connections that are no longer ready are dropped from the list here.
    fn checkout(&self, parallel: usize) -> Checkout {
        let mut conns = lock(&self.conns);
        conns.retain(H2Connection::is_ready);
        let mut room = conns.len() < parallel;
        loop {
            let Some(conn) = conns
                .iter()
                .filter(|c| c.active_streams() < c.max_streams())
                .min_by_key(|c| c.active_streams())
            else {
                return Checkout::Full;
            };
            if room && conn.active_streams() > 0 {
                return Checkout::Busy(conn.clone());
            }
            // Another thread may take the last slot between the look and the
            // reservation; then look again, without dialing for it.
            if let Some(slot) = conn.try_reserve() {
                conn.touch();
                return Checkout::Use(conn.clone(), slot);
            }
            room = false;
        }
    }
}

impl Pool<TcpConnector> {
    /// A pool dialing TCP with default socket options.
    pub fn new(h2: H2Config, cfg: PoolConfig) -> Self {
        Self::with_connector(h2, cfg, TcpConnector::default())
    }
}

impl<C: Connector> Pool<C> {
    /// A pool dialing through `connector`.
    pub fn with_connector(h2: H2Config, cfg: PoolConfig, connector: C) -> Self {
        Pool {
            inner: Arc::new(Inner {
                h2,
                cfg,
                connector,
                entries: Mutex::new(HashMap::new()),
                alive: tokio::sync::watch::Sender::new(()),
            }),
        }
    }

    /// Sends `req` on a pooled connection for `key`, dialing one if none is
    /// available. `tls` is called only when dialing; it builds the client
    /// config that checks the server against `key.dst_identities`.
    pub async fn send(
        &self,
        key: PoolKey,
        tls: impl FnOnce() -> Result<Arc<rustls::ClientConfig>, TlsError>,
        req: ConnectRequest,
    ) -> Result<(H2Stream, http::response::Parts), HboneError> {
        let entry = self.entry(&key);
        let parallel = self.inner.cfg.parallel_connections;
        if let Checkout::Use(conn, slot) = entry.checkout(parallel) {
            return conn.send_reserved(slot, req).await;
        }
        let dial_guard = entry.dial.lock().await;
        // Whoever held the lock before us may have just added a connection.
        let fallback = match entry.checkout(parallel) {
            Checkout::Use(conn, slot) => {
                drop(dial_guard);
                return conn.send_reserved(slot, req).await;
            }
            Checkout::Busy(conn) => Some(conn),
            Checkout::Full => None,
        };
        let conn = match self.dial(&key, tls).await {
            Ok(conn) => conn,
            Err(e) => {
                drop(dial_guard);
                // Spreading is an optimization: a busy connection still serves.
                if let Some((conn, slot)) =
                    fallback.and_then(|c| c.try_reserve().map(|slot| (c, slot)))
                {
                    debug!(%key, error = %e, "extra HBONE connection failed; sharing a busy one");
                    return conn.send_reserved(slot, req).await;
                }
                self.inner.forget_if_unused(&key, entry);
                return Err(e);
            }
        };
        let slot = conn.try_reserve();
        conn.touch();
        lock(&entry.conns).push(conn.clone());
        drop(dial_guard);
        self.watch_idle(key, &entry, conn.clone());
        match slot {
            Some(slot) => conn.send_reserved(slot, req).await,
            // A server advertising zero concurrent streams: send anyway and let
            // HTTP/2 queue the request rather than fail it.
            None => conn.send_connect(req).await,
        }
    }

    /// Number of open connections in the pool (for the pool-size metric).
    pub fn connections(&self) -> usize {
        self.count(|c| !c.is_closed())
    }

    /// Connections that can take new streams (open, no GOAWAY received).
    pub fn ready_connections(&self) -> usize {
        self.count(H2Connection::is_ready)
    }

    fn count(&self, pred: impl Fn(&H2Connection) -> bool) -> usize {
        let entries: Vec<Arc<Entry>> = lock(&self.inner.entries).values().cloned().collect();
        entries
            .iter()
            .map(|e| lock(&e.conns).iter().filter(|c| pred(c)).count())
            .sum()
    }

    fn entry(&self, key: &PoolKey) -> Arc<Entry> {
        let mut entries = lock(&self.inner.entries);
        if let Some(entry) = entries.get(key) {
            return entry.clone();
        }
        let entry = Arc::<Entry>::default();
        entries.insert(key.clone(), entry.clone());
        entry
    }

    async fn dial(
        &self,
        key: &PoolKey,
        tls: impl FnOnce() -> Result<Arc<rustls::ClientConfig>, TlsError>,
    ) -> Result<H2Connection, HboneError> {
        let tls = tls()?;
        let dst = key.dst;
        let timeout = self.inner.cfg.connect_timeout;
        let io = match tokio::time::timeout(timeout, self.inner.connector.connect(dst)).await {
            Err(_) => return Err(HboneError::ConnectTimeout { dst, timeout }),
            Ok(Err(e)) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(HboneError::ConnectTimeout { dst, timeout });
            }
            Ok(Err(source)) => return Err(HboneError::Connect { dst, source }),
            Ok(Ok(io)) => io,
        };
        debug!(%key, "dialed new HBONE connection");
        connect_to(ReadBuffered::new(io), Some(dst), tls, &self.inner.h2).await
    }

    /// Removes `conn` from the pool once it has been idle (not handed out) for
    /// the idle timeout, or as soon as it closes.
    fn watch_idle(&self, key: PoolKey, entry: &Arc<Entry>, conn: H2Connection) {
        let pool: Weak<Inner<C>> = Arc::downgrade(&self.inner);
        let entry = Arc::downgrade(entry);
        let idle = self.inner.cfg.idle_timeout;
        let mut pool_alive = self.inner.alive.subscribe();
        tokio::spawn(async move {
            let watched = conn.clone();
            let closed = watched.closed();
            tokio::pin!(closed);
            loop {
                let deadline = conn.last_used() + idle;
                tokio::select! {
                    _ = &mut closed => break,
                    _ = pool_alive.changed() => return,
                    _ = tokio::time::sleep_until(deadline.into()) => {
                        if conn.last_used() + idle <= std::time::Instant::now() {
                            debug!(%key, "evicting idle HBONE connection");
                            break;
                        }
                    }
                }
            }
            let (Some(pool), Some(entry)) = (pool.upgrade(), entry.upgrade()) else {
                return;
            };
            lock(&entry.conns).retain(|c| !c.same_connection(&conn));
            pool.forget_if_unused(&key, entry);
        });
    }
}

impl<C: Connector> fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("connections", &self.connections())
            .finish()
    }
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves the
/// data consistent, so a panic elsewhere cannot leave it half-updated.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
