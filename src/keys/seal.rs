//! Sealing: records under the data key in use, one at a time or a batch
//! into one buffer, and the data key's life (claimed per record, replaced
//! when spent or when the current master-key version changes).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::data_key::DataKey;
use super::decrypt_cache::CachedKey;
use super::error::Error;
use super::master_key::MasterKey;
use super::named_key::NamedKey;
use crate::primitives::context::{self, Context};
use crate::primitives::crypto::{AeadKey, NONCE_BYTES, fill_random};
use crate::primitives::record::{self, Kind, RECORD_OVERHEAD_UUID, WRAPPED_LEN};

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

/// Seals records one after another into one buffer.
pub(super) struct SealBatch<'k> {
    key: &'k NamedKey,
    pub(super) out: Vec<u8>,
    aad: Vec<u8>,
    aad_prefix: usize,
    data_key: Option<Arc<DataKey>>,
    /// Seal every record under the version of the first one (a column
    /// answers with one version).
    pin: bool,
    pinned: Option<Arc<MasterKey>>,
    /// A data key and where a record header of it already is in `out`.
    header: Option<(Arc<DataKey>, Range<usize>)>,
}

impl<'k> SealBatch<'k> {
    pub(super) fn new(key: &'k NamedKey, capacity: usize) -> Self {
        let mut aad = Vec::with_capacity(64);
        record::payload_aad_prefix(&mut aad, &key.source.name);
        Self {
            key,
            out: Vec::with_capacity(capacity),
            aad_prefix: aad.len(),
            aad,
            data_key: None,
            pin: false,
            pinned: None,
            header: None,
        }
    }

    /// A batch whose records all name one master-key version.
    pub(super) fn pinned(key: &'k NamedKey, capacity: usize) -> Self {
        Self {
            pin: true,
            ..Self::new(key, capacity)
        }
    }

    /// The master-key version of the data key last used.
    pub(super) fn version(&self) -> Option<&Arc<MasterKey>> {
        self.data_key.as_ref().map(|dk| &dk.master)
    }

    /// Appends one record; returns its range in `out`.
    async fn seal(&mut self, plaintext: &[u8], ctx: &Context) -> Result<Range<usize>, Error> {
        let limits = self.key.limits.context;
        self.seal_with(plaintext, |aad| {
            context::validate(ctx, limits)?;
            context::encode_into(ctx, aad);
            Ok(())
        })
        .await
    }

    /// Appends one record whose context encoding `encode` appends (after the
    /// key name's prefix); returns its range in `out`.
    pub(super) async fn seal_with(
        &mut self,
        plaintext: &[u8],
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>,
    ) -> Result<Range<usize>, Error> {
        let limits = &self.key.limits;
        if plaintext.len() > limits.max_plaintext_bytes {
            return Err(Error::TooLarge {
                got: plaintext.len(),
                max: limits.max_plaintext_bytes,
            });
        }
        self.aad.truncate(self.aad_prefix);
        encode(&mut self.aad)?;
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
                let (dk, nonce) = match &self.pinned {
                    Some(master) => self.key.claim_under(master, plaintext.len()).await?,
                    None => self.key.claim(plaintext.len()).await?,
                };
                if self.pin && self.pinned.is_none() {
                    self.pinned = Some(dk.master.clone());
                }
                self.data_key = Some(dk);
                nonce
            }
        };
        let dk = self
            .data_key
            .as_ref()
            .ok_or(Error::Internal("no data key"))?;
        // Every record under one data key has the same header: written
        // once, then copied from the batch's first record under that key.
        let start = self.out.len();
        let written = match &self.header {
            Some((of, range)) if Arc::ptr_eq(of, dk) => {
                self.out.extend_from_within(range.clone());
                None
            }
            _ => {
                record::write_header(
                    &mut self.out,
                    Kind::Record,
                    &self.key.key_id,
                    &dk.master.version,
                    &dk.wrapped,
                );
                Some(start..self.out.len())
            }
        };
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
                if let Some(range) = written {
                    self.header = Some((dk.clone(), range));
                }
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

    /// The data key for one more record of `len` bytes, with its nonce.
    async fn claim(&self, len: usize) -> Result<(Arc<DataKey>, [u8; NONCE_BYTES]), Error> {
        if let Some(claimed) = self.claim_active(len) {
            return Ok(claimed);
        }
        // Single flight: one task makes the next data key while others wait.
        let _guard = self.data_key_lock.lock().await;
        if let Some(claimed) = self.claim_active(len) {
            return Ok(claimed);
        }
        let current = self.versions.current();
        let dk = Arc::new(self.new_data_key(current).await?);
        self.active.store(Some(dk.clone()));
        let nonce = dk
            .claim(len, &self.limits.data_key)
            .ok_or(Error::Internal("a fresh data key refused its first record"))?;
        Ok((dk, nonce))
    }

    /// [`Self::claim`], but under `master`: when the current version has
    /// moved on since a pinned batch began, a data key of its own under the
    /// batch's version (not shared, so other calls move on at once).
    async fn claim_under(
        &self,
        master: &Arc<MasterKey>,
        len: usize,
    ) -> Result<(Arc<DataKey>, [u8; NONCE_BYTES]), Error> {
        let (dk, nonce) = self.claim(len).await?;
        if dk.master.version == master.version {
            return Ok((dk, nonce));
        }
        let dk = Arc::new(self.new_data_key(master.clone()).await?);
        let nonce = dk
            .claim(len, &self.limits.data_key)
            .ok_or(Error::Internal("a fresh data key refused its first record"))?;
        Ok((dk, nonce))
    }

    fn claim_active(&self, len: usize) -> Option<(Arc<DataKey>, [u8; NONCE_BYTES])> {
        let active = self.active.load();
        let dk = active.as_ref()?;
        // A rotation seen by this replica retires the data key at once.
        if !self.versions.is_current(&dk.master.version) {
            return None;
        }
        let nonce = dk.claim(len, &self.limits.data_key)?;
        Some((dk.clone(), nonce))
    }

    async fn new_data_key(&self, master: Arc<MasterKey>) -> Result<DataKey, Error> {
        // Never seal under a version the key refuses to open, nor under a
        // compromised one (a pinned batch included).
        self.check_use(
            master.version.as_str(),
            master.created,
            super::compromise::Use::Seal,
        )?;
        let (plaintext, wrapped) = self
            .new_wrapped_key(&master, Kind::Record, None, "record-data-key")
            .await?;
        let key = Arc::new(AeadKey::new(&plaintext)?);
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
                usage: self.usage.of(master.version.as_str()),
            }),
        );
        self.data_keys_generated.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(key = %self.source.name, version = %master.version.as_str(), "new data key");
        Ok(DataKey::new(master, wrapped, key, prefix))
    }
}
