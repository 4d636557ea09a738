//! The engine: the only door to the methods. A background thread owns the candle device and the
//! loaded networks; UIs (the app, the CLI) send jobs and receive [`Event`]s over one channel.
//!
//! Three lanes ([`JobKind`]):
//! - [`Engine::preview`]: latest wins; a new preview cancels the previous one, queued or running.
//! - [`Engine::render`]: queued in submission order; each job finishes, fails or is cancelled on
//!   its own ([`Engine::cancel`] by id).
//! - [`Engine::train`]: a training run on its own thread, sharing the engine's loaded VGG and
//!   device; cancelling it stops it with a checkpoint. [`Engine::train_decoder`] runs a decoder
//!   training (for the arbitrary method) in the same lane.
//!
//! Preview images do not travel in events: the newest of each lane waits in a slot
//! ([`Engine::take_preview`]), so a UI that draws slowly uploads only the latest and memory
//! stays bounded. Cancellation takes effect before the next loss evaluation (the next iteration
//! for training). A panic in a job becomes its `Failed` event; the engine keeps running.
//!
//! What a UI needs of the methods (configs, limits, sizing, training settings) is re-exported
//! here, so UIs never import `stylize`, `nn` or `train` themselves.

mod event;
mod failure;
mod job;
mod video;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use candle_core::Device;
use crossbeam_channel::{Receiver, Sender};

pub use event::{
    Event, EventBody, JobOutput, JobStats, PreviewFrame, TrainedStyle, VideoReport, VideoStages,
};
pub use failure::{EngineError, Failure};
pub use job::{
    ArbitraryStyle, FeatureTransform, Job, JobId, JobKind, Method, NetworkStyle, VideoJob,
};

// ---- What UIs need of the methods ----
pub use crate::nn::device::best_device;
pub use crate::nn::hub::{download_vgg19, resolve_vgg};
pub use crate::nn::vgg::BUNDLED_VGG;
pub use crate::stylize::arbitrary::{arbitrary_side, DEFAULT_STYLE_SIDE, MAX_ARBITRARY_PIXELS};
pub use crate::stylize::gatys::{
    GatysConfig, Init, Losses, StyleImage, MAX_SIZE as MAX_OPTIMIZE_SIDE,
};
pub use crate::stylize::network::{
    network_side, stroke_side, TileReport, MAX_NETWORK_PIXELS, STROKE_RANGE,
};
pub use crate::stylize::optim::OptimizerKind;
pub use crate::stylize::regions::{Regions, Rest, MAX_FEATHER};
pub use crate::train::checkpoint::{peek as peek_checkpoint, CheckpointInfo, CHECKPOINT_NAME};
pub use crate::train::data::list_images;
pub use crate::train::decoder::{
    DecoderEvent, DecoderRecipe, DecoderReport, DecoderTrainConfig, DECODER_FILE,
};
pub use crate::train::export::MODEL_NAME;
pub use crate::train::{
    ExportedStyle, StyleCredits, StyleGroup, TrainConfig, TrainLosses, TrainProgress, TrainRecipe,
    DEFAULT_WIDTH,
};
pub use crate::video::clip::{
    describe as describe_clip, frame_at as clip_frame_at, probe as probe_clip, ClipInfo,
};
pub use crate::video::temporal::DEFAULT_WEIGHT as DEFAULT_TEMPORAL_WEIGHT;

enum Command {
    Stylize {
        id: JobId,
        kind: JobKind,
        job: Box<Job>,
        cancel: Arc<AtomicBool>,
    },
    Train {
        id: JobId,
        config: Box<TrainConfig>,
        cancel: Arc<AtomicBool>,
    },
    TrainDecoder {
        id: JobId,
        config: Box<DecoderTrainConfig>,
        vgg: PathBuf,
        cancel: Arc<AtomicBool>,
    },
    Video {
        id: JobId,
        job: Box<VideoJob>,
        cancel: Arc<AtomicBool>,
    },
    Shutdown,
}

/// State the engine handle and its threads share.
struct Shared {
    /// Lane and cancel flag of each job that has not ended yet.
    live: Mutex<HashMap<JobId, (JobKind, Arc<AtomicBool>)>>,
    /// The newest preview image of each lane.
    previews: [Mutex<Option<PreviewFrame>>; 3],
    /// At shutdown, wait for training jobs to save their checkpoint (the default).
    wait_for_training: AtomicBool,
}

/// A poisoned lock only means a panic elsewhere (already reported as a failed job); the data
/// it guards stays consistent, so keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn slot_index(kind: JobKind) -> usize {
    match kind {
        JobKind::Preview => 0,
        JobKind::Render => 1,
        JobKind::Training => 2,
    }
}

impl Shared {
    fn new() -> Self {
        Self {
            live: Mutex::new(HashMap::new()),
            previews: Default::default(),
            wait_for_training: AtomicBool::new(true),
        }
    }

    fn put_preview(&self, kind: JobKind, frame: PreviewFrame) {
        *lock(&self.previews[slot_index(kind)]) = Some(frame);
    }

    /// The job ended: it can no longer be cancelled.
    fn forget(&self, id: JobId) {
        lock(&self.live).remove(&id);
    }
}

/// Handle to the engine's thread; dropping it cancels every job, waits for training jobs to save
/// a checkpoint (unless [`Engine::detach_training`] was called) and stops the thread.
pub struct Engine {
    commands: Sender<Command>,
    events: Receiver<Event>,
    next_id: AtomicU64,
    shared: Arc<Shared>,
    /// The preview that a newer one supersedes.
    latest_preview: Mutex<Option<JobId>>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the engine's thread on `device`.
    pub fn new(device: Device) -> Result<Self, EngineError> {
        Self::start(device, false)
    }

    /// Like [`Engine::new`], with the engine's threads (and the compute threads they start) at
    /// a lower scheduling priority, for interactive callers whose own threads must stay
    /// responsive.
    pub fn new_background(device: Device) -> Result<Self, EngineError> {
        Self::start(device, true)
    }

    /// An engine on the CPU.
    pub fn cpu() -> Result<Self, EngineError> {
        Self::new(Device::Cpu)
    }

    fn start(device: Device, background: bool) -> Result<Self, EngineError> {
        let (command_tx, command_rx) = crossbeam_channel::unbounded();
        let (event_tx, event_rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared::new());
        let worker = worker::Worker::new(device, command_rx, event_tx, shared.clone());
        let thread = std::thread::Builder::new()
            .name("atelier-engine".into())
            .spawn(move || {
                if background {
                    crate::nn::device::lower_current_thread();
                }
                worker.run()
            })
            .map_err(|e| EngineError::NotStarted(e.to_string()))?;
        Ok(Self {
            commands: command_tx,
            events: event_rx,
            next_id: AtomicU64::new(1),
            shared,
            latest_preview: Mutex::new(None),
            thread: Some(thread),
        })
    }

    fn register(&self, kind: JobKind) -> (JobId, Arc<AtomicBool>) {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let cancel = Arc::new(AtomicBool::new(false));
        lock(&self.shared.live).insert(id, (kind, cancel.clone()));
        (id, cancel)
    }

    fn send(&self, id: JobId, command: Command) -> Result<JobId, EngineError> {
        self.commands.send(command).map_err(|_| {
            self.shared.forget(id);
            EngineError::Stopped
        })?;
        Ok(id)
    }

    /// Queues a preview, cancelling the previous preview (latest wins); returns its id.
    pub fn preview(&self, job: Job) -> Result<JobId, EngineError> {
        let (id, cancel) = self.register(JobKind::Preview);
        if let Some(previous) = lock(&self.latest_preview).replace(id) {
            self.cancel(previous);
        }
        self.send(
            id,
            Command::Stylize {
                id,
                kind: JobKind::Preview,
                job: Box::new(job),
                cancel,
            },
        )
    }

    /// Queues a render behind the renders already queued; returns its id.
    pub fn render(&self, job: Job) -> Result<JobId, EngineError> {
        let (id, cancel) = self.register(JobKind::Render);
        self.send(
            id,
            Command::Stylize {
                id,
                kind: JobKind::Render,
                job: Box::new(job),
                cancel,
            },
        )
    }

    /// Queues a video behind the renders already queued; returns its id. Its progress counts
    /// frames, each finished frame waits in the render lane's preview slot, and cancelling it
    /// leaves no output.
    pub fn video(&self, job: VideoJob) -> Result<JobId, EngineError> {
        let (id, cancel) = self.register(JobKind::Render);
        self.send(
            id,
            Command::Video {
                id,
                job: Box::new(job),
                cancel,
            },
        )
    }

    /// Starts training `config` beside the other lanes (the VGG is loaded once and shared with
    /// the optimisation); returns its id. [`Engine::cancel`] stops it with a checkpoint.
    pub fn train(&self, config: TrainConfig) -> Result<JobId, EngineError> {
        let (id, cancel) = self.register(JobKind::Training);
        self.send(
            id,
            Command::Train {
                id,
                config: Box::new(config),
                cancel,
            },
        )
    }

    /// Starts training a decoder for the `arbitrary` method with the VGG16 at `vgg` (the
    /// encoder it learns to invert) on its own thread; its events are [`EventBody::Decoder`].
    /// [`Engine::cancel`] stops it with a checkpoint.
    pub fn train_decoder(
        &self,
        config: DecoderTrainConfig,
        vgg: PathBuf,
    ) -> Result<JobId, EngineError> {
        let (id, cancel) = self.register(JobKind::Training);
        self.send(
            id,
            Command::TrainDecoder {
                id,
                config: Box::new(config),
                vgg,
                cancel,
            },
        )
    }

    /// Cancels job `id`, queued or running (a training job stops after its current iteration
    /// and saves a checkpoint). Returns false when the job has already ended.
    pub fn cancel(&self, id: JobId) -> bool {
        match lock(&self.shared.live).get(&id) {
            Some((_, flag)) => {
                flag.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Cancels every preview and render, queued or running (training goes on).
    pub fn cancel_stylizing(&self) {
        for (kind, flag) in lock(&self.shared.live).values() {
            if *kind != JobKind::Training {
                flag.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Jobs of `kind` that have not ended yet (queued or running).
    pub fn live_jobs(&self, kind: JobKind) -> usize {
        lock(&self.shared.live)
            .values()
            .filter(|(k, _)| *k == kind)
            .count()
    }

    /// The newest preview image of `kind`'s lane, taken out of its slot (`None` when no new one
    /// arrived since the last take).
    pub fn take_preview(&self, kind: JobKind) -> Option<PreviewFrame> {
        lock(&self.shared.previews[slot_index(kind)]).take()
    }

    /// At drop, do not wait for training jobs to save their checkpoint (they are asked to stop;
    /// the process may end first, and the last periodic checkpoint stays valid since
    /// checkpoints are written atomically).
    pub fn detach_training(&self) {
        self.shared.wait_for_training.store(false, Ordering::SeqCst);
    }

    /// The event stream: poll with `try_recv` from a UI loop, or block with `recv`.
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for (_, flag) in lock(&self.shared.live).values() {
            flag.store(true, Ordering::SeqCst);
        }
        let _ = self.commands.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
