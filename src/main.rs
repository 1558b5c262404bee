//! The `envelope` binary: parses arguments and dispatches to the library
//! (`envelope::app`), nothing else.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use envelope::app::config::{Overrides, Settings};
use envelope::app::{cli, direct, server, startup};
use std::net::SocketAddr;
use std::path::PathBuf;

// Per-item protobuf messages make a batch allocate thousands of small
// buffers; mimalloc's thread-local free lists serve them faster than glibc's
// arenas (measured in docs/BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "envelope",
    version,
    about = "Envelope encryption of personal data over gRPC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// Show key status as JSON.
    Status {
        #[command(flatten)]
        target: envelope::app::cli::Target,
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
        target: envelope::app::cli::Target,
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
    /// Rewrap a file of records (one base64 record per line) to the key's
    /// current master-key version through RewrapBatch; reports counts.
    Rewrap {
        #[command(flatten)]
        target: envelope::app::cli::Target,
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
}

#[derive(clap::Args)]
struct ClientArgs {
    #[command(flatten)]
    target: envelope::app::cli::Target,
    /// Key name.
    #[arg(long, default_value = "default")]
    key: String,
    /// Encryption context entry, key=value; repeat for more.
    #[arg(long = "context", value_name = "KEY=VALUE")]
    context: Vec<String>,
    /// Ciphertext as a base64 line instead of raw bytes.
    #[arg(long)]
    base64: bool,
}

fn settings(
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<Settings> {
    Ok(Settings::load(
        config.as_deref(),
        Overrides { listen, data_dir },
    )?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => {
            let settings = settings(config, listen, data_dir)?;
            startup::init(&settings)?;
            // Installed before the listener is bound, so no signal is lost.
            let shutdown = server::shutdown_signal();
            let listener = tokio::net::TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("cannot listen on {}", settings.listen))?;
            Ok(server::run(&settings, listener, shutdown).await?)
        }
        Command::InitKeys { config, data_dir } => {
            let settings = settings(config, None, data_dir)?;
            startup::init_process(&settings.log_level, settings.log_format, false)?;
            Ok(direct::init_keys(&settings).await?)
        }
        Command::Encrypt(a) => cli::encrypt(&a.target, &a.key, &a.context, a.base64).await,
        Command::Decrypt(a) => cli::decrypt(&a.target, &a.key, &a.context, a.base64).await,
        Command::Status { target, key } => cli::status(&target, &key).await,
        Command::Rotate {
            target,
            key,
            config,
            data_dir,
            step,
            token,
        } => match (config, data_dir, step) {
            (None, None, None) => cli::rotate(&target, &key).await,
            (None, None, Some(_)) => {
                anyhow::bail!(
                    "--step runs the library directly: give --config (or --data-dir for local mode)"
                )
            }
            (config, data_dir, step) => {
                let settings = settings(config, None, data_dir)?;
                startup::init_process(&settings.log_level, settings.log_format, false)?;
                Ok(direct::rotate(&settings, &key, step.zip(token)).await?)
            }
        },
        Command::Rewrap {
            target,
            key,
            context,
            input,
            output,
            batch,
        } => cli::rewrap(&target, &key, &context, &input, &output, batch).await,
    }
}
