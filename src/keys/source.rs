//! Where a key name's master-key versions come from: its secret in the
//! store, the KMS that wraps them, and how a version's value is read.

use std::sync::Arc;

use super::error::Error;
use super::master_key::{self, KdfParams, MasterKey};
use super::rotation::ensure_initial_version;
use crate::backends::kms::Kms;
use crate::backends::kms::local::LocalKms;
use crate::backends::store::local::LocalStore;
use crate::backends::store::{SecretStore, VersionInfo};

/// Where a key name's master-key versions come from and how they are read.
pub struct KeySource {
    /// The key name.
    pub name: String,
    /// The secret holding its versions.
    pub secret_id: String,
    /// The secret store.
    pub store: Arc<dyn SecretStore>,
    /// The KMS that wraps master keys.
    pub kms: Arc<dyn Kms>,
    /// PBKDF2 parameters for passphrase-style secrets.
    pub kdf: KdfParams,
    /// Refuse records under versions created before this version.
    pub min_version: Option<String>,
    /// The key's blind indexes.
    pub indexes: Vec<crate::primitives::blind_index::IndexSpec>,
    /// Versions marked compromised by configuration (beside the secret's
    /// compromise labels, which a writer of the secret could remove).
    pub compromised: Vec<String>,
    /// Let Decrypt open records under compromised versions (a migration
    /// window; each such call is audited and counted).
    pub allow_compromised_decrypts: bool,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySource")
            .field("name", &self.name)
            .field("secret_id", &self.secret_id)
            .field("kdf", &self.kdf)
            .finish_non_exhaustive()
    }
}

impl KeySource {
    /// A source with no PBKDF2 parameters (Envelope's own secret shape).
    pub fn new(
        name: &str,
        secret_id: &str,
        store: Arc<dyn SecretStore>,
        kms: Arc<dyn Kms>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            secret_id: secret_id.to_owned(),
            store,
            kms,
            kdf: KdfParams::default(),
            min_version: None,
            indexes: Vec::new(),
            compromised: Vec::new(),
            allow_compromised_decrypts: false,
        }
    }

    /// A source backed by a local store and root key in `dir`, with a first
    /// version created if there is none: for trials, tests and benches.
    pub async fn open_local(dir: &std::path::Path, name: &str) -> Result<Self, Error> {
        let store: Arc<dyn SecretStore> = Arc::new(LocalStore::open(&dir.join("secrets"))?);
        let kms: Arc<dyn Kms> = Arc::new(LocalKms::open_or_create(&dir.join("root.key"))?);
        ensure_initial_version(store.as_ref(), kms.as_ref(), name, name).await?;
        Ok(Self::new(name, name, store, kms))
    }

    /// Fetches and reads one version named by `info`.
    pub(super) async fn load_version(&self, info: VersionInfo) -> Result<MasterKey, Error> {
        let value = self.store.get(&self.secret_id, &info.id).await?;
        let info = VersionInfo {
            created: value.info.created.or(info.created),
            ..info
        };
        self.parse(info, &value.value).await
    }

    /// Reads a version's secret value into a master key.
    pub(super) async fn parse(&self, info: VersionInfo, value: &str) -> Result<MasterKey, Error> {
        Ok(master_key::load(
            &self.name,
            &self.secret_id,
            info,
            value,
            self.kms.as_ref(),
            &self.kdf,
        )
        .await?)
    }
}
