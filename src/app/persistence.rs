//! What survives a restart (in eframe's storage; window size and panel widths are kept by eframe
//! and egui themselves): control values, the last folder, the user's styles, the selection and
//! the "New style" panel's settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::controls::Controls;
use super::gallery::SelectedStyle;
use super::new_style::NewStyleSettings;

const STORAGE_KEY: &str = "atelier-app";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Persisted {
    pub controls: Controls,
    /// Where the last file dialog pointed.
    pub last_folder: Option<PathBuf>,
    /// Style images and model files the user added, in the order added.
    pub user_styles: Vec<PathBuf>,
    pub selection: Vec<SelectedStyle>,
    /// Where Save writes without asking (set by Save As).
    pub save_path: Option<PathBuf>,
    /// The "New style" panel's last settings and photo folder.
    pub new_style: NewStyleSettings,
}

impl Persisted {
    /// The saved state, or the defaults when there is none or it cannot be read (a newer or
    /// damaged settings file must not stop the app from starting).
    pub fn load(storage: Option<&dyn eframe::Storage>) -> Self {
        let mut loaded: Persisted = storage
            .and_then(|s| eframe::get_value(s, STORAGE_KEY))
            .unwrap_or_default();
        loaded.controls = loaded.controls.sanitized();
        loaded.new_style = loaded.new_style.sanitized();
        loaded
    }

    pub fn store(&self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, self);
    }
}
