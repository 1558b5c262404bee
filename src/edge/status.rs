//! The one place that maps errors to gRPC status codes and messages, both
//! by exhaustive matches: a new error variant does not compile until it is
//! given a code and a message here. Internal failures get a fixed message
//! and their detail goes to the log; authentication failures are one opaque
//! answer. No message carries plaintext, key bytes or ciphertext: the errors
//! they come from are built to hold none.

use tonic::{Code, Status};

use super::authz::Denied;
use crate::keys::Error;
use crate::keys::rotation::RotationError;
use crate::pb;

/// What a call can fail with at the edge: a refusal before any key
/// operation runs, or the key operation's own error.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The caller is not authenticated or not authorized.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The key operation failed.
    #[error(transparent)]
    Key(#[from] Error),
    /// The audit log cannot be written and `on_failure = "refuse"`.
    #[error("the audit log cannot be written")]
    AuditUnavailable,
}

/// The status code for `e`.
pub fn code(e: &CallError) -> Code {
    match e {
        CallError::Denied(Denied::Unauthenticated) => Code::Unauthenticated,
        CallError::Denied(Denied::PermissionDenied { .. } | Denied::ContextNotGranted { .. }) => {
            Code::PermissionDenied
        }
        CallError::Key(e) => key_code(e),
        CallError::AuditUnavailable => Code::Unavailable,
    }
}

fn key_code(e: &Error) -> Code {
    match e {
        Error::UnknownKey(_) | Error::UnknownIndex { .. } => Code::NotFound,
        Error::IndexNotGranted => Code::PermissionDenied,
        Error::Format(_)
        | Error::Context(_)
        | Error::WrongKey(_)
        | Error::Unauthentic
        | Error::TooLarge { .. }
        | Error::Column(_)
        | Error::BadReason
        | Error::ScopeMissing { .. }
        | Error::Index(_)
        | Error::BatchTooLarge { .. } => Code::InvalidArgument,
        Error::VersionNotFound { .. } | Error::Retired { .. } | Error::Compromised { .. } => {
            Code::FailedPrecondition
        }
        Error::NoCurrent(_) | Error::Store(_) | Error::Kms(_) | Error::MasterKey(_) => {
            Code::Unavailable
        }
        Error::FetchThrottled(_) | Error::IndexQuota => Code::ResourceExhausted,
        Error::Rotation(r) => match r {
            RotationError::UnknownStep(_) => Code::InvalidArgument,
            RotationError::NoCurrent(_)
            | RotationError::NoSuchToken { .. }
            | RotationError::NotPending { .. }
            | RotationError::Marked { .. }
            | RotationError::TestFailed { .. } => Code::FailedPrecondition,
            RotationError::Store(_) | RotationError::Kms(_) | RotationError::MasterKey(_) => {
                Code::Unavailable
            }
        },
        Error::Internal(_) => Code::Internal,
    }
}

/// The longest message a caller sees, in characters. Messages quote what
/// the caller sent (a key name, a caller identity); unbounded, a 60 KiB key
/// name came back as a `grpc-message` header larger than a client accepts,
/// and the call ended in an HTTP/2 protocol error instead of its status.
/// Percent-encoded, 512 characters stay under 6 KiB.
const MESSAGE_MAX_CHARS: usize = 512;

/// The message a caller sees for `e`.
pub fn message(e: &CallError) -> String {
    let text = match e {
        CallError::Denied(d) => d.to_string(),
        CallError::Key(e) => key_message(e),
        CallError::AuditUnavailable => "the audit log cannot be written; calls are refused until it can (audit.on_failure = \"refuse\"); retry later".to_owned(),
    };
    match super::subject::bounded(&text, MESSAGE_MAX_CHARS) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(cut) => cut,
    }
}

fn key_message(e: &Error) -> String {
    match e {
        // What the caller sent, or the key's state: the error's own text
        // names only key names, version ids, sizes and limits.
        Error::UnknownKey(_)
        | Error::UnknownIndex { .. }
        | Error::ScopeMissing { .. }
        | Error::Index(_)
        | Error::Format(_)
        | Error::Context(_)
        | Error::WrongKey(_)
        | Error::Unauthentic
        | Error::TooLarge { .. }
        | Error::Column(_)
        | Error::BadReason
        | Error::BatchTooLarge { .. }
        | Error::VersionNotFound { .. }
        | Error::Retired { .. }
        | Error::Compromised { .. }
        | Error::FetchThrottled(_)
        | Error::IndexQuota
        | Error::IndexNotGranted
        | Error::NoCurrent(_) => e.to_string(),
        Error::Rotation(
            RotationError::UnknownStep(_)
            | RotationError::NoCurrent(_)
            | RotationError::NoSuchToken { .. }
            | RotationError::NotPending { .. }
            | RotationError::Marked { .. },
        ) => e.to_string(),
        // The reason can quote a master-key error (an ARN, a file path):
        // the caller gets the secret and version, the log the reason.
        Error::Rotation(RotationError::TestFailed { secret, token, .. }) => format!(
            "testSecret failed for version {token} of secret {secret}; the reason is in the server log"
        ),
        Error::Internal(_) => "internal error; see the server log".to_owned(),
        // Store and KMS errors can carry ARNs, account ids and file paths:
        // callers get the category, operators get the detail in the log.
        Error::Store(_) => {
            "the secret store is unavailable for this key; details are in the server log".to_owned()
        }
        Error::Kms(_) => {
            "KMS is unavailable for this key; details are in the server log".to_owned()
        }
        Error::MasterKey(_) => {
            "a master-key version could not be loaded; details are in the server log".to_owned()
        }
        Error::Rotation(
            RotationError::Store(_) | RotationError::Kms(_) | RotationError::MasterKey(_),
        ) => "rotation failed on the secret store or KMS; details are in the server log".to_owned(),
    }
}

/// The gRPC name of a status code, for audit lines and metric labels.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn log(e: &CallError, code: Code) {
    let id = super::request_id::current().map(tracing::field::display);
    match code {
        Code::Internal => tracing::error!(request_id = id, error = %e, "internal failure"),
        Code::Unavailable => tracing::warn!(request_id = id, error = %e, "dependency failure"),
        _ if matches!(e, CallError::Key(Error::Rotation(_))) => {
            tracing::warn!(request_id = id, error = %e, ?code, "rotation refused");
        }
        _ => tracing::debug!(error = %e, ?code, "request refused"),
    }
}

/// The gRPC status for `e`.
pub fn to_status(e: CallError) -> Status {
    let code = code(&e);
    log(&e, code);
    Status::new(code, message(&e))
}

/// The per-item error of a batch for `e`.
pub fn item_error(e: Error) -> pb::ItemError {
    let e = CallError::Key(e);
    let code = code(&e);
    log(&e, code);
    pb::ItemError {
        code: code as i32,
        message: message(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_code_and_message() {
        use crate::backends::kms::KmsError;
        use crate::backends::store::StoreError;
        use crate::keys::master_key::MasterKeyError;
        // Detail that must never reach a caller: an ARN and a file path.
        const ARN: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:x";
        let store = || StoreError::SecretNotFound { secret: ARN.into() };
        let kms = || KmsError::AccessDenied(ARN.into());
        let master = || MasterKeyError::Malformed {
            secret: ARN.into(),
            version: "v".into(),
            reason: "/etc/envelope/key".into(),
        };
        let kv = || ("k".to_owned(), "v".to_owned());
        // (error, code, the fixed message; None: the error's own text, which
        // names only key names, versions, sizes and limits).
        let fixed = |m: &str| Some(m.to_owned());
        let rotation_failed =
            "rotation failed on the secret store or KMS; details are in the server log";
        let table: Vec<(CallError, Code, Option<String>)> = vec![
            (Denied::Unauthenticated.into(), Code::Unauthenticated, None),
            (
                Denied::PermissionDenied {
                    caller: "c".into(),
                    op: "encrypt",
                    key: "k".into(),
                }
                .into(),
                Code::PermissionDenied,
                None,
            ),
            (
                CallError::AuditUnavailable,
                Code::Unavailable,
                fixed(
                    "the audit log cannot be written; calls are refused until it can (audit.on_failure = \"refuse\"); retry later",
                ),
            ),
            (Error::UnknownKey("k".into()).into(), Code::NotFound, None),
            (
                Error::UnknownIndex {
                    key: "k".into(),
                    index: "i".into(),
                }
                .into(),
                Code::NotFound,
                None,
            ),
            (Error::IndexNotGranted.into(), Code::PermissionDenied, None),
            (Error::Unauthentic.into(), Code::InvalidArgument, None),
            (
                Error::WrongKey("k".into()).into(),
                Code::InvalidArgument,
                None,
            ),
            (
                Error::TooLarge { got: 2, max: 1 }.into(),
                Code::InvalidArgument,
                None,
            ),
            (Error::Column("c").into(), Code::InvalidArgument, None),
            (Error::BadReason.into(), Code::InvalidArgument, None),
            (
                Error::ScopeMissing {
                    index: "i".into(),
                    entry: "e".into(),
                }
                .into(),
                Code::InvalidArgument,
                None,
            ),
            (
                Error::BatchTooLarge { got: 2, max: 1 }.into(),
                Code::InvalidArgument,
                None,
            ),
            (
                Error::VersionNotFound {
                    key: kv().0,
                    version: kv().1,
                }
                .into(),
                Code::FailedPrecondition,
                None,
            ),
            (
                Error::Retired {
                    key: kv().0,
                    version: kv().1,
                }
                .into(),
                Code::FailedPrecondition,
                None,
            ),
            (
                Error::Compromised {
                    key: kv().0,
                    version: kv().1,
                    refused: "r",
                }
                .into(),
                Code::FailedPrecondition,
                None,
            ),
            (
                Error::FetchThrottled("k".into()).into(),
                Code::ResourceExhausted,
                None,
            ),
            (Error::IndexQuota.into(), Code::ResourceExhausted, None),
            (
                Error::NoCurrent("k".into()).into(),
                Code::Unavailable,
                fixed("key \"k\" has no AWSCURRENT master-key version"),
            ),
            (
                Error::Store(store()).into(),
                Code::Unavailable,
                fixed(
                    "the secret store is unavailable for this key; details are in the server log",
                ),
            ),
            (
                Error::Kms(kms()).into(),
                Code::Unavailable,
                fixed("KMS is unavailable for this key; details are in the server log"),
            ),
            (
                Error::MasterKey(master()).into(),
                Code::Unavailable,
                fixed("a master-key version could not be loaded; details are in the server log"),
            ),
            (
                Error::Rotation(RotationError::UnknownStep("s".into())).into(),
                Code::InvalidArgument,
                None,
            ),
            // ROTATION.md's table, with the RPC's `rotation: ` prefix.
            (
                Error::Rotation(RotationError::NoCurrent("s".into())).into(),
                Code::FailedPrecondition,
                fixed("rotation: secret s has no AWSCURRENT version"),
            ),
            (
                Error::Rotation(RotationError::NoSuchToken {
                    secret: "s".into(),
                    token: "t".into(),
                })
                .into(),
                Code::FailedPrecondition,
                fixed("rotation: secret s has no version t; run createSecret first"),
            ),
            (
                Error::Rotation(RotationError::NotPending {
                    secret: "s".into(),
                    token: "t".into(),
                })
                .into(),
                Code::FailedPrecondition,
                fixed("rotation: version t of secret s is not AWSPENDING"),
            ),
            (
                Error::Rotation(RotationError::Marked {
                    secret: "s".into(),
                    token: "t".into(),
                })
                .into(),
                Code::FailedPrecondition,
                fixed(
                    "rotation: version t of secret s is marked compromised; no rotation step tests or promotes it",
                ),
            ),
            (
                Error::Rotation(RotationError::TestFailed {
                    secret: "s".into(),
                    token: "t".into(),
                    reason: master().to_string(),
                })
                .into(),
                Code::FailedPrecondition,
                fixed(
                    "testSecret failed for version t of secret s; the reason is in the server log",
                ),
            ),
            (
                Error::Rotation(RotationError::Store(store())).into(),
                Code::Unavailable,
                fixed(rotation_failed),
            ),
            (
                Error::Rotation(RotationError::Kms(kms())).into(),
                Code::Unavailable,
                fixed(rotation_failed),
            ),
            (
                Error::Rotation(RotationError::MasterKey(master())).into(),
                Code::Unavailable,
                fixed(rotation_failed),
            ),
            (
                Error::Internal("secret detail").into(),
                Code::Internal,
                fixed("internal error; see the server log"),
            ),
        ];
        for (e, want_code, want_message) in table {
            let shown = e.to_string();
            assert_eq!(code(&e), want_code, "{shown}");
            let m = message(&e);
            assert_eq!(m, want_message.unwrap_or(shown), "{e:?}");
            assert!(
                !m.contains("arn:") && !m.contains("/etc/") && !m.contains("secret detail"),
                "{m}"
            );
        }
    }
}
