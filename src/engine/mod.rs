//! The engine: a background thread that owns the candle device and the loaded networks. Callers
//! send [`Job`]s and receive [`Event`]s over crossbeam channels. A new job supersedes the running
//! one (latest wins); cancellation takes effect before the next loss evaluation.

mod event;
mod job;
pub(crate) mod priority;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::Device;
use crossbeam_channel::{Receiver, Sender};

pub use event::{Event, JobOutput, JobStats};
pub use job::{Job, JobId, Method};

enum Command {
    Run(JobId, Box<Job>),
    Shutdown,
}

/// Handle to the worker thread; dropping it stops the worker.
pub struct Engine {
    commands: Sender<Command>,
    events: Receiver<Event>,
    next_id: AtomicU64,
    /// Jobs with an id below this are cancelled (shared with the worker).
    cancel_below: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the worker on `device`.
    pub fn new(device: Device) -> Self {
        Self::start(device, false)
    }

    /// Like [`Engine::new`], with the worker and the compute threads it starts at a lower
    /// scheduling priority, for interactive callers whose own threads must stay responsive.
    pub fn new_background(device: Device) -> Self {
        Self::start(device, true)
    }

    fn start(device: Device, background: bool) -> Self {
        let (command_tx, command_rx) = crossbeam_channel::unbounded();
        let (event_tx, event_rx) = crossbeam_channel::unbounded();
        let cancel_below = Arc::new(AtomicU64::new(0));
        let worker = worker::Worker::new(device, command_rx, event_tx, cancel_below.clone());
        let thread = std::thread::Builder::new()
            .name("atelier-engine".into())
            .spawn(move || {
                if background {
                    priority::lower_current_thread();
                }
                worker.run()
            })
            .ok();
        if thread.is_none() {
            tracing::error!("could not start the engine thread");
        }
        Self {
            commands: command_tx,
            events: event_rx,
            next_id: AtomicU64::new(1),
            cancel_below,
            thread,
        }
    }

    /// An engine on the CPU.
    pub fn cpu() -> Self {
        Self::new(Device::Cpu)
    }

    /// Queues `job`, cancelling every earlier one; returns its id.
    pub fn submit(&self, job: Job) -> JobId {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.cancel_below.fetch_max(id, Ordering::SeqCst);
        if self.commands.send(Command::Run(id, Box::new(job))).is_err() {
            tracing::error!("engine thread is gone; job {id} dropped");
        }
        id
    }

    /// Cancels the running job and any queued ones.
    pub fn cancel(&self) {
        let next = self.next_id.load(Ordering::SeqCst);
        self.cancel_below.fetch_max(next, Ordering::SeqCst);
    }

    /// The event stream: poll with `try_recv` from a UI loop, or block with `recv`.
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.cancel_below.store(u64::MAX, Ordering::SeqCst);
        let _ = self.commands.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The best device this build supports: CUDA or Metal when compiled in and present, else CPU.
pub fn best_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    #[cfg(feature = "metal")]
    if let Ok(d) = Device::new_metal(0) {
        return d;
    }
    Device::Cpu
}
