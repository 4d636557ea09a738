//! Exporting a trained style as a gallery folder: `model.safetensors` (f16), `thumb.jpg` (a
//! sample stylised by the model itself) and `style.toml`, written last so the gallery never
//! lists a half-exported style. Each file is written atomically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::DType;
use image::RgbImage;

use crate::error::{Error, Result};
use crate::imaging::{self, OutputFormat};
use crate::nn::transformer::TransformerNet;
use crate::nn::vgg::VggArch;
use crate::styles::{Manifest, MANIFEST_NAME};

pub const MODEL_NAME: &str = "model.safetensors";
pub const THUMBNAIL_NAME: &str = "thumb.jpg";

/// The attribution every style trained with the VGG16 loss network carries (its weights are
/// CC BY 4.0).
pub const VGG16_CREDIT: &str =
    "VGG16 weights: Simonyan & Zisserman, Visual Geometry Group, University of Oxford, CC BY 4.0";
/// The attribution for the torchvision/timm VGG19.
pub const VGG19_CREDIT: &str = "VGG19 weights: torchvision / timm (vgg19.tv_in1k), BSD-3-Clause";

/// The credit line for a loss network.
pub fn vgg_credit(arch: VggArch) -> &'static str {
    match arch {
        VggArch::Vgg16 => VGG16_CREDIT,
        VggArch::Vgg19 => VGG19_CREDIT,
    }
}

/// The files of an exported style.
#[derive(Debug, Clone)]
pub struct ExportedStyle {
    pub folder: PathBuf,
    pub model: PathBuf,
    pub manifest: PathBuf,
    pub thumbnail: PathBuf,
}

/// Writes `net` (as f16), `thumbnail` and `manifest` (whose `model` and `thumbnail` are set
/// here) into `folder`, which must exist. `style_thumbnails` are a conditional network's
/// per-style thumbnails, by the file names its manifest's `[[styles]]` give them.
pub fn export_style(
    folder: &Path,
    net: &TransformerNet,
    mut manifest: Manifest,
    thumbnail: &RgbImage,
    style_thumbnails: &[(PathBuf, RgbImage)],
) -> Result<ExportedStyle> {
    let model = folder.join(MODEL_NAME);
    let thumb = folder.join(THUMBNAIL_NAME);
    let manifest_path = folder.join(MANIFEST_NAME);
    let mut metadata = HashMap::new();
    if let Some(name) = &manifest.name {
        metadata.insert("style".to_string(), name.clone());
    }
    if !manifest.credits.is_empty() {
        metadata.insert("credits".to_string(), manifest.credits.join("\n"));
    }
    if !manifest.styles.is_empty() {
        // The condition order, so the model names its styles without the manifest.
        let names: Vec<&str> = manifest.styles.iter().map(|s| s.name.as_str()).collect();
        metadata.insert("styles".to_string(), names.join("\n"));
    }
    net.save_safetensors(&model, DType::F16, metadata)?;
    imaging::save_atomic(thumbnail, &thumb, OutputFormat::Jpeg { quality: 90 })?;
    for (name, image) in style_thumbnails {
        imaging::save_atomic(
            image,
            &folder.join(name),
            OutputFormat::Jpeg { quality: 90 },
        )?;
    }
    manifest.model = Some(PathBuf::from(MODEL_NAME));
    manifest.thumbnail = Some(PathBuf::from(THUMBNAIL_NAME));
    let text = manifest.to_toml().map_err(|e| Error::Write {
        path: manifest_path.clone(),
        reason: format!("cannot write the manifest: {e}"),
    })?;
    imaging::write_bytes_atomic(&manifest_path, text.as_bytes())?;
    Ok(ExportedStyle {
        folder: folder.to_path_buf(),
        model,
        manifest: manifest_path,
        thumbnail: thumb,
    })
}
