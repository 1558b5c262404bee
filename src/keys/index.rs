//! Blind-index tokens of a key name (ComputeIndex): one token per value for
//! every master-key version that may still hold records, the current one
//! first, so a lookup during a rotation window matches rows written under
//! either. The set comes from the store's listing at the last refresh
//! (AWSCURRENT, AWSPREVIOUS and pinned versions, minus those retired by
//! `min_decryption_version` and a rotation's AWSPENDING version, pinned
//! before it holds records), so every replica answers alike.

use std::sync::Arc;

use bytes::Bytes;

use super::error::Error;
use super::master_key::MasterKey;
use super::named_key::NamedKey;
use crate::backends::store::{AWSCURRENT, AWSPENDING, AWSPREVIOUS};
use crate::primitives::blind_index::{self, IndexSpec};
use crate::primitives::context::Context;
use crate::primitives::crypto::MacKey;
use crate::primitives::record::VersionId;

/// A value's tokens: (master-key version, token), current version first.
pub type Tokens = Vec<(Arc<str>, Vec<u8>)>;

impl NamedKey {
    /// The index called `name`.
    pub fn index_spec(&self, name: &str) -> Result<&IndexSpec, Error> {
        self.source
            .indexes
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| Error::UnknownIndex {
                key: self.source.name.clone(),
                index: name.to_owned(),
            })
    }

    /// Checks a call that asks for tokens of `indexes` under `ctx` before
    /// any is charged or computed: the context within its limits, each index
    /// configured, and each index's scope entries present.
    pub fn check_index_request(&self, indexes: &[String], ctx: &Context) -> Result<(), Error> {
        if indexes.is_empty() {
            return Ok(());
        }
        crate::primitives::context::validate(ctx, self.limits.context)?;
        for name in indexes {
            let spec = self.index_spec(name)?;
            if let Some(entry) = spec.scope.iter().find(|e| !ctx.contains_key(*e)) {
                return Err(Error::ScopeMissing {
                    index: spec.name.clone(),
                    entry: entry.clone(),
                });
            }
        }
        Ok(())
    }

    /// The versions that may still hold records, current first, then the
    /// others newest first.
    pub async fn index_versions(&self) -> Result<Vec<Arc<MasterKey>>, Error> {
        let set = self.snapshot();
        let mut out = vec![set.current.clone()];
        let mut others: Vec<Arc<MasterKey>> = set
            .versions
            .values()
            .filter(|l| l.stages.iter().any(|s| s == AWSCURRENT || s == AWSPREVIOUS))
            .map(|l| l.master.clone())
            .collect();
        for id in &set.pinned {
            let Ok(v) = VersionId::new(id) else {
                continue;
            };
            // A rotation pins its new version at createSecret, but the
            // version holds no records until finishSecret makes it current.
            let pending = set.versions.get(v.raw()).is_some_and(|l| {
                l.stages.iter().any(|s| s == AWSPENDING)
                    && !l.stages.iter().any(|s| s == AWSCURRENT || s == AWSPREVIOUS)
            });
            if !pending {
                others.push(self.master_for(v.raw()).await?);
            }
        }
        others.sort_by_key(|m| std::cmp::Reverse(m.created));
        for m in others {
            let retired = self.check_retired(m.version.as_str(), m.created).is_err();
            if !retired && !out.iter().any(|o| o.version == m.version) {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The index key of `spec` under `master` for the scope entries of `ctx`.
    pub fn index_key(
        &self,
        master: &MasterKey,
        spec: &IndexSpec,
        ctx: &Context,
    ) -> Result<MacKey, Error> {
        let mut scope = Vec::with_capacity(spec.scope.len());
        for entry in &spec.scope {
            let value = ctx.get(entry).ok_or_else(|| Error::ScopeMissing {
                index: spec.name.clone(),
                entry: entry.clone(),
            })?;
            scope.push(value.as_str());
        }
        Ok(blind_index::index_key(
            &master.index_root,
            &self.source.name,
            spec,
            &scope,
        )?)
    }

    /// The tokens of `values` under index `index` for each of `versions`
    /// (from [`NamedKey::index_versions`]), for the scope entries in `ctx`:
    /// per value, its tokens in `versions` order, or why it has none. An
    /// unknown index or a missing scope entry fails the call.
    pub fn compute_index(
        &self,
        index: &str,
        ctx: &Context,
        values: &[Bytes],
        versions: &[Arc<MasterKey>],
    ) -> Result<Vec<Result<Tokens, Error>>, Error> {
        let spec = self.index_spec(index)?;
        crate::primitives::context::validate(ctx, self.limits.context)?;
        let keys = versions
            .iter()
            .map(|m| {
                let key = self.index_key(m, spec, ctx)?;
                Ok((Arc::<str>::from(m.version.as_str()), key))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        // Normalized values are plaintext: wiped when the call ends.
        let mut normalized = zeroize::Zeroizing::new(Vec::with_capacity(64));
        Ok(values
            .iter()
            .map(|v| {
                blind_index::normalize(spec.normalize, v, &mut normalized)?;
                Ok(keys
                    .iter()
                    .map(|(version, key)| {
                        (
                            version.clone(),
                            blind_index::token(key, &normalized, spec.bits),
                        )
                    })
                    .collect())
            })
            .collect())
    }
}

/// Index keys derived within one call, by index, version and scope values,
/// so a batch derives each once. Bounded: cleared past [`TokenKeys::MAX`].
#[derive(Debug, Default)]
pub struct TokenKeys {
    keys: Vec<(String, Arc<str>, Vec<String>, MacKey)>,
}

impl TokenKeys {
    /// Most keys kept at once.
    pub const MAX: usize = 64;
}

/// A record's tokens: index name to token.
pub type RecordTokens = std::collections::BTreeMap<String, Bytes>;

impl NamedKey {
    /// [`NamedKey::write_tokens`] with the scope taken from the record's
    /// context; none asked, none computed.
    pub fn context_tokens(
        &self,
        indexes: &[String],
        master: &MasterKey,
        ctx: &Context,
        plaintext: &[u8],
        cache: &mut TokenKeys,
    ) -> Result<RecordTokens, Error> {
        if indexes.is_empty() {
            return Ok(RecordTokens::new());
        }
        let scope = |e: &str| ctx.get(e).map(String::as_str);
        self.write_tokens(indexes, master, scope, plaintext, cache)
    }

    /// The tokens of `plaintext` for `indexes` under `master` (the version
    /// that wrote the record); `scope(entry)` gives a scope entry's value
    /// from the record's context. An unknown index, a missing scope entry
    /// or a value with no token fails.
    pub fn write_tokens<'c>(
        &self,
        indexes: &[String],
        master: &MasterKey,
        scope: impl Fn(&str) -> Option<&'c str>,
        plaintext: &[u8],
        cache: &mut TokenKeys,
    ) -> Result<RecordTokens, Error> {
        let mut out = RecordTokens::new();
        let mut normalized = zeroize::Zeroizing::new(Vec::new());
        for name in indexes {
            let spec = self.index_spec(name)?;
            let mut values = Vec::with_capacity(spec.scope.len());
            for entry in &spec.scope {
                let v = scope(entry).ok_or_else(|| Error::ScopeMissing {
                    index: spec.name.clone(),
                    entry: entry.clone(),
                })?;
                values.push(v.to_owned());
            }
            let version = master.version.as_str();
            let found = cache
                .keys
                .iter()
                .position(|(i, v, s, _)| i == name && &**v == version && *s == values);
            let at = match found {
                Some(at) => at,
                None => {
                    if cache.keys.len() >= TokenKeys::MAX {
                        cache.keys.clear();
                    }
                    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                    let key =
                        blind_index::index_key(&master.index_root, &self.source.name, spec, &refs)?;
                    cache
                        .keys
                        .push((name.clone(), Arc::from(version), values, key));
                    cache.keys.len() - 1
                }
            };
            blind_index::normalize(spec.normalize, plaintext, &mut normalized)?;
            let key = cache
                .keys
                .get(at)
                .map(|(_, _, _, k)| k)
                .ok_or(Error::Internal("index key cache"))?;
            let token = blind_index::token(key, &normalized, spec.bits);
            out.insert(name.clone(), Bytes::from(token));
        }
        Ok(out)
    }
}
