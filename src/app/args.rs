//! The `envelope` command line: every subcommand and flag, parsed by clap.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The command line.
#[derive(Parser)]
#[command(
    name = "envelope",
    version,
    about = "Envelope encryption of personal data over gRPC",
    long_about = None
)]
pub struct Args {
    /// On failure, print every cause, and log the AWS SDK's full errors
    /// (debug level for Envelope's own log lines).
    #[arg(long, global = true)]
    pub verbose: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Serve the gRPC API (local mode unless the config says mode = "aws").
    Serve {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Local mode's data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Create the first master-key version of every configured key that has
    /// none (local or AWS mode), then exit.
    InitKeys {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Local mode's data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Encrypt stdin to stdout.
    Encrypt(ClientArgs),
    /// Decrypt stdin to stdout.
    Decrypt(ClientArgs),
    /// Blind-index tokens of stdin's values, one a line: each output line
    /// is the value's tokens, `VERSION:HEX` separated by spaces, current
    /// version first (docs/SEARCH.md).
    Index {
        /// The server.
        #[command(flatten)]
        target: super::cli::Target,
        /// Key name.
        #[arg(long, default_value = "default")]
        key: String,
        /// The index, as configured on the key.
        #[arg(long)]
        index: String,
        /// Context entry (the index's scope), key=value; repeat for more.
        #[arg(long = "context", value_name = "KEY=VALUE")]
        context: Vec<String>,
    },
    /// Show key status as JSON.
    Status {
        /// The server.
        #[command(flatten)]
        target: super::cli::Target,
        /// Only this key name.
        #[arg(long, default_value = "")]
        key: String,
    },
    /// Rotate a key's master key: all four steps, or one with --step and
    /// --token. With --config it runs the rotation library directly against
    /// the secret store (no server needed); otherwise it asks the server at --addr.
    Rotate {
        /// The server (when no --config is given).
        #[command(flatten)]
        target: super::cli::Target,
        /// Key name.
        #[arg(long)]
        key: String,
        /// Run against the backends of this configuration instead of a server.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Local mode's data directory (with --config or for local mode).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// One step: createSecret, setSecret, testSecret or finishSecret.
        #[arg(long, requires = "token")]
        step: Option<String>,
        /// The rotation token (the new version's id) for --step.
        #[arg(long, requires = "step")]
        token: Option<String>,
    },
    /// Mark a master-key version compromised: no replica encrypts under it
    /// again, Decrypt refuses its records (re-encrypt them with `migrate`),
    /// and the key rotates at once if it is current (docs/ROTATION.md).
    Compromise {
        /// The server.
        #[command(flatten)]
        target: super::cli::Target,
        /// Key name.
        #[arg(long)]
        key: String,
        /// The compromised version id.
        #[arg(long)]
        version: String,
        /// Why (goes to the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Rewrap a file of records (one base64 record per line) to the key's
    /// current master-key version through RewrapBatch; reports counts.
    Rewrap {
        /// The server.
        #[command(flatten)]
        target: super::cli::Target,
        /// Key name.
        #[arg(long, default_value = "default")]
        key: String,
        /// Encryption context shared by every record, key=value; repeat for more.
        #[arg(long = "context", value_name = "KEY=VALUE")]
        context: Vec<String>,
        /// Input file.
        #[arg(long)]
        input: PathBuf,
        /// Output file (written atomically; may equal the input).
        #[arg(long)]
        output: PathBuf,
        /// Records per RewrapBatch call.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Check everything a deployment depends on, as this identity: the
    /// configuration, TLS files, policy, each key's secret and KMS rights,
    /// replica regions and the clock. Changes nothing; exit status 0 only
    /// when no check failed (docs/OPERATIONS.md, "First deployment").
    Doctor {
        /// TOML configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Print the checks as JSON.
        #[arg(long)]
        json: bool,
        /// Check the rights of this IAM role, assumed from the identity the
        /// SDK's default chain gives.
        #[arg(long)]
        role_arn: Option<String>,
    },
    /// Move an encrypted column of a PostgreSQL table to the key's current
    /// master-key version in place, through the server (docs/ROTATION.md).
    Migrate(super::migrate::MigrateArgs),
}

/// What `encrypt` and `decrypt` take.
#[derive(clap::Args)]
pub struct ClientArgs {
    /// The server.
    #[command(flatten)]
    pub target: super::cli::Target,
    /// Key name.
    #[arg(long, default_value = "default")]
    pub key: String,
    /// Encryption context entry, key=value; repeat for more.
    #[arg(long = "context", value_name = "KEY=VALUE")]
    pub context: Vec<String>,
    /// Ciphertext as a base64 line instead of raw bytes.
    #[arg(long)]
    pub base64: bool,
    /// Column mode: one value per stdin line (one base64 record per line
    /// when decrypting), answered line for line through EncryptColumn or
    /// DecryptColumn.
    #[arg(long, conflicts_with = "base64")]
    pub column: bool,
    /// Column mode: lines are `ROW<TAB>VALUE`, and ROW is bound into each
    /// record's context under this name (kept in the output).
    #[arg(long, requires = "column", value_name = "NAME")]
    pub row_field: Option<String>,
    /// Column mode: values per call.
    #[arg(long, requires = "column", default_value_t = 1000)]
    pub batch: usize,
}
