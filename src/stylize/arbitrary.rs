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
//!
//! Regions (local style, [`stylize_in_regions`]) stay in feature space too: at each level the
//! photo's statistics are taken within each style's region (weighted by its mask at the
//! features' resolution), each style's transform runs with its region's statistics, and the
//! transforms mix by the styles' shares per feature pixel before the decoder paints. One
//! cascade serves the whole photo, its tiles and its regions.

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

/// Sums that pool into [`FeatureStats`], each pixel counted with a weight (1 for a whole
/// photo, a region's mask for local style), so tiles and regions share one code path.
#[derive(Debug, Clone)]
struct Moments {
    /// Total weight (the pixel count when unweighted).
    count: f64,
    sum: Vec<f64>,
    /// Σ x·xᵀ, row-major `channels × channels` when `full`; only its diagonal (the sums of
    /// squares) otherwise, which is all AdaIN needs and costs C rather than C² per pixel.
    outer: Vec<f64>,
    full: bool,
}

impl Moments {
    fn new(channels: usize, full: bool) -> Self {
        Self {
            count: 0.0,
            sum: vec![0.0; channels],
            outer: vec![0.0; if full { channels * channels } else { channels }],
            full,
        }
    }

    /// The moments `transform` needs: the full covariance for WCT, the diagonal for AdaIN.
    fn for_transform(channels: usize, transform: FeatureTransform) -> Self {
        Self::new(channels, transform == FeatureTransform::Wct)
    }

    /// Adds the pixels of a (1, C, h, w) feature map, each with its weight in `weights` (h·w
    /// values, any shape) or 1 when `None`.
    fn add(&mut self, features: &Tensor, weights: Option<&Tensor>) -> Result<()> {
        let (_, c, h, w) = features.dims4()?;
        if c != self.sum.len() {
            return Err(Error::invalid(format!(
                "a feature map of {c} channels added to moments of {}",
                self.sum.len()
            )));
        }
        let x = features
            .contiguous()?
            .reshape((c, h * w))?
            .to_dtype(DType::F32)?;
        let weights = match weights {
            Some(weights) => {
                if weights.elem_count() != h * w {
                    return Err(Error::invalid(format!(
                        "{} weights for a {w}x{h} feature map",
                        weights.elem_count()
                    )));
                }
                Some(
                    weights
                        .contiguous()?
                        .reshape((1, h * w))?
                        .to_dtype(DType::F32)?,
                )
            }
            None => None,
        };
        if self.full {
            // With weights: Σ w·x and (x·w)·xᵀ; an all-ones map gives exactly the plain sums.
            let weighted = match &weights {
                Some(weights) => x.broadcast_mul(weights)?,
                None => x.clone(),
            };
            let sum = weighted.sum(1)?.to_vec1::<f32>()?;
            let outer = weighted.matmul(&x.t()?)?.flatten_all()?.to_vec1::<f32>()?;
            for (acc, v) in self.sum.iter_mut().zip(sum) {
                *acc += f64::from(v);
            }
            for (acc, v) in self.outer.iter_mut().zip(outer) {
                *acc += f64::from(v);
            }
            self.count += match &weights {
                Some(weights) => weights
                    .flatten_all()?
                    .to_vec1::<f32>()?
                    .iter()
                    .map(|&v| f64::from(v))
                    .sum(),
                None => (h * w) as f64,
            };
        } else {
            // Accumulated in f64: the variance is E[x²] − mean², which f32 sums over a large
            // photo would round away.
            let n = h * w;
            let values = x.flatten_all()?.to_vec1::<f32>()?;
            let weights = match &weights {
                Some(weights) => Some(weights.flatten_all()?.to_vec1::<f32>()?),
                None => None,
            };
            for ((channel, sum), sq) in values
                .chunks_exact(n.max(1))
                .zip(&mut self.sum)
                .zip(&mut self.outer)
            {
                let (mut s, mut q) = (0.0f64, 0.0f64);
                match &weights {
                    Some(weights) => {
                        for (&v, &wt) in channel.iter().zip(weights) {
                            let (v, wt) = (f64::from(v), f64::from(wt));
                            s += wt * v;
                            q += wt * v * v;
                        }
                    }
                    None => {
                        for &v in channel {
                            let v = f64::from(v);
                            s += v;
                            q += v * v;
                        }
                    }
                }
                *sum += s;
                *sq += q;
            }
            self.count += match &weights {
                Some(weights) => weights.iter().map(|&v| f64::from(v)).sum(),
                None => n as f64,
            };
        }
        Ok(())
    }

    fn stats(&self) -> FeatureStats {
        let c = self.sum.len();
        // A region's weights may sum to less than one feature pixel: divide by them as they
        // are (only an empty sum, which callers skip, would divide by 0).
        let n = if self.count > 0.0 { self.count } else { 1.0 };
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let mut covariance = vec![0.0; c * c];
        for i in 0..c {
            if self.full {
                for j in 0..c {
                    covariance[i * c + j] = self.outer[i * c + j] / n - mean[i] * mean[j];
                }
            } else {
                covariance[i * c + i] = (self.outer[i] / n - mean[i] * mean[i]).max(0.0);
            }
        }
        FeatureStats {
            channels: c,
            mean,
            covariance,
        }
    }
}

/// The photo's statistics that `transform` works with, from a (1, C, h, w) feature map: channel
/// means and variances (a diagonal covariance) for AdaIN, the mean and full covariance for WCT.
/// `weights` (h·w values) counts each pixel by its weight, a region's mask at the features'
/// resolution ([`region_weights_at`]), so the statistics are the region's; `None` counts every
/// pixel once (the plain transforms' statistics, which all-ones weights reproduce).
pub fn feature_stats(
    features: &Tensor,
    weights: Option<&Tensor>,
    transform: FeatureTransform,
) -> Result<FeatureStats> {
    let mut moments = Moments::for_transform(features.dim(1)?, transform);
    moments.add(features, weights)?;
    Ok(moments.stats())
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
                .or_insert_with(|| Moments::new(c, true))
                .add(&f, None)?;
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
/// the style's. The same scale and shift as [`adain_with`] with the features' own statistics,
/// so a whole photo, its tiles and its regions all go through one transform.
pub fn adain(features: &Tensor, style: &FeatureStats) -> Result<Tensor> {
    let content = feature_stats(features, None, FeatureTransform::Adain)?;
    adain_with(features, &content, style)
}

/// WCT: `features` (1, C, h, w) whitened (their own covariance removed) and coloured with the
/// style's covariance and mean.
pub fn wct(features: &Tensor, style: &FeatureStats) -> Result<Tensor> {
    let content = feature_stats(features, None, FeatureTransform::Wct)?;
    wct_with(features, &content, style)
}

/// [`wct`] with the photo's statistics `content` taken elsewhere: over a whole tiled photo, or
/// over a region ([`feature_stats`] with its weights).
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
/// elsewhere (over a whole tiled photo, or a region), as one per-channel scale and shift.
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

/// Activation memory of the method in one piece per photo pixel (the WCT cascade at relu1_1,
/// see [`MAX_ARBITRARY_PIXELS`]).
const BYTES_PER_PIXEL: u64 = 1400;
/// What regions add per photo pixel in one piece: the mix being summed and one style's
/// transform beside it, two relu1_1 maps of 64 floats (an estimate, not measured).
const REGION_BYTES_PER_PIXEL: u64 = 2 * 64 * 4;
/// A style whose map sums to less than this (photo pixels) paints nowhere and is skipped: its
/// region's statistics would come from a sliver of one feature pixel.
const EMPTY_REGION: f64 = 0.01;

/// Margin of every tile (photo pixels): the VGG encoder's receptive field to relu4_1 (about
/// 40 px with its pools) plus the decoder's back (about as much), on the pools' 8 px grid. A
/// tile's core with this margin is the untiled result (tested).
pub const TILE_HALO: u32 = 96;

/// Core side of the tiles for a `width`×`height` photo with the memory available now; `None`
/// when it fits in one piece.
pub fn tile_core_for(width: u32, height: u32) -> Option<u32> {
    tile_core_with(width, height, BYTES_PER_PIXEL)
}

/// [`tile_core_for`] for a run that needs `bytes_per_pixel` in one piece.
fn tile_core_with(width: u32, height: u32, bytes_per_pixel: u64) -> Option<u32> {
    let side = tiles::tile_side_for(tiles::tile_budget_bytes(), bytes_per_pixel, 8);
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
    observe: impl FnMut(usize, usize) -> Result<()>,
) -> Result<RgbImage> {
    let painting = Painting::Whole(style);
    cascade(
        vgg,
        decoders,
        content,
        painting,
        config,
        device,
        Some(core),
        observe,
    )
}

/// What a cascade paints: one style over the whole photo, or each style in its region.
#[derive(Clone, Copy)]
enum Painting<'a> {
    Whole(&'a StyleStats),
    Regions {
        styles: &'a [&'a StyleStats],
        /// At the photo's size, checked against it ([`active_styles`]).
        weights: &'a RegionWeights,
        /// The styles that paint somewhere, in order (at least one).
        active: &'a [usize],
    },
}

/// One transform of a level: a style's statistics there and, in regions, its weight map (for
/// its region's statistics) and its share of the mix, both (1, 1, H, W) over the whole padded
/// photo at the features' resolution. `None`: every pixel counts once, all of the mix.
struct Part<'a> {
    style: &'a FeatureStats,
    weight: Option<Tensor>,
    share: Option<Tensor>,
}

fn style_at<'a>(style: &'a StyleStats, layer: &str) -> Result<&'a FeatureStats> {
    style
        .get(layer)
        .ok_or_else(|| Error::invalid(format!("no style statistics at {layer}")))
}

/// The transforms `painting` runs at `layer`.
fn level_parts<'a>(painting: Painting<'a>, layer: &str, device: &Device) -> Result<Vec<Part<'a>>> {
    let (styles, weights, active) = match painting {
        Painting::Whole(style) => {
            return Ok(vec![Part {
                style: style_at(style, layer)?,
                weight: None,
                share: None,
            }])
        }
        Painting::Regions {
            styles,
            weights,
            active,
        } => (styles, weights, active),
    };
    let level = region_weights_at(weights, layer)?;
    let (w, h) = (level.width as usize, level.height as usize);
    let to_tensor =
        |map: Vec<f32>| -> Result<Tensor> { Ok(Tensor::from_vec(map, (1, 1, h, w), device)?) };
    let mut chosen = Vec::with_capacity(active.len());
    for &i in active {
        let map = level
            .maps
            .get(i)
            .ok_or_else(|| Error::invalid(format!("no weight map for style {}", i + 1)))?;
        chosen.push(map.clone());
    }
    let chosen = RegionWeights {
        width: level.width,
        height: level.height,
        maps: chosen,
    };
    // Shares among the styles that paint; a single one takes all of the mix, which is then
    // the plain transform with its region's statistics.
    let mut shares = (active.len() > 1).then(|| chosen.style_shares().into_iter());
    let mut parts = Vec::with_capacity(active.len());
    for (&i, map) in active.iter().zip(chosen.maps) {
        let style = styles
            .get(i)
            .ok_or_else(|| Error::invalid(format!("no statistics for style {}", i + 1)))?;
        let share = match shares.as_mut().and_then(Iterator::next) {
            Some(share) => Some(to_tensor(share)?),
            None => None,
        };
        parts.push(Part {
            style: style_at(style, layer)?,
            weight: Some(to_tensor(map)?),
            share,
        });
    }
    Ok(parts)
}

/// `weights` (at the photo's size) at the resolution of `layer`'s features: padded to the
/// pools' multiple by reflection exactly as the photo is before it is encoded, then averaged
/// over each feature pixel's square of photo pixels, so the maps line up with the features
/// (and with every tile cut from them) and keep each cell's share of the region.
pub fn region_weights_at(weights: &RegionWeights, layer: &str) -> Result<RegionWeights> {
    let (w, h) = (weights.width as usize, weights.height as usize);
    if w == 0 || h == 0 || weights.maps.iter().any(|m| m.len() != w * h) {
        return Err(Error::invalid(format!(
            "region weights of {w}x{h} hold maps of other sizes"
        )));
    }
    let multiple = 1usize << decoder::layer_pools(layer)?;
    let (padded_w, padded_h) = (
        w.div_ceil(multiple) * multiple,
        h.div_ceil(multiple) * multiple,
    );
    let (fw, fh) = (padded_w / multiple, padded_h / multiple);
    let count = weights.maps.len();
    if count == 0 {
        return Ok(RegionWeights {
            width: fw as u32,
            height: fh as u32,
            maps: Vec::new(),
        });
    }
    let maps = Tensor::from_vec(weights.maps.concat(), (1, count, h, w), &Device::Cpu)?;
    let maps = pad_end_to(&maps, 2, padded_h)?;
    let maps = pad_end_to(&maps, 3, padded_w)?;
    let maps = if multiple > 1 {
        maps.avg_pool2d(multiple)?
    } else {
        maps
    };
    let values = maps.flatten_all()?.to_vec1::<f32>()?;
    Ok(RegionWeights {
        width: fw as u32,
        height: fh as u32,
        maps: values.chunks_exact(fw * fh).map(<[f32]>::to_vec).collect(),
    })
}

/// The part of a feature-resolution tensor (…, H, W) that covers `rect` (photo pixels), when
/// the tensor starts at photo pixel `origin` and a feature pixel spans `scale` photo pixels.
fn feature_window(
    t: &Tensor,
    rect: tiles::Rect,
    origin: (u32, u32),
    scale: usize,
) -> Result<Tensor> {
    let top = rect.y.saturating_sub(origin.1) as usize / scale;
    let left = rect.x.saturating_sub(origin.0) as usize / scale;
    let rows = rect.height as usize / scale;
    let cols = rect.width as usize / scale;
    Ok(t.narrow(2, top, rows)?.narrow(3, left, cols)?)
}

/// The cascade behind every entry point: for each level, coarse to fine, the photo (padded
/// to the level's pools' multiple by reflection) is encoded, the photo's statistics are
/// summed (over the whole photo, or weighted by each region's map), each style's transform
/// runs with them, the transforms mix by the styles' shares, the strength blends in the
/// photo's features, and the decoder paints. `core: None` runs in one piece (progress per
/// level); `Some` in tiles on each level's grid, twice over (statistics first, then the
/// transform and decoder), so every core sees what the untiled run sees (progress per tile
/// run).
#[allow(clippy::too_many_arguments)]
fn cascade(
    vgg: &Vgg,
    decoders: &Decoders,
    content: &RgbImage,
    painting: Painting<'_>,
    config: ArbitraryConfig,
    device: &Device,
    core: Option<u32>,
    mut observe: impl FnMut(usize, usize) -> Result<()>,
) -> Result<RgbImage> {
    check_input(content, config)?;
    let (width, height) = content.dimensions();
    let levels = config.transform.levels();
    // Each level pads the image to its own pools' multiple (the padding counts in the
    // statistics: padding every level to 8 put tiled WCT 5.6 levels off), and tiles it on
    // that grid.
    let mut grids = Vec::with_capacity(levels.len());
    for &layer in levels {
        let multiple = 1u32 << decoder::layer_pools(layer)?;
        let padded = (
            width.div_ceil(multiple) * multiple,
            height.div_ceil(multiple) * multiple,
        );
        let grid = match core {
            Some(core) => tiles::grid(padded.0, padded.1, core.max(8), TILE_HALO, multiple),
            None => {
                let whole = tiles::Rect {
                    x: 0,
                    y: 0,
                    width: padded.0,
                    height: padded.1,
                };
                vec![tiles::Tile {
                    input: whole,
                    core: whole,
                }]
            }
        };
        grids.push((padded, grid));
    }
    let tiled = core.is_some();
    let total: usize = if tiled {
        grids.iter().map(|(_, grid)| 2 * grid.len()).sum()
    } else {
        levels.len()
    };
    let mut done = 0;
    let alpha = f64::from(config.strength);
    // Between levels the image stays in floats, clamped to pixels (the next encoder expects
    // them).
    let (w, h) = (width as usize, height as usize);
    let mut image = imaging::to_tensor(content, device)?;
    for (index, (&layer, ((padded_w, padded_h), grid))) in levels.iter().zip(&grids).enumerate() {
        let parts = level_parts(painting, layer, device)?;
        let layer_name = layer.to_string();
        let scale = 1usize << decoder::layer_pools(layer)?;
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

        // Pass 1: the photo's statistics at this level for each transform, over every tile's
        // core, each pixel weighted by the transform's region.
        let mut moments: Vec<Option<Moments>> = parts.iter().map(|_| None).collect();
        // One piece: the features serve both passes.
        let mut kept = None;
        for tile in grid {
            let features = encode(tile)?;
            let part = feature_window(&features, tile.core, (tile.input.x, tile.input.y), scale)?;
            let c = part.dim(1)?;
            for (transform, sums) in parts.iter().zip(&mut moments) {
                let weight = match &transform.weight {
                    Some(map) => Some(feature_window(map, tile.core, (0, 0), scale)?),
                    None => None,
                };
                sums.get_or_insert_with(|| Moments::for_transform(c, config.transform))
                    .add(&part, weight.as_ref())?;
            }
            if grid.len() == 1 {
                kept = Some(features);
            }
            if tiled {
                done += 1;
                observe(done, total)?;
            }
        }
        let content_stats = moments
            .iter()
            .map(|m| {
                m.as_ref()
                    .map(Moments::stats)
                    .ok_or_else(|| Error::invalid("the tiles covered no pixels"))
            })
            .collect::<Result<Vec<_>>>()?;

        // Pass 2: each transform with its statistics, mixed by the shares, blended with the
        // photo's features by the strength, decoded; each core kept.
        let mut next = vec![0f32; 3 * w * h];
        for tile in grid {
            let features = match kept.take() {
                Some(features) => features,
                None => encode(tile)?,
            };
            let mut transformed: Option<Tensor> = None;
            for (part, stats) in parts.iter().zip(&content_stats) {
                let t = match config.transform {
                    FeatureTransform::Adain => adain_with(&features, stats, part.style)?,
                    FeatureTransform::Wct => wct_with(&features, stats, part.style)?,
                };
                let t = match &part.share {
                    Some(share) => {
                        let share = feature_window(share, tile.input, (0, 0), scale)?;
                        t.broadcast_mul(&share)?
                    }
                    None => t,
                };
                transformed = Some(match transformed {
                    Some(sum) => (sum + t)?,
                    None => t,
                });
            }
            let transformed = transformed
                .ok_or_else(|| Error::invalid(format!("nothing to paint at {layer}")))?;
            let mixed = ((transformed * alpha)? + (features * (1.0 - alpha))?)?;
            let decoded = decoders
                .get(layer)?
                .forward(&mixed)?
                .clamp(0f32, 255f32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            paste_planar(&mut next, (w, h), &decoded, *tile);
            if tiled {
                done += 1;
                observe(done, total)?;
            }
        }
        image = Tensor::from_vec(next, (1, 3, h, w), device)?;
        if !tiled {
            observe(index + 1, total)?;
        }
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
    observe: impl FnMut(usize, usize) -> Result<()>,
) -> Result<RgbImage> {
    let painting = Painting::Whole(style);
    cascade(
        vgg, decoders, content, painting, config, device, None, observe,
    )
}

/// Paints each style of `styles` in its region (`weights`: one map per style, at `content`'s
/// size) in one pass through the levels: at each level the photo's statistics are taken within
/// each region (weighted by its map at the features' resolution, [`region_weights_at`]), each
/// style's transform runs with its region's statistics, and the transforms mix by the styles'
/// shares at every feature pixel before the strength blend and the decoder. So a region is
/// painted from its own content's statistics, and the decoder smooths the seams in feature
/// space (a composite of whole-photo passes would use the whole photo's statistics for every
/// style). Returns the styles' painting everywhere: the engine puts the photo back where no
/// style paints. Styles whose maps are empty are skipped (with none left, the photo comes back
/// as it is); photos too large for one piece run in tiles, as
/// [`stylize_in_regions_tiled`]. `observe(done, total)` counts levels, or tile runs when tiled.
#[allow(clippy::too_many_arguments)]
pub fn stylize_in_regions(
    vgg: &Vgg,
    decoders: &Decoders,
    content: &RgbImage,
    styles: &[&StyleStats],
    weights: &RegionWeights,
    config: ArbitraryConfig,
    device: &Device,
    observe: impl FnMut(usize, usize) -> Result<()>,
) -> Result<RgbImage> {
    let core = tile_core_with(
        content.width(),
        content.height(),
        BYTES_PER_PIXEL + REGION_BYTES_PER_PIXEL,
    );
    regions_cascade(
        vgg, decoders, content, styles, weights, config, device, core, observe,
    )
}

/// [`stylize_in_regions`] in tiles of at most `core`×`core` pixels (plus [`TILE_HALO`]), as
/// [`stylize_tiled`]: each region's weighted statistics are summed over the tiles' cores
/// before any tile is transformed, so the tiles match the untiled run.
#[allow(clippy::too_many_arguments)]
pub fn stylize_in_regions_tiled(
    vgg: &Vgg,
    decoders: &Decoders,
    content: &RgbImage,
    styles: &[&StyleStats],
    weights: &RegionWeights,
    config: ArbitraryConfig,
    device: &Device,
    core: u32,
    observe: impl FnMut(usize, usize) -> Result<()>,
) -> Result<RgbImage> {
    regions_cascade(
        vgg,
        decoders,
        content,
        styles,
        weights,
        config,
        device,
        Some(core),
        observe,
    )
}

#[allow(clippy::too_many_arguments)]
fn regions_cascade(
    vgg: &Vgg,
    decoders: &Decoders,
    content: &RgbImage,
    styles: &[&StyleStats],
    weights: &RegionWeights,
    config: ArbitraryConfig,
    device: &Device,
    core: Option<u32>,
    observe: impl FnMut(usize, usize) -> Result<()>,
) -> Result<RgbImage> {
    check_input(content, config)?;
    let active = active_styles(content, styles, weights)?;
    if active.is_empty() {
        return Ok(content.clone());
    }
    let painting = Painting::Regions {
        styles,
        weights,
        active: &active,
    };
    cascade(
        vgg, decoders, content, painting, config, device, core, observe,
    )
}

/// The styles that paint somewhere (their maps sum to [`EMPTY_REGION`] or more), once `weights`
/// are checked against `content` and `styles`.
fn active_styles(
    content: &RgbImage,
    styles: &[&StyleStats],
    weights: &RegionWeights,
) -> Result<Vec<usize>> {
    if styles.is_empty() {
        return Err(Error::invalid("regions without a style"));
    }
    if weights.maps.len() != styles.len() {
        return Err(Error::invalid(format!(
            "{} region maps for {} styles",
            weights.maps.len(),
            styles.len()
        )));
    }
    let (w, h) = content.dimensions();
    let pixels = w as usize * h as usize;
    if (weights.width, weights.height) != (w, h) || weights.maps.iter().any(|m| m.len() != pixels) {
        return Err(Error::invalid(format!(
            "region weights of {}x{} for a photo of {w}x{h}",
            weights.width, weights.height
        )));
    }
    let mut active = Vec::new();
    for (index, map) in weights.maps.iter().enumerate() {
        if map.iter().any(|v| !(0.0..=1.0 + 1e-4).contains(v)) {
            return Err(Error::invalid(format!(
                "the weights of style {} must lie between 0 and 1",
                index + 1
            )));
        }
        let sum: f64 = map.iter().map(|&v| f64::from(v)).sum();
        if sum >= EMPTY_REGION {
            active.push(index);
        }
    }
    Ok(active)
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
        feature_stats(t, None, FeatureTransform::Wct).unwrap_or_else(|e| panic!("{e}"))
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
        let mut pooled = Moments::new(3, true);
        pooled.add(&a, None)?;
        pooled.add(&b, None)?;
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
    #[test]
    fn weighted_moments_are_the_regions_own() -> Result<()> {
        let features = random_features(5, 300, 8);
        // All ones: exactly the plain sums, in both modes.
        let ones = Tensor::ones((1, 300), DType::F32, &Device::Cpu)?;
        for transform in [FeatureTransform::Adain, FeatureTransform::Wct] {
            assert_eq!(
                feature_stats(&features, Some(&ones), transform)?,
                feature_stats(&features, None, transform)?
            );
        }
        // A 0/1 mask: the statistics of the pixels it selects; AdaIN's are the diagonal.
        let mask: Vec<f32> = (0..300).map(|i| if i < 120 { 1.0 } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mask, (1, 300), &Device::Cpu)?;
        let selected = stats_of(&features.narrow(3, 0, 120)?);
        let full = feature_stats(&features, Some(&mask), FeatureTransform::Wct)?;
        let diagonal = feature_stats(&features, Some(&mask), FeatureTransform::Adain)?;
        for (a, b) in full.covariance.iter().zip(&selected.covariance) {
            assert!((a - b).abs() < 1e-3 * (1.0 + b.abs()), "{a} vs {b}");
        }
        for i in 0..5 {
            assert!((full.mean[i] - selected.mean[i]).abs() < 1e-4);
            assert!((diagonal.mean[i] - selected.mean[i]).abs() < 1e-4);
            let (a, b) = (
                diagonal.covariance[i * 5 + i],
                selected.covariance[i * 5 + i],
            );
            assert!((a - b).abs() < 1e-3 * (1.0 + b), "{a} vs {b}");
            assert_eq!(diagonal.covariance[i * 5 + (i + 1) % 5], 0.0);
        }
        // Weights below one pixel in all still give a mean, not a fraction of one.
        let tiny = (mask * 0.001)?;
        let tiny = feature_stats(&features, Some(&tiny), FeatureTransform::Adain)?;
        assert!((tiny.mean[0] - selected.mean[0]).abs() < 1e-3);
        Ok(())
    }

    #[test]
    fn region_maps_are_padded_like_the_features() -> Result<()> {
        // 10 columns, the left 5 painted: relu4_1 pads to 16 by reflection (columns 10..16
        // mirror 8..3, so 14 and 15 are painted) and averages 8×8 squares.
        let map: Vec<f32> = (0..60)
            .map(|i| if i % 10 < 5 { 1.0 } else { 0.0 })
            .collect();
        let weights = RegionWeights {
            width: 10,
            height: 6,
            maps: vec![map],
        };
        let level = region_weights_at(&weights, "relu4_1")?;
        assert_eq!((level.width, level.height), (2, 1));
        assert!(
            (level.maps[0][0] - 0.625).abs() < 1e-6,
            "{:?}",
            level.maps[0]
        );
        assert!(
            (level.maps[0][1] - 0.25).abs() < 1e-6,
            "{:?}",
            level.maps[0]
        );
        let fine = region_weights_at(&weights, "relu1_1")?;
        assert_eq!(fine, weights);
        let half = region_weights_at(&weights, "relu2_1")?;
        assert_eq!((half.width, half.height), (5, 3));
        assert!((half.maps[0][2] - 0.5).abs() < 1e-6);
        Ok(())
    }
}
