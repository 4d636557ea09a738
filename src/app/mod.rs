//! The desktop app (eframe/egui). It owns an [`Engine`] and drains its events every frame; the
//! UI thread never blocks: decoding, saving and file dialogs run on small threads
//! ([`tasks`]) whose results are polled the same way.
//!
//! One module per panel: [`canvas`], [`gallery`], [`controls`], [`progress`] (status bar,
//! toasts), [`new_style`] (training a new style, run by [`training`]), plus [`persistence`] and
//! [`shortcuts`].

pub mod canvas;
pub mod controls;
pub mod frames;
pub mod gallery;
pub mod new_style;
pub mod persistence;
pub mod progress;
pub mod shortcuts;
pub mod tasks;
pub mod training;
pub mod wake;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui::{self, Color32};
use image::RgbImage;

use crate::engine::{Engine, Event, Job, JobId, JobOutput, Method};
use crate::imaging::{self, OutputFormat};
use crate::recipe::{self, Recipe, RecipeStyle};
use crate::styles::{self, FileKind, StyleEntry};
use crate::stylize::gatys::{StyleImage, MAX_SIZE};
use canvas::{Canvas, CanvasImages};
use controls::{ControlChange, Controls, MethodChoice, SLOW_SAVE_SIDE, STYLE_LAYERS};
pub use frames::FrameStats;
use gallery::{Gallery, GalleryAction, SelectedStyle};
use new_style::{NewStylePanel, NewStyleSettings, PanelAction};
use persistence::Persisted;
use progress::{JobProgress, JobPurpose, Toasts};
use shortcuts::Shortcut;
use tasks::{DialogPurpose, TaskResult, Tasks};

/// How the app is started (the defaults are what `atelier` uses; tests override them).
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// A photo to open at start.
    pub photo: Option<PathBuf>,
    /// The bundled styles folder.
    pub styles_dir: PathBuf,
    /// Where styles trained in the app are kept (`None`: nowhere, training is unavailable).
    pub trained_styles_dir: Option<PathBuf>,
    /// The VGG file; `None` searches with [`crate::nn::hub::resolve_vgg`].
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

/// Opens the window; returns when it is closed. `ATELIER_RENDERER=glow` or `wgpu` overrides
/// the renderer.
pub fn run(photo: Option<PathBuf>) -> Result<(), eframe::Error> {
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
        ..AppOptions::default()
    };
    eframe::run_native(
        APP_ID,
        native_options,
        Box::new(move |cc| Ok(Box::new(AtelierApp::new(cc, options)))),
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
struct PendingSave {
    path: PathBuf,
    format: OutputFormat,
    recipe: Recipe,
    /// The render job, once submitted.
    job: Option<JobId>,
}

/// Why a job cannot be submitted right now.
enum NotReady {
    /// Style images are still loading; try again shortly.
    Waiting,
    /// No photo or no style yet: the status line already says what to do.
    Idle(String),
    /// Something the user must fix, in words.
    Problem(String),
}

pub struct AtelierApp {
    ctx: egui::Context,
    engine: Engine,
    events: wake::EngineEvents,
    tasks: Tasks,
    options: AppOptions,
    vgg: Result<PathBuf, String>,
    persisted: Persisted,
    gallery: Gallery,
    new_style: NewStylePanel,
    canvas: Canvas,
    toasts: Toasts,
    photo: Option<Photo>,
    loading_photo: Option<PathBuf>,
    style_images: HashMap<PathBuf, Arc<RgbImage>>,
    loading_styles: HashSet<PathBuf>,
    shown: Option<Shown>,
    running: Option<(JobId, JobProgress)>,
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
}

impl AtelierApp {
    pub fn new(cc: &eframe::CreationContext<'_>, options: AppOptions) -> Self {
        let storage = if options.use_storage {
            cc.storage
        } else {
            None
        };
        let persisted = Persisted::load(storage);
        let vgg = crate::nn::hub::resolve_vgg(options.vgg.as_deref()).map_err(|e| e.to_string());
        // In the background: on a machine with few cores the UI must win the CPU when it draws.
        let engine = Engine::new_background(crate::engine::best_device());
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
            toasts: Toasts::default(),
            photo: None,
            loading_photo: None,
            style_images: HashMap::new(),
            loading_styles: HashSet::new(),
            shown: None,
            running: None,
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
            persisted,
            options,
        };
        // A missing VGG is explained in the controls panel (and when a job needs it).
        app.reload_gallery();
        if let Some(photo) = app.options.photo.clone() {
            app.open_photo(photo);
        }
        app
    }

    // ---- Actions (also the test interface) ----

    /// Starts decoding `path` in the background; the canvas shows it when ready.
    pub fn open_photo(&mut self, path: PathBuf) {
        self.outcome = None;
        self.loading_photo = Some(path.clone());
        self.remember_folder(&path);
        self.tasks
            .spawn("open-photo", move || tasks::load_photo(path));
    }

    /// Adds style images / model files to the gallery (remembered between runs) and picks the
    /// first new one.
    pub fn add_user_styles(&mut self, paths: Vec<PathBuf>) {
        let mut first_new = None;
        for path in paths {
            match StyleEntry::from_user_file(&path) {
                Ok(entry) => {
                    let key = entry.key().to_path_buf();
                    if self.gallery.entry(&key).is_none() {
                        self.gallery.entries.push(entry);
                        self.persisted.user_styles.push(key.clone());
                    }
                    first_new.get_or_insert(key);
                }
                Err(e) => self.toasts.error(e.to_string()),
            }
        }
        if let Some(key) = first_new {
            self.pick_style(&key, false);
        }
    }

    /// Selects a gallery style (`additive`: add it to the blend, or take it out if already in).
    pub fn pick_style(&mut self, key: &Path, additive: bool) {
        let Some(entry) = self.gallery.entry(key).cloned() else {
            self.toasts
                .error(format!("{} is not in the gallery", key.display()));
            return;
        };
        let as_network = match (&entry.model, &entry.image) {
            (Some(_), None) => true,
            (None, Some(_)) => false,
            _ => self.persisted.controls.method == MethodChoice::Network,
        };
        let selection = &mut self.persisted.selection;
        if as_network {
            self.persisted.controls.method = MethodChoice::Network;
            if additive && !selection.is_empty() {
                self.toasts
                    .info("Trained networks cannot be blended; using the one you picked.");
            }
            *selection = vec![SelectedStyle {
                key: key.to_path_buf(),
                weight: 1.0,
            }];
        } else {
            self.persisted.controls.method = MethodChoice::Optimize;
            let gallery = &self.gallery;
            if additive {
                // Models cannot be part of an optimisation blend.
                selection.retain(|s| gallery.entry(&s.key).is_some_and(|e| e.image.is_some()));
                if let Some(index) = selection.iter().position(|s| s.key == key) {
                    selection.remove(index);
                } else {
                    selection.push(SelectedStyle {
                        key: key.to_path_buf(),
                        weight: 1.0,
                    });
                }
            } else {
                *selection = vec![SelectedStyle {
                    key: key.to_path_buf(),
                    weight: 1.0,
                }];
            }
        }
        self.schedule_restart();
    }

    /// Sets the strength and re-blends the cached result (no recompute).
    pub fn set_strength(&mut self, strength: f32) {
        self.persisted.controls.strength = strength.clamp(0.0, 1.0);
        self.reblend();
    }

    pub fn controls(&self) -> &Controls {
        &self.persisted.controls
    }

    /// Changes controls from code; like an edit in the panel, a recompute is debounced.
    pub fn update_controls(&mut self, edit: impl FnOnce(&mut Controls)) {
        let before = self.persisted.controls.clone();
        edit(&mut self.persisted.controls);
        self.apply_control_change(self.persisted.controls.change_since(&before));
    }

    /// Renders at full resolution (when the preview is smaller) and writes `path` atomically;
    /// PNGs carry the recipe.
    pub fn save_to(&mut self, path: PathBuf) {
        let Some(photo) = &self.photo else {
            self.toasts.error("Nothing to save: open a photo first.");
            return;
        };
        if self.persisted.selection.is_empty() {
            self.toasts
                .error("Nothing to save yet: pick a style in the gallery first.");
            return;
        }
        let format = match OutputFormat::from_path(&path, self.persisted.controls.jpeg_quality) {
            Ok(f) => f,
            Err(e) => return self.fail(e.to_string()),
        };
        let style_files: Vec<PathBuf> = self.selected_files();
        let mut inputs: Vec<&Path> = vec![photo.path.as_path()];
        inputs.extend(style_files.iter().map(PathBuf::as_path));
        if let Err(e) = imaging::ensure_not_an_input(&path, &inputs) {
            return self.fail(e.to_string());
        }
        if let Err(message) = tasks::check_writable(&path) {
            return self.fail(format!("Cannot save: {message}"));
        }
        let full_side = self.save_side(photo);
        let photo_dims = photo.original.dimensions();
        self.remember_folder(&path);
        self.persisted.save_path = Some(path.clone());
        self.save_path_text = path.display().to_string();
        // A finished preview that already is full size needs no second render.
        if let Some(shown) = &self.shown {
            if shown.finished
                && shown.stylized.dimensions() == photo_dims
                && self.restart_at.is_none()
            {
                let recipe = self.recipe(full_side);
                let (stylized, content) = (shown.stylized.clone(), shown.content.clone());
                self.write_render(stylized, content, path, format, recipe);
                return;
            }
        }
        self.pending_save = Some(PendingSave {
            path,
            format,
            recipe: self.recipe(full_side),
            job: None,
        });
        self.try_submit_save();
    }

    pub fn load_recipe_from(&mut self, path: PathBuf) {
        self.tasks
            .spawn("load-recipe", move || match recipe::load_recipe(&path) {
                Ok(r) => TaskResult::Recipe(Box::new(r)),
                Err(e) => TaskResult::Failed {
                    what: "recipe",
                    key: path,
                    message: e.to_string(),
                },
            });
    }

    pub fn cancel(&mut self) {
        if self.running.is_some() || self.pending_save.is_some() {
            if self.running.is_none() {
                // A Save still waiting for its style images: no engine event will say so.
                self.outcome = Some((progress::Level::Info, "Save cancelled.".into()));
            }
            self.engine.cancel();
            self.pending_save = None;
            self.restart_at = None;
        }
    }

    /// Opens the "New style" panel.
    pub fn open_new_style(&mut self) {
        self.new_style.open = true;
    }

    /// The "New style" panel's settings (remembered between runs).
    pub fn new_style_settings_mut(&mut self) -> &mut NewStyleSettings {
        &mut self.persisted.new_style
    }

    /// Adds style works to the "New style" panel, as a drop on it does.
    pub fn add_new_style_works(&mut self, paths: Vec<PathBuf>) {
        for problem in self
            .new_style
            .add_works(&mut self.persisted.new_style, paths)
        {
            self.toasts.error(problem);
        }
    }

    pub fn new_style_panel(&self) -> &NewStylePanel {
        &self.new_style
    }

    /// The window is asked to close. Returns true when the close waits for the training to
    /// save its checkpoint (the window closes by itself once it has).
    pub fn close_requested(&mut self) -> bool {
        self.new_style.close_requested()
    }

    // ---- State for tests and the debug overlay ----

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

    pub fn gallery_entries(&self) -> &[StyleEntry] {
        &self.gallery.entries
    }

    /// The picture on the canvas at the current strength (None before the first preview).
    pub fn shown_image(&self) -> Option<RgbImage> {
        let shown = self.shown.as_ref()?;
        imaging::blend(
            &shown.stylized,
            &shown.content,
            self.persisted.controls.strength,
        )
        .ok()
    }

    // ---- Internals ----

    fn reload_gallery(&mut self) {
        let (entries, problems) = styles::build_gallery(
            &self.options.styles_dir,
            self.options.trained_styles_dir.as_deref(),
            &self.persisted.user_styles,
        );
        for problem in problems {
            self.toasts.error(format!("Style skipped: {problem}"));
        }
        // Forget user files that are gone, so they do not warn on every start.
        self.persisted
            .user_styles
            .retain(|p| entries.iter().any(|e| e.key() == p.as_path()));
        self.persisted
            .selection
            .retain(|s| entries.iter().any(|e| e.key() == s.key.as_path()));
        self.gallery.entries = entries;
    }

    fn remember_folder(&mut self, path: &Path) {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.persisted.last_folder = Some(parent.to_path_buf());
        }
    }

    fn open_dialog(&mut self, purpose: DialogPurpose) {
        // One native dialog at a time: a second Ctrl+O would stack another window.
        if self.dialog_open {
            return;
        }
        self.dialog_open = true;
        let folder = self.persisted.last_folder.clone();
        let file_name = self
            .default_save_path()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        self.tasks.spawn("dialog", move || {
            tasks::run_dialog(purpose, folder, file_name)
        });
    }

    /// `<photo folder>/<photo name>-atelier.png`.
    fn default_save_path(&self) -> Option<PathBuf> {
        let photo = self.photo.as_ref()?;
        let stem = photo.path.file_stem()?.to_string_lossy();
        Some(photo.path.with_file_name(format!("{stem}-atelier.png")))
    }

    /// The files the selected styles run from (for the never-overwrite-an-input check).
    fn selected_files(&self) -> Vec<PathBuf> {
        self.persisted
            .selection
            .iter()
            .filter_map(|s| self.gallery.entry(&s.key))
            .flat_map(|e| e.image.iter().chain(e.model.iter()).cloned())
            .collect()
    }

    /// Longer side of the Save render.
    fn save_side(&self, photo: &Photo) -> u32 {
        let (w, h) = photo.original.dimensions();
        match self.persisted.controls.method {
            MethodChoice::Optimize => w
                .max(h)
                .min(self.persisted.controls.save_max_side)
                .min(MAX_SIZE),
            // The engine caps the network's input for memory.
            MethodChoice::Network => crate::stylize::network::network_side(w, h, None),
        }
    }

    fn schedule_restart(&mut self) {
        self.outcome = None;
        if self.photo.is_some() || self.loading_photo.is_some() {
            self.restart_at = Some(Instant::now() + self.options.debounce);
        }
    }

    /// An error that ends what the user asked for: a toast now, and the status line until the
    /// next action.
    fn fail(&mut self, message: String) {
        self.outcome = Some((progress::Level::Error, message.clone()));
        self.toasts.error(message);
    }

    fn apply_control_change(&mut self, change: ControlChange) {
        match change {
            ControlChange::None => {}
            ControlChange::Strength => self.reblend(),
            ControlChange::Recompute => self.schedule_restart(),
        }
    }

    /// Builds the job for `purpose` from the current photo, selection and controls.
    fn build_job(&mut self, purpose: JobPurpose) -> Result<(Job, u32), NotReady> {
        let Some(photo) = &self.photo else {
            return Err(NotReady::Idle("open a photo first.".into()));
        };
        let controls = &self.persisted.controls;
        let (content, side) = match purpose {
            JobPurpose::Preview => {
                let photo_side = photo.original.width().max(photo.original.height());
                (
                    photo.working.clone(),
                    controls.preview_size.min(photo_side).max(16),
                )
            }
            JobPurpose::Save => (photo.original.clone(), self.save_side(photo)),
        };
        let entries: Vec<(StyleEntry, f64)> = self
            .persisted
            .selection
            .iter()
            .filter_map(|s| self.gallery.entry(&s.key).map(|e| (e.clone(), s.weight)))
            .collect();
        if entries.is_empty() {
            return Err(NotReady::Idle("pick a style in the gallery first.".into()));
        }
        let method = match controls.method {
            MethodChoice::Network => {
                let Some(model) = entries.iter().find_map(|(e, _)| e.model.clone()) else {
                    return Err(NotReady::Problem(
                        "The Network method needs a trained model (.safetensors / .pth): add one \
                         to the gallery, or switch to Optimise."
                            .into(),
                    ));
                };
                let size = match purpose {
                    JobPurpose::Preview => Some(side),
                    JobPurpose::Save => None,
                };
                Method::Network {
                    model,
                    size,
                    preserve_color: controls.preserve_color,
                }
            }
            MethodChoice::Optimize => {
                let vgg = self.vgg.clone().map_err(NotReady::Problem)?;
                let images: Vec<(PathBuf, f64)> = entries
                    .iter()
                    .filter_map(|(e, w)| e.image.clone().map(|p| (p, *w)))
                    .collect();
                if images.is_empty() {
                    return Err(NotReady::Problem(
                        "The Optimise method needs a style image: pick a painting in the \
                         gallery, or switch to Network."
                            .into(),
                    ));
                }
                let total: f64 = images.iter().map(|(_, w)| w).sum();
                let mut styles = Vec::new();
                let mut waiting = false;
                for (path, weight) in &images {
                    match self.style_images.get(path) {
                        Some(image) => styles.push(StyleImage {
                            image: image.clone(),
                            // Normalised so the blend does not change the overall style weight.
                            weight: if total > 0.0 {
                                weight / total
                            } else {
                                1.0 / images.len() as f64
                            },
                        }),
                        None => {
                            waiting = true;
                            if self.loading_styles.insert(path.clone()) {
                                let path = path.clone();
                                self.tasks
                                    .spawn("style-image", move || tasks::load_style_image(path));
                            }
                        }
                    }
                }
                if waiting {
                    return Err(NotReady::Waiting);
                }
                let preview_every = match purpose {
                    JobPurpose::Preview => controls.preview_every,
                    JobPurpose::Save => 0,
                };
                Method::Optimize {
                    vgg,
                    styles,
                    config: controls.gatys_config(side, preview_every),
                }
            }
        };
        let job = Job {
            content,
            method,
            strength: controls.strength,
        };
        Ok((job, side))
    }

    fn submit(&mut self, job: Job, purpose: JobPurpose, side: u32) -> JobId {
        let id = self.engine.submit(job);
        self.outcome = None;
        self.running = Some((id, JobProgress::new(purpose, side)));
        id
    }

    fn try_submit_save(&mut self) {
        if self.pending_save.as_ref().is_none_or(|p| p.job.is_some()) {
            return;
        }
        match self.build_job(JobPurpose::Save) {
            Ok((job, side)) => {
                if side > SLOW_SAVE_SIDE && self.persisted.controls.method == MethodChoice::Optimize
                {
                    self.toasts.info(format!(
                        "Rendering {side} px by optimisation: this can take a long time on a CPU \
                         (Cancel with Esc; lower “Save size” for a quicker render)."
                    ));
                }
                let id = self.submit(job, JobPurpose::Save, side);
                if let Some(pending) = &mut self.pending_save {
                    pending.job = Some(id);
                }
            }
            Err(NotReady::Waiting) => {}
            Err(NotReady::Idle(message) | NotReady::Problem(message)) => {
                self.pending_save = None;
                self.fail(format!("Cannot save: {message}"));
            }
        }
    }

    /// Starts the debounced preview job once its quiet time is over (not during a Save render).
    fn tick(&mut self, ctx: &egui::Context) {
        self.try_submit_save();
        let Some(at) = self.restart_at else {
            return;
        };
        let now = Instant::now();
        let saving = self.pending_save.is_some();
        if now < at || saving || self.photo.is_none() {
            ctx.request_repaint_after(
                at.saturating_duration_since(now)
                    .max(Duration::from_millis(20)),
            );
            return;
        }
        match self.build_job(JobPurpose::Preview) {
            Ok((job, side)) => {
                self.restart_at = None;
                self.submit(job, JobPurpose::Preview, side);
                ctx.request_repaint();
            }
            Err(NotReady::Waiting) => {
                self.restart_at = Some(now + Duration::from_millis(50));
                ctx.request_repaint_after(Duration::from_millis(50));
            }
            Err(NotReady::Idle(_)) => self.restart_at = None,
            Err(NotReady::Problem(message)) => {
                // Not a toast: it repeats on every control change until the user fixes it.
                self.restart_at = None;
                self.outcome = Some((progress::Level::Error, message));
            }
        }
    }

    fn drain_engine(&mut self) {
        while let Some(event) = self.events.try_recv() {
            let Some((id, progress)) = &mut self.running else {
                continue;
            };
            // Events of superseded jobs are stale.
            if event.job() != *id {
                continue;
            }
            let purpose = progress.purpose;
            match event {
                Event::Started { total_steps, .. } => progress.total_steps = total_steps,
                Event::Progress {
                    step,
                    total_steps,
                    losses,
                    elapsed,
                    ..
                } => {
                    progress.step = step;
                    progress.total_steps = total_steps;
                    progress.elapsed = elapsed;
                    progress.losses = Some(losses);
                }
                Event::Preview { image, .. } => {
                    if purpose == JobPurpose::Preview {
                        self.previews_received += 1;
                        self.show_stylized(image, None, false);
                    }
                }
                Event::Finished { output, .. } => {
                    self.running = None;
                    self.finished_jobs += 1;
                    self.job_finished(purpose, output);
                }
                Event::Failed { message, .. } => {
                    self.running = None;
                    if purpose == JobPurpose::Save {
                        self.pending_save = None;
                        self.fail(format!("Save failed: {message}"));
                    } else {
                        self.fail(format!("Preview failed: {message}"));
                    }
                }
                Event::Cancelled { .. } => {
                    self.running = None;
                    if purpose == JobPurpose::Save {
                        self.pending_save = None;
                    }
                    if self.restart_at.is_none() {
                        self.outcome = Some((
                            progress::Level::Info,
                            "Cancelled. Change a control or pick a style to render again.".into(),
                        ));
                    }
                }
            }
        }
    }

    fn job_finished(&mut self, purpose: JobPurpose, output: JobOutput) {
        let stats = &output.stats;
        match purpose {
            JobPurpose::Preview => {
                self.outcome = Some((
                    progress::Level::Info,
                    format!(
                        "Preview {}×{} done in {:.1} s{}. Save (Ctrl+S) renders the full size.",
                        stats.width,
                        stats.height,
                        stats.seconds,
                        // The network has no steps to count.
                        if stats.steps > 1 {
                            format!(" ({} steps)", stats.steps)
                        } else {
                            String::new()
                        }
                    ),
                ));
                self.show_stylized(output.stylized, Some(output.content), true);
            }
            JobPurpose::Save => {
                let Some(pending) = self.pending_save.take() else {
                    return;
                };
                if let Some(photo) = &self.photo {
                    let (w, h) = photo.original.dimensions();
                    let network = self.persisted.controls.method == MethodChoice::Network;
                    if network && stats.width.max(stats.height) < w.max(h) {
                        // The network caps its input for memory; say so rather than surprise.
                        self.toasts.info(format!(
                            "Saved at {}×{} instead of {w}×{h}: the network runs on at most \
                             {} megapixels at once.",
                            stats.width,
                            stats.height,
                            crate::stylize::network::MAX_NETWORK_PIXELS / 1_000_000
                        ));
                    }
                }
                self.write_render(
                    output.stylized,
                    output.content,
                    pending.path,
                    pending.format,
                    pending.recipe,
                );
                // The render superseded an unfinished preview: start it again.
                if !self.shown.as_ref().is_some_and(|s| s.finished) {
                    self.restart_at = Some(Instant::now());
                }
            }
        }
    }

    /// Blends at the current strength and writes on a background thread.
    fn write_render(
        &mut self,
        stylized: Arc<RgbImage>,
        content: Arc<RgbImage>,
        path: PathBuf,
        format: OutputFormat,
        mut recipe: Recipe,
    ) {
        let strength = self.persisted.controls.strength;
        recipe.strength = strength;
        self.writes_in_flight += 1;
        self.tasks.spawn("save", move || {
            let written =
                imaging::blend(&stylized, &content, strength).and_then(|image| match format {
                    OutputFormat::Png => recipe::save_png_with_recipe(&image, &path, &recipe),
                    OutputFormat::Jpeg { .. } => imaging::save_atomic(&image, &path, format),
                });
            match written {
                Ok(()) => TaskResult::Saved { path },
                Err(e) => TaskResult::Failed {
                    what: "save",
                    key: path,
                    message: e.to_string(),
                },
            }
        });
    }

    /// Puts a full-strength picture on the canvas; `content` is the photo at its size (computed
    /// from the working photo when not given).
    fn show_stylized(
        &mut self,
        stylized: Arc<RgbImage>,
        content: Option<Arc<RgbImage>>,
        finished: bool,
    ) {
        let Some(photo) = &self.photo else {
            return;
        };
        let (w, h) = stylized.dimensions();
        let content = content.unwrap_or_else(|| match &self.shown {
            Some(shown) if shown.content.dimensions() == (w, h) => shown.content.clone(),
            _ => Arc::new(tasks::display_resize(&photo.working, w, h)),
        });
        let blended = imaging::blend(&stylized, &content, self.persisted.controls.strength)
            .unwrap_or_else(|_| (*stylized).clone());
        let color = tasks::to_color_image(&blended);
        self.uploads += 1;
        let texture = match self.shown.take() {
            Some(mut shown) => {
                shown.texture.set(color, egui::TextureOptions::LINEAR);
                shown.texture
            }
            None => self
                .ctx
                .load_texture("result", color, egui::TextureOptions::LINEAR),
        };
        self.shown = Some(Shown {
            stylized,
            content,
            texture,
            finished,
        });
    }

    fn reblend(&mut self) {
        if let Some(shown) = &mut self.shown {
            if let Ok(blended) = imaging::blend(
                &shown.stylized,
                &shown.content,
                self.persisted.controls.strength,
            ) {
                self.uploads += 1;
                shown.texture.set(
                    tasks::to_color_image(&blended),
                    egui::TextureOptions::LINEAR,
                );
            }
        }
    }

    fn recipe(&self, size: u32) -> Recipe {
        let c = &self.persisted.controls;
        let entries: Vec<(&StyleEntry, f64)> = self
            .persisted
            .selection
            .iter()
            .filter_map(|s| self.gallery.entry(&s.key).map(|e| (e, s.weight)))
            .collect();
        let network = c.method == MethodChoice::Network;
        Recipe {
            method: if network { "network" } else { "optimize" }.into(),
            styles: if network {
                Vec::new()
            } else {
                entries
                    .iter()
                    .filter_map(|(e, w)| {
                        e.image.clone().map(|path| RecipeStyle { path, weight: *w })
                    })
                    .collect()
            },
            model: if network {
                entries.iter().find_map(|(e, _)| e.model.clone())
            } else {
                None
            },
            content_weight: c.content_weight,
            style_weight: c.style_weight,
            tv_weight: c.tv_weight,
            style_layers: c.style_layers(),
            preserve_color: c.preserve_color,
            optimizer: "lbfgs".into(),
            seed: c.seed,
            size,
            steps: c.steps,
            strength: c.strength,
            photo: self.photo.as_ref().map(|p| p.path.clone()),
            ..Recipe::default()
        }
    }

    fn apply_recipe(&mut self, recipe: Recipe) {
        let mut controls = self.persisted.controls.clone();
        controls.method = if recipe.method == "network" {
            MethodChoice::Network
        } else {
            MethodChoice::Optimize
        };
        controls.content_weight = recipe.content_weight;
        controls.style_weight = recipe.style_weight;
        controls.tv_weight = recipe.tv_weight;
        controls.preserve_color = recipe.preserve_color;
        controls.seed = recipe.seed;
        controls.steps = recipe.steps;
        controls.strength = recipe.strength;
        if !recipe.style_layers.is_empty() {
            for (name, weight) in STYLE_LAYERS.iter().zip(controls.layer_weights.iter_mut()) {
                *weight = recipe
                    .style_layers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(0.0, |(_, w)| *w);
            }
        }
        self.persisted.controls = controls.sanitized();
        let files: Vec<(PathBuf, f64)> = recipe
            .styles
            .iter()
            .map(|s| (s.path.clone(), s.weight))
            .chain(recipe.model.iter().map(|m| (m.clone(), 1.0)))
            .collect();
        let mut selection = Vec::new();
        for (path, weight) in files {
            if self.gallery.entry(&path).is_none() {
                match StyleEntry::from_user_file(&path) {
                    Ok(entry) => {
                        self.gallery.entries.push(entry);
                        self.persisted.user_styles.push(path.clone());
                    }
                    Err(e) => {
                        self.toasts
                            .error(format!("A style of the recipe is missing: {e}"));
                        continue;
                    }
                }
            }
            selection.push(SelectedStyle { key: path, weight });
        }
        self.persisted.selection = selection;
        self.toasts
            .info("Recipe loaded: controls and styles restored.");
        self.reblend();
        self.schedule_restart();
    }

    fn handle_tasks(&mut self, ctx: &egui::Context) {
        for result in self.tasks.drain() {
            match result {
                TaskResult::Photo(loaded) => {
                    // A newer open wins over a slower older one.
                    if self.loading_photo.as_ref() != Some(&loaded.path) {
                        continue;
                    }
                    self.loading_photo = None;
                    let texture =
                        ctx.load_texture("photo", loaded.display, egui::TextureOptions::LINEAR);
                    let (w, h) = loaded.original.dimensions();
                    tracing::info!("opened {} ({w}×{h})", loaded.path.display());
                    self.photo = Some(Photo {
                        path: loaded.path,
                        original: loaded.original,
                        working: loaded.working,
                        texture,
                    });
                    self.shown = None;
                    self.canvas.fit();
                    if let Some(default) = self.default_save_path() {
                        let keep_folder =
                            self.persisted.save_path.as_ref().and_then(|p| p.parent());
                        let path = match (keep_folder, default.file_name()) {
                            (Some(folder), Some(name)) if folder.is_dir() => folder.join(name),
                            _ => default,
                        };
                        self.save_path_text = path.display().to_string();
                    }
                    self.engine.cancel();
                    self.schedule_restart();
                }
                TaskResult::StyleImage { path, image } => {
                    self.loading_styles.remove(&path);
                    self.style_images.insert(path, image);
                }
                TaskResult::Thumbnail { path, image } => {
                    // The panel's works and the gallery may show the same picture.
                    if self.new_style.wants_thumbnail(&path) {
                        self.new_style
                            .thumbnail_loaded(ctx, path.clone(), image.clone());
                    }
                    self.gallery.thumbnail_loaded(ctx, path, image)
                }
                TaskResult::Saved { path } => {
                    self.writes_in_flight = self.writes_in_flight.saturating_sub(1);
                    let message = format!("Saved {}", path.display());
                    self.outcome = Some((progress::Level::Info, message.clone()));
                    self.toasts.info(message);
                    self.saved_files.push(path);
                }
                TaskResult::Recipe(recipe) => self.apply_recipe(*recipe),
                TaskResult::Picked { purpose, paths } => {
                    self.dialog_open = false;
                    self.dialog_picked(purpose, paths);
                }
                TaskResult::Failed { what, key, message } => match what {
                    "thumbnail" => {
                        if self.new_style.wants_thumbnail(&key) {
                            self.new_style.thumbnail_failed(key.clone());
                        }
                        self.gallery.thumbnail_failed(key)
                    }
                    "style image" => {
                        self.loading_styles.remove(&key);
                        // Drop it from the selection so the job does not wait for it forever.
                        self.persisted.selection.retain(|s| {
                            self.gallery
                                .entry(&s.key)
                                .is_none_or(|e| e.image.as_ref() != Some(&key))
                        });
                        self.toasts
                            .error(format!("Cannot use this style: {message}"));
                    }
                    "photo" => {
                        if self.loading_photo.as_ref() == Some(&key) {
                            self.loading_photo = None;
                        }
                        self.fail(format!("Cannot open the photo: {message}"));
                    }
                    "save" => {
                        self.writes_in_flight = self.writes_in_flight.saturating_sub(1);
                        self.fail(format!("Save failed: {message}"));
                    }
                    "file dialog" => {
                        self.dialog_open = false;
                        self.toasts.error(message);
                    }
                    _ => self.toasts.error(message),
                },
            }
        }
    }

    fn dialog_picked(&mut self, purpose: DialogPurpose, paths: Vec<PathBuf>) {
        let Some(first) = paths.first().cloned() else {
            return;
        };
        match purpose {
            DialogPurpose::OpenPhoto => self.open_photo(first),
            DialogPurpose::AddStyles => {
                self.remember_folder(&first);
                self.add_user_styles(paths);
            }
            DialogPurpose::SaveAs => {
                // The dialog may return a name without an extension: default to PNG.
                let path = if first.extension().is_none() {
                    first.with_extension("png")
                } else {
                    first
                };
                self.save_to(path);
            }
            DialogPurpose::LoadRecipe => {
                self.remember_folder(&first);
                self.load_recipe_from(first);
            }
            DialogPurpose::StyleWorks | DialogPurpose::StyleWorksFolder => {
                self.remember_folder(&first);
                self.add_new_style_works(paths);
            }
            DialogPurpose::TrainingPhotos => {
                self.remember_folder(&first);
                self.new_style
                    .set_photos(&mut self.persisted.new_style, first);
            }
        }
    }

    fn handle_dropped_files(&mut self, ctx: &egui::Context) {
        let (dropped, pointer) =
            ctx.input(|i| (i.raw.dropped_files.clone(), i.pointer.latest_pos()));
        if dropped.is_empty() {
            return;
        }
        let on_gallery = match (self.gallery.rect, pointer) {
            (Some(rect), Some(p)) => rect.contains(p),
            _ => false,
        };
        let on_new_style = match (self.new_style.rect, pointer) {
            (Some(rect), Some(p)) => rect.contains(p),
            _ => false,
        };
        let paths: Vec<PathBuf> = dropped
            .into_iter()
            .map(|f| f.path().to_path_buf())
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        // The panel floats over the others: a drop on it is meant for it.
        if on_new_style {
            self.add_new_style_works(paths);
            return;
        }
        let mut styles_to_add = Vec::new();
        let mut photo = None;
        for path in paths {
            match styles::file_kind(&path) {
                Some(FileKind::Model) => styles_to_add.push(path),
                Some(FileKind::Image) if on_gallery => styles_to_add.push(path),
                Some(FileKind::Image) if photo.is_none() => photo = Some(path),
                Some(FileKind::Image) => styles_to_add.push(path),
                None => self
                    .toasts
                    .error(format!("{}: not an image or a model file", path.display())),
            }
        }
        if let Some(photo) = photo {
            self.open_photo(photo);
        }
        if !styles_to_add.is_empty() {
            self.add_user_styles(styles_to_add);
        }
    }

    fn panel_actions(&mut self, ctx: &egui::Context, actions: Vec<PanelAction>) {
        for action in actions {
            match action {
                PanelAction::Dialog(purpose) => self.open_dialog(purpose),
                PanelAction::Message(progress::Level::Error, text) => self.toasts.error(text),
                PanelAction::Message(progress::Level::Info, text) => self.toasts.info(text),
                PanelAction::ReloadGallery => self.reload_gallery(),
                PanelAction::Finished {
                    model,
                    thumbnail,
                    name,
                } => {
                    // A replaced style keeps its file names: drop the old thumbnail.
                    self.gallery.forget_thumbnail(&thumbnail);
                    self.reload_gallery();
                    if self.gallery.entry(&model).is_some() {
                        self.toasts.info(format!(
                            "New style “{name}” is in the gallery: click it to use it."
                        ));
                    } else {
                        self.toasts.error(format!(
                            "“{name}” finished, but the gallery cannot list it (see the messages)."
                        ));
                    }
                }
                PanelAction::CloseNow => ctx.send_viewport_cmd(egui::ViewportCommand::Close),
            }
        }
    }

    fn handle_shortcuts(&mut self, ctx: &egui::Context) {
        for shortcut in shortcuts::pressed(ctx) {
            match shortcut {
                Shortcut::Open => self.open_dialog(DialogPurpose::OpenPhoto),
                Shortcut::NewStyle => self.new_style.open = true,
                Shortcut::Save => self.save_clicked(),
                Shortcut::SaveAs => self.open_dialog(DialogPurpose::SaveAs),
                Shortcut::ToggleCompare => self.canvas.compare = !self.canvas.compare,
                Shortcut::ZoomIn => self.canvas.zoom_in(),
                Shortcut::ZoomOut => self.canvas.zoom_out(),
                Shortcut::ZoomFit => self.canvas.fit(),
                Shortcut::ZoomActual => self.canvas.actual_size(),
                Shortcut::Cancel => self.cancel(),
            }
        }
        if ctx.input(|i| i.key_pressed(egui::Key::F12)) {
            self.show_frame_times = !self.show_frame_times;
        }
    }

    /// Save to the path in the Save field (or ask, when there is none).
    fn save_clicked(&mut self) {
        let text = self.save_path_text.trim();
        if text.is_empty() {
            self.open_dialog(DialogPurpose::SaveAs);
        } else {
            self.save_to(PathBuf::from(text));
        }
    }

    // ---- Panels ----

    fn menu_bar(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                let item = |ui: &mut egui::Ui, text: &str, shortcut: Option<Shortcut>| {
                    let button = egui::Button::new(text).shortcut_text(
                        shortcut
                            .map(|s| shortcuts::label(&ctx, s))
                            .unwrap_or_default(),
                    );
                    ui.add(button).clicked()
                };
                if item(ui, "Open photo…", Some(Shortcut::Open)) {
                    self.open_dialog(DialogPurpose::OpenPhoto);
                }
                if item(ui, "Add styles…", None) {
                    self.open_dialog(DialogPurpose::AddStyles);
                }
                if item(ui, "New style…", Some(Shortcut::NewStyle)) {
                    self.new_style.open = true;
                }
                ui.separator();
                if item(ui, "Save", Some(Shortcut::Save)) {
                    self.save_clicked();
                }
                if item(ui, "Save as…", Some(Shortcut::SaveAs)) {
                    self.open_dialog(DialogPurpose::SaveAs);
                }
                if item(ui, "Load recipe…", None) {
                    self.open_dialog(DialogPurpose::LoadRecipe);
                }
                ui.separator();
                if item(ui, "Quit", None) {
                    ui.send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
            ui.menu_button("View", |ui| {
                let item = |ui: &mut egui::Ui, text: &str, shortcut: Shortcut| {
                    ui.add(egui::Button::new(text).shortcut_text(shortcuts::label(&ctx, shortcut)))
                        .clicked()
                };
                if item(ui, "Fit to window", Shortcut::ZoomFit) {
                    self.canvas.fit();
                }
                if item(ui, "Actual size", Shortcut::ZoomActual) {
                    self.canvas.actual_size();
                }
                if item(ui, "Zoom in", Shortcut::ZoomIn) {
                    self.canvas.zoom_in();
                }
                if item(ui, "Zoom out", Shortcut::ZoomOut) {
                    self.canvas.zoom_out();
                }
                ui.separator();
                let mut compare = self.canvas.compare;
                if ui
                    .add(egui::Checkbox::new(&mut compare, "Before/after split"))
                    .on_hover_text(format!(
                        "{} toggles; hold Space to see the photo",
                        shortcuts::label(&ctx, Shortcut::ToggleCompare)
                    ))
                    .changed()
                {
                    self.canvas.compare = compare;
                }
                ui.checkbox(&mut self.show_frame_times, "Frame times (F12)")
                    .on_hover_text("Show how long frames take, in the status bar");
            });
            ui.menu_button("Help", |ui| {
                if ui
                    .button("Keyboard shortcuts")
                    .on_hover_text("List the keys and mouse gestures")
                    .clicked()
                {
                    self.show_help = true;
                    ui.close();
                }
            });
        });
    }

    fn controls_panel(&mut self, ui: &mut egui::Ui) {
        // Sliders take the panel's width, leaving room for the value box and the label.
        ui.spacing_mut().slider_width = (ui.available_width() - 170.0).max(80.0);
        ui.add_space(4.0);
        ui.heading("Style");
        let selection_changed =
            gallery::show_selection(ui, &self.gallery, &mut self.persisted.selection);
        if selection_changed {
            self.schedule_restart();
        }
        ui.separator();
        if self.new_style.is_training() {
            // Both run niced and share the cores; pausing the engine instead would lock the user
            // out of stylising for the hours a training takes.
            ui.colored_label(
                ui.visuals().warn_fg_color,
                "A style is training: previews render more slowly meanwhile (they share the \
                 CPU).",
            );
        }
        let vgg_missing = self.vgg.is_err();
        let change = self.persisted.controls.show(ui, vgg_missing);
        self.apply_control_change(change);
        ui.separator();
        self.save_section(ui);
    }

    fn save_section(&mut self, ui: &mut egui::Ui) {
        ui.heading("Save");
        ui.add(
            egui::TextEdit::singleline(&mut self.save_path_text)
                .hint_text("output.png or output.jpg")
                .desired_width(f32::INFINITY),
        )
        .on_hover_text(
            "Where Save writes (PNG keeps the recipe; JPEG uses the quality below). \
             Never the photo itself.",
        );
        let is_jpeg = {
            let lower = self.save_path_text.to_ascii_lowercase();
            lower.ends_with(".jpg") || lower.ends_with(".jpeg")
        };
        let controls = &mut self.persisted.controls;
        controls::tip(
            ui.add_enabled(
                is_jpeg,
                egui::Slider::new(&mut controls.jpeg_quality, 50..=100).text("JPEG quality"),
            ),
            "JPEG quality (higher is larger and sharper).",
            "Used when the Save path ends in .jpg or .jpeg.",
        );
        let optimizing = controls.method == MethodChoice::Optimize;
        controls::tip(
            ui.add_enabled(
                optimizing,
                egui::Slider::new(&mut controls.save_max_side, 256..=MAX_SIZE)
                    .logarithmic(true)
                    .text("Save size"),
            ),
            "Longest side of the saved optimisation render (capped at the photo's size).",
            "The Network method always renders the full photo.",
        );
        if let Some(photo) = &self.photo {
            let side = self.save_side(photo);
            let photo_side = photo.original.width().max(photo.original.height());
            let note = if optimizing && side > SLOW_SAVE_SIDE {
                format!("Saves at {side} px: slow on a CPU (minutes).")
            } else if side < photo_side && !optimizing {
                format!(
                    "Saves at {side} px: the network runs on at most {} megapixels.",
                    crate::stylize::network::MAX_NETWORK_PIXELS / 1_000_000
                )
            } else {
                format!("Saves at {side} px.")
            };
            ui.weak(note);
        }
        ui.horizontal(|ui| {
            let can_save = self.photo.is_some() && !self.persisted.selection.is_empty();
            let why_not = "Open a photo and pick a style first.";
            let save = controls::tip(
                ui.add_enabled(can_save, egui::Button::new("Save")),
                "Render at full resolution and write the file above (Ctrl+S)",
                why_not,
            );
            if save.clicked() {
                self.save_clicked();
            }
            let save_as = controls::tip(
                ui.add_enabled(can_save, egui::Button::new("Save as…")),
                "Choose where to save (Ctrl+Shift+S)",
                why_not,
            );
            if save_as.clicked() {
                self.open_dialog(DialogPurpose::SaveAs);
            }
            if ui
                .button("Load recipe…")
                .on_hover_text("Restore the controls and styles from a PNG saved by Atelier")
                .clicked()
            {
                self.open_dialog(DialogPurpose::LoadRecipe);
            }
        });
    }

    fn status_bar(&mut self, ui: &mut egui::Ui) {
        ui.add_space(2.0);
        if let Some((_, progress)) = &self.running {
            if progress::show_progress(ui, progress) {
                self.cancel();
            }
        } else if self.pending_save.is_some() {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Preparing the full-size render…");
            });
        }
        ui.horizontal(|ui| {
            match self.status_line() {
                (progress::Level::Error, text) => {
                    ui.colored_label(ui.visuals().error_fg_color, text);
                }
                (_, text) => {
                    ui.label(text);
                }
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if let Some(text) = self.new_style.status() {
                    if ui
                        .small_button(text)
                        .on_hover_text(
                            "A style is training in the background; stylise previews are slower \
                             meanwhile. Click to show it.",
                        )
                        .clicked()
                    {
                        self.new_style.open = true;
                    }
                }
                if let Some(photo) = &self.photo {
                    ui.weak(format!("{:.0} %", self.canvas.zoom_percent()))
                        .on_hover_text("Zoom (0 or F: fit, 1: actual size, +/-: zoom)");
                    let (w, h) = photo.original.dimensions();
                    let name = photo.path.file_name().unwrap_or(photo.path.as_os_str());
                    ui.weak(format!("{} · {w}×{h}", name.to_string_lossy()))
                        .on_hover_text(photo.path.display().to_string());
                }
                if self.show_frame_times {
                    let ms = |d: Duration| d.as_secs_f64() * 1e3;
                    let (ui_mean, ui_max) = self.frame_stats.recent();
                    let (mean, max) = self.whole_frames.recent();
                    ui.weak(format!(
                        "frame {:.1} ms (max {:.1}; during jobs max {:.1}) · ui {:.1} ms (max {:.1})",
                        ms(mean),
                        ms(max),
                        ms(self.whole_frames.max_during_job),
                        ms(ui_mean),
                        ms(ui_max),
                    ))
                    .on_hover_text(
                        "Whole frames (ui, tessellation, painting; the last 120) and the time \
                         in the app's own ui code. F12 hides this.",
                    );
                }
            });
        });
        ui.add_space(2.0);
    }

    fn gallery_panel(&mut self, ui: &mut egui::Ui) {
        ui.add_space(4.0);
        let actions = self
            .gallery
            .show(ui, &self.persisted.selection, &self.tasks);
        for action in actions {
            match action {
                GalleryAction::Pick { key, additive } => self.pick_style(&key, additive),
                GalleryAction::AddByDialog => self.open_dialog(DialogPurpose::AddStyles),
                GalleryAction::NewStyle => self.new_style.open = true,
                GalleryAction::Remove(key) => {
                    self.gallery.entries.retain(|e| e.key() != key);
                    self.persisted.user_styles.retain(|p| *p != key);
                    let before = self.persisted.selection.len();
                    self.persisted.selection.retain(|s| s.key != key);
                    if self.persisted.selection.len() != before {
                        self.schedule_restart();
                    }
                }
            }
        }
    }

    fn canvas_panel(&mut self, ui: &mut egui::Ui) {
        let show_before = shortcuts::holding_compare(ui.ctx());
        match &self.photo {
            Some(photo) => {
                let size = egui::vec2(
                    photo.original.width() as f32,
                    photo.original.height() as f32,
                );
                let images = CanvasImages {
                    before: &photo.texture,
                    after: self.shown.as_ref().map(|s| &s.texture),
                    size,
                    show_before,
                };
                let response = self.canvas.show(ui, &images);
                if response.hovered() {
                    // A hint in the corner, not a tooltip over the picture being judged.
                    canvas::hint(
                        ui,
                        response.rect,
                        "Wheel: zoom · drag: pan · double-click: fit · C: before/after split · \
                         hold Space: photo",
                    );
                }
            }
            None => {
                ui.vertical_centered(|ui| {
                    ui.add_space((ui.available_height() / 2.0 - 80.0).max(20.0));
                    if let Some(path) = &self.loading_photo {
                        ui.spinner();
                        ui.label(format!("Opening {}…", path.display()));
                        return;
                    }
                    ui.heading("Drop a photo here");
                    ui.add_space(8.0);
                    if ui
                        .add(egui::Button::new("Open a photo…").min_size(egui::vec2(160.0, 32.0)))
                        .on_hover_text("Choose a photo (Ctrl+O)")
                        .clicked()
                    {
                        self.open_dialog(DialogPurpose::OpenPhoto);
                    }
                    ui.add_space(8.0);
                    ui.weak("or run `atelier PHOTO`. Then pick a style on the right.");
                });
            }
        }
    }

    fn drop_overlay(&self, ctx: &egui::Context) {
        let hovering = ctx.input(|i| !i.raw.hovered_files.is_empty());
        if !hovering {
            return;
        }
        let pointer = ctx.input(|i| i.pointer.latest_pos());
        let on_gallery = match (self.gallery.rect, pointer) {
            (Some(rect), Some(p)) => rect.contains(p),
            _ => false,
        };
        let on_new_style = match (self.new_style.rect, pointer) {
            (Some(rect), Some(p)) => rect.contains(p),
            _ => false,
        };
        let text = if on_new_style {
            "Drop to use as style works"
        } else if on_gallery {
            "Drop to add as styles"
        } else {
            "Drop a photo to open it (models become styles)"
        };
        let painter = ctx.layer_painter(egui::LayerId::new(
            egui::Order::Foreground,
            egui::Id::unique("drop-overlay"),
        ));
        let screen = ctx.content_rect();
        painter.rect_filled(screen, 0.0, Color32::from_black_alpha(150));
        painter.text(
            screen.center(),
            egui::Align2::CENTER_CENTER,
            text,
            egui::FontId::proportional(26.0),
            Color32::WHITE,
        );
    }

    fn help_window(&mut self, ctx: &egui::Context) {
        let mut open = self.show_help;
        egui::Window::new("Keyboard shortcuts")
            .open(&mut open)
            .collapsible(false)
            .resizable(false)
            .show(ctx, |ui| {
                egui::Grid::new("shortcuts").striped(true).show(ui, |ui| {
                    for (keys, what) in shortcuts::help_rows(ctx) {
                        ui.monospace(keys);
                        ui.label(what);
                        ui.end_row();
                    }
                });
            });
        self.show_help = open;
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

        egui::Panel::top("menu").show(ui, |ui| self.menu_bar(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        egui::Panel::left("controls")
            .resizable(true)
            .default_size(300.0)
            .size_range(240.0..=480.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.controls_panel(ui));
            });
        egui::Panel::right("gallery")
            .resizable(true)
            .default_size(248.0)
            .size_range(132.0..=520.0)
            .show(ui, |ui| self.gallery_panel(ui));
        egui::CentralPanel::no_frame()
            .frame(egui::Frame::new().fill(Color32::from_gray(22)))
            .show(ui, |ui| self.canvas_panel(ui));
        let env = new_style::Environment {
            trained_dir: self.options.trained_styles_dir.as_deref(),
            vgg: self
                .vgg
                .as_ref()
                .map(PathBuf::as_path)
                .map_err(String::as_str),
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
        } else if self.new_style.needs_polling() {
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
