//! The checks that span settings: ranges, consistency between modes,
//! TLS and policy, and each key's configuration.

use std::time::Duration;

use super::{ConfigError, Mode, Settings, invalid, valid_key_name};

impl Settings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        for k in &self.keys {
            if !valid_key_name(&k.name) {
                return Err(invalid(
                    "keys.name",
                    format!("{:?} must be 1-64 letters, digits, '-', '_' or '.'", k.name),
                ));
            }
            if !seen.insert(k.name.as_str()) {
                return Err(invalid(
                    "keys.name",
                    format!("{:?} is listed twice", k.name),
                ));
            }
            if let Some(v) = k
                .unwrapped_versions
                .iter()
                .find(|v| crate::primitives::record::VersionId::new(v).is_err())
            {
                return Err(invalid(
                    "keys.unwrapped_versions",
                    format!("{v:?} is not a version id (key {:?})", k.name),
                ));
            }
            validate_indexes(k)?;
        }
        let l = &self.limits;
        if !(1..=1 << 30).contains(&self.max_request_bytes) {
            return Err(invalid(
                "limits.max_request_bytes",
                "must be between 1 and 2^30",
            ));
        }
        if l.max_plaintext_bytes > self.max_request_bytes {
            return Err(invalid(
                "limits.max_plaintext_bytes",
                "must not exceed limits.max_request_bytes",
            ));
        }
        if self.max_batch_items == 0 || self.max_batch_items > 1_000_000 {
            return Err(invalid(
                "limits.max_batch_items",
                "must be between 1 and 1,000,000",
            ));
        }
        if l.context.max_entries > 1024 || l.context.max_bytes > 1 << 20 {
            return Err(invalid(
                "limits.max_context_*",
                "at most 1024 entries and 1 MiB",
            ));
        }
        if l.data_key.max_records == 0 || l.data_key.max_records > crate::keys::MAX_RECORDS_CEILING
        {
            return Err(invalid(
                "data_keys.max_records",
                "must be between 1 and 2^32 (NIST SP 800-38D)",
            ));
        }
        if l.data_key.max_bytes < l.max_plaintext_bytes as u64 {
            return Err(invalid(
                "data_keys.max_bytes",
                "must be at least limits.max_plaintext_bytes",
            ));
        }
        if l.data_key.max_age.is_zero() {
            return Err(invalid("data_keys.max_age_secs", "must be positive"));
        }
        if l.max_loaded_versions < 3 || l.decrypt_cache_entries == 0 {
            return Err(invalid(
                "limits",
                "max_loaded_versions >= 3 and decrypt_cache_entries >= 1",
            ));
        }
        if log_filter(&self.log_level).is_none() {
            return Err(invalid(
                "log_level",
                format!(
                    "{:?} is not a tracing filter such as \"info\" or \"envelope=debug\" \
                     (field filters in braces are not accepted)",
                    self.log_level
                ),
            ));
        }
        for k in &self.keys {
            if let Some(id) = &k.secret_id
                && (id.is_empty() || id.len() > 2048)
            {
                return Err(invalid(
                    "keys.secret_id",
                    format!("secret id of key {:?} must be 1-2048 bytes", k.name),
                ));
            }
        }
        if self.tls.is_none() && !self.insecure_plaintext {
            if self.mode == Mode::Aws {
                return Err(invalid(
                    "tls",
                    "AWS mode serves only over TLS: configure [tls] (or, for a test bench, insecure_plaintext = true)",
                ));
            }
            if !self.listen.ip().is_loopback() {
                return Err(invalid(
                    "listen",
                    format!(
                        "plaintext gRPC only on a loopback address, not {}: configure [tls]",
                        self.listen
                    ),
                ));
            }
        }
        if self
            .tls
            .as_ref()
            .is_some_and(|t| t.reload_interval.is_zero())
        {
            return Err(invalid("tls.reload_interval_secs", "must be at least 1"));
        }
        if self.max_concurrent_requests == 0 || self.max_concurrent_requests > 100_000 {
            return Err(invalid(
                "limits.max_concurrent_requests",
                "must be between 1 and 100,000",
            ));
        }
        self.validate_transport()?;
        if self.request_timeout.is_zero() {
            return Err(invalid("limits.request_timeout_secs", "must be positive"));
        }
        if !(1..=86_400).contains(&self.limits.compromised_window.as_secs()) {
            return Err(invalid(
                "limits.compromised_window_secs",
                "must be between 1 and 86,400",
            ));
        }
        if let Some(a) = &self.aws {
            if a.kms_key_id.as_deref().is_none_or(str::is_empty) {
                return Err(invalid(
                    "aws.kms_key_id",
                    "AWS mode needs the KMS key (id, ARN or alias) that wraps master keys",
                ));
            }
            if !(1..=10).contains(&a.max_attempts) {
                return Err(invalid("aws.max_attempts", "must be between 1 and 10"));
            }
            if a.connect_timeout.is_zero()
                || a.attempt_timeout.is_zero()
                || a.operation_timeout.is_zero()
            {
                return Err(invalid("aws.*_timeout_secs", "timeouts must be positive"));
            }
        }
        for k in &self.keys {
            if let Some(v) = &k.min_decryption_version
                && crate::primitives::record::VersionId::new(v).is_err()
            {
                return Err(invalid(
                    "keys.min_decryption_version",
                    format!(
                        "{v:?} is not a version id (a UUID, or 1-64 printable ASCII characters)"
                    ),
                ));
            }
            if let Some(v) = k
                .compromised_versions
                .iter()
                .find(|v| crate::primitives::record::VersionId::new(v).is_err())
            {
                return Err(invalid(
                    "keys.compromised_versions",
                    format!(
                        "{v:?} is not a version id (a UUID, or 1-64 printable ASCII characters)"
                    ),
                ));
            }
            if k.compromised_versions.len() > 100 {
                return Err(invalid("keys.compromised_versions", "at most 100 versions"));
            }
            if k.kdf_iterations.is_some_and(|i| {
                !(crate::primitives::crypto::PBKDF2_MIN_ITERATIONS..=10_000_000).contains(&i)
            }) {
                return Err(invalid(
                    "keys.kdf_iterations",
                    format!(
                        "between {} and 10,000,000",
                        crate::primitives::crypto::PBKDF2_MIN_ITERATIONS
                    ),
                ));
            }
        }
        if self.max_staleness < self.refresh_interval {
            return Err(invalid(
                "max_staleness_secs",
                "must be at least refresh_interval_secs",
            ));
        }
        if self.refresh_interval < Duration::from_secs(1) {
            return Err(invalid("refresh_interval_secs", "must be at least 1"));
        }
        Ok(())
    }

    fn validate_transport(&self) -> Result<(), ConfigError> {
        let t = &self.transport;
        let positive = [
            ("limits.max_connections", t.max_connections as u64),
            (
                "limits.max_streams_per_connection",
                u64::from(t.max_streams_per_connection),
            ),
            (
                "limits.max_header_list_bytes",
                u64::from(t.max_header_list_bytes),
            ),
            (
                "limits.keepalive_interval_secs",
                t.keepalive_interval.as_secs(),
            ),
            (
                "limits.keepalive_timeout_secs",
                t.keepalive_timeout.as_secs(),
            ),
            (
                "limits.max_connection_age_secs",
                t.max_connection_age.as_secs(),
            ),
            (
                "limits.tls_handshake_timeout_secs",
                t.handshake_timeout.as_secs(),
            ),
            ("limits.max_streams", t.max_streams as u64),
            (
                "limits.max_streams_per_caller",
                t.max_streams_per_caller as u64,
            ),
            (
                "limits.stream_idle_timeout_secs",
                t.stream_idle_timeout.as_secs(),
            ),
            (
                "limits.message_read_timeout_secs",
                t.message_read_timeout.as_secs(),
            ),
        ];
        for (setting, v) in positive {
            if v == 0 {
                return Err(invalid(setting, "must be positive"));
            }
        }
        if t.max_streams_per_caller > t.max_streams {
            return Err(invalid(
                "limits.max_streams_per_caller",
                "must not be above limits.max_streams",
            ));
        }
        if t.request_bytes_budget < self.max_request_bytes {
            return Err(invalid(
                "limits.request_bytes_budget",
                format!(
                    "must hold at least one message of limits.max_request_bytes ({} bytes)",
                    self.max_request_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// Each index of `k`: a valid, unique name, 8 to 256 bits, and scope entries
/// that are non-empty and listed once.
fn validate_indexes(k: &super::KeyConfig) -> Result<(), ConfigError> {
    use crate::primitives::blind_index::{MAX_BITS, MIN_BITS};
    let mut names = std::collections::BTreeSet::new();
    for i in &k.indexes {
        if !valid_key_name(&i.name) {
            return Err(invalid(
                "keys.indexes.name",
                format!(
                    "{:?} (key {:?}) must be 1-64 letters, digits, '-', '_' or '.'",
                    i.name, k.name
                ),
            ));
        }
        if !names.insert(i.name.as_str()) {
            return Err(invalid(
                "keys.indexes.name",
                format!("{:?} is listed twice for key {:?}", i.name, k.name),
            ));
        }
        if !(MIN_BITS..=MAX_BITS).contains(&i.bits) {
            return Err(invalid(
                "keys.indexes.bits",
                format!(
                    "{} (index {:?} of key {:?}) must be between {MIN_BITS} and {MAX_BITS}",
                    i.bits, i.name, k.name
                ),
            ));
        }
        let mut scope = std::collections::BTreeSet::new();
        if let Some(bad) = i
            .scope
            .iter()
            .find(|s| s.is_empty() || !scope.insert(s.as_str()))
        {
            return Err(invalid(
                "keys.indexes.scope",
                format!(
                    "{bad:?} (index {:?} of key {:?}) is empty or listed twice",
                    i.name, k.name
                ),
            ));
        }
    }
    Ok(())
}

/// The log filter `log_level` names. Field values in it match as plain
/// strings, not as regular expressions: a regex there compiles to a DFA
/// whose size can grow exponentially with the pattern (the `config` fuzz
/// target held 26 MB for a 104-byte setting), and a log filter needs none.
///
/// Field filters (`{field=value}`) are refused: in that plain-string mode
/// tracing-subscriber 0.3.23 never counts two field values equal
/// (`ValueMatch::eq` has no arm for them) while ordering them equal, and a
/// filter naming the same field twice fails its debug assertion (a `config`
/// fuzz finding, kept in fuzz/regressions/config/). Levels per target and
/// span names are enough to steer Envelope's logs.
///
/// Each directive is trimmed first: tracing-subscriber 0.3.23 scans a
/// trimmed directive but slices the untrimmed one with those offsets, which
/// panics when whitespace comes before a multi-byte character (a `config`
/// fuzz finding, kept in fuzz/regressions/config/).
pub(crate) fn log_filter(level: &str) -> Option<tracing_subscriber::EnvFilter> {
    if level.contains(['{', '}']) {
        return None;
    }
    let trimmed: Vec<&str> = level.split(',').map(str::trim).collect();
    tracing_subscriber::EnvFilter::builder()
        .with_regex(false)
        .parse(trimmed.join(","))
        .ok()
}
