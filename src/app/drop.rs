//! Files dropped on the window: a photo opens, paintings and models become styles, works dropped
//! on the New style panel go to it; an overlay says which while files hover.

use std::path::PathBuf;

use eframe::egui::{self, Color32};

use super::AtelierApp;
use crate::styles::{self, FileKind};

impl AtelierApp {
    /// Whether `pointer` is over the gallery and over the New style panel.
    fn drop_targets(&self, pointer: Option<egui::Pos2>) -> (bool, bool) {
        let over = |rect: Option<egui::Rect>| match (rect, pointer) {
            (Some(rect), Some(p)) => rect.contains(p),
            _ => false,
        };
        (over(self.gallery.rect), over(self.new_style.rect))
    }

    pub(super) fn handle_dropped_files(&mut self, ctx: &egui::Context) {
        let (dropped, pointer) =
            ctx.input(|i| (i.raw.dropped_files.clone(), i.pointer.latest_pos()));
        if dropped.is_empty() {
            return;
        }
        let (on_gallery, on_new_style) = self.drop_targets(pointer);
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
            if super::video::is_video_file(&path) {
                self.open_video(path);
                continue;
            }
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

    pub(super) fn drop_overlay(&self, ctx: &egui::Context) {
        let hovering = ctx.input(|i| !i.raw.hovered_files.is_empty());
        if !hovering {
            return;
        }
        let pointer = ctx.input(|i| i.pointer.latest_pos());
        let (on_gallery, on_new_style) = self.drop_targets(pointer);
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
}
