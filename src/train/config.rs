//! What a training run is asked to do: the recipe (everything that shapes the loss curve, saved
//! in checkpoints and compared on resume) and the run's own settings (length, previews, output).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::transformer::TransformerNet;

/// Everything that determines the weights after a given iteration. A checkpoint is only resumed
/// with an equal recipe, so a resumed run follows the same loss curve as an uninterrupted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRecipe {
    /// Style works: image files, or folders whose images are all used (a collection).
    pub style: Vec<PathBuf>,
    /// Folder of training photos.
    pub data: PathBuf,
    /// The VGG weights file of the loss network.
    pub vgg: PathBuf,
    /// Side of the square photo crops the network trains on.
    pub size: u32,
    /// Longer side the style works are seen at (their Gram targets and discriminator crops).
    pub style_size: u32,
    pub batch: usize,
    /// Base width of the transformer (pytorch: 32).
    pub width: usize,
    pub content_weight: f64,
    pub style_weight: f64,
    pub tv_weight: f64,
    /// Weight of the discriminator's hinge loss; 0 trains without a discriminator.
    pub adversarial_weight: f64,
    /// Adam step size, for the transformer and the discriminator alike.
    pub learning_rate: f64,
    pub seed: u64,
    pub content_layer: String,
    pub style_layers: Vec<String>,
    /// One network for all the styles (conditional instance norm): each `style` entry (an image,
    /// or a folder pooled into one style) is its own condition, trained in turn. Off: the
    /// entries are pooled into one style. Absent in older checkpoints, which are one-style.
    #[serde(default)]
    pub conditional: bool,
}

/// Defaults chosen for a 2-core CPU (see `DEFAULT_WIDTH` in this module).
impl Default for TrainRecipe {
    fn default() -> Self {
        Self {
            style: Vec::new(),
            data: PathBuf::new(),
            vgg: PathBuf::new(),
            size: 256,
            style_size: 512,
            batch: 2,
            width: DEFAULT_WIDTH,
            content_weight: 1.0,
            style_weight: 10.0,
            tv_weight: 0.01,
            adversarial_weight: 0.0,
            learning_rate: 1e-3,
            seed: 0,
            // Johnson et al.: relu2_2 keeps edges and layout while leaving colour and texture free.
            content_layer: "relu2_2".into(),
            style_layers: ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]
                .iter()
                .map(|l| l.to_string())
                .collect(),
            conditional: false,
        }
    }
}

/// Base width for new styles. The transformer's cost grows with the square of its width; at 16
/// it is a quarter of pytorch's 32-wide network, so on two CPU cores an iteration is dominated by
/// the VGG loss network instead, and the result still paints well (the style lives mostly in
/// the loss, the transformer only has to reproduce it). Wider networks remain loadable.
pub const DEFAULT_WIDTH: usize = 16;

/// The initial output layer's gain: about ±40 pixel levels of contrast (PyTorch's init gives
/// about ±0.4).
const OUTPUT_GAIN: f64 = 100.0;
/// The initial output's mean, in pixel levels.
const OUTPUT_MID_GREY: f64 = 127.5;

/// Attribution of the style, copied into its `style.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StyleCredits {
    /// Shown in the gallery; defaults to the output folder's name.
    pub name: Option<String>,
    pub artist: Option<String>,
    pub title: Option<String>,
    pub year: Option<String>,
    pub licence: Option<String>,
    /// Further credit lines for `style.toml` (e.g. the thumbnail photo's source).
    #[serde(default)]
    pub extra: Vec<String>,
}

/// One training run.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub recipe: TrainRecipe,
    /// The style folder to write: `model.safetensors`, `style.toml`, `thumb.jpg`, `previews/`
    /// and the checkpoint.
    pub output: PathBuf,
    /// Train until this many iterations in total (a resumed run counts the earlier ones).
    pub iterations: u64,
    /// Save and report a preview every this many iterations (0: never).
    pub preview_every: u64,
    /// Save a checkpoint every this many iterations (0: only when stopping or finishing).
    pub checkpoint_every: u64,
    /// Continue from the checkpoint in `output` instead of starting afresh.
    pub resume: bool,
    pub credits: StyleCredits,
    /// The photo the exported thumbnail is painted from (default: the first training photo;
    /// bundled styles use one that may be shipped).
    pub thumbnail_photo: Option<PathBuf>,
    /// Groups of a conditional network's styles (e.g. "ukiyo-e"), listed in its `style.toml`
    /// so the gallery offers each group as one entry. Members are style names (file stems).
    pub groups: Vec<StyleGroup>,
}

/// A named group of a conditional network's styles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StyleGroup {
    pub name: String,
    pub members: Vec<String>,
}

/// The name a style entry (image file or folder) gets in a conditional network: its file stem.
pub fn condition_name(source: &std::path::Path) -> String {
    source
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "style".into())
}

impl TrainConfig {
    /// A run of `iterations` with `recipe`, writing to `output`, with previews and checkpoints
    /// every 100 iterations.
    pub fn new(recipe: TrainRecipe, output: impl Into<PathBuf>, iterations: u64) -> Self {
        Self {
            recipe,
            output: output.into(),
            iterations,
            preview_every: 100,
            checkpoint_every: 100,
            resume: false,
            credits: StyleCredits::default(),
            thumbnail_photo: None,
            groups: Vec::new(),
        }
    }

    /// How many styles the trained network holds.
    pub fn styles(&self) -> usize {
        if self.recipe.conditional {
            self.recipe.style.len()
        } else {
            1
        }
    }

    /// Checks ranges; the message names the first bad value as the command line spells it.
    pub fn validate(&self) -> Result<()> {
        let r = &self.recipe;
        if self.iterations == 0 {
            return Err(Error::invalid("--iterations must be at least 1"));
        }
        if !(16..=2048).contains(&r.size) {
            return Err(Error::invalid(format!(
                "--size must be between 16 and 2048 pixels, got {}",
                r.size
            )));
        }
        if !(16..=4096).contains(&r.style_size) {
            return Err(Error::invalid(format!(
                "--style-size must be between 16 and 4096 pixels, got {}",
                r.style_size
            )));
        }
        if !(1..=256).contains(&r.batch) {
            return Err(Error::invalid(format!(
                "--batch must be between 1 and 256, got {}",
                r.batch
            )));
        }
        if !(1..=256).contains(&r.width) {
            return Err(Error::invalid(format!(
                "--width must be between 1 and 256, got {}",
                r.width
            )));
        }
        for (name, v) in [
            ("--content-weight", r.content_weight),
            ("--style-weight", r.style_weight),
            ("--tv-weight", r.tv_weight),
            ("--adversarial", r.adversarial_weight),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::invalid(format!(
                    "{name} must be a non-negative number, got {v}"
                )));
            }
        }
        if !r.learning_rate.is_finite() || r.learning_rate <= 0.0 {
            return Err(Error::invalid(format!(
                "--lr must be a positive number, got {}",
                r.learning_rate
            )));
        }
        if r.style.is_empty() {
            return Err(Error::invalid("no --style image or folder given"));
        }
        if r.style_layers.is_empty() {
            return Err(Error::invalid("no style layers given"));
        }
        if r.conditional {
            if r.style.len() < 2 {
                return Err(Error::invalid(
                    "--conditional trains several styles in one network: give at least two \
                     --style images or folders",
                ));
            }
            if r.adversarial_weight > 0.0 {
                return Err(Error::invalid(
                    "--adversarial is not available with --conditional (the discriminator \
                     learns one style)",
                ));
            }
            let names: Vec<String> = r.style.iter().map(|p| condition_name(p)).collect();
            if let Some(twice) = names
                .iter()
                .enumerate()
                .find(|(i, n)| names[..*i].contains(n))
            {
                return Err(Error::invalid(format!(
                    "two --style entries are both called `{}`; a conditional network names its \
                     styles by file name, so rename one",
                    twice.1
                )));
            }
            for group in &self.groups {
                if let Some(unknown) = group.members.iter().find(|m| !names.contains(m)) {
                    return Err(Error::invalid(format!(
                        "--group {}: `{unknown}` is not one of the styles ({})",
                        group.name,
                        names.join(", ")
                    )));
                }
                if group.members.is_empty() || group.name.trim().is_empty() {
                    return Err(Error::invalid(
                        "--group needs a name and at least one style: NAME=style,style",
                    ));
                }
            }
        } else if !self.groups.is_empty() {
            return Err(Error::invalid(
                "--group only applies to a --conditional network",
            ));
        }
        Ok(())
    }

    /// The network this recipe trains, freshly initialised, with its output layer scaled to
    /// pixel units: PyTorch's init makes the output a faint ±1 around black, and Adam's small
    /// steps then spend hundreds of iterations just growing the last layer to the 0..255 range.
    /// Starting at mid-grey with a photo-like contrast saves those iterations on a CPU (the
    /// weights stay an ordinary fast_neural_style network).
    pub(crate) fn initial_network(&self, device: &candle_core::Device) -> Result<TransformerNet> {
        let net = TransformerNet::random_conditional(
            device,
            self.recipe.seed,
            self.recipe.width,
            self.styles(),
        )?;
        let tensors = net
            .tensors()
            .into_iter()
            .map(|(name, t)| {
                let t = match name.as_str() {
                    "deconv3.conv2d.weight" => (t * OUTPUT_GAIN)?,
                    "deconv3.conv2d.bias" => t.ones_like()?.affine(0.0, OUTPUT_MID_GREY)?,
                    _ => t,
                };
                Ok((name, t))
            })
            .collect::<Result<std::collections::HashMap<_, _>>>()?;
        TransformerNet::from_tensors(&tensors, std::path::Path::new("<initial network>"))
    }
}
