//! The fixes for errors of the key store, KMS and master keys.

use super::{credentials_fix, denial_fix};
use crate::backends::kms::KmsError;
use crate::backends::store::StoreError;
use crate::keys::master_key::MasterKeyError;

pub(super) fn master_fix(e: &MasterKeyError) -> Option<String> {
    match e {
        MasterKeyError::Malformed { reason, .. } => {
            Some(if reason.contains("allow_unwrapped_master_keys") {
                "set allow_unwrapped_master_keys on the key only if this seed-shaped secret is \
                 meant; see docs/FORMAT.md"
                    .into()
            } else {
                "write the secret in a shape Envelope reads (docs/FORMAT.md), or let \
                 `envelope init-keys` create it"
                    .into()
            })
        }
        MasterKeyError::Kms { source, .. } => kms_fix(source),
    }
}

pub(super) fn store_fix(e: &StoreError) -> Option<String> {
    Some(match e {
        StoreError::Credentials { reason, .. } => credentials_fix(reason),
        StoreError::AccessDenied { message, .. } if message.contains("KMS") => {
            "Secrets Manager may not decrypt the secret with its encryption key for this role: \
             allow kms:Decrypt on that key (the secret's KmsKeyId, not aws.kms_key_id) in the \
             role's policy and the key's policy"
                .into()
        }
        StoreError::AccessDenied { message, .. } => denial_fix(
            message,
            "secretsmanager:DescribeSecret and secretsmanager:GetSecretValue on the secret",
            "the secret's resource policy",
        ),
        StoreError::SecretNotFound { .. } => {
            "create the first version with `envelope init-keys --config FILE`, or correct the key's \
             secret_id or aws.region (a secret name is looked up in that region)"
                .into()
        }
        StoreError::ScheduledForDeletion { secret } => format!(
            "restore it (`aws secretsmanager restore-secret --secret-id {secret}`) before its \
             recovery window ends"
        ),
        StoreError::VersionNotFound { .. } => {
            "the version was deleted or never existed; records naming it cannot be opened".into()
        }
        StoreError::Throttled { .. } => {
            "retry later; fewer replicas or a longer refresh_interval_secs lower the request rate"
                .into()
        }
        StoreError::Unavailable { .. } => {
            "check aws.region and any endpoint_url, and that this host reaches the Secrets Manager \
             endpoint (VPC endpoint, security group, egress rules)"
                .into()
        }
        StoreError::Refused { reason, .. } if reason.starts_with("LimitExceeded") => {
            "a Secrets Manager quota is reached (e.g. 20 staging labels on a secret): \
             see the quota AWS's message names"
                .into()
        }
        StoreError::Refused { .. } => {
            "check the key's secret_id: a secret name or a full ARN, as `aws secretsmanager \
             describe-secret --secret-id` accepts it"
                .into()
        }
        StoreError::Malformed { .. } => {
            "the secret's value is not a shape Envelope reads (docs/FORMAT.md); a seed-shaped \
             secret needs allow_unwrapped_master_keys on its key"
                .into()
        }
        StoreError::Conflict { .. } => return None,
    })
}

pub(super) fn kms_fix(e: &KmsError) -> Option<String> {
    Some(match e {
        KmsError::Credentials(reason) => credentials_fix(reason),
        KmsError::AccessDenied(message) => denial_fix(
            message,
            "kms:Decrypt, kms:GenerateDataKey and kms:DescribeKey on the KMS key",
            "the KMS key's key policy",
        ),
        KmsError::NotFound(_) => "correct aws.kms_key_id (a key id, ARN or alias) and aws.region: \
                                  a KMS key lives in one region"
            .into(),
        KmsError::KeyUnusable(m) if m.contains("InvalidKeyUsage") => {
            "aws.kms_key_id must be a symmetric encryption key (KeySpec SYMMETRIC_DEFAULT, \
             KeyUsage ENCRYPT_DECRYPT), not an asymmetric or HMAC key"
                .into()
        }
        KmsError::KeyUnusable(_) => "enable the key (`aws kms enable-key`) or cancel its deletion \
             (`aws kms cancel-key-deletion`), or point aws.kms_key_id at a usable key"
            .into(),
        KmsError::DecryptFailed => {
            "the secret was wrapped under another KMS key or encryption context: check \
             aws.kms_key_id and aws.allowed_kms_keys"
                .into()
        }
        KmsError::AllowedKey(_) => {
            "allow kms:DescribeKey on every key of aws.allowed_kms_keys, and correct or remove the \
             keys that do not exist"
                .into()
        }
        KmsError::NotAllowed(_) => {
            "add that KMS key to aws.allowed_kms_keys if it is yours; otherwise someone wrote \
             the secret who should not have"
                .into()
        }
        KmsError::Throttled(_) => {
            "retry later; fewer replicas or a longer refresh_interval_secs lower the request rate, \
             or ask AWS for a higher KMS request quota"
                .into()
        }
        KmsError::Unavailable(_) => {
            "check aws.region and any kms_endpoint_url, and that this host reaches the KMS endpoint"
                .into()
        }
        KmsError::RootKey(_) => {
            "local mode: check root.key in the data directory (32 bytes, mode 0600)".into()
        }
        KmsError::Crypto(_) => return None,
    })
}
