//! The start-up report's lines and fixes.
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
    assert!(fix_of(KmsError::KeyUnusable("DisabledException: …".into())).contains("enable-key"));
    let expired = KmsError::Credentials("ExpiredTokenException: token expired".into());
    assert_eq!(
        expired.to_string(),
        "no usable AWS credentials for KMS: ExpiredTokenException: token expired"
    );
    assert!(fix_of(expired).starts_with("the credentials have expired"));
    // OPERATIONS.md's start-up rows: the line, and the fix, of each.
    let pending = KmsError::KeyUnusable("KMSInvalidStateException: pending deletion".into());
    assert_eq!(
        pending.to_string(),
        "KMS key cannot be used: KMSInvalidStateException: pending deletion"
    );
    assert!(fix_of(pending).contains("cancel-key-deletion"));
    let unknown = KmsError::Credentials("UnrecognizedClientException: unknown token".into());
    assert_eq!(
        unknown.to_string(),
        "no usable AWS credentials for KMS: UnrecognizedClientException: unknown token"
    );
    assert!(
        fix_of(unknown).starts_with("AWS does not accept these credentials: check which identity")
    );
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

/// Answers that used to get a network fix: a signature refused for the
/// clock, a failing credential provider, a KMS key of the wrong kind, a
/// secret Secrets Manager cannot decrypt, throttling.
#[test]
fn clock_provider_key_usage_and_secret_decryption_have_their_own_fix() {
    let kms = |e: KmsError| fix(&e).unwrap_or_default();
    let skew = kms(KmsError::Credentials(
        "InvalidSignatureException: Signature expired: 20261128T060000Z is now earlier than …"
            .into(),
    ));
    assert!(skew.contains("clock"), "{skew}");
    let skewed = kms(KmsError::Credentials(
        "RequestTimeTooSkewed: The difference between the request time and the server's time is too large"
            .into(),
    ));
    assert!(skewed.contains("clock"), "{skewed}");
    let provider = kms(KmsError::Credentials(
        crate::backends::aws_sdk::PROVIDER_FAILED.into(),
    ));
    assert!(
        provider.contains("AWS_ROLE_ARN") && provider.contains("STS"),
        "{provider}"
    );
    let usage = kms(KmsError::KeyUnusable(
        "KMS key k: InvalidKeyUsageException: … is not a symmetric key".into(),
    ));
    assert!(usage.contains("SYMMETRIC_DEFAULT"), "{usage}");
    let throttled = kms(KmsError::Throttled(
        "ThrottlingException: Rate exceeded".into(),
    ));
    assert!(throttled.starts_with("retry later"), "{throttled}");
    // OPERATIONS.md's throttling row: both texts (moto cannot throttle).
    assert_eq!(
        KmsError::Throttled("ThrottlingException: Rate exceeded".into()).to_string(),
        "KMS throttled the request: ThrottlingException: Rate exceeded"
    );
    let store = StoreError::Throttled {
        secret: "envelope/pii".into(),
        message: "ThrottlingException: Rate exceeded".into(),
    };
    assert_eq!(
        store.to_string(),
        "secret envelope/pii: request throttled: ThrottlingException: Rate exceeded"
    );
    assert!(
        fix(&store).unwrap_or_default().starts_with("retry later"),
        "{:?}",
        fix(&store)
    );
    let store = StoreError::AccessDenied {
        secret: "envelope/pii".into(),
        message: "DecryptionFailure: Secrets Manager can't decrypt the protected secret text using the provided KMS key.".into(),
    };
    assert!(fix(&store).unwrap_or_default().contains("KmsKeyId"));
}

/// A metrics port in use names metrics_listen, not --listen: the deepest
/// error (the I/O error) has only a generic fix.
#[test]
fn a_metrics_port_in_use_names_metrics_listen() {
    let err = ServeError::MetricsListen {
        addr: "127.0.0.1:9090".parse().unwrap(),
        source: std::io::ErrorKind::AddrInUse.into(),
    };
    assert!(fix(&err).unwrap_or_default().contains("metrics_listen"));
}

/// The first line joins the chain, leaving out what an outer error says.
#[test]
fn the_first_line_carries_the_cause_once() {
    let io = std::io::Error::from(std::io::ErrorKind::NotFound);
    let err = anyhow::Error::new(io).context("cannot open /x");
    let text = render(&err, false);
    assert!(
        text.starts_with("error: cannot open /x: entity not found\n"),
        "{text}"
    );
    let store = StoreError::SecretNotFound {
        secret: "envelope/pii".into(),
    };
    let err = anyhow::Error::new(ServeError::Key {
        key: "pii".into(),
        source: KeyError::Store(store),
    });
    let text = render(&err, false);
    assert_eq!(text.matches("envelope/pii").count(), 1, "{text}");
}

/// OPERATIONS.md, "Start-up errors": the two store states moto cannot be
/// put in (a secret with no AWSCURRENT version, a listed version gone),
/// as `serve` prints them.
#[test]
fn no_current_version_and_a_vanished_version_have_their_lines_and_fixes() {
    let err = anyhow::Error::new(ServeError::Key {
        key: "pii".into(),
        source: KeyError::NoCurrent("pii".into()),
    });
    let text = render(&err, false);
    assert!(
        text.starts_with(
            "error: cannot load key \"pii\": key \"pii\" has no AWSCURRENT master-key version\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("\nfix: create the key's first version with `envelope init-keys --config FILE`, or stage an existing version AWSCURRENT"),
        "{text}"
    );
    let gone = StoreError::VersionNotFound {
        secret: "envelope/pii".into(),
        version: "v9".into(),
    };
    let err = anyhow::Error::new(ServeError::Key {
        key: "pii".into(),
        source: KeyError::Store(gone),
    });
    let text = render(&err, false);
    assert!(
        text.contains("secret store: version v9 of secret envelope/pii not found"),
        "{text}"
    );
    assert!(
        text.contains(
            "\nfix: the version was deleted or never existed; records naming it cannot be opened"
        ),
        "{text}"
    );
}
