//! Opening: records one at a time or a batch into one wiped buffer, with
//! the data key from the decryption cache or unwrapped under the version the
//! record names; and rewrapping a record's data key under the current
//! version without touching its payload.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use zeroize::Zeroizing;

use super::compromise::Use;
use super::decrypt_cache::CachedKey;
use super::error::Error;
use super::index::{RecordTokens, TokenKeys};
use super::master_key::MasterKey;
use super::named_key::NamedKey;
use super::usage;
use crate::primitives::context::{self, Context};
use crate::primitives::crypto::{AeadKey, KeyBytes};
use crate::primitives::record::WRAPPED_LEN;
use crate::primitives::record::{self, Kind, Parsed};
use crate::primitives::wrap;

/// What one Rewrap call (or batch) keeps between its records: index keys,
/// and each data key already rewrapped (its old wrap, the version, the key,
/// its new wrap), so records of one data key cost one unwrap and one wrap.
/// Bounded by [`RewrapCache::MAX`]; the keys are wiped on drop.
#[derive(Debug, Default)]
pub struct RewrapCache {
    /// Index keys derived so far.
    pub tokens: TokenKeys,
    #[allow(clippy::type_complexity)]
    wraps: Vec<(Box<[u8]>, Arc<str>, KeyBytes, [u8; WRAPPED_LEN])>,
}

impl RewrapCache {
    /// Most data keys kept.
    pub const MAX: usize = 256;
}

/// A master-key version id, shared.
pub type Version = Arc<str>;

/// The plaintexts of [`NamedKey::decrypt_many`].
#[derive(Debug)]
pub struct Opened {
    /// Every plaintext, back to back; wiped on drop.
    pub plaintexts: Zeroizing<Vec<u8>>,
    /// Per item: its plaintext's range and the version that wrapped its
    /// data key, or why it failed.
    pub results: Vec<Result<(Range<usize>, Version), Error>>,
    /// Records opened under versions marked compromised (only where the
    /// use allows it: re-encryption, or a key's migration window).
    pub compromised: u64,
}

impl NamedKey {
    /// Opens a record; returns the plaintext and the version that wrapped its data key.
    pub async fn decrypt(
        &self,
        record: &[u8],
        ctx: &Context,
    ) -> Result<(Vec<u8>, Arc<str>), Error> {
        let ctx_len = context::validate(ctx, self.limits.context)?;
        let parsed = self.parse(record, Kind::Record)?;
        let cached = self.open_key(&parsed).await?;
        let compromised = self.check_use(&cached.version, cached.created, Use::Open)?;
        let aad = self.payload_aad(ctx, ctx_len);
        let mut out = vec![0u8; parsed.ciphertext.len()];
        cached
            .key
            .open(parsed.nonce, &aad, parsed.ciphertext, parsed.tag, &mut out)?;
        cached.usage.record(1, usage::now());
        if compromised {
            cached.usage.compromised(usage::Outcome::Decrypted, 1);
        }
        Ok((out, cached.version.clone()))
    }

    /// Opens many records, in order, into one buffer that is wiped when
    /// dropped. Consecutive records under the same data key (the usual case:
    /// they were sealed together) skip the cache lookup.
    pub async fn decrypt_many<T>(
        &self,
        items: &[T],
        get: impl Fn(&T) -> (&[u8], &Context),
    ) -> Opened {
        self.open_many(Use::Open, items, get).await
    }

    /// [`Self::decrypt_many`] for `usage`.
    pub(super) async fn open_many<T>(
        &self,
        usage: Use,
        items: &[T],
        get: impl Fn(&T) -> (&[u8], &Context),
    ) -> Opened {
        let limits = self.limits.context;
        self.open_each(usage, items.iter().map(|t| get(t).0), |i, aad| {
            let ctx = items
                .get(i)
                .map(|t| get(t).1)
                .ok_or(Error::Internal("item"))?;
            context::validate(ctx, limits)?;
            context::encode_into(ctx, aad);
            Ok(())
        })
        .await
    }

    /// Opens `records` in order for `usage`; `encode(i, aad)` appends
    /// record i's context encoding (after the key name's prefix) or refuses it.
    pub(super) async fn open_each<'r>(
        &self,
        usage: Use,
        records: impl ExactSizeIterator<Item = &'r [u8]> + Clone,
        mut encode: impl FnMut(usize, &mut Vec<u8>) -> Result<(), Error>,
    ) -> Opened {
        // Sized once so the buffer never reallocates: a reallocation would
        // leave an unwiped copy of plaintext behind.
        let capacity = records.clone().map(<[u8]>::len).sum();
        let mut out = Zeroizing::new(Vec::with_capacity(capacity));
        let mut aad = Vec::with_capacity(64);
        record::payload_aad_prefix(&mut aad, &self.source.name);
        let prefix = aad.len();
        let mut last: Option<(&[u8], Arc<CachedKey>, bool)> = None;
        let mut results = Vec::with_capacity(records.len());
        let now = usage::now();
        let mut compromised = 0;
        let outcome = match usage {
            Use::Reencrypt => usage::Outcome::Reencrypted,
            _ => usage::Outcome::Decrypted,
        };
        for (i, record) in records.enumerate() {
            let r = async {
                aad.truncate(prefix);
                encode(i, &mut aad)?;
                let parsed = self.parse(record, Kind::Record)?;
                let (cached, flagged) = match &last {
                    Some((slot, key, flagged)) if *slot == parsed.wrap_slot => {
                        (key.clone(), *flagged)
                    }
                    _ => {
                        let key = self.open_key(&parsed).await?;
                        let flagged = self.check_use(&key.version, key.created, usage)?;
                        last = Some((parsed.wrap_slot, key.clone(), flagged));
                        (key, flagged)
                    }
                };
                let start = out.len();
                let end = start + parsed.ciphertext.len();
                if end > out.capacity() {
                    return Err(Error::Internal("plaintext buffer"));
                }
                // Opened in place where it lands: one copy, no zero fill.
                out.extend_from_slice(parsed.ciphertext);
                let opened = match out.get_mut(start..end) {
                    Some(dst) => cached
                        .key
                        .open_in_place(parsed.nonce, &aad, parsed.tag, dst),
                    None => Err(crate::primitives::crypto::CryptoError::Primitive),
                };
                if let Err(e) = opened {
                    // open_in_place wiped what it was given.
                    out.truncate(start);
                    return Err(e.into());
                }
                cached.usage.record(1, now);
                if flagged {
                    cached.usage.compromised(outcome, 1);
                    compromised += 1;
                }
                Ok((start..end, cached.version.clone()))
            }
            .await;
            results.push(r);
        }
        Opened {
            plaintexts: out,
            results,
            compromised,
        }
    }

    /// Moves a record's data key to the current master-key version after
    /// checking the record opens under `ctx`. The payload is not re-encrypted
    /// and its plaintext is wiped here. A record already current is returned as is.
    pub async fn rewrap(
        &self,
        record: &[u8],
        ctx: &Context,
    ) -> Result<(Vec<u8>, Arc<MasterKey>), Error> {
        let (out, master, _) = self
            .rewrap_indexed(record, ctx, &[], &mut RewrapCache::default())
            .await?;
        Ok((out, master))
    }

    /// [`NamedKey::rewrap`], with the tokens of `indexes` of the record's
    /// plaintext under the version that now wraps it, computed from the
    /// plaintext opened here (which never leaves this function).
    pub async fn rewrap_indexed(
        &self,
        record: &[u8],
        ctx: &Context,
        indexes: &[String],
        cache: &mut RewrapCache,
    ) -> Result<(Vec<u8>, Arc<MasterKey>, RecordTokens), Error> {
        let ctx_len = context::validate(ctx, self.limits.context)?;
        let parsed = self.parse(record, Kind::Record)?;
        let current = self.versions.current();
        let old = self.master_for(parsed.version_raw).await?;
        self.check_use(old.version.as_str(), old.created, Use::Rewrap)?;
        // Never move a record onto a compromised (or retired) AWSCURRENT.
        self.check_use(current.version.as_str(), current.created, Use::Seal)?;
        let RewrapCache {
            tokens: token_keys,
            wraps,
        } = cache;
        // Records of one data key share its wrap: unwrapped and wrapped
        // again once per call.
        let hit = wraps.iter().position(|(slot, v, _, _)| {
            **slot == *parsed.wrap_slot && **v == *current.version.as_str()
        });
        let fresh;
        let (dk, rewrapped): (&KeyBytes, Option<[u8; WRAPPED_LEN]>) =
            match hit.and_then(|i| wraps.get(i)) {
                Some((_, _, dk, w)) => (dk, Some(*w)),
                None => {
                    fresh = wrap::unwrap(
                        &old.kek,
                        parsed.wrapped,
                        &self.wrap_aad(&old, Kind::Record, None),
                    )?;
                    (&fresh, None)
                }
            };
        let mut scratch = Zeroizing::new(vec![0u8; parsed.ciphertext.len()]);
        AeadKey::new(dk)?.open(
            parsed.nonce,
            &self.payload_aad(ctx, ctx_len),
            parsed.ciphertext,
            parsed.tag,
            &mut scratch,
        )?;
        self.usage.of(old.version.as_str()).record(1, usage::now());
        let tokens = self.context_tokens(indexes, &current, ctx, &scratch, token_keys)?;
        drop(scratch);
        if old.version == current.version {
            return Ok((record.to_vec(), current, tokens));
        }
        let wrapped = match rewrapped {
            Some(w) => w,
            None => {
                let w = wrap::wrap(
                    &current.kek,
                    dk,
                    &self.wrap_aad(&current, Kind::Record, None),
                )?;
                self.usage.of(current.version.as_str()).wrapped();
                if wraps.len() < RewrapCache::MAX {
                    let dk = KeyBytes::from_slice(dk.expose())?;
                    wraps.push((
                        parsed.wrap_slot.into(),
                        current.version.as_str().into(),
                        dk,
                        w,
                    ));
                }
                w
            }
        };
        let payload = record
            .get(parsed.header_len..)
            .ok_or(Error::Internal("record header"))?;
        let mut out = Vec::with_capacity(record::header_len(&current.version) + payload.len());
        record::write_header(
            &mut out,
            Kind::Record,
            &self.key_id,
            &current.version,
            &wrapped,
        );
        out.extend_from_slice(payload);
        Ok((out, current, tokens))
    }

    async fn open_key(&self, parsed: &Parsed<'_>) -> Result<Arc<CachedKey>, Error> {
        if let Some(hit) = self.cache.get(parsed.wrap_slot) {
            return Ok(hit);
        }
        let master = self.master_for(parsed.version_raw).await?;
        let key = wrap::unwrap(
            &master.kek,
            parsed.wrapped,
            &self.wrap_aad(&master, Kind::Record, None),
        )?;
        let cached = Arc::new(CachedKey {
            key: Arc::new(AeadKey::new(&key)?),
            version: master.version.as_str().into(),
            created: master.created,
            usage: self.usage.of(master.version.as_str()),
        });
        self.cache
            .insert(Bytes::copy_from_slice(parsed.wrap_slot), cached.clone());
        Ok(cached)
    }
}
