//! Entry point: `atelier [PHOTO]` opens the desktop app; `atelier stylize`, `atelier train`,
//! `atelier bench`, `atelier fetch-vgg` are the command line.

// Errors are handled, not unwrapped: a failure reaches the user as a message (tests may
// unwrap; see clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod cli;

/// Tensors come and go by the hundred megabytes; the system allocator hands large blocks back
/// to the kernel on every free, so each new tensor page-faults its memory in again. mimalloc
/// keeps and reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` and `mi_option_arena_purge_mult` in mimalloc's option enum (the same
/// in its v2 and v3; libmimalloc-sys names no constants for them).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_OPTION_ARENA_PURGE_MULT: libmimalloc_sys::mi_option_t = 24;
/// Freed memory stays mapped this long (ms) before it goes back to the OS: long enough for the
/// next tensor of a job to reuse it (the default, 10 ms, makes every layer fault it back in).
const PURGE_DELAY_MS: std::ffi::c_long = 1000;
/// Large tensors live in mimalloc's arenas, purged after `PURGE_DELAY_MS` times this: measured,
/// a 10 s delay still re-faulted ~40 MB per Gatys step, 100 s none. Memory goes back to the OS
/// after that long idle.
const ARENA_PURGE_MULT: std::ffi::c_long = 100;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // SAFETY: sets plain integer options of the allocator; no other thread exists yet.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_PURGE_MULT, ARENA_PURGE_MULT);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ATELIER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: in a log file or a pipe they are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = cli::Cli::parse();
    cli::interrupt::install();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<cli::interrupt::Interrupted>().is_some() => {
            eprintln!("{e}");
            std::process::ExitCode::from(cli::interrupt::EXIT_INTERRUPTED)
        }
        Err(e) => {
            // One line a user can act on; the chain of causes follows on the same line.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
