//! A training run started from the "New style" panel: its session, its events (forwarded so
//! they wake the UI), and what the panel shows of it (progress, losses, time left).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use eframe::egui;
use image::RgbImage;

use super::wake::Forwarded;
use crate::train::{ExportedStyle, TrainConfig, TrainEvent, TrainProgress, TrainingSession};

/// How a run ended.
#[derive(Debug, Clone)]
pub enum RunEnd {
    /// Stopped on request; the checkpoint holds `iteration` iterations.
    Stopped {
        iteration: u64,
    },
    Finished {
        style: ExportedStyle,
        iteration: u64,
    },
    Failed(String),
}

/// What a frame's events brought that the panel must act on.
pub enum RunUpdate {
    Preview {
        iteration: u64,
        image: Arc<RgbImage>,
    },
    Ended(RunEnd),
}

pub struct TrainingRun {
    /// `None` once abandoned (the app quits without waiting for the checkpoint).
    session: Option<TrainingSession>,
    events: Forwarded<TrainEvent>,
    /// The style's name, as the user typed it.
    pub name: String,
    pub folder: PathBuf,
    batch: usize,
    /// Iterations already done when this run started (more than 0 when resuming).
    pub first_iteration: u64,
    pub iterations: u64,
    pub progress: Option<TrainProgress>,
    /// Stop was asked for; the checkpoint is being saved.
    pub stopping: bool,
}

impl TrainingRun {
    /// Starts `config` on a background thread; its events wake `ctx`.
    pub fn start(config: TrainConfig, name: String, ctx: &egui::Context) -> Result<Self, String> {
        let folder = config.output.clone();
        let batch = config.recipe.batch;
        let iterations = config.iterations;
        let session = TrainingSession::start_in_background(config).map_err(|e| e.to_string())?;
        let events = Forwarded::forward(session.events(), ctx);
        Ok(Self {
            session: Some(session),
            events,
            name,
            folder,
            batch,
            first_iteration: 0,
            iterations,
            progress: None,
            stopping: false,
        })
    }

    /// Asks the training to stop after the current iteration (it saves a checkpoint first).
    pub fn stop(&mut self) {
        if let Some(session) = &self.session {
            session.stop();
            self.stopping = true;
        }
    }

    /// Events arrive without waking the UI: the caller must poll.
    pub fn needs_polling(&self) -> bool {
        self.events.needs_polling
    }

    /// Drains the events that arrived; never blocks.
    pub fn poll(&mut self) -> Vec<RunUpdate> {
        let mut updates = Vec::new();
        while let Some(event) = self.events.try_recv() {
            match event {
                TrainEvent::Started {
                    first_iteration,
                    iterations,
                    ..
                } => {
                    self.first_iteration = first_iteration;
                    self.iterations = iterations;
                }
                TrainEvent::Progress(progress) => self.progress = Some(progress),
                TrainEvent::Preview {
                    iteration, image, ..
                } => updates.push(RunUpdate::Preview { iteration, image }),
                TrainEvent::Checkpoint { .. } => {}
                TrainEvent::Stopped { iteration, .. } => {
                    updates.push(RunUpdate::Ended(RunEnd::Stopped { iteration }))
                }
                TrainEvent::Finished {
                    iteration, style, ..
                } => updates.push(RunUpdate::Ended(RunEnd::Finished { style, iteration })),
                TrainEvent::Failed { message } => {
                    updates.push(RunUpdate::Ended(RunEnd::Failed(message)))
                }
            }
        }
        updates
    }

    /// Iterations completed, counting those before a resume.
    pub fn iteration(&self) -> u64 {
        self.progress.map_or(self.first_iteration, |p| p.iteration)
    }

    pub fn fraction(&self) -> f32 {
        if self.iterations == 0 {
            0.0
        } else {
            (self.iteration() as f64 / self.iterations as f64) as f32
        }
    }

    /// Time left at the current throughput (none before the first iteration).
    pub fn time_left(&self) -> Option<Duration> {
        let progress = self.progress?;
        if progress.images_per_second <= 0.0 {
            return None;
        }
        let per_iteration = self.batch as f64 / progress.images_per_second;
        let left = self.iterations.saturating_sub(progress.iteration) as f64 * per_iteration;
        Some(Duration::from_secs_f64(left.min(1e9)))
    }

    /// "Iteration 12 / 2000 · 0.80 images/s · about 41 min left".
    pub fn describe(&self) -> String {
        let Some(progress) = self.progress else {
            return if self.first_iteration > 0 {
                format!(
                    "Resuming at iteration {} / {}: preparing…",
                    self.first_iteration, self.iterations
                )
            } else {
                "Preparing: reading the photos and works, computing the style targets…".into()
            };
        };
        let mut text = format!(
            "Iteration {} / {} · {:.2} images/s",
            progress.iteration, self.iterations, progress.images_per_second
        );
        if let Some(left) = self.time_left() {
            text.push_str(&format!(" · about {} left", duration(left)));
        }
        text
    }

    /// Leaves the training thread running without waiting for it (the app is quitting and the
    /// user would not wait for the checkpoint): the last periodic checkpoint stays valid, since
    /// checkpoints are written atomically.
    pub fn abandon(mut self) {
        if let Some(session) = self.session.take() {
            session.stop();
            std::mem::forget(session);
        }
    }
}

/// "2 h 05 min", "4 min 10 s", "12 s".
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(Duration::from_secs(12)), "12 s");
        assert_eq!(duration(Duration::from_secs(250)), "4 min 10 s");
        assert_eq!(duration(Duration::from_secs(7500)), "2 h 05 min");
    }
}
