//! Drawing the "New style" window: the form, the start and resume buttons, the running
//! training's progress and preview, and the confirmation dialogs.

use std::path::{Path, PathBuf};

use eframe::egui::{self, Color32, Vec2};

use super::folder::FolderState;
use super::settings::{NewStyleSettings, CROP_SIZES, ITERATIONS};
use super::{Environment, NewStylePanel, PanelAction, StartMode, Thumbnail};
use crate::app::controls::tip;
use crate::app::progress::Level;
use crate::app::tasks::{self, DialogPurpose, Tasks};
use crate::engine::TrainLosses;
use crate::styles;

const THUMB: f32 = 56.0;
const WINDOW_WIDTH: f32 = 480.0;
const WINDOW_HEIGHT: f32 = 660.0;

impl NewStylePanel {
    /// Draws the panel (when open); returns what the app must do.
    pub fn show(
        &mut self,
        ctx: &egui::Context,
        settings: &mut NewStyleSettings,
        env: &Environment<'_>,
        tasks: &Tasks,
    ) -> Vec<PanelAction> {
        let mut actions = Vec::new();
        if self.closing {
            self.closing_modal(ctx, &mut actions);
        }
        if !self.open {
            self.rect = None;
            return actions;
        }
        let mut open = true;
        let response = egui::Window::new("New style")
            .open(&mut open)
            .collapsible(false)
            .resizable(true)
            // Tall enough for the form, or the progress and preview, on a usual screen (egui
            // windows do not grow with scrolled content); a smaller one scrolls.
            .vscroll(true)
            .default_size(window_size(ctx))
            .default_pos(window_pos(ctx))
            .show(ctx, |ui| {
                self.contents(ui, settings, env, tasks, &mut actions)
            });
        self.rect = response.map(|r| r.response.rect);
        self.open = open;
        if self.confirm_replace {
            self.replace_modal(ctx, settings, env, &mut actions);
        }
        actions
    }

    fn contents(
        &mut self,
        ui: &mut egui::Ui,
        settings: &mut NewStyleSettings,
        env: &Environment<'_>,
        tasks: &Tasks,
        actions: &mut Vec<PanelAction>,
    ) {
        // Room for the value box and the longest label ("Adversarial weight").
        ui.spacing_mut().slider_width = (ui.available_width() - 230.0).clamp(100.0, 300.0);
        if self.run.is_some() {
            // The form is fixed while training: a summary leaves the room to the preview.
            self.running_section(ui, settings);
        } else {
            ui.label(
                "Teach a network to paint photos in a style: then any photo takes it in an \
                 instant (the Network method). Training takes long on a CPU: hours at the \
                 defaults.",
            );
            ui.add_space(6.0);
            self.form(ui, settings, env, tasks, actions);
            ui.add_space(6.0);
            self.start_section(ui, settings, env, actions);
        }
        if let Some(preview) = &self.preview {
            ui.add_space(6.0);
            let [w, h] = preview.texture.size().map(|s| s as f32);
            // Large while training; below the form afterwards, small enough to stay in view.
            let max_height = if self.run.is_some() { 400.0 } else { 120.0 };
            let width = ui
                .available_width()
                .min(w * 2.0)
                .min(max_height * w / h.max(1.0))
                .max(64.0);
            let size = Vec2::new(width, width * h / w.max(1.0));
            ui.image((preview.texture.id(), size))
                .on_hover_text("The network painting two of the training photos");
            ui.weak(format!(
                "Preview after iteration {} (two of the training photos).",
                preview.iteration
            ));
        }
    }

    fn form(
        &mut self,
        ui: &mut egui::Ui,
        settings: &mut NewStyleSettings,
        env: &Environment<'_>,
        tasks: &Tasks,
        actions: &mut Vec<PanelAction>,
    ) {
        egui::Grid::new("new-style-form")
            .num_columns(2)
            .spacing([10.0, 8.0])
            .show(ui, |ui| {
                let label = ui.label("Name");
                let suggestion = settings.effective_name();
                ui.vertical(|ui| {
                    ui.add(
                        egui::TextEdit::singleline(&mut settings.name)
                            .hint_text(if suggestion.is_empty() {
                                "e.g. Great Wave".to_string()
                            } else {
                                suggestion
                            })
                            .desired_width(f32::INFINITY),
                    )
                    .labelled_by(label.id)
                    .on_hover_text("Shown in the gallery. Empty: the first work's file name.");
                    if let (Some(dir), false) =
                        (env.trained_dir, settings.effective_name().is_empty())
                    {
                        let folder = dir.join(styles::folder_name(&settings.effective_name()));
                        ui.weak(format!("Saved in {}", folder.display()))
                            .on_hover_text(
                                "Your styles folder: the gallery lists every style in it.",
                            );
                    }
                });
                ui.end_row();

                ui.label("Style works");
                ui.vertical(|ui| self.works(ui, settings, tasks, actions));
                ui.end_row();

                let label = ui.label("Training photos");
                ui.vertical(|ui| self.photos(ui, settings, label.id, actions));
                ui.end_row();
            });
        ui.add_space(4.0);
        let several = self.work_count(settings) > 1;
        egui::CollapsingHeader::new("Settings")
            .id_salt("new-style-settings")
            .default_open(true)
            .show(ui, |ui| {
                ui.add(
                    egui::Slider::new(&mut settings.iterations, ITERATIONS)
                        .logarithmic(true)
                        .text("Iterations"),
                )
                .on_hover_text(
                    "Training steps, each on a batch of two photo crops. Styles start to show \
                     after a few hundred; 2000 gives a usable style. About 25 s each at the \
                     defaults on two CPU cores.",
                );
                ui.add(
                    egui::Slider::new(&mut settings.size, CROP_SIZES)
                        .step_by(16.0)
                        .text("Crop size"),
                )
                .on_hover_text(
                    "Side of the square photo crops the network learns on, in pixels (the works \
                     are seen at twice this). Smaller is faster and paints with larger strokes \
                     relative to the photo; the time per iteration grows with its square.",
                );
                ui.add(
                    egui::Slider::new(&mut settings.style_weight, 0.1..=1000.0)
                        .logarithmic(true)
                        .text("Style weight"),
                )
                .on_hover_text("How strongly the network must reproduce the works' textures.");
                ui.add(
                    egui::Slider::new(&mut settings.content_weight, 0.01..=100.0)
                        .logarithmic(true)
                        .text("Content weight"),
                )
                .on_hover_text("How strongly the network must keep the photos' structure.");
                let separate = settings.works.len() > 1;
                tip(
                    ui.add_enabled(
                        separate,
                        egui::Checkbox::new(
                            &mut settings.conditional,
                            "One network, one style per work",
                        ),
                    ),
                    "Train one conditional network in which each work (or folder) is a style of \
                     its own: the gallery lists each, and Ctrl+click blends them in one pass. \
                     Off: the works are pooled into one style.",
                    "Add two or more works (or folders) to train them as separate styles.",
                );
                tip(
                    ui.add_enabled(
                        several && !(separate && settings.conditional),
                        egui::Slider::new(&mut settings.adversarial_weight, 0.0..=1.0)
                            .text("Adversarial weight"),
                    ),
                    "Weight of a patch discriminator that learns the look of the works and \
                     teaches it to the network (0: none). Only meaningful with several works by \
                     one artist.",
                    "Add several works by one artist to use it (not with one style per work: \
                     the discriminator learns one style); with one painting the style loss does \
                     this job.",
                );
                if ui
                    .button("Default settings")
                    .on_hover_text("Iterations, crop size and weights back to their defaults")
                    .clicked()
                {
                    let defaults = NewStyleSettings::default();
                    settings.iterations = defaults.iterations;
                    settings.size = defaults.size;
                    settings.style_weight = defaults.style_weight;
                    settings.content_weight = defaults.content_weight;
                    settings.adversarial_weight = defaults.adversarial_weight;
                }
            })
            .header_response
            .on_hover_text("Length of the training and the loss weights");
    }

    fn works(
        &mut self,
        ui: &mut egui::Ui,
        settings: &mut NewStyleSettings,
        tasks: &Tasks,
        actions: &mut Vec<PanelAction>,
    ) {
        ui.horizontal(|ui| {
            if ui
                .button("Add images…")
                .on_hover_text(
                    "Choose one painting, or several works by one artist (or drop them here)",
                )
                .clicked()
            {
                actions.push(PanelAction::Dialog(DialogPurpose::StyleWorks));
            }
            if ui
                .button("Add a folder…")
                .on_hover_text("Use every image in a folder of works by one artist")
                .clicked()
            {
                actions.push(PanelAction::Dialog(DialogPurpose::StyleWorksFolder));
            }
            if !settings.works.is_empty()
                && ui
                    .button("Clear")
                    .on_hover_text("Remove all the works")
                    .clicked()
            {
                settings.works.clear();
            }
        });
        if settings.works.is_empty() {
            ui.weak("Drop one painting, or several works by one artist, on this window.");
            return;
        }
        let mut remove = None;
        ui.horizontal_wrapped(|ui| {
            for (index, work) in settings.works.iter().enumerate() {
                let response = self.work_tile(ui, work, tasks);
                if response.clicked() {
                    remove = Some(index);
                }
            }
        });
        if let Some(index) = remove {
            settings.works.remove(index);
        }
        let count = self.work_count(settings);
        ui.weak(match count {
            0 => "No images in these folders.".to_string(),
            1 => "One work: the style of this painting.".to_string(),
            n => format!("{n} works: one style learnt from all of them."),
        });
    }

    /// A work's thumbnail (a folder shows its name and image count); click removes it.
    fn work_tile(&mut self, ui: &mut egui::Ui, work: &Path, tasks: &Tasks) -> egui::Response {
        let (rect, response) = ui.allocate_exact_size(Vec2::splat(THUMB), egui::Sense::click());
        let name = work
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| work.display().to_string());
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, &name));
        let painter = ui.painter_at(rect);
        painter.rect_filled(rect, 3.0, ui.visuals().extreme_bg_color);
        let mut tip_text = format!(
            "{}
Click to remove it.",
            work.display()
        );
        if work.is_dir() {
            let count = self.count_images(work);
            if let Ok(n) = &count {
                tip_text = format!(
                    "{}
{n} images. Click to remove it.",
                    work.display()
                );
            }
            painter.text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                format!(
                    "{}
{}",
                    truncate(&name, 8),
                    count.map_or("?".into(), |n| format!("{n} img"))
                ),
                egui::FontId::proportional(11.0),
                ui.visuals().text_color(),
            );
        } else {
            if !self.thumbnails.contains_key(work) {
                self.thumbnails
                    .insert(work.to_path_buf(), Thumbnail::Loading);
                let path = work.to_path_buf();
                tasks.spawn("thumbnail", move || tasks::load_thumbnail(path));
            }
            match self.thumbnails.get(work) {
                Some(Thumbnail::Ready(texture)) => {
                    let uv = crate::app::gallery::cover_uv(texture.size());
                    painter.image(texture.id(), rect, uv, Color32::WHITE);
                }
                Some(Thumbnail::Failed) => {
                    painter.text(
                        rect.center(),
                        egui::Align2::CENTER_CENTER,
                        "?",
                        egui::FontId::proportional(20.0),
                        ui.visuals().error_fg_color,
                    );
                }
                _ => {
                    painter.text(
                        rect.center(),
                        egui::Align2::CENTER_CENTER,
                        "…",
                        egui::FontId::proportional(16.0),
                        ui.visuals().weak_text_color(),
                    );
                }
            }
        }
        if response.hovered() {
            painter.rect_filled(rect, 3.0, Color32::from_black_alpha(120));
            painter.text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                "×",
                egui::FontId::proportional(24.0),
                Color32::WHITE,
            );
        }
        response.on_hover_text(tip_text)
    }

    fn photos(
        &mut self,
        ui: &mut egui::Ui,
        settings: &mut NewStyleSettings,
        label: egui::Id,
        actions: &mut Vec<PanelAction>,
    ) {
        let text = self.photos_text.get_or_insert_with(|| {
            settings
                .photos
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        });
        ui.horizontal(|ui| {
            let edit = ui
                .add(
                    egui::TextEdit::singleline(text)
                        .hint_text("a folder of photos")
                        .desired_width((ui.available_width() - 80.0).max(80.0)),
                )
                .labelled_by(label)
                .on_hover_text(
                    "The photos the network learns to paint (random square crops of them). \
                     A few hundred varied photos work well.",
                );
            if edit.changed() {
                let trimmed = text.trim();
                settings.photos = (!trimmed.is_empty()).then(|| PathBuf::from(trimmed));
            }
            if ui
                .button("Choose…")
                .on_hover_text("Choose the folder of training photos")
                .clicked()
            {
                actions.push(PanelAction::Dialog(DialogPurpose::TrainingPhotos));
            }
        });
        match settings.photos.clone() {
            None => {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    "Choose a folder of photos to train on.",
                );
            }
            Some(folder) => match self.count_images(&folder) {
                Ok(0) => {
                    ui.colored_label(ui.visuals().warn_fg_color, "No images in this folder.");
                }
                Ok(n) => {
                    ui.weak(format!("{n} photos."));
                }
                Err(message) => {
                    ui.colored_label(ui.visuals().warn_fg_color, message);
                }
            },
        }
    }

    fn start_section(
        &mut self,
        ui: &mut egui::Ui,
        settings: &mut NewStyleSettings,
        env: &Environment<'_>,
        actions: &mut Vec<PanelAction>,
    ) {
        if let Err(why) = env.vgg {
            ui.colored_label(ui.visuals().warn_fg_color, why);
        }
        if env.trained_dir.is_none() {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                "This system has no folder for user data, so there is nowhere to keep new styles.",
            );
        }
        if let Some((level, note)) = &self.note {
            let color = match level {
                Level::Error => ui.visuals().error_fg_color,
                Level::Info => ui.visuals().text_color(),
            };
            ui.colored_label(color, note);
        }
        let state = self.folder_state(settings, env).map(|(_, s)| s);
        // Why a fresh start is not possible yet (the button says it as a tooltip).
        let missing = if settings.works.is_empty() {
            Some("Add a style image first.")
        } else if settings.photos.is_none() {
            Some("Choose the folder of training photos first.")
        } else if env.vgg.is_err() {
            Some("The VGG network is missing (see above).")
        } else if env.trained_dir.is_none() {
            Some("There is no folder to keep the style in.")
        } else {
            None
        };
        let resumable = match &state {
            Some(FolderState::Unfinished(info)) => {
                ui.label(format!(
                    "An unfinished training of this style was found (iteration {}). Resume \
                     continues it with the settings it was started with.",
                    info.iteration
                ));
                Some(info.clone())
            }
            Some(FolderState::Trained(checkpoint)) => {
                ui.label(
                    "A style with this name exists. Choose another name, replace it, or train \
                     it further (Resume, with more iterations).",
                );
                checkpoint.clone()
            }
            Some(FolderState::Broken(message)) => {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    format!("This style's folder holds an unreadable checkpoint: {message}"),
                );
                None
            }
            _ => None,
        };
        let occupied = !matches!(state, None | Some(FolderState::Free));
        ui.horizontal(|ui| {
            let start_label = if occupied {
                "Replace…"
            } else {
                "Start training"
            };
            let start_tip = if occupied {
                "Delete what this style's folder holds and train afresh (asks first)"
            } else {
                "Train this style in the background; you can keep stylising meanwhile"
            };
            let start = tip(
                ui.add_enabled(
                    missing.is_none(),
                    egui::Button::new(start_label).min_size(Vec2::new(120.0, 0.0)),
                ),
                start_tip,
                missing.unwrap_or_default(),
            );
            if start.clicked() {
                if occupied {
                    self.confirm_replace = true;
                } else {
                    actions.extend(self.start_or_report(settings, env, StartMode::Fresh));
                }
            }
            if let Some(info) = resumable {
                let can = settings.iterations > info.iteration;
                let resume = tip(
                    ui.add_enabled(can, egui::Button::new("Resume")),
                    &format!(
                        "Continue from the checkpoint at iteration {} up to {} iterations",
                        info.iteration, settings.iterations
                    ),
                    &format!(
                        "Raise Iterations above {} to train further.",
                        info.iteration
                    ),
                );
                if resume.clicked() {
                    actions.extend(self.start_or_report(
                        settings,
                        env,
                        StartMode::Resume(Box::new(info)),
                    ));
                }
            }
        });
    }

    fn running_section(&mut self, ui: &mut egui::Ui, settings: &NewStyleSettings) {
        let works = match settings.works.as_slice() {
            [one] => one
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            many => format!("{} works", many.len()),
        };
        let photos = settings
            .photos
            .as_deref()
            .and_then(|p| self.counts.get(p))
            .and_then(|c| c.as_ref().ok())
            .map_or(String::new(), |n| format!(" · {n} photos"));
        let Some(run) = &mut self.run else {
            return;
        };
        ui.heading(format!("Training “{}”", run.name));
        ui.weak(format!(
            "From {works}{photos} · {} px crops · {} iterations",
            settings.size, run.iterations
        ))
        .on_hover_text(format!("Saved in {}", run.folder.display()));
        ui.add_space(4.0);
        // Not animated: an animation repaints every frame, CPU the training needs.
        ui.add(egui::ProgressBar::new(run.fraction()).text(run.describe()))
            .on_hover_text("Iterations done / total, throughput, and the time left at this pace");
        if let Some(progress) = run.progress {
            ui.label(losses_text(&progress.losses)).on_hover_text(
                "The weighted loss terms of the last iteration (lower is better; the style \
                 term usually falls first).",
            );
        }
        ui.horizontal(|ui| {
            if run.stopping {
                ui.spinner();
                ui.label("Stopping after this iteration and saving a checkpoint…");
            } else if ui
                .button("Stop")
                .on_hover_text(
                    "Stop after the current iteration and save a checkpoint; Resume continues \
                     from it, also after a restart",
                )
                .clicked()
            {
                run.stop();
            }
        });
        ui.colored_label(
            ui.visuals().warn_fg_color,
            "Training and the stylise previews share the CPU: previews are slower until the \
             training ends. Closing this window does not stop the training.",
        );
    }

    fn replace_modal(
        &mut self,
        ctx: &egui::Context,
        settings: &mut NewStyleSettings,
        env: &Environment<'_>,
        actions: &mut Vec<PanelAction>,
    ) {
        let name = settings.effective_name();
        let text = match &self.folder {
            Some((folder, FolderState::Trained(_))) => format!(
                "“{name}” already exists in {}. Replacing it deletes its trained network, \
                 checkpoint and previews.",
                folder.display()
            ),
            Some((folder, _)) => format!(
                "An unfinished training of “{name}” is in {}. Replacing it deletes its \
                 checkpoint and previews.",
                folder.display()
            ),
            None => format!("Replacing “{name}” deletes what its folder holds."),
        };
        let mut replace = false;
        let modal = egui::Modal::new(egui::Id::unique("replace-style")).show(ctx, |ui| {
            ui.set_max_width(420.0);
            ui.heading("Replace this style?");
            ui.add_space(4.0);
            ui.label(text);
            ui.add_space(8.0);
            let mut close = false;
            ui.horizontal(|ui| {
                if ui
                    .button("Replace")
                    .on_hover_text("Delete the old style and train afresh")
                    .clicked()
                {
                    replace = true;
                }
                if ui
                    .button("Cancel")
                    .on_hover_text("Keep the existing style")
                    .clicked()
                {
                    close = true;
                }
            });
            close
        });
        if replace {
            self.confirm_replace = false;
            actions.extend(self.start_or_report(settings, env, StartMode::Replace));
        } else if modal.inner || modal.should_close() {
            self.confirm_replace = false;
        }
    }

    fn closing_modal(&mut self, ctx: &egui::Context, actions: &mut Vec<PanelAction>) {
        let mut quit = false;
        egui::Modal::new(egui::Id::unique("closing-training")).show(ctx, |ui| {
            ui.set_max_width(380.0);
            ui.horizontal(|ui| {
                ui.spinner();
                ui.heading("Stopping the training…");
            });
            ui.label(
                "Atelier closes once the current iteration ends and the checkpoint is saved; \
                 Resume continues it next time.",
            );
            if ui
                .button("Quit now")
                .on_hover_text("Quit without waiting; the last periodic checkpoint is kept")
                .clicked()
            {
                quit = true;
            }
        });
        if quit {
            if let Some(run) = self.run.take() {
                run.abandon();
            }
            self.closing = false;
            actions.push(PanelAction::CloseNow);
        }
    }
}

/// [`WINDOW_WIDTH`] × [`WINDOW_HEIGHT`], or less on a small screen.
fn window_size(ctx: &egui::Context) -> Vec2 {
    let screen = ctx.content_rect().size();
    Vec2::new(
        WINDOW_WIDTH.min(screen.x - 16.0),
        WINDOW_HEIGHT.min(screen.y - 120.0),
    )
    .max(Vec2::splat(200.0))
}

/// Centred, below the menu bar.
fn window_pos(ctx: &egui::Context) -> egui::Pos2 {
    let screen = ctx.content_rect();
    let size = window_size(ctx);
    egui::pos2(
        (screen.center().x - size.x / 2.0).max(screen.left() + 8.0),
        (screen.center().y - size.y / 2.0).max(screen.top() + 32.0),
    )
}

/// "Loss 3.21 · style 2.00 · content 1.19 · smoothness 0.02".
fn losses_text(l: &TrainLosses) -> String {
    let mut text = format!(
        "Loss {:.3} · style {:.3} · content {:.3} · smoothness {:.3}",
        l.total, l.style, l.content, l.tv
    );
    if l.adversarial != 0.0 || l.discriminator != 0.0 {
        text.push_str(&format!(
            " · adversarial {:.3} (discriminator {:.2})",
            l.adversarial, l.discriminator
        ));
    }
    text
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
