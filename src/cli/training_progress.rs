//! What `atelier train` and `atelier train-decoder` show while they run: a progress bar on a
//! terminal, a line every [`LOG_EVERY`] iterations in a log file (the bar hides itself
//! there), nothing with `--quiet`; and Ctrl+C or SIGTERM stopping the run with a checkpoint.

use std::sync::Arc;

use atelier::engine::{Engine, JobId};
use indicatif::{ProgressBar, ProgressStyle};

/// Without a terminal, a progress line every this many iterations.
const LOG_EVERY: u64 = 10;

pub struct TrainingProgress {
    bar: ProgressBar,
    quiet: bool,
}

impl TrainingProgress {
    pub fn new(iterations: u64, quiet: bool) -> Self {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(iterations);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} it (eta {eta}) {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        };
        Self { bar, quiet }
    }

    /// A line that must reach the user with or without a terminal (a hidden bar prints nothing).
    pub fn say(&self, line: String) {
        match (self.quiet, self.bar.is_hidden()) {
            (true, _) => {}
            (false, true) => eprintln!("{line}"),
            (false, false) => self.bar.println(line),
        }
    }

    /// The run began at `first_iteration` (after it, when resuming) with `photos` photos.
    pub fn started(&self, first_iteration: u64, photos: usize) {
        self.bar.set_position(first_iteration);
        self.bar.reset_eta();
        if first_iteration > 0 {
            self.say(format!("resuming after iteration {first_iteration}"));
        }
        self.bar.set_message(format!("{photos} photos"));
    }

    /// Iteration `iteration` of `iterations` is done; `message` tells its losses and speed.
    pub fn step(&self, iteration: u64, iterations: u64, message: String) {
        self.bar.set_position(iteration);
        if self.bar.is_hidden() && iteration.is_multiple_of(LOG_EVERY) {
            self.say(format!("iteration {iteration}/{iterations}: {message}"));
        }
        self.bar.set_message(message);
    }

    /// The run ended early (stopped, failed, cancelled): the bar stays as it was.
    pub fn abandon(&self) {
        self.bar.abandon();
    }

    /// The run finished: the bar goes.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The first Ctrl+C or SIGTERM cancels training `job`, which stops after its iteration with a
/// checkpoint (a second one exits at once).
pub fn stop_on_signal(engine: &Arc<Engine>, job: JobId) {
    let stoppable = Arc::downgrade(engine);
    super::interrupt::set_hook(
        "stopping: saving a checkpoint first (Ctrl+C again quits at once)",
        move || {
            if let Some(engine) = stoppable.upgrade() {
                engine.cancel(job);
            }
        },
    );
}
