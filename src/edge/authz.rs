//! Least privilege per key (seed 000): a policy file maps caller identities
//! (exact or `prefix*` patterns) to key names and operations. It reloads
//! without restart; a malformed policy is refused and the old one kept.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use serde::Deserialize;

/// What a caller may do with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Encrypt, EncryptBatch.
    Encrypt,
    /// Decrypt, DecryptBatch.
    Decrypt,
    /// Rewrap, RewrapBatch.
    Rewrap,
    /// GenerateDataKey and UnwrapDataKey: holding data keys.
    GenerateDataKey,
    /// The Admin service.
    Admin,
}

impl Operation {
    /// The name used in policies and audit lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Encrypt => "encrypt",
            Operation::Decrypt => "decrypt",
            Operation::Rewrap => "rewrap",
            Operation::GenerateDataKey => "generate_data_key",
            Operation::Admin => "admin",
        }
    }
}

/// A policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Grants; anything not granted is denied.
    #[serde(default)]
    pub allow: Vec<Grant>,
}

/// One grant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Caller identities: exact, or a prefix ending in `*`.
    #[serde(default)]
    pub callers: Vec<String>,
    /// Also grant calls that carry no verified identity (plaintext, or TLS
    /// without a client certificate). For test benches and local use only.
    #[serde(default)]
    pub anonymous: bool,
    /// Key names: exact, a prefix ending in `*`, or `*` for every key.
    pub keys: Vec<String>,
    /// Operations granted.
    pub operations: Vec<Operation>,
}

fn matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

impl Policy {
    /// Parses and checks a policy document.
    pub fn parse(text: &str) -> Result<Self, String> {
        let p: Policy = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        for (i, g) in p.allow.iter().enumerate() {
            if (g.callers.is_empty() && !g.anonymous)
                || g.keys.is_empty()
                || g.operations.is_empty()
            {
                return Err(format!(
                    "grant {} needs callers (or anonymous = true), keys and operations",
                    i + 1
                ));
            }
            if g.callers.iter().any(|c| c.is_empty() || c == "*") {
                return Err(format!(
                    "grant {}: a caller pattern must name an identity or a non-empty prefix",
                    i + 1
                ));
            }
        }
        Ok(p)
    }

    /// Whether `caller` may do `op` with `key`.
    pub fn allows(&self, caller: Option<&str>, op: Operation, key: &str) -> bool {
        self.allow.iter().any(|g| {
            g.operations.contains(&op)
                && match caller {
                    Some(c) => g.callers.iter().any(|p| matches(p, c)),
                    None => g.anonymous,
                }
                && g.keys.iter().any(|k| matches(k, key))
        })
    }

    fn grants_anonymous(&self) -> bool {
        self.allow.iter().any(|g| g.anonymous)
    }

    /// Whether `caller` may do `op` with some key.
    fn allows_any(&self, caller: Option<&str>, op: Operation) -> bool {
        self.allow.iter().any(|g| {
            g.operations.contains(&op)
                && match caller {
                    Some(c) => g.callers.iter().any(|p| matches(p, c)),
                    None => g.anonymous,
                }
        })
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Denied {
    /// No verified identity, where the policy needs one.
    #[error("the call carries no client certificate identity; connect with mTLS")]
    Unauthenticated,
    /// The identity is not granted the operation on the key.
    #[error("caller {caller:?} may not {op} with key {key:?}")]
    PermissionDenied {
        /// The caller.
        caller: String,
        /// The operation.
        op: &'static str,
        /// The key name.
        key: String,
    },
}

/// What happens when no policy file is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Default {
    /// Local mode: every call is allowed.
    Allow,
    /// AWS mode: every call is denied.
    Deny,
}

/// Decides calls against the current policy and counts refusals.
#[derive(Debug)]
pub struct Authorizer {
    path: Option<PathBuf>,
    default: Default,
    policy: ArcSwapOption<Policy>,
    stamp: std::sync::Mutex<Option<SystemTime>>,
    /// Calls refused for lack of an identity.
    pub unauthenticated: AtomicU64,
    /// Calls refused by the policy.
    pub denied: AtomicU64,
}

impl Authorizer {
    /// An authorizer over `path` (read now; a bad file fails start-up).
    pub fn new(path: Option<PathBuf>, default: Default) -> Result<Self, String> {
        let a = Self {
            path,
            default,
            policy: ArcSwapOption::empty(),
            stamp: std::sync::Mutex::new(None),
            unauthenticated: AtomicU64::new(0),
            denied: AtomicU64::new(0),
        };
        if let Some(p) = &a.path {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read policy {}: {e}", p.display()))?;
            let policy =
                Policy::parse(&text).map_err(|e| format!("policy {}: {e}", p.display()))?;
            a.policy.store(Some(Arc::new(policy)));
            if let Ok(mut s) = a.stamp.lock() {
                *s = modified(p);
            }
        }
        Ok(a)
    }

    /// Re-reads the policy file if it changed; a malformed one is refused
    /// and the old policy kept.
    pub fn reload_if_changed(&self) {
        let Some(path) = &self.path else { return };
        let now = modified(path);
        let Ok(mut stamp) = self.stamp.lock() else {
            return;
        };
        if *stamp == now {
            return;
        }
        *stamp = now;
        match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| Policy::parse(&t))
        {
            Ok(p) => {
                self.policy.store(Some(Arc::new(p)));
                tracing::info!(policy = %path.display(), "authorization policy reloaded");
            }
            Err(e) => {
                tracing::error!(policy = %path.display(), error = %e, "new policy refused; keeping the previous one")
            }
        }
    }

    /// Whether a TLS client must present a certificate: true unless the
    /// policy at start grants something to anonymous callers (or there is
    /// no policy and everything is allowed).
    pub fn requires_identity(&self) -> bool {
        match self.policy.load().as_ref() {
            Some(p) => !p.grants_anonymous(),
            None => self.default == Default::Deny,
        }
    }

    /// The check made from the request headers, before any message is read:
    /// refuses a caller who may not do `op` with any key at all. The check
    /// per key still follows once the request names its key.
    pub fn check_any(&self, identity: Option<&str>, op: Operation) -> Result<(), Denied> {
        let policy = self.policy.load();
        let allowed = match policy.as_ref() {
            Some(p) => p.allows_any(identity, op),
            None => self.default == Default::Allow,
        };
        if allowed {
            return Ok(());
        }
        // The same refusal, and the same counting, as for a named key.
        self.check(identity, op, "*")
    }

    /// Decides one call.
    pub fn check(&self, identity: Option<&str>, op: Operation, key: &str) -> Result<(), Denied> {
        let policy = self.policy.load();
        let Some(policy) = policy.as_ref() else {
            return match self.default {
                Default::Allow => Ok(()),
                Default::Deny => {
                    self.denied.fetch_add(1, Ordering::Relaxed);
                    Err(Denied::PermissionDenied {
                        caller: identity.unwrap_or("anonymous").to_owned(),
                        op: op.as_str(),
                        key: key.to_owned(),
                    })
                }
            };
        };
        if policy.allows(identity, op, key) {
            return Ok(());
        }
        match identity {
            None if !policy.grants_anonymous() => {
                self.unauthenticated.fetch_add(1, Ordering::Relaxed);
                Err(Denied::Unauthenticated)
            }
            caller => {
                self.denied.fetch_add(1, Ordering::Relaxed);
                Err(Denied::PermissionDenied {
                    caller: caller.unwrap_or("anonymous").to_owned(),
                    op: op.as_str(),
                    key: key.to_owned(),
                })
            }
        }
    }
}

fn modified(p: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[[allow]]
callers = ["spiffe://example.org/ns/billing/sa/api"]
keys = ["payments"]
operations = ["encrypt", "decrypt"]

[[allow]]
callers = ["spiffe://example.org/ns/etl/*"]
keys = ["*"]
operations = ["rewrap"]
"#;

    #[test]
    fn grants_are_exact_or_prefix_and_everything_else_is_denied() {
        let p = Policy::parse(POLICY).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.allows(
            Some("spiffe://example.org/ns/billing/sa/api"),
            Operation::Encrypt,
            "payments"
        ));
        assert!(!p.allows(
            Some("spiffe://example.org/ns/billing/sa/api"),
            Operation::Encrypt,
            "pii"
        ));
        assert!(!p.allows(
            Some("spiffe://example.org/ns/billing/sa/api"),
            Operation::Rewrap,
            "payments"
        ));
        assert!(!p.allows(
            Some("spiffe://example.org/ns/billing/sa/apix"),
            Operation::Encrypt,
            "payments"
        ));
        assert!(p.allows(
            Some("spiffe://example.org/ns/etl/sa/job"),
            Operation::Rewrap,
            "pii"
        ));
        assert!(!p.allows(
            Some("spiffe://example.org/ns/etl/sa/job"),
            Operation::Decrypt,
            "pii"
        ));
        assert!(!p.allows(
            Some("spiffe://example.org/ns/etl/sa/job"),
            Operation::Admin,
            "pii"
        ));
    }

    #[test]
    fn malformed_policies_are_refused() {
        for bad in [
            "[[allow]]\ncallers = []\nkeys = [\"*\"]\noperations = [\"encrypt\"]\n",
            "[[allow]]\ncallers = [\"*\"]\nkeys = [\"*\"]\noperations = [\"encrypt\"]\n",
            "[[allow]]\ncallers = [\"a\"]\nkeys = [\"*\"]\noperations = [\"launch\"]\n",
            "allow = 3",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_without_a_policy() {
        let open = Authorizer::new(None, Default::Allow).unwrap_or_else(|e| panic!("{e}"));
        assert!(open.check(None, Operation::Admin, "x").is_ok());
        let closed = Authorizer::new(None, Default::Deny).unwrap_or_else(|e| panic!("{e}"));
        assert!(closed.check(Some("a"), Operation::Encrypt, "x").is_err());
        assert_eq!(closed.denied.load(Ordering::Relaxed), 1);
    }
}
