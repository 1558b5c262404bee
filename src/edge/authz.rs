//! Least privilege per key (seed 000): a policy file maps caller identities
//! (exact or `prefix*` patterns) to key names and operations. It reloads
//! without restart; a malformed policy is refused and the old one kept.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::index_quota::IndexQuota;
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
    /// GenerateDataKey: a fresh data key for the caller.
    GenerateDataKey,
    /// UnwrapDataKey: a data key back from its blob; as sensitive as decrypt.
    UnwrapDataKey,
    /// ComputeIndex: blind-index tokens of values (without decrypt), under a
    /// per-caller quota.
    Index,
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
            Operation::UnwrapDataKey => "unwrap_data_key",
            Operation::Index => "index",
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
    /// Context entries a call must carry, exactly, for this grant to apply
    /// (every item of a batch, every message of a stream); empty: any context.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
    /// Blind-index tokens this grant's callers may compute per second
    /// (default [`IndexQuota::DEFAULT`]).
    pub index_tokens_per_second: Option<u64>,
    /// ... and per day.
    pub index_tokens_per_day: Option<u64>,
}

impl Grant {
    fn admits(&self, ctx: &BTreeMap<String, String>) -> bool {
        self.context.iter().all(|(k, v)| ctx.get(k) == Some(v))
    }
}

/// What a granted call may carry: any context, or one that meets at least
/// one of the context requirements of the grants that matched.
#[derive(Debug)]
pub enum Scope {
    /// A matching grant has no context requirement.
    Any,
    /// Every matching grant requires context entries.
    Contexts(Arc<Policy>, Vec<usize>),
}

impl Scope {
    /// Whether `ctx` meets the scope.
    pub fn admits(&self, ctx: &BTreeMap<String, String>) -> bool {
        match self {
            Scope::Any => true,
            Scope::Contexts(policy, grants) => grants
                .iter()
                .filter_map(|i| policy.allow.get(*i))
                .any(|g| g.admits(ctx)),
        }
    }
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

    /// The grants that let `caller` do `op` with `key`, by index.
    fn matching<'a>(
        &'a self,
        caller: Option<&'a str>,
        op: Operation,
        key: &'a str,
    ) -> impl Iterator<Item = (usize, &'a Grant)> + 'a {
        self.allow.iter().enumerate().filter(move |(_, g)| {
            g.operations.contains(&op)
                && match caller {
                    Some(c) => g.callers.iter().any(|p| matches(p, c)),
                    None => g.anonymous,
                }
                && g.keys.iter().any(|k| matches(k, key))
        })
    }

    /// The index-token quota of `caller` on `key`: the most generous of the
    /// matching `index` grants (each defaulting to [`IndexQuota::DEFAULT`]).
    pub fn index_quota(&self, caller: Option<&str>, key: &str) -> Option<IndexQuota> {
        self.matching(caller, Operation::Index, key)
            .map(|(_, g)| IndexQuota {
                per_second: g
                    .index_tokens_per_second
                    .unwrap_or(IndexQuota::DEFAULT.per_second),
                per_day: g
                    .index_tokens_per_day
                    .unwrap_or(IndexQuota::DEFAULT.per_day),
            })
            .reduce(|a, b| IndexQuota {
                per_second: a.per_second.max(b.per_second),
                per_day: a.per_day.max(b.per_day),
            })
    }

    /// Whether `caller` may do `op` with `key` (in some context).
    pub fn allows(&self, caller: Option<&str>, op: Operation, key: &str) -> bool {
        self.matching(caller, op, key).next().is_some()
    }

    /// The grants that may read data keys for a producer that was given
    /// only `generate_data_key` before the two were split (for the start-up
    /// warning): their 1-based numbers.
    pub fn narrowed_grants(&self) -> Vec<usize> {
        self.allow
            .iter()
            .enumerate()
            .filter(|(_, g)| {
                g.operations.contains(&Operation::GenerateDataKey)
                    && !g.operations.contains(&Operation::UnwrapDataKey)
            })
            .map(|(i, _)| i + 1)
            .collect()
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
    /// The identity is granted the operation on the key only in contexts
    /// with entries the request (or one of its items) does not carry.
    #[error(
        "caller {caller:?} may {op} with key {key:?} only in the contexts its grants name; this request (or one of its items) carries another"
    )]
    ContextNotGranted {
        /// The caller.
        caller: String,
        /// The operation.
        op: &'static str,
        /// The key name.
        key: String,
    },
}

/// Warns of grants whose meaning narrowed when UnwrapDataKey got an
/// operation of its own.
fn warn_narrowed(path: &std::path::Path, policy: &Policy) {
    for n in policy.narrowed_grants() {
        tracing::warn!(
            policy = %path.display(),
            grant = n,
            "grant {n} allows generate_data_key but not unwrap_data_key: since Envelope 0.2 it no longer allows UnwrapDataKey; add \"unwrap_data_key\" to its operations if the caller must unwrap"
        );
    }
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
            warn_narrowed(p, &policy);
            a.policy.store(Some(Arc::new(policy)));
            if let Ok(mut s) = a.stamp.lock() {
                *s = modified(p);
            }
        }
        Ok(a)
    }

    /// The index-token quota of `identity` on `key` under the current policy
    /// ([`IndexQuota::DEFAULT`] without a policy file).
    /// `None` when a policy gives the caller no `index` grant on `key`: tokens
    /// on write need one too, or they would be an oracle without it.
    pub fn index_quota(&self, identity: Option<&str>, key: &str) -> Option<IndexQuota> {
        match self.policy.load().as_ref() {
            Some(p) => p.index_quota(identity, key),
            None => match self.default {
                Default::Allow => Some(IndexQuota::DEFAULT),
                Default::Deny => None,
            },
        }
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
                warn_narrowed(path, &p);
                self.policy.store(Some(Arc::new(p)));
                tracing::info!(policy = %path.display(), "authorization policy reloaded");
            }
            Err(e) => {
                tracing::error!(policy = %path.display(), error = %e, "new policy refused; keeping the previous one")
            }
        }
    }

    /// Counts and describes a refusal for a context outside the grants.
    pub fn context_denied(&self, identity: Option<&str>, op: Operation, key: &str) -> Denied {
        self.denied.fetch_add(1, Ordering::Relaxed);
        Denied::ContextNotGranted {
            caller: identity.unwrap_or("anonymous").to_owned(),
            op: op.as_str(),
            key: key.to_owned(),
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

    /// Decides one call, for any context.
    pub fn check(&self, identity: Option<&str>, op: Operation, key: &str) -> Result<(), Denied> {
        self.check_scoped(identity, op, key).map(|_| ())
    }

    /// Decides one call and says which contexts it may carry; the caller
    /// checks the request's contexts against the [`Scope`].
    pub fn check_scoped(
        &self,
        identity: Option<&str>,
        op: Operation,
        key: &str,
    ) -> Result<Scope, Denied> {
        let guard = self.policy.load();
        let Some(policy) = guard.as_ref() else {
            return match self.default {
                Default::Allow => Ok(Scope::Any),
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
        // The usual case, a grant without a context requirement, allocates nothing.
        let mut matched = false;
        for (_, g) in policy.matching(identity, op, key) {
            if g.context.is_empty() {
                return Ok(Scope::Any);
            }
            matched = true;
        }
        if matched {
            let grants = policy.matching(identity, op, key).map(|(i, _)| i).collect();
            return Ok(Scope::Contexts(policy.clone(), grants));
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
mod tests;
