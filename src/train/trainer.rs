//! One training run, step by step: builds the networks and losses from a [`TrainConfig`]
//! (checking every input first, so bad input fails before anything is written), runs
//! iterations, and saves previews, checkpoints and the exported style.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use image::RgbImage;
use serde::Serialize;

use super::checkpoint::{self, CHECKPOINT_NAME};
use super::config::{condition_name, TrainConfig};
use super::data::{load_style_works, BatchLoader, PhotoSet, StyleCrops};
use super::discriminator::{Discriminator, DISCRIMINATOR_WIDTH};
use super::export::{self, ExportedStyle, MODEL_NAME};
use super::loss::{LossWeights, PerceptualLoss};
use super::params::ParameterSet;
use crate::error::{Error, Result};
use crate::imaging::{self, OutputFormat};
use crate::nn::transformer::TransformerNet;
use crate::nn::vgg::{Vgg, VggArch};
use crate::styles::{ConditionalStyle, Manifest, TrainingInfo};
use crate::stylize::adam::AdamConfig;

/// Photos the previews show, side by side: the first readable ones of the data folder.
const PREVIEW_PHOTOS: usize = 2;
/// The folder inside the output that previews are saved to.
pub const PREVIEWS_DIR: &str = "previews";
/// Keeps the discriminator's initialisation independent of the transformer's.
const DISCRIMINATOR_SEED_OFFSET: u64 = 0x5EED_D15C;

/// The loss terms of one iteration, weighted (`total` is what the network minimises).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TrainLosses {
    pub content: f64,
    pub style: f64,
    pub tv: f64,
    /// The network's adversarial term (0 without a discriminator).
    pub adversarial: f64,
    pub total: f64,
    /// The discriminator's own hinge loss (0 without one); about 2 when it cannot tell real
    /// from fake, near 0 when it always can.
    pub discriminator: f64,
}

/// What one iteration did.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    /// Iterations completed, this one included.
    pub iteration: u64,
    pub losses: TrainLosses,
    pub seconds: f64,
    /// The style this iteration trained, in a conditional network (its index among the
    /// `--style` entries); `None` for a one-style network.
    pub condition: Option<usize>,
}

/// The discriminator with its parameters and the style crops it learns from.
struct Adversary {
    net: Discriminator,
    params: ParameterSet,
    crops: StyleCrops,
}

pub struct Trainer {
    config: TrainConfig,
    device: Device,
    vgg_arch: VggArch,
    network: TransformerNet,
    network_params: ParameterSet,
    adversary: Option<Adversary>,
    /// One loss (style targets) per style: a single pooled one, or one per condition of a
    /// conditional network.
    losses: Vec<PerceptualLoss>,
    photos: Arc<PhotoSet>,
    style_paths: Vec<PathBuf>,
    preview_photos: Vec<RgbImage>,
    loader: Option<BatchLoader>,
    adam: AdamConfig,
    iteration: u64,
}

/// Everything a run reads from disk, checked before any heavy work: the output folder, the
/// photos, the style works, the preview photos and (when resuming) the checkpoint.
pub struct TrainInputs {
    photos: Arc<PhotoSet>,
    style_paths: Vec<PathBuf>,
    works: Vec<RgbImage>,
    /// The works of each style, as indices into `works`: one list of all of them, or one list
    /// per `--style` entry of a conditional network.
    conditions: Vec<Vec<usize>>,
    preview_photos: Vec<RgbImage>,
    checkpoint: Option<checkpoint::Checkpoint>,
}

impl TrainInputs {
    /// Checks `config` and reads its inputs; the first problem is returned as a one-line error.
    pub fn load(config: &TrainConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let recipe = &config.recipe;
        check_output_folder(&config.output, config.resume)?;
        let photos = Arc::new(PhotoSet::scan(&recipe.data)?);
        let mut works = Vec::new();
        let mut conditions = Vec::new();
        if recipe.conditional {
            for source in &recipe.style {
                let loaded = load_style_works(std::slice::from_ref(source), recipe.style_size)?;
                conditions.push((works.len()..works.len() + loaded.len()).collect());
                works.extend(loaded);
            }
        } else {
            works = load_style_works(&recipe.style, recipe.style_size)?;
            conditions.push((0..works.len()).collect());
        }
        let mut preview_photos: Vec<RgbImage> = photos
            .first_readable(PREVIEW_PHOTOS)?
            .iter()
            .map(|p| imaging::resize_longer_side(p, recipe.size))
            .collect();
        if let Some(path) = &config.thumbnail_photo {
            // The thumbnail is painted from the first preview photo.
            let photo = imaging::load_rgb(path)?;
            preview_photos.insert(0, imaging::resize_longer_side(&photo, recipe.size));
        }
        let (style_paths, works) = works.into_iter().unzip();
        let checkpoint = if config.resume {
            let path = config.output.join(CHECKPOINT_NAME);
            let saved = checkpoint::load(&path, device)?;
            saved.check_recipe(recipe, &path)?;
            Some(saved)
        } else {
            None
        };
        Ok(Self {
            photos,
            style_paths,
            works,
            conditions,
            preview_photos,
            checkpoint,
        })
    }
}

impl Trainer {
    /// Prepares a run: checks and reads the inputs ([`TrainInputs::load`]), computes the style
    /// targets, and with `config.resume` restores the checkpoint.
    pub fn new(config: TrainConfig, vgg: Arc<Vgg>, device: &Device) -> Result<Self> {
        let inputs = TrainInputs::load(&config, device)?;
        Self::from_inputs(config, inputs, vgg, device)
    }

    /// [`Self::new`] with inputs already read. Creates the output folder once everything
    /// else succeeded, so bad input leaves nothing behind.
    pub fn from_inputs(
        config: TrainConfig,
        inputs: TrainInputs,
        vgg: Arc<Vgg>,
        device: &Device,
    ) -> Result<Self> {
        let recipe = &config.recipe;
        let weights = LossWeights {
            content: recipe.content_weight,
            style: recipe.style_weight,
            tv: recipe.tv_weight,
        };
        let vgg_arch = vgg.arch();
        let losses = inputs
            .conditions
            .iter()
            .map(|members| {
                let works: Vec<RgbImage> =
                    members.iter().map(|&i| inputs.works[i].clone()).collect();
                PerceptualLoss::new(
                    vgg.clone(),
                    &works,
                    &recipe.content_layer,
                    &recipe.style_layers,
                    weights,
                    device,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let adam = AdamConfig {
            learning_rate: recipe.learning_rate,
            ..AdamConfig::default()
        };
        adam.validate()?;

        let network_params = ParameterSet::new(config.initial_network(device)?.tensors())?;
        let mut network =
            TransformerNet::from_tensors(&network_params.tensor_map(), Path::new("training"))?;
        network.trainable = true;
        let adversary = if recipe.adversarial_weight > 0.0 {
            let params = ParameterSet::new(Discriminator::random_parameters(
                device,
                recipe.seed ^ DISCRIMINATOR_SEED_OFFSET,
                DISCRIMINATOR_WIDTH,
            )?)?;
            Some(Adversary {
                net: Discriminator::from_tensors(&params.tensor_map())?,
                params,
                crops: StyleCrops::new(&inputs.works, recipe.size),
            })
        } else {
            None
        };

        let mut trainer = Self {
            device: device.clone(),
            vgg_arch,
            network,
            network_params,
            adversary,
            losses,
            photos: inputs.photos,
            style_paths: inputs.style_paths,
            preview_photos: inputs.preview_photos,
            loader: None,
            adam,
            iteration: 0,
            config,
        };
        if let Some(saved) = inputs.checkpoint {
            trainer.restore(saved)?;
        }
        std::fs::create_dir_all(&trainer.config.output).map_err(|e| Error::Write {
            path: trainer.config.output.clone(),
            reason: e.to_string(),
        })?;
        Ok(trainer)
    }

    fn restore(&mut self, saved: checkpoint::Checkpoint) -> Result<()> {
        let path = self.checkpoint_path();
        let in_checkpoint = |e: Error| match e {
            Error::InvalidArgument(reason) => Error::weights(&path, reason),
            other => other,
        };
        self.network_params
            .restore(&saved.tensors, "net", saved.network_steps)
            .map_err(in_checkpoint)?;
        if let Some(adversary) = &mut self.adversary {
            adversary
                .params
                .restore(&saved.tensors, "disc", saved.discriminator_steps)
                .map_err(in_checkpoint)?;
        }
        self.iteration = saved.iteration;
        Ok(())
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Iterations completed so far (including those before a resume).
    pub fn iteration(&self) -> u64 {
        self.iteration
    }

    /// The network being trained (its weights change with every step).
    pub fn network(&self) -> &TransformerNet {
        &self.network
    }

    pub fn photo_count(&self) -> usize {
        self.photos.len()
    }

    pub fn checkpoint_path(&self) -> PathBuf {
        self.config.output.join(CHECKPOINT_NAME)
    }

    /// Runs one iteration: the network's update, then the discriminator's.
    pub fn step(&mut self) -> Result<StepReport> {
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

        // A conditional network trains its styles in turn (a fixed order, so a resumed run
        // follows the same schedule).
        let condition =
            (self.losses.len() > 1).then(|| (self.iteration % self.losses.len() as u64) as usize);
        let mix = condition.map(|index| self.one_hot(index)).transpose()?;
        let styled = self.network.forward_mixed(&photos, mix.as_ref())?;
        let loss = &self.losses[condition.unwrap_or(0)];
        let terms = loss.terms(&photos, &styled)?;
        let mut objective = terms.objective()?;
        let mut adversarial = None;
        if let Some(adversary) = &self.adversary {
            let term = (adversary.net.generator_loss(&styled)? * recipe.adversarial_weight)?;
            objective = (objective + &term)?;
            adversarial = Some(term);
        }
        let scalar = |t: &Tensor| -> Result<f64> { Ok(f64::from(t.to_scalar::<f32>()?)) };
        let adversarial = adversarial.as_ref().map(scalar).transpose()?.unwrap_or(0.0);
        let mut losses = TrainLosses {
            content: scalar(&terms.content)?,
            style: scalar(&terms.style)?,
            tv: scalar(&terms.tv)?,
            adversarial,
            total: terms.total_value()? + adversarial,
            discriminator: 0.0,
        };
        if !losses.total.is_finite() {
            return Err(Error::invalid(format!(
                "training diverged at iteration {} (loss {}); try a lower --lr",
                self.iteration + 1,
                losses.total
            )));
        }
        let grads = objective.backward()?;
        self.network_params.step(&grads, &self.adam)?;
        drop(grads);

        if let Some(adversary) = &mut self.adversary {
            let real = adversary.crops.batch(recipe.seed, self.iteration, batch);
            let real = Tensor::from_vec(real, (batch, 3, side, side), &self.device)?;
            let d_loss = adversary.net.hinge_loss(&real, &styled)?;
            losses.discriminator = scalar(&d_loss)?;
            let grads = d_loss.backward()?;
            adversary.params.step(&grads, &self.adam)?;
        }
        self.iteration += 1;
        Ok(StepReport {
            iteration: self.iteration,
            losses,
            seconds: started.elapsed().as_secs_f64(),
            condition,
        })
    }

    /// The mix that selects style `index` of a conditional network.
    fn one_hot(&self, index: usize) -> Result<Tensor> {
        let mut mix = vec![0f32; self.losses.len()];
        mix[index] = 1.0;
        Ok(Tensor::from_vec(mix, self.losses.len(), &self.device)?)
    }

    /// How many styles the network learns.
    pub fn styles(&self) -> usize {
        self.losses.len()
    }

    /// The network on the fixed preview photos, side by side; a conditional network paints
    /// the first photo in each of its styles instead.
    pub fn preview(&self) -> Result<RgbImage> {
        let mut net = self.network.clone();
        net.trainable = false;
        let paint = |photo: &RgbImage, mix: Option<&Tensor>| -> Result<RgbImage> {
            let y = net.forward_mixed(&imaging::to_tensor(photo, &self.device)?, mix)?;
            imaging::from_tensor(&y)
        };
        let images = if self.styles() > 1 {
            let photo = self
                .preview_photos
                .first()
                .ok_or_else(|| Error::invalid("no preview photo"))?;
            (0..self.styles())
                .map(|i| paint(photo, Some(&self.one_hot(i)?)))
                .collect::<Result<Vec<_>>>()?
        } else {
            self.preview_photos
                .iter()
                .map(|photo| paint(photo, None))
                .collect::<Result<Vec<_>>>()?
        };
        Ok(side_by_side(&images))
    }

    /// Saves `image` as `previews/iter-NNNNNN.png` for the current iteration.
    pub fn save_preview(&self, image: &RgbImage) -> Result<PathBuf> {
        let dir = self.config.output.join(PREVIEWS_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::Write {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        let path = dir.join(format!("iter-{:06}.png", self.iteration));
        imaging::save_atomic(image, &path, OutputFormat::Png)?;
        Ok(path)
    }

    /// Saves the state after the current iteration (atomically) and returns its path.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let path = self.checkpoint_path();
        checkpoint::save(
            &path,
            self.iteration,
            &self.config.recipe,
            &self.network_params,
            self.adversary.as_ref().map(|a| &a.params),
        )?;
        Ok(path)
    }

    /// Writes the style folder: f16 model, a thumbnail the model painted, and `style.toml`.
    pub fn export(&self) -> Result<ExportedStyle> {
        let mut net = self.network.clone();
        net.trainable = false;
        let sample = self
            .preview_photos
            .first()
            .ok_or_else(|| Error::invalid("no preview photo for the thumbnail"))?;
        let sample = imaging::to_tensor(sample, &self.device)?;
        let thumbnail = imaging::from_tensor(&net.forward(&sample)?)?;
        let mut manifest = self.manifest();
        // A conditional network's styles each get a thumbnail painted in that style.
        let mut style_thumbnails = Vec::new();
        for (index, style) in manifest.styles.iter_mut().enumerate() {
            let name = PathBuf::from(format!("thumb-{index}.jpg"));
            let painted =
                imaging::from_tensor(&net.forward_mixed(&sample, Some(&self.one_hot(index)?))?)?;
            style.thumbnail = Some(name.clone());
            style_thumbnails.push((name, painted));
        }
        export::export_style(
            &self.config.output,
            &net,
            manifest,
            &thumbnail,
            &style_thumbnails,
        )
    }

    /// The gallery manifest of this style.
    pub fn manifest(&self) -> Manifest {
        let recipe = &self.config.recipe;
        let credits = &self.config.credits;
        let file_name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let folder_name = self
            .config
            .output
            .canonicalize()
            .ok()
            .as_deref()
            .map(file_name)
            .filter(|n| !n.is_empty());
        Manifest {
            name: credits.name.clone().or(folder_name),
            artist: credits.artist.clone(),
            title: credits.title.clone(),
            year: credits.year.clone(),
            licence: credits.licence.clone(),
            credits: std::iter::once(export::vgg_credit(self.vgg_arch).to_string())
                .chain(credits.extra.iter().cloned())
                .collect(),
            styles: self.condition_manifest(),
            training: Some(TrainingInfo {
                iterations: Some(self.iteration),
                size: Some(recipe.size),
                width: u32::try_from(recipe.width).ok(),
                batch: u32::try_from(recipe.batch).ok(),
                content_weight: Some(recipe.content_weight),
                style_weight: Some(recipe.style_weight),
                tv_weight: Some(recipe.tv_weight),
                adversarial_weight: Some(recipe.adversarial_weight),
                learning_rate: Some(recipe.learning_rate),
                seed: Some(recipe.seed),
                content_layer: Some(recipe.content_layer.clone()),
                style_layers: recipe.style_layers.clone(),
                style_images: self.style_paths.iter().map(|p| file_name(p)).collect(),
                style_size: Some(recipe.style_size),
                vgg: Some(file_name(&recipe.vgg)).filter(|n| !n.is_empty()),
                photos: Some(self.photos.len() as u64),
                trainer: Some(format!("atelier {}", env!("CARGO_PKG_VERSION"))),
            }),
            ..Manifest::default()
        }
    }
}

impl Trainer {
    /// The `[[styles]]` of a conditional network's manifest, in condition order, with the
    /// groups they belong to; empty for a one-style network.
    fn condition_manifest(&self) -> Vec<ConditionalStyle> {
        if self.styles() < 2 {
            return Vec::new();
        }
        self.config
            .recipe
            .style
            .iter()
            .map(|source| {
                let name = condition_name(source);
                let groups = self
                    .config
                    .groups
                    .iter()
                    .filter(|g| g.members.contains(&name))
                    .map(|g| g.name.clone())
                    .collect();
                ConditionalStyle {
                    name,
                    groups,
                    ..ConditionalStyle::default()
                }
            })
            .collect()
    }
}

/// Images next to each other, top-aligned, on black.
pub(crate) fn side_by_side(images: &[RgbImage]) -> RgbImage {
    let width = images.iter().map(|i| i.width()).sum::<u32>().max(1);
    let height = images.iter().map(|i| i.height()).max().unwrap_or(1).max(1);
    let mut canvas = RgbImage::new(width, height);
    let mut x = 0i64;
    for image in images {
        image::imageops::replace(&mut canvas, image, x, 0);
        x += i64::from(image.width());
    }
    canvas
}

/// Refuses an output that cannot be written or that holds another run's results, before
/// anything is computed or written.
fn check_output_folder(output: &Path, resume: bool) -> Result<()> {
    let refuse = |reason: &str| Error::Write {
        path: output.to_path_buf(),
        reason: reason.to_string(),
    };
    if output.exists() && !output.is_dir() {
        return Err(refuse("is a file, not a folder"));
    }
    if !resume {
        if output.join(CHECKPOINT_NAME).exists() {
            return Err(refuse(
                "holds a training checkpoint; pass --resume to continue it, or choose another folder",
            ));
        }
        if output.join(MODEL_NAME).exists() {
            return Err(refuse(
                "already holds a trained style; choose another folder",
            ));
        }
    }
    // The nearest path that exists must be a folder that accepts new files (the rest of the
    // output path is created later).
    let existing = output
        .ancestors()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .find(|p| p.exists())
        .unwrap_or(Path::new("."));
    if !existing.is_dir() {
        return Err(refuse(&format!(
            "{} is a file, not a folder",
            existing.display()
        )));
    }
    tempfile::tempfile_in(existing).map_err(|e| {
        refuse(&format!(
            "folder {} is not writable: {e}",
            existing.display()
        ))
    })?;
    Ok(())
}
