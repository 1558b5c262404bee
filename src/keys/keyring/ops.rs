//! The operations on one key name: seal, open, rewrap, and client data keys.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use zeroize::Zeroizing;

use super::{CachedKey, DataKey, NamedKey};
use crate::backends::kms::KmsContext;
use crate::keys::error::Error;
use crate::keys::master_key::MasterKey;
use crate::primitives::context;
use crate::primitives::crypto::{
    AeadKey, KEY_LEN, KeyBytes, NONCE_BYTES, fill_random, random_nonce,
};
use crate::primitives::record::{self, Kind, Parsed, RECORD_OVERHEAD_UUID, WRAPPED_LEN};

/// An encryption context as the API carries it.
pub type Context = BTreeMap<String, String>;

/// The records of [`NamedKey::encrypt_many`].
#[derive(Debug)]
pub struct Sealed {
    /// Every record, back to back.
    pub records: Bytes,
    /// Per item: its record's range in `records` and the index of its
    /// version in `versions`, or why it failed.
    pub results: Vec<Result<(Range<usize>, usize), Error>>,
    /// The master-key versions used, in order: one, unless the data key ran
    /// out mid-batch after a rotation (a batch checks the current version
    /// only when it takes a data key).
    pub versions: Vec<Arc<MasterKey>>,
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
}

/// Seals records one after another into one buffer.
struct SealBatch<'k> {
    key: &'k NamedKey,
    out: Vec<u8>,
    aad: Vec<u8>,
    aad_prefix: usize,
    data_key: Option<Arc<DataKey>>,
}

impl<'k> SealBatch<'k> {
    fn new(key: &'k NamedKey, capacity: usize) -> Self {
        let mut aad = Vec::with_capacity(64);
        record::payload_aad_prefix(&mut aad, &key.source.name);
        Self {
            key,
            out: Vec::with_capacity(capacity),
            aad_prefix: aad.len(),
            aad,
            data_key: None,
        }
    }

    /// The master-key version of the data key last used.
    fn version(&self) -> Option<&Arc<MasterKey>> {
        self.data_key.as_ref().map(|dk| &dk.master)
    }

    /// Appends one record; returns its range in `out`.
    async fn seal(&mut self, plaintext: &[u8], ctx: &Context) -> Result<Range<usize>, Error> {
        let limits = &self.key.limits;
        if plaintext.len() > limits.max_plaintext_bytes {
            return Err(Error::TooLarge {
                got: plaintext.len(),
                max: limits.max_plaintext_bytes,
            });
        }
        context::validate(ctx, limits.context)?;
        // The data key this batch already holds was checked for age and
        // for being current when the batch took it; later records only
        // count against its record and byte limits.
        let claimed = self
            .data_key
            .as_ref()
            .and_then(|dk| dk.claim_counted(plaintext.len(), &limits.data_key));
        let nonce = match claimed {
            Some(nonce) => nonce,
            None => {
                let (dk, nonce) = self.key.claim(plaintext.len()).await?;
                self.data_key = Some(dk);
                nonce
            }
        };
        let dk = self
            .data_key
            .as_ref()
            .ok_or(Error::Internal("no data key"))?;
        self.aad.truncate(self.aad_prefix);
        context::encode_into(ctx, &mut self.aad);
        let start = self.out.len();
        record::write_header(
            &mut self.out,
            Kind::Record,
            &self.key.key_id,
            &dk.master.version,
            &dk.wrapped,
        );
        self.out.extend_from_slice(&nonce);
        let body = self.out.len();
        self.out.extend_from_slice(plaintext);
        let sealed = match self.out.get_mut(body..) {
            Some(b) => dk.key.seal(nonce, &self.aad, b).map_err(Error::from),
            None => Err(Error::Internal("record buffer")),
        };
        match sealed {
            Ok(tag) => {
                self.out.extend_from_slice(&tag);
                Ok(start..self.out.len())
            }
            Err(e) => {
                // The plaintext was copied in: wipe it, not just forget it.
                if let Some(tail) = self.out.get_mut(start..) {
                    zeroize::Zeroize::zeroize(tail);
                }
                self.out.truncate(start);
                Err(e)
            }
        }
    }
}

impl NamedKey {
    /// Seals `plaintext` under the current master-key version.
    pub async fn encrypt(
        &self,
        plaintext: &[u8],
        ctx: &Context,
    ) -> Result<(Vec<u8>, Arc<MasterKey>), Error> {
        let capacity = plaintext.len().min(self.limits.max_plaintext_bytes) + RECORD_OVERHEAD_UUID;
        let mut batch = SealBatch::new(self, capacity);
        // The one record is the whole buffer.
        batch.seal(plaintext, ctx).await?;
        let master = batch
            .version()
            .cloned()
            .ok_or(Error::Internal("sealed without a version"))?;
        Ok((batch.out, master))
    }

    /// Seals many plaintexts, in order, back to back into one buffer: one
    /// allocation for the whole batch, one associated-data buffer reused,
    /// and the data key's age and the current version checked once per batch
    /// rather than per record. One failing item never fails the others.
    pub async fn encrypt_many<T>(
        &self,
        items: &[T],
        get: impl Fn(&T) -> (&[u8], &Context),
    ) -> Sealed {
        let capacity = items
            .iter()
            .map(|t| get(t).0.len().min(self.limits.max_plaintext_bytes) + RECORD_OVERHEAD_UUID)
            .sum();
        let mut batch = SealBatch::new(self, capacity);
        let mut results = Vec::with_capacity(items.len());
        let mut versions: Vec<Arc<MasterKey>> = Vec::with_capacity(1);
        for item in items {
            let (plaintext, ctx) = get(item);
            let r = batch.seal(plaintext, ctx).await;
            if let Some(v) = batch.version()
                && !versions.last().is_some_and(|last| Arc::ptr_eq(last, v))
            {
                versions.push(v.clone());
            }
            results.push(r.map(|range| (range, versions.len().saturating_sub(1))));
        }
        Sealed {
            records: Bytes::from(batch.out),
            results,
            versions,
        }
    }

    /// Opens a record; returns the plaintext and the version that wrapped its data key.
    pub async fn decrypt(
        &self,
        record: &[u8],
        ctx: &Context,
    ) -> Result<(Vec<u8>, Arc<str>), Error> {
        let ctx_len = context::validate(ctx, self.limits.context)?;
        let parsed = self.parse(record, Kind::Record)?;
        let cached = self.open_key(&parsed).await?;
        self.check_retired(&cached.version, cached.created)?;
        let aad = self.payload_aad(ctx, ctx_len);
        let mut out = vec![0u8; parsed.ciphertext.len()];
        cached
            .key
            .open(parsed.nonce, &aad, parsed.ciphertext, parsed.tag, &mut out)?;
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
        // Sized once so the buffer never reallocates: a reallocation would
        // leave an unwiped copy of plaintext behind.
        let capacity = items.iter().map(|t| get(t).0.len()).sum();
        let mut out = Zeroizing::new(Vec::with_capacity(capacity));
        let mut aad = Vec::with_capacity(64);
        record::payload_aad_prefix(&mut aad, &self.source.name);
        let prefix = aad.len();
        let mut last: Option<(&[u8], Arc<CachedKey>)> = None;
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let (record, ctx) = get(item);
            let r = async {
                context::validate(ctx, self.limits.context)?;
                let parsed = self.parse(record, Kind::Record)?;
                let cached = match &last {
                    Some((slot, key)) if *slot == parsed.wrap_slot => key.clone(),
                    _ => {
                        let key = self.open_key(&parsed).await?;
                        self.check_retired(&key.version, key.created)?;
                        last = Some((parsed.wrap_slot, key.clone()));
                        key
                    }
                };
                aad.truncate(prefix);
                context::encode_into(ctx, &mut aad);
                let start = out.len();
                let end = start + parsed.ciphertext.len();
                if end > out.capacity() {
                    return Err(Error::Internal("plaintext buffer"));
                }
                out.resize(end, 0);
                let opened = cached.key.open(
                    parsed.nonce,
                    &aad,
                    parsed.ciphertext,
                    parsed.tag,
                    out.get_mut(start..end)
                        .ok_or(Error::Internal("plaintext buffer"))?,
                );
                if let Err(e) = opened {
                    out.truncate(start);
                    return Err(e.into());
                }
                Ok((start..end, cached.version.clone()))
            }
            .await;
            results.push(r);
        }
        Opened {
            plaintexts: out,
            results,
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
        let ctx_len = context::validate(ctx, self.limits.context)?;
        let parsed = self.parse(record, Kind::Record)?;
        let current = self.state.load().current.clone();
        let old = self.master_for(parsed.version_raw).await?;
        self.check_retired(old.version.as_str(), old.created)?;
        let dk = self.unwrap(&old, Kind::Record, parsed.wrapped, None)?;
        let mut scratch = Zeroizing::new(vec![0u8; parsed.ciphertext.len()]);
        AeadKey::new(&dk)?.open(
            parsed.nonce,
            &self.payload_aad(ctx, ctx_len),
            parsed.ciphertext,
            parsed.tag,
            &mut scratch,
        )?;
        drop(scratch);
        if old.version == current.version {
            return Ok((record.to_vec(), current));
        }
        let wrapped = self.wrap(&current, Kind::Record, &dk, None)?;
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
        Ok((out, current))
    }

    /// A fresh data key for the caller, wrapped under the current version
    /// with `ctx` bound to the wrapping.
    pub async fn generate_data_key(
        &self,
        ctx: &Context,
    ) -> Result<(KeyBytes, Vec<u8>, Arc<MasterKey>), Error> {
        let ctx_enc = self.encode_context(ctx)?;
        let current = self.state.load().current.clone();
        let generated = self
            .source
            .kms
            .generate_data_key(&data_key_context(
                &self.source.name,
                current.version.as_str(),
                "client-data-key",
            ))
            .await?;
        let wrapped = self.wrap(
            &current,
            Kind::DataKey,
            &generated.plaintext,
            Some(&ctx_enc),
        )?;
        let mut blob = Vec::with_capacity(record::header_len(&current.version));
        record::write_header(
            &mut blob,
            Kind::DataKey,
            &self.key_id,
            &current.version,
            &wrapped,
        );
        Ok((generated.plaintext, blob, current))
    }

    /// Unwraps a blob from [`NamedKey::generate_data_key`] given the same context.
    pub async fn unwrap_data_key(
        &self,
        blob: &[u8],
        ctx: &Context,
    ) -> Result<(KeyBytes, Arc<MasterKey>), Error> {
        let ctx_enc = self.encode_context(ctx)?;
        let parsed = self.parse(blob, Kind::DataKey)?;
        let master = self.master_for(parsed.version_raw).await?;
        self.check_retired(master.version.as_str(), master.created)?;
        let key = self.unwrap(&master, Kind::DataKey, parsed.wrapped, Some(&ctx_enc))?;
        Ok((key, master))
    }

    fn parse<'a>(&self, input: &'a [u8], kind: Kind) -> Result<Parsed<'a>, Error> {
        let parsed = record::parse(input, kind)?;
        if parsed.key_id != self.key_id {
            return Err(Error::WrongKey(self.source.name.clone()));
        }
        Ok(parsed)
    }

    fn encode_context(&self, ctx: &Context) -> Result<Vec<u8>, Error> {
        let len = context::validate(ctx, self.limits.context)?;
        let mut out = Vec::with_capacity(len);
        context::encode_into(ctx, &mut out);
        Ok(out)
    }

    fn payload_aad(&self, ctx: &Context, ctx_len: usize) -> Vec<u8> {
        let mut aad = Vec::with_capacity(24 + self.source.name.len() + ctx_len);
        record::payload_aad_prefix(&mut aad, &self.source.name);
        context::encode_into(ctx, &mut aad);
        aad
    }

    /// The data key for one more record of `len` bytes, with its nonce.
    pub(super) async fn claim(
        &self,
        len: usize,
    ) -> Result<(Arc<DataKey>, [u8; NONCE_BYTES]), Error> {
        if let Some(claimed) = self.claim_active(len) {
            return Ok(claimed);
        }
        // Single flight: one task makes the next data key while others wait.
        let _guard = self.data_key_lock.lock().await;
        if let Some(claimed) = self.claim_active(len) {
            return Ok(claimed);
        }
        let current = self.state.load().current.clone();
        let dk = Arc::new(self.new_data_key(current).await?);
        self.active.store(Some(dk.clone()));
        let nonce = dk
            .claim(len, &self.limits.data_key)
            .ok_or(Error::Internal("a fresh data key refused its first record"))?;
        Ok((dk, nonce))
    }

    fn claim_active(&self, len: usize) -> Option<(Arc<DataKey>, [u8; NONCE_BYTES])> {
        let active = self.active.load();
        let dk = active.as_ref()?;
        // A rotation seen by this replica retires the data key at once.
        if dk.master.version != self.state.load().current.version {
            return None;
        }
        let nonce = dk.claim(len, &self.limits.data_key)?;
        Some((dk.clone(), nonce))
    }

    async fn new_data_key(&self, master: Arc<MasterKey>) -> Result<DataKey, Error> {
        let generated = self
            .source
            .kms
            .generate_data_key(&data_key_context(
                &self.source.name,
                master.version.as_str(),
                "record-data-key",
            ))
            .await?;
        let wrapped = self.wrap(&master, Kind::Record, &generated.plaintext, None)?;
        let key = Arc::new(AeadKey::new(&generated.plaintext)?);
        let mut prefix = [0u8; 4];
        fill_random(&mut prefix)?;
        // Records sealed here decrypt here without an unwrap.
        let mut slot = Vec::with_capacity(master.version.raw().len() + WRAPPED_LEN);
        slot.extend_from_slice(master.version.raw());
        slot.extend_from_slice(&wrapped);
        self.cache.insert(
            Bytes::from(slot),
            Arc::new(CachedKey {
                key: key.clone(),
                version: master.version.as_str().into(),
                created: master.created,
            }),
        );
        self.stats
            .data_keys_generated
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(key = %self.source.name, version = %master.version.as_str(), "new data key");
        Ok(DataKey::new(master, wrapped, key, prefix))
    }

    async fn open_key(&self, parsed: &Parsed<'_>) -> Result<Arc<CachedKey>, Error> {
        if let Some(hit) = self.cache.get(parsed.wrap_slot) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let master = self.master_for(parsed.version_raw).await?;
        let key = self.unwrap(&master, Kind::Record, parsed.wrapped, None)?;
        let cached = Arc::new(CachedKey {
            key: Arc::new(AeadKey::new(&key)?),
            version: master.version.as_str().into(),
            created: master.created,
        });
        self.cache
            .insert(Bytes::copy_from_slice(parsed.wrap_slot), cached.clone());
        Ok(cached)
    }

    fn wrap(
        &self,
        master: &MasterKey,
        kind: Kind,
        key: &KeyBytes,
        ctx: Option<&[u8]>,
    ) -> Result<[u8; WRAPPED_LEN], Error> {
        let nonce = random_nonce()?;
        let mut wrapped = [0u8; WRAPPED_LEN];
        let (n, rest) = wrapped.split_at_mut(NONCE_BYTES);
        let (body, tag_out) = rest.split_at_mut(KEY_LEN);
        n.copy_from_slice(&nonce);
        body.copy_from_slice(key.expose());
        let aad = record::wrap_aad(kind, &self.source.name, master.version.raw(), ctx);
        let tag = master.kek.seal(nonce, &aad, body)?;
        tag_out.copy_from_slice(&tag);
        Ok(wrapped)
    }

    fn unwrap(
        &self,
        master: &MasterKey,
        kind: Kind,
        wrapped: &[u8],
        ctx: Option<&[u8]>,
    ) -> Result<KeyBytes, Error> {
        if wrapped.len() != WRAPPED_LEN {
            return Err(Error::Unauthentic);
        }
        let (nonce, rest) = wrapped.split_at(NONCE_BYTES);
        let (body, tag) = rest.split_at(KEY_LEN);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| Error::Unauthentic)?;
        let aad = record::wrap_aad(kind, &self.source.name, master.version.raw(), ctx);
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        master.kek.open(nonce, &aad, body, tag, out.as_mut())?;
        Ok(KeyBytes::from_slice(out.as_ref())?)
    }
}

/// The KMS context for a data key: key name, master-key version and purpose.
fn data_key_context(key: &str, version: &str, purpose: &str) -> KmsContext {
    let mut ctx = crate::keys::master_key::kms_context(key, version);
    ctx.insert("envelope:purpose".into(), purpose.into());
    ctx
}
