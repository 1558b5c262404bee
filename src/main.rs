//! The `envelope` binary: argument parsing only; the work is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use envelope::app::config::{LogFormat, Overrides, Settings};

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

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// SIGTERM or Ctrl-C. The handlers are installed when this is called, not
/// when the future is first polled, so a signal that arrives right after
/// start-up is never lost to the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
    }
}

async fn serve(
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let settings = Settings::load(config.as_deref(), Overrides { listen, data_dir })?;
    init_logging(&settings);
    let hardened =
        envelope::ops::hardening::harden(settings.lock_memory).map_err(anyhow::Error::msg)?;
    if !hardened.core_dumps_off || !hardened.not_dumpable {
        tracing::warn!(
            ?hardened,
            "core dumps or dumpability could not be turned off on this system"
        );
    } else {
        tracing::info!(?hardened, "process hardened");
    }
    // One TLS crypto provider for the whole process, installed before any TLS use.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let started = std::time::Instant::now();
    let keyring = Arc::new(envelope::app::server::start(&settings).await?);
    let security = envelope::app::server::prepare_security(&settings)?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let metrics = match settings.metrics_listen {
        Some(m) => {
            let l = tokio::net::TcpListener::bind(m)
                .await
                .with_context(|| format!("cannot listen on {m} for metrics"))?;
            let maddr = l.local_addr()?;
            println!("metrics on {maddr}");
            let task = tokio::spawn(envelope::ops::metrics::serve(
                l,
                keyring.clone(),
                settings.max_staleness,
                std::future::pending(),
            ));
            Some(task)
        }
        None => None,
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, keys = settings.keys.len(), startup_ms = started.elapsed().as_millis() as u64, "serving");
    let shutdown_signal_installed = shutdown_signal();
    // A plain line on stdout for scripts and tests that start us on port 0.
    println!("listening on {addr}");
    // SIGTERM or Ctrl-C: stop accepting, let in-flight requests finish, but
    // never wait longer than the drain bound.
    let stopping = Arc::new(tokio::sync::Notify::new());
    let signal = {
        let stopping = stopping.clone();
        let shutdown = shutdown_signal_installed;
        async move {
            shutdown.await;
            stopping.notify_one();
        }
    };
    let drain = settings.drain_timeout;
    let served = tokio::select! {
        r = envelope::app::server::serve(listener, keyring, security, &settings, signal) => r.map_err(anyhow::Error::from),
        () = async {
            stopping.notified().await;
            // New connections are refused from here; wait for the requests
            // already running, up to the drain bound. Idle keep-alive
            // connections do not hold the process up.
            let deadline = tokio::time::Instant::now() + drain;
            while envelope::edge::gate::in_flight() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            if envelope::edge::gate::in_flight() > 0 {
                tracing::warn!(?drain, in_flight = envelope::edge::gate::in_flight(), "drain bound reached; exiting with requests still in flight");
            }
        } => Ok(()),
    };
    if let Some(m) = metrics {
        m.abort();
    }
    tracing::info!("stopped");
    served
}

async fn init_keys(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = Settings::load(
        config.as_deref(),
        Overrides {
            listen: None,
            data_dir,
        },
    )?;
    init_logging(&settings);
    envelope::ops::hardening::harden(false).map_err(anyhow::Error::msg)?;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let backends = envelope::app::server::open_backends(&settings).await?;
    let created = envelope::app::server::init_keys(&settings, &backends).await?;
    for k in &settings.keys {
        let state = if created.contains(&k.name) {
            "created"
        } else {
            "exists"
        };
        println!("{}: {state}", k.name);
    }
    Ok(())
}

async fn rotate_direct(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    key: &str,
    step: Option<String>,
    token: Option<String>,
) -> anyhow::Result<()> {
    let settings = Settings::load(
        config.as_deref(),
        Overrides {
            listen: None,
            data_dir,
        },
    )?;
    init_logging(&settings);
    envelope::ops::hardening::harden(false).map_err(anyhow::Error::msg)?;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let k = settings
        .keys
        .iter()
        .find(|k| k.name == key)
        .with_context(|| format!("key {key:?} is not in the configuration"))?;
    let secret_id = k.secret_id.clone().unwrap_or_else(|| k.name.clone());
    let backends = envelope::app::server::open_backends(&settings).await?;
    let rotator = envelope::keys::rotation::Rotator {
        store: backends.store.as_ref(),
        kms: backends.kms.as_ref(),
        key_name: key,
        secret_id: &secret_id,
    };
    match (step, token) {
        (Some(step), Some(token)) => {
            rotator.step(step.parse()?, &token).await?;
            println!("{step}: done");
        }
        _ => {
            let (previous, current) = rotator.rotate().await?;
            println!("previous_version: {previous}\ncurrent_version: {current}");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => serve(config, listen, data_dir).await,
        Command::InitKeys { config, data_dir } => init_keys(config, data_dir).await,
        Command::Encrypt(a) => {
            envelope::app::cli::encrypt(&a.target, &a.key, &a.context, a.base64).await
        }
        Command::Decrypt(a) => {
            envelope::app::cli::decrypt(&a.target, &a.key, &a.context, a.base64).await
        }
        Command::Status { target, key } => envelope::app::cli::status(&target, &key).await,
        Command::Rotate {
            target,
            key,
            config,
            data_dir,
            step,
            token,
        } => match (config, data_dir, step) {
            (None, None, None) => envelope::app::cli::rotate(&target, &key).await,
            (None, None, Some(_)) => {
                anyhow::bail!(
                    "--step runs the library directly: give --config (or --data-dir for local mode)"
                )
            }
            (config, data_dir, step) => rotate_direct(config, data_dir, &key, step, token).await,
        },
        Command::Rewrap {
            target,
            key,
            context,
            input,
            output,
            batch,
        } => {
            let c =
                envelope::app::cli::rewrap_file(&target, &key, &context, &input, &output, batch)
                    .await?;
            println!(
                "rewrap: {} records, {} rewrapped, {} already current, {} failed",
                c.total, c.rewrapped, c.current, c.failed
            );
            if c.failed > 0 {
                anyhow::bail!(
                    "{} records could not be rewrapped (left unchanged in the output)",
                    c.failed
                );
            }
            Ok(())
        }
    }
}
