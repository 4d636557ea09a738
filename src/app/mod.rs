//! The desktop app (eframe/egui). It owns an [`Engine`] (the only door to the methods) and
//! drains its events every frame; the UI thread never blocks: decoding, saving and file dialogs
//! run on small threads ([`tasks`]) whose results are polled the same way.
//!
//! This module holds the state and the frame loop. Panels draw and return [`AppAction`]s, which
//! [`actions`] applies in one place: [`menu`], [`panels`] (controls, gallery, canvas),
//! [`status_bar`], [`help`], [`new_style`] (training a new style, run by [`training`]). The
//! engine side is [`jobs`] (previews and their events) and [`save`] (full-size renders, writing,
//! recipes); [`drop`] takes dropped files. Below them: [`canvas`], [`gallery`], [`controls`],
//! [`progress`] (status line, toasts), [`persistence`], [`shortcuts`], [`tasks`], [`wake`].
//! Local style: [`mask`] (the masks, their brush and history), [`mask_panel`] (their controls
//! and actions) and [`mask_overlay`] (their tint on the canvas). Video mode: [`video`] (a clip's
//! frame is the photo; its bar scrubs and renders the clip).

pub mod actions;
pub mod canvas;
pub mod controls;
pub mod drop;
pub mod frames;
pub mod gallery;
pub mod help;
pub mod jobs;
pub mod mask;
pub mod mask_overlay;
pub mod mask_panel;
pub mod menu;
pub mod new_style;
pub mod panels;
pub mod persistence;
pub mod progress;
pub mod save;
pub mod shortcuts;
pub mod status_bar;
pub mod tasks;
pub mod training;
pub mod video;
pub mod wake;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui::{self, Color32};
use image::RgbImage;

use crate::engine::{Engine, Failure, JobId};
use crate::imaging::{self, OutputFormat};
use crate::recipe::Recipe;
use crate::styles::{self, StyleEntry};
pub use actions::AppAction;
use canvas::Canvas;
use controls::Controls;
pub use frames::FrameStats;
use gallery::Gallery;
use mask::Masks;
use mask_overlay::Overlay;
use mask_panel::BrushTool;
use new_style::NewStylePanel;
use persistence::Persisted;
use progress::{JobProgress, Toasts};
use tasks::Tasks;

/// How the app is started (the defaults are what `atelier` uses; tests override them).
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// A photo to open at start.
    pub photo: Option<PathBuf>,
    /// The bundled styles folder.
    pub styles_dir: PathBuf,
    /// Where styles trained in the app are kept (`None`: nowhere, training is unavailable).
    pub trained_styles_dir: Option<PathBuf>,
    /// The VGG file; `None` searches with [`crate::engine::resolve_vgg`].
    pub vgg: Option<PathBuf>,
    /// Control changes restart the job after this quiet time (latest wins).
    pub debounce: Duration,
    /// Read and write eframe storage (off in tests so they start clean).
    pub use_storage: bool,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            photo: None,
            styles_dir: styles::default_styles_dir(),
            trained_styles_dir: default_trained_styles_dir(),
            vgg: None,
            debounce: Duration::from_millis(300),
            use_storage: true,
        }
    }
}

/// The name eframe keeps the app's data under.
const APP_ID: &str = "Atelier";

/// `styles/` in the app's data folder (beside eframe's storage: `~/.local/share/atelier/` on
/// Linux), so trained styles live with the rest of the user's data.
pub fn default_trained_styles_dir() -> Option<PathBuf> {
    eframe::storage_dir(APP_ID).map(|dir| dir.join("styles"))
}

/// Opens the window (on `photo`, with the VGG at `vgg` or found by the usual search); returns
/// when it is closed. `ATELIER_RENDERER=glow` or `wgpu` overrides the renderer.
pub fn run(photo: Option<PathBuf>, vgg: Option<PathBuf>) -> Result<(), eframe::Error> {
    let renderer = match std::env::var("ATELIER_RENDERER").ok().as_deref() {
        Some("glow") | Some("gl") => eframe::Renderer::Glow,
        Some("wgpu") => eframe::Renderer::Wgpu,
        // OpenGL on Linux: where Mesa's software rasteriser draws (VMs, remote desktops, Xvfb),
        // wgpu's GL path cost about 5x the CPU per frame of glow (117 vs 21 ms measured under
        // Xvfb), CPU the engine needs. Elsewhere wgpu uses the native API.
        _ if cfg!(target_os = "linux") => eframe::Renderer::Glow,
        _ => eframe::Renderer::Wgpu,
    };
    let native_options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Atelier")
            .with_inner_size([1320.0, 840.0])
            .with_min_inner_size([760.0, 480.0])
            .with_drag_and_drop(true),
        renderer,
        ..Default::default()
    };
    let options = AppOptions {
        photo,
        vgg,
        ..AppOptions::default()
    };
    eframe::run_native(
        APP_ID,
        native_options,
        Box::new(move |cc| match AtelierApp::new(cc, options) {
            Ok(app) => Ok(Box::new(app)),
            Err(e) => Err(e.into()),
        }),
    )
}

/// The photo being worked on.
struct Photo {
    path: PathBuf,
    /// Full resolution, for Save.
    original: Arc<RgbImage>,
    /// Downscaled, for preview jobs.
    working: Arc<RgbImage>,
    texture: egui::TextureHandle,
}

/// The stylised picture on the canvas, kept at full strength so strength changes only re-blend.
struct Shown {
    stylized: Arc<RgbImage>,
    /// The photo at the same size (the other end of the blend).
    content: Arc<RgbImage>,
    texture: egui::TextureHandle,
    /// A finished job's result (not an intermediate preview).
    finished: bool,
}

/// A Save waiting for its full-size render.
pub(crate) struct PendingSave {
    path: PathBuf,
    format: OutputFormat,
    recipe: Recipe,
    /// The masks as they were when Save was asked for (encoded into the recipe on the writing
    /// thread).
    masks: Option<save::MaskSnapshot>,
    /// The render job, once submitted.
    job: Option<JobId>,
}

pub struct AtelierApp {
    ctx: egui::Context,
    /// The Instant result that Optimise starts from after Refine (cleared by a new photo or
    /// style).
    refine_from: Option<Arc<RgbImage>>,
    /// Shared with the New style panel's training run (a job of the same engine).
    engine: Arc<Engine>,
    events: wake::EngineEvents,
    tasks: Tasks,
    options: AppOptions,
    /// The VGG file, or why there is none (the controls offer `atelier fetch-vgg`).
    vgg: Result<PathBuf, Failure>,
    persisted: Persisted,
    gallery: Gallery,
    new_style: NewStylePanel,
    canvas: Canvas,
    /// Local style: the masks of the open photo, the brush that paints them, their tint.
    masks: Masks,
    brush: BrushTool,
    overlay: Overlay,
    /// The engine's notes on the last finished job, already shown.
    shown_notes: Vec<String>,
    toasts: Toasts,
    photo: Option<Photo>,
    loading_photo: Option<PathBuf>,
    style_images: HashMap<PathBuf, Arc<RgbImage>>,
    loading_styles: HashSet<PathBuf>,
    shown: Option<Shown>,
    running: Option<(JobId, JobProgress)>,
    /// The running job has a newer preview image waiting in the engine's slot.
    preview_waiting: bool,
    /// How the last job or save ended (or why none could start), for the status line.
    outcome: Option<(progress::Level, String)>,
    restart_at: Option<Instant>,
    pending_save: Option<PendingSave>,
    save_path_text: String,
    writes_in_flight: usize,
    /// Time in `ui()` per frame.
    frame_stats: FrameStats,
    /// Whole frames (ui, tessellation, painting) as eframe reports them, one frame late.
    whole_frames: FrameStats,
    frame_log: Option<frames::FrameLog>,
    /// Draw frames back to back (`ATELIER_REPAINT_CONTINUOUSLY=1`): the frame log's intervals
    /// are then whole frame times, rasterising and presenting included.
    repaint_continuously: bool,
    /// Pictures sent to textures this frame (for the frame log).
    uploads: usize,
    show_help: bool,
    show_frame_times: bool,
    /// A native file dialog is up (its thread reports back when it closes).
    dialog_open: bool,
    /// Counters for tests and the debug overlay.
    previews_received: usize,
    finished_jobs: usize,
    saved_files: Vec<PathBuf>,
    /// Video mode: the open clip, whose current frame is the photo.
    video: Option<video::VideoState>,
    videos_written: Vec<PathBuf>,
}

impl AtelierApp {
    /// The app, or why it cannot start (its engine thread did not start).
    pub fn new(cc: &eframe::CreationContext<'_>, options: AppOptions) -> Result<Self, String> {
        let storage = if options.use_storage {
            cc.storage
        } else {
            None
        };
        let persisted = Persisted::load(storage);
        let vgg = crate::engine::resolve_vgg(options.vgg.as_deref()).map_err(|e| {
            Failure::from_error(e).unwrap_or(Failure::Internal("VGG search cancelled".into()))
        });
        // In the background: on a machine with few cores the UI must win the CPU when it draws.
        let engine = match Engine::new_background(crate::engine::best_device()) {
            Ok(engine) => Arc::new(engine),
            Err(e) => return Err(e.to_string()),
        };
        let events = wake::EngineEvents::forward(engine.events(), &cc.egui_ctx);
        let mut app = Self {
            ctx: cc.egui_ctx.clone(),
            engine,
            events,
            tasks: Tasks::new(cc.egui_ctx.clone()),
            vgg,
            gallery: Gallery::default(),
            new_style: NewStylePanel::default(),
            canvas: Canvas::default(),
            masks: Masks::default(),
            brush: BrushTool::default(),
            overlay: Overlay::default(),
            shown_notes: Vec::new(),
            toasts: Toasts::default(),
            photo: None,
            loading_photo: None,
            style_images: HashMap::new(),
            loading_styles: HashSet::new(),
            shown: None,
            refine_from: None,
            running: None,
            preview_waiting: false,
            outcome: None,
            restart_at: None,
            pending_save: None,
            save_path_text: persisted
                .save_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            writes_in_flight: 0,
            frame_stats: FrameStats::default(),
            whole_frames: FrameStats::default(),
            frame_log: frames::FrameLog::from_env(),
            uploads: 0,
            repaint_continuously: std::env::var_os("ATELIER_REPAINT_CONTINUOUSLY")
                .is_some_and(|v| !v.is_empty() && v != "0"),
            show_help: false,
            dialog_open: false,
            // F12 toggles it; the variable turns it on from the start (for measurements).
            show_frame_times: std::env::var_os("ATELIER_FRAME_TIMES").is_some(),
            previews_received: 0,
            finished_jobs: 0,
            saved_files: Vec::new(),
            video: None,
            videos_written: Vec::new(),
            persisted,
            options,
        };
        // A missing VGG is explained in the controls panel (and when a job needs it).
        app.reload_gallery();
        // `atelier clip.mp4` (or a folder of frames) opens in video mode, like a dropped clip.
        if let Some(path) = app.options.photo.clone() {
            if video::is_video_file(&path) || path.is_dir() {
                app.open_video(path);
            } else {
                app.open_photo(path);
            }
        }
        Ok(app)
    }

    // ---- State for tests and the debug overlay ----

    pub fn controls(&self) -> &Controls {
        &self.persisted.controls
    }

    pub fn new_style_panel(&self) -> &NewStylePanel {
        &self.new_style
    }

    pub fn has_photo(&self) -> bool {
        self.photo.is_some()
    }

    /// A job or a save is in flight.
    pub fn is_busy(&self) -> bool {
        self.running.is_some()
            || self.restart_at.is_some()
            || self.pending_save.is_some()
            || self.writes_in_flight > 0
            || self.loading_photo.is_some()
            || self.video_busy()
    }

    pub fn job_running(&self) -> bool {
        self.running.is_some()
    }

    pub fn previews_received(&self) -> usize {
        self.previews_received
    }

    pub fn finished_jobs(&self) -> usize {
        self.finished_jobs
    }

    pub fn saved_files(&self) -> &[PathBuf] {
        &self.saved_files
    }

    pub fn frame_stats(&self) -> &FrameStats {
        &self.frame_stats
    }

    pub fn messages(&self) -> Vec<(progress::Level, String)> {
        self.toasts.messages()
    }

    /// The before/after split is on.
    pub fn compare_on(&self) -> bool {
        self.canvas.compare
    }

    /// The canvas zoom in percent.
    pub fn zoom_percent(&self) -> f32 {
        self.canvas.zoom_percent()
    }

    /// The masks of the open photo (local style).
    pub fn masks(&self) -> &Masks {
        &self.masks
    }

    /// The mask brush's settings.
    pub fn brush(&self) -> &BrushTool {
        &self.brush
    }

    /// Changes the mask brush's settings from code (tests), as the panel does.
    pub fn brush_mut(&mut self) -> &mut BrushTool {
        &mut self.brush
    }

    /// The status line as shown (for tests).
    pub fn status_line(&self) -> (progress::Level, String) {
        let opening = self
            .loading_photo
            .as_ref()
            .map(|p| p.file_name().unwrap_or(p.as_os_str()).to_string_lossy());
        progress::status_line(&progress::StatusInputs {
            opening: opening.as_deref(),
            has_photo: self.photo.is_some(),
            has_style: !self.persisted.selection.is_empty(),
            running: self.running.as_ref().map(|(_, p)| p),
            preparing_save: self.pending_save.is_some(),
            writing: self.writes_in_flight,
            restart_pending: self.restart_at.is_some(),
            outcome: self.outcome.as_ref(),
        })
    }

    /// The selected gallery styles and their blend weights.
    pub fn selection(&self) -> &[gallery::SelectedStyle] {
        &self.persisted.selection
    }

    pub fn gallery_entries(&self) -> &[StyleEntry] {
        &self.gallery.entries
    }

    /// The picture on the canvas at the current strength (None before the first preview).
    pub fn shown_image(&self) -> Option<RgbImage> {
        let shown = self.shown.as_ref()?;
        imaging::blend(
            &shown.stylized,
            &shown.content,
            self.persisted.controls.pixel_strength(),
        )
        .ok()
    }
}

impl eframe::App for AtelierApp {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let started = Instant::now();
        self.uploads = 0;
        let sched = self
            .frame_log
            .as_ref()
            .and_then(|_| frames::SchedTimes::now());
        // eframe's time for the whole previous frame; that frame ran with the same job state
        // in all but its last frame.
        let previous_frame = frame.info().cpu_usage;
        if let Some(seconds) = previous_frame {
            self.whole_frames.record(
                Duration::from_secs_f32(seconds.max(0.0)),
                self.running.is_some(),
            );
        }
        let ctx = ui.ctx().clone();
        // Closing while a style trains waits for its checkpoint (the panel says so).
        if ctx.input(|i| i.viewport().close_requested()) && self.new_style.close_requested() {
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
        }
        self.handle_tasks(&ctx);
        self.drain_engine();
        let actions = self.new_style.poll(&ctx);
        self.panel_actions(&ctx, actions);
        self.handle_dropped_files(&ctx);
        self.handle_shortcuts(&ctx);
        self.tick(&ctx);
        self.video_tick(&ctx);

        let mut actions = Vec::new();
        egui::Panel::top("menu").show(ui, |ui| actions.extend(self.menu_bar(ui)));
        egui::Panel::bottom("status").show(ui, |ui| actions.extend(self.status_bar(ui)));
        if self.video.is_some() {
            // At the top: toasts pile up over the bottom right.
            egui::Panel::top("video").show(ui, |ui| actions.extend(self.video_bar(ui)));
        }
        egui::Panel::left("controls")
            .resizable(true)
            .default_size(300.0)
            .size_range(240.0..=480.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| actions.extend(self.controls_panel(ui)));
            });
        egui::Panel::right("gallery")
            .resizable(true)
            .default_size(248.0)
            .size_range(132.0..=520.0)
            .show(ui, |ui| actions.extend(self.gallery_panel(ui)));
        egui::CentralPanel::no_frame()
            .frame(egui::Frame::new().fill(Color32::from_gray(22)))
            .show(ui, |ui| actions.extend(self.canvas_panel(ui)));
        self.apply(actions);
        self.sync_mask_overlay(&ctx);
        let vgg_problem = self.vgg.as_ref().err().map(ToString::to_string);
        let env = new_style::Environment {
            trained_dir: self.options.trained_styles_dir.as_deref(),
            vgg: match (&self.vgg, &vgg_problem) {
                (Ok(path), _) => Ok(path.as_path()),
                (Err(_), Some(problem)) => Err(problem.as_str()),
                (Err(_), None) => Err(""),
            },
            engine: &self.engine,
        };
        let actions = self
            .new_style
            .show(&ctx, &mut self.persisted.new_style, &env, &self.tasks);
        self.panel_actions(&ctx, actions);
        self.toasts.show(&ctx);
        self.help_window(&ctx);
        self.drop_overlay(&ctx);

        let job_running = self.running.is_some();
        if self.repaint_continuously {
            ctx.request_repaint();
        } else if job_running {
            // Events wake the UI; this only ticks the elapsed time on the progress bar (or
            // polls, where events cannot wake it).
            let tick = if self.events.needs_polling { 50 } else { 1000 };
            ctx.request_repaint_after(Duration::from_millis(tick));
        } else if self.new_style.is_training() && self.events.needs_polling {
            ctx.request_repaint_after(Duration::from_millis(50));
        }
        self.frame_stats.record(started.elapsed(), job_running);
        if let Some(log) = &mut self.frame_log {
            log.frame(started, sched, previous_frame, job_running, self.uploads);
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        if self.options.use_storage {
            self.persisted.store(storage);
        }
    }
}
