//! The style gallery panel: thumbnails of bundled and user styles, click to pick one, Ctrl+click
//! to blend several; the blend weights of the selection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use eframe::egui::{self, Color32, Rect, Sense, Stroke, Vec2};
use serde::{Deserialize, Serialize};

use super::tasks::{self, Tasks};
use crate::styles::{Origin, StyleEntry};

const TILE: f32 = 100.0;

/// A picked style and its share in the blend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectedStyle {
    pub key: PathBuf,
    pub weight: f64,
}

enum Thumbnail {
    Loading,
    Ready(egui::TextureHandle),
    Failed,
}

/// What the user did in the gallery this frame.
#[derive(Debug, Clone, PartialEq)]
pub enum GalleryAction {
    /// Use this style; `additive` adds it to the blend instead of replacing the selection.
    Pick {
        key: PathBuf,
        additive: bool,
    },
    AddByDialog,
    /// Open the "New style" panel.
    NewStyle,
    Remove(PathBuf),
}

#[derive(Default)]
pub struct Gallery {
    pub entries: Vec<StyleEntry>,
    thumbnails: HashMap<PathBuf, Thumbnail>,
    /// Where the gallery was drawn last frame (files dropped there become styles).
    pub rect: Option<Rect>,
}

impl Gallery {
    pub fn entry(&self, key: &Path) -> Option<&StyleEntry> {
        self.entries.iter().find(|e| e.key() == key)
    }

    pub fn thumbnail_loaded(
        &mut self,
        ctx: &egui::Context,
        path: PathBuf,
        image: egui::ColorImage,
    ) {
        let name = format!("thumbnail:{}", path.display());
        let texture = ctx.load_texture(name, image, egui::TextureOptions::LINEAR);
        self.thumbnails.insert(path, Thumbnail::Ready(texture));
    }

    /// Forgets a thumbnail so it is read again (its file was replaced).
    pub fn forget_thumbnail(&mut self, path: &Path) {
        self.thumbnails.remove(path);
    }

    pub fn thumbnail_failed(&mut self, path: PathBuf) {
        self.thumbnails.insert(path, Thumbnail::Failed);
    }

    pub fn show(
        &mut self,
        ui: &mut egui::Ui,
        selection: &[SelectedStyle],
        tasks: &Tasks,
    ) -> Vec<GalleryAction> {
        let mut actions = Vec::new();
        ui.horizontal(|ui| {
            ui.heading("Styles");
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui
                    .button("Add…")
                    .on_hover_text(
                        "Add style images (any painting) or trained model files \
                         (.safetensors / .pth). You can also drop files onto this panel.",
                    )
                    .clicked()
                {
                    actions.push(GalleryAction::AddByDialog);
                }
                if ui
                    .button("New…")
                    .on_hover_text(
                        "Train a new style from a painting or from several works by one \
                         artist (Ctrl+N)",
                    )
                    .clicked()
                {
                    actions.push(GalleryAction::NewStyle);
                }
            });
        });
        ui.separator();
        self.rect = Some(ui.available_rect_before_wrap());
        if self.entries.is_empty() {
            ui.add_space(12.0);
            ui.label(
                "No styles yet. Drop a painting (PNG, JPEG…) or a trained model \
                 (.safetensors / .pth) here, or click “Add…”.",
            );
            return actions;
        }
        for entry in &self.entries {
            if let Some(thumb) = &entry.thumbnail {
                if !self.thumbnails.contains_key(thumb) {
                    self.thumbnails.insert(thumb.clone(), Thumbnail::Loading);
                    let path = thumb.clone();
                    tasks.spawn("thumbnail", move || tasks::load_thumbnail(path));
                }
            }
        }
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .show(ui, |ui| {
                ui.horizontal_wrapped(|ui| {
                    ui.spacing_mut().item_spacing = Vec2::splat(8.0);
                    for entry in &self.entries {
                        let selected = selection.iter().any(|s| s.key == entry.key());
                        let response = self.tile(ui, entry, selected);
                        if response.clicked() {
                            let additive = ui.input(|i| i.modifiers.command || i.modifiers.shift);
                            actions.push(GalleryAction::Pick {
                                key: entry.key().to_path_buf(),
                                additive,
                            });
                        }
                        if entry.origin == Origin::User {
                            response.context_menu(|ui| {
                                if ui.button("Remove from gallery").clicked() {
                                    actions.push(GalleryAction::Remove(entry.key().to_path_buf()));
                                    ui.close();
                                }
                            });
                        }
                    }
                });
            });
        actions
    }

    fn tile(&self, ui: &mut egui::Ui, entry: &StyleEntry, selected: bool) -> egui::Response {
        let label_height = 18.0;
        let (rect, response) =
            ui.allocate_exact_size(Vec2::new(TILE, TILE + label_height), Sense::click());
        // Named for screen readers (and for UI tests, which find tiles by name).
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, &entry.name));
        let image_rect = Rect::from_min_size(rect.min, Vec2::splat(TILE));
        let painter = ui.painter_at(rect.expand(3.0));
        painter.rect_filled(image_rect, 4.0, ui.visuals().extreme_bg_color);
        let thumbnail = entry
            .thumbnail
            .as_ref()
            .and_then(|t| self.thumbnails.get(t));
        match thumbnail {
            Some(Thumbnail::Ready(texture)) => {
                painter.image(
                    texture.id(),
                    image_rect,
                    cover_uv(texture.size()),
                    Color32::WHITE,
                );
            }
            Some(Thumbnail::Loading) => {
                painter.text(
                    image_rect.center(),
                    egui::Align2::CENTER_CENTER,
                    "…",
                    egui::FontId::proportional(20.0),
                    ui.visuals().weak_text_color(),
                );
            }
            _ => {
                let glyph = if entry.model.is_some() { "NET" } else { "IMG" };
                painter.text(
                    image_rect.center(),
                    egui::Align2::CENTER_CENTER,
                    glyph,
                    egui::FontId::proportional(32.0),
                    ui.visuals().text_color(),
                );
            }
        }
        // The badge marks a network whose tile shows a picture; without one the tile says NET.
        let has_picture = matches!(thumbnail, Some(Thumbnail::Ready(_)));
        if entry.model.is_some() && has_picture {
            let badge = egui::pos2(image_rect.right() - 4.0, image_rect.top() + 4.0);
            super::canvas::badge(
                &painter,
                badge,
                egui::Align2::RIGHT_TOP,
                "NET",
                egui::FontId::monospace(10.0),
                Color32::from_rgb(40, 90, 160),
            );
        }
        let stroke = if selected {
            Stroke::new(3.0, ui.visuals().selection.stroke.color)
        } else if response.hovered() {
            Stroke::new(1.0, ui.visuals().widgets.hovered.fg_stroke.color)
        } else {
            Stroke::NONE
        };
        painter.rect_stroke(image_rect, 4.0, stroke, egui::StrokeKind::Outside);
        let name = truncate(&entry.name, 16);
        painter.text(
            egui::pos2(rect.center().x, image_rect.bottom() + 2.0),
            egui::Align2::CENTER_TOP,
            name,
            egui::FontId::proportional(12.0),
            if selected {
                ui.visuals().strong_text_color()
            } else {
                ui.visuals().text_color()
            },
        );
        let kind = match (&entry.model, &entry.image, &entry.condition) {
            (Some(_), _, Some(_)) => {
                "a style of a conditional network (Ctrl+click its other styles to blend them \
                 in one pass)"
            }
            (Some(_), Some(_), None) => "trained network and style image",
            (Some(_), None, None) => "trained network (runs with the Network method)",
            _ => "style image (runs with the Instant or Optimise method)",
        };
        let origin = match entry.origin {
            Origin::Bundled => "bundled",
            Origin::User => "added by you; right-click to remove",
            Origin::Trained => "trained by you",
        };
        let mut tip = format!("{}\n{kind}, {origin}", entry.name);
        if let Some(description) = &entry.description {
            tip.push('\n');
            tip.push_str(description);
        }
        tip.push_str("\nClick to use it; Ctrl+click to blend it with the selected styles.");
        response.on_hover_text(tip)
    }
}

/// The texture coordinates that fill a square with an image of `size`, cropping its longer side
/// equally at both ends.
pub fn cover_uv(size: [usize; 2]) -> Rect {
    let [w, h] = size.map(|s| s as f32);
    let (u, v) = if w > h {
        ((1.0 - h / w) / 2.0, 0.0)
    } else {
        (0.0, (1.0 - w / h) / 2.0)
    };
    Rect::from_min_max(egui::pos2(u, v), egui::pos2(1.0 - u, 1.0 - v))
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_string()
    } else {
        let mut short: String = text.chars().take(max_chars - 1).collect();
        short.push('…');
        short
    }
}

/// The blend weights of the selected styles (shown when more than one is selected).
/// Returns true when a weight changed or a style was dropped from the blend.
pub fn show_selection(
    ui: &mut egui::Ui,
    gallery: &Gallery,
    selection: &mut Vec<SelectedStyle>,
) -> bool {
    let mut changed = false;
    if selection.is_empty() {
        ui.label("No style selected: pick one in the gallery.");
        return false;
    }
    let mut remove = None;
    let blending = selection.len() > 1;
    for (index, style) in selection.iter_mut().enumerate() {
        let name = gallery
            .entry(&style.key)
            .map(|e| e.name.clone())
            .unwrap_or_else(|| style.key.display().to_string());
        ui.horizontal(|ui| {
            if blending {
                changed |= ui
                    .add(egui::Slider::new(&mut style.weight, 0.0..=1.0).text(truncate(&name, 18)))
                    .on_hover_text("This style's share in the blend (weights are normalised).")
                    .changed();
            } else {
                ui.label(truncate(&name, 28));
            }
            if ui
                .small_button("×")
                .on_hover_text("Remove from the blend")
                .clicked()
            {
                remove = Some(index);
            }
        });
    }
    if let Some(index) = remove {
        selection.remove(index);
        changed = true;
    }
    changed
}
