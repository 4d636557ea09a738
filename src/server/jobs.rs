//! The server's jobs: what each client asked for, its state as the engine reports it, and its
//! result on disk until it expires. One thread reads the engine's events and updates the table;
//! every change is also published on the job's watch channel, which the event stream
//! (`GET /api/jobs/{id}/events`) follows.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use image::RgbImage;
use rand::Rng;
use serde::Serialize;
use tokio::sync::watch;

use crate::engine::{Engine, Event, EventBody, Failure, Job, JobId, JobKind, JobOutput};
use crate::recipe::{self, Recipe};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Finished,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Finished => "finished",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Finished | JobState::Failed | JobState::Cancelled
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobErrorView {
    pub code: &'static str,
    pub message: String,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub state: JobState,
    pub method: &'static str,
    pub step: usize,
    pub total_steps: usize,
    /// 0..1.
    pub progress: f32,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// Seconds from submission to the end (when it ended).
    pub seconds: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub error: Option<JobErrorView>,
    /// Where the result is served, once finished.
    pub result: Option<String>,
    /// Where the newest intermediate picture is served (optimisation), with a version that
    /// changes with each new one.
    pub preview: Option<String>,
    /// Seconds until the result is deleted (once the job ended).
    pub expires_in: Option<u64>,
    /// How the result was (or will be) made; stored in the result PNG too.
    pub recipe: Recipe,
    /// What the user should know about the inputs (a mask stretched to fit, an empty mask).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

struct Record {
    view: JobView,
    engine_id: JobId,
    submitted: Instant,
    ended: Option<Instant>,
    result_path: Option<PathBuf>,
    preview: Option<Bytes>,
    published: watch::Sender<JobView>,
}

impl Record {
    fn publish(&mut self) {
        self.published.send_replace(self.view.clone());
    }

    fn end(&mut self, state: JobState) {
        self.view.state = state;
        self.ended = Some(Instant::now());
        self.view.seconds = Some(self.submitted.elapsed().as_secs_f64());
    }
}

#[derive(Default)]
struct Table {
    records: HashMap<String, Record>,
    by_engine: HashMap<JobId, String>,
}

/// Why a job was not taken.
pub enum SubmitError {
    /// `live` jobs are queued or running already; try again in about `retry_after_s`.
    QueueFull {
        live: usize,
        retry_after_s: u64,
    },
    EngineStopped(String),
}

/// The job table and the engine it feeds.
pub struct Jobs {
    engine: Engine,
    table: Mutex<Table>,
    results_dir: tempfile::TempDir,
    capacity: usize,
    keep: Duration,
    /// Sum and count of finished jobs' run times, for Retry-After.
    finished_seconds: Mutex<(f64, u64)>,
    preview_versions: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn new_id() -> String {
    // Random, so one client cannot guess another's job.
    format!("{:016x}", rand::rng().random::<u64>())
}

impl Jobs {
    /// Starts the thread that follows the engine's events.
    pub fn start(
        engine: Engine,
        results_dir: tempfile::TempDir,
        capacity: usize,
        keep: Duration,
    ) -> Arc<Self> {
        let events = engine.events().clone();
        let jobs = Arc::new(Self {
            engine,
            table: Mutex::new(Table::default()),
            results_dir,
            capacity,
            keep,
            finished_seconds: Mutex::new((0.0, 0)),
            preview_versions: AtomicU64::new(1),
        });
        let weak = Arc::downgrade(&jobs);
        let spawned = std::thread::Builder::new()
            .name("atelier-serve-events".into())
            .spawn(move || {
                // Ends when the engine (held by `Jobs`) is dropped and its channel closes.
                for event in events.iter() {
                    let Some(jobs) = weak.upgrade() else { break };
                    jobs.on_event(event);
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the event thread: {e}");
        }
        jobs
    }

    /// Queues `job` on the render lane unless the queue is full.
    pub fn submit(&self, job: Job, recipe: Recipe) -> Result<JobView, SubmitError> {
        let method = job.method.name();
        // One lock around the check and the submission, so concurrent requests cannot overfill.
        let mut table = lock(&self.table);
        let live = table
            .records
            .values()
            .filter(|r| !r.view.state.is_terminal())
            .count();
        if live >= self.capacity {
            return Err(SubmitError::QueueFull {
                live,
                retry_after_s: self.retry_after(live),
            });
        }
        let engine_id = self
            .engine
            .render(job)
            .map_err(|e| SubmitError::EngineStopped(e.to_string()))?;
        let mut id = new_id();
        while table.records.contains_key(&id) {
            id = new_id();
        }
        let view = JobView {
            id: id.clone(),
            state: JobState::Queued,
            method,
            step: 0,
            total_steps: 0,
            progress: 0.0,
            created: unix_now(),
            seconds: None,
            width: None,
            height: None,
            error: None,
            result: None,
            preview: None,
            expires_in: None,
            recipe,
            notes: Vec::new(),
        };
        let (published, _) = watch::channel(view.clone());
        table.by_engine.insert(engine_id, id.clone());
        table.records.insert(
            id,
            Record {
                view: view.clone(),
                engine_id,
                submitted: Instant::now(),
                ended: None,
                result_path: None,
                preview: None,
                published,
            },
        );
        Ok(view)
    }

    /// Seconds until a place in the queue is likely free: the mean job time so far times the
    /// jobs ahead, at least one second.
    fn retry_after(&self, live: usize) -> u64 {
        let (sum, count) = *lock(&self.finished_seconds);
        let mean = if count == 0 { 2.0 } else { sum / count as f64 };
        (mean * live as f64 / self.capacity.max(1) as f64)
            .ceil()
            .clamp(1.0, 600.0) as u64
    }

    /// The job's view now, with its time left and queue position filled in.
    pub fn view(&self, id: &str) -> Option<JobView> {
        let table = lock(&self.table);
        let record = table.records.get(id)?;
        let mut view = record.view.clone();
        view.expires_in = record
            .ended
            .map(|t| self.keep.saturating_sub(t.elapsed()).as_secs());
        Some(view)
    }

    /// Follows the job's changes (the first value is its state now).
    pub fn subscribe(&self, id: &str) -> Option<watch::Receiver<JobView>> {
        lock(&self.table)
            .records
            .get(id)
            .map(|r| r.published.subscribe())
    }

    pub fn result_path(&self, id: &str) -> Option<Result<PathBuf, JobState>> {
        let table = lock(&self.table);
        let record = table.records.get(id)?;
        Some(record.result_path.clone().ok_or(record.view.state))
    }

    pub fn preview(&self, id: &str) -> Option<Option<Bytes>> {
        lock(&self.table).records.get(id).map(|r| r.preview.clone())
    }

    /// Cancels a queued or running job; a job that ended is deleted with its result.
    pub fn cancel_or_delete(&self, id: &str) -> Option<JobView> {
        let mut table = lock(&self.table);
        let record = table.records.get_mut(id)?;
        if record.view.state.is_terminal() {
            let record = table.records.remove(id)?;
            if let Some(path) = &record.result_path {
                let _ = std::fs::remove_file(path);
            }
            return Some(record.view);
        }
        // The engine stops it before its next step (at once when still queued); its slot is
        // free when the engine says so.
        self.engine.cancel(record.engine_id);
        record.end(JobState::Cancelled);
        record.publish();
        Some(record.view.clone())
    }

    pub fn live(&self) -> usize {
        self.engine.live_jobs(JobKind::Render)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn on_event(&self, event: Event) {
        // Encodings happen outside the lock: a big PNG takes a second.
        let attachment = match &event.body {
            EventBody::Preview { .. } => self
                .engine
                .take_preview(JobKind::Render)
                .filter(|frame| frame.job == event.job)
                .and_then(|frame| encode_jpeg(&frame.image).ok())
                .map(Attachment::Preview),
            EventBody::Finished(output) => Some(self.write_result(event.job, output)),
            _ => None,
        };
        let mut table = lock(&self.table);
        let Some(id) = table.by_engine.get(&event.job).cloned() else {
            return;
        };
        if event.is_terminal() {
            table.by_engine.remove(&event.job);
        }
        let Some(record) = table.records.get_mut(&id) else {
            return;
        };
        if record.view.state == JobState::Cancelled {
            // Cancelled by the client; whatever the engine still says changes nothing.
            if let Some(Attachment::Result(Ok((path, _, _)))) = attachment {
                let _ = std::fs::remove_file(path);
            }
            return;
        }
        match event.body {
            EventBody::Started { total_steps } => {
                record.view.state = JobState::Running;
                record.view.total_steps = total_steps;
            }
            EventBody::Progress {
                step, total_steps, ..
            } => {
                record.view.state = JobState::Running;
                record.view.step = step;
                record.view.total_steps = total_steps;
                record.view.progress = if total_steps == 0 {
                    0.0
                } else {
                    (step as f32 / total_steps as f32).min(1.0)
                };
            }
            EventBody::Preview { .. } => {
                if let Some(Attachment::Preview(bytes)) = attachment {
                    record.preview = Some(bytes);
                    let version = self.preview_versions.fetch_add(1, Ordering::Relaxed);
                    record.view.preview = Some(format!("/api/jobs/{id}/preview?v={version}"));
                }
            }
            EventBody::Finished(output) => match attachment {
                Some(Attachment::Result(Ok((path, width, height)))) => {
                    record.view.notes = output.stats.notes.clone();
                    record.result_path = Some(path);
                    record.view.width = Some(width);
                    record.view.height = Some(height);
                    record.view.progress = 1.0;
                    record.view.result = Some(format!("/api/jobs/{id}/result"));
                    record.end(JobState::Finished);
                    let mut finished = lock(&self.finished_seconds);
                    finished.0 += record.view.seconds.unwrap_or(0.0);
                    finished.1 += 1;
                }
                Some(Attachment::Result(Err(message))) => {
                    record.view.error = Some(JobErrorView {
                        code: "write",
                        message,
                    });
                    record.end(JobState::Failed);
                }
                _ => {}
            },
            EventBody::Failed(failure) => {
                record.view.error = Some(JobErrorView {
                    code: failure_code(&failure),
                    message: failure.to_string(),
                });
                record.end(JobState::Failed);
            }
            EventBody::Cancelled => record.end(JobState::Cancelled),
            _ => {}
        }
        record.publish();
    }

    /// Writes a finished job's result (a PNG with its recipe) into the results folder.
    fn write_result(&self, engine_id: JobId, output: &JobOutput) -> Attachment {
        let (id, recipe) = {
            let table = lock(&self.table);
            let Some(id) = table.by_engine.get(&engine_id).cloned() else {
                return Attachment::Result(Err("the job is gone".into()));
            };
            let Some(record) = table.records.get(&id) else {
                return Attachment::Result(Err("the job is gone".into()));
            };
            (id, record.view.recipe.clone())
        };
        let mut recipe = recipe;
        recipe.size = output.image.width().max(output.image.height());
        let path = self.results_dir.path().join(format!("{id}.png"));
        Attachment::Result(
            recipe::save_png_with_recipe(&output.image, &path, &recipe)
                .map(|()| (path, output.image.width(), output.image.height()))
                .map_err(|e| e.to_string()),
        )
    }

    /// Removes jobs that ended more than `keep` ago, with their results.
    fn reap(&self) {
        let mut table = lock(&self.table);
        let expired: Vec<String> = table
            .records
            .iter()
            .filter(|(_, r)| r.ended.is_some_and(|t| t.elapsed() >= self.keep))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(record) = table.records.remove(&id) {
                if let Some(path) = record.result_path {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }

    /// Cancels what is still queued or running (at shutdown).
    pub fn shutdown(&self) {
        self.engine.cancel_stylizing();
    }
}

enum Attachment {
    Preview(Bytes),
    Result(Result<(PathBuf, u32, u32), String>),
}

fn encode_jpeg(image: &RgbImage) -> Result<Bytes, image::ImageError> {
    let mut bytes = Vec::new();
    image.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
        &mut bytes, 85,
    ))?;
    Ok(Bytes::from(bytes))
}

fn failure_code(failure: &Failure) -> &'static str {
    match failure {
        Failure::MissingVgg { .. } => "missing_vgg",
        Failure::BadInput { .. } => "bad_image",
        Failure::BadModel { .. } => "bad_model",
        Failure::InvalidArgument(_) => "invalid_argument",
        Failure::Write { .. } => "write",
        Failure::OutOfMemory(_) => "out_of_memory",
        Failure::Internal(_) => "internal",
    }
}

/// Every second, deletes what has expired (runs until the server stops).
pub async fn reap_expired(jobs: Arc<Jobs>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        jobs.reap();
    }
}
