//! The status bar: progress of the running job with a Cancel button, the last status message,
//! and toasts for errors and saved files.

use std::time::{Duration, Instant};

use eframe::egui::{self, Color32};

use crate::engine::Losses;

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
        // Whole seconds: the line is redrawn on events and once a second, not continuously.
        let elapsed = self.submitted.elapsed().as_secs();
        let mut text = if self.total_steps == 0 {
            format!("{what}: starting… {elapsed} s")
        } else {
            format!(
                "{what}: step {}/{} · {elapsed} s",
                self.step, self.total_steps
            )
        };
        if let Some(l) = self.losses.filter(|l| l.total > 0.0) {
            text.push_str(&format!(
                " · loss {} (style {}, content {}, tv {})",
                number(l.total),
                number(l.style),
                number(l.content),
                number(l.tv)
            ));
        }
        text
    }
}

/// Three significant digits, in plain notation where that stays short ("3.86", "0.0331").
fn number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude == 0.0 {
        "0".into()
    } else if (0.01..10_000.0).contains(&magnitude) {
        let decimals = (2 - magnitude.log10().floor() as i32).clamp(0, 4) as usize;
        format!("{value:.decimals$}")
    } else {
        format!("{value:.2e}")
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

/// Short messages in the bottom-right corner.
#[derive(Default)]
pub struct Toasts {
    toasts: Vec<Toast>,
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

    fn push(&mut self, level: Level, text: String) {
        // The same message again (e.g. a repeated failure) refreshes instead of stacking.
        self.toasts.retain(|t| t.text != text);
        self.toasts.push(Toast {
            text,
            level,
            shown: Instant::now(),
        });
        if self.toasts.len() > 4 {
            self.toasts.remove(0);
        }
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
        // Not animated: an animation repaints every frame, and on a CPU renderer each frame
        // takes time from the engine.
        let bar = egui::ProgressBar::new(progress.fraction()).text(progress.describe());
        ui.add(bar).on_hover_text(
            "Steps done / total, time since the job started, and the current losses",
        );
    });
    cancel
}

/// What the status line is derived from. The line is computed from the app's state every frame
/// (never stored), so it cannot go stale: a picked style replaces "pick a style" at once.
pub struct StatusInputs<'a> {
    /// A photo being decoded.
    pub opening: Option<&'a str>,
    pub has_photo: bool,
    pub has_style: bool,
    pub running: Option<&'a JobProgress>,
    /// A Save waits for its full-size render to start.
    pub preparing_save: bool,
    /// Files being written.
    pub writing: usize,
    /// A (debounced) restart is scheduled.
    pub restart_pending: bool,
    /// How the last job or save ended, or why none could start; cleared when the user changes
    /// something that starts a new one.
    pub outcome: Option<&'a (Level, String)>,
}

/// The status line for `s`: what the app is doing, else how the last thing ended, else what to
/// do next.
pub fn status_line(s: &StatusInputs<'_>) -> (Level, String) {
    let info = |text: String| (Level::Info, text);
    if let Some(name) = s.opening {
        return info(format!("Opening {name}…"));
    }
    if let Some(progress) = s.running {
        return info(match progress.purpose {
            JobPurpose::Preview => format!(
                "Rendering a {} px preview; it sharpens as it runs (Esc cancels).",
                progress.side
            ),
            JobPurpose::Save => format!(
                "Rendering at full size ({} px) for Save (Esc cancels).",
                progress.side
            ),
        });
    }
    if s.preparing_save {
        return info("Preparing the full-size render…".into());
    }
    if s.writing > 0 {
        return info("Writing the file…".into());
    }
    if s.restart_pending && s.has_photo && s.has_style {
        return info("Starting the preview…".into());
    }
    if let Some(outcome) = s.outcome {
        return outcome.clone();
    }
    if !s.has_photo {
        return info("Open a photo: drop it on the window or press Ctrl+O.".into());
    }
    if !s.has_style {
        return info(
            "Pick a style in the gallery on the right (Ctrl+click blends several).".into(),
        );
    }
    info("Ready: change a control to render again, or Save (Ctrl+S).".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> StatusInputs<'static> {
        StatusInputs {
            opening: None,
            has_photo: false,
            has_style: false,
            running: None,
            preparing_save: false,
            writing: 0,
            restart_pending: false,
            outcome: None,
        }
    }

    #[test]
    fn status_follows_the_state() {
        let line = |s: &StatusInputs<'_>| status_line(s).1;
        let mut s = inputs();
        assert!(line(&s).starts_with("Open a photo"));
        s.has_photo = true;
        assert!(line(&s).starts_with("Pick a style"));
        s.has_style = true;
        assert!(line(&s).starts_with("Ready"));
        s.restart_pending = true;
        assert!(line(&s).starts_with("Starting"));
        let progress = JobProgress::new(JobPurpose::Preview, 320);
        s.running = Some(&progress);
        assert!(line(&s).contains("320 px preview"));
        s.running = None;
        s.restart_pending = false;
        let failed = (Level::Error, "Preview failed: boom".to_string());
        s.outcome = Some(&failed);
        assert_eq!(status_line(&s), failed);
        let save = JobProgress::new(JobPurpose::Save, 2048);
        s.running = Some(&save);
        assert!(line(&s).contains("full size (2048 px)"));
    }

    #[test]
    fn losses_read_as_plain_numbers() {
        assert_eq!(number(3.855), "3.85");
        assert_eq!(number(0.0331), "0.0331");
        assert_eq!(number(1234.4), "1234");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(2.5e-5), "2.50e-5");
    }

    #[test]
    fn a_picked_style_replaces_the_pick_prompt() {
        let mut s = inputs();
        s.has_photo = true;
        assert!(line_of(&s).starts_with("Pick a style"));
        s.has_style = true;
        assert!(!line_of(&s).contains("Pick a style"));
    }

    fn line_of(s: &StatusInputs<'_>) -> String {
        status_line(s).1
    }
}
