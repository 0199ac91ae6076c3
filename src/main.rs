//! The `tidegate` command line: thin wrappers over the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tidegate::config::{self, Settings};

#[derive(Parser)]
#[command(
    version,
    about = "Load-aware adaptive batch processor (Redis queue → MongoDB bulk writes)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve /metrics, /healthz and /readyz until SIGTERM or SIGINT.
    Run,
    /// Print the effective settings (secrets redacted) and where each value came from.
    Config {
        /// Print the settings table in Markdown, as the README shows it.
        #[arg(long)]
        markdown: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Config { markdown: true } = cli.command {
        print!("{}", config::markdown_table());
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("tidegate: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Config { .. } => {
            for (var, value) in settings.effective() {
                let source = match std::env::var(var.name) {
                    Ok(v) if !v.trim().is_empty() => "env",
                    _ => "default",
                };
                println!("{:<28} {:<40} ({source})", var.name, value);
            }
            ExitCode::SUCCESS
        }
        Command::Run => {
            tidegate::telemetry::init_tracing(&settings.log_filter, settings.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("tidegate: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(tidegate::app::run(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "tidegate stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
