//! The status bar: the running job's progress (with Cancel), the status line, the training
//! run's summary, the photo's name and size, the zoom and, on F12, frame times.

use std::time::Duration;

use eframe::egui;

use super::actions::AppAction;
use super::progress;
use super::shortcuts::Shortcut;
use super::AtelierApp;

impl AtelierApp {
    pub(super) fn status_bar(&self, ui: &mut egui::Ui) -> Vec<AppAction> {
        let mut actions = Vec::new();
        ui.add_space(2.0);
        if let Some((_, progress)) = &self.running {
            if progress::show_progress(ui, progress) {
                actions.push(AppAction::Shortcut(Shortcut::Cancel));
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
                        actions.push(AppAction::Shortcut(Shortcut::NewStyle));
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
        actions
    }
}
