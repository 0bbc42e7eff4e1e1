//! The command line: `roomcache serve | import | config`.
//!
//! Owns: parsing the command line (with each setting's default in `--help`),
//! logging set-up, reporting a failure once, and the exit status. May not
//! touch: anything the commands do (see `crate::server`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
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
    /// Print the effective settings (file, environment and flags merged) as a
    /// config file `--config` reads back (passwords masked), and exit.
    Config(SettingsArgs),
}

/// The log filter of `log_level`: actix-server's start-up lines (runtime,
/// workers, the listener's address) are left out unless asked for by name.
fn log_filter(log_level: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    if log_level.contains("actix_server") {
        EnvFilter::try_new(log_level)
    } else {
        EnvFilter::try_new(format!("{log_level},actix_server=warn"))
    }
}

/// Whether log lines may carry colours: only on a terminal, and not when
/// `NO_COLOR` is set.
fn colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_logging(settings: &Settings) -> anyhow::Result<()> {
    // Validated with the settings; checked again rather than unwrapped.
    let filter = log_filter(&settings.log_level)
        .map_err(|e| anyhow::anyhow!("invalid log_level {:?}: {e}", settings.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours())
        .with_writer(std::io::stderr);
    let installed = match settings.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("setting up logging: {e}"))
}

/// The command line, with each setting's default shown in its flag's help.
fn command_with_defaults() -> clap::Command {
    let defaults = serde_json::to_value(Settings::default()).unwrap_or_default();
    let describe = |arg: clap::Arg| -> clap::Arg {
        let Some(value) = defaults.get(arg.get_id().as_str()) else {
            return arg;
        };
        let shown = match value {
            serde_json::Value::Null => "unset".to_owned(),
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Array(items) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map_or_else(|| item.to_string(), str::to_owned)
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        arg.help(format!("{help} [default: {shown}]"))
    };
    Cli::command().mut_subcommands(|sub| sub.mut_args(describe))
}

/// Runs the command line's command; the process's exit status.
pub fn run() -> ExitCode {
    let matches = command_with_defaults().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let mut json_logs = false;
    let mut run_logged = |args: &SettingsArgs, import: bool| -> anyhow::Result<()> {
        let settings = Settings::load(args)?;
        json_logs = settings.log_format == LogFormat::Json;
        init_logging(&settings)?;
        let system = actix_rt::System::new();
        if import {
            system.block_on(crate::server::import(settings))
        } else {
            system.block_on(crate::server::serve(settings))
        }
    };
    let result = match cli.command {
        Command::Config(args) => Settings::load(&args)
            .map_err(anyhow::Error::from)
            .and_then(|settings| Ok(settings.to_toml_masked()?))
            .map(|text| print!("{text}")),
        Command::Import(args) => run_logged(&args, true),
        Command::Serve(args) => run_logged(&args, false),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            crate::report_failure(&format!("{error:#}"), json_logs);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_shows_every_settings_default() {
        let mut command = command_with_defaults();
        let help = command
            .find_subcommand_mut("serve")
            .unwrap()
            .render_long_help()
            .to_string();
        for shown in [
            "[default: var/roomcache.sock]",
            "[default: master]",
            "[default: 5000]",
            "[default: unset]",
            "[default: text]",
            "[default: config/roomcache.toml if it exists",
        ] {
            assert!(help.contains(shown), "{shown} missing from:\n{help}");
        }
    }

    #[test]
    fn actix_servers_start_up_lines_are_left_out_unless_named() {
        assert_eq!(
            log_filter("info").unwrap().to_string(),
            "actix_server=warn,info"
        );
        assert_eq!(
            log_filter("actix_server=info").unwrap().to_string(),
            "actix_server=info"
        );
        assert!(log_filter("roomcache=verbose").is_err());
    }
}
