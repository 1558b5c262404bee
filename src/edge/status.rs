//! The one place that maps errors to gRPC status codes. Internal failures
//! get a fixed message and their detail goes to the log; authentication
//! failures are one opaque answer. No message carries plaintext, key bytes
//! or ciphertext: the errors they come from are built to hold none.

use tonic::{Code, Status};

use crate::keys::error::Error;
use crate::keys::rotation::RotationError;
use crate::pb;

/// The status code for `e`.
pub fn code(e: &Error) -> Code {
    match e {
        Error::UnknownKey(_) => Code::NotFound,
        Error::Format(_)
        | Error::Context(_)
        | Error::WrongKey(_)
        | Error::Unauthentic
        | Error::TooLarge { .. }
        | Error::BatchTooLarge { .. } => Code::InvalidArgument,
        Error::VersionNotFound { .. } | Error::Retired { .. } => Code::FailedPrecondition,
        Error::NoCurrent(_) | Error::Store(_) | Error::Kms(_) | Error::MasterKey(_) => {
            Code::Unavailable
        }
        Error::FetchThrottled(_) => Code::ResourceExhausted,
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
        Error::Denied(crate::edge::authz::Denied::Unauthenticated) => Code::Unauthenticated,
        Error::Denied(crate::edge::authz::Denied::PermissionDenied { .. }) => {
            Code::PermissionDenied
        }
        Error::Internal(_) => Code::Internal,
    }
}

/// The message a caller sees for `e`.
pub fn message(e: &Error) -> String {
    match e {
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
        other => other.to_string(),
    }
}

fn log(e: &Error, code: Code) {
    let id = crate::edge::gate::request_id().map(tracing::field::display);
    match code {
        Code::Internal => tracing::error!(request_id = id, error = %e, "internal failure"),
        Code::Unavailable => tracing::warn!(request_id = id, error = %e, "dependency failure"),
        _ => tracing::debug!(error = %e, ?code, "request refused"),
    }
}

/// The gRPC status for `e`.
pub fn to_status(e: Error) -> Status {
    let code = code(&e);
    log(&e, code);
    Status::new(code, message(&e))
}

/// The per-item error of a batch for `e`.
pub fn item_error(e: Error) -> pb::ItemError {
    let code = code(&e);
    log(&e, code);
    pb::ItemError {
        code: code as i32,
        message: message(&e),
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        to_status(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_documented_table() {
        assert_eq!(code(&Error::UnknownKey("x".into())), Code::NotFound);
        assert_eq!(code(&Error::Unauthentic), Code::InvalidArgument);
        assert_eq!(
            code(&Error::VersionNotFound {
                key: "k".into(),
                version: "v".into()
            }),
            Code::FailedPrecondition
        );
        assert_eq!(code(&Error::NoCurrent("k".into())), Code::Unavailable);
        assert_eq!(
            message(&Error::Internal("secret detail")),
            "internal error; see the server log"
        );
    }
}
