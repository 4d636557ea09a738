//! The recipe of a render (method, styles, weights, strength, seed, size, steps, masks…),
//! stored as a PNG `tEXt` chunk so a saved picture can be reproduced. image 0.25 cannot write
//! text chunks, so PNGs with a recipe are encoded with the `png` crate directly. Masks travel
//! inside the JSON as grey PNGs in base64 (the chunk must stay Latin-1 text; PNG already
//! compresses them, so a zTXt chunk would gain nothing).

use std::io::{BufReader, Cursor};
use std::path::{Path, PathBuf};

use image::{GrayImage, RgbImage};
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
    /// Where each style paints (local style); `None`: every style everywhere. Recipes written
    /// before masks existed have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions: Option<RecipeRegions>,
}

/// The masks of a render and how they combine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecipeRegions {
    pub masks: Vec<RecipeMask>,
    /// The style (its gallery key) that paints where no mask does; `None`: the photo stays.
    pub rest: Option<PathBuf>,
    /// Feather radius in pixels of the photo the masks were painted on.
    pub feather: f32,
    /// That photo's longer side, so the feather scales to another photo.
    pub photo_side: u32,
}

/// One mask: white where its style paints (or, for `style: None`, where the photo is kept).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecipeMask {
    /// The style's gallery key; `None`: the "keep the photo here" mask.
    pub style: Option<PathBuf>,
    /// The mask as an 8-bit grey PNG, base64.
    pub png: String,
}

impl RecipeMask {
    /// Encodes `mask` (a grey PNG in base64).
    pub fn new(style: Option<PathBuf>, mask: &GrayImage) -> Result<Self> {
        let mut bytes = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut bytes, mask.width(), mask.height());
            encoder.set_color(png::ColorType::Grayscale);
            encoder.set_depth(png::BitDepth::Eight);
            encoder
                .write_header()
                .and_then(|mut writer| {
                    writer.write_image_data(mask.as_raw())?;
                    writer.finish()
                })
                .map_err(|e| Error::invalid(format!("cannot encode a mask: {e}")))?;
        }
        Ok(Self {
            style,
            png: base64_encode(&bytes),
        })
    }

    /// The mask's pixels; `name` names it in errors.
    pub fn image(&self, name: &Path) -> Result<GrayImage> {
        let bytes = base64_decode(&self.png)
            .ok_or_else(|| Error::image(name, "a mask of the recipe is not valid base64"))?;
        imaging::decode_mask(bytes, name)
    }
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648), for masks inside the JSON.
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(
                    BASE64_ALPHABET[(n >> (18 - 6 * i)) as usize & 63],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The bytes of base64 `text` (padding optional, whitespace ignored); `None` if malformed.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut buffer = 0u32;
    let mut bits = 0u32;
    let mut padding = false;
    for c in text.bytes() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            padding = true;
            continue;
        }
        if padding {
            // Data after the padding.
            return None;
        }
        let value = BASE64_ALPHABET.iter().position(|&a| a == c)? as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    // A lone leftover sextet cannot come from whole bytes.
    (bits < 6).then_some(out)
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
            regions: None,
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
    fn base64_round_trips_every_length() {
        for len in 0..20 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64_encode(&bytes);
            assert_eq!(text.len() % 4, 0);
            assert_eq!(base64_decode(&text).as_deref(), Some(&bytes[..]), "{len}");
        }
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(b"Ma"), "TWE=");
        assert_eq!(base64_decode("not base64!"), None);
    }

    #[test]
    fn masks_round_trip_through_a_png_recipe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("masked.png");
        let sky = GrayImage::from_fn(40, 30, |x, y| image::Luma([((x * 6 + y) % 256) as u8]));
        let keep = GrayImage::from_fn(40, 30, |x, _| image::Luma([if x < 10 { 255 } else { 0 }]));
        let recipe = Recipe {
            regions: Some(RecipeRegions {
                masks: vec![
                    RecipeMask::new(Some(PathBuf::from("/styles/sky.jpg")), &sky).unwrap(),
                    RecipeMask::new(None, &keep).unwrap(),
                ],
                rest: Some(PathBuf::from("/styles/sea.jpg")),
                feather: 12.5,
                photo_side: 400,
            }),
            ..Recipe::default()
        };
        save_png_with_recipe(&RgbImage::new(4, 3), &path, &recipe).unwrap();
        let back = load_recipe(&path).unwrap();
        assert_eq!(back, recipe);
        let regions = back.regions.unwrap();
        assert_eq!(regions.masks[0].image(&path).unwrap(), sky);
        assert_eq!(regions.masks[1].image(&path).unwrap(), keep);
        assert_eq!(regions.masks[1].style, None);
    }

    #[test]
    fn recipes_without_masks_still_load_and_write_none() {
        // As written before masks existed.
        let old = r#"{"version":1,"method":"network","model":"/m.safetensors","strength":0.5}"#;
        let recipe = Recipe::from_text(old).unwrap();
        assert_eq!(recipe.regions, None);
        assert!((recipe.strength - 0.5).abs() < 1e-6);
        assert!(!Recipe::default().to_text().unwrap().contains("regions"));
    }

    #[test]
    fn a_damaged_mask_is_a_clear_error() {
        let mask = RecipeMask {
            style: None,
            png: "@@@".into(),
        };
        let err = mask.image(Path::new("r.png")).unwrap_err().to_string();
        assert!(err.contains("base64"), "{err}");
        let not_png = RecipeMask {
            style: None,
            png: base64_encode(b"hello, not an image"),
        };
        assert!(not_png.image(Path::new("r.png")).is_err());
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
