//! The application on top: configuration, the server's life cycle, the
//! client commands and the rotation Lambda's handler.
//!
//! - [`config`]: raw flags and TOML into one validated [`config::Settings`].
//! - [`server`]: start-up (backends, keyring) and serving until shutdown.
//! - [`cli`]: the client commands that speak gRPC to a server.
//! - [`lambda`]: the handler Secrets Manager invokes to rotate a key.
//!
//! Imports: every layer below.

pub mod cli;
pub mod config;
pub mod lambda;
pub mod server;
