//! What a peer can make the server hold before it is authorized, and for
//! how long: connections, HTTP/2 streams, request bytes, stream lifetimes.
//! Every bound has a default and a `[limits]` setting (docs/CONFIG.md).

use std::time::Duration;

/// Bounds on the transport, applied before any call is authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportLimits {
    /// Open connections at most; a connection over it is closed at once.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_streams_per_connection: u32,
    /// Largest HTTP/2 header list accepted.
    pub max_header_list_bytes: u32,
    /// HTTP/2 PING interval on an idle connection.
    pub keepalive_interval: Duration,
    /// A connection whose PING is not answered within this is closed.
    pub keepalive_timeout: Duration,
    /// A connection is asked to go away after this long.
    pub max_connection_age: Duration,
    /// … and closed this long after that.
    pub max_connection_age_grace: Duration,
    /// Longest TLS handshake.
    pub handshake_timeout: Duration,
    /// Request bytes held by the server at once, over every call and stream:
    /// a message that would go over it is refused before it is buffered.
    pub request_bytes_budget: usize,
    /// EncryptStream and DecryptStream calls open at once.
    pub max_streams: usize,
    /// … of which one caller (identity, or remote address without one) may hold.
    pub max_streams_per_caller: usize,
    /// A stream with no new message for this long is reset.
    pub stream_idle_timeout: Duration,
    /// A message whose bytes take longer than this to arrive is refused.
    pub message_read_timeout: Duration,
    /// Locally caused stream resets a connection may trigger before it is
    /// closed (hyper's reset-flood guard, CVE-2023-44487 and kin).
    pub max_local_error_resets: usize,
    /// Streams a client may reset before the server accepts them.
    pub max_pending_accept_resets: usize,
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_streams_per_connection: 100,
            max_header_list_bytes: 16 * 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(3600),
            max_connection_age_grace: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(5),
            request_bytes_budget: 256 * 1024 * 1024,
            max_streams: 256,
            max_streams_per_caller: 32,
            stream_idle_timeout: Duration::from_secs(30),
            message_read_timeout: Duration::from_secs(10),
            max_local_error_resets: 1024,
            max_pending_accept_resets: 20,
        }
    }
}
