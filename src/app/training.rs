//! A training run started from the "New style" panel: a training job of the app's engine, the
//! events the app hands it, and what the panel shows of it (progress, losses, time left).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use image::RgbImage;

use crate::engine::{
    Engine, Event, EventBody, ExportedStyle, JobId, JobKind, TrainConfig, TrainProgress,
};

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
    engine: Arc<Engine>,
    job: JobId,
    /// The job's events, handed over by the app's event loop.
    inbox: Vec<Event>,
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
    /// Starts `config` as a training job of `engine` (which shares its loaded VGG with it).
    pub fn start(config: TrainConfig, name: String, engine: Arc<Engine>) -> Result<Self, String> {
        let folder = config.output.clone();
        let batch = config.recipe.batch;
        let iterations = config.iterations;
        let job = engine.train(config).map_err(|e| e.to_string())?;
        Ok(Self {
            engine,
            job,
            inbox: Vec::new(),
            name,
            folder,
            batch,
            first_iteration: 0,
            iterations,
            progress: None,
            stopping: false,
        })
    }

    /// The engine job this run is.
    pub fn job(&self) -> JobId {
        self.job
    }

    /// Asks the training to stop after the current iteration (it saves a checkpoint first).
    pub fn stop(&mut self) {
        if self.engine.cancel(self.job) {
            self.stopping = true;
        }
    }

    /// Takes one of this run's events (the app routes them by job id).
    pub fn deliver(&mut self, event: Event) {
        if event.job == self.job {
            self.inbox.push(event);
        }
    }

    /// Handles the events delivered since the last call; never blocks. Only the newest preview
    /// image is taken, from the engine's slot.
    pub fn poll(&mut self) -> Vec<RunUpdate> {
        let mut updates = Vec::new();
        let mut preview = false;
        for event in std::mem::take(&mut self.inbox) {
            match event.body {
                EventBody::TrainingStarted {
                    first_iteration,
                    iterations,
                    ..
                } => {
                    self.first_iteration = first_iteration;
                    self.iterations = iterations;
                }
                EventBody::Training(progress) => self.progress = Some(progress),
                EventBody::Preview { .. } => preview = true,
                EventBody::Stopped { iteration, .. } => {
                    updates.push(RunUpdate::Ended(RunEnd::Stopped { iteration }))
                }
                EventBody::Trained(trained) => updates.push(RunUpdate::Ended(RunEnd::Finished {
                    style: trained.style,
                    iteration: trained.iteration,
                })),
                EventBody::Failed(failure) => {
                    updates.push(RunUpdate::Ended(RunEnd::Failed(failure.to_string())))
                }
                EventBody::Cancelled => updates.push(RunUpdate::Ended(RunEnd::Failed(
                    "the training was cancelled before it started".into(),
                ))),
                _ => {}
            }
        }
        if preview {
            if let Some(frame) = self.engine.take_preview(JobKind::Training) {
                if frame.job == self.job {
                    let iteration = frame.step as u64;
                    // Before the end, so the panel shows the last picture.
                    updates.insert(
                        0,
                        RunUpdate::Preview {
                            iteration,
                            image: frame.image,
                        },
                    );
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
    pub fn abandon(self) {
        self.engine.detach_training();
        self.engine.cancel(self.job);
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
