//! What the binary prints when an error ends it: at most three lines, for
//! a person. The first says what failed and why, naming the setting, file,
//! secret or key (the errors' own messages, which never carry the SDK's
//! Debug output); the second, when one is known, what to do. `--verbose`
//! adds the chain of causes and the SDK's full errors in the debug log.
//! docs/OPERATIONS.md ("Start-up errors") tabulates the same fixes.

use std::error::Error as StdError;

use crate::app::config::ConfigError;
use crate::app::startup::ServeError;
use crate::backends::kms::KmsError;
use crate::backends::store::StoreError;
use crate::edge::tls::TlsError;
use crate::keys::Error as KeyError;
use crate::keys::master_key::MasterKeyError;
use crate::keys::rotation::RotationError;

/// Where the first deployment's checks are explained.
const FIRST_DEPLOYMENT: &str = "docs/OPERATIONS.md, \"First deployment\"";

/// The longest first line: a message longer than this is cut.
const LINE_MAX: usize = 600;

/// The text printed for `err`, ending in a newline: `error: …`, then
/// `fix: …` when a fix is known, then a pointer to `--verbose` (or, with
/// `verbose`, every cause on its own line).
pub fn render(err: &anyhow::Error, verbose: bool) -> String {
    let mut out = format!("error: {}\n", one_line(&err.to_string()));
    if let Some(fix) = fix(err.as_ref()) {
        out.push_str(&format!("fix: {fix}\n"));
    }
    if verbose {
        for (i, cause) in err.chain().enumerate().skip(1) {
            out.push_str(&format!("  cause {i}: {}\n", one_line(&cause.to_string())));
        }
    } else {
        out.push_str("(--verbose shows every cause and logs the AWS SDK's full errors)\n");
    }
    out
}

/// `text` on one line, at most [`LINE_MAX`] bytes.
pub(crate) fn one_line(text: &str) -> String {
    crate::backends::aws_sdk::one_line(text, LINE_MAX)
}

/// What to do about `err`: the fix of the first error in its chain that has
/// one, most specific (deepest) first.
pub fn fix(err: &(dyn StdError + 'static)) -> Option<String> {
    let chain: Vec<&(dyn StdError + 'static)> =
        std::iter::successors(Some(err), |&e| e.source()).collect();
    chain.into_iter().rev().find_map(fix_one)
}

fn fix_one(err: &(dyn StdError + 'static)) -> Option<String> {
    // A transparent variant hands on its inner error's source, skipping the
    // inner error itself in the chain.
    if let Some(e) = err.downcast_ref::<RotationError>() {
        return match e {
            RotationError::Store(e) => store_fix(e),
            RotationError::Kms(e) => kms_fix(e),
            RotationError::MasterKey(e) => master_fix(e),
            _ => None,
        };
    }
    if let Some(e) = err.downcast_ref::<StoreError>() {
        return store_fix(e);
    }
    if let Some(e) = err.downcast_ref::<KmsError>() {
        return kms_fix(e);
    }
    if let Some(e) = err.downcast_ref::<MasterKeyError>() {
        return master_fix(e);
    }
    if let Some(e) = err.downcast_ref::<KeyError>() {
        return match e {
            KeyError::NoCurrent(_) => Some(
                "create the key's first version with `envelope init-keys --config FILE`, \
                 or stage an existing version AWSCURRENT"
                    .into(),
            ),
            _ => None,
        };
    }
    if let Some(e) = err.downcast_ref::<ConfigError>() {
        return Some(match e {
            ConfigError::Read { .. } => "give --config a readable file".into(),
            ConfigError::Parse { .. } | ConfigError::Invalid { .. } => {
                "correct the setting; every setting and its range is in docs/CONFIG.md".into()
            }
        });
    }
    if let Some(e) = err.downcast_ref::<TlsError>() {
        return Some(match e {
            TlsError::Read { .. } => "check the path and that the service's user can read it \
                                      (tls.cert, tls.key, tls.client_ca)"
                .into(),
            TlsError::Pem { what, .. } if what.contains("is not valid before") => {
                "check this host's clock, or issue a certificate valid now".into()
            }
            TlsError::Pem { what, .. } if what.contains("expired on") => {
                "renew the certificate (cert-manager, or your CA); the server reloads tls.cert \
                 without a restart"
                    .into()
            }
            _ => "check that tls.cert and tls.key hold a PEM certificate chain and \
                  its own private key"
                .into(),
        });
    }
    if let Some(e) = err.downcast_ref::<ServeError>() {
        return match e {
            ServeError::Policy(_) => {
                Some("correct the policy file; its format is in docs/CONFIG.md, \"Policy\"".into())
            }
            ServeError::Audit(_) => {
                Some("check [audit] path: its directory must exist and be writable".into())
            }
            ServeError::NoRegion => Some("set aws.region (or AWS_REGION)".into()),
            ServeError::WrongRegion { theirs, .. } => Some(format!(
                "set aws.region = \"{theirs}\" if the service runs there, or name the secret and KMS key \
                 of the region in use (a replica secret, a multi-Region key's replica)"
            )),
            ServeError::MetricsListen { .. } => {
                Some("choose a free metrics_listen address, or stop what holds it".into())
            }
            _ => None,
        };
    }
    if err.downcast_ref::<tonic::transport::Error>().is_some() {
        return Some(
            "check that a server listens at --addr (`envelope serve` starts one), and give \
             --ca (and --client-cert, --client-key) for a TLS server"
                .into(),
        );
    }
    if let Some(status) = err.downcast_ref::<tonic::Status>() {
        use tonic::Code;
        return match status.code() {
            Code::PermissionDenied | Code::Unauthenticated => Some(
                "the server's policy does not grant this caller this operation on this key \
                 (docs/CONFIG.md, \"Policy\"); with mTLS, check --client-cert"
                    .into(),
            ),
            Code::NotFound => Some("check --key (and --index): the server has no such name".into()),
            Code::Unavailable => {
                Some("the server cannot serve now (its keys or audit log): see its log".into())
            }
            _ => None,
        };
    }
    if let Some(e) = err.downcast_ref::<std::io::Error>()
        && e.kind() == std::io::ErrorKind::AddrInUse
    {
        return Some("choose a free --listen address, or stop what holds it".into());
    }
    None
}

fn master_fix(e: &MasterKeyError) -> Option<String> {
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

fn store_fix(e: &StoreError) -> Option<String> {
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

fn kms_fix(e: &KmsError) -> Option<String> {
    Some(match e {
        KmsError::Credentials(reason) => credentials_fix(reason),
        KmsError::AccessDenied(message) => denial_fix(
            message,
            "kms:Decrypt and kms:GenerateDataKey on the KMS key",
            "the KMS key's key policy",
        ),
        KmsError::NotFound(_) => "correct aws.kms_key_id (a key id, ARN or alias) and aws.region: \
                                  a KMS key lives in one region"
            .into(),
        KmsError::KeyUnusable(_) => {
            "enable the key (`aws kms enable-key`) or cancel its deletion \
             (`aws kms cancel-key-deletion`), or point aws.kms_key_id at a usable key"
                .into()
        }
        KmsError::DecryptFailed => {
            "the secret was wrapped under another KMS key or encryption context: check \
             aws.kms_key_id and aws.allowed_kms_keys"
                .into()
        }
        KmsError::NotAllowed(_) => {
            "add that KMS key to aws.allowed_kms_keys if it is yours; otherwise someone wrote \
             the secret who should not have"
                .into()
        }
        KmsError::Unavailable(_) | KmsError::Throttled(_) => {
            "check aws.region and any kms_endpoint_url, and that this host reaches the KMS endpoint; \
             retry later if throttled"
                .into()
        }
        KmsError::RootKey(_) => {
            "local mode: check root.key in the data directory (32 bytes, mode 0600)".into()
        }
        KmsError::Crypto(_) => return None,
    })
}

/// The fix for an access denial, from AWS's message, which says which
/// kind of policy is missing ("because no identity-based policy allows …",
/// "… no resource-based policy allows …") or which denies ("with an
/// explicit deny in a service control policy", …).
pub(crate) fn denial_fix(message: &str, allow: &str, resource_policy: &str) -> String {
    if message.contains("explicit deny") {
        format!(
            "a Deny statement overrides every Allow: find it where AWS's message says (a service \
             control policy, a permissions boundary, the role's policies or {resource_policy}) and \
             exempt the service's role"
        )
    } else if message.contains("resource-based policy") {
        format!(
            "the role's IAM policy is not enough here: add a statement to {resource_policy} \
             allowing the service's role {allow}; see {FIRST_DEPLOYMENT}"
        )
    } else if message.contains("identity-based policy") {
        format!("allow {allow} in the service's IAM role policy; see {FIRST_DEPLOYMENT}")
    } else {
        format!(
            "allow {allow} for the service's IAM role, in its IAM policy and, if one restricts \
             it, in {resource_policy}; see {FIRST_DEPLOYMENT}"
        )
    }
}

pub(crate) fn credentials_fix(reason: &str) -> String {
    if reason.contains("Expired") {
        "the credentials have expired: renew them (a new session, `aws sso login`); a pod's \
         web identity token is renewed by Kubernetes, so check its projected token volume"
            .into()
    } else if reason.contains("found no credentials") {
        format!(
            "give the service an identity: on EKS, an IAM role on its service account (IRSA or \
             EKS Pod Identity); on EC2, an instance profile; elsewhere AWS_PROFILE; see {FIRST_DEPLOYMENT}"
        )
    } else {
        "AWS does not accept these credentials: check which identity the SDK picked up \
         (`aws sts get-caller-identity` as the same user) and the region"
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_error_is_at_most_three_lines_and_names_its_fix() {
        let store = StoreError::Credentials {
            secret: "envelope/pii".into(),
            reason: crate::backends::aws_sdk::NO_CREDENTIALS.into(),
        };
        let err = anyhow::Error::new(ServeError::Key {
            key: "pii".into(),
            source: KeyError::Store(store),
        });
        let text = render(&err, false);
        assert!(text.lines().count() <= 3, "{text}");
        assert!(text.starts_with("error: cannot load key \"pii\""), "{text}");
        assert!(
            text.contains("\nfix: give the service an identity"),
            "{text}"
        );
        let verbose = render(&err, true);
        assert!(verbose.contains("  cause 1: secret store:"), "{verbose}");
    }

    /// The fixes for answers moto cannot give (tests/operator_errors.rs
    /// shows the rest end to end).
    #[test]
    fn key_states_and_expired_credentials_have_their_own_fix() {
        let fix_of = |e: KmsError| fix(&e).unwrap_or_default();
        assert!(
            fix_of(KmsError::KeyUnusable("DisabledException: …".into())).contains("enable-key")
        );
        let expired = KmsError::Credentials("ExpiredTokenException: token expired".into());
        assert!(fix_of(expired).starts_with("the credentials have expired"));
        let store = StoreError::ScheduledForDeletion {
            secret: "envelope/pii".into(),
        };
        let shown = fix(&store).unwrap_or_default();
        assert!(
            shown.contains("restore-secret --secret-id envelope/pii"),
            "{shown}"
        );
    }

    /// AWS's denial messages (AWS IAM User Guide, "Troubleshoot access
    /// denied error messages") say which policy is missing or denies.
    #[test]
    fn a_key_policy_denial_is_told_apart_from_an_iam_denial() {
        let fix_of = |m: &str| fix(&KmsError::AccessDenied(m.into())).unwrap_or_default();
        let who = "AccessDeniedException: User: arn:aws:sts::111122223333:assumed-role/envelope/i-1 \
                   is not authorized to perform: kms:Decrypt on resource: \
                   arn:aws:kms:us-east-1:111122223333:key/1234abcd because";
        let key_policy = fix_of(&format!(
            "{who} no resource-based policy allows the kms:Decrypt action"
        ));
        assert!(
            key_policy.contains("add a statement to the KMS key's key policy"),
            "{key_policy}"
        );
        let iam = fix_of(&format!(
            "{who} no identity-based policy allows the kms:Decrypt action"
        ));
        assert!(iam.contains("in the service's IAM role policy"), "{iam}");
        assert!(!iam.contains("key's key policy"), "{iam}");
        let deny = fix_of(&format!(
            "{who} with an explicit deny in a service control policy"
        ));
        assert!(deny.starts_with("a Deny statement overrides"), "{deny}");
        let secret_kms = fix(&StoreError::AccessDenied {
            secret: "envelope/pii".into(),
            message: "AccessDeniedException: Access to KMS is not allowed".into(),
        })
        .unwrap_or_default();
        assert!(secret_kms.contains("the secret's KmsKeyId"), "{secret_kms}");
    }

    #[test]
    fn long_and_multi_line_messages_become_one_bounded_line() {
        let long = format!("a\nb {}", "é".repeat(LINE_MAX));
        let line = one_line(&long);
        assert!(!line.contains('\n') && line.len() <= LINE_MAX + '…'.len_utf8());
        assert!(line.starts_with("a b é"));
    }
}
