//! The recipe of a render (method, styles, weights, strength, seed, size, steps…), stored as a
//! PNG `tEXt` chunk so a saved picture can be reproduced. image 0.25 cannot write text chunks,
//! so PNGs with a recipe are encoded with the `png` crate directly.

use std::io::{BufReader, Cursor};
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::imaging;

/// The `tEXt` keyword the recipe is stored under.
pub const RECIPE_KEYWORD: &str = "atelier-recipe";
/// Bumped when a field changes meaning; older recipes still load (missing fields default).
pub const RECIPE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecipeStyle {
    pub path: PathBuf,
    pub weight: f64,
}

impl Default for RecipeStyle {
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            weight: 1.0,
        }
    }
}

/// Everything needed to render the same picture again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Recipe {
    pub version: u32,
    /// `optimize` or `network`.
    pub method: String,
    /// Style images with their blend weights (optimisation).
    pub styles: Vec<RecipeStyle>,
    /// The trained network (network method).
    pub model: Option<PathBuf>,
    /// A conditional network's style mix (one weight per style); its gallery entries are in
    /// `styles`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mix: Option<Vec<f64>>,
    pub content_weight: f64,
    pub style_weight: f64,
    pub tv_weight: f64,
    pub style_layers: Vec<(String, f64)>,
    pub preserve_color: bool,
    /// Stroke scale of the network method (1: as trained).
    pub stroke: f64,
    pub optimizer: String,
    pub seed: u64,
    /// Longer side of the render in pixels.
    pub size: u32,
    pub steps: usize,
    pub strength: f32,
    /// The photo it was made from (informational; not needed to load the controls).
    pub photo: Option<PathBuf>,
}

impl Default for Recipe {
    fn default() -> Self {
        Self {
            version: RECIPE_VERSION,
            method: "optimize".into(),
            styles: Vec::new(),
            model: None,
            mix: None,
            content_weight: 1.0,
            style_weight: 10.0,
            tv_weight: 0.01,
            style_layers: Vec::new(),
            preserve_color: false,
            stroke: 1.0,
            optimizer: "lbfgs".into(),
            seed: 0,
            size: 512,
            steps: 200,
            strength: 1.0,
            photo: None,
        }
    }
}

impl Recipe {
    /// JSON with every non-ASCII character escaped, so it fits a Latin-1 `tEXt` chunk unchanged.
    pub fn to_text(&self) -> Result<String> {
        let json = serde_json::to_string(self)
            .map_err(|e| Error::invalid(format!("cannot encode the recipe: {e}")))?;
        let mut ascii = String::with_capacity(json.len());
        for c in json.chars() {
            if c.is_ascii() {
                ascii.push(c);
            } else {
                // Non-ASCII only occurs inside JSON strings, where \u escapes are valid.
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    ascii.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
        Ok(ascii)
    }

    pub fn from_text(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::invalid(format!("unreadable recipe: {e}")))
    }
}

/// Encodes `image` as PNG with `recipe` in a `tEXt` chunk and writes it atomically.
pub fn save_png_with_recipe(image: &RgbImage, path: &Path, recipe: &Recipe) -> Result<()> {
    let write_error = |reason: String| Error::Write {
        path: path.to_path_buf(),
        reason,
    };
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, image.width(), image.height());
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder
            .add_text_chunk(RECIPE_KEYWORD.into(), recipe.to_text()?)
            .and_then(|_| encoder.add_text_chunk("Software".into(), "Atelier".into()))
            .map_err(|e| write_error(format!("encoding failed: {e}")))?;
        let mut writer = encoder
            .write_header()
            .map_err(|e| write_error(format!("encoding failed: {e}")))?;
        writer
            .write_image_data(image.as_raw())
            .and_then(|_| writer.finish())
            .map_err(|e| write_error(format!("encoding failed: {e}")))?;
    }
    imaging::write_bytes_atomic(path, &bytes)
}

/// Reads the recipe stored in a PNG written by [`save_png_with_recipe`].
pub fn load_recipe(path: &Path) -> Result<Recipe> {
    let bytes = std::fs::read(path).map_err(|e| Error::image(path, e))?;
    recipe_from_png(bytes, path)
}

/// [`load_recipe`] for a PNG in memory; `path` names it in errors.
pub fn recipe_from_png(bytes: Vec<u8>, path: &Path) -> Result<Recipe> {
    let decoder = png::Decoder::new(BufReader::new(Cursor::new(bytes)));
    let reader = decoder
        .read_info()
        .map_err(|e| Error::image(path, format!("not a readable PNG: {e}")))?;
    let info = reader.info();
    let text = info
        .uncompressed_latin1_text
        .iter()
        .find(|chunk| chunk.keyword == RECIPE_KEYWORD)
        .map(|chunk| chunk.text.clone())
        .or_else(|| {
            info.utf8_text
                .iter()
                .find(|chunk| chunk.keyword == RECIPE_KEYWORD)
                .and_then(|chunk| chunk.get_text().ok())
        })
        .ok_or_else(|| Error::image(path, "holds no Atelier recipe (save a PNG from the app)"))?;
    Recipe::from_text(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_round_trips_through_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.png");
        let image = RgbImage::from_pixel(5, 3, image::Rgb([10, 200, 30]));
        let recipe = Recipe {
            styles: vec![RecipeStyle {
                path: PathBuf::from("/tmp/schrei-Münch.jpg"),
                weight: 0.7,
            }],
            seed: 42,
            strength: 0.5,
            style_layers: vec![("relu1_2".into(), 0.5)],
            ..Recipe::default()
        };
        save_png_with_recipe(&image, &path, &recipe).unwrap();
        assert_eq!(load_recipe(&path).unwrap(), recipe);
        // Still an ordinary PNG.
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back, image);
    }

    #[test]
    fn png_without_recipe_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.png");
        RgbImage::new(2, 2).save(&path).unwrap();
        let err = load_recipe(&path).unwrap_err().to_string();
        assert!(err.contains("no Atelier recipe"), "{err}");
    }
}
