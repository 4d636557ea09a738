//! Training on a background thread, driven through channels: the command line and the desktop
//! app start a session, receive [`TrainEvent`]s, and may stop it between iterations.
//! Stopping saves a checkpoint; resuming is starting again with `resume` set.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::Device;
use crossbeam_channel::{Receiver, Sender};
use image::RgbImage;

use super::config::TrainConfig;
use super::export::ExportedStyle;
use super::trainer::{TrainInputs, TrainLosses, Trainer};
use crate::error::{Error, Result};
use crate::nn::vgg::Vgg;

/// What a training session reports, in order: `Started`, then `Progress` after every
/// iteration with `Preview` and `Checkpoint` between, then exactly one of `Finished`, `Stopped`
/// or `Failed`.
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
    Failed {
        message: String,
    },
}

impl TrainEvent {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TrainEvent::Finished { .. } | TrainEvent::Stopped { .. } | TrainEvent::Failed { .. }
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

/// A running training; dropping it stops the training (with a checkpoint) and waits for it.
pub struct TrainingSession {
    events: Receiver<TrainEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TrainingSession {
    /// Starts training `config` on `device`, loading the VGG loss network from
    /// `config.recipe.vgg`. Problems with the inputs arrive as a `Failed` event.
    pub fn start(config: TrainConfig, device: Device) -> Result<Self> {
        let vgg_path = config.recipe.vgg.clone();
        Self::spawn(config, device, move |device| {
            Ok(Arc::new(Vgg::load(&vgg_path, device)?))
        })
    }

    /// [`Self::start`] on the best device this build supports, with the training thread (and
    /// the threads it starts) at a lower scheduling priority, like the app's stylize engine: on
    /// a machine with few cores the window must get the CPU the moment it draws. For the app,
    /// which names no device types.
    pub fn start_in_background(config: TrainConfig) -> Result<Self> {
        let vgg_path = config.recipe.vgg.clone();
        Self::spawn_with(config, crate::engine::best_device(), true, move |device| {
            Ok(Arc::new(Vgg::load(&vgg_path, device)?))
        })
    }

    /// [`Self::start`] with an already loaded loss network (e.g. one the app keeps).
    pub fn start_with_vgg(config: TrainConfig, device: Device, vgg: Arc<Vgg>) -> Result<Self> {
        Self::spawn(config, device, move |_| Ok(vgg))
    }

    fn spawn(
        config: TrainConfig,
        device: Device,
        load_vgg: impl FnOnce(&Device) -> Result<Arc<Vgg>> + Send + 'static,
    ) -> Result<Self> {
        Self::spawn_with(config, device, false, load_vgg)
    }

    fn spawn_with(
        config: TrainConfig,
        device: Device,
        background: bool,
        load_vgg: impl FnOnce(&Device) -> Result<Arc<Vgg>> + Send + 'static,
    ) -> Result<Self> {
        let (sender, events) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("atelier-train".into())
            .spawn(move || {
                if background {
                    crate::engine::priority::lower_current_thread();
                }
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(config, &device, load_vgg, &sender, &stop_flag)
                }));
                let failure = match outcome {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("internal error: the training thread panicked".to_string()),
                };
                if let Some(message) = failure {
                    let _ = sender.send(TrainEvent::Failed { message });
                }
            })
            .map_err(|e| Error::invalid(format!("cannot start the training thread: {e}")))?;
        Ok(Self {
            events,
            stop,
            thread: Some(thread),
        })
    }

    /// Asks the training to stop after the current iteration; a `Stopped` event follows once
    /// the checkpoint is saved.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// The event stream: poll with `try_recv` from a UI loop, or block with `recv`/`iter`.
    pub fn events(&self) -> &Receiver<TrainEvent> {
        &self.events
    }

    /// Waits for the training thread to end.
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TrainingSession {
    fn drop(&mut self) {
        self.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Weight of the newest iteration in the smoothed throughput.
const THROUGHPUT_SMOOTHING: f64 = 0.2;

fn run(
    config: TrainConfig,
    device: &Device,
    load_vgg: impl FnOnce(&Device) -> Result<Arc<Vgg>>,
    events: &Sender<TrainEvent>,
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
    let send = |event: TrainEvent| {
        // The receiver may be gone (caller exited); the training still ends cleanly.
        let _ = events.send(event);
    };
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
