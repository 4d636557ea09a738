//! One training run to its end, reporting [`TrainEvent`]s and stopping between iterations when
//! asked. The engine runs it on a thread of its own as a training job (with the VGG it already
//! holds): the command line and the desktop app start trainings through the engine. Stopping
//! saves a checkpoint; resuming is starting again with `resume` set.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use image::RgbImage;

use super::config::TrainConfig;
use super::export::ExportedStyle;
use super::trainer::{TrainInputs, TrainLosses, Trainer};
use crate::error::Result;
use crate::nn::vgg::Vgg;

/// What a training run reports, in order: `Started`, then `Progress` after every iteration with
/// `Preview` and `Checkpoint` between, then `Finished` or `Stopped` (a failure is [`run`]'s
/// error).
#[derive(Clone)]
pub enum TrainEvent {
    /// Inputs checked and targets computed; training starts after `first_iteration` completed
    /// iterations (more than 0 when resuming).
    Started {
        first_iteration: u64,
        iterations: u64,
        photos: usize,
    },
    Progress(TrainProgress),
    Preview {
        iteration: u64,
        image: Arc<RgbImage>,
        path: PathBuf,
    },
    Checkpoint {
        iteration: u64,
        path: PathBuf,
    },
    /// Stopped on request after `iteration`; resume from `checkpoint`.
    Stopped {
        iteration: u64,
        checkpoint: PathBuf,
    },
    Finished {
        iteration: u64,
        style: ExportedStyle,
        /// Mean wall time of the iterations this session ran.
        seconds_per_iteration: f64,
    },
}

impl TrainEvent {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TrainEvent::Finished { .. } | TrainEvent::Stopped { .. }
        )
    }
}

/// Progress after one iteration.
#[derive(Debug, Clone, Copy)]
pub struct TrainProgress {
    pub iteration: u64,
    pub iterations: u64,
    pub losses: TrainLosses,
    /// Training throughput, smoothed over recent iterations.
    pub images_per_second: f64,
    /// Time since this session started.
    pub elapsed: Duration,
}

/// Weight of the newest iteration in the smoothed throughput.
const THROUGHPUT_SMOOTHING: f64 = 0.2;

/// Runs one training to its end on the calling thread: `send` receives every event; a failure is
/// the returned error; `stop` is read between iterations. The engine runs its training jobs
/// through this with the VGG it already holds (`load_vgg`).
pub fn run(
    config: TrainConfig,
    device: &Device,
    load_vgg: impl FnOnce(&Device) -> Result<Arc<Vgg>>,
    send: impl Fn(TrainEvent),
    stop: &AtomicBool,
) -> Result<()> {
    let started = Instant::now();
    // Inputs first: a missing painting is reported before the VGG is read.
    let inputs = TrainInputs::load(&config, device)?;
    let vgg = load_vgg(device)?;
    let mut trainer = Trainer::from_inputs(config, inputs, vgg, device)?;
    let iterations = trainer.config().iterations;
    let preview_every = trainer.config().preview_every;
    let checkpoint_every = trainer.config().checkpoint_every;
    let first_iteration = trainer.iteration();
    send(TrainEvent::Started {
        first_iteration,
        iterations,
        photos: trainer.photo_count(),
    });
    let batch = trainer.config().recipe.batch as f64;
    let mut images_per_second = 0.0;
    let mut seconds = 0.0;
    while trainer.iteration() < iterations {
        if stop.load(Ordering::SeqCst) {
            let checkpoint = trainer.save_checkpoint()?;
            send(TrainEvent::Stopped {
                iteration: trainer.iteration(),
                checkpoint,
            });
            return Ok(());
        }
        let report = trainer.step()?;
        seconds += report.seconds;
        let now = batch / report.seconds.max(1e-9);
        images_per_second = if images_per_second == 0.0 {
            now
        } else {
            THROUGHPUT_SMOOTHING * now + (1.0 - THROUGHPUT_SMOOTHING) * images_per_second
        };
        send(TrainEvent::Progress(TrainProgress {
            iteration: report.iteration,
            iterations,
            losses: report.losses,
            images_per_second,
            elapsed: started.elapsed(),
        }));
        let due = |every: u64| every > 0 && report.iteration.is_multiple_of(every);
        if due(preview_every) {
            let image = trainer.preview()?;
            let path = trainer.save_preview(&image)?;
            send(TrainEvent::Preview {
                iteration: report.iteration,
                image: Arc::new(image),
                path,
            });
        }
        if due(checkpoint_every) && report.iteration < iterations {
            let path = trainer.save_checkpoint()?;
            send(TrainEvent::Checkpoint {
                iteration: report.iteration,
                path,
            });
        }
    }
    // A final checkpoint lets a later run extend this one with more --iterations.
    let path = trainer.save_checkpoint()?;
    send(TrainEvent::Checkpoint {
        iteration: trainer.iteration(),
        path,
    });
    let style = trainer.export()?;
    let ran = trainer.iteration() - first_iteration;
    send(TrainEvent::Finished {
        iteration: trainer.iteration(),
        style,
        seconds_per_iteration: if ran > 0 { seconds / ran as f64 } else { 0.0 },
    });
    Ok(())
}
