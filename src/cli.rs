//! The command line: `roomcache serve | import | config`.
//!
//! Owns: parsing the command line, logging set-up and the exit status. May
//! not touch: anything the commands do (see `crate::server`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, Settings, SettingsArgs};

/// roomcache: the sliding-sync room tables of a Matrix homeserver, in memory,
/// written through to Postgres, served over a Unix socket.
#[derive(Debug, Parser)]
#[command(name = "roomcache", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load the cached rows, then serve the API on the Unix socket until SIGTERM/SIGINT.
    Serve(SettingsArgs),
    /// Import every row from the Synapse database (`source_database_url`), then exit.
    /// Resumable: an interrupted import continues where it stopped.
    Import(SettingsArgs),
    /// Print the effective settings (file, environment and flags merged) and exit.
    Config(SettingsArgs),
}

fn init_logging(settings: &Settings) {
    let filter = EnvFilter::try_new(&settings.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Runs the command line's command; the process's exit status.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config(args) => Settings::load(&args)
            .map(|settings| println!("{settings:#?}"))
            .map_err(anyhow::Error::from),
        Command::Import(args) => match Settings::load(&args) {
            Ok(settings) => {
                init_logging(&settings);
                actix_rt::System::new().block_on(crate::server::import(settings))
            }
            Err(e) => Err(e.into()),
        },
        Command::Serve(args) => match Settings::load(&args) {
            Ok(settings) => {
                init_logging(&settings);
                actix_rt::System::new().block_on(crate::server::serve(settings))
            }
            Err(e) => Err(e.into()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("roomcache: {error:#}");
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
