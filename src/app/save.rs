//! Save: the full-resolution render (through the engine's render lane), the atomic write on a
//! background thread, recipes in PNGs (written and loaded), and the Save section of the left
//! panel.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use eframe::egui;
use image::{GrayImage, RgbImage};

use super::actions::AppAction;
use super::controls::{self, MethodChoice, SLOW_SAVE_SIDE, STYLE_LAYERS};
use super::gallery::SelectedStyle;
use super::jobs::NotReady;
use super::mask::Layer;
use super::progress::JobPurpose;
use super::shortcuts::Shortcut;
use super::tasks::{self, DialogPurpose, LoadedRecipe, TaskResult};
use super::{AtelierApp, PendingSave};
use crate::engine::{arbitrary_side, network_side, MAX_NETWORK_PIXELS, MAX_OPTIMIZE_SIDE};
use crate::imaging::{self, OutputFormat};
use crate::recipe::{self, Recipe, RecipeMask, RecipeRegions, RecipeStyle};
use crate::styles::StyleEntry;

/// The masks of a render as Save found them, for its recipe.
pub(crate) struct MaskSnapshot {
    layers: Vec<(Layer, Arc<GrayImage>)>,
    rest: Option<PathBuf>,
    feather: f32,
    photo_side: u32,
}

impl MaskSnapshot {
    /// The recipe's regions (PNG-encodes every mask: done on the writing thread).
    fn encode(&self) -> crate::error::Result<RecipeRegions> {
        let masks = self
            .layers
            .iter()
            .map(|(layer, mask)| {
                let style = match layer {
                    Layer::Photo => None,
                    Layer::Style(key) => Some(key.clone()),
                };
                RecipeMask::new(style, mask)
            })
            .collect::<crate::error::Result<Vec<_>>>()?;
        Ok(RecipeRegions {
            masks,
            rest: self.rest.clone(),
            feather: self.feather,
            photo_side: self.photo_side,
        })
    }
}

impl AtelierApp {
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
                let masks = self.mask_snapshot();
                let (stylized, content) = (shown.stylized.clone(), shown.content.clone());
                self.write_render(stylized, content, path, format, recipe, masks);
                return;
            }
        }
        self.pending_save = Some(PendingSave {
            path,
            format,
            recipe: self.recipe(full_side),
            masks: self.mask_snapshot(),
            job: None,
        });
        self.try_submit_save();
    }

    /// Save to the path in the Save field (or ask, when there is none).
    pub(super) fn save_clicked(&mut self) {
        let text = self.save_path_text.trim();
        if text.is_empty() {
            self.open_dialog(DialogPurpose::SaveAs);
        } else {
            self.save_to(PathBuf::from(text));
        }
    }

    pub(super) fn try_submit_save(&mut self) {
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
                match self.submit(job, JobPurpose::Save, side) {
                    Some(id) => {
                        if let Some(pending) = &mut self.pending_save {
                            pending.job = Some(id);
                        }
                    }
                    None => self.pending_save = None,
                }
            }
            Err(NotReady::Waiting) => {}
            Err(NotReady::Idle(message) | NotReady::Problem(message)) => {
                self.pending_save = None;
                self.fail(format!("Cannot save: {message}"));
            }
        }
    }

    /// Blends at the current strength and writes on a background thread.
    pub(super) fn write_render(
        &mut self,
        stylized: Arc<RgbImage>,
        content: Arc<RgbImage>,
        path: PathBuf,
        format: OutputFormat,
        mut recipe: Recipe,
        masks: Option<MaskSnapshot>,
    ) {
        recipe.strength = self.persisted.controls.strength;
        let strength = self.persisted.controls.pixel_strength();
        self.writes_in_flight += 1;
        self.tasks.spawn("save", move || {
            let written =
                imaging::blend(&stylized, &content, strength).and_then(|image| match format {
                    OutputFormat::Png => {
                        recipe.regions = masks.as_ref().map(MaskSnapshot::encode).transpose()?;
                        recipe::save_png_with_recipe(&image, &path, &recipe)
                    }
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

    /// Longer side of the Save render.
    pub(super) fn save_side(&self, photo: &super::Photo) -> u32 {
        let (w, h) = photo.original.dimensions();
        match self.persisted.controls.method {
            MethodChoice::Optimize => w
                .max(h)
                .min(self.persisted.controls.save_max_side)
                .min(MAX_OPTIMIZE_SIDE),
            // The engine caps the network's input for memory.
            MethodChoice::Network => network_side(w, h, None),
            MethodChoice::Arbitrary => {
                arbitrary_side(w, h, None, self.persisted.controls.transform)
            }
        }
    }

    /// `<photo folder>/<photo name>-atelier.png`.
    pub(super) fn default_save_path(&self) -> Option<PathBuf> {
        let photo = self.photo.as_ref()?;
        let stem = photo.path.file_stem()?.to_string_lossy();
        Some(photo.path.with_file_name(format!("{stem}-atelier.png")))
    }

    /// The files the selected styles run from (for the never-overwrite-an-input check).
    pub(super) fn selected_files(&self) -> Vec<PathBuf> {
        self.persisted
            .selection
            .iter()
            .filter_map(|s| self.gallery.entry(&s.key))
            .flat_map(|e| e.image.iter().chain(e.model.iter()).cloned())
            .collect()
    }

    /// The masks the render uses (the selected styles' and "keep the photo"), `None` without
    /// any.
    pub(super) fn mask_snapshot(&self) -> Option<MaskSnapshot> {
        let photo = self.photo.as_ref()?;
        let selected = self.selected_keys();
        let layers: Vec<(Layer, Arc<GrayImage>)> = self
            .masks
            .layers()
            .filter(|(layer, _)| match layer {
                Layer::Photo => true,
                Layer::Style(key) => selected.contains(key),
            })
            .map(|(layer, mask)| (layer.clone(), mask.clone()))
            .collect();
        if layers.is_empty() {
            return None;
        }
        Some(MaskSnapshot {
            layers,
            rest: self.masks.rest.clone().filter(|key| selected.contains(key)),
            feather: self.masks.feather,
            photo_side: photo.original.width().max(photo.original.height()),
        })
    }

    pub(super) fn recipe(&self, size: u32) -> Recipe {
        let c = &self.persisted.controls;
        let entries: Vec<(&StyleEntry, f64)> = self
            .persisted
            .selection
            .iter()
            .filter_map(|s| self.gallery.entry(&s.key).map(|e| (e, s.weight)))
            .collect();
        let network = c.method == MethodChoice::Network;
        // Several networks (each painting a region) are all listed in `styles`.
        let mut models: Vec<&PathBuf> = entries
            .iter()
            .filter_map(|(e, _)| e.model.as_ref())
            .collect();
        models.dedup();
        let several_networks = network && models.len() > 1;
        Recipe {
            method: match c.method {
                MethodChoice::Network => "network",
                MethodChoice::Optimize => "optimize",
                MethodChoice::Arbitrary => "arbitrary",
            }
            .into(),
            styles: if network {
                // A conditional network's selected styles (their keys name the style).
                entries
                    .iter()
                    .filter(|(e, _)| e.condition.is_some() || several_networks)
                    .map(|(e, w)| RecipeStyle {
                        path: e.key().to_path_buf(),
                        weight: *w,
                    })
                    .collect()
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
            mix: if network {
                let owned: Vec<(StyleEntry, f64)> =
                    entries.iter().map(|(e, w)| ((*e).clone(), *w)).collect();
                super::jobs::network_and_mix(&owned).and_then(|(_, mix)| mix)
            } else {
                None
            },
            content_weight: c.content_weight,
            style_weight: c.style_weight,
            tv_weight: c.tv_weight,
            style_layers: c.style_layers(),
            preserve_color: c.preserve_color,
            stroke: c.stroke,
            optimizer: "lbfgs".into(),
            seed: c.seed,
            size,
            steps: c.steps,
            strength: c.strength,
            photo: self.photo.as_ref().map(|p| p.path.clone()),
            ..Recipe::default()
        }
    }

    pub(super) fn apply_recipe(&mut self, loaded: LoadedRecipe) {
        let LoadedRecipe {
            recipe,
            masks,
            problems,
        } = loaded;
        for problem in problems {
            self.toasts.error(problem);
        }
        let mut controls = self.persisted.controls.clone();
        controls.method = match recipe.method.as_str() {
            "network" => MethodChoice::Network,
            "arbitrary" => MethodChoice::Arbitrary,
            _ => MethodChoice::Optimize,
        };
        controls.content_weight = recipe.content_weight;
        controls.style_weight = recipe.style_weight;
        controls.tv_weight = recipe.tv_weight;
        controls.preserve_color = recipe.preserve_color;
        controls.stroke = recipe.stroke;
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
            // A conditional network's styles are selected by their own entries.
            .chain(
                recipe
                    .model
                    .iter()
                    .filter(|_| recipe.method != "network" || recipe.styles.is_empty())
                    .map(|m| (m.clone(), 1.0)),
            )
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
        let had_masks = self.masks.has_any();
        match &recipe.regions {
            Some(regions) => {
                self.masks.rest = regions.rest.clone();
                // The feather was set in pixels of the recipe's photo: the same share of this one.
                let photo_side = self
                    .photo
                    .as_ref()
                    .map(|p| p.original.width().max(p.original.height()));
                self.masks.feather = match photo_side {
                    Some(side) if regions.photo_side > 0 => {
                        regions.feather * side as f32 / regions.photo_side as f32
                    }
                    _ => regions.feather,
                }
                .clamp(0.0, crate::engine::MAX_FEATHER);
                for layer in self.masks.replace_all(masks) {
                    self.toasts.info(format!(
                        "The recipe's mask for {} has another shape than this photo: \
                         stretched to fit.",
                        self.layer_name(&layer)
                    ));
                }
                self.toasts
                    .info("Recipe loaded: controls, styles and masks restored.");
            }
            None => {
                // The recipe's render had no masks.
                self.masks.rest = None;
                self.masks.clear_all();
                self.toasts.info(if had_masks {
                    "Recipe loaded: controls and styles restored; it has no masks, so the masks \
                     were cleared (Ctrl+Z brings them back)."
                } else {
                    "Recipe loaded: controls and styles restored."
                });
            }
        }
        self.reblend();
        self.schedule_restart();
    }

    pub(super) fn save_section(&mut self, ui: &mut egui::Ui) -> Vec<AppAction> {
        let mut actions = Vec::new();
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
                egui::Slider::new(&mut controls.save_max_side, 256..=MAX_OPTIMIZE_SIDE)
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
                let limit = if self.persisted.controls.method == MethodChoice::Arbitrary {
                    crate::engine::MAX_ARBITRARY_PIXELS
                } else {
                    MAX_NETWORK_PIXELS
                };
                format!(
                    "Saves at {side} px: this method runs on at most {} megapixels.",
                    limit / 1_000_000
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
                actions.push(AppAction::Shortcut(Shortcut::Save));
            }
            let save_as = controls::tip(
                ui.add_enabled(can_save, egui::Button::new("Save as…")),
                "Choose where to save (Ctrl+Shift+S)",
                why_not,
            );
            if save_as.clicked() {
                actions.push(AppAction::Shortcut(Shortcut::SaveAs));
            }
            if ui
                .button("Load recipe…")
                .on_hover_text("Restore the controls and styles from a PNG saved by Atelier")
                .clicked()
            {
                actions.push(AppAction::Dialog(DialogPurpose::LoadRecipe));
            }
        });
        actions
    }
}
