//! A secret store in a local directory: one JSON file per secret, written
//! atomically with owner-only permissions. It follows Secrets Manager's
//! staging rules so rotation code runs unchanged against either.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{AWSCURRENT, AWSPREVIOUS, SecretStore, SecretValue, StoreError, VersionInfo};
use crate::backends::private_files::{check_private, create_private_dir, write_private};
use crate::primitives::crypto::constant_time_eq;

/// Secrets in `<dir>/<secret id>.json`.
#[derive(Debug)]
pub struct LocalStore {
    dir: PathBuf,
    // Serialises read-modify-write cycles within this process.
    lock: Arc<tokio::sync::Mutex<()>>,
}

/// Both locks of a read-modify-write cycle. The file write takes them into
/// its blocking task, so a caller that is cancelled mid-write (a deadline, a
/// client gone) cannot release them while the write still runs.
struct Held {
    _process: tokio::sync::OwnedMutexGuard<()>,
    _file: std::fs::File,
}

#[derive(Serialize, Deserialize, Default)]
struct SecretFile {
    versions: Vec<StoredVersion>,
}

#[derive(Serialize, Deserialize)]
struct StoredVersion {
    id: String,
    #[serde(with = "time::serde::rfc3339")]
    created: OffsetDateTime,
    stages: Vec<String>,
    value: String,
}

impl Drop for StoredVersion {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.value);
    }
}

fn valid_secret_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

impl LocalStore {
    /// A store in `dir`, created (mode 0700) if absent.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        create_private_dir(dir)
            .map_err(|e| e.to_string())
            .and_then(|()| check_private(dir))
            .map_err(|reason| StoreError::Unavailable {
                secret: dir.display().to_string(),
                reason,
            })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    fn path(&self, secret_id: &str) -> Result<PathBuf, StoreError> {
        if !valid_secret_id(secret_id) {
            return Err(StoreError::Malformed {
                secret: secret_id.to_owned(),
                reason: "local secret ids use only letters, digits, '-', '_' and '.'".into(),
            });
        }
        Ok(self.dir.join(format!("{secret_id}.json")))
    }

    async fn load(&self, secret_id: &str) -> Result<SecretFile, StoreError> {
        let path = self.path(secret_id)?;
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::SecretNotFound {
                    secret: secret_id.to_owned(),
                });
            }
            Err(e) => {
                return Err(StoreError::Unavailable {
                    secret: secret_id.to_owned(),
                    reason: e.to_string(),
                });
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Malformed {
            secret: secret_id.to_owned(),
            // serde_json's messages name positions and types, not values.
            reason: format!(
                "not a local secret file (line {}, column {})",
                e.line(),
                e.column()
            ),
        })
    }

    /// Takes the store's cross-process lock (flock on `<dir>/.lock`), so a CLI
    /// `rotate` or `init-keys` and a running server never interleave their
    /// read-modify-write cycles. Released when the returned file is dropped.
    async fn lock_file(&self, secret_id: &str) -> Result<std::fs::File, StoreError> {
        let path = self.dir.join(".lock");
        let unavailable = |e: std::io::Error| StoreError::Unavailable {
            secret: secret_id.to_owned(),
            reason: format!("cannot lock the store: {e}"),
        };
        tokio::task::spawn_blocking(move || {
            let mut o = std::fs::OpenOptions::new();
            o.create(true).truncate(false).write(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            let f = o.open(&path)?;
            #[cfg(unix)]
            rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)?;
            Ok::<_, std::io::Error>(f)
        })
        .await
        .map_err(|e| unavailable(std::io::Error::other(e)))?
        .map_err(unavailable)
    }

    /// [`SecretStore::put`] under the store's locks; with `first_only`,
    /// nothing is written if a version carries AWSCURRENT (checked under
    /// the same lock as the write). Says whether a version was added.
    async fn write_version(
        &self,
        secret_id: &str,
        version_id: &str,
        value: &str,
        stages: &[&str],
        first_only: bool,
    ) -> Result<bool, StoreError> {
        let held = Held {
            _process: self.lock.clone().lock_owned().await,
            _file: self.lock_file(secret_id).await?,
        };
        let mut file = match self.load(secret_id).await {
            Ok(f) => f,
            Err(StoreError::SecretNotFound { .. }) => SecretFile::default(),
            Err(e) => return Err(e),
        };
        if first_only
            && file
                .versions
                .iter()
                .any(|v| v.stages.iter().any(|s| s == AWSCURRENT))
        {
            return Ok(false);
        }
        if let Some(existing) = file.versions.iter().find(|v| v.id == version_id) {
            let same = constant_time_eq(existing.value.as_bytes(), value.as_bytes());
            return match same {
                true => Ok(false),
                false => Err(StoreError::Conflict {
                    secret: secret_id.to_owned(),
                    reason: format!("version {version_id} already exists with a different value"),
                }),
            };
        }
        let stages: Vec<&str> = if stages.is_empty() {
            vec![AWSCURRENT]
        } else {
            stages.to_vec()
        };
        for stage in &stages {
            if *stage == AWSCURRENT {
                move_current(&mut file);
            } else {
                for v in &mut file.versions {
                    v.stages.retain(|s| s != stage);
                }
            }
        }
        file.versions.push(StoredVersion {
            id: version_id.to_owned(),
            created: OffsetDateTime::now_utc(),
            stages: stages.iter().map(|s| (*s).to_owned()).collect(),
            value: value.to_owned(),
        });
        self.save(secret_id, &file, held).await?;
        Ok(true)
    }

    async fn save(&self, secret_id: &str, file: &SecretFile, held: Held) -> Result<(), StoreError> {
        let path = self.path(secret_id)?;
        let bytes = Zeroizing::new(serde_json::to_vec_pretty(file).map_err(|e| {
            StoreError::Unavailable {
                secret: secret_id.to_owned(),
                reason: e.to_string(),
            }
        })?);
        let unavailable = |e: std::io::Error| StoreError::Unavailable {
            secret: secret_id.to_owned(),
            reason: e.to_string(),
        };
        tokio::task::spawn_blocking(move || {
            let written = write_private(&path, &bytes);
            drop(held);
            written
        })
        .await
        .map_err(|e| unavailable(std::io::Error::other(e)))?
        .map_err(unavailable)
    }
}

fn info(v: &StoredVersion) -> VersionInfo {
    VersionInfo {
        id: v.id.clone(),
        stages: v.stages.clone(),
        created: Some(v.created),
    }
}

#[async_trait]
impl SecretStore for LocalStore {
    async fn describe(&self, secret_id: &str) -> Result<Vec<VersionInfo>, StoreError> {
        Ok(self
            .load(secret_id)
            .await?
            .versions
            .iter()
            .map(info)
            .collect())
    }

    async fn get(&self, secret_id: &str, version_id: &str) -> Result<SecretValue, StoreError> {
        let file = self.load(secret_id).await?;
        let v = file
            .versions
            .iter()
            .find(|v| v.id == version_id)
            .ok_or_else(|| StoreError::VersionNotFound {
                secret: secret_id.to_owned(),
                version: version_id.to_owned(),
            })?;
        Ok(SecretValue {
            info: info(v),
            value: Zeroizing::new(v.value.clone()),
        })
    }

    async fn get_stage(&self, secret_id: &str, stage: &str) -> Result<SecretValue, StoreError> {
        let file = self.load(secret_id).await?;
        let v = file
            .versions
            .iter()
            .find(|v| v.stages.iter().any(|s| s == stage))
            .ok_or_else(|| StoreError::VersionNotFound {
                secret: secret_id.to_owned(),
                version: stage.to_owned(),
            })?;
        Ok(SecretValue {
            info: info(v),
            value: Zeroizing::new(v.value.clone()),
        })
    }

    async fn put(
        &self,
        secret_id: &str,
        version_id: &str,
        value: &str,
        stages: &[&str],
    ) -> Result<(), StoreError> {
        self.write_version(secret_id, version_id, value, stages, false)
            .await
            .map(|_| ())
    }

    async fn put_first(
        &self,
        secret_id: &str,
        version_id: &str,
        value: &str,
        stages: &[&str],
    ) -> Result<bool, StoreError> {
        self.write_version(secret_id, version_id, value, stages, true)
            .await
    }

    async fn update_stage(
        &self,
        secret_id: &str,
        stage: &str,
        move_to: Option<&str>,
        remove_from: Option<&str>,
    ) -> Result<(), StoreError> {
        let held = Held {
            _process: self.lock.clone().lock_owned().await,
            _file: self.lock_file(secret_id).await?,
        };
        let mut file = self.load(secret_id).await?;
        let conflict = |reason: String| StoreError::Conflict {
            secret: secret_id.to_owned(),
            reason,
        };
        if let Some(to) = move_to
            && !file.versions.iter().any(|v| v.id == to)
        {
            return Err(StoreError::VersionNotFound {
                secret: secret_id.to_owned(),
                version: to.to_owned(),
            });
        }
        let holder = file
            .versions
            .iter()
            .find(|v| v.stages.iter().any(|s| s == stage))
            .map(|v| v.id.clone());
        match (&holder, move_to, remove_from) {
            // Secrets Manager refuses to take a stage from a version the caller did not name.
            (Some(h), Some(to), from) if h != to && from != Some(h.as_str()) => {
                return Err(conflict(format!(
                    "stage {stage} is attached to version {h}; name it in RemoveFromVersionId"
                )));
            }
            (h, None, Some(from)) if h.as_deref() != Some(from) => {
                return Err(conflict(format!(
                    "stage {stage} is not attached to version {from}"
                )));
            }
            _ => {}
        }
        if holder.as_deref() == move_to && move_to.is_some() {
            return Ok(());
        }
        if stage == AWSCURRENT && move_to.is_some() {
            move_current(&mut file);
        } else {
            for v in &mut file.versions {
                v.stages.retain(|s| s != stage);
            }
        }
        if let Some(to) = move_to
            && let Some(v) = file.versions.iter_mut().find(|v| v.id == to)
        {
            v.stages.push(stage.to_owned());
        }
        self.save(secret_id, &file, held).await
    }
}

/// Takes AWSCURRENT off its holder, which becomes the only AWSPREVIOUS.
fn move_current(file: &mut SecretFile) {
    let holder = file
        .versions
        .iter()
        .position(|v| v.stages.iter().any(|s| s == AWSCURRENT));
    if let Some(i) = holder {
        for v in &mut file.versions {
            v.stages.retain(|s| s != AWSPREVIOUS);
        }
        if let Some(v) = file.versions.get_mut(i) {
            v.stages.retain(|s| s != AWSCURRENT);
            v.stages.push(AWSPREVIOUS.to_owned());
        }
    }
}

#[cfg(test)]
mod tests;
