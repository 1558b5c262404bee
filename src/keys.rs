//! The key hierarchy above the backends: master-key versions read from
//! secrets, per-key-name state with its caches, the seal and open
//! operations, and rotation.
//!
//! - [`master_key`]: a version's secret value (every accepted shape) into a
//!   key-encryption key; new versions in Envelope's own shape.
//! - [`keyring`]: every configured key name; per name the loaded versions,
//!   the data key in use, the decryption cache and the operations (seal,
//!   open, rewrap, client data keys).
//! - [`rotation`]: Secrets Manager's four rotation steps, shared by the CLI,
//!   the Admin API and the Lambda function.
//! - [`error`]: what a key operation can fail with, rolled up from the
//!   lower layers' errors.
//!
//! Imports: [`crate::backends`] and [`crate::primitives`] only.

pub mod error;
pub mod keyring;
pub mod master_key;
pub mod rotation;
