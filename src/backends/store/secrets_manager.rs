//! AWS Secrets Manager behind the [`SecretStore`] seam, with ordered
//! failover to replica regions for reads (seeds 001/002: replicated
//! secrets, region failure). Writes go to the primary region only, as
//! Secrets Manager replicas are read-only.

use std::future::Future;

use async_trait::async_trait;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{AWSCURRENT, SecretStore, SecretValue, StoreError, VersionInfo};
use crate::backends::aws_sdk::{
    AwsSettings, Failure, NO_CREDENTIALS, classify, secret_id_in_region,
};

type Client = aws_sdk_secretsmanager::Client;

/// The secret tag naming the Envelope key a secret holds.
pub const KEY_NAME_TAG: &str = "envelope:key";

/// Secrets Manager in a primary region and optional replica regions.
#[derive(Debug)]
pub struct AwsStore {
    /// (region name, client); the first is the primary.
    regions: Vec<(String, Client)>,
}

impl AwsStore {
    /// Clients for the primary region (from `primary`) and each replica region.
    pub async fn new(settings: &AwsSettings, primary: &aws_config::SdkConfig) -> Self {
        let mut conf = aws_sdk_secretsmanager::config::Builder::from(primary);
        if let Some(url) = &settings.secretsmanager_endpoint_url {
            conf = conf.endpoint_url(url);
        }
        let mut regions = vec![(
            primary
                .region()
                .map_or_else(|| "default".to_owned(), |r| r.to_string()),
            Client::from_conf(conf.build()),
        )];
        // The primary's configuration (its credentials, timeouts and any
        // endpoint_url) in each replica region; not its Secrets Manager
        // endpoint, which is the primary region's.
        for r in &settings.replica_regions {
            let conf = aws_sdk_secretsmanager::config::Builder::from(primary)
                .region(aws_config::Region::new(r.clone()));
            regions.push((r.clone(), Client::from_conf(conf.build())));
        }
        Self { regions }
    }

    /// Runs a read in the primary region, then in each replica while the
    /// failure is regional (no answer, timeout, throttling, service error).
    async fn read<T, F, Fut>(&self, secret_id: &str, op: F) -> Result<T, Failure>
    where
        F: Fn(Client, String) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut last = Failure::Unavailable("no region configured".into());
        for (i, (region, client)) in self.regions.iter().enumerate() {
            let id = if i == 0 {
                secret_id.to_owned()
            } else {
                secret_id_in_region(secret_id, region)
            };
            match op(client.clone(), id).await {
                Ok(v) => {
                    if i > 0 {
                        tracing::warn!(secret = %secret_id, %region, "served by a replica region");
                    }
                    return Ok(v);
                }
                Err(f) if f.regional() => {
                    tracing::warn!(secret = %secret_id, %region, error = ?f, "region failed; trying the next");
                    last = f;
                }
                Err(f) => return Err(f),
            }
        }
        Err(last)
    }

    /// GetSecretValue by version id, or by stage when `by_stage`.
    async fn get_value(
        &self,
        secret_id: &str,
        which: &str,
        by_stage: bool,
    ) -> Result<SecretValue, StoreError> {
        let out = self
            .read(secret_id, |c, id| async move {
                let req = c.get_secret_value().secret_id(id);
                let req = if by_stage {
                    req.version_stage(which)
                } else {
                    req.version_id(which)
                };
                req.send().await.map_err(|e| classify(&e))
            })
            .await
            // A stage is no version: a stage read that finds nothing means
            // the secret (or its staged version) is missing.
            .map_err(|f| store_error(secret_id, (!by_stage).then_some(which), f))?;
        value_of(secret_id, out)
    }

    /// DescribeSecret, with replica failover.
    async fn describe_secret(
        &self,
        secret_id: &str,
    ) -> Result<aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput, StoreError>
    {
        self.read(secret_id, |c, id| async move {
            c.describe_secret()
                .secret_id(id)
                .send()
                .await
                .map_err(|e| classify(&e))
        })
        .await
        .map_err(|f| store_error(secret_id, None, f))
    }

    fn primary(&self) -> Result<&Client, StoreError> {
        self.regions
            .first()
            .map(|(_, c)| c)
            .ok_or_else(|| StoreError::Unavailable {
                secret: String::new(),
                reason: "no region configured".into(),
            })
    }
}

fn store_error(secret: &str, version: Option<&str>, f: Failure) -> StoreError {
    let secret = secret.to_owned();
    match f {
        Failure::NoCredentials => StoreError::Credentials {
            secret,
            reason: NO_CREDENTIALS.into(),
        },
        Failure::BadCredentials(reason) => StoreError::Credentials { secret, reason },
        Failure::AccessDenied(message) => StoreError::AccessDenied { secret, message },
        Failure::Deleted(_) => StoreError::ScheduledForDeletion { secret },
        Failure::NotFound(_) => match version {
            Some(v) => StoreError::VersionNotFound {
                secret,
                version: v.to_owned(),
            },
            None => StoreError::SecretNotFound { secret },
        },
        Failure::Throttled(message) => StoreError::Throttled { secret, message },
        Failure::Conflict(reason) => StoreError::Conflict { secret, reason },
        // A version id the service cannot even parse does not exist either.
        Failure::Invalid(_) if version.is_some() => StoreError::VersionNotFound {
            secret,
            version: version.unwrap_or_default().to_owned(),
        },
        Failure::Invalid(reason) => StoreError::Refused { secret, reason },
        Failure::Unreachable(reason) => StoreError::Unavailable {
            secret,
            reason: format!("no connection to Secrets Manager: {reason}"),
        },
        Failure::InvalidCiphertext(reason)
        | Failure::KeyState(reason)
        | Failure::Unavailable(reason)
        | Failure::Other(reason) => StoreError::Unavailable { secret, reason },
    }
}

fn value_of(
    secret: &str,
    out: aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput,
) -> Result<SecretValue, StoreError> {
    let malformed = |reason: &str| StoreError::Malformed {
        secret: secret.to_owned(),
        reason: reason.to_owned(),
    };
    let id = out
        .version_id()
        .ok_or_else(|| malformed("GetSecretValue returned no VersionId"))?
        .to_owned();
    let created = out
        .created_date()
        .and_then(|d| OffsetDateTime::from_unix_timestamp(d.secs()).ok());
    let stages = out.version_stages().to_vec();
    let value = match out.secret_string() {
        Some(s) => Zeroizing::new(s.to_owned()),
        None => {
            return Err(malformed(
                "the version holds SecretBinary; Envelope reads SecretString only",
            ));
        }
    };
    Ok(SecretValue {
        info: VersionInfo {
            id,
            stages,
            created,
        },
        value,
    })
}

#[async_trait]
impl SecretStore for AwsStore {
    async fn describe(&self, secret_id: &str) -> Result<Vec<VersionInfo>, StoreError> {
        let out = self.describe_secret(secret_id).await?;
        let mut versions: Vec<VersionInfo> = out
            .version_ids_to_stages()
            .map(|m| {
                m.iter()
                    .map(|(id, stages)| VersionInfo {
                        id: id.clone(),
                        stages: stages.clone(),
                        created: None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        versions.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(versions)
    }

    async fn key_name(&self, secret_id: &str) -> Result<String, StoreError> {
        let out = self.describe_secret(secret_id).await?;
        let tagged = out
            .tags()
            .iter()
            .find(|t| t.key() == Some(KEY_NAME_TAG))
            .and_then(|t| t.value())
            .map(str::to_owned);
        // No guessing: a wrong name would bind new master keys to the wrong
        // key and strand every replica at its next refresh.
        tagged.ok_or_else(|| StoreError::Malformed {
            secret: secret_id.to_owned(),
            reason: format!(
                "no {KEY_NAME_TAG} tag naming the Envelope key it holds; tag the secret first"
            ),
        })
    }

    async fn get(&self, secret_id: &str, version_id: &str) -> Result<SecretValue, StoreError> {
        self.get_value(secret_id, version_id, false).await
    }

    async fn get_stage(&self, secret_id: &str, stage: &str) -> Result<SecretValue, StoreError> {
        self.get_value(secret_id, stage, true).await
    }

    async fn put(
        &self,
        secret_id: &str,
        version_id: &str,
        value: &str,
        stages: &[&str],
    ) -> Result<(), StoreError> {
        let client = self.primary()?;
        let stages: Vec<String> = if stages.is_empty() {
            vec![AWSCURRENT.to_owned()]
        } else {
            stages.iter().map(|s| (*s).to_owned()).collect()
        };
        let put = client
            .put_secret_value()
            .secret_id(secret_id)
            .client_request_token(version_id)
            .secret_string(value)
            .set_version_stages(Some(stages.clone()))
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) => match classify(&e) {
                // A secret's first version is made by CreateSecret (always
                // AWSCURRENT); any further labels (the pin) are added after.
                Failure::NotFound(_)
                    if stages.first().is_some_and(|s| s == AWSCURRENT)
                        && !secret_id.starts_with("arn:") =>
                {
                    client
                        .create_secret()
                        .name(secret_id)
                        .client_request_token(version_id)
                        .secret_string(value)
                        .send()
                        .await
                        .map_err(|e| store_error(secret_id, None, classify(&e)))?;
                    for stage in stages.iter().skip(1) {
                        self.update_stage(secret_id, stage, Some(version_id), None)
                            .await?;
                    }
                    Ok(())
                }
                f => Err(store_error(secret_id, None, f)),
            },
        }
    }

    async fn update_stage(
        &self,
        secret_id: &str,
        stage: &str,
        move_to: Option<&str>,
        remove_from: Option<&str>,
    ) -> Result<(), StoreError> {
        self.primary()?
            .update_secret_version_stage()
            .secret_id(secret_id)
            .version_stage(stage)
            .set_move_to_version_id(move_to.map(str::to_owned))
            .set_remove_from_version_id(remove_from.map(str::to_owned))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| store_error(secret_id, None, classify(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ROTATION.md, "Quota", and OPERATIONS.md, "Start-up errors": a full
    /// label quota as the operator reads it (`classify` joins the code and
    /// AWS's message so).
    #[test]
    fn a_quota_refusal_names_the_secret_and_the_code() {
        let full = "LimitExceededException: You have exceeded the number of staging labels";
        let e = store_error("envelope/pii", None, Failure::Invalid(full.into()));
        assert_eq!(
            e.to_string(),
            format!("Secrets Manager refused the request for secret envelope/pii: {full}")
        );
    }
}
