//! HBONE settings. Defaults are upstream ztunnel's, so that a mixed mesh behaves
//! the same whichever proxy is on either end.

use std::time::Duration;

/// HTTP/2 settings for both ends of HBONE, plus the handshake and keepalive timers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Config {
    /// Initial stream window (`HTTP2_STREAM_WINDOW_SIZE`, 4 MiB).
    pub stream_window: u32,
    /// Initial connection window (`HTTP2_CONNECTION_WINDOW_SIZE`, 16 MiB).
    pub connection_window: u32,
    /// Max frame size (`HTTP2_FRAME_SIZE`, 1 MiB).
    pub max_frame_size: u32,
    /// Max header list size the client accepts (16 KiB).
    pub client_max_header_list: u32,
    /// Max header list size the server accepts (64 KiB).
    pub server_max_header_list: u32,
    /// Streams per pooled connection (`POOL_MAX_STREAMS_PER_CONNECTION`, 100); also
    /// the client's initial max send streams until the server's SETTINGS arrive.
    pub max_streams_per_connection: u16,
    /// SETTINGS_MAX_CONCURRENT_STREAMS the server advertises (200).
    pub server_max_concurrent_streams: u32,
    /// Bytes the server buffers per stream before applying backpressure (400 KiB).
    /// The client's is the stream window, so one window can be flushed at once.
    pub server_max_send_buffer: usize,
    /// Idle time before the first PING and between PONG and the next PING (10 s).
    pub keepalive_interval: Duration,
    /// How long to wait for a PONG before tearing the connection down (20 s).
    pub keepalive_timeout: Duration,
    /// Deadline for the TLS and HTTP/2 handshakes of a new connection (10 s), so a
    /// peer that stalls mid-handshake cannot hold a connection slot forever.
    pub handshake_timeout: Duration,
}

impl Default for H2Config {
    fn default() -> Self {
        H2Config {
            stream_window: 4 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            max_frame_size: 1024 * 1024,
            client_max_header_list: 16 * 1024,
            server_max_header_list: 64 * 1024,
            max_streams_per_connection: 100,
            server_max_concurrent_streams: 200,
            server_max_send_buffer: 400 * 1024,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Connection pool settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// A pooled connection not handed out for this long is dropped from the pool
    /// (`POOL_UNUSED_RELEASE_TIMEOUT`, 5 min); it closes once its last stream ends.
    pub idle_timeout: Duration,
    /// TCP connect timeout (10 s).
    pub connect_timeout: Duration,
    /// Connections per destination that concurrent streams are spread over
    /// before any is shared (1, ztunnel's: share one connection until full).
    /// A sidecar sets its data-plane thread count here.
    pub parallel_connections: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            idle_timeout: Duration::from_secs(5 * 60),
            connect_timeout: Duration::from_secs(10),
            parallel_connections: 1,
        }
    }
}
