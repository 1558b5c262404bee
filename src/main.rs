//! The `envelope` binary: parses arguments and dispatches to the library
//! (`envelope::app`), nothing else.

use anyhow::Context as _;
use clap::Parser;
use envelope::app::args::{Args, Command};
use envelope::app::config::{Overrides, Settings};
use envelope::app::{cli, column_cli, direct, doctor, migrate, server, startup};
use std::net::SocketAddr;
use std::path::PathBuf;

// Per-item protobuf messages make a batch allocate thousands of small
// buffers; mimalloc's thread-local free lists serve them faster than glibc's
// arenas (measured in docs/BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let verbose = args.verbose;
    let run = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args)));
    match run {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A person reads this: a few lines, not the error's Debug form.
            eprint!("{}", envelope::app::report::render(&e, verbose));
            std::process::ExitCode::FAILURE
        }
    }
}

fn settings(
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    verbose: bool,
) -> anyhow::Result<Settings> {
    let mut settings = Settings::load(config.as_deref(), Overrides { listen, data_dir })?;
    if verbose {
        settings.log_level = "info,envelope=debug".into();
    }
    Ok(settings)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let verbose = args.verbose;
    let settings = |config, listen, data_dir| settings(config, listen, data_dir, verbose);
    match args.command {
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
        Command::Encrypt(a) if a.column => column_cli::run(&a, column_cli::Mode::Encrypt).await,
        Command::Decrypt(a) if a.column => column_cli::run(&a, column_cli::Mode::Decrypt).await,
        Command::Encrypt(a) => cli::encrypt(&a.target, &a.key, &a.context, a.base64).await,
        Command::Decrypt(a) => cli::decrypt(&a.target, &a.key, &a.context, a.base64).await,
        Command::Index {
            target,
            key,
            index,
            context,
        } => column_cli::index(&target, &key, &index, &context).await,
        Command::Migrate(a) => migrate::run(&a).await,
        Command::Doctor {
            config,
            json,
            role_arn,
        } => {
            // The report is the output; the log only for what breaks it.
            let level = if verbose {
                "info,envelope=debug"
            } else {
                "error"
            };
            startup::init_process(level, envelope::app::config::LogFormat::Text, false)?;
            let checks = doctor::run(&config, role_arn.as_deref()).await;
            let shown = if json {
                doctor::json(&checks)
            } else {
                doctor::table(&checks)
            };
            println!("{}", shown.trim_end());
            if doctor::failed(&checks) {
                // The report has said what failed and what to do.
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Status { target, key } => cli::status(&target, &key).await,
        Command::Compromise {
            target,
            key,
            version,
            reason,
        } => cli::compromise(&target, &key, &version, &reason).await,
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
