//! The "New style" panel: pick a painting (or several works by one artist) and a folder of
//! training photos, name the style, and train a feed-forward network for it on a background
//! [`TrainingRun`], watching its preview improve. Stop saves a checkpoint; the panel finds it
//! again (also after a restart) and offers Resume. The finished style lands in the user's styles
//! folder, which the gallery lists.
//!
//! [`settings`] (what is remembered), [`folder`] (what a style's folder holds), `view` (drawing).

mod folder;
mod settings;
mod view;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use eframe::egui::{self, Rect};

pub use settings::{NewStyleSettings, DEFAULT_PHOTOS};

use super::progress::Level;
use super::tasks::{self, DialogPurpose};
use super::training::{RunEnd, RunUpdate, TrainingRun};
use crate::engine::{
    list_images, CheckpointInfo, Engine, Event, StyleCredits, TrainConfig, TrainRecipe,
};
use crate::styles::{self, FileKind};
use folder::{inspect, FolderState};
use settings::absolute;

/// Checkpoints are written this often, so quitting without waiting loses little.
const CHECKPOINT_EVERY: u64 = 10;
/// At most about this many previews are saved per run (each is a PNG in `previews/`).
const PREVIEWS_PER_RUN: u64 = 400;

/// How a training is started.
enum StartMode {
    Fresh,
    /// Deletes the folder's previous style or training first (the user confirmed).
    Replace,
    /// Continues the checkpoint, with the recipe it was trained with.
    Resume(Box<CheckpointInfo>),
}

/// What the panel asks of the app.
#[derive(Debug, Clone, PartialEq)]
pub enum PanelAction {
    Dialog(DialogPurpose),
    /// Tell the user once (a toast).
    Message(Level, String),
    /// The gallery's styles changed on disk (a style was replaced or finished).
    ReloadGallery,
    /// A new style is ready in the gallery's folder.
    Finished {
        model: PathBuf,
        thumbnail: PathBuf,
        name: String,
    },
    /// A close that waited for the training's checkpoint may go ahead.
    CloseNow,
}

/// What the panel needs from the app.
pub struct Environment<'a> {
    /// The user's styles folder (`None`: this system has no place for user data).
    pub trained_dir: Option<&'a Path>,
    pub vgg: Result<&'a Path, &'a str>,
    /// Trainings run as jobs of the app's engine.
    pub engine: &'a Arc<Engine>,
}

enum Thumbnail {
    Loading,
    Ready(egui::TextureHandle),
    Failed,
}

/// The latest preview of the run (kept after it ends).
struct Preview {
    iteration: u64,
    texture: egui::TextureHandle,
}

#[derive(Default)]
pub struct NewStylePanel {
    pub open: bool,
    run: Option<TrainingRun>,
    preview: Option<Preview>,
    /// The style folder last inspected and what it holds (re-read when the name changes or a
    /// run ends).
    folder: Option<(PathBuf, FolderState)>,
    /// Asking whether to replace the folder's style.
    confirm_replace: bool,
    /// The photos folder as typed.
    photos_text: Option<String>,
    /// Image counts of folders (photos, works), read once per folder.
    counts: HashMap<PathBuf, Result<usize, String>>,
    thumbnails: HashMap<PathBuf, Thumbnail>,
    /// Where the panel was drawn last frame (files dropped there become works).
    pub rect: Option<Rect>,
    /// The app waits for the checkpoint before it closes.
    closing: bool,
    /// How the last run ended, shown until the next one starts.
    note: Option<(Level, String)>,
    /// Counters for tests.
    previews_received: usize,
    finished_runs: usize,
}

impl NewStylePanel {
    pub fn is_training(&self) -> bool {
        self.run.is_some()
    }

    /// Hands an engine event of a training job to the run it belongs to.
    pub fn deliver(&mut self, event: Event) {
        if let Some(run) = &mut self.run {
            run.deliver(event);
        }
    }

    pub fn previews_received(&self) -> usize {
        self.previews_received
    }

    pub fn finished_runs(&self) -> usize {
        self.finished_runs
    }

    /// The current iteration and the run's total, while one runs.
    pub fn progress(&self) -> Option<(u64, u64)> {
        self.run.as_ref().map(|r| (r.iteration(), r.iterations))
    }

    /// Short text for the status bar while a run is on.
    pub fn status(&self) -> Option<String> {
        let run = self.run.as_ref()?;
        let mut text = format!("Training “{}”", run.name);
        if run.stopping {
            text.push_str(": stopping…");
        } else if run.progress.is_some() {
            text.push_str(&format!(" {:.0} %", run.fraction() * 100.0));
            if let Some(left) = run.time_left() {
                text.push_str(&format!(" · {} left", super::training::duration(left)));
            }
        } else {
            text.push_str(": preparing…");
        }
        Some(text)
    }

    /// Adds style works (images or folders of images); other files are refused in words.
    pub fn add_works(
        &mut self,
        settings: &mut NewStyleSettings,
        paths: Vec<PathBuf>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        for path in paths {
            let usable = path.is_dir() || styles::file_kind(&path) == Some(FileKind::Image);
            if !usable {
                problems.push(format!(
                    "{}: not a style image (PNG, JPEG, WebP, BMP, TIFF) or a folder of them",
                    path.display()
                ));
            } else if !settings.works.contains(&path) {
                settings.works.push(path);
            }
        }
        problems
    }

    pub fn set_photos(&mut self, settings: &mut NewStyleSettings, folder: PathBuf) {
        self.photos_text = Some(folder.display().to_string());
        settings.photos = Some(folder);
    }

    /// Thumbnails of works the panel asked for.
    pub fn wants_thumbnail(&self, path: &Path) -> bool {
        matches!(self.thumbnails.get(path), Some(Thumbnail::Loading))
    }

    pub fn thumbnail_loaded(
        &mut self,
        ctx: &egui::Context,
        path: PathBuf,
        image: egui::ColorImage,
    ) {
        let name = format!("work:{}", path.display());
        let texture = ctx.load_texture(name, image, egui::TextureOptions::LINEAR);
        self.thumbnails.insert(path, Thumbnail::Ready(texture));
    }

    pub fn thumbnail_failed(&mut self, path: PathBuf) {
        self.thumbnails.insert(path, Thumbnail::Failed);
    }

    /// The window is being closed. Returns true when the close must wait: a training runs, and
    /// it is asked to stop and save its checkpoint first ([`PanelAction::CloseNow`] follows).
    /// A second close while waiting quits at once, keeping the last periodic checkpoint.
    pub fn close_requested(&mut self) -> bool {
        let Some(run) = &mut self.run else {
            return false;
        };
        if self.closing {
            if let Some(run) = self.run.take() {
                run.abandon();
            }
            return false;
        }
        run.stop();
        self.closing = true;
        true
    }

    /// Drains the run's events (every frame, open or not).
    pub fn poll(&mut self, ctx: &egui::Context) -> Vec<PanelAction> {
        let mut actions = Vec::new();
        let Some(run) = &mut self.run else {
            return actions;
        };
        for update in run.poll() {
            match update {
                RunUpdate::Preview { iteration, image } => {
                    self.previews_received += 1;
                    // Uploaded only when a new preview arrives, never per frame.
                    let color = tasks::to_color_image(&image);
                    match &mut self.preview {
                        Some(preview) => {
                            preview.texture.set(color, egui::TextureOptions::LINEAR);
                            preview.iteration = iteration;
                        }
                        None => {
                            let texture = ctx.load_texture(
                                "training-preview",
                                color,
                                egui::TextureOptions::LINEAR,
                            );
                            self.preview = Some(Preview { iteration, texture });
                        }
                    }
                }
                RunUpdate::Ended(end) => {
                    let name = run.name.clone();
                    actions.extend(self.ended(name, end));
                    break;
                }
            }
        }
        actions
    }

    fn ended(&mut self, name: String, end: RunEnd) -> Vec<PanelAction> {
        // The thread has sent its last event and is returning: dropping the session joins it
        // at once.
        self.run = None;
        self.folder = None;
        let mut actions = Vec::new();
        match end {
            RunEnd::Stopped { iteration } => {
                let text = format!(
                    "Training of “{name}” stopped at iteration {iteration}; the checkpoint is \
                     saved and Resume continues it."
                );
                self.note = Some((Level::Info, text.clone()));
                actions.push(PanelAction::Message(Level::Info, text));
            }
            RunEnd::Finished { style, iteration } => {
                self.finished_runs += 1;
                self.note = Some((
                    Level::Info,
                    format!("“{name}” finished after {iteration} iterations."),
                ));
                actions.push(PanelAction::Finished {
                    model: style.model,
                    thumbnail: style.thumbnail,
                    name,
                });
            }
            RunEnd::Failed(message) => {
                let text = format!("Training “{name}” failed: {message}");
                self.note = Some((Level::Error, text.clone()));
                actions.push(PanelAction::Message(Level::Error, text));
            }
        }
        if self.closing {
            self.closing = false;
            actions.push(PanelAction::CloseNow);
        }
        actions
    }

    /// The style's folder for the current name, and what it holds.
    fn folder_state(
        &mut self,
        settings: &NewStyleSettings,
        env: &Environment<'_>,
    ) -> Option<(PathBuf, FolderState)> {
        let dir = env.trained_dir?;
        let name = settings.effective_name();
        if name.is_empty() {
            return None;
        }
        let folder = dir.join(styles::folder_name(&name));
        if self.folder.as_ref().is_none_or(|(f, _)| *f != folder) {
            let state = inspect(&folder);
            self.folder = Some((folder, state));
        }
        self.folder.clone()
    }

    fn count_images(&mut self, folder: &Path) -> Result<usize, String> {
        self.counts
            .entry(folder.to_path_buf())
            .or_insert_with(|| {
                if folder.is_dir() {
                    list_images(folder)
                        .map(|l| l.len())
                        .map_err(|e| e.to_string())
                } else {
                    Err(format!("{} is not a folder", folder.display()))
                }
            })
            .clone()
    }

    /// How many style works the settings name (images in folders counted one by one).
    fn work_count(&mut self, settings: &NewStyleSettings) -> usize {
        settings
            .works
            .iter()
            .map(|w| {
                if w.is_dir() {
                    self.count_images(w).unwrap_or(0)
                } else {
                    1
                }
            })
            .sum()
    }

    /// Starts training from the settings (or resumes a checkpoint with its own recipe).
    fn start(
        &mut self,
        settings: &mut NewStyleSettings,
        env: &Environment<'_>,
        mode: StartMode,
    ) -> Result<Vec<PanelAction>, String> {
        let dir = env.trained_dir.ok_or(
            "This system has no folder for user data, so there is nowhere to keep new styles.",
        )?;
        let name = settings.effective_name();
        if name.is_empty() {
            return Err("Give the style a name, or add a style image first.".into());
        }
        let folder = dir.join(styles::folder_name(&name));
        let mut actions = Vec::new();
        let replace = matches!(mode, StartMode::Replace);
        let (recipe, resume) = match mode {
            StartMode::Resume(info) => {
                // A checkpoint only resumes with the recipe it was trained with: show it.
                let r = &info.recipe;
                settings.works = r.style.clone();
                self.set_photos(settings, r.data.clone());
                settings.size = r.size;
                settings.style_weight = r.style_weight;
                settings.content_weight = r.content_weight;
                settings.conditional = r.conditional;
                if r.adversarial_weight > 0.0 {
                    settings.adversarial_weight = r.adversarial_weight;
                }
                if settings.iterations <= info.iteration {
                    return Err(format!(
                        "The checkpoint is at iteration {}: raise Iterations above that to resume.",
                        info.iteration
                    ));
                }
                (info.recipe, true)
            }
            StartMode::Fresh | StartMode::Replace => {
                let vgg = env.vgg.map_err(str::to_string)?;
                if settings.works.is_empty() {
                    return Err("Add a style image (or several works by one artist) first.".into());
                }
                let photos = settings
                    .photos
                    .clone()
                    .ok_or("Choose the folder of training photos first.")?;
                let several = self.work_count(settings) > 1;
                let conditional = settings.conditional && settings.works.len() > 1;
                let recipe = TrainRecipe {
                    style: settings.works.iter().map(|p| absolute(p)).collect(),
                    data: absolute(&photos),
                    vgg: absolute(vgg),
                    size: settings.size,
                    // The works are seen at twice the crop size, as the command line's defaults
                    // do (256 / 512): brush strokes keep their size relative to the crops.
                    style_size: settings.size.saturating_mul(2),
                    content_weight: settings.content_weight,
                    style_weight: settings.style_weight,
                    adversarial_weight: if several && !conditional {
                        settings.adversarial_weight
                    } else {
                        0.0
                    },
                    conditional,
                    ..TrainRecipe::default()
                };
                (recipe, false)
            }
        };
        let mut config = TrainConfig::new(recipe, &folder, settings.iterations);
        config.resume = resume;
        config.preview_every = (settings.iterations / PREVIEWS_PER_RUN).clamp(1, 10);
        config.checkpoint_every = CHECKPOINT_EVERY;
        config.credits = StyleCredits {
            name: Some(name.clone()),
            ..StyleCredits::default()
        };
        config.validate().map_err(|e| e.to_string())?;
        if replace && folder.exists() {
            // Only after the user confirmed; the folder is ours (inside the styles folder, named
            // by `folder_name`, which has no separators).
            std::fs::remove_dir_all(&folder)
                .map_err(|e| format!("Cannot replace the style in {}: {e}", folder.display()))?;
            actions.push(PanelAction::ReloadGallery);
        }
        self.run = Some(TrainingRun::start(config, name, env.engine.clone())?);
        self.folder = None;
        self.note = None;
        Ok(actions)
    }

    /// Starts and reports a problem as a message instead of an error.
    fn start_or_report(
        &mut self,
        settings: &mut NewStyleSettings,
        env: &Environment<'_>,
        mode: StartMode,
    ) -> Vec<PanelAction> {
        match self.start(settings, env, mode) {
            Ok(actions) => actions,
            Err(message) => vec![PanelAction::Message(Level::Error, message)],
        }
    }
}
