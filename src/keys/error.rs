//! What a key operation can fail with, rolled up from the lower layers'
//! own errors. The edge adds its refusals (`edge::status::CallError`) and
//! maps both to gRPC status codes in one place.

use crate::backends::kms::KmsError;
use crate::backends::store::StoreError;
use crate::keys::master_key::MasterKeyError;
use crate::keys::rotation::RotationError;
use crate::primitives::context::ContextError;
use crate::primitives::record::FormatError;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No key of that name is configured.
    #[error("unknown key name {0:?}")]
    UnknownKey(String),
    /// The ciphertext or blob is not well formed.
    #[error("malformed ciphertext: {0}")]
    Format(#[from] FormatError),
    /// The encryption context breaks a limit.
    #[error("invalid encryption context: {0}")]
    Context(#[from] ContextError),
    /// The record names another key name than the one asked for.
    #[error("the ciphertext was not produced under key {0:?}")]
    WrongKey(String),
    /// Authentication failed: wrong context, or tampered bytes. One opaque
    /// answer whatever the cause, so it helps no attacker.
    #[error(
        "decryption failed: the ciphertext was modified or the encryption context does not match"
    )]
    Unauthentic,
    /// The plaintext is over the limit.
    #[error("plaintext of {got} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// Bytes given.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// No index of that name on the key.
    #[error("key {key:?} has no index {index:?}")]
    UnknownIndex {
        /// The key name.
        key: String,
        /// The index asked for.
        index: String,
    },
    /// The request's context lacks an entry the index's scope names.
    #[error("index {index:?} needs the context entry {entry:?} (its scope)")]
    ScopeMissing {
        /// The index.
        index: String,
        /// The missing entry.
        entry: String,
    },
    /// Index tokens were asked for by a caller with no `index` grant.
    #[error("index tokens need an `index` grant on this key; this caller has none")]
    IndexNotGranted,
    /// The caller has used its blind-index token quota.
    #[error("the index-token quota of this caller is used up (per second or per day); retry later")]
    IndexQuota,
    /// A value that gets no token.
    #[error("{0}")]
    Index(#[from] crate::primitives::blind_index::IndexError),
    /// A column request whose parts do not fit together.
    #[error("invalid column request: {0}")]
    Column(&'static str),
    /// The batch is over the limit.
    #[error("batch of {got} items is over the limit of {max} items")]
    BatchTooLarge {
        /// Items given.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// The record names a master-key version the store does not have.
    #[error("master-key version {version} of key {key:?} is not available in the secret store")]
    VersionNotFound {
        /// Key name.
        key: String,
        /// Version id.
        version: String,
    },
    /// The record's version is older than the key's minimum decryption version.
    #[error(
        "master-key version {version} of key {key:?} is retired (older than the key's min_decryption_version)"
    )]
    Retired {
        /// Key name.
        key: String,
        /// Version id.
        version: String,
    },
    /// The record's version is marked compromised, and this use of it is refused.
    #[error("master-key version {version} of key {key:?} is marked compromised: {refused}")]
    Compromised {
        /// Key name.
        key: String,
        /// Version id.
        version: String,
        /// What is refused and what to do instead.
        refused: &'static str,
    },
    /// A MarkCompromised reason that is empty, too long or not printable.
    #[error("the reason must be 1 to 512 printable characters (it goes to the audit log)")]
    BadReason,
    /// Too many on-demand version fetches for this key just now.
    #[error("too many lookups of unknown master-key versions for key {0:?}; retry later")]
    FetchThrottled(String),
    /// The key has no AWSCURRENT version.
    #[error("key {0:?} has no AWSCURRENT master-key version")]
    NoCurrent(String),
    /// The secret store failed.
    #[error("secret store: {0}")]
    Store(#[from] StoreError),
    /// KMS failed.
    #[error("KMS: {0}")]
    Kms(#[from] KmsError),
    /// A master-key version could not be read.
    #[error("master key: {0}")]
    MasterKey(#[from] MasterKeyError),
    /// A rotation step failed.
    #[error("rotation: {0}")]
    Rotation(#[from] RotationError),
    /// A primitive failed while sealing (never expected; detail is logged).
    #[error("internal cryptographic failure")]
    Internal(&'static str),
}

impl Error {
    /// The master-key version a refresh refused and why, when this error is
    /// such a refusal (a shape the key does not accept, a rollback, a retired
    /// current version, a KMS key not on the allowed list) rather than a
    /// failure to reach the store or KMS. The reason never holds key bytes.
    pub fn refused_version(&self) -> Option<(&str, String)> {
        match self {
            Error::MasterKey(MasterKeyError::Malformed {
                version, reason, ..
            }) => Some((version, reason.clone())),
            Error::MasterKey(MasterKeyError::Kms {
                version,
                source: source @ KmsError::NotAllowed(_),
                ..
            }) => Some((version, source.to_string())),
            _ => None,
        }
    }
}

impl From<crate::primitives::crypto::CryptoError> for Error {
    fn from(e: crate::primitives::crypto::CryptoError) -> Self {
        match e {
            crate::primitives::crypto::CryptoError::Unauthentic => Error::Unauthentic,
            crate::primitives::crypto::CryptoError::Random => {
                Error::Internal("random generator failed")
            }
            crate::primitives::crypto::CryptoError::Primitive => {
                Error::Internal("AEAD primitive failed")
            }
        }
    }
}
