//! The reasons of `envelope_refused_calls_total`.

/// Why a call, stream or connection was refused: the `reason` label of
/// `envelope_refused_calls_total` (docs/OPERATIONS.md). Every reason's
/// series exists from start-up, at zero, so `increase()` sees the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No verified identity where the policy needs one.
    Unauthenticated,
    /// The policy grants the caller no such operation, key or context.
    PermissionDenied,
    /// `max_connections` open already.
    MaxConnections,
    /// A TLS handshake failed.
    TlsHandshake,
    /// A TLS handshake took longer than `tls_handshake_timeout_secs`.
    TlsHandshakeTimeout,
    /// No HTTP/2 preface within its timeout.
    PrefaceTimeout,
    /// The request-byte budget is spent.
    RequestBytesBudget,
    /// A message took longer than `message_read_timeout_secs` to arrive.
    MessageReadTimeout,
    /// `max_streams` open in total.
    MaxStreams,
    /// `max_streams_per_caller` open for this caller.
    MaxStreamsPerCaller,
    /// A stream idle past `stream_idle_timeout_secs`.
    StreamIdleTimeout,
    /// Index tokens asked on write without an `index` grant.
    IndexNotGranted,
    /// Past the caller's blind-index quota.
    IndexQuota,
    /// In `audit.on_failure = "refuse"` mode, a refused call's audit line
    /// found the queue full and was dropped.
    AuditLineNotQueued,
}

impl Refusal {
    /// Every reason, in the order of docs/OPERATIONS.md.
    pub const ALL: [Refusal; 14] = [
        Self::Unauthenticated,
        Self::PermissionDenied,
        Self::MaxConnections,
        Self::TlsHandshake,
        Self::TlsHandshakeTimeout,
        Self::PrefaceTimeout,
        Self::RequestBytesBudget,
        Self::MessageReadTimeout,
        Self::MaxStreams,
        Self::MaxStreamsPerCaller,
        Self::StreamIdleTimeout,
        Self::IndexNotGranted,
        Self::IndexQuota,
        Self::AuditLineNotQueued,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::MaxConnections => "max_connections",
            Self::TlsHandshake => "tls_handshake",
            Self::TlsHandshakeTimeout => "tls_handshake_timeout",
            Self::PrefaceTimeout => "preface_timeout",
            Self::RequestBytesBudget => "request_bytes_budget",
            Self::MessageReadTimeout => "message_read_timeout",
            Self::MaxStreams => "max_streams",
            Self::MaxStreamsPerCaller => "max_streams_per_caller",
            Self::StreamIdleTimeout => "stream_idle_timeout",
            Self::IndexNotGranted => "index_not_granted",
            Self::IndexQuota => "index_quota",
            Self::AuditLineNotQueued => "audit_line_not_queued",
        }
    }
}
