//! The status bar: progress of the running job with a Cancel button, the last status message,
//! and toasts for errors and saved files.

use std::time::{Duration, Instant};

use eframe::egui::{self, Color32};

use crate::stylize::gatys::Losses;

/// How long toasts stay up.
const INFO_TOAST: Duration = Duration::from_secs(5);
const ERROR_TOAST: Duration = Duration::from_secs(12);

/// What the running job is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPurpose {
    Preview,
    /// The full-resolution render behind Save.
    Save,
}

/// Progress of the job in flight, as reported by the engine.
#[derive(Debug, Clone)]
pub struct JobProgress {
    pub purpose: JobPurpose,
    pub step: usize,
    pub total_steps: usize,
    pub elapsed: Duration,
    pub losses: Option<Losses>,
    pub submitted: Instant,
    /// Longer side of the render.
    pub side: u32,
}

impl JobProgress {
    pub fn new(purpose: JobPurpose, side: u32) -> Self {
        Self {
            purpose,
            step: 0,
            total_steps: 0,
            elapsed: Duration::ZERO,
            losses: None,
            submitted: Instant::now(),
            side,
        }
    }

    pub fn fraction(&self) -> f32 {
        if self.total_steps == 0 {
            0.0
        } else {
            self.step as f32 / self.total_steps as f32
        }
    }

    pub fn describe(&self) -> String {
        let what = match self.purpose {
            JobPurpose::Preview => format!("Preview {} px", self.side),
            JobPurpose::Save => format!("Full-size render {} px", self.side),
        };
        let elapsed = self.submitted.elapsed().as_secs_f32();
        let mut text = if self.total_steps == 0 {
            format!("{what}: starting… {elapsed:.1} s")
        } else {
            format!(
                "{what}: step {}/{} · {elapsed:.1} s",
                self.step, self.total_steps
            )
        };
        if let Some(l) = self.losses.filter(|l| l.total > 0.0) {
            text.push_str(&format!(
                " · loss {:.3e} (style {:.2e}, content {:.2e}, tv {:.1e})",
                l.total, l.style, l.content, l.tv
            ));
        }
        text
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Error,
}

#[derive(Debug, Clone)]
struct Toast {
    text: String,
    level: Level,
    shown: Instant,
}

/// Short messages in the bottom-right corner, plus the latest one kept for the status line.
#[derive(Default)]
pub struct Toasts {
    toasts: Vec<Toast>,
    /// The last message, shown in the status bar until replaced.
    pub status: Option<(Level, String)>,
}

impl Toasts {
    pub fn info(&mut self, text: impl Into<String>) {
        self.push(Level::Info, text.into());
    }

    pub fn error(&mut self, text: impl Into<String>) {
        let text = text.into();
        tracing::warn!("{text}");
        self.push(Level::Error, text);
    }

    /// Sets the status line without a toast.
    pub fn status(&mut self, text: impl Into<String>) {
        self.status = Some((Level::Info, text.into()));
    }

    fn push(&mut self, level: Level, text: String) {
        // The same message again (e.g. a repeated failure) refreshes instead of stacking.
        self.toasts.retain(|t| t.text != text);
        self.toasts.push(Toast {
            text: text.clone(),
            level,
            shown: Instant::now(),
        });
        if self.toasts.len() > 4 {
            self.toasts.remove(0);
        }
        self.status = Some((level, text));
    }

    /// The messages currently up (for tests and the status line).
    pub fn messages(&self) -> Vec<(Level, String)> {
        self.toasts
            .iter()
            .map(|t| (t.level, t.text.clone()))
            .collect()
    }

    pub fn show(&mut self, ctx: &egui::Context) {
        self.toasts.retain(|t| {
            let limit = if t.level == Level::Error {
                ERROR_TOAST
            } else {
                INFO_TOAST
            };
            t.shown.elapsed() < limit
        });
        if self.toasts.is_empty() {
            return;
        }
        // Wake up to expire them even when nothing else happens.
        ctx.request_repaint_after(Duration::from_millis(500));
        let mut dismissed = None;
        egui::Area::new(egui::Id::unique("atelier-toasts"))
            .anchor(egui::Align2::RIGHT_BOTTOM, egui::vec2(-16.0, -48.0))
            .order(egui::Order::Foreground)
            .interactable(true)
            .show(ctx, |ui| {
                ui.set_max_width(420.0);
                for (index, toast) in self.toasts.iter().enumerate() {
                    let (fill, icon) = match toast.level {
                        Level::Info => (Color32::from_rgb(32, 70, 48), "OK"),
                        Level::Error => (Color32::from_rgb(110, 30, 30), "!"),
                    };
                    let frame = egui::Frame::popup(ui.style())
                        .fill(fill)
                        .inner_margin(egui::Margin::same(8));
                    let response = frame
                        .show(ui, |ui| {
                            ui.horizontal_wrapped(|ui| {
                                ui.colored_label(Color32::WHITE, icon);
                                ui.colored_label(Color32::WHITE, &toast.text);
                            });
                        })
                        .response
                        .interact(egui::Sense::click())
                        .on_hover_text("Click to dismiss");
                    if response.clicked() {
                        dismissed = Some(index);
                    }
                    ui.add_space(4.0);
                }
            });
        if let Some(index) = dismissed {
            self.toasts.remove(index);
        }
    }
}

/// Draws the progress line; returns true when Cancel was clicked.
pub fn show_progress(ui: &mut egui::Ui, progress: &JobProgress) -> bool {
    let mut cancel = false;
    ui.horizontal(|ui| {
        if ui
            .button("Cancel")
            .on_hover_text("Stop the running job (Esc)")
            .clicked()
        {
            cancel = true;
        }
        let bar = egui::ProgressBar::new(progress.fraction())
            .text(progress.describe())
            .animate(true);
        ui.add(bar).on_hover_text(
            "Steps done / total, time since the job started, and the current losses",
        );
    });
    cancel
}
