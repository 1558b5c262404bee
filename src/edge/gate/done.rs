//! What a finished call reports for its audit line.

/// What a finished call reports for its audit line.
#[derive(Debug, Default)]
pub struct Done {
    /// The master-key version used.
    pub version: String,
    /// (items, failed items) for a batch.
    pub batch: Option<(usize, usize)>,
    /// Records opened under compromised versions, and what became of them.
    pub compromised: Option<(u64, &'static str)>,
    /// The operator's reason (MarkCompromised).
    pub reason: Option<String>,
}

/// How the audit line flags records opened under a compromised version.
pub const REENCRYPTED: &str = "re-encrypted from a compromised version";
/// The same, for a decrypt in a key's migration window.
pub const DECRYPTED: &str = "decrypted under a compromised version (allow_compromised_decrypts)";

impl Done {
    /// A unary call that used `version`.
    pub fn version(version: &str) -> Self {
        Self {
            version: version.to_owned(),
            ..Self::default()
        }
    }

    /// This summary, flagging `n` records opened under compromised
    /// versions as `what` (nothing when `n` is 0).
    pub fn flag(self, n: u64, what: &'static str) -> Self {
        Self {
            compromised: (n > 0).then_some((n, what)),
            ..self
        }
    }
}
