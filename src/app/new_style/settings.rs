//! The "New style" panel's settings (remembered between runs) and their defaults.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::TrainRecipe;

/// Where training photos are looked for when the user has not chosen a folder (the development
/// setup's photo collection, relative to the working directory).
pub const DEFAULT_PHOTOS: &str = "../shared/data/train";
pub(super) const ITERATIONS: std::ops::RangeInclusive<u64> = 1..=20_000;
pub(super) const CROP_SIZES: std::ops::RangeInclusive<u32> = 16..=512;

/// The panel's settings, remembered between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NewStyleSettings {
    /// The name shown in the gallery (its folder name is derived from it).
    pub name: String,
    /// Style images, or folders of works.
    pub works: Vec<PathBuf>,
    /// Folder of training photos; `None` until chosen (or found at [`DEFAULT_PHOTOS`]).
    pub photos: Option<PathBuf>,
    pub iterations: u64,
    /// Side of the square photo crops the network trains on.
    pub size: u32,
    pub style_weight: f64,
    pub content_weight: f64,
    /// Weight of the patch discriminator; only used with several works.
    pub adversarial_weight: f64,
    /// Train one conditional network with each work (or folder) as its own style, instead of
    /// pooling the works into one style. Only used with two or more entries.
    pub conditional: bool,
}

impl Default for NewStyleSettings {
    fn default() -> Self {
        let recipe = TrainRecipe::default();
        Self {
            name: String::new(),
            works: Vec::new(),
            photos: default_photos(),
            iterations: 2000,
            size: recipe.size,
            style_weight: recipe.style_weight,
            content_weight: recipe.content_weight,
            adversarial_weight: 0.05,
            conditional: false,
        }
    }
}

impl NewStyleSettings {
    /// Clamps values that may come from an old or hand-edited settings file.
    pub fn sanitized(mut self) -> Self {
        let defaults = Self::default();
        self.iterations = self
            .iterations
            .clamp(*ITERATIONS.start(), *ITERATIONS.end());
        self.size = self.size.clamp(*CROP_SIZES.start(), *CROP_SIZES.end());
        for (value, default) in [
            (&mut self.style_weight, defaults.style_weight),
            (&mut self.content_weight, defaults.content_weight),
            (&mut self.adversarial_weight, defaults.adversarial_weight),
        ] {
            if !value.is_finite() || *value < 0.0 {
                *value = default;
            }
        }
        if self.photos.is_none() {
            self.photos = defaults.photos;
        }
        self
    }

    /// The name the style gets: the one typed, else the first work's file name.
    pub fn effective_name(&self) -> String {
        let typed = self.name.trim();
        if !typed.is_empty() {
            return typed.to_string();
        }
        self.works
            .first()
            .and_then(|p| p.file_stem())
            .map(|s| title_case(&s.to_string_lossy().replace(['-', '_'], " ")))
            .unwrap_or_default()
    }
}

/// "great wave" → "Great Wave" (a file name read as a title).
fn title_case(text: &str) -> String {
    text.split_whitespace()
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or(String::new(), |first| {
                first.to_uppercase().chain(chars).collect()
            })
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// [`DEFAULT_PHOTOS`] as an absolute path, when that folder exists.
fn default_photos() -> Option<PathBuf> {
    let path = Path::new(DEFAULT_PHOTOS);
    path.is_dir().then(|| absolute(path))
}

/// An absolute form of `path`, so a checkpoint resumes from any working directory.
pub(super) fn absolute(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_defaults_to_the_first_work() {
        let mut settings = NewStyleSettings {
            works: vec![PathBuf::from("/art/great_wave-kanagawa.jpg")],
            ..NewStyleSettings::default()
        };
        assert_eq!(settings.effective_name(), "Great Wave Kanagawa");
        settings.name = "  Wave ".into();
        assert_eq!(settings.effective_name(), "Wave");
    }

    #[test]
    fn bad_stored_settings_are_repaired() {
        let settings = NewStyleSettings {
            iterations: 0,
            size: 9999,
            style_weight: f64::NAN,
            ..NewStyleSettings::default()
        }
        .sanitized();
        assert_eq!(settings.iterations, 1);
        assert_eq!(settings.size, 512);
        assert_eq!(
            settings.style_weight,
            NewStyleSettings::default().style_weight
        );
    }
}
