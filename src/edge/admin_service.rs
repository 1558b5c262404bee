//! The `envelope.v1.Admin` gRPC service: key status, refresh and rotation.

use std::sync::Arc;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tonic::{Request, Response, Status};

use crate::edge::authz::Operation;
use crate::edge::gate::{Done, Gate, Selected};
use crate::keys::NamedKey;
use crate::keys::error::Error;
use crate::pb;

/// The Admin service; every call needs the `admin` operation.
#[derive(Debug, Clone)]
pub struct AdminService {
    gate: Gate,
}

impl AdminService {
    /// An Admin service behind `gate`.
    pub fn new(gate: Gate) -> Self {
        Self { gate }
    }
}

fn rfc3339(t: impl Into<Option<OffsetDateTime>>) -> String {
    t.into()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn age(t: impl Into<Option<OffsetDateTime>>, now: OffsetDateTime) -> u64 {
    t.into()
        .and_then(|t| u64::try_from((now - t).whole_seconds()).ok())
        .unwrap_or(0)
}

/// KeyStatus figures for one key name.
pub fn key_info(key: &NamedKey) -> pb::KeyInfo {
    let now = OffsetDateTime::now_utc();
    let set = key.snapshot();
    let mut loaded: Vec<_> = set.versions.values().collect();
    // Newest first; ties (same instant) by id so the order is stable.
    loaded.sort_by(|a, b| {
        b.master
            .created
            .cmp(&a.master.created)
            .then_with(|| a.master.version.as_str().cmp(b.master.version.as_str()))
    });
    let uses = key.version_use();
    let versions: Vec<pb::MasterKeyVersion> = loaded
        .into_iter()
        .map(|l| {
            let version = l.master.version.as_str();
            let used = uses.iter().find(|u| u.version == version);
            pb::MasterKeyVersion {
                version: version.to_owned(),
                stages: l.stages.clone(),
                created_at: rfc3339(l.master.created),
                age_seconds: age(l.master.created, now),
                records_opened: used.map_or(0, |u| u.opened),
                data_key_wraps: used.map_or(0, |u| u.wraps),
                last_read: rfc3339(
                    used.and_then(|u| u.last_read)
                        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()),
                ),
                compromised: set.compromised.iter().any(|v| v == version),
            }
        })
        .collect();
    let f = key.figures();
    pb::KeyInfo {
        name: key.name().to_owned(),
        secret_id: key.secret_id().to_owned(),
        current_version: set.current.version.as_str().to_owned(),
        versions,
        last_refresh: rfc3339(set.loaded_at),
        last_refresh_age_seconds: age(set.loaded_at, now),
        refresh_failures: f.refresh_failures,
        pinned_versions: set.pinned.clone(),
        rotation_failures: f.rotation_failures,
        compromised_versions: set.compromised.clone(),
        allow_compromised_decrypts: key.allows_compromised_decrypts(),
        cache: Some(pb::CacheStats {
            data_keys_generated: f.data_keys_generated,
            active_data_key_records: f.active_records,
            decrypt_cache_entries: f.decrypt_entries,
            decrypt_cache_hits: f.hits,
            decrypt_cache_misses: f.misses,
        }),
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn key_status(
        &self,
        req: Request<pb::KeyStatusRequest>,
    ) -> Result<Response<pb::KeyStatusResponse>, Status> {
        self.gate
            .run(
                req,
                "KeyStatus",
                Operation::Admin,
                |Selected(keys, _), _| async move {
                    let keys = keys.iter().map(|k| key_info(k)).collect();
                    Ok((pb::KeyStatusResponse { keys }, Done::default()))
                },
            )
            .await
    }

    async fn refresh_keys(
        &self,
        req: Request<pb::RefreshKeysRequest>,
    ) -> Result<Response<pb::RefreshKeysResponse>, Status> {
        let audit = self.gate.audit.clone();
        self.gate
            .run(
                req,
                "RefreshKeys",
                Operation::Admin,
                |Selected(keys, _), _| async move {
                    let mut refreshed = Vec::with_capacity(keys.len());
                    for k in keys {
                        if let Err(e) = k.refresh().await {
                            if let (Some(audit), Some((version, reason))) =
                                (&audit, e.refused_version())
                            {
                                audit.version_refused(k.name(), version, &reason).await;
                            }
                            return Err(e);
                        }
                        refreshed.push(k.name().to_owned());
                    }
                    Ok((pb::RefreshKeysResponse { refreshed }, Done::default()))
                },
            )
            .await
    }

    async fn rotate_master_key(
        &self,
        req: Request<pb::RotateMasterKeyRequest>,
    ) -> Result<Response<pb::RotateMasterKeyResponse>, Status> {
        self.gate
            .run(
                req,
                "RotateMasterKey",
                Operation::Admin,
                |key: Arc<NamedKey>, _| async move {
                    let rotated = key.rotate().await;
                    // A failed reload after a successful rotation is not a failed rotation.
                    let failed = matches!(rotated, Err(Error::Rotation(_)));
                    crate::ops::metrics::get().rotation(key.name(), !failed);
                    let (previous_version, current_version) = rotated?;
                    let done = Done::version(&current_version);
                    Ok((
                        pb::RotateMasterKeyResponse {
                            previous_version,
                            current_version,
                        },
                        done,
                    ))
                },
            )
            .await
    }

    async fn mark_compromised(
        &self,
        req: Request<pb::MarkCompromisedRequest>,
    ) -> Result<Response<pb::MarkCompromisedResponse>, Status> {
        self.gate
            .run(
                req,
                "MarkCompromised",
                Operation::Admin,
                |key: Arc<NamedKey>, req: pb::MarkCompromisedRequest| async move {
                    let reason = req.reason.trim();
                    if reason.is_empty()
                        || reason.chars().count() > 512
                        || reason.chars().any(char::is_control)
                    {
                        return Err(Error::BadReason);
                    }
                    let current_version = key.mark_compromised(&req.version).await?;
                    let done = Done {
                        version: req.version.clone(),
                        reason: Some(reason.to_owned()),
                        ..Done::default()
                    };
                    Ok((pb::MarkCompromisedResponse { current_version }, done))
                },
            )
            .await
    }
}
