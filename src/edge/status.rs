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
            | RotationError::TestFailed { .. } => Code::FailedPrecondition,
            RotationError::Store(_) | RotationError::Kms(_) | RotationError::MasterKey(_) => {
                Code::Unavailable
            }
        },
        Error::Internal(_) => Code::Internal,
    }
}

/// The message a caller sees for `e`.
pub fn message(e: &CallError) -> String {
    match e {
        CallError::Denied(d) => d.to_string(),
        CallError::Key(e) => key_message(e),
        CallError::AuditUnavailable => "the audit log cannot be written; calls are refused until it can (audit.on_failure = \"refuse\"); retry later".to_owned(),
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
            | RotationError::TestFailed { .. },
        ) => e.to_string(),
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
    fn codes_match_the_documented_table() {
        let code = |e: Error| code(&CallError::Key(e));
        assert_eq!(code(Error::UnknownKey("x".into())), Code::NotFound);
        assert_eq!(code(Error::Unauthentic), Code::InvalidArgument);
        assert_eq!(
            code(Error::VersionNotFound {
                key: "k".into(),
                version: "v".into()
            }),
            Code::FailedPrecondition
        );
        assert_eq!(code(Error::NoCurrent("k".into())), Code::Unavailable);
        assert_eq!(
            message(&CallError::Key(Error::Internal("secret detail"))),
            "internal error; see the server log"
        );
    }
}
