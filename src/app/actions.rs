//! What the user asks for, applied in one place. Panels, the menu, the status bar and the
//! keyboard return [`AppAction`]s; [`AtelierApp::apply`] carries them out. The public methods
//! here are the same actions called from code (and the UI tests).

use std::path::{Path, PathBuf};
use std::time::Instant;

use eframe::egui;

use super::canvas::StrokeInput;
use super::controls::{ControlChange, Controls, MethodChoice};
use super::gallery::SelectedStyle;
use super::mask::{self, BrushMode, Layer};
use super::mask_panel::{self, MaskAction};
use super::new_style::{NewStyleSettings, PanelAction};
use super::progress;
use super::shortcuts::{self, Shortcut};
use super::tasks::{self, DialogPurpose, LoadedPhoto, TaskResult};
use super::video::VideoAction;
use super::{AtelierApp, Photo};
use crate::styles::{self, StyleEntry};

/// One thing the user asked for.
pub enum AppAction {
    /// A menu item, button or key that has a shortcut.
    Shortcut(Shortcut),
    Dialog(DialogPurpose),
    PickStyle {
        key: PathBuf,
        additive: bool,
    },
    RemoveStyle(PathBuf),
    /// The selection's weights changed: render again.
    Restart,
    Controls(ControlChange),
    SetCompare(bool),
    /// Optimise starting from the Instant result (a few steps refine it).
    Refine,
    ShowHelp,
    ToggleFrameTimes,
    /// The brush on the canvas or a button of the Masks section.
    Mask(MaskAction),
    /// The video bar.
    Video(VideoAction),
}

/// Steps of a Refine: the Instant result already holds the style, so Gatys needs few.
const REFINE_STEPS: usize = 40;
/// `[` and `]` change the brush size by this factor.
const BRUSH_STEP: f32 = 1.25;

impl AtelierApp {
    /// Carries out `actions` in order.
    pub(super) fn apply(&mut self, actions: Vec<AppAction>) {
        for action in actions {
            match action {
                AppAction::Shortcut(shortcut) => self.shortcut(shortcut),
                AppAction::Dialog(purpose) => self.open_dialog(purpose),
                AppAction::PickStyle { key, additive } => self.pick_style(&key, additive),
                AppAction::RemoveStyle(key) => self.remove_style(&key),
                AppAction::Restart => self.schedule_restart(),
                AppAction::Controls(change) => self.apply_control_change(change),
                AppAction::SetCompare(on) => self.canvas.compare = on,
                AppAction::Refine => self.refine(),
                AppAction::ShowHelp => self.show_help = true,
                AppAction::ToggleFrameTimes => self.show_frame_times = !self.show_frame_times,
                AppAction::Mask(action) => self.mask_action(action),
                AppAction::Video(action) => self.video_action(action),
            }
        }
    }

    pub(super) fn shortcut(&mut self, shortcut: Shortcut) {
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
            Shortcut::Undo => self.mask_action(MaskAction::Undo),
            Shortcut::Redo => self.mask_action(MaskAction::Redo),
            Shortcut::MaskTool => self.set_brush_on(!self.brush.on),
            Shortcut::SwapBrushMode => {
                self.brush.mode = match self.brush.mode {
                    BrushMode::Paint => BrushMode::Erase,
                    BrushMode::Erase => BrushMode::Paint,
                }
            }
            Shortcut::BrushSmaller => self.brush.size = (self.brush.size / BRUSH_STEP).max(1.0),
            Shortcut::BrushLarger => {
                let largest = self.photo.as_ref().map_or(1024.0, |p| {
                    p.original.width().max(p.original.height()) as f32
                });
                self.brush.size = (self.brush.size * BRUSH_STEP).min(largest.max(8.0) / 2.0);
            }
        }
    }

    /// Turns the mask brush on or off (on needs a photo).
    pub fn set_brush_on(&mut self, on: bool) {
        self.brush.on = on && self.photo.is_some();
        if !self.brush.on && self.masks.end_stroke() {
            self.schedule_restart();
        }
    }

    /// Carries out a mask edit; edits that change the masks render again (debounced), strokes
    /// only when they end.
    pub fn mask_action(&mut self, action: MaskAction) {
        let changed = match action {
            MaskAction::Stroke(input) => self.brush_input(input),
            MaskAction::Undo => self.masks.undo(),
            MaskAction::Redo => self.masks.redo(),
            MaskAction::Invert | MaskAction::Clear => {
                let Some(layer) = self.brush_target() else {
                    return;
                };
                if action == MaskAction::Invert {
                    self.masks.invert(&layer);
                } else {
                    self.masks.clear(&layer);
                }
                true
            }
            MaskAction::ClearAll => {
                self.masks.clear_all();
                true
            }
            MaskAction::LoadMask => {
                self.open_dialog(DialogPurpose::LoadMask);
                false
            }
            MaskAction::Changed => true,
        };
        if changed {
            self.schedule_restart();
        }
    }

    /// Brush input in photo pixels; returns whether a stroke ended with changes.
    fn brush_input(&mut self, input: StrokeInput) -> bool {
        let Some(photo) = &self.photo else {
            return false;
        };
        let Some(size) = self.masks.size() else {
            return false;
        };
        // Photo pixels to mask pixels (the masks may be kept smaller than the photo).
        let scale = size.0 as f32 / photo.original.width().max(1) as f32;
        match input {
            StrokeInput::Begin(at) => {
                let Some(layer) = self.brush_target() else {
                    self.toasts
                        .info("Pick a style in the gallery first: masks say where it paints.");
                    return false;
                };
                let radius = self.brush.size / 2.0 * scale;
                self.masks.begin_stroke(
                    layer,
                    self.brush.mode,
                    radius,
                    (at.x * scale, at.y * scale),
                );
                false
            }
            StrokeInput::To(at) => {
                self.masks.stroke_to((at.x * scale, at.y * scale));
                false
            }
            StrokeInput::End => self.masks.end_stroke(),
        }
    }

    /// Changes the masks' settings (what paints the rest, the feather) from code, as the panel
    /// does; the preview renders again.
    pub fn update_masks(&mut self, edit: impl FnOnce(&mut mask::Masks)) {
        edit(&mut self.masks);
        self.schedule_restart();
    }

    /// Starts reading `path` as the mask the brush paints now (as "Load mask…" does).
    pub fn load_mask_from(&mut self, path: PathBuf) {
        let Some(layer) = self.brush_target().filter(|_| self.photo.is_some()) else {
            self.toasts
                .error("Open a photo and pick a style before loading a mask.");
            return;
        };
        self.tasks
            .spawn("load-mask", move || tasks::load_mask(path, layer));
    }

    /// A mask file arrived: it becomes `layer`'s mask (scaled to the photo, with a note when
    /// its shape differs).
    fn mask_loaded(&mut self, path: &Path, layer: Layer, image: image::GrayImage) {
        let name = path
            .file_name()
            .unwrap_or(path.as_os_str())
            .to_string_lossy();
        let (w, h) = image.dimensions();
        match self.masks.set_layer(layer, image) {
            Some(true) => self.toasts.info(format!(
                "{name} is {w}×{h}, another shape than the photo: stretched to fit."
            )),
            Some(false) => self.toasts.info(format!("Mask loaded from {name}.")),
            None => self.toasts.error("Open a photo before loading a mask."),
        }
        self.schedule_restart();
    }

    /// Keeps the overlay texture in step with the masks: at most one upload a frame, only the
    /// rectangle that changed.
    pub(super) fn sync_mask_overlay(&mut self, ctx: &egui::Context) {
        let selected = self.selected_keys();
        let layers = self
            .mask_targets()
            .into_iter()
            .filter(|t| match &t.layer {
                Layer::Photo => true,
                Layer::Style(key) => selected.contains(key),
            })
            .map(|t| (t.layer, t.tint))
            .collect();
        let uploads = self.overlay.sync(ctx, &mut self.masks, layers);
        if uploads > 0 {
            self.uploads += uploads;
            ctx.request_repaint();
        }
    }

    pub(super) fn remove_style(&mut self, key: &Path) {
        self.gallery.entries.retain(|e| e.key() != key);
        self.persisted.user_styles.retain(|p| p != key);
        let before = self.persisted.selection.len();
        self.persisted.selection.retain(|s| s.key != key);
        if self.persisted.selection.len() != before {
            self.schedule_restart();
        }
    }

    /// Starts decoding `path` in the background; the canvas shows it when ready.
    pub fn open_photo(&mut self, path: PathBuf) {
        // A photo ends video mode.
        self.close_video();
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
            // Styles of one conditional network blend in one pass; other networks cannot.
            let gallery = &self.gallery;
            let same_network = |s: &SelectedStyle| {
                gallery.entry(&s.key).is_some_and(|e| {
                    e.condition.is_some() && entry.condition.is_some() && e.model == entry.model
                })
            };
            // With masks, each network paints its own region.
            let regions = self.brush.on || self.masks.has_any();
            let all_networks = |s: &SelectedStyle| {
                gallery
                    .entry(&s.key)
                    .is_some_and(|e| e.model.is_some() && e.image.is_none())
            };
            if additive && !selection.is_empty() && selection.iter().all(same_network) {
                // A network runs with at least one of its styles.
                toggle_in_selection(selection, key, 1);
            } else if additive && regions && selection.iter().all(all_networks) {
                toggle_in_selection(selection, key, 1);
            } else {
                if additive && !selection.is_empty() {
                    self.toasts.info(
                        "Only the styles of one conditional network blend; using the one you \
                         picked. (With masks, several networks can each paint a region: turn \
                         on “Paint masks” first.)",
                    );
                }
                *selection = vec![SelectedStyle {
                    key: key.to_path_buf(),
                    weight: 1.0,
                }];
            }
        } else {
            // A painting previews at once with the Instant method; Optimise stays chosen when
            // the user picked it.
            if self.persisted.controls.method != MethodChoice::Optimize {
                self.persisted.controls.method = MethodChoice::Arbitrary;
            }
            self.refine_from = None;
            let gallery = &self.gallery;
            if additive {
                // Models cannot be part of an optimisation blend.
                selection.retain(|s| gallery.entry(&s.key).is_some_and(|e| e.image.is_some()));
                toggle_in_selection(selection, key, 0);
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

    /// Changes controls from code; like an edit in the panel, a recompute is debounced.
    pub fn update_controls(&mut self, edit: impl FnOnce(&mut Controls)) {
        let before = self.persisted.controls.clone();
        edit(&mut self.persisted.controls);
        self.apply_control_change(self.persisted.controls.change_since(&before));
    }

    pub fn load_recipe_from(&mut self, path: PathBuf) {
        self.tasks
            .spawn("load-recipe", move || tasks::load_recipe(path));
    }

    /// A mask layer's name for messages: its style's, or "keep the photo".
    pub(super) fn layer_name(&self, layer: &Layer) -> String {
        match layer {
            Layer::Photo => "“Keep photo”".into(),
            Layer::Style(key) => self
                .gallery
                .entry(key)
                .map(|e| format!("“{}”", e.name))
                .unwrap_or_else(|| key.display().to_string()),
        }
    }

    pub fn cancel(&mut self) {
        self.cancel_video();
        if self.running.is_some() || self.pending_save.is_some() {
            if self.running.is_none() {
                // A Save still waiting for its style images: no engine event will say so.
                self.outcome = Some((progress::Level::Info, "Save cancelled.".into()));
            }
            self.engine.cancel_stylizing();
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

    /// The window is asked to close. Returns true when the close waits for the training to
    /// save its checkpoint (the window closes by itself once it has).
    pub fn close_requested(&mut self) -> bool {
        self.new_style.close_requested()
    }

    pub(super) fn reload_gallery(&mut self) {
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

    pub(super) fn remember_folder(&mut self, path: &Path) {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.persisted.last_folder = Some(parent.to_path_buf());
        }
    }

    pub(super) fn open_dialog(&mut self, purpose: DialogPurpose) {
        // One native dialog at a time: a second Ctrl+O would stack another window.
        if self.dialog_open {
            return;
        }
        self.dialog_open = true;
        let mut folder = self.persisted.last_folder.clone();
        let mut file_name = self
            .default_save_path()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        if purpose == DialogPurpose::RenderVideo {
            if let Some((clip_folder, name)) = self.video_dialog_defaults() {
                folder = clip_folder.or(folder);
                file_name = Some(name);
            }
        }
        self.tasks.spawn("dialog", move || {
            tasks::run_dialog(purpose, folder, file_name)
        });
    }

    pub(super) fn schedule_restart(&mut self) {
        self.outcome = None;
        if self.photo.is_some() || self.loading_photo.is_some() {
            self.restart_at = Some(Instant::now() + self.options.debounce);
        }
    }

    /// An error that ends what the user asked for: a toast now, and the status line until the
    /// next action.
    pub(super) fn fail(&mut self, message: String) {
        self.outcome = Some((progress::Level::Error, message.clone()));
        self.toasts.error(message);
    }

    /// Switches to Optimise, starting from the Instant result on the canvas.
    fn refine(&mut self) {
        let Some(shown) = &self.shown else {
            return;
        };
        self.refine_from = Some(shown.stylized.clone());
        let controls = &mut self.persisted.controls;
        controls.method = MethodChoice::Optimize;
        controls.steps = controls.steps.min(REFINE_STEPS);
        self.schedule_restart();
    }

    pub(super) fn apply_control_change(&mut self, change: ControlChange) {
        match change {
            ControlChange::None => {}
            ControlChange::Strength => self.reblend(),
            ControlChange::Recompute => self.schedule_restart(),
        }
    }

    pub(super) fn handle_tasks(&mut self, ctx: &egui::Context) {
        for result in self.tasks.drain() {
            match result {
                TaskResult::Photo(loaded) => {
                    // A newer open wins over a slower older one.
                    if self.loading_photo.as_ref() != Some(&loaded.path) {
                        continue;
                    }
                    self.loading_photo = None;
                    self.install_photo(ctx, *loaded, false);
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
                TaskResult::Recipe(loaded) => self.apply_recipe(*loaded),
                TaskResult::Clip { info, first } => self.clip_opened(ctx, info, *first),
                TaskResult::ClipFrame { index, frame } => {
                    self.clip_frame_loaded(ctx, index, *frame)
                }
                TaskResult::Mask { path, layer, image } => self.mask_loaded(&path, layer, image),
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
                    "video" => self.fail(format!("Cannot open the video: {message}")),
                    "video frame" => self.clip_frame_failed(&key, message),
                    "file dialog" => {
                        self.dialog_open = false;
                        self.toasts.error(message);
                    }
                    // The masks stay as they were.
                    "mask" => self
                        .toasts
                        .error(format!("Cannot load the mask: {message}")),
                    _ => self.toasts.error(message),
                },
            }
        }
    }

    /// Makes `loaded` the photo and renders it again; `keep_masks` (another frame of the same
    /// clip) keeps the masks, the zoom and the brush, which apply to every frame.
    pub(super) fn install_photo(
        &mut self,
        ctx: &egui::Context,
        loaded: LoadedPhoto,
        keep_masks: bool,
    ) {
        let (w, h) = loaded.original.dimensions();
        let same_size = self
            .photo
            .as_ref()
            .is_some_and(|p| p.original.dimensions() == (w, h));
        let keep_masks = keep_masks && same_size;
        let texture = match self.photo.take().filter(|_| keep_masks) {
            Some(photo) => {
                let mut texture = photo.texture;
                texture.set(loaded.display, egui::TextureOptions::LINEAR);
                texture
            }
            None => ctx.load_texture("photo", loaded.display, egui::TextureOptions::LINEAR),
        };
        tracing::info!("opened {} ({w}×{h})", loaded.path.display());
        self.photo = Some(Photo {
            path: loaded.path,
            original: loaded.original,
            working: loaded.working,
            texture,
        });
        self.shown = None;
        self.refine_from = None;
        if !keep_masks {
            self.canvas.fit();
            self.brush.size = mask_panel::default_brush_size(w.max(h));
            for layer in self.masks.reset_for_photo(w, h) {
                self.toasts.info(format!(
                    "The recipe's mask for {} has another shape than this photo: stretched to \
                     fit.",
                    self.layer_name(&layer)
                ));
            }
        }
        if let Some(default) = self.default_save_path() {
            let keep_folder = self.persisted.save_path.as_ref().and_then(|p| p.parent());
            let path = match (keep_folder, default.file_name()) {
                (Some(folder), Some(name)) if folder.is_dir() => folder.join(name),
                _ => default,
            };
            self.save_path_text = path.display().to_string();
        }
        if self.video_busy() {
            // The video render in the render lane goes on; only the preview stops.
            if let Some((running, _)) = &self.running {
                self.engine.cancel(*running);
            }
        } else {
            self.engine.cancel_stylizing();
        }
        self.schedule_restart();
    }

    pub(super) fn dialog_picked(&mut self, purpose: DialogPurpose, paths: Vec<PathBuf>) {
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
            DialogPurpose::LoadMask => {
                self.remember_folder(&first);
                self.load_mask_from(first);
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
            DialogPurpose::OpenVideo | DialogPurpose::OpenFrameFolder => self.open_video(first),
            DialogPurpose::RenderVideo => self.render_video_to(first),
        }
    }

    pub(super) fn panel_actions(&mut self, ctx: &egui::Context, actions: Vec<PanelAction>) {
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

    pub(super) fn handle_shortcuts(&mut self, ctx: &egui::Context) {
        let mut actions: Vec<AppAction> = shortcuts::pressed(ctx)
            .into_iter()
            .map(AppAction::Shortcut)
            .collect();
        if ctx.input(|i| i.key_pressed(egui::Key::F12)) {
            actions.push(AppAction::ToggleFrameTimes);
        }
        self.apply(actions);
    }
}

/// Ctrl+click on a style: takes it out of the blend when it is in (unless that would leave
/// fewer than `at_least` styles), else adds it with weight 1.
fn toggle_in_selection(selection: &mut Vec<SelectedStyle>, key: &Path, at_least: usize) {
    match selection.iter().position(|s| s.key == key) {
        Some(index) if selection.len() > at_least => {
            selection.remove(index);
        }
        Some(_) => {}
        None => selection.push(SelectedStyle {
            key: key.to_path_buf(),
            weight: 1.0,
        }),
    }
}
