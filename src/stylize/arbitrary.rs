//! Any painting in one pass (universal style transfer): the photo is encoded by the VGG16, its
//! features are given the painting's statistics by a feature transform, and a decoder trained
//! only to invert VGG features ([`crate::nn::decoder`]) paints the result.
//!
//! - AdaIN (Huang & Belongie 2017): each channel gets the painting's mean and standard
//!   deviation, at relu4_1.
//! - WCT (Li et al. 2017): whitening (the photo's covariance removed) and colouring (the
//!   painting's put in), from symmetric eigendecompositions, coarse to fine over relu4_1,
//!   relu3_1, relu2_1 and relu1_1: each level decodes, and the next re-encodes that result.
//!
//! Strength blends the photo's and the transformed features (in feature space, not a pixel
//! fade). Several paintings blend as a weighted mean of their statistics, and a folder of works
//! gives statistics pooled over all of them (a personal style from a collection).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use crate::error::{Error, Result};
use crate::imaging;
use crate::nn::decoder;
pub use crate::nn::decoder::Decoders;
use crate::nn::layers::pad_end_to;
use crate::nn::vgg::Vgg;
use crate::stylize::regions::RegionWeights;
use crate::stylize::tiles;

/// The levels of the WCT cascade, coarse to fine; AdaIN uses the first.
pub const LEVELS: [&str; 4] = ["relu4_1", "relu3_1", "relu2_1", "relu1_1"];
/// Largest photo WCT paints: in one piece the cascade holds relu1_1 features three times over
/// (about 1.4 GB per megapixel measured at 1024²); tiles ([`stylize_tiled`]) bound that, but
/// the tiled cascade's own memory above this size is not measured yet, so bigger photos are
/// downscaled. AdaIN runs in tiles up to the input limit.
pub const MAX_ARBITRARY_PIXELS: u64 = 6_000_000;

/// The longer side the arbitrary method with `transform` runs at for a `width`×`height` photo.
pub fn arbitrary_side(
    width: u32,
    height: u32,
    requested: Option<u32>,
    transform: FeatureTransform,
) -> u32 {
    let limit = match transform {
        FeatureTransform::Adain => crate::stylize::network::MAX_NETWORK_PIXELS,
        FeatureTransform::Wct => MAX_ARBITRARY_PIXELS,
    };
    crate::stylize::network::side_within(width, height, requested, limit)
}

/// Longer side the paintings are encoded at (their brush strokes' scale in the result).
pub const DEFAULT_STYLE_SIDE: u32 = 512;
/// Eigenvalues below this share of the largest are dropped when whitening and colouring: the
/// covariance of a flat or tiny image is singular, and 1/sqrt of ~0 would blow noise up.
const EIGEN_FLOOR: f64 = 1e-5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureTransform {
    /// Channel means and standard deviations at relu4_1: fastest.
    #[default]
    Adain,
    /// Whitening and colouring, a cascade over four levels: the painting's full covariance.
    Wct,
}

impl FeatureTransform {
    pub fn name(self) -> &'static str {
        match self {
            FeatureTransform::Adain => "adain",
            FeatureTransform::Wct => "wct",
        }
    }

    /// The VGG layers this transform works at, coarse to fine.
    pub fn levels(self) -> &'static [&'static str] {
        match self {
            FeatureTransform::Adain => &LEVELS[..1],
            FeatureTransform::Wct => &LEVELS,
        }
    }
}

/// First and second moments of a feature map, pooled over any number of images: enough for
/// AdaIN (the diagonal) and WCT (the full covariance).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    pub channels: usize,
    pub mean: Vec<f64>,
    /// Row-major `channels × channels` covariance (biased).
    pub covariance: Vec<f64>,
}

/// Sums that pool into [`FeatureStats`].
#[derive(Debug, Clone)]
struct Moments {
    count: f64,
    sum: Vec<f64>,
    outer: Vec<f64>,
}

impl Moments {
    fn new(channels: usize) -> Self {
        Self {
            count: 0.0,
            sum: vec![0.0; channels],
            outer: vec![0.0; channels * channels],
        }
    }

    /// Adds the pixels of a (1, C, h, w) feature map.
    fn add(&mut self, features: &Tensor) -> Result<()> {
        let (_, c, h, w) = features.dims4()?;
        let x = features.reshape((c, h * w))?.to_dtype(DType::F32)?;
        let sum = x.sum(1)?.to_vec1::<f32>()?;
        let outer = x.matmul(&x.t()?)?.flatten_all()?.to_vec1::<f32>()?;
        for (acc, v) in self.sum.iter_mut().zip(sum) {
            *acc += f64::from(v);
        }
        for (acc, v) in self.outer.iter_mut().zip(outer) {
            *acc += f64::from(v);
        }
        self.count += (h * w) as f64;
        Ok(())
    }

    fn stats(&self) -> FeatureStats {
        let c = self.sum.len();
        let n = self.count.max(1.0);
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let mut covariance = vec![0.0; c * c];
        for i in 0..c {
            for j in 0..c {
                covariance[i * c + j] = self.outer[i * c + j] / n - mean[i] * mean[j];
            }
        }
        FeatureStats {
            channels: c,
            mean,
            covariance,
        }
    }
}

/// A painting's (or a collection's) statistics at every cascade level.
pub type StyleStats = HashMap<String, FeatureStats>;

/// The statistics of `works` pooled together (one painting, or a collection), each encoded at
/// its longer side `side`.
pub fn style_stats(
    vgg: &Vgg,
    works: &[RgbImage],
    side: u32,
    device: &Device,
) -> Result<StyleStats> {
    if works.is_empty() {
        return Err(Error::invalid("no style image"));
    }
    let layers: Vec<String> = LEVELS.iter().map(|l| l.to_string()).collect();
    let mut moments: HashMap<String, Moments> = HashMap::new();
    for work in works {
        let work = imaging::resize_longer_side(work, side);
        if work.width() < 8 || work.height() < 8 {
            return Err(Error::invalid(format!(
                "a style image of {}x{} is too small (at least 8x8)",
                work.width(),
                work.height()
            )));
        }
        let features = vgg.features(&imaging::to_tensor(&work, device)?, &layers)?;
        for (layer, f) in features {
            let c = f.dim(1)?;
            moments
                .entry(layer)
                .or_insert_with(|| Moments::new(c))
                .add(&f)?;
        }
    }
    Ok(moments
        .into_iter()
        .map(|(layer, m)| (layer, m.stats()))
        .collect())
}

/// The weighted mean of several styles' statistics (weights are normalised to sum to 1): a
/// blend of paintings in feature-statistics space.
pub fn blend_stats(styles: &[(&StyleStats, f64)]) -> Result<StyleStats> {
    let total: f64 = styles.iter().map(|(_, w)| *w).sum();
    if styles.is_empty() || !(total.is_finite() && total > 0.0) {
        return Err(Error::invalid(
            "style blend weights must add up to more than 0",
        ));
    }
    if styles.iter().any(|(_, w)| !(w.is_finite() && *w >= 0.0)) {
        return Err(Error::invalid("style blend weights must be 0 or more"));
    }
    let mut out = StyleStats::new();
    for layer in LEVELS {
        let mut acc: Option<FeatureStats> = None;
        for (stats, weight) in styles {
            let Some(s) = stats.get(layer) else { continue };
            let w = weight / total;
            let a = acc.get_or_insert_with(|| FeatureStats {
                channels: s.channels,
                mean: vec![0.0; s.channels],
                covariance: vec![0.0; s.channels * s.channels],
            });
            for (x, y) in a.mean.iter_mut().zip(&s.mean) {
                *x += w * y;
            }
            for (x, y) in a.covariance.iter_mut().zip(&s.covariance) {
                *x += w * y;
            }
        }
        if let Some(a) = acc {
            out.insert(layer.to_string(), a);
        }
    }
    Ok(out)
}

/// AdaIN: `features` (1, C, h, w) with each channel's mean and standard deviation replaced by
/// the style's.
pub fn adain(features: &Tensor, style: &FeatureStats) -> Result<Tensor> {
    let (_, c, h, w) = features.dims4()?;
    check_channels(c, style)?;
    let x = features.reshape((c, h * w))?;
    let mean = x.mean_keepdim(1)?;
    let centered = x.broadcast_sub(&mean)?;
    let std = (centered.sqr()?.mean_keepdim(1)? + 1e-5)?.sqrt()?;
    let style_std: Vec<f32> = (0..c)
        .map(|i| style.covariance[i * c + i].max(0.0).sqrt() as f32)
        .collect();
    let style_mean: Vec<f32> = style.mean.iter().map(|&m| m as f32).collect();
    let device = features.device();
    let style_std = Tensor::from_vec(style_std, (c, 1), device)?;
    let style_mean = Tensor::from_vec(style_mean, (c, 1), device)?;
    let y = centered
        .broadcast_div(&std)?
        .broadcast_mul(&style_std)?
        .broadcast_add(&style_mean)?;
    Ok(y.reshape((1, c, h, w))?)
}

/// WCT: `features` (1, C, h, w) whitened (their own covariance removed) and coloured with the
/// style's covariance and mean.
pub fn wct(features: &Tensor, style: &FeatureStats) -> Result<Tensor> {
    let (_, c, _, _) = features.dims4()?;
    let mut content = Moments::new(c);
    content.add(features)?;
    wct_with(features, &content.stats(), style)
}

/// [`wct`] with the photo's statistics `content` taken elsewhere (over a whole tiled photo).
pub fn wct_with(features: &Tensor, content: &FeatureStats, style: &FeatureStats) -> Result<Tensor> {
    let (_, c, h, w) = features.dims4()?;
    check_channels(c, style)?;
    check_channels(c, content)?;
    let whiten = matrix_power(&content.covariance, c, -0.5);
    let color = matrix_power(&style.covariance, c, 0.5);
    let transform = color * whiten;
    let device = features.device();
    let t: Vec<f32> = transform
        .transpose()
        .as_slice()
        .iter()
        .map(|&v| v as f32)
        .collect();
    // nalgebra is column-major: the transposed storage is the row-major matrix.
    let t = Tensor::from_vec(t, (c, c), device)?;
    let content_mean: Vec<f32> = content.mean.iter().map(|&m| m as f32).collect();
    let style_mean: Vec<f32> = style.mean.iter().map(|&m| m as f32).collect();
    let x = features
        .reshape((c, h * w))?
        .broadcast_sub(&Tensor::from_vec(content_mean, (c, 1), device)?)?;
    let y = t
        .matmul(&x)?
        .broadcast_add(&Tensor::from_vec(style_mean, (c, 1), device)?)?;
    Ok(y.reshape((1, c, h, w))?)
}

/// [`adain`] with the photo's channel means and variances (the diagonal of `content`) taken
/// elsewhere (over a whole tiled photo), as one per-channel scale and shift.
pub fn adain_with(
    features: &Tensor,
    content: &FeatureStats,
    style: &FeatureStats,
) -> Result<Tensor> {
    let (_, c, _, _) = features.dims4()?;
    check_channels(c, style)?;
    check_channels(c, content)?;
    let mut scale = Vec::with_capacity(c);
    let mut shift = Vec::with_capacity(c);
    for i in 0..c {
        let std = (content.covariance[i * c + i].max(0.0) + 1e-5).sqrt();
        let a = style.covariance[i * c + i].max(0.0).sqrt() / std;
        scale.push(a as f32);
        shift.push((style.mean[i] - content.mean[i] * a) as f32);
    }
    Ok(crate::nn::ops::channel_affine(
        features, &scale, &shift, false,
    )?)
}

/// Channel means and variances from per-channel (sum, sum of squares) over `count` pixels,
/// as [`FeatureStats`] with a diagonal covariance (all AdaIN needs).
fn diagonal_stats(count: f64, sums: &[(f64, f64)]) -> FeatureStats {
    let c = sums.len();
    let n = count.max(1.0);
    let mean: Vec<f64> = sums.iter().map(|(s, _)| s / n).collect();
    let mut covariance = vec![0.0; c * c];
    for (i, ((_, sq), m)) in sums.iter().zip(&mean).enumerate() {
        covariance[i * c + i] = (sq / n - m * m).max(0.0);
    }
    FeatureStats {
        channels: c,
        mean,
        covariance,
    }
}

/// Activation memory of the method in one piece per photo pixel (the WCT cascade at relu1_1,
/// see [`MAX_ARBITRARY_PIXELS`]).
const BYTES_PER_PIXEL: u64 = 1400;

/// Margin of every tile (photo pixels): the VGG encoder's receptive field to relu4_1 (about
/// 40 px with its pools) plus the decoder's back (about as much), on the pools' 8 px grid. A
/// tile's core with this margin is the untiled result (tested).
pub const TILE_HALO: u32 = 96;

/// Core side of the tiles for a `width`×`height` photo with the memory available now; `None`
/// when it fits in one piece.
pub fn tile_core_for(width: u32, height: u32) -> Option<u32> {
    let side = tiles::tile_side_for(tiles::tile_budget_bytes(), BYTES_PER_PIXEL, 8);
    if u64::from(width) * u64::from(height) <= u64::from(side) * u64::from(side) {
        return None;
    }
    Some(side.saturating_sub(2 * TILE_HALO).max(2 * TILE_HALO) / 8 * 8)
}

/// [`stylize`] in tiles of at most `core`×`core` pixels (plus [`TILE_HALO`]), for photos too
/// large for one piece. At each level the tiles run twice: first to sum the photo's feature
/// statistics over their cores (channel moments for AdaIN, the covariance for WCT: the whole
/// photo's, as the transforms need), then to transform with them and decode each core. The
/// result matches the untiled one (tested: 0.0001 levels AdaIN, 0.01 WCT).
/// `observe(done, total)` counts tile runs.
#[allow(clippy::too_many_arguments)]
pub fn stylize_tiled(
    vgg: &Vgg,
    decoders: &Decoders,
    content: &RgbImage,
    style: &StyleStats,
    config: ArbitraryConfig,
    device: &Device,
    core: u32,
    mut observe: impl FnMut(usize, usize) -> Result<()>,
) -> Result<RgbImage> {
    check_input(content, config)?;
    let (width, height) = content.dimensions();
    let levels = config.transform.levels();
    // Each level pads the image to its own pools' multiple, as the untiled run does (the
    // padding counts in the statistics: padding every level to 8 put WCT 5.6 levels off), and
    // tiles it on that grid.
    let mut grids = Vec::with_capacity(levels.len());
    for &layer in levels {
        let multiple = 1u32 << decoder::layer_pools(layer)?;
        let padded = (
            width.div_ceil(multiple) * multiple,
            height.div_ceil(multiple) * multiple,
        );
        let grid = tiles::grid(padded.0, padded.1, core.max(8), TILE_HALO, multiple);
        grids.push((padded, grid));
    }
    let total: usize = grids.iter().map(|(_, grid)| 2 * grid.len()).sum();
    let mut done = 0;
    // Between levels the image stays in floats, as in the untiled cascade.
    let (w, h) = (width as usize, height as usize);
    let mut image = imaging::to_tensor(content, device)?;
    for (&layer, ((padded_w, padded_h), grid)) in levels.iter().zip(&grids) {
        let style_stats = style
            .get(layer)
            .ok_or_else(|| Error::invalid(format!("no style statistics at {layer}")))?;
        let layer_name = layer.to_string();
        let scale = 1usize << decoder::layer_pools(layer)?;
        // Extended once to the tiles' grid, as the untiled run pads (reflection).
        let padded = pad_end_to(&image, 2, *padded_h as usize)?;
        let padded = pad_end_to(&padded, 3, *padded_w as usize)?;
        drop(image);
        let encode = |tile: &tiles::Tile| -> Result<Tensor> {
            let r = tile.input;
            let x = padded
                .narrow(2, r.y as usize, r.height as usize)?
                .narrow(3, r.x as usize, r.width as usize)?
                .contiguous()?;
            vgg.features(&x, std::slice::from_ref(&layer_name))?
                .remove(layer)
                .ok_or_else(|| Error::invalid(format!("the VGG gave no {layer}")))
        };
        // The tile's core in feature pixels.
        let core_of = |features: &Tensor, tile: &tiles::Tile| -> Result<Tensor> {
            let top = (tile.core.y - tile.input.y) as usize / scale;
            let left = (tile.core.x - tile.input.x) as usize / scale;
            let rows = tile.core.height as usize / scale;
            let cols = tile.core.width as usize / scale;
            Ok(features.narrow(2, top, rows)?.narrow(3, left, cols)?)
        };

        // Pass 1: the photo's statistics at this level, over every tile's core: channel means
        // and variances for AdaIN, the full covariance for WCT.
        let mut diagonal: Option<(f64, Vec<(f64, f64)>)> = None;
        let mut moments: Option<Moments> = None;
        for tile in grid {
            let part = core_of(&encode(tile)?, tile)?;
            let (_, c, ph, pw) = part.dims4()?;
            match config.transform {
                FeatureTransform::Adain => {
                    let sums = crate::nn::ops::window_sums(&part, 0..ph, 0..pw)?;
                    let (count, acc) = diagonal.get_or_insert_with(|| (0.0, vec![(0.0, 0.0); c]));
                    *count += (ph * pw) as f64;
                    for (a, s) in acc.iter_mut().zip(sums) {
                        a.0 += s.0;
                        a.1 += s.1;
                    }
                }
                FeatureTransform::Wct => moments
                    .get_or_insert_with(|| Moments::new(c))
                    .add(&part.contiguous()?)?,
            }
            done += 1;
            observe(done, total)?;
        }
        let content_stats = match (diagonal, moments) {
            (Some((count, sums)), _) => diagonal_stats(count, &sums),
            (None, Some(m)) => m.stats(),
            (None, None) => return Err(Error::invalid("the tiles covered no pixels")),
        };

        // Pass 2: transform with the whole photo's statistics, decode, keep each core.
        let alpha = f64::from(config.strength);
        let mut next = vec![0f32; 3 * w * h];
        for tile in grid {
            let features = encode(tile)?;
            let transformed = match config.transform {
                FeatureTransform::Adain => adain_with(&features, &content_stats, style_stats)?,
                FeatureTransform::Wct => wct_with(&features, &content_stats, style_stats)?,
            };
            let mixed = ((transformed * alpha)? + (features * (1.0 - alpha))?)?;
            let decoded = decoders
                .get(layer)?
                .forward(&mixed)?
                .clamp(0f32, 255f32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            paste_planar(&mut next, (w, h), &decoded, *tile);
            done += 1;
            observe(done, total)?;
        }
        image = Tensor::from_vec(next, (1, 3, h, w), device)?;
    }
    imaging::from_tensor(&image)
}

/// Copies the core of `tile` from `tile_output` (3 planes of the tile's input size) into
/// `out` (3 planes of `size`), clipped to `size`.
fn paste_planar(out: &mut [f32], (w, h): (usize, usize), tile_output: &[f32], tile: tiles::Tile) {
    let (iw, ih) = (tile.input.width as usize, tile.input.height as usize);
    let (dx, dy) = (
        (tile.core.x - tile.input.x) as usize,
        (tile.core.y - tile.input.y) as usize,
    );
    let (x0, y0) = (tile.core.x as usize, tile.core.y as usize);
    let cols = (tile.core.width as usize).min(w.saturating_sub(x0));
    let rows = (tile.core.height as usize).min(h.saturating_sub(y0));
    for c in 0..3 {
        for r in 0..rows {
            let from = c * iw * ih + (dy + r) * iw + dx;
            let to = c * w * h + (y0 + r) * w + x0;
            out[to..to + cols].copy_from_slice(&tile_output[from..from + cols]);
        }
    }
}

/// `m^power` of a symmetric positive semi-definite `c × c` matrix, through its
/// eigendecomposition, with eigenvalues under [`EIGEN_FLOOR`] × the largest dropped.
fn matrix_power(m: &[f64], c: usize, power: f64) -> nalgebra::DMatrix<f64> {
    let matrix = nalgebra::DMatrix::from_row_slice(c, c, m);
    // Exact symmetry: rounding in the sums can leave it a hair off.
    let matrix = (&matrix + matrix.transpose()) * 0.5;
    let eigen = matrix.symmetric_eigen();
    let largest = eigen.eigenvalues.iter().cloned().fold(0.0f64, f64::max);
    let floor = largest * EIGEN_FLOOR;
    let scaled: Vec<f64> = eigen
        .eigenvalues
        .iter()
        .map(|&v| {
            if v > floor && v > 0.0 {
                v.powf(power)
            } else {
                0.0
            }
        })
        .collect();
    let vectors = &eigen.eigenvectors;
    let diagonal = nalgebra::DMatrix::from_diagonal(&nalgebra::DVector::from_vec(scaled));
    vectors * diagonal * vectors.transpose()
}

fn check_channels(c: usize, style: &FeatureStats) -> Result<()> {
    if style.channels != c {
        return Err(Error::invalid(format!(
            "style statistics have {} channels, the features {c}",
            style.channels
        )));
    }
    Ok(())
}

fn check_input(content: &RgbImage, config: ArbitraryConfig) -> Result<()> {
    if !(0.0..=1.0).contains(&config.strength) {
        return Err(Error::invalid(format!(
            "strength must be between 0 and 1, got {}",
            config.strength
        )));
    }
    let (w, h) = content.dimensions();
    if w < 8 || h < 8 {
        return Err(Error::invalid(format!(
            "a photo of {w}x{h} is too small for the arbitrary method (at least 8x8)"
        )));
    }
    Ok(())
}

/// What one arbitrary stylisation is asked.
#[derive(Debug, Clone, Copy)]
pub struct ArbitraryConfig {
    pub transform: FeatureTransform,
    /// 0 keeps the photo's features, 1 takes the transformed ones; blended in feature space.
    pub strength: f32,
}

/// Paints `content` with `style` (already blended, see [`blend_stats`]), at the photo's size.
/// `observe` is called after each level with (done, total) so a UI can show progress and stop.
pub fn stylize(
    vgg: &Vgg,
    decoders: &Decoders,
    content: &RgbImage,
    style: &StyleStats,
    config: ArbitraryConfig,
    device: &Device,
    mut observe: impl FnMut(usize, usize) -> Result<()>,
) -> Result<RgbImage> {
    check_input(content, config)?;
    let (w, h) = (content.width() as usize, content.height() as usize);
    let levels = config.transform.levels();
    let mut image = imaging::to_tensor(content, device)?;
    for (index, &layer) in levels.iter().enumerate() {
        // The VGG halves the image at each pool: pad (reflection) to a multiple, crop after.
        let multiple = 1usize << decoder::layer_pools(layer)?;
        let padded = pad_end_to(&image, 2, h.div_ceil(multiple) * multiple)?;
        let padded = pad_end_to(&padded, 3, w.div_ceil(multiple) * multiple)?;
        let layer_name = layer.to_string();
        let features = vgg
            .features(&padded, std::slice::from_ref(&layer_name))?
            .remove(layer)
            .ok_or_else(|| Error::invalid(format!("the VGG gave no {layer}")))?;
        let stats = style
            .get(layer)
            .ok_or_else(|| Error::invalid(format!("no style statistics at {layer}")))?;
        let transformed = match config.transform {
            FeatureTransform::Adain => adain(&features, stats)?,
            FeatureTransform::Wct => wct(&features, stats)?,
        };
        let alpha = f64::from(config.strength);
        let mixed = ((transformed * alpha)? + (features * (1.0 - alpha))?)?;
        let decoded = decoders.get(layer)?.forward(&mixed)?;
        // Clamped between levels: the next encoder expects pixels.
        image = decoded
            .narrow(2, 0, h)?
            .narrow(3, 0, w)?
            .clamp(0f32, 255f32)?;
        observe(index + 1, levels.len())?;
    }
    imaging::from_tensor(&image)
}

/// Paints each style of `styles` in its region (`weights`: one map per style, at `content`'s
/// size) and returns the styles' image everywhere; the engine puts the photo back where no
/// style paints.
#[allow(clippy::too_many_arguments)]
pub fn stylize_in_regions(
    vgg: &Vgg,
    decoders: &Decoders,
    content: &RgbImage,
    styles: &[&StyleStats],
    weights: &RegionWeights,
    config: ArbitraryConfig,
    device: &Device,
    mut observe: impl FnMut(usize, usize) -> Result<()>,
) -> Result<RgbImage> {
    // TODO(feature-space regions): one pass with the transform per region.
    let levels = config.transform.levels().len();
    let total = levels * styles.len();
    let mut painted = Vec::with_capacity(styles.len());
    for (index, style) in styles.iter().enumerate() {
        painted.push(stylize(
            vgg,
            decoders,
            content,
            style,
            config,
            device,
            |done, _| observe(index * levels + done, total),
        )?);
    }
    let shares = RegionWeights {
        maps: weights.style_shares(),
        ..weights.clone()
    };
    let refs: Vec<&RgbImage> = painted.iter().collect();
    shares.composite(content, &refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_features(c: usize, n: usize, seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // Correlated channels with distinct scales and offsets.
        let base: Vec<f32> = (0..c * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut v = vec![0f32; c * n];
        for i in 0..c {
            for j in 0..n {
                v[i * n + j] = base[i * n + j] * (i + 1) as f32
                    + 0.5 * base[((i + 1) % c) * n + j]
                    + 3.0 * i as f32;
            }
        }
        Tensor::from_vec(v, (1, c, 1, n), &Device::Cpu).unwrap_or_else(|_| unreachable!())
    }

    fn stats_of(t: &Tensor) -> FeatureStats {
        let mut m = Moments::new(t.dim(1).unwrap_or(0));
        m.add(t).unwrap_or_else(|e| panic!("{e}"));
        m.stats()
    }

    #[test]
    fn wct_gives_the_style_covariance() -> Result<()> {
        let content = random_features(6, 2000, 1);
        let style = stats_of(&random_features(6, 3000, 2));
        let out = stats_of(&wct(&content, &style)?);
        for (a, b) in out.covariance.iter().zip(&style.covariance) {
            assert!((a - b).abs() < 1e-2 * (1.0 + b.abs()), "{a} vs {b}");
        }
        for (a, b) in out.mean.iter().zip(&style.mean) {
            assert!((a - b).abs() < 1e-3 * (1.0 + b.abs()), "{a} vs {b}");
        }
        Ok(())
    }

    #[test]
    fn adain_gives_the_style_means_and_deviations() -> Result<()> {
        let content = random_features(4, 1000, 3);
        let style = stats_of(&random_features(4, 1000, 4));
        let out = stats_of(&adain(&content, &style)?);
        for i in 0..4 {
            assert!((out.mean[i] - style.mean[i]).abs() < 1e-3);
            let (a, b) = (out.covariance[i * 4 + i], style.covariance[i * 4 + i]);
            assert!((a - b).abs() < 1e-2 * b, "{a} vs {b}");
        }
        Ok(())
    }

    #[test]
    fn blends_are_weighted_means_and_pooling_is_exact() -> Result<()> {
        let a = random_features(3, 500, 5);
        let b = random_features(3, 500, 6);
        let mut pooled = Moments::new(3);
        pooled.add(&a)?;
        pooled.add(&b)?;
        let joint = stats_of(&Tensor::cat(&[&a, &b], 3)?);
        for (x, y) in pooled.stats().covariance.iter().zip(&joint.covariance) {
            assert!((x - y).abs() < 1e-3 * (1.0 + y.abs()));
        }
        let sa = StyleStats::from([("relu4_1".to_string(), stats_of(&a))]);
        let sb = StyleStats::from([("relu4_1".to_string(), stats_of(&b))]);
        let blend = blend_stats(&[(&sa, 3.0), (&sb, 1.0)])?;
        let m = &blend["relu4_1"].mean;
        assert!(
            (m[0] - (0.75 * sa["relu4_1"].mean[0] + 0.25 * sb["relu4_1"].mean[0])).abs() < 1e-9
        );
        assert!(blend_stats(&[(&sa, 0.0)]).is_err());
        assert!(blend_stats(&[(&sa, -1.0), (&sb, 2.0)]).is_err());
        Ok(())
    }

    #[test]
    fn singular_covariances_do_not_blow_up() -> Result<()> {
        // A flat style: zero covariance. The result is the style's mean, finite.
        let content = random_features(4, 100, 7);
        let flat = Tensor::ones((1, 4, 1, 100), DType::F32, &Device::Cpu)?;
        let out = wct(&content, &stats_of(&flat))?;
        let values = out.flatten_all()?.to_vec1::<f32>()?;
        assert!(values
            .iter()
            .all(|v| v.is_finite() && (v - 1.0).abs() < 1e-3));
        Ok(())
    }
}
