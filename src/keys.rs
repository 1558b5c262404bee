//! The key hierarchy above the backends: master-key versions read from
//! secrets, per-key-name state with its caches, the seal and open
//! operations, and rotation.
//!
//! - [`master_key`]: a version's secret value (every accepted shape) into a
//!   key-encryption key; new versions in Envelope's own shape.
//! - [`keyring`]: every configured key name; [`named_key`]: one of them,
//!   built from its [`source`] (secret, store, KMS) and [`limits`].
//! - Per key name, the state the request path reads without a lock:
//!   [`versions`] (the loaded versions as a [`key_set`] snapshot, refresh,
//!   on-demand fetch), [`data_key`] (the data key sealing records and its
//!   nonces) and [`decrypt_cache`] (unwrapped data keys).
//! - The operations: [`seal`] (Encrypt, batches), [`open`] (Decrypt,
//!   batches, Rewrap), [`column`] (EncryptColumn, DecryptColumn: one shared
//!   context, a row entry per record), [`client_keys`] (GenerateDataKey,
//!   UnwrapDataKey), [`index`] (ComputeIndex: blind-index tokens for every
//!   version that may still hold records), [`reencrypt`] (ReencryptBatch,
//!   ReencryptColumn: opened and sealed again under the current version).
//! - [`usage`]: records opened per master-key version and when each was
//!   last read (the server's view of re-encryption debt).
//! - [`compromise`]: a version marked compromised, and what each use of
//!   its records may still do.
//! - [`rotation`]: Secrets Manager's four rotation steps, shared by the CLI,
//!   the Admin API and the Lambda function.
//! - [`error`]: what a key operation can fail with, rolled up from the
//!   lower layers' errors.
//!
//! Imports: [`crate::backends`] and [`crate::primitives`] only.

pub mod client_keys;
pub mod column;
pub mod compromise;
pub mod data_key;
pub mod decrypt_cache;
pub mod error;
pub mod index;
pub mod key_set;
pub mod keyring;
pub mod limits;
pub mod master_key;
pub mod named_key;
pub mod open;
pub mod reencrypt;
pub mod rotation;
pub mod seal;
pub mod source;
pub mod usage;
mod versions;

pub use data_key::{DataKeyLimits, MAX_RECORDS_CEILING};
pub use error::Error;
pub use key_set::{KeySet, LOADED_STAGES, Loaded};
pub use keyring::{DEFAULT_KEY, Keyring};
pub use limits::Limits;
pub use named_key::{CacheFigures, NamedKey};
pub use open::{Opened, Version};
pub use seal::Sealed;
pub use source::KeySource;
pub use versions::{FETCH_BURST, FETCH_PER_SEC};

#[cfg(test)]
mod tests;
