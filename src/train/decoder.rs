//! Training a decoder that inverts the VGG16 encoder at one layer (universal style transfer):
//! random crops of photos are encoded, decoded, and the decoder learns to give the photo back —
//! a pixel loss plus a feature loss (the reconstruction's features against the photo's). No
//! style image is involved, which is why a decoder works for any painting.
//!
//! Runs are checkpointed (parameters, Adam moments, iteration, recipe) and resume exactly:
//! every crop is drawn from (seed, iteration).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::data::{BatchLoader, PhotoSet};
use super::params::ParameterSet;
use super::trainer::side_by_side;
use crate::error::{Error, Result};
use crate::imaging::{self, OutputFormat};
use crate::nn::decoder::{self, Decoder};
use crate::nn::vgg::Vgg;
use crate::nn::weights::{self, WeightFile};
use crate::stylize::adam::AdamConfig;

/// The checkpoint's name inside the output folder.
pub const DECODER_CHECKPOINT: &str = "checkpoint.safetensors";
/// The trained decoder's name inside the output folder.
pub const DECODER_FILE: &str = "decoder.safetensors";
/// The report (recipe, iterations, time, held-out PSNR) beside it.
pub const REPORT_FILE: &str = "training.json";
const FORMAT: &str = "atelier-decoder-checkpoint/1";
/// Longer side of the held-out photos the PSNR is measured on.
pub const EVAL_SIDE: u32 = 512;

/// What decides the result of a run: resuming must use the same recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderRecipe {
    pub data: PathBuf,
    /// The VGG16 layer to invert (relu1_1 … relu4_1).
    pub layer: String,
    /// Channels of the block-1 layers (the VGG has 64).
    pub width: usize,
    /// Side of the square training crops.
    pub size: u32,
    pub batch: usize,
    pub learning_rate: f64,
    /// Weight of the feature loss (relative squared error of the layer's features) against the
    /// pixel loss (mean squared error in 0..1 units).
    pub feature_weight: f64,
    pub seed: u64,
}

impl DecoderRecipe {
    pub fn new(data: impl Into<PathBuf>, layer: &str) -> Self {
        Self {
            data: data.into(),
            layer: layer.to_string(),
            width: 32,
            size: 128,
            batch: 8,
            learning_rate: 1e-3,
            feature_weight: 0.02,
            seed: 1,
        }
    }

    pub fn validate(&self) -> Result<()> {
        decoder::architecture(&self.layer, self.width)?;
        let min = 1u32 << (decoder::layer_pools(&self.layer)? + 1);
        if self.size < min {
            return Err(Error::invalid(format!(
                "--size {} is too small for {} (at least {min})",
                self.size, self.layer
            )));
        }
        if self.batch == 0 {
            return Err(Error::invalid("--batch must be at least 1"));
        }
        if !(self.feature_weight.is_finite() && self.feature_weight >= 0.0) {
            return Err(Error::invalid("--feature-weight must be 0 or more"));
        }
        AdamConfig {
            learning_rate: self.learning_rate,
            ..AdamConfig::default()
        }
        .validate()
    }
}

/// A run: the recipe, where it writes, how long, and what it measures at the end.
#[derive(Debug, Clone)]
pub struct DecoderTrainConfig {
    pub recipe: DecoderRecipe,
    pub output: PathBuf,
    /// Total iterations (a resumed run continues up to this count).
    pub iterations: u64,
    pub resume: bool,
    pub checkpoint_every: u64,
    pub preview_every: u64,
    /// Photos no training used, for previews and the PSNR.
    pub eval: Option<PathBuf>,
}

/// The terms of one iteration.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct DecoderLosses {
    pub pixel: f64,
    pub feature: f64,
    pub total: f64,
}

/// What [`DecoderTrainer::step`] did.
#[derive(Debug, Clone, Copy)]
pub struct DecoderStep {
    pub iteration: u64,
    pub losses: DecoderLosses,
    pub seconds: f64,
}

/// The report written beside the decoder.
#[derive(Debug, Clone, Serialize)]
pub struct DecoderReport {
    pub recipe: DecoderRecipe,
    pub iterations: u64,
    /// Wall time of the iterations, summed over every session of the run.
    pub training_seconds: f64,
    /// Mean PSNR (dB) of the reconstructions of the held-out photos, and how many there were.
    pub heldout_psnr_db: Option<f64>,
    pub heldout_photos: usize,
    pub parameters: usize,
}

pub struct DecoderTrainer {
    config: DecoderTrainConfig,
    device: Device,
    vgg: Arc<Vgg>,
    layers: Vec<String>,
    decoder: Decoder,
    params: ParameterSet,
    photos: Arc<PhotoSet>,
    loader: Option<BatchLoader>,
    adam: AdamConfig,
    iteration: u64,
    /// Seconds of training before this session (from the checkpoint).
    earlier_seconds: f64,
    session_seconds: f64,
    preview_photos: Vec<RgbImage>,
}

impl DecoderTrainer {
    /// Checks the recipe and the photos, and restores the checkpoint when resuming; creates the
    /// output folder only once everything else is known to work.
    pub fn new(config: DecoderTrainConfig, vgg: Arc<Vgg>, device: &Device) -> Result<Self> {
        let recipe = &config.recipe;
        recipe.validate()?;
        let layers = vec![recipe.layer.clone()];
        vgg.check_layer(&recipe.layer)?;
        let photos = Arc::new(PhotoSet::scan(&recipe.data)?);
        let preview_dir = config.eval.clone().unwrap_or_else(|| recipe.data.clone());
        let preview_photos = PhotoSet::scan(&preview_dir)?
            .first_readable(2)?
            .iter()
            .map(|p| imaging::resize_longer_side(p, 256))
            .collect();
        let initial = Decoder::random(&recipe.layer, recipe.width, device, recipe.seed)?;
        let mut params = ParameterSet::new(initial.tensors())?;
        let mut iteration = 0;
        let mut earlier_seconds = 0.0;
        let checkpoint = config.output.join(DECODER_CHECKPOINT);
        if config.resume {
            let saved = load_checkpoint(&checkpoint, device)?;
            if saved.recipe != *recipe {
                return Err(Error::weights(
                    &checkpoint,
                    format!(
                        "this checkpoint was trained with another recipe ({}); resume with the same settings or use another output folder",
                        serde_json::to_string(&saved.recipe).unwrap_or_default()
                    ),
                ));
            }
            params.restore(&saved.tensors, "dec", saved.adam_steps)?;
            iteration = saved.iteration;
            earlier_seconds = saved.seconds;
        } else if checkpoint.exists() {
            return Err(Error::Write {
                path: config.output.clone(),
                reason: "holds another decoder training; pass --resume to continue it or choose another folder".into(),
            });
        }
        std::fs::create_dir_all(&config.output).map_err(|e| Error::Write {
            path: config.output.clone(),
            reason: e.to_string(),
        })?;
        let mut decoder = Decoder::from_tensors(
            &recipe.layer,
            recipe.width,
            &params.tensor_map(),
            &checkpoint,
        )?;
        decoder.trainable = true;
        let adam = AdamConfig {
            learning_rate: recipe.learning_rate,
            ..AdamConfig::default()
        };
        Ok(Self {
            device: device.clone(),
            vgg,
            layers,
            decoder,
            params,
            photos,
            loader: None,
            adam,
            iteration,
            earlier_seconds,
            session_seconds: 0.0,
            preview_photos,
            config,
        })
    }

    pub fn config(&self) -> &DecoderTrainConfig {
        &self.config
    }

    pub fn iteration(&self) -> u64 {
        self.iteration
    }

    pub fn photo_count(&self) -> usize {
        self.photos.len()
    }

    /// One iteration: encode a batch of crops, decode, and step Adam on pixel + feature loss.
    pub fn step(&mut self) -> Result<DecoderStep> {
        let started = Instant::now();
        let recipe = &self.config.recipe;
        let (batch, side) = (recipe.batch, recipe.size as usize);
        let loader = match self.loader.take() {
            Some(loader) if loader.next_iteration() == self.iteration => loader,
            _ => BatchLoader::start(
                self.photos.clone(),
                recipe.seed,
                batch,
                recipe.size,
                self.iteration,
            )?,
        };
        let loader = self.loader.insert(loader);
        let photos = Tensor::from_vec(loader.next_batch()?, (batch, 3, side, side), &self.device)?;
        let missing = || Error::invalid(format!("the VGG gave no {}", recipe.layer));
        let target = self
            .vgg
            .features(&photos, &self.layers)?
            .remove(&recipe.layer)
            .ok_or_else(missing)?
            .detach();
        let decoded = self.decoder.forward(&target)?;
        let pixel = ((&decoded - &photos)? / 255.0)?.sqr()?.mean_all()?;
        let mut objective = pixel.clone();
        let mut feature_value = 0.0;
        if recipe.feature_weight > 0.0 {
            // The VGG runs outside autograd (its hand-written backward pass is much cheaper);
            // its input gradient enters the objective as decoded · g.
            let tape = self.vgg.forward_tape(&decoded, &self.layers)?;
            let f = tape.features().get(&recipe.layer).ok_or_else(missing)?;
            let var = Var::from_tensor(f)?;
            let norm = target.sqr()?.mean_all()?.clamp(1e-12f32, f32::MAX)?;
            let feature = ((var.as_tensor() - &target)?.sqr()?.mean_all()?.div(&norm)?
                * recipe.feature_weight)?;
            feature_value = f64::from(feature.to_scalar::<f32>()?);
            let grads = feature.backward()?;
            if let Some(g) = grads.get(var.as_tensor()) {
                let feature_grads = HashMap::from([(recipe.layer.clone(), g.clone())]);
                if let Some(g) = self.vgg.backward(&tape, &feature_grads)? {
                    objective = (objective + (&decoded * g.detach())?.sum_all()?)?;
                }
            }
        }
        let pixel_value = f64::from(pixel.to_scalar::<f32>()?);
        let losses = DecoderLosses {
            pixel: pixel_value,
            feature: feature_value,
            total: pixel_value + feature_value,
        };
        if !losses.total.is_finite() {
            return Err(Error::invalid(format!(
                "training diverged at iteration {} (loss {}); try a lower --lr",
                self.iteration + 1,
                losses.total
            )));
        }
        let grads = objective.backward()?;
        self.params.step(&grads, &self.adam)?;
        self.iteration += 1;
        let seconds = started.elapsed().as_secs_f64();
        self.session_seconds += seconds;
        Ok(DecoderStep {
            iteration: self.iteration,
            losses,
            seconds,
        })
    }

    /// The decoder as it is now, for inference.
    pub fn decoder(&self) -> Decoder {
        let mut decoder = self.decoder.clone();
        decoder.trainable = false;
        decoder
    }

    /// Photo above, reconstruction below, for two held-out photos side by side.
    pub fn preview(&self) -> Result<RgbImage> {
        let decoder = self.decoder();
        let columns = self
            .preview_photos
            .iter()
            .map(|photo| {
                let (_, reconstructed) = reconstruct(&self.vgg, &decoder, photo, &self.device)?;
                let mut column = RgbImage::new(reconstructed.width(), 2 * reconstructed.height());
                image::imageops::replace(&mut column, photo, 0, 0);
                image::imageops::replace(
                    &mut column,
                    &reconstructed,
                    0,
                    i64::from(reconstructed.height()),
                );
                Ok(column)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(side_by_side(&columns))
    }

    pub fn save_preview(&self, image: &RgbImage) -> Result<PathBuf> {
        let dir = self.config.output.join(super::trainer::PREVIEWS_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::Write {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        let path = dir.join(format!("iter-{:06}.png", self.iteration));
        imaging::save_atomic(image, &path, OutputFormat::Png)?;
        Ok(path)
    }

    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let path = self.config.output.join(DECODER_CHECKPOINT);
        let (tensors, steps) = self.params.state("dec");
        let recipe = serde_json::to_string(&self.config.recipe).map_err(|e| Error::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("iteration".to_string(), self.iteration.to_string()),
            ("adam_steps".to_string(), steps.to_string()),
            (
                "seconds".to_string(),
                (self.earlier_seconds + self.session_seconds).to_string(),
            ),
            ("recipe".to_string(), recipe),
        ]);
        weights::save_safetensors(&path, &tensors, None, metadata)?;
        Ok(path)
    }

    /// Measures the held-out PSNR, writes the decoder (f16) with its credits and the report.
    pub fn export(&self) -> Result<DecoderReport> {
        let decoder = self.decoder();
        let (psnr, count) = match &self.config.eval {
            Some(dir) => {
                let (psnr, count) = heldout_psnr(&self.vgg, &decoder, dir, &self.device)?;
                (Some(psnr), count)
            }
            None => (None, 0),
        };
        let recipe = &self.config.recipe;
        let parameters = decoder.tensors().iter().map(|(_, t)| t.elem_count()).sum();
        let report = DecoderReport {
            recipe: recipe.clone(),
            iterations: self.iteration,
            training_seconds: self.earlier_seconds + self.session_seconds,
            heldout_psnr_db: psnr,
            heldout_photos: count,
            parameters,
        };
        let metadata = HashMap::from([
            (
                "credits".to_string(),
                "Trained by Atelier to invert VGG16 features. VGG16 weights: Karen Simonyan and Andrew Zisserman, Visual Geometry Group, University of Oxford (CC BY 4.0).".to_string(),
            ),
            ("iterations".to_string(), self.iteration.to_string()),
            (
                "heldout_psnr_db".to_string(),
                psnr.map(|p| format!("{p:.2}")).unwrap_or_default(),
            ),
        ]);
        decoder.save(&self.config.output.join(DECODER_FILE), DType::F16, metadata)?;
        let json = serde_json::to_vec_pretty(&report).map_err(|e| Error::Write {
            path: self.config.output.join(REPORT_FILE),
            reason: e.to_string(),
        })?;
        imaging::write_bytes_atomic(&self.config.output.join(REPORT_FILE), &json)?;
        Ok(report)
    }
}

/// What a decoder checkpoint holds.
struct SavedDecoder {
    iteration: u64,
    adam_steps: i32,
    seconds: f64,
    recipe: DecoderRecipe,
    tensors: HashMap<String, Tensor>,
}

fn load_checkpoint(path: &Path, device: &Device) -> Result<SavedDecoder> {
    if !path.is_file() {
        return Err(Error::weights(
            path,
            "no decoder checkpoint to resume from (train without --resume first)",
        ));
    }
    let file = WeightFile::load(path, device)?;
    let bad = |reason: &str| Error::weights(path, reason);
    if file.metadata.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad("not an Atelier decoder checkpoint"));
    }
    let number = |key: &str| file.metadata.get(key).and_then(|v| v.parse::<f64>().ok());
    let recipe = file
        .metadata
        .get("recipe")
        .and_then(|t| serde_json::from_str(t).ok())
        .ok_or_else(|| bad("checkpoint has no readable recipe"))?;
    Ok(SavedDecoder {
        iteration: number("iteration").ok_or_else(|| bad("checkpoint has no iteration"))? as u64,
        adam_steps: number("adam_steps").unwrap_or(0.0) as i32,
        seconds: number("seconds").unwrap_or(0.0),
        recipe,
        tensors: file.tensors,
    })
}

/// Encodes and decodes `photo` (cropped to what the layer's pools need): the crop and its
/// reconstruction.
pub fn reconstruct(
    vgg: &Vgg,
    decoder: &Decoder,
    photo: &RgbImage,
    device: &Device,
) -> Result<(RgbImage, RgbImage)> {
    let multiple = 1u32 << decoder::layer_pools(decoder.layer())?;
    let (w, h) = (
        photo.width() / multiple * multiple,
        photo.height() / multiple * multiple,
    );
    if w == 0 || h == 0 {
        return Err(Error::invalid("photo too small to reconstruct"));
    }
    let crop = image::imageops::crop_imm(photo, 0, 0, w, h).to_image();
    let layer = decoder.layer().to_string();
    let features = vgg
        .features(
            &imaging::to_tensor(&crop, device)?,
            std::slice::from_ref(&layer),
        )?
        .remove(&layer)
        .ok_or_else(|| Error::invalid(format!("the VGG gave no {layer}")))?;
    let decoded = imaging::from_tensor(&decoder.forward(&features)?)?;
    Ok((crop, decoded))
}

/// Peak signal-to-noise ratio (dB) of `b` against `a`, 8-bit.
pub fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    let sum: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    let mse = sum / a.as_raw().len().max(1) as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// Mean PSNR of the reconstructions of every photo in `dir` (longer side [`EVAL_SIDE`]).
pub fn heldout_psnr(
    vgg: &Vgg,
    decoder: &Decoder,
    dir: &Path,
    device: &Device,
) -> Result<(f64, usize)> {
    let photos = PhotoSet::scan(dir)?;
    let mut total = 0.0;
    let mut count = 0;
    for path in photos.paths() {
        let photo = imaging::resize_longer_side(&imaging::load_rgb(path)?, EVAL_SIDE);
        let (crop, decoded) = reconstruct(vgg, decoder, &photo, device)?;
        total += psnr(&crop, &decoded);
        count += 1;
    }
    Ok((total / count.max(1) as f64, count))
}

/// What [`run`] reports: `Started`, `Progress` after each iteration with `Preview` and
/// `Checkpoint` between, then `Finished` or `Stopped` (a failure is [`run`]'s error).
#[derive(Debug, Clone)]
pub enum DecoderEvent {
    Started { first_iteration: u64, photos: usize },
    Progress(DecoderStep),
    Preview { iteration: u64, path: PathBuf },
    Checkpoint { iteration: u64, path: PathBuf },
    Stopped { iteration: u64, checkpoint: PathBuf },
    Finished(Box<DecoderReport>),
}

/// A whole run: iterations with previews and checkpoints, then the export; stops with a
/// checkpoint when `stop` is set.
pub fn run(
    config: DecoderTrainConfig,
    vgg: Arc<Vgg>,
    device: &Device,
    mut send: impl FnMut(DecoderEvent),
    stop: &AtomicBool,
) -> Result<()> {
    let iterations = config.iterations;
    let (checkpoint_every, preview_every) = (config.checkpoint_every, config.preview_every);
    let mut trainer = DecoderTrainer::new(config, vgg, device)?;
    send(DecoderEvent::Started {
        first_iteration: trainer.iteration(),
        photos: trainer.photo_count(),
    });
    while trainer.iteration() < iterations {
        if stop.load(Ordering::SeqCst) {
            let checkpoint = trainer.save_checkpoint()?;
            send(DecoderEvent::Stopped {
                iteration: trainer.iteration(),
                checkpoint,
            });
            return Ok(());
        }
        let step = trainer.step()?;
        send(DecoderEvent::Progress(step));
        let i = step.iteration;
        if preview_every > 0 && (i % preview_every == 0 || i == iterations) {
            let path = trainer.save_preview(&trainer.preview()?)?;
            send(DecoderEvent::Preview { iteration: i, path });
        }
        if checkpoint_every > 0 && (i % checkpoint_every == 0 || i == iterations) {
            let path = trainer.save_checkpoint()?;
            send(DecoderEvent::Checkpoint { iteration: i, path });
        }
    }
    let report = trainer.export()?;
    send(DecoderEvent::Finished(Box::new(report)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_of_identical_and_shifted_images() {
        let a = RgbImage::from_pixel(4, 4, image::Rgb([100, 100, 100]));
        let b = RgbImage::from_pixel(4, 4, image::Rgb([110, 100, 100]));
        assert!(psnr(&a, &a).is_infinite());
        // MSE = 100/3.
        let expected = 10.0 * (255.0f64 * 255.0 / (100.0 / 3.0)).log10();
        assert!((psnr(&a, &b) - expected).abs() < 1e-9);
    }

    #[test]
    fn recipes_are_checked() {
        let mut recipe = DecoderRecipe::new("photos", "relu4_1");
        assert!(recipe.validate().is_ok());
        recipe.size = 8;
        assert!(recipe.validate().is_err());
        recipe.size = 128;
        recipe.layer = "relu9_1".into();
        assert!(recipe.validate().is_err());
    }
}
