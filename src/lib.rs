//! Envelope: envelope encryption of personal data as a gRPC service.
//!
//! Map of the crate, from the bottom of the key hierarchy up:
//! - [`crypto`]: AES-256-GCM, HKDF, PBKDF2 and key types that wipe and redact.
//! - [`context`]: encryption-context limits and canonical encoding.
//! - [`envelope`]: the record format (strict parser, encoders).
//! - [`kms`]: the root of the hierarchy (a local root-key file, or AWS KMS).
//! - [`store`]: the secret store with staged master-key versions (local files,
//!   or AWS Secrets Manager); [`aws`]: SDK set-up and error classification.
//! - [`master_key`]: reading and writing master-key secret values.
//! - [`keyring`]: per-key state, data keys and caches; the operations.
//! - [`rotation`]: Secrets Manager's four rotation steps; [`lambda`]: their Lambda entry point.
//! - [`service`], [`admin`]: the gRPC services; [`status`] maps errors to codes.
//! - [`config`], [`server`], [`cli`]: settings, start-up, and the client commands.

pub mod admin;
pub mod audit;
pub mod authz;
pub mod aws;
pub mod cli;
pub mod config;
pub mod context;
pub mod crypto;
pub mod envelope;
pub mod error;
pub mod gate;
pub mod hardening;
pub mod keyring;
pub mod kms;
pub mod lambda;
pub mod master_key;
pub mod metered;
pub mod metrics;
mod pb_debug;
pub mod rotation;
pub mod server;
pub mod service;
pub mod status;
pub mod store;
pub mod tls;

/// Generated protobuf and gRPC code for `envelope.v1`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
pub mod pb {
    tonic::include_proto!("envelope.v1");
}

/// The encoded descriptor set of our protos, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envelope_descriptor.bin"));
