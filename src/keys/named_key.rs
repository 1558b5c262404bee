//! One key name: its source, limits and the three pieces of state the
//! request path reads without a lock — the loaded versions
//! ([`super::versions`]), the data key in use for sealing
//! ([`super::seal`]) and the decryption cache ([`super::decrypt_cache`]).
//! The operations are in [`super::seal`], [`super::open`] and
//! [`super::client_keys`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;

use super::data_key::DataKey;
use super::decrypt_cache::DecryptCache;
use super::error::Error;
use super::key_set::KeySet;
use super::limits::Limits;
use super::master_key::{self, MasterKey};
use super::rotation::Rotator;
use super::source::KeySource;
use crate::primitives::context::{self, Context};
use crate::primitives::crypto::KeyBytes;
use crate::primitives::record::{self, Kind, Parsed, WRAPPED_LEN};
use crate::primitives::wrap;

/// One key name.
pub struct NamedKey {
    pub(super) source: KeySource,
    /// The name again, shared with metric labels (no allocation per request).
    label: Arc<str>,
    pub(super) key_id: [u8; record::KEY_ID_LEN],
    pub(super) limits: Limits,
    pub(super) versions: super::versions::Versions,
    /// The data key sealing records now.
    pub(super) active: ArcSwapOption<DataKey>,
    /// Held while a new data key is made (single flight).
    pub(super) data_key_lock: tokio::sync::Mutex<()>,
    pub(super) data_keys_generated: AtomicU64,
    pub(super) cache: DecryptCache,
    rotation_failures: AtomicU64,
    /// Records opened per master-key version.
    pub(super) usage: super::usage::Usage,
}

impl std::fmt::Debug for NamedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedKey")
            .field("name", &self.source.name)
            .field("secret_id", &self.source.secret_id)
            .finish_non_exhaustive()
    }
}

/// Figures for KeyStatus and the metrics.
#[derive(Debug, Clone)]
pub struct CacheFigures {
    /// Failed refreshes since start.
    pub refresh_failures: u64,
    /// Failed rotations started by this process since start.
    pub rotation_failures: u64,
    /// Data keys generated for encryption since start.
    pub data_keys_generated: u64,
    /// Records sealed under the active data key.
    pub active_records: u64,
    /// Entries in the decryption cache.
    pub decrypt_entries: u64,
    /// Decryption cache hits.
    pub hits: u64,
    /// Decryption cache misses.
    pub misses: u64,
    /// Decryption cache evictions.
    pub evictions: u64,
}

impl NamedKey {
    /// Loads a key name's versions from the store; fails if it has no usable AWSCURRENT.
    pub async fn load(source: KeySource, limits: Limits) -> Result<Self, Error> {
        let versions = super::versions::Versions::load(&source, &limits).await?;
        Ok(Self {
            key_id: record::key_id(&source.name),
            label: source.name.as_str().into(),
            versions,
            active: ArcSwapOption::empty(),
            data_key_lock: tokio::sync::Mutex::new(()),
            data_keys_generated: AtomicU64::new(0),
            cache: DecryptCache::new(limits.decrypt_cache_entries),
            rotation_failures: AtomicU64::new(0),
            usage: super::usage::Usage::new(limits.compromised_window),
            source,
            limits,
        })
    }

    /// Records opened per master-key version, and when each was last read.
    pub fn version_use(&self) -> Vec<super::usage::UseFigures> {
        self.usage.figures()
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.source.name
    }

    /// The key name as a shared string, for metric labels.
    pub fn label(&self) -> Arc<str> {
        self.label.clone()
    }

    /// The secret that holds this key's versions.
    pub fn secret_id(&self) -> &str {
        &self.source.secret_id
    }

    /// Time since the store was last read successfully.
    pub fn staleness(&self) -> Duration {
        self.versions.staleness()
    }

    /// Why the last refresh failed (a refused version names its reason),
    /// until a refresh succeeds.
    pub fn last_refresh_error(&self) -> Option<String> {
        self.versions.last_failure()
    }

    /// The current snapshot of versions.
    pub fn snapshot(&self) -> Arc<KeySet> {
        self.versions.snapshot()
    }

    /// Re-reads the store. Keeps loaded versions (no KMS call for them) and
    /// versions fetched on demand; on failure the old snapshot stays.
    pub async fn refresh(&self) -> Result<(), Error> {
        self.versions.refresh(&self.source, &self.limits).await
    }

    /// Runs the four rotation steps on this key's secret, then reloads it so
    /// the new version encrypts here at once. Returns (previous, new) versions.
    pub async fn rotate(&self) -> Result<(String, String), Error> {
        let rotator = Rotator {
            store: self.source.store.as_ref(),
            kms: self.source.kms.as_ref(),
            key_name: &self.source.name,
            secret_id: &self.source.secret_id,
        };
        let versions = rotator.rotate().await.inspect_err(|_| {
            self.rotation_failures.fetch_add(1, Ordering::Relaxed);
        })?;
        self.refresh().await?;
        Ok(versions)
    }

    /// Cache figures for KeyStatus.
    pub fn figures(&self) -> CacheFigures {
        let (decrypt_entries, hits, misses, evictions) = self.cache.figures();
        CacheFigures {
            refresh_failures: self.versions.refresh_failures(),
            rotation_failures: self.rotation_failures.load(Ordering::Relaxed),
            data_keys_generated: self.data_keys_generated.load(Ordering::Relaxed),
            active_records: self.active.load().as_ref().map_or(0, |d| {
                d.records_used().min(self.limits.data_key.max_records)
            }),
            decrypt_entries,
            hits,
            misses,
            evictions,
        }
    }

    /// The master-key version named by a record's raw version bytes.
    pub(crate) async fn master_for(&self, raw: &[u8]) -> Result<Arc<MasterKey>, Error> {
        self.versions
            .master_for(&self.source, &self.limits, raw)
            .await
    }

    /// Refuses a version older than the key's `min_decryption_version`.
    pub(super) fn check_retired(
        &self,
        version: &str,
        created: Option<time::OffsetDateTime>,
    ) -> Result<(), Error> {
        self.versions
            .check_retired(&self.source.name, version, created)
    }

    /// Parses a record or blob of `kind` and checks it names this key.
    pub(super) fn parse<'a>(&self, input: &'a [u8], kind: Kind) -> Result<Parsed<'a>, Error> {
        let parsed = record::parse(input, kind)?;
        if parsed.key_id != self.key_id {
            return Err(Error::WrongKey(self.source.name.clone()));
        }
        Ok(parsed)
    }

    /// The canonical encoding of a validated context.
    pub(super) fn encode_context(&self, ctx: &Context) -> Result<Vec<u8>, Error> {
        let len = context::validate(ctx, self.limits.context)?;
        let mut out = Vec::with_capacity(len);
        context::encode_into(ctx, &mut out);
        Ok(out)
    }

    /// A record payload's associated data: key name and context.
    pub(super) fn payload_aad(&self, ctx: &Context, ctx_len: usize) -> Vec<u8> {
        let mut aad = Vec::with_capacity(24 + self.source.name.len() + ctx_len);
        record::payload_aad_prefix(&mut aad, &self.source.name);
        context::encode_into(ctx, &mut aad);
        aad
    }

    /// The associated data of a key wrapped under `master`.
    pub(super) fn wrap_aad(&self, master: &MasterKey, kind: Kind, ctx: Option<&[u8]>) -> Vec<u8> {
        record::wrap_aad(kind, &self.source.name, master.version.raw(), ctx)
    }

    /// A fresh data key from KMS for `purpose`, and its wrapping under
    /// `master` with `kind` and `ctx` bound.
    pub(super) async fn new_wrapped_key(
        &self,
        master: &MasterKey,
        kind: Kind,
        ctx: Option<&[u8]>,
        purpose: &str,
    ) -> Result<(KeyBytes, [u8; WRAPPED_LEN]), Error> {
        let mut kms_ctx = master_key::kms_context(&self.source.name, master.version.as_str());
        kms_ctx.insert("envelope:purpose".into(), purpose.into());
        let generated = self.source.kms.generate_data_key(&kms_ctx).await?;
        let wrapped = wrap::wrap(
            &master.kek,
            &generated.plaintext,
            &self.wrap_aad(master, kind, ctx),
        )?;
        self.usage.of(master.version.as_str()).wrapped();
        Ok((generated.plaintext, wrapped))
    }
}
