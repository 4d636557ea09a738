//! The window's three panels around the status bar: controls (left), gallery (right) and the
//! canvas (centre). Each returns what the user asked for as actions.

use eframe::egui;

use super::actions::AppAction;
use super::canvas::{self, BrushCursor, CanvasImages};
use super::controls::MethodChoice;
use super::gallery::{self, GalleryAction};
use super::mask::BrushMode;
use super::mask_overlay;
use super::mask_panel::MaskAction;
use super::shortcuts::{self, Shortcut};
use super::tasks::DialogPurpose;
use super::AtelierApp;

impl AtelierApp {
    pub(super) fn controls_panel(&mut self, ui: &mut egui::Ui) -> Vec<AppAction> {
        let mut actions = Vec::new();
        // Sliders take the panel's width, leaving room for the value box and the label.
        ui.spacing_mut().slider_width = (ui.available_width() - 170.0).max(80.0);
        ui.add_space(4.0);
        ui.heading("Style");
        let selection_changed =
            gallery::show_selection(ui, &self.gallery, &mut self.persisted.selection);
        if selection_changed {
            actions.push(AppAction::Restart);
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
        actions.push(AppAction::Controls(change));
        if self.persisted.controls.method == MethodChoice::Arbitrary
            && self.shown.as_ref().is_some_and(|s| s.finished)
            && ui
                .button("Refine with Optimise")
                .on_hover_text(
                    "Runs Gatys optimisation starting from this result: a few steps sharpen \
                     the painting's texture (slower, best quality).",
                )
                .clicked()
        {
            actions.push(AppAction::Refine);
        }
        ui.separator();
        actions.extend(self.save_section(ui));
        actions
    }

    pub(super) fn gallery_panel(&mut self, ui: &mut egui::Ui) -> Vec<AppAction> {
        ui.add_space(4.0);
        let actions = self
            .gallery
            .show(ui, &self.persisted.selection, &self.tasks);
        actions
            .into_iter()
            .map(|action| match action {
                GalleryAction::Pick { key, additive } => AppAction::PickStyle { key, additive },
                GalleryAction::AddByDialog => AppAction::Dialog(DialogPurpose::AddStyles),
                GalleryAction::NewStyle => AppAction::Shortcut(Shortcut::NewStyle),
                GalleryAction::Remove(key) => AppAction::RemoveStyle(key),
            })
            .collect()
    }

    pub(super) fn canvas_panel(&mut self, ui: &mut egui::Ui) -> Vec<AppAction> {
        let mut actions = Vec::new();
        let show_before = shortcuts::holding_compare(ui.ctx());
        match &self.photo {
            Some(_) => {
                egui::Panel::top("mask-toolbar").show(ui, |ui| {
                    actions.extend(self.mask_toolbar(ui));
                });
                let Some(photo) = &self.photo else {
                    return actions;
                };
                let size = egui::vec2(
                    photo.original.width() as f32,
                    photo.original.height() as f32,
                );
                let brush = self.brush.on.then(|| {
                    let target = self.brush_target();
                    BrushCursor {
                        radius: self.brush.size / 2.0,
                        color: target
                            .as_ref()
                            .and_then(|l| mask_overlay::tint(l, &self.selected_keys()))
                            .unwrap_or(egui::Color32::WHITE),
                        erase: self.brush.mode == BrushMode::Erase,
                    }
                });
                let images = CanvasImages {
                    before: &photo.texture,
                    after: self.shown.as_ref().map(|s| &s.texture),
                    size,
                    show_before,
                    overlay: self
                        .overlay
                        .texture()
                        .filter(|_| self.brush.on && self.brush.show_overlay),
                    brush,
                };
                let output = self.canvas.show(ui, &images);
                actions.extend(
                    output
                        .strokes
                        .into_iter()
                        .map(|stroke| AppAction::Mask(MaskAction::Stroke(stroke))),
                );
                let response = output.response;
                if response.hovered() {
                    // A hint in the corner, not a tooltip over the picture being judged.
                    let hint = if self.brush.on {
                        "Drag: paint · right-drag: pan · wheel: zoom · [ ]: brush size · \
                         X: brush/eraser · Ctrl+Z: undo · B: brush off"
                    } else {
                        "Wheel: zoom · drag: pan · double-click: fit · C: before/after split · \
                         hold Space: photo · B: paint masks"
                    };
                    canvas::hint(ui, response.rect, hint);
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
                        actions.push(AppAction::Shortcut(Shortcut::Open));
                    }
                    ui.add_space(8.0);
                    ui.weak("or run `atelier PHOTO`. Then pick a style on the right.");
                });
            }
        }
        actions
    }
}
