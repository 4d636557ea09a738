//! Ctrl+C and SIGTERM. By default the process removes the temporary files of writes in progress
//! (the outputs they were to replace stay as they were) and exits with 130. A command with work
//! worth keeping (`atelier train`) sets a hook instead: the first signal asks it to stop cleanly
//! (a checkpoint), a second one exits at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The exit status of a program stopped by Ctrl+C (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: u8 = 130;

/// What to do on the first signal, and the line that says so.
type Hook = (&'static str, Box<dyn Fn() + Send>);

static HOOK: Mutex<Option<Hook>> = Mutex::new(None);
static SIGNALS: AtomicUsize = AtomicUsize::new(0);

/// The run was stopped by a signal (after any clean-up); `main` exits with [`EXIT_INTERRUPTED`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// Installs the handler (once, at start). Failing to install it only loses the clean-up.
pub fn install() {
    if let Err(e) = ctrlc::set_handler(on_signal) {
        tracing::debug!("no Ctrl+C handler: {e}");
    }
}

/// The first signal prints `message` and calls `hook` instead of exiting (until the hook is
/// cleared).
pub fn set_hook(message: &'static str, hook: impl Fn() + Send + 'static) {
    *HOOK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((message, Box::new(hook)));
}

pub fn clear_hook() {
    *HOOK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
}

/// Whether a signal has arrived.
pub fn interrupted() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}

fn on_signal() {
    let count = SIGNALS.fetch_add(1, Ordering::SeqCst) + 1;
    if count == 1 {
        let hook = HOOK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((message, hook)) = hook.as_ref() {
            eprintln!("\n{message}");
            hook();
            return;
        }
    }
    let removed = atelier::imaging::remove_unfinished_writes();
    if removed > 0 {
        eprintln!("\ninterrupted: removed {removed} unfinished output file(s)");
    } else {
        eprintln!("\ninterrupted");
    }
    std::process::exit(i32::from(EXIT_INTERRUPTED));
}
