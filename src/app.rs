//! The application on top: configuration, start-up shared by every binary,
//! the server's life cycle, the commands and the rotation Lambda's handler.
//!
//! - [`args`]: the command line, parsed by clap.
//! - [`config`]: raw flags and TOML into one validated [`config::Settings`].
//! - [`startup`]: process set-up (logging, hardening, TLS provider) and the
//!   backends, keyring and security layer built from the settings.
//! - [`server`]: [`server::run`] serves until shutdown, then drains.
//! - [`cli`]: the client commands that speak gRPC to a server
//!   ([`column_cli`]: their line-per-value column mode);
//!   [`direct`]: the commands that act on the backends with no server.
//! - [`doctor`]: `envelope doctor`, every check a deployment depends on.
//! - [`progress`]: the progress report of `migrate` and `rewrap`.
//! - [`report`]: what the binary prints when an error ends it.
//! - [`lambda`]: the handler Secrets Manager invokes to rotate a key.
//! - [`migrate`]: `envelope migrate`, a PostgreSQL column moved to the
//!   current master-key version through the server; [`pgpass`]: libpq's
//!   password file, for it.
//!
//! Imports: every layer below.

pub mod args;
pub mod cli;
pub mod column_cli;
pub mod config;
pub mod direct;
pub mod doctor;
pub mod fuzz_checks;
pub mod lambda;
pub mod migrate;
pub mod pgpass;
pub mod progress;
pub mod report;
pub mod server;
pub mod startup;
