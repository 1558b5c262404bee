//! The bottom layer: cryptographic primitives and byte formats, with no
//! knowledge of keys, stores or requests.
//!
//! - [`crypto`]: AES-256-GCM, HKDF, PBKDF2, randomness, and key types that
//!   wipe on drop and print redacted.
//! - [`wrap`]: the one wrapped-key layout (nonce ‖ key ‖ tag) used wherever
//!   a 32-byte key is sealed under another key.
//! - [`context`]: encryption-context limits and the canonical encoding bound
//!   as associated data.
//! - [`record`]: the record and blob format (strict parser, encoders) and
//!   master-key version ids.
//! - [`blind_index`]: value normalization, index-key derivation and
//!   truncated HMAC tokens for searchable fields.
//! - [`self_test`]: the power-on self-test every binary runs before it
//!   touches a key: known answers for each primitive, and AES-256-GCM checked
//!   against a second, independent implementation.
//!
//! Imports: nothing above this layer.

pub mod blind_index;
pub mod context;
pub mod crypto;
pub mod record;
pub mod self_test;
pub mod wrap;
