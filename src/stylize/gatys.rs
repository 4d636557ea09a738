//! Optimisation-based style transfer (Gatys, Ecker & Bethge): find an image whose VGG features
//! match the photo (content loss) and whose Gram matrices match the style (style loss).
//!
//! Every loss term is normalised by the size of its target (‖F−P‖²/‖P‖², ‖G−A‖²/‖A‖²), so the
//! weights mean the same for VGG16 and VGG19 and for any input normalisation.
//!
//! With regions (Gatys et al. 2017, "Controlling perceptual factors"), each style is matched only
//! inside its own weight map: its Gram matrix is that of the result's features weighted by the
//! map ([`masked_gram`]), compared with the whole painting's. The content loss stays global.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use image::RgbImage;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::imaging;
use crate::nn::ops;
use crate::nn::vgg::Vgg;
use crate::stylize::cache::FeatureCache;
use crate::stylize::color;
use crate::stylize::optim::{make_optimizer, OptimizerKind};
use crate::stylize::regions::RegionWeights;

/// Where the optimisation starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Init {
    /// The photo itself: converges fastest and keeps the most structure.
    Content,
    /// Seeded Gaussian noise around mid-grey: more stylised, needs more steps.
    Noise,
}

impl std::str::FromStr for Init {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "content" => Ok(Init::Content),
            "noise" => Ok(Init::Noise),
            other => Err(Error::invalid(format!(
                "unknown init `{other}` (use content or noise)"
            ))),
        }
    }
}

/// Everything that controls one optimisation run.
#[derive(Debug, Clone, Serialize)]
pub struct GatysConfig {
    /// Longer side of the result in pixels.
    pub size: u32,
    /// Optimisation steps at each scale.
    pub steps: usize,
    pub content_weight: f64,
    pub style_weight: f64,
    pub tv_weight: f64,
    pub content_layers: Vec<String>,
    /// Style layers with their relative weights.
    pub style_layers: Vec<(String, f64)>,
    pub preserve_color: bool,
    pub init: Init,
    pub seed: u64,
    pub optimizer: OptimizerKind,
    pub learning_rate: Option<f64>,
    /// Number of scales for coarse-to-fine; 0 picks one from `size`.
    pub scales: usize,
    /// Emit a preview every this many steps (0 = never).
    pub preview_every: usize,
    /// Style images are resized to this factor times the result's longer side.
    pub style_scale: f64,
    /// Start from this image instead of [`Self::init`] (resized to each scale): refining a
    /// one-pass result needs only a few steps.
    #[serde(skip)]
    pub start_from: Option<std::sync::Arc<RgbImage>>,
    /// A video frame's temporal loss (Ruder et al. 2016): stay close to the previous frame's
    /// result warped to this one, where the flow is reliable. Applies at the scale of its size.
    #[serde(skip)]
    pub temporal: Option<TemporalTarget>,
}

/// The temporal loss of one video frame: `weight · Σ c·(x − warped)² / (3·H·W)` on 0..1 pixels.
#[derive(Debug, Clone)]
pub struct TemporalTarget {
    /// The previous frame's result warped along the optical flow, at the result's size.
    pub warped: std::sync::Arc<RgbImage>,
    /// Per pixel, 0..1: how much the flow there can be trusted (`c` in the paper).
    pub reliable: std::sync::Arc<Vec<f32>>,
    pub weight: f64,
}

/// Weight of the temporal loss for video frames: measured on bikes.mp4 at 96 px so that the
/// term is of the order of the style loss (its squared errors on 0..1 pixels are ~1e-3).
pub const TEMPORAL_WEIGHT: f64 = 1000.0;

impl Default for GatysConfig {
    fn default() -> Self {
        Self {
            size: 512,
            steps: 200,
            content_weight: 1.0,
            style_weight: 10.0,
            tv_weight: 0.01,
            content_layers: vec!["relu4_2".into()],
            style_layers: ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]
                .iter()
                .map(|l| (l.to_string(), 1.0))
                .collect(),
            preserve_color: false,
            init: Init::Content,
            seed: 0,
            optimizer: OptimizerKind::Lbfgs,
            learning_rate: None,
            scales: 0,
            preview_every: 0,
            style_scale: 1.0,
            start_from: None,
            temporal: None,
        }
    }
}

/// Coarser scales than this carry no useful structure.
const MIN_SCALE_SIDE: u32 = 16;
/// Upper bound for the optimised image's longer side (memory grows with its square).
pub const MAX_SIZE: u32 = 4096;

impl GatysConfig {
    /// Checks ranges; returns a clear message for the first bad value.
    pub fn validate(&self) -> Result<()> {
        if self.size < 16 || self.size > MAX_SIZE {
            return Err(Error::invalid(format!(
                "size must be between 16 and {MAX_SIZE} pixels, got {}",
                self.size
            )));
        }
        if self.steps == 0 {
            return Err(Error::invalid("steps must be at least 1"));
        }
        for (name, v) in [
            ("content weight", self.content_weight),
            ("style weight", self.style_weight),
            ("tv weight", self.tv_weight),
            ("style scale", self.style_scale),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::invalid(format!(
                    "{name} must be a non-negative number, got {v}"
                )));
            }
        }
        if self.style_scale < 0.05 || self.style_scale > 4.0 {
            return Err(Error::invalid("style scale must be between 0.05 and 4"));
        }
        if self
            .style_layers
            .iter()
            .any(|(_, w)| !w.is_finite() || *w < 0.0)
        {
            return Err(Error::invalid("style layer weights must be non-negative"));
        }
        if self.content_layers.is_empty() && self.style_layers.is_empty() {
            return Err(Error::invalid("no content or style layers given"));
        }
        if let Some(lr) = self.learning_rate {
            if !lr.is_finite() || lr <= 0.0 {
                return Err(Error::invalid("learning rate must be positive"));
            }
        }
        Ok(())
    }

    /// The longer side of each scale, coarsest first.
    pub fn scale_sides(&self) -> Vec<u32> {
        let count = if self.scales > 0 {
            self.scales
        } else {
            // One scale up to 512 px, then one more per doubling.
            let mut n = 1;
            let mut side = self.size;
            while side > 512 {
                side /= 2;
                n += 1;
            }
            n
        };
        let mut sides: Vec<u32> = (0..count)
            .map(|i| self.size >> (count - 1 - i))
            .filter(|&s| s >= MIN_SCALE_SIDE)
            .collect();
        if sides.is_empty() {
            sides.push(self.size);
        }
        sides
    }

    pub fn total_steps(&self) -> usize {
        self.steps * self.scale_sides().len()
    }
}

/// A style image and its share in a blend.
#[derive(Clone)]
pub struct StyleImage {
    pub image: Arc<RgbImage>,
    pub weight: f64,
}

/// The loss terms after weighting (`total` is their sum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Losses {
    pub content: f64,
    pub style: f64,
    pub tv: f64,
    pub total: f64,
}

/// What the optimisation reports after each step.
pub struct StepUpdate {
    pub step: usize,
    pub total_steps: usize,
    pub losses: Losses,
    /// Present every `preview_every` steps and after the last step of each scale.
    pub preview: Option<RgbImage>,
}

/// Receives progress and decides whether to go on.
pub trait Observer {
    /// Called after every step; an error (usually [`Error::Cancelled`]) stops the run.
    fn on_step(&mut self, update: StepUpdate) -> Result<()>;
    /// Polled before every loss evaluation, so cancellation takes effect within one step.
    fn cancelled(&self) -> bool {
        false
    }
}

/// The finished image and its numbers.
pub struct GatysOutput {
    pub image: RgbImage,
    pub losses: Losses,
    /// Style loss of the starting image at the final scale (before any optimisation there).
    pub initial_style_loss: f64,
    pub steps: usize,
    pub evaluations: usize,
}

/// Runs the optimisation. `cache` keeps content and style features between runs.
pub fn stylize(
    vgg: &Vgg,
    device: &Device,
    content: &RgbImage,
    styles: &[StyleImage],
    config: &GatysConfig,
    cache: &mut FeatureCache,
    observer: &mut dyn Observer,
) -> Result<GatysOutput> {
    stylize_in_regions(vgg, device, content, styles, config, None, cache, observer)
}

/// [`stylize`] with each style confined to its region: `regions` holds one weight map per
/// style at the result's size (`imaging::fit_size(content, config.size)`), resized to every
/// scale. Each region gets its own style at full weight (the styles' `weight`s only scale them
/// relative to the strongest); pixels no region covers get only the content and TV losses.
#[allow(clippy::too_many_arguments)]
pub fn stylize_in_regions(
    vgg: &Vgg,
    device: &Device,
    content: &RgbImage,
    styles: &[StyleImage],
    config: &GatysConfig,
    regions: Option<&RegionWeights>,
    cache: &mut FeatureCache,
    observer: &mut dyn Observer,
) -> Result<GatysOutput> {
    config.validate()?;
    if styles.is_empty() {
        return Err(Error::invalid("at least one style image is needed"));
    }
    let blend_total: f64 = styles.iter().map(|s| s.weight).sum();
    if styles
        .iter()
        .any(|s| !s.weight.is_finite() || s.weight < 0.0)
        || blend_total <= 0.0
    {
        return Err(Error::invalid(
            "blend weights must be non-negative and not all zero",
        ));
    }
    for layer in config
        .content_layers
        .iter()
        .chain(config.style_layers.iter().map(|(l, _)| l))
    {
        vgg.check_layer(layer)?;
    }
    if let Some(regions) = regions {
        check_regions(regions, styles.len())?;
    }
    // A blend shares one unit of style among the styles; regions give each its own region at
    // full weight, so there the weights are only relative (the strongest style gets 1).
    let weight_scale = match regions {
        Some(_) => styles.iter().map(|s| s.weight).fold(0.0, f64::max),
        None => blend_total,
    };

    let sides = config.scale_sides();
    let total_steps = config.steps * sides.len();
    let (final_w, final_h) = imaging::fit_size(content.width(), content.height(), config.size);

    // With colour preservation the optimisation sees only luminance.
    let content_for_vgg = if config.preserve_color {
        color::luminance(content)
    } else {
        content.clone()
    };
    let styles_for_vgg: Vec<StyleImage> = styles
        .iter()
        .map(|s| StyleImage {
            image: if config.preserve_color {
                Arc::new(color::matched_luminance(&s.image, content))
            } else {
                s.image.clone()
            },
            weight: s.weight / weight_scale,
        })
        .collect();

    let mut x: Option<Tensor> = None;
    let mut step = 0usize;
    let mut evaluations = 0usize;
    let mut last_losses = Losses::default();
    let mut initial_style_loss = f64::NAN;

    for (scale_index, &side) in sides.iter().enumerate() {
        let is_final = scale_index + 1 == sides.len();
        let (w, h) = if is_final {
            (final_w, final_h)
        } else {
            imaging::fit_size(content.width(), content.height(), side)
        };
        let content_scaled = imaging::resize_exact(&content_for_vgg, w, h);
        let problem = StyleProblem::with_regions(
            vgg,
            &content_scaled,
            &styles_for_vgg,
            config,
            regions,
            cache,
            device,
        )?;

        let start = match x.take() {
            None => initial_image(config, &content_scaled, device)?,
            Some(previous) => previous.upsample_bilinear2d(h as usize, w as usize, false)?,
        };
        if is_final {
            if observer.cancelled() {
                return Err(Error::Cancelled);
            }
            let (losses, _) = problem.evaluate(&start, false)?;
            initial_style_loss = losses.style;
        }

        let mut optimizer = make_optimizer(config.optimizer, config.learning_rate);
        let mut current = start;
        for _ in 0..config.steps {
            // A line search evaluates trial points too; remember each so the reported losses are
            // those of the accepted point.
            let mut evaluated: Vec<Losses> = Vec::new();
            let mut objective = |point: &Tensor| -> Result<(f64, Tensor)> {
                if observer.cancelled() {
                    return Err(Error::Cancelled);
                }
                let (losses, grad) = problem.evaluate(point, true)?;
                evaluated.push(losses);
                let grad = grad.ok_or_else(|| Error::invalid("no gradient"))?;
                Ok((losses.total, grad))
            };
            let report = optimizer.step(&mut current, &mut objective)?;
            evaluations += evaluated.len();
            if let Some(accepted) = evaluated.iter().min_by(|a, b| {
                (a.total - report.loss)
                    .abs()
                    .total_cmp(&(b.total - report.loss).abs())
            }) {
                last_losses = *accepted;
            }
            if config.optimizer == OptimizerKind::Adam {
                // Adam can push pixels out of range; L-BFGS is left alone so its history stays valid.
                current = current.clamp(0f32, 255f32)?;
            }
            step += 1;
            let last_of_scale = step.is_multiple_of(config.steps);
            let want_preview = last_of_scale
                || (config.preview_every > 0 && step.is_multiple_of(config.preview_every));
            let preview = if want_preview {
                Some(render(&current, content, config.preserve_color)?)
            } else {
                None
            };
            observer.on_step(StepUpdate {
                step,
                total_steps,
                losses: last_losses,
                preview,
            })?;
        }
        x = Some(current);
    }

    let x = x.ok_or_else(|| Error::invalid("no scale was optimised"))?;
    let image = render(&x, content, config.preserve_color)?;
    Ok(GatysOutput {
        image,
        losses: last_losses,
        initial_style_loss,
        steps: step,
        evaluations,
    })
}

/// The current image as RGB, with the photo's colours put back when preserving colour.
fn render(x: &Tensor, content: &RgbImage, preserve_color: bool) -> Result<RgbImage> {
    let image = imaging::from_tensor(x)?;
    if !preserve_color {
        return Ok(image);
    }
    let colors = imaging::resize_exact(content, image.width(), image.height());
    Ok(color::recombine(&image, &colors))
}

fn initial_image(config: &GatysConfig, content: &RgbImage, device: &Device) -> Result<Tensor> {
    if let Some(start) = &config.start_from {
        let start = imaging::resize_exact(start, content.width(), content.height());
        return imaging::to_tensor(&start, device);
    }
    match config.init {
        Init::Content => imaging::to_tensor(content, device),
        Init::Noise => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
            let normal = Normal::new(127.5f32, 50.0).map_err(|e| Error::invalid(e.to_string()))?;
            let n = 3 * content.width() as usize * content.height() as usize;
            let data: Vec<f32> = (0..n)
                .map(|_| normal.sample(&mut rng).clamp(0.0, 255.0))
                .collect();
            let shape = (1, 3, content.height() as usize, content.width() as usize);
            Ok(Tensor::from_vec(data, shape, device)?)
        }
    }
}

/// Gram matrices F·Fᵀ / (H·W) of an (N, C, H, W) activation, one per image: (N, C, C).
pub fn gram(features: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = features.dims4()?;
    let f = features.reshape((n, c, h * w))?;
    Ok((f.matmul(&f.t()?)? / (h * w) as f64)?)
}

/// Gram matrices of an (N, C, H, W) activation weighted by a mask `m` of H×W values
/// (any shape holding them, e.g. (1, 1, H, W)): `Σ_p m(p)² F(p)F(p)ᵀ / Σ_p m(p)²`, which is
/// [`gram`] for an all-ones mask, so a region's Gram is on the same scale as a painting's.
pub fn masked_gram(features: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = features.dims4()?;
    if mask.elem_count() != h * w {
        return Err(Error::invalid(format!(
            "a mask of {} values for a {w}x{h} feature map",
            mask.elem_count()
        )));
    }
    let mask = mask
        .to_dtype(features.dtype())?
        .to_device(features.device())?
        .reshape((1, 1, h, w))?;
    let mass = f64::from(
        mask.to_dtype(DType::F32)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f32>()?,
    );
    if mass < MIN_REGION_MASS {
        return Err(Error::invalid("the mask of a masked Gram matrix is empty"));
    }
    weighted_gram(features, &mask, mass)
}

/// [`masked_gram`] for a (1, 1, H, W) `mask` whose `Σ m²` is `mass`.
fn weighted_gram(features: &Tensor, mask: &Tensor, mass: f64) -> Result<Tensor> {
    let (n, c, h, w) = features.dims4()?;
    // Weighting F by m weights F·Fᵀ by m².
    let f = features.broadcast_mul(mask)?.reshape((n, c, h * w))?;
    Ok((f.matmul(&f.t()?)? / mass)?)
}

/// Below this `Σ m²` (in feature pixels) a region is empty at a layer: its Gram would be noise.
const MIN_REGION_MASS: f64 = 1e-4;
/// A style whose map covers less than this many pixels of a scale (`Σ m`) paints nowhere there.
const MIN_REGION_COVERAGE: f64 = 0.5;
/// VGG pools at most this many times before its deepest layer (relu5_x follows the 4th pool).
const MAX_POOLS: usize = 4;

/// Refuses region weights that do not fit the styles: one map per style, of the stated size.
fn check_regions(regions: &RegionWeights, styles: usize) -> Result<()> {
    if regions.maps.len() != styles {
        return Err(Error::invalid(format!(
            "{} region maps for {styles} styles: give one per style",
            regions.maps.len()
        )));
    }
    let pixels = regions.width as usize * regions.height as usize;
    if pixels == 0 {
        return Err(Error::invalid("region maps of zero width or height"));
    }
    if regions.maps.iter().any(|m| m.len() != pixels) {
        return Err(Error::invalid(format!(
            "a region map does not hold {}x{} values",
            regions.width, regions.height
        )));
    }
    if regions.maps.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::invalid(
            "a region map holds a value that is not a number",
        ));
    }
    Ok(())
}

/// One region's map at one feature resolution.
struct MaskLevel {
    width: usize,
    height: usize,
    /// (1, 1, H, W).
    mask: Tensor,
    /// `Σ m²`: the masked Gram's normaliser.
    mass: f64,
}

/// A region's map at the scale's size and after each 2×2 pool, finest first. Pooling the map
/// like VGG pools its features (average instead of max, odd rows and columns dropped the same
/// way) keeps every level the exact size and alignment of the feature maps it weights.
fn mask_pyramid(
    map: &[f32],
    width: usize,
    height: usize,
    device: &Device,
) -> Result<Vec<MaskLevel>> {
    let (mut w, mut h, mut values) = (width, height, map.to_vec());
    let mut levels = Vec::new();
    loop {
        let mass = values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let mask = Tensor::from_slice(&values, (1, 1, h, w), device)?;
        levels.push(MaskLevel {
            width: w,
            height: h,
            mask,
            mass,
        });
        if levels.len() > MAX_POOLS || w < 2 || h < 2 {
            return Ok(levels);
        }
        let (pw, ph) = (w / 2, h / 2);
        values = (0..ph * pw)
            .map(|i| {
                let (y, x) = (2 * (i / pw), 2 * (i % pw));
                let at = |yy: usize, xx: usize| values[yy * w + xx];
                (at(y, x) + at(y, x + 1) + at(y + 1, x) + at(y + 1, x + 1)) / 4.0
            })
            .collect();
        (w, h) = (pw, ph);
    }
}

/// Mean squared difference between neighbouring pixels (both directions, summed); callers
/// divide it by the photo's own so the weight is scale-free.
pub(crate) fn total_variation(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let dx = (x.narrow(3, 1, w - 1)? - x.narrow(3, 0, w - 1)?)?;
    let dy = (x.narrow(2, 1, h - 1)? - x.narrow(2, 0, h - 1)?)?;
    Ok((dx.sqr()?.mean_all()? + dy.sqr()?.mean_all()?)?)
}

/// One scale's fixed targets and the loss function over candidate images (public for benchmarks).
pub struct StyleProblem<'a> {
    vgg: &'a Vgg,
    config: &'a GatysConfig,
    layers: Vec<String>,
    content_targets: Vec<(String, Tensor, f64)>,
    style_targets: Vec<StyleTarget>,
    /// Each painting region's map at every feature resolution ([`mask_pyramid`]).
    regions: Vec<Vec<MaskLevel>>,
    tv_norm: f64,
    /// The temporal loss's target (0..255, as the image) and per-pixel weights (1, 1, H, W),
    /// already divided by the pixel count and scaled to 0..1 pixels.
    temporal: Option<(Tensor, Tensor)>,
}

/// One style layer's target Gram and the factor on its squared error.
struct StyleTarget {
    layer: String,
    target: Tensor,
    scale: f64,
    /// The index in [`StyleProblem::regions`] of the region it is matched in; `None`: the whole
    /// image.
    region: Option<usize>,
}

fn cache_key(kind: &str, image: &RgbImage, layers: &[String]) -> u64 {
    let mut h = DefaultHasher::new();
    kind.hash(&mut h);
    imaging::fingerprint(image).hash(&mut h);
    layers.hash(&mut h);
    h.finish()
}

/// ‖t‖², the normaliser of every loss term.
pub(crate) fn squared_norm(t: &Tensor) -> Result<f64> {
    Ok(f64::from(t.sqr()?.sum_all()?.to_scalar::<f32>()?))
}

impl<'a> StyleProblem<'a> {
    /// The problem of matching the photo's content and the styles' blend everywhere.
    pub fn new(
        vgg: &'a Vgg,
        content: &RgbImage,
        styles: &[StyleImage],
        config: &'a GatysConfig,
        cache: &mut FeatureCache,
        device: &Device,
    ) -> Result<Self> {
        Self::with_regions(vgg, content, styles, config, None, cache, device)
    }

    /// [`Self::new`], or with `regions` (one map per style, at any size: resized to `content`)
    /// each style matched in its own region alone, its `weight` multiplying its loss. Without
    /// regions the `weight`s blend the styles' Grams.
    #[allow(clippy::too_many_arguments)]
    pub fn with_regions(
        vgg: &'a Vgg,
        content: &RgbImage,
        styles: &[StyleImage],
        config: &'a GatysConfig,
        regions: Option<&RegionWeights>,
        cache: &mut FeatureCache,
        device: &Device,
    ) -> Result<Self> {
        let content_layers = config.content_layers.clone();
        let style_layers: Vec<String> =
            config.style_layers.iter().map(|(l, _)| l.clone()).collect();

        let content_features = cache
            .get_or_compute(cache_key("content", content, &content_layers), || {
                vgg.features(&imaging::to_tensor(content, device)?, &content_layers)
            })?;
        let mut content_targets = Vec::new();
        for layer in &content_layers {
            let target = content_features
                .get(layer)
                .ok_or_else(|| Error::invalid(format!("missing layer {layer}")))?
                .detach();
            let inv_norm = 1.0 / squared_norm(&target)?.max(1e-12);
            content_targets.push((layer.clone(), target, inv_norm));
        }

        let style_side =
            ((content.width().max(content.height()) as f64) * config.style_scale).round() as u32;
        // The Grams of the whole painting, cached: masks weight only the result's features.
        let mut style_grams = |style: &StyleImage| {
            let scaled = imaging::resize_longer_side(&style.image, style_side.max(16));
            cache.get_or_compute(cache_key("gram", &scaled, &style_layers), || {
                let feats = vgg.features(&imaging::to_tensor(&scaled, device)?, &style_layers)?;
                feats
                    .into_iter()
                    .map(|(name, f)| Ok((name, gram(&f)?)))
                    .collect()
            })
        };
        let missing = |layer: &str| Error::invalid(format!("missing layer {layer}"));
        let layer_weight_total: f64 = config.style_layers.iter().map(|(_, w)| w).sum();
        let layer_share = |weight: f64| {
            if layer_weight_total > 0.0 {
                weight / layer_weight_total
            } else {
                0.0
            }
        };
        let mut style_targets = Vec::new();
        let mut region_masks = Vec::new();
        match regions {
            None => {
                // Blend several styles by mixing their Gram matrices.
                let mut blended: HashMap<String, Tensor> = HashMap::new();
                for style in styles {
                    let grams = style_grams(style)?;
                    for layer in &style_layers {
                        let g = grams.get(layer).ok_or_else(|| missing(layer))?;
                        let weighted = (g * style.weight)?;
                        let sum = match blended.remove(layer) {
                            Some(acc) => (acc + weighted)?,
                            None => weighted,
                        };
                        blended.insert(layer.clone(), sum);
                    }
                }
                for (layer, weight) in &config.style_layers {
                    let target = blended
                        .remove(layer)
                        .ok_or_else(|| missing(layer))?
                        .detach();
                    let norm = squared_norm(&target)?.max(1e-12);
                    style_targets.push(StyleTarget {
                        layer: layer.clone(),
                        target,
                        scale: layer_share(*weight) / norm,
                        region: None,
                    });
                }
            }
            Some(regions) => {
                check_regions(regions, styles.len())?;
                let (w, h) = (content.width(), content.height());
                let regions = regions.resized(w, h);
                for (style, map) in styles.iter().zip(&regions.maps) {
                    let coverage: f64 = map.iter().map(|&v| f64::from(v)).sum();
                    if style.weight <= 0.0 || coverage < MIN_REGION_COVERAGE {
                        continue;
                    }
                    let grams = style_grams(style)?;
                    for (layer, weight) in &config.style_layers {
                        let target = grams.get(layer).ok_or_else(|| missing(layer))?.detach();
                        let norm = squared_norm(&target)?.max(1e-12);
                        style_targets.push(StyleTarget {
                            layer: layer.clone(),
                            target,
                            scale: style.weight * layer_share(*weight) / norm,
                            region: Some(region_masks.len()),
                        });
                    }
                    region_masks.push(mask_pyramid(map, w as usize, h as usize, device)?);
                }
            }
        }
        let tv_norm =
            f64::from(total_variation(&imaging::to_tensor(content, device)?)?.to_scalar::<f32>()?)
                .max(1e-6);

        let temporal = match &config.temporal {
            Some(t) if t.warped.dimensions() == content.dimensions() => {
                let (w, h) = content.dimensions();
                let pixels = (w * h) as usize;
                if t.reliable.len() != pixels {
                    return Err(Error::invalid(format!(
                        "temporal weights for {} pixels, the frame has {pixels}",
                        t.reliable.len()
                    )));
                }
                let scale = (t.weight / (3.0 * pixels as f64 * 255.0 * 255.0)) as f32;
                let weights: Vec<f32> = t.reliable.iter().map(|c| c * scale).collect();
                Some((
                    imaging::to_tensor(&t.warped, device)?,
                    Tensor::from_vec(weights, (1, 1, h as usize, w as usize), device)?,
                ))
            }
            _ => None,
        };
        let mut layers = content_layers;
        for l in style_layers {
            if !layers.contains(&l) {
                layers.push(l);
            }
        }
        Ok(Self {
            vgg,
            config,
            layers,
            content_targets,
            style_targets,
            regions: region_masks,
            tv_norm,
            temporal,
        })
    }

    /// Loss terms at `x` and, when asked, the gradient of the total with respect to `x`.
    ///
    /// The VGG runs without an autograd graph ([`Vgg::forward_tape`]) and [`Vgg::backward`]
    /// carries the feature maps' gradients back to the image; that skips autograd's per-node
    /// bookkeeping (a zeroed gradient buffer and an addition for every activation), a third of
    /// a step's time. The feature gradients are written out (see [`FeatureGrads`]); only the
    /// terms on the image itself (total variation, temporal) go through autograd.
    pub fn evaluate(&self, x: &Tensor, with_grad: bool) -> Result<(Losses, Option<Tensor>)> {
        let tape = self.vgg.forward_tape(x, &self.layers)?;
        let feats: HashMap<&str, &Tensor> = tape
            .features()
            .iter()
            .map(|(name, f)| (name.as_str(), f))
            .collect();
        let missing = |l: &str| Error::invalid(format!("missing layer {l}"));
        let c = self.config;
        let mut grads = FeatureGrads::new(with_grad);

        let mut content = 0.0;
        for (layer, target, inv_norm) in &self.content_targets {
            let f = *feats.get(layer.as_str()).ok_or_else(|| missing(layer))?;
            let diff = (f - target)?;
            content += scalar(&diff.sqr()?.sum_all()?)? * inv_norm;
            // d/df of w·n·Σ(f − t)² is 2·w·n·(f − t).
            grads.add(layer, || Ok((&diff * (2.0 * inv_norm * c.content_weight))?))?;
        }
        let mut style = 0.0;
        for t in &self.style_targets {
            let f = *feats
                .get(t.layer.as_str())
                .ok_or_else(|| missing(&t.layer))?;
            let (n, ch, fh, fw) = f.dims4()?;
            // Term s·‖G − A‖² with G = Fm·Fmᵀ/mass, Fm = F (whole image, mass = pixels) or F
            // weighted by the region's mask m; G is symmetric, so d/dF = s·(4/mass)·(G − A)·Fm
            // (times m for a region): one matmul, where autograd ran two and added them.
            let (weighted, mask, mass, scale) = match t.region {
                None => (f.clone(), None, (fh * fw) as f64, t.scale),
                Some(region) => {
                    let level = self
                        .regions
                        .get(region)
                        .and_then(|levels| levels.iter().find(|l| (l.height, l.width) == (fh, fw)))
                        .ok_or_else(|| {
                            Error::invalid(format!(
                                "no region mask of {fw}x{fh} for layer {}",
                                t.layer
                            ))
                        })?;
                    if level.mass < MIN_REGION_MASS {
                        continue;
                    }
                    // Weighting the term by the region's share of the layer gives every pixel
                    // inside it the pull of a whole-image style: the masked Gram divides by the
                    // region's mass, which alone would make small regions pull ever harder.
                    let share = level.mass / (fh * fw) as f64;
                    let weighted = f.broadcast_mul(&level.mask)?;
                    (weighted, Some(&level.mask), level.mass, t.scale * share)
                }
            };
            let fm = weighted.reshape((n, ch, fh * fw))?;
            let diff = ((fm.matmul(&fm.t()?)? / mass)? - &t.target)?;
            style += scalar(&diff.sqr()?.sum_all()?)? * scale;
            grads.add(&t.layer, || {
                let coef = 4.0 * scale * c.style_weight / mass;
                let g = (diff * coef)?.matmul(&fm)?.reshape((n, ch, fh, fw))?;
                Ok(match mask {
                    Some(m) => g.broadcast_mul(m)?,
                    None => g,
                })
            })?;
        }

        // The terms on the image itself, through autograd (image-sized, cheap).
        let image = if with_grad {
            Some(Var::from_tensor(x)?)
        } else {
            None
        };
        let input = image
            .as_ref()
            .map(|v| v.as_tensor().clone())
            .unwrap_or_else(|| x.detach());
        let tv_w = ((total_variation(&input)? / self.tv_norm)? * c.tv_weight)?;
        let mut on_image = tv_w.clone();
        if let Some((warped, weights)) = &self.temporal {
            // Reaches the image directly, as the total variation does.
            let term = (&input - warped)?
                .sqr()?
                .broadcast_mul(weights)?
                .sum_all()?;
            on_image = (on_image + term)?;
        }

        let (content, style, tv) = (
            content * c.content_weight,
            style * c.style_weight,
            scalar(&tv_w)?,
        );
        let losses = Losses {
            content,
            style,
            tv,
            total: content + style + scalar(&on_image)?,
        };
        let grad = match image {
            Some(image) => {
                let through_vgg = self.vgg.backward(&tape, &grads.into_map())?;
                // The total-variation and temporal terms reach the image directly.
                let direct = on_image.backward()?.get(image.as_tensor()).cloned();
                match (through_vgg, direct) {
                    (Some(a), Some(b)) => Some(ops::add(&a, &b)?),
                    (Some(g), None) | (None, Some(g)) => Some(g),
                    (None, None) => return Err(Error::invalid("image received no gradient")),
                }
            }
            None => None,
        };
        Ok((losses, grad))
    }
}

/// The value of a one-element tensor.
fn scalar(t: &Tensor) -> Result<f64> {
    Ok(f64::from(t.to_dtype(DType::F32)?.to_scalar::<f32>()?))
}

/// The loss's gradient with respect to each VGG feature map, summed over the terms on it,
/// written out by hand: autograd's backward of a Gram matrix ran two matmuls and added their
/// 67 MB results at relu1_1 (512²), and the addition alone was about 9 % of a step.
struct FeatureGrads {
    wanted: bool,
    by_layer: HashMap<String, Tensor>,
}

impl FeatureGrads {
    fn new(wanted: bool) -> Self {
        Self {
            wanted,
            by_layer: HashMap::new(),
        }
    }

    /// Adds a term's gradient on `layer` (built only when gradients are wanted).
    fn add(&mut self, layer: &str, grad: impl FnOnce() -> Result<Tensor>) -> Result<()> {
        if !self.wanted {
            return Ok(());
        }
        let grad = grad()?;
        let sum = match self.by_layer.remove(layer) {
            Some(previous) => ops::add(&previous, &grad)?,
            None => grad,
        };
        self.by_layer.insert(layer.to_string(), sum);
        Ok(())
    }

    fn into_map(self) -> HashMap<String, Tensor> {
        self.by_layer
    }
}
