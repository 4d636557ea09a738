//! The mask toolbar above the canvas (local style): the brush switch and, while it is on,
//! which mask it paints, brush or eraser, its size, the feather, what paints where no mask
//! does, undo and redo, invert, clear and "Load mask…". Edits to the tool's own settings happen
//! here; what changes masks or needs a render comes back as actions.

use std::path::PathBuf;

use eframe::egui::{self, Color32, RichText};

use super::actions::AppAction;
use super::controls;
use super::mask::{BrushMode, Layer};
use super::mask_overlay::{self, PHOTO_TINT};
use super::shortcuts::{self, Shortcut};
use super::AtelierApp;

/// The brush: whether dragging on the canvas paints, and with what.
#[derive(Debug, Clone)]
pub struct BrushTool {
    /// Drag paints (otherwise it pans).
    pub on: bool,
    pub mode: BrushMode,
    /// The mask being painted; `None` (or a style no longer selected): the first selected one.
    pub target: Option<Layer>,
    /// Diameter in photo pixels.
    pub size: f32,
    /// Tint the masks on the canvas while the brush is on.
    pub show_overlay: bool,
}

impl Default for BrushTool {
    fn default() -> Self {
        Self {
            on: false,
            mode: BrushMode::Paint,
            target: None,
            size: 32.0,
            show_overlay: true,
        }
    }
}

/// The brush size of a newly opened photo of longer side `side`: a sixteenth of it.
pub fn default_brush_size(side: u32) -> f32 {
    (side as f32 / 16.0).clamp(4.0, 400.0)
}

/// What the user did to the masks.
#[derive(Debug, Clone, PartialEq)]
pub enum MaskAction {
    /// Brush input on the canvas, in photo pixels.
    Stroke(super::canvas::StrokeInput),
    Undo,
    Redo,
    Invert,
    Clear,
    ClearAll,
    LoadMask,
    /// The feather or what paints the rest changed: render again.
    Changed,
}

/// One mask the brush can paint: its layer, name and tint.
pub(super) struct Target {
    pub layer: Layer,
    pub name: String,
    pub tint: Color32,
}

impl AtelierApp {
    /// The selected styles' keys, in the selection's order (their tints follow it).
    pub(super) fn selected_keys(&self) -> Vec<PathBuf> {
        self.persisted
            .selection
            .iter()
            .map(|s| s.key.clone())
            .collect()
    }

    /// What the brush can paint: each selected style's mask, then "keep the photo".
    pub(super) fn mask_targets(&self) -> Vec<Target> {
        let mut targets: Vec<Target> = self
            .persisted
            .selection
            .iter()
            .enumerate()
            .map(|(index, s)| Target {
                layer: Layer::Style(s.key.clone()),
                name: self
                    .gallery
                    .entry(&s.key)
                    .map(|e| e.name.clone())
                    .unwrap_or_else(|| s.key.display().to_string()),
                tint: mask_overlay::style_tint(index),
            })
            .collect();
        targets.push(Target {
            layer: Layer::Photo,
            name: "Keep photo".into(),
            tint: PHOTO_TINT,
        });
        targets
    }

    /// The mask the brush paints now: the chosen one while it is selected, else the first
    /// selected style's (`None` without a style).
    pub fn brush_target(&self) -> Option<Layer> {
        let selected = self.selected_keys();
        match &self.brush.target {
            Some(Layer::Photo) => Some(Layer::Photo),
            Some(Layer::Style(key)) if selected.contains(key) => Some(Layer::Style(key.clone())),
            _ => selected.first().cloned().map(Layer::Style),
        }
    }

    /// The mask toolbar above the canvas: the brush switch, and while the brush is on its
    /// settings and the mask commands.
    pub(super) fn mask_toolbar(&mut self, ui: &mut egui::Ui) -> Vec<AppAction> {
        let mut actions = Vec::new();
        let ctx = ui.ctx().clone();
        let key = |s: Shortcut| shortcuts::label(&ctx, s);
        ui.spacing_mut().slider_width = 90.0;
        // Two rows: the brush's settings, then the commands.
        ui.horizontal_wrapped(|ui| {
            let toggle = ui
                .add(egui::Button::selectable(self.brush.on, "Paint masks"))
                .on_hover_text(format!(
                    "Local style: paint where each style goes and where the photo stays. While \
                     on, dragging on the canvas paints the chosen mask (right- or middle-drag \
                     pans) ({}).",
                    key(Shortcut::MaskTool)
                ));
            if toggle.clicked() {
                actions.push(AppAction::Shortcut(Shortcut::MaskTool));
            }
            if !self.brush.on {
                if self.masks.has_any() {
                    ui.weak("Masks are on: styles paint only in their regions.");
                    if ui
                        .button("Clear all")
                        .on_hover_text("Remove every mask: each style paints everywhere again")
                        .clicked()
                    {
                        actions.push(AppAction::Mask(MaskAction::ClearAll));
                    }
                }
                return;
            }
            ui.separator();
            actions.extend(self.brush_settings(ui, &key));
        });
        if !self.brush.on {
            return actions;
        }
        ui.horizontal_wrapped(|ui| {
            actions.extend(self.rest_choice(ui));
            ui.separator();
            actions.extend(self.mask_commands(ui, &key));
            ui.checkbox(&mut self.brush.show_overlay, "Show masks")
                .on_hover_text(
                    "Tint the painted areas on the canvas, one colour per style (grey: keep the \
                     photo).",
                );
            if let Some(hint) = self.mask_hint() {
                ui.weak(hint);
            }
        });
        actions
    }

    /// Which mask the brush paints, brush or eraser, its size, the feather and what paints
    /// where no mask does.
    fn brush_settings(
        &mut self,
        ui: &mut egui::Ui,
        key: &dyn Fn(Shortcut) -> String,
    ) -> Vec<AppAction> {
        let mut actions = Vec::new();
        let targets = self.mask_targets();
        let current = self.brush_target();
        let current_target = targets.iter().find(|t| Some(&t.layer) == current.as_ref());
        // A swatch of the mask's tint on the canvas.
        let (swatch, _) = ui.allocate_exact_size(egui::vec2(12.0, 12.0), egui::Sense::hover());
        ui.painter().rect_filled(
            swatch,
            2.0,
            current_target.map_or(Color32::TRANSPARENT, |t| t.tint),
        );
        egui::ComboBox::from_id_salt("mask-target")
            .selected_text(current_target.map_or("(no style)".into(), |t| short(&t.name)))
            .show_ui(ui, |ui| {
                for target in &targets {
                    let chosen = current.as_ref() == Some(&target.layer);
                    let text = RichText::new(format!("{} mask", target.name)).color(target.tint);
                    if ui.selectable_label(chosen, text).clicked() {
                        self.brush.target = Some(target.layer.clone());
                    }
                }
            })
            .response
            .on_hover_text(
                "The mask the brush paints: one per selected style (where it paints), and \
                 “Keep photo” (where the photo stays as it is, whatever the styles).",
            );
        let swap = key(Shortcut::SwapBrushMode);
        ui.selectable_value(&mut self.brush.mode, BrushMode::Paint, "Brush")
            .on_hover_text(format!("Add to the mask ({swap} swaps)"));
        ui.selectable_value(&mut self.brush.mode, BrushMode::Erase, "Eraser")
            .on_hover_text(format!("Take away from the mask ({swap} swaps)"));
        let photo_side = self
            .photo
            .as_ref()
            .map_or(1024, |p| p.original.width().max(p.original.height()));
        let largest = (photo_side as f32 / 2.0).max(8.0);
        // Labels before the sliders: a label after one reads as the next one's in a row.
        let label = ui.label("Size");
        ui.add(
            egui::Slider::new(&mut self.brush.size, 1.0..=largest)
                .logarithmic(true)
                .fixed_decimals(0)
                .suffix(" px"),
        )
        .labelled_by(label.id)
        .on_hover_text(format!(
            "Diameter of the brush in photo pixels ({} / {} change it).",
            key(Shortcut::BrushSmaller),
            key(Shortcut::BrushLarger)
        ));
        let widest = (photo_side as f32 / 4.0).clamp(16.0, crate::engine::MAX_FEATHER);
        let label = ui.label("Feather");
        let feather = ui
            .add(
                egui::Slider::new(&mut self.masks.feather, 0.0..=widest)
                    .logarithmic(true)
                    .smallest_positive(1.0)
                    .fixed_decimals(0)
                    .suffix(" px"),
            )
            .labelled_by(label.id)
            .on_hover_text(
                "How softly the regions blend into each other, in photo pixels (the same on \
                 the preview and the saved picture).",
            );
        // Render again once the slider is let go, not on every step of the drag.
        if feather.drag_stopped() || (feather.changed() && !feather.dragged()) {
            actions.push(AppAction::Mask(MaskAction::Changed));
        }
        actions
    }

    /// What paints where no mask does: the photo, or a default style.
    fn rest_choice(&mut self, ui: &mut egui::Ui) -> Vec<AppAction> {
        let mut actions = Vec::new();
        let targets = self.mask_targets();
        let rest_name = |rest: &Option<PathBuf>| match rest {
            None => "the photo".to_string(),
            Some(key) => targets
                .iter()
                .find(|t| t.layer == Layer::Style(key.clone()))
                .map_or_else(|| "the photo".to_string(), |t| short(&t.name)),
        };
        let before = self.masks.rest.clone();
        ui.label("Elsewhere");
        egui::ComboBox::from_id_salt("mask-rest")
            .selected_text(rest_name(&self.masks.rest))
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut self.masks.rest, None, "the photo");
                for target in &targets {
                    if let Layer::Style(key) = &target.layer {
                        ui.selectable_value(&mut self.masks.rest, Some(key.clone()), &target.name);
                    }
                }
            })
            .response
            .on_hover_text(
                "What paints where no mask does: the photo unchanged, or one of the styles (a \
                 default style; paint “Keep photo” to keep the photo in places).",
            );
        if self.masks.rest != before {
            actions.push(AppAction::Mask(MaskAction::Changed));
        }
        actions
    }

    /// Undo, redo, invert, clear and "Load mask…".
    fn mask_commands(
        &mut self,
        ui: &mut egui::Ui,
        key: &dyn Fn(Shortcut) -> String,
    ) -> Vec<AppAction> {
        let mut actions = Vec::new();
        let current = self.brush_target();
        let has_target = self.photo.is_some() && current.is_some();
        let has_mask = current
            .as_ref()
            .is_some_and(|l| self.masks.layer(l).is_some());
        let commands = [
            (
                self.masks.can_undo(),
                "Undo",
                format!("Undo the last mask edit ({})", key(Shortcut::Undo)),
                MaskAction::Undo,
            ),
            (
                self.masks.can_redo(),
                "Redo",
                format!("Redo the mask edit ({})", key(Shortcut::Redo)),
                MaskAction::Redo,
            ),
            (
                has_target,
                "Invert",
                "Swap painted and unpainted in the chosen mask".into(),
                MaskAction::Invert,
            ),
            (
                has_mask,
                "Clear",
                "Remove the chosen mask".into(),
                MaskAction::Clear,
            ),
            (
                self.masks.has_any(),
                "Clear all",
                "Remove every mask: each style paints everywhere again".into(),
                MaskAction::ClearAll,
            ),
            (
                has_target,
                "Load mask…",
                "Use an image as the chosen mask (white: paint; transparency counts as black). \
                 Another shape than the photo is stretched to fit."
                    .into(),
                MaskAction::LoadMask,
            ),
        ];
        for (enabled, text, tip, action) in commands {
            let clicked = controls::tip(
                ui.add_enabled(enabled, egui::Button::new(text)),
                &tip,
                "Nothing to do yet: pick a style and paint a mask.",
            )
            .clicked();
            if clicked {
                actions.push(AppAction::Mask(action));
            }
        }
        actions
    }

    /// A word in the toolbar when the masks paint nothing (without masks the canvas's hint
    /// says how to paint).
    fn mask_hint(&self) -> Option<&'static str> {
        let silent = self.photo.is_some()
            && self.masks.has_any()
            && !self.masks.something_paints(&self.selected_keys());
        silent.then_some("Nothing paints: paint a style, or choose one for Elsewhere.")
    }
}

/// A name cut to fit the toolbar.
fn short(name: &str) -> String {
    if name.chars().count() > 18 {
        name.chars().take(17).chain(['…']).collect()
    } else {
        name.to_string()
    }
}
