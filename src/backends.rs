//! Where keys come from: the secret store holding master-key versions and
//! the KMS at the root of the hierarchy, each a small trait with a local and
//! an AWS implementation beside it.
//!
//! - [`store`]: staged versions of a secret; [`store::local`] (files in the
//!   data directory) and [`store::secrets_manager`] (AWS Secrets Manager).
//! - [`kms`]: generate and decrypt data keys; [`kms::local`] (a root key
//!   file) and [`kms::aws_kms`] (AWS KMS).
//! - [`private_files`]: local mode's owner-only files (write, create once,
//!   check ownership and mode).
//! - [`aws_sdk`]: the one place that loads the AWS SDK configuration and
//!   classifies SDK errors; SDK types do not leave the AWS files.
//!
//! Imports: [`crate::primitives`] only.

pub mod aws_sdk;
pub mod kms;
pub mod private_files;
pub mod store;
