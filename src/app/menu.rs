//! The menu bar: File, View and Help. Returns what was chosen as actions.

use eframe::egui;

use super::actions::AppAction;
use super::shortcuts::{self, Shortcut};
use super::tasks::DialogPurpose;
use super::AtelierApp;

impl AtelierApp {
    pub(super) fn menu_bar(&self, ui: &mut egui::Ui) -> Vec<AppAction> {
        let ctx = ui.ctx().clone();
        let mut actions = Vec::new();
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                let item = |ui: &mut egui::Ui, text: &str, shortcut: Option<Shortcut>| {
                    let button = egui::Button::new(text).shortcut_text(
                        shortcut
                            .map(|s| shortcuts::label(&ctx, s))
                            .unwrap_or_default(),
                    );
                    ui.add(button).clicked()
                };
                if item(ui, "Open photo…", Some(Shortcut::Open)) {
                    actions.push(AppAction::Shortcut(Shortcut::Open));
                }
                if item(ui, "Open video…", None) {
                    actions.push(AppAction::Dialog(DialogPurpose::OpenVideo));
                }
                if item(ui, "Open frame folder…", None) {
                    actions.push(AppAction::Dialog(DialogPurpose::OpenFrameFolder));
                }
                if item(ui, "Add styles…", None) {
                    actions.push(AppAction::Dialog(DialogPurpose::AddStyles));
                }
                if item(ui, "New style…", Some(Shortcut::NewStyle)) {
                    actions.push(AppAction::Shortcut(Shortcut::NewStyle));
                }
                ui.separator();
                if item(ui, "Save", Some(Shortcut::Save)) {
                    actions.push(AppAction::Shortcut(Shortcut::Save));
                }
                if item(ui, "Save as…", Some(Shortcut::SaveAs)) {
                    actions.push(AppAction::Shortcut(Shortcut::SaveAs));
                }
                if item(ui, "Load recipe…", None) {
                    actions.push(AppAction::Dialog(DialogPurpose::LoadRecipe));
                }
                ui.separator();
                if item(ui, "Quit", None) {
                    ui.send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
            ui.menu_button("View", |ui| {
                let item = |ui: &mut egui::Ui, text: &str, shortcut: Shortcut| {
                    ui.add(egui::Button::new(text).shortcut_text(shortcuts::label(&ctx, shortcut)))
                        .clicked()
                };
                if item(ui, "Fit to window", Shortcut::ZoomFit) {
                    actions.push(AppAction::Shortcut(Shortcut::ZoomFit));
                }
                if item(ui, "Actual size", Shortcut::ZoomActual) {
                    actions.push(AppAction::Shortcut(Shortcut::ZoomActual));
                }
                if item(ui, "Zoom in", Shortcut::ZoomIn) {
                    actions.push(AppAction::Shortcut(Shortcut::ZoomIn));
                }
                if item(ui, "Zoom out", Shortcut::ZoomOut) {
                    actions.push(AppAction::Shortcut(Shortcut::ZoomOut));
                }
                ui.separator();
                let mut compare = self.canvas.compare;
                if ui
                    .add(egui::Checkbox::new(&mut compare, "Before/after split"))
                    .on_hover_text(format!(
                        "{} toggles; hold Space to see the photo",
                        shortcuts::label(&ctx, Shortcut::ToggleCompare)
                    ))
                    .changed()
                {
                    actions.push(AppAction::SetCompare(compare));
                }
                let mut frame_times = self.show_frame_times;
                if ui
                    .checkbox(&mut frame_times, "Frame times (F12)")
                    .on_hover_text("Show how long frames take, in the status bar")
                    .changed()
                {
                    actions.push(AppAction::ToggleFrameTimes);
                }
            });
            ui.menu_button("Help", |ui| {
                if ui
                    .button("Keyboard shortcuts")
                    .on_hover_text("List the keys and mouse gestures")
                    .clicked()
                {
                    actions.push(AppAction::ShowHelp);
                    ui.close();
                }
            });
        });
        actions
    }
}
