//! Entry point: `atelier [PHOTO]` opens the desktop app; `atelier stylize`, `atelier train`,
//! `atelier bench`, `atelier fetch-vgg` are the command line.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ATELIER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line a user can act on; the chain of causes follows on the same line.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
