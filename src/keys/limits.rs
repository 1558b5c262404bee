//! Bounds on what one key name may hold and accept.

use std::time::Duration;

use super::data_key::DataKeyLimits;
use crate::primitives::context::ContextLimits;

/// Bounds on what a key name may hold and accept.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest plaintext accepted.
    pub max_plaintext_bytes: usize,
    /// Context limits.
    pub context: ContextLimits,
    /// Data-key reuse limits.
    pub data_key: DataKeyLimits,
    /// Unwrapped data keys held for decryption, per key name.
    pub decrypt_cache_entries: usize,
    /// Versions held per key name, staged ones included.
    pub max_loaded_versions: usize,
    /// How long a version the store did not have is remembered as missing.
    pub negative_cache_ttl: Duration,
    /// The window of the gauge of records under compromised versions that
    /// the server is still asked to open (it shows one to two windows).
    pub compromised_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // Below the 4 MiB message limit, so an oversize plaintext gets our
            // clear INVALID_ARGUMENT rather than the transport's OUT_OF_RANGE.
            max_plaintext_bytes: 4 * 1024 * 1024 - 64 * 1024,
            context: ContextLimits::default(),
            data_key: DataKeyLimits::default(),
            decrypt_cache_entries: 10_000,
            max_loaded_versions: 32,
            negative_cache_ttl: Duration::from_secs(30),
            compromised_window: Duration::from_secs(60),
        }
    }
}
