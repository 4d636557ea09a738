//! The engine's thread: runs one job at a time, keeps loaded networks and cached features.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use candle_core::Device;
use crossbeam_channel::{Receiver, Sender};
use image::RgbImage;

use super::event::{Event, JobOutput, JobStats};
use super::job::{Job, JobId, Method};
use super::Command;
use crate::error::{Error, Result};
use crate::imaging;
use crate::nn::transformer::TransformerNet;
use crate::nn::vgg::Vgg;
use crate::stylize::cache::FeatureCache;
use crate::stylize::gatys::{self, Observer, StepUpdate};
use crate::stylize::{color, network};

/// A loaded file, remembered with the modification time it was loaded at.
struct Loaded<T> {
    path: PathBuf,
    modified: Option<SystemTime>,
    value: Arc<T>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

pub(super) struct Worker {
    device: Device,
    commands: Receiver<Command>,
    events: Sender<Event>,
    cancel_below: Arc<AtomicU64>,
    vgg: Option<Loaded<Vgg>>,
    networks: HashMap<PathBuf, Loaded<TransformerNet>>,
    features: FeatureCache,
}

impl Worker {
    pub(super) fn new(
        device: Device,
        commands: Receiver<Command>,
        events: Sender<Event>,
        cancel_below: Arc<AtomicU64>,
    ) -> Self {
        Self {
            device,
            commands,
            events,
            cancel_below,
            vgg: None,
            networks: HashMap::new(),
            features: FeatureCache::default(),
        }
    }

    pub(super) fn run(mut self) {
        while let Ok(command) = self.commands.recv() {
            let (id, job) = match command {
                Command::Run(id, job) => (id, job),
                Command::Shutdown => break,
            };
            if self.is_cancelled(id) {
                self.send(Event::Cancelled { job: id });
                continue;
            }
            // A panic inside candle or a kernel must not take the caller down: it becomes an event.
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| self.run_job(id, &job)));
            let event = match outcome {
                Ok(Ok(output)) => Event::Finished { job: id, output },
                Ok(Err(Error::Cancelled)) => Event::Cancelled { job: id },
                Ok(Err(e)) => Event::Failed {
                    job: id,
                    message: e.to_string(),
                },
                Err(panic) => Event::Failed {
                    job: id,
                    message: format!("internal error: {}", panic_message(&panic)),
                },
            };
            // A job cancelled in its very last step still counts as cancelled.
            let event = match event {
                Event::Finished { .. } if self.is_cancelled(id) => Event::Cancelled { job: id },
                other => other,
            };
            self.send(event);
        }
    }

    fn is_cancelled(&self, id: JobId) -> bool {
        id < self.cancel_below.load(Ordering::SeqCst)
    }

    fn send(&self, event: Event) {
        // The receiver may be gone (caller exited); nothing useful to do then.
        let _ = self.events.send(event);
    }

    fn run_job(&mut self, id: JobId, job: &Job) -> Result<JobOutput> {
        if !(0.0..=1.0).contains(&job.strength) || job.strength.is_nan() {
            return Err(Error::invalid(format!(
                "strength must be between 0 and 1, got {}",
                job.strength
            )));
        }
        let started = Instant::now();
        match &job.method {
            Method::Optimize {
                vgg,
                styles,
                config,
            } => {
                config.validate()?;
                let total_steps = config.total_steps();
                self.send(Event::Started {
                    job: id,
                    total_steps,
                });
                let vgg = self.load_vgg(vgg)?;
                let mut observer = EventObserver {
                    id,
                    started,
                    events: &self.events,
                    cancel_below: &self.cancel_below,
                };
                let out = gatys::stylize(
                    &vgg,
                    &self.device,
                    &job.content,
                    styles,
                    config,
                    &mut self.features,
                    &mut observer,
                )?;
                let content =
                    imaging::resize_exact(&job.content, out.image.width(), out.image.height());
                finish(
                    job,
                    out.image,
                    content,
                    JobStats {
                        method: job.method.name(),
                        width: 0,
                        height: 0,
                        steps: out.steps,
                        evaluations: out.evaluations,
                        seconds: started.elapsed().as_secs_f64(),
                        losses: Some(out.losses),
                        initial_style_loss: Some(out.initial_style_loss),
                    },
                )
            }
            Method::Network {
                model,
                size,
                preserve_color,
            } => {
                self.send(Event::Started {
                    job: id,
                    total_steps: 1,
                });
                let net = self.load_network(model)?;
                if self.is_cancelled(id) {
                    return Err(Error::Cancelled);
                }
                let side = network::network_side(job.content.width(), job.content.height(), *size);
                let content = if side == job.content.width().max(job.content.height()) {
                    (*job.content).clone()
                } else {
                    imaging::resize_longer_side(&job.content, side)
                };
                let mut stylized = network::stylize(&net, &content, &self.device)?;
                if *preserve_color {
                    // Luminance-only transfer, as the optimisation does it: the network paints
                    // the brightness, the photo keeps its colours.
                    stylized = color::keep_photo_colors(&stylized, &content);
                }
                self.send(Event::Progress {
                    job: id,
                    step: 1,
                    total_steps: 1,
                    losses: Default::default(),
                    elapsed: started.elapsed(),
                });
                finish(
                    job,
                    stylized,
                    content,
                    JobStats {
                        method: job.method.name(),
                        width: 0,
                        height: 0,
                        steps: 1,
                        evaluations: 1,
                        seconds: started.elapsed().as_secs_f64(),
                        losses: None,
                        initial_style_loss: None,
                    },
                )
            }
        }
    }

    fn load_vgg(&mut self, path: &Path) -> Result<Arc<Vgg>> {
        let stamp = modified(path);
        if let Some(loaded) = &self.vgg {
            if loaded.path == path && loaded.modified == stamp {
                return Ok(loaded.value.clone());
            }
        }
        let vgg = Arc::new(Vgg::load(path, &self.device)?);
        // Cached features belong to the previous network.
        self.features.clear();
        self.vgg = Some(Loaded {
            path: path.to_path_buf(),
            modified: stamp,
            value: vgg.clone(),
        });
        Ok(vgg)
    }

    fn load_network(&mut self, path: &Path) -> Result<Arc<TransformerNet>> {
        let stamp = modified(path);
        if let Some(loaded) = self.networks.get(path) {
            if loaded.modified == stamp {
                return Ok(loaded.value.clone());
            }
        }
        let net = Arc::new(TransformerNet::load(path, &self.device)?);
        // A handful of styles is typical; keep memory bounded all the same.
        if self.networks.len() >= 8 {
            self.networks.clear();
        }
        self.networks.insert(
            path.to_path_buf(),
            Loaded {
                path: path.to_path_buf(),
                modified: stamp,
                value: net.clone(),
            },
        );
        Ok(net)
    }
}

fn finish(
    job: &Job,
    stylized: RgbImage,
    content: RgbImage,
    mut stats: JobStats,
) -> Result<JobOutput> {
    let image = imaging::blend(&stylized, &content, job.strength)?;
    stats.width = image.width();
    stats.height = image.height();
    Ok(JobOutput {
        image: Arc::new(image),
        stylized: Arc::new(stylized),
        content: Arc::new(content),
        stats,
    })
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Turns optimisation progress into events and answers cancellation from the shared counter.
struct EventObserver<'a> {
    id: JobId,
    started: Instant,
    events: &'a Sender<Event>,
    cancel_below: &'a AtomicU64,
}

impl Observer for EventObserver<'_> {
    fn on_step(&mut self, update: StepUpdate) -> Result<()> {
        let _ = self.events.send(Event::Progress {
            job: self.id,
            step: update.step,
            total_steps: update.total_steps,
            losses: update.losses,
            elapsed: self.started.elapsed(),
        });
        if let Some(image) = update.preview {
            let _ = self.events.send(Event::Preview {
                job: self.id,
                step: update.step,
                image: Arc::new(image),
            });
        }
        if self.cancelled() {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    fn cancelled(&self) -> bool {
        self.id < self.cancel_below.load(Ordering::SeqCst)
    }
}
