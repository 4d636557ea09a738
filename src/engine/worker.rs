//! The engine's thread: runs previews and renders one at a time (a waiting preview first, then
//! renders in order), starts training jobs on threads of their own, and keeps the loaded
//! networks and cached features.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use candle_core::Device;
use crossbeam_channel::{Receiver, Sender};
use image::RgbImage;

use super::event::{Event, EventBody, JobOutput, JobStats, PreviewFrame, TrainedStyle};
use super::failure::Failure;
use super::job::{Job, JobId, JobKind, Method, NetworkStyle, VideoJob};
use super::{Command, Shared};
use crate::error::{Error, Result};
use crate::imaging;
use crate::nn::transformer::TransformerNet;
use crate::nn::vgg::Vgg;
use crate::stylize::cache::FeatureCache;
use crate::stylize::gatys::{self, Observer, StepUpdate};
use crate::stylize::regions::RegionWeights;
use crate::stylize::{arbitrary, color, network};
use crate::train::decoder::{self as decoder_training, DecoderEvent, DecoderTrainConfig};
use crate::train::{session, TrainConfig, TrainEvent};

/// A loaded file, remembered with the modification time it was loaded at.
struct Loaded<T> {
    path: PathBuf,
    modified: Option<SystemTime>,
    value: Arc<T>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The loaded VGG loss network, shared by the worker (optimisation) and training threads, which
/// load it on first use: a training job checks its photos and works before the VGG is read.
#[derive(Default)]
struct SharedVgg {
    loaded: std::sync::Mutex<Option<Loaded<Vgg>>>,
}

impl SharedVgg {
    /// The network in `path`, loaded once (again when the file changed).
    fn get(&self, path: &Path, device: &Device) -> Result<Arc<Vgg>> {
        let mut loaded = super::lock(&self.loaded);
        let stamp = modified(path);
        if let Some(current) = loaded.as_ref() {
            if current.path == path && current.modified == stamp {
                return Ok(current.value.clone());
            }
        }
        let vgg = Arc::new(Vgg::load(path, device)?);
        *loaded = Some(Loaded {
            path: path.to_path_buf(),
            modified: stamp,
            value: vgg.clone(),
        });
        Ok(vgg)
    }
}

/// What a queued job does.
pub(super) enum Work {
    Stylize(Box<Job>),
    Video(Box<VideoJob>),
}

/// A preview or render waiting for its turn.
struct Queued {
    id: JobId,
    kind: JobKind,
    work: Work,
    cancel: Arc<AtomicBool>,
}

impl Queued {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

/// Sends one job's events.
#[derive(Clone)]
pub(super) struct Outbox {
    pub(super) id: JobId,
    pub(super) kind: JobKind,
    events: Sender<Event>,
}

impl Outbox {
    /// An outbox whose events go nowhere: for the frames of a video, whose job reports frames.
    pub(super) fn quiet(&self) -> Self {
        let (events, _) = crossbeam_channel::bounded(0);
        Self {
            id: self.id,
            kind: self.kind,
            events,
        }
    }

    pub(super) fn send(&self, body: EventBody) {
        // The receiver may be gone (the caller exited); nothing useful to do then.
        let _ = self.events.send(Event {
            job: self.id,
            kind: self.kind,
            body,
        });
    }

    fn failed(&self, error: Error) {
        self.send(match Failure::from_error(error) {
            Some(failure) => EventBody::Failed(failure),
            None => EventBody::Cancelled,
        });
    }
}

pub(super) struct Worker {
    device: Device,
    commands: Receiver<Command>,
    events: Sender<Event>,
    pub(super) shared: Arc<Shared>,
    vgg: Arc<SharedVgg>,
    /// The network the cached features were computed with.
    features_of: Option<Arc<Vgg>>,
    networks: HashMap<PathBuf, Loaded<TransformerNet>>,
    /// Decoders of the arbitrary method, by folder (`None`: the built-in ones).
    decoders: HashMap<Option<PathBuf>, Arc<arbitrary::Decoders>>,
    /// Style statistics of the arbitrary method, by the works' fingerprint and side: changing
    /// strength or blend re-encodes only the photo.
    style_stats: HashMap<(u64, u32), Arc<arbitrary::StyleStats>>,
    features: FeatureCache,
    previews: VecDeque<Queued>,
    renders: VecDeque<Queued>,
    trainings: Vec<JoinHandle<()>>,
}

impl Worker {
    pub(super) fn new(
        device: Device,
        commands: Receiver<Command>,
        events: Sender<Event>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            device,
            commands,
            events,
            shared,
            vgg: Arc::default(),
            features_of: None,
            networks: HashMap::new(),
            decoders: HashMap::new(),
            style_stats: HashMap::new(),
            features: FeatureCache::default(),
            previews: VecDeque::new(),
            renders: VecDeque::new(),
            trainings: Vec::new(),
        }
    }

    fn outbox(&self, id: JobId, kind: JobKind) -> Outbox {
        Outbox {
            id,
            kind,
            events: self.events.clone(),
        }
    }

    pub(super) fn run(mut self) {
        let mut shutdown = false;
        while !shutdown {
            // Block only when nothing is waiting; then take every command that arrived, so the
            // choice below sees the newest preview and every cancellation.
            if self.previews.is_empty() && self.renders.is_empty() {
                match self.commands.recv() {
                    Ok(command) => shutdown |= self.accept(command),
                    Err(_) => shutdown = true,
                }
            }
            while let Ok(command) = self.commands.try_recv() {
                shutdown |= self.accept(command);
            }
            self.end_cancelled_in_queue();
            if shutdown {
                break;
            }
            // A waiting preview first: it is what the user is looking at, and latest-wins keeps
            // at most one alive.
            let next = match self.previews.pop_back() {
                Some(preview) => Some(preview),
                None => self.renders.pop_front(),
            };
            if let Some(queued) = next {
                self.run_stylize(queued);
            }
        }
        // Every job still waiting ends as cancelled: none is lost.
        let waiting: Vec<Queued> = self
            .previews
            .drain(..)
            .chain(self.renders.drain(..))
            .collect();
        for queued in waiting {
            self.end(&queued, EventBody::Cancelled);
        }
        while let Ok(command) = self.commands.try_recv() {
            let (id, kind) = match command {
                Command::Stylize { id, kind, .. } => (id, kind),
                Command::Video { id, .. } => (id, JobKind::Render),
                Command::Train { id, .. } | Command::TrainDecoder { id, .. } => {
                    (id, JobKind::Training)
                }
                Command::Shutdown => continue,
            };
            self.shared.forget(id);
            self.outbox(id, kind).send(EventBody::Cancelled);
        }
        let trainings = std::mem::take(&mut self.trainings);
        if self.shared.wait_for_training.load(Ordering::SeqCst) {
            for training in trainings {
                let _ = training.join();
            }
        }
    }

    /// Queues or starts `command`; true for the shutdown command.
    fn accept(&mut self, command: Command) -> bool {
        match command {
            Command::Stylize {
                id,
                kind,
                job,
                cancel,
            } => {
                let queued = Queued {
                    id,
                    kind,
                    work: Work::Stylize(job),
                    cancel,
                };
                match kind {
                    JobKind::Preview => self.previews.push_back(queued),
                    _ => self.renders.push_back(queued),
                }
                false
            }
            Command::Video { id, job, cancel } => {
                let queued = Queued {
                    id,
                    kind: JobKind::Render,
                    work: Work::Video(job),
                    cancel,
                };
                self.renders.push_back(queued);
                false
            }
            Command::Train { id, config, cancel } => {
                self.start_training(id, *config, cancel);
                false
            }
            Command::TrainDecoder {
                id,
                config,
                vgg,
                cancel,
            } => {
                self.start_decoder_training(id, *config, vgg, cancel);
                false
            }
            Command::Shutdown => true,
        }
    }

    /// Queued jobs that were cancelled (or superseded) end now, in submission order.
    fn end_cancelled_in_queue(&mut self) {
        let mut ended: Vec<Queued> = Vec::new();
        for queue in [&mut self.previews, &mut self.renders] {
            let (cancelled, kept): (VecDeque<Queued>, VecDeque<Queued>) =
                queue.drain(..).partition(Queued::cancelled);
            *queue = kept;
            ended.extend(cancelled);
        }
        ended.sort_by_key(|q| q.id);
        for queued in ended {
            self.end(&queued, EventBody::Cancelled);
        }
    }

    /// Sends a job's terminal event; it can no longer be cancelled.
    fn end(&self, queued: &Queued, body: EventBody) {
        self.shared.forget(queued.id);
        self.outbox(queued.id, queued.kind).send(body);
    }

    fn run_stylize(&mut self, queued: Queued) {
        let outbox = self.outbox(queued.id, queued.kind);
        // A panic inside candle or a kernel must not take the caller down: it becomes an event.
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| match &queued.work {
            Work::Stylize(job) => self.run_job(&outbox, job, &queued.cancel),
            Work::Video(job) => self.run_video(&outbox, job, &queued.cancel),
        }));
        let body = match outcome {
            // A job cancelled in its very last step still counts as cancelled.
            Ok(Ok(_)) if queued.cancelled() => EventBody::Cancelled,
            Ok(Ok(output)) => EventBody::Finished(Box::new(output)),
            Ok(Err(e)) => match Failure::from_error(e) {
                Some(failure) => EventBody::Failed(failure),
                None => EventBody::Cancelled,
            },
            Err(panic) => EventBody::Failed(Failure::Internal(panic_message(&panic))),
        };
        self.end(&queued, body);
    }

    pub(super) fn run_job(
        &mut self,
        outbox: &Outbox,
        job: &Job,
        cancel: &AtomicBool,
    ) -> Result<JobOutput> {
        if !(0.0..=1.0).contains(&job.strength) || job.strength.is_nan() {
            return Err(Error::invalid(format!(
                "strength must be between 0 and 1, got {}",
                job.strength
            )));
        }
        if let Some(regions) = &job.regions {
            regions.check(job.method.style_count())?;
        }
        let started = Instant::now();
        match &job.method {
            Method::Optimize {
                vgg,
                styles,
                config,
            } => {
                config.validate()?;
                outbox.send(EventBody::Started {
                    total_steps: config.total_steps(),
                });
                let vgg = self.load_vgg(vgg)?;
                let (final_w, final_h) =
                    imaging::fit_size(job.content.width(), job.content.height(), config.size);
                let weights = regions_at(job, final_w, final_h);
                let mut observer = EventObserver {
                    outbox,
                    shared: &self.shared,
                    started,
                    cancel,
                    regions: weights.as_ref().map(|w| (w, &*job.content)),
                };
                let out = gatys::stylize_in_regions(
                    &vgg,
                    &self.device,
                    &job.content,
                    styles,
                    config,
                    weights.as_ref(),
                    &mut self.features,
                    &mut observer,
                )?;
                let weights = weights.map(|w| w.resized(out.image.width(), out.image.height()));
                let content = Arc::new(imaging::resize_exact(
                    &job.content,
                    out.image.width(),
                    out.image.height(),
                ));
                finish(
                    job,
                    out.image,
                    content,
                    weights.as_ref(),
                    JobStats {
                        method: job.method.name(),
                        width: 0,
                        height: 0,
                        steps: out.steps,
                        evaluations: out.evaluations,
                        seconds: started.elapsed().as_secs_f64(),
                        losses: Some(out.losses),
                        initial_style_loss: Some(out.initial_style_loss),
                        tiling: None,
                        notes: Vec::new(),
                        video: None,
                    },
                )
            }
            Method::Network {
                styles,
                size,
                preserve_color,
                stroke,
            } => {
                outbox.send(EventBody::Started { total_steps: 1 });
                let (width, height) = job.content.dimensions();
                let side = network::network_side(width, height, *size);
                let content = if side == width.max(height) {
                    job.content.clone()
                } else {
                    Arc::new(imaging::resize_longer_side(&job.content, side))
                };
                let weights = regions_at(job, content.width(), content.height());
                let (mut stylized, tiling) = self.run_networks(
                    styles,
                    &content,
                    *stroke,
                    weights.as_ref(),
                    &mut pass_progress(outbox, cancel, started),
                )?;
                if *preserve_color {
                    // Luminance-only transfer, as the optimisation does it: the network paints
                    // the brightness, the photo keeps its colours.
                    stylized = color::keep_photo_colors(&stylized, &content);
                }
                finish(
                    job,
                    stylized,
                    content,
                    weights.as_ref(),
                    JobStats {
                        method: job.method.name(),
                        width: 0,
                        height: 0,
                        steps: 1,
                        evaluations: 1,
                        seconds: started.elapsed().as_secs_f64(),
                        losses: None,
                        initial_style_loss: None,
                        tiling,
                        notes: Vec::new(),
                        video: None,
                    },
                )
            }
            Method::Arbitrary {
                vgg,
                decoders,
                styles,
                transform,
                size,
                style_side,
                preserve_color,
            } => {
                let levels = transform.levels().len();
                outbox.send(EventBody::Started {
                    total_steps: levels,
                });
                let vgg = self.load_vgg(vgg)?;
                let decoders = self.load_decoders(decoders.as_deref())?;
                let stats = styles
                    .iter()
                    .map(|style| Ok((self.style_stats(&vgg, style, *style_side)?, style.weight)))
                    .collect::<Result<Vec<_>>>()?;
                let refs: Vec<(&arbitrary::StyleStats, f64)> =
                    stats.iter().map(|(s, w)| (s.as_ref(), *w)).collect();
                let side = arbitrary::arbitrary_side(
                    job.content.width(),
                    job.content.height(),
                    *size,
                    *transform,
                );
                let content = if side == job.content.width().max(job.content.height()) {
                    (*job.content).clone()
                } else {
                    imaging::resize_longer_side(&job.content, side)
                };
                let config = arbitrary::ArbitraryConfig {
                    transform: *transform,
                    strength: job.strength,
                };
                let progress = pass_progress(outbox, cancel, started);
                let weights = regions_at(job, content.width(), content.height());
                // Photos too large for one piece run in tiles (WCT's size is also capped).
                let tile_core = arbitrary::tile_core_for(content.width(), content.height());
                let mut stylized = match (&weights, tile_core) {
                    (Some(weights), _) => {
                        let styles: Vec<&arbitrary::StyleStats> =
                            refs.iter().map(|(s, _)| *s).collect();
                        arbitrary::stylize_in_regions(
                            &vgg,
                            &decoders,
                            &content,
                            &styles,
                            weights,
                            config,
                            &self.device,
                            progress,
                        )?
                    }
                    (None, Some(core)) => arbitrary::stylize_tiled(
                        &vgg,
                        &decoders,
                        &content,
                        &arbitrary::blend_stats(&refs)?,
                        config,
                        &self.device,
                        core,
                        progress,
                    )?,
                    (None, None) => arbitrary::stylize(
                        &vgg,
                        &decoders,
                        &content,
                        &arbitrary::blend_stats(&refs)?,
                        config,
                        &self.device,
                        progress,
                    )?,
                };
                if *preserve_color {
                    stylized = color::keep_photo_colors(&stylized, &content);
                }
                if let Some(weights) = &weights {
                    stylized = weights.composite(&content, &[&stylized])?;
                }
                let stats = JobStats {
                    method: job.method.name(),
                    width: stylized.width(),
                    height: stylized.height(),
                    steps: levels,
                    evaluations: 1,
                    seconds: started.elapsed().as_secs_f64(),
                    losses: None,
                    initial_style_loss: None,
                    // Each level sums the whole photo's feature statistics over the tiles
                    // before it transforms any of them, so the statistics are exact.
                    tiling: tile_core.filter(|_| weights.is_none()).map(|core| {
                        network::TileReport {
                            core,
                            tiles: (content.width().div_ceil(core)
                                * content.height().div_ceil(core))
                                as usize,
                            sample_tiles: 0,
                            sampled: 1.0,
                        }
                    }),
                    notes: job
                        .regions
                        .as_ref()
                        .map(|r| r.notes(content.width(), content.height()))
                        .unwrap_or_default(),
                    video: None,
                };
                // Strength already acted in feature space: no pixel fade on top.
                let image = Arc::new(stylized);
                Ok(JobOutput {
                    image: image.clone(),
                    stylized: image,
                    content: Arc::new(content),
                    stats,
                })
            }
        }
    }

    /// The networks of `styles` on `content` (at its size, strokes scaled by `stroke`): one
    /// network, or with `weights` each style where it paints — one pass of a conditional
    /// network with per-pixel style parameters when every style is one of its styles and the
    /// photo fits in one piece, else a pass per style composited by the styles' shares.
    fn run_networks(
        &mut self,
        styles: &[NetworkStyle],
        content: &RgbImage,
        stroke: f64,
        weights: Option<&RegionWeights>,
        progress: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<(RgbImage, Option<network::TileReport>)> {
        let nets = styles
            .iter()
            .map(|style| {
                let net = self.load_network(&style.model)?;
                let mix = style
                    .mix
                    .as_deref()
                    .map(|weights| network::style_mix(&net, weights, &style.model))
                    .transpose()?;
                Ok((net, mix))
            })
            .collect::<Result<Vec<_>>>()?;
        let Some(((first, _), weights)) = nets.first().zip(weights) else {
            return match nets.first() {
                Some((net, mix)) if nets.len() == 1 => network::stylize_at_stroke(
                    net,
                    content,
                    &self.device,
                    mix.as_deref(),
                    stroke,
                    progress,
                ),
                _ => Err(Error::invalid(
                    "a network job paints one network; several need regions (one mask each)",
                )),
            };
        };
        let one_network = first.styles() > 1
            && styles.iter().all(|s| s.model == styles[0].model)
            && nets.iter().all(|(_, mix)| mix.is_some());
        if one_network {
            let mixes: Vec<Vec<f32>> = nets.iter().filter_map(|(_, m)| m.clone()).collect();
            if let Some(painted) = network::stylize_regions_one_pass(
                first,
                content,
                &self.device,
                &mixes,
                weights,
                stroke,
                progress,
            )? {
                return Ok((painted, None));
            }
        }
        let shares = RegionWeights {
            maps: weights.style_shares(),
            ..weights.clone()
        };
        let count = nets.len();
        let mut painted = Vec::with_capacity(count);
        let mut tiling = None;
        for (index, (net, mix)) in nets.iter().enumerate() {
            let (image, report) = network::stylize_at_stroke(
                net,
                content,
                &self.device,
                mix.as_deref(),
                stroke,
                &mut |done, total| progress(index * total + done, count * total),
            )?;
            tiling = tiling.or(report);
            painted.push(image);
        }
        let refs: Vec<&RgbImage> = painted.iter().collect();
        Ok((shares.composite(content, &refs)?, tiling))
    }

    /// Starts the training thread (it loads the loss network, or takes the loaded one, once its
    /// inputs are checked); its events go out under `id`.
    fn start_training(&mut self, id: JobId, config: TrainConfig, cancel: Arc<AtomicBool>) {
        let vgg = self.vgg.clone();
        let device = self.device.clone();
        self.spawn_training(id, cancel, "train", move |outbox, shared, cancel| {
            let forward = |event: TrainEvent| {
                if let Some(body) = training_body(shared, id, event) {
                    if is_terminal(&body) {
                        shared.forget(id);
                    }
                    outbox.send(body);
                }
            };
            let path = config.recipe.vgg.clone();
            let load_vgg = move |device: &Device| vgg.get(&path, device);
            session::run(config, &device, load_vgg, forward, cancel)
        });
    }

    /// Starts a decoder training thread; its events go out under `id` as [`EventBody::Decoder`].
    fn start_decoder_training(
        &mut self,
        id: JobId,
        config: DecoderTrainConfig,
        vgg_path: PathBuf,
        cancel: Arc<AtomicBool>,
    ) {
        let vgg = self.vgg.clone();
        let device = self.device.clone();
        self.spawn_training(
            id,
            cancel,
            "train-decoder",
            move |outbox, shared, cancel| {
                let forward = |event: DecoderEvent| {
                    if matches!(
                        event,
                        DecoderEvent::Finished(_) | DecoderEvent::Stopped { .. }
                    ) {
                        shared.forget(id);
                    }
                    outbox.send(EventBody::Decoder(event));
                };
                let vgg = vgg.get(&vgg_path, &device)?;
                decoder_training::run(config, vgg, &device, forward, cancel)
            },
        );
    }

    /// Runs `run` on a thread of its own as training job `id`: a job cancelled before it started
    /// ends at once, an error or a panic becomes its `Failed` event.
    fn spawn_training(
        &mut self,
        id: JobId,
        cancel: Arc<AtomicBool>,
        name: &str,
        run: impl FnOnce(&Outbox, &Arc<Shared>, &AtomicBool) -> Result<()> + Send + 'static,
    ) {
        let outbox = self.outbox(id, JobKind::Training);
        if cancel.load(Ordering::SeqCst) {
            self.shared.forget(id);
            outbox.send(EventBody::Cancelled);
            return;
        }
        let shared = self.shared.clone();
        let thread_outbox = outbox.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("atelier-{name}-{id}"))
            .spawn(move || {
                let outbox = thread_outbox;
                let outcome =
                    std::panic::catch_unwind(AssertUnwindSafe(|| run(&outbox, &shared, &cancel)));
                match outcome {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        shared.forget(id);
                        outbox.failed(e);
                    }
                    Err(panic) => {
                        shared.forget(id);
                        outbox.send(EventBody::Failed(Failure::Internal(panic_message(&panic))));
                    }
                }
            });
        match spawned {
            Ok(handle) => {
                self.trainings.retain(|t| !t.is_finished());
                self.trainings.push(handle);
            }
            Err(e) => {
                self.shared.forget(id);
                outbox.send(EventBody::Failed(Failure::Internal(format!(
                    "cannot start the training thread: {e}"
                ))));
            }
        }
    }

    /// The decoders in `folder` (or the built-in ones), loaded once.
    fn load_decoders(&mut self, folder: Option<&Path>) -> Result<Arc<arbitrary::Decoders>> {
        let key = folder.map(Path::to_path_buf);
        if let Some(loaded) = self.decoders.get(&key) {
            return Ok(loaded.clone());
        }
        let decoders = Arc::new(match folder {
            Some(dir) => crate::nn::decoder::load_folder(dir, &self.device)?,
            None => crate::nn::decoder::bundled(&self.device)?,
        });
        self.decoders.insert(key, decoders.clone());
        Ok(decoders)
    }

    /// A style's statistics at every level, computed once per set of works and side.
    fn style_stats(
        &mut self,
        vgg: &Vgg,
        style: &super::job::ArbitraryStyle,
        side: u32,
    ) -> Result<Arc<arbitrary::StyleStats>> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for work in &style.works {
            imaging::fingerprint(work).hash(&mut hasher);
        }
        let key = (hasher.finish(), side);
        if let Some(stats) = self.style_stats.get(&key) {
            return Ok(stats.clone());
        }
        let works: Vec<RgbImage> = style.works.iter().map(|w| (**w).clone()).collect();
        let stats = Arc::new(arbitrary::style_stats(vgg, &works, side, &self.device)?);
        // A gallery's worth of paintings; bounded all the same (relu4_1's covariance is 2 MB).
        if self.style_stats.len() >= 32 {
            self.style_stats.clear();
        }
        self.style_stats.insert(key, stats.clone());
        Ok(stats)
    }

    fn load_vgg(&mut self, path: &Path) -> Result<Arc<Vgg>> {
        let vgg = self.vgg.get(path, &self.device)?;
        if !self
            .features_of
            .as_ref()
            .is_some_and(|f| Arc::ptr_eq(f, &vgg))
        {
            // Cached features belong to the previous network.
            self.features.clear();
            self.features_of = Some(vgg.clone());
        }
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

fn is_terminal(body: &EventBody) -> bool {
    matches!(
        body,
        EventBody::Trained(_) | EventBody::Stopped { .. } | EventBody::Failed(_)
    )
}

/// A training event as the engine reports it (preview images go to the training lane's slot).
fn training_body(shared: &Shared, id: JobId, event: TrainEvent) -> Option<EventBody> {
    Some(match event {
        TrainEvent::Started {
            first_iteration,
            iterations,
            photos,
        } => EventBody::TrainingStarted {
            first_iteration,
            iterations,
            photos,
        },
        TrainEvent::Progress(progress) => EventBody::Training(progress),
        TrainEvent::Preview {
            iteration,
            image,
            path,
        } => {
            let step = usize::try_from(iteration).unwrap_or(usize::MAX);
            shared.put_preview(
                JobKind::Training,
                PreviewFrame {
                    job: id,
                    step,
                    image,
                },
            );
            EventBody::Preview {
                step,
                saved: Some(path),
            }
        }
        TrainEvent::Checkpoint { iteration, path } => EventBody::Checkpoint { iteration, path },
        TrainEvent::Stopped {
            iteration,
            checkpoint,
        } => EventBody::Stopped {
            iteration,
            checkpoint,
        },
        TrainEvent::Finished {
            iteration,
            style,
            seconds_per_iteration,
        } => EventBody::Trained(Box::new(TrainedStyle {
            iteration,
            style,
            seconds_per_iteration,
        })),
    })
}

/// The job's regions as weights at `width`×`height` (the result's size).
fn regions_at(job: &Job, width: u32, height: u32) -> Option<RegionWeights> {
    job.regions.as_ref().map(|r| r.weights(width, height))
}

/// The job's output from the styles' image `stylized`: the photo put back where no region
/// paints (`weights`), then the strength blend.
fn finish(
    job: &Job,
    stylized: RgbImage,
    content: Arc<RgbImage>,
    weights: Option<&RegionWeights>,
    mut stats: JobStats,
) -> Result<JobOutput> {
    let stylized = match weights {
        Some(weights) => weights.composite(&content, &[&stylized])?,
        None => stylized,
    };
    if let Some(regions) = &job.regions {
        stats.notes = regions.notes(content.width(), content.height());
    }
    let stylized = Arc::new(stylized);
    // At full strength the result is the stylised image itself: no third copy (150 MB at 50 MP).
    let image = if job.strength >= 1.0 && stylized.dimensions() == content.dimensions() {
        stylized.clone()
    } else {
        Arc::new(imaging::blend(&stylized, &content, job.strength)?)
    };
    stats.width = image.width();
    stats.height = image.height();
    Ok(JobOutput {
        image,
        stylized,
        content,
        stats,
    })
}

/// Progress of a one-pass method (its tiles or levels, `(done, total)`) as events, stopping
/// with [`Error::Cancelled`] once the job's flag is set.
fn pass_progress<'a>(
    outbox: &'a Outbox,
    cancel: &'a AtomicBool,
    started: Instant,
) -> impl FnMut(usize, usize) -> Result<()> + 'a {
    move |step, total_steps| {
        if cancel.load(Ordering::SeqCst) {
            return Err(Error::Cancelled);
        }
        outbox.send(EventBody::Progress {
            step,
            total_steps,
            losses: None,
            elapsed: started.elapsed(),
        });
        Ok(())
    }
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

/// Turns optimisation progress into events (preview images into the lane's slot) and answers
/// cancellation from the job's flag.
struct EventObserver<'a> {
    outbox: &'a Outbox,
    shared: &'a Shared,
    started: Instant,
    cancel: &'a AtomicBool,
    /// The job's regions (at the result's size) and photo: previews show the photo where no
    /// style paints, as the result will.
    regions: Option<(&'a RegionWeights, &'a RgbImage)>,
}

impl Observer for EventObserver<'_> {
    fn on_step(&mut self, update: StepUpdate) -> Result<()> {
        self.outbox.send(EventBody::Progress {
            step: update.step,
            total_steps: update.total_steps,
            losses: Some(update.losses),
            elapsed: self.started.elapsed(),
        });
        if let Some(mut image) = update.preview {
            if let Some((weights, photo)) = self.regions {
                let (w, h) = image.dimensions();
                let photo = imaging::resize_exact(photo, w, h);
                image = weights.resized(w, h).composite(&photo, &[&image])?;
            }
            self.shared.put_preview(
                self.outbox.kind,
                PreviewFrame {
                    job: self.outbox.id,
                    step: update.step,
                    image: Arc::new(image),
                },
            );
            self.outbox.send(EventBody::Preview {
                step: update.step,
                saved: None,
            });
        }
        if self.cancelled() {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}
