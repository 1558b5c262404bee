//! One consistent view of a key name's master-key versions, and how it is
//! read from the secret store.

use std::collections::HashMap;
use std::sync::Arc;

use time::OffsetDateTime;

use super::error::Error;
use super::limits::Limits;
use super::master_key::{MasterKey, MasterKeyError};
use super::source::KeySource;
use crate::backends::store::{
    AWSCURRENT, AWSPENDING, AWSPREVIOUS, COMPROMISED_PREFIX, PIN_PREFIX, VersionInfo,
};
use crate::primitives::record::VersionId;

/// The stages whose versions are loaded at every refresh.
pub const LOADED_STAGES: [&str; 3] = [AWSCURRENT, AWSPREVIOUS, AWSPENDING];

/// A loaded version with the stages it had at the last refresh.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The version's key.
    pub master: Arc<MasterKey>,
    /// Its stages (empty for a version fetched on demand).
    pub stages: Vec<String>,
}

/// One consistent view of a key name's versions.
#[derive(Debug)]
pub struct KeySet {
    /// Versions by their record encoding.
    pub versions: HashMap<Box<[u8]>, Loaded>,
    /// The AWSCURRENT version.
    pub current: Arc<MasterKey>,
    /// When the store was last read successfully.
    pub loaded_at: OffsetDateTime,
    /// Versions carrying a pin label at the last refresh.
    pub pinned: Vec<String>,
    /// Records under versions created before this instant are refused
    /// (the key's `min_decryption_version`).
    pub retired_before: Option<OffsetDateTime>,
    /// Versions marked compromised, sorted: by a label in the store, by
    /// configuration, or in an earlier snapshot of this process (a removed
    /// label does not unmark a version).
    pub compromised: Vec<String>,
    /// Whether AWSCURRENT is among them (nothing is encrypted then).
    pub current_compromised: bool,
    /// Versions this process used as AWSCURRENT before `current`, oldest
    /// first (at most [`MAX_FORMER`]): AWSCURRENT never moves back to one,
    /// even where creation dates cannot tell them apart (Secrets Manager's
    /// are to the second).
    pub formerly_current: Vec<String>,
}

/// How many former AWSCURRENT versions a key set remembers.
pub const MAX_FORMER: usize = 64;

impl Loaded {
    /// This version without its stages: kept although no stage names it now.
    pub(super) fn unstaged(&self) -> Self {
        Self {
            master: self.master.clone(),
            stages: Vec::new(),
        }
    }
}

impl KeySet {
    /// This set with `versions` in place of its own.
    pub(super) fn with_versions(&self, versions: HashMap<Box<[u8]>, Loaded>) -> Self {
        Self {
            versions,
            current: self.current.clone(),
            loaded_at: self.loaded_at,
            pinned: self.pinned.clone(),
            retired_before: self.retired_before,
            compromised: self.compromised.clone(),
            current_compromised: self.current_compromised,
            formerly_current: self.formerly_current.clone(),
        }
    }
}

/// Drops versions with no stage, oldest first, until at most `keep` remain.
pub(super) fn evict_unstaged(versions: &mut HashMap<Box<[u8]>, Loaded>, keep: usize) {
    while versions.len() > keep {
        let oldest = versions
            .iter()
            .filter(|(_, l)| l.stages.is_empty())
            .min_by_key(|(_, l)| l.master.created)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => {
                versions.remove(&k);
            }
            None => break,
        }
    }
}

/// Reads the staged versions of a secret into a [`KeySet`], reusing what
/// `old` already holds.
pub(super) async fn read_set(
    source: &KeySource,
    old: Option<&KeySet>,
    limits: &Limits,
) -> Result<KeySet, Error> {
    let (name, secret_id) = (source.name.as_str(), source.secret_id.as_str());
    let infos = source.store.describe(secret_id).await?;
    let pinned: Vec<String> = infos
        .iter()
        .filter(|i| i.stages.iter().any(|s| s.starts_with(PIN_PREFIX)))
        .map(|i| i.id.clone())
        .collect();
    // A label marks the version it names, whichever version carries it
    // (failing closed if a label was moved).
    let mut compromised: Vec<String> = infos
        .iter()
        .flat_map(|i| i.stages.iter())
        .filter_map(|s| s.strip_prefix(COMPROMISED_PREFIX))
        .map(str::to_owned)
        .chain(source.compromised.iter().cloned())
        .chain(old.into_iter().flat_map(|o| o.compromised.iter().cloned()))
        .collect();
    compromised.sort();
    compromised.dedup();
    let mut versions: HashMap<Box<[u8]>, Loaded> = HashMap::new();
    let mut current = None;
    for info in infos
        .into_iter()
        .filter(|i| LOADED_STAGES.iter().any(|s| i.has(s)))
    {
        let is_current = info.has(AWSCURRENT);
        let raw: Box<[u8]> = match VersionId::new(&info.id) {
            Ok(v) => v.raw().into(),
            Err(e) => {
                let e = Error::MasterKey(MasterKeyError::Malformed {
                    secret: secret_id.to_owned(),
                    version: info.id.clone(),
                    reason: e.to_string(),
                });
                if is_current {
                    return Err(e);
                }
                tracing::warn!(key = %name, error = %e, "skipping master-key version with an unusable id");
                continue;
            }
        };
        let reused = old
            .and_then(|o| o.versions.get(&raw))
            .map(|l| l.master.clone());
        let master = match reused {
            Some(m) => m,
            None => {
                let loaded = source.load_version(info.clone()).await;
                match loaded {
                    Ok(m) => Arc::new(m),
                    // Only AWSCURRENT is required; a bad PREVIOUS or PENDING must not stop service.
                    Err(e) if !is_current => {
                        tracing::warn!(key = %name, version = %info.id, error = %e, "skipping unreadable master-key version");
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if is_current {
            if let Some(other) = &current {
                // Secrets Manager keeps one AWSCURRENT; two means a broken
                // store or emulator. Keep the first, deterministically.
                tracing::warn!(key = %name, first = ?other, second = %info.id, "two versions carry AWSCURRENT; using the first");
            } else {
                current = Some(master.clone());
            }
        }
        versions.insert(
            raw,
            Loaded {
                master,
                stages: info.stages,
            },
        );
    }
    let current = current.ok_or_else(|| Error::NoCurrent(name.to_owned()))?;
    if let Some(o) = old {
        for (raw, l) in &o.versions {
            if !versions.contains_key(raw) {
                versions.insert(raw.clone(), l.unstaged());
            }
        }
    }
    evict_unstaged(&mut versions, limits.max_loaded_versions);
    let retired_before = match (&source.min_version, old.and_then(|o| o.retired_before)) {
        (None, _) => None,
        // The minimum is fixed for the life of the process: resolve it once.
        (Some(_), Some(known)) => Some(known),
        (Some(min), None) => {
            let raw = VersionId::new(min)?.raw().to_vec();
            let created = match versions.get(raw.as_slice()) {
                Some(l) => l.master.created,
                None => {
                    let info = VersionInfo {
                        id: min.clone(),
                        stages: Vec::new(),
                        created: None,
                    };
                    source.load_version(info).await?.created
                }
            };
            let malformed = |reason: String| {
                Error::MasterKey(MasterKeyError::Malformed {
                    secret: secret_id.to_owned(),
                    version: min.clone(),
                    reason,
                })
            };
            let created = created.ok_or_else(|| {
                malformed(
                    "min_decryption_version: the store does not say when this version was created"
                        .into(),
                )
            })?;
            Some(created)
        }
    };
    // Retiring AWSCURRENT's own predecessors is the point; a retired (or
    // undated) AWSCURRENT would seal records the server then refuses to open.
    // Checked at every refresh, so moving AWSCURRENT back past the minimum
    // is refused and the key keeps its previous versions.
    if let Some(before) = retired_before
        && current.created.is_none_or(|c| c < before)
    {
        return Err(Error::MasterKey(MasterKeyError::Malformed {
            secret: secret_id.to_owned(),
            version: current.version.as_str().to_owned(),
            reason: "AWSCURRENT is older than min_decryption_version (or undated); it is not used to encrypt"
                .into(),
        }));
    }
    // No rollback: once this replica has seen a version as AWSCURRENT, it
    // never moves to an older one (a writer of the secret who moves the
    // stage back to an old or compromised version gains nothing). A restart
    // forgets, for an operator who means it.
    let back_to_former = old.is_some_and(|o| {
        o.current.version != current.version
            && o.formerly_current
                .iter()
                .any(|v| v == current.version.as_str())
    });
    if let Some(seen) = old.map(|o| &o.current)
        && (back_to_former
            || matches!((current.created, seen.created), (Some(now), Some(before)) if now < before))
    {
        return Err(Error::MasterKey(MasterKeyError::Malformed {
            secret: secret_id.to_owned(),
            version: current.version.as_str().to_owned(),
            reason: format!(
                "AWSCURRENT moved back to a version older than {}, which this replica has already encrypted under; refused (restart to accept a deliberate rollback)",
                seen.version.as_str()
            ),
        }));
    }
    // A compromised AWSCURRENT (a rotation not yet done, or a writer moving
    // the stage back to it) still serves reads; encryption is refused.
    let current_compromised = compromised.iter().any(|v| v == current.version.as_str());
    if current_compromised {
        tracing::error!(key = %name, version = %current.version.as_str(), "AWSCURRENT is marked compromised: encryption is refused until a rotation makes another version current");
    }
    let mut formerly_current = old.map(|o| o.formerly_current.clone()).unwrap_or_default();
    if let Some(o) = old
        && o.current.version != current.version
    {
        formerly_current.push(o.current.version.as_str().to_owned());
        if formerly_current.len() > MAX_FORMER {
            formerly_current.remove(0);
        }
    }
    Ok(KeySet {
        versions,
        current,
        loaded_at: OffsetDateTime::now_utc(),
        pinned,
        retired_before,
        compromised,
        current_compromised,
        formerly_current,
    })
}
