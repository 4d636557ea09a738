//! Feed-forward stylisation: one pass of a trained transformer network.

use std::path::Path;

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::error::{Error, Result};
use crate::imaging;
use crate::nn::transformer::{
    ChannelStats, NormStats, NormSums, TileState, TileWindow, TransformerNet, NORM_LAYERS,
    RECEPTIVE_RADIUS,
};
use crate::stylize::regions::RegionWeights;
use crate::stylize::tiles;

/// Activation memory of a width-32 network per input pixel in one piece, measured: about 0.6 GB
/// per megapixel (peak RSS of a 1024² run); narrower networks need proportionally less.
const BYTES_PER_PIXEL_AT_WIDTH_32: u64 = 600;

/// Core side of the tiles of the statistics passes when they sample part of the photo: small
/// enough that the sample spreads over the photo, large enough that the halo (64 px a side)
/// adds no more than half the work.
pub const SAMPLE_CORE: u32 = 512;

/// Photo pixels the statistics passes cover: photos up to this size get exact whole-image
/// statistics (tiled equals untiled); larger ones an estimate from this many pixels spread over
/// them (a quarter of a 50 MP photo). With each tile's activations kept between passes they
/// cost about two forward passes over what they cover (each convolution runs at most twice).
pub const DEFAULT_SAMPLE_PIXELS: u64 = 12_000_000;

/// How a photo too large for one piece runs in tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePlan {
    /// Longest side of an output tile's core (input pixels); the input adds the receptive
    /// radius on each side.
    pub core: u32,
    /// Core side of the tiles of the statistics passes.
    pub sample_core: u32,
    /// Photo pixels those passes cover; the whole photo (exact statistics) when it is smaller.
    pub sample_pixels: u64,
    /// Memory for keeping each sample tile's activations between the statistics passes; tiles
    /// beyond it run again from the photo in every pass (same result, more work).
    pub cache_bytes: u64,
}

/// What a tiled run did, for the user.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TileReport {
    /// Core side of the output tiles.
    pub core: u32,
    pub tiles: usize,
    /// Tiles of the statistics passes, and the share of the photo they covered (1: exact).
    pub sample_tiles: usize,
    pub sampled: f64,
}

impl TileReport {
    /// "12 tiles of 1212 px; norm statistics from 38 % of the photo".
    pub fn describe(&self) -> String {
        let stats = if self.sampled >= 1.0 {
            "exact whole-photo statistics".to_string()
        } else {
            format!(
                "norm statistics from {:.0} % of the photo",
                self.sampled * 100.0
            )
        };
        format!("{} tiles of {} px; {stats}", self.tiles, self.core)
    }
}

impl TilePlan {
    /// The plan for `net` on a `width`×`height` photo with the memory available now; `None` when
    /// the photo fits in one piece.
    pub fn for_photo(net: &TransformerNet, width: u32, height: u32) -> Option<Self> {
        let per_pixel = (BYTES_PER_PIXEL_AT_WIDTH_32 * net.width() as u64).div_ceil(32);
        let side = tiles::tile_side_for(tiles::tile_budget_bytes(), per_pixel, 4);
        let pixels = u64::from(width) * u64::from(height);
        if pixels <= u64::from(side) * u64::from(side) {
            return None;
        }
        let halo = RECEPTIVE_RADIUS as u32;
        let core = side.saturating_sub(2 * halo).max(4 * halo);
        // Small statistics tiles: they spread over the photo, and while one runs the others'
        // kept activations have the rest of the budget.
        let sample_core = SAMPLE_CORE.min(core);
        let sample_input = u64::from(sample_core + 2 * halo).pow(2);
        Some(Self {
            core,
            sample_core,
            sample_pixels: DEFAULT_SAMPLE_PIXELS,
            cache_bytes: tiles::tile_budget_bytes().saturating_sub(per_pixel * sample_input),
        })
    }
}

/// The photo painted by `net`, at the photo's size.
pub fn stylize(net: &TransformerNet, content: &RgbImage, device: &Device) -> Result<RgbImage> {
    stylize_mixed(net, content, device, None)
}

/// The weights of a conditional network's style mix, checked against `net` (one weight per
/// style, none negative, not all zero) and normalised to sum to 1, so the norms' scales stay
/// those the network learnt. `model` names the network in errors.
pub fn style_mix(net: &TransformerNet, weights: &[f64], model: &Path) -> Result<Vec<f32>> {
    let styles = net.styles();
    if styles < 2 {
        return Err(Error::invalid(format!(
            "{} holds one style; a style mix needs a conditional network (atelier train \
             --conditional)",
            model.display()
        )));
    }
    if weights.len() != styles {
        return Err(Error::invalid(format!(
            "the style mix has {} weights; {} holds {styles} styles",
            weights.len(),
            model.display()
        )));
    }
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(Error::invalid(
            "style mix weights must be non-negative numbers",
        ));
    }
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return Err(Error::invalid(
            "a style mix needs at least one positive weight",
        ));
    }
    Ok(weights.iter().map(|w| (w / total) as f32).collect())
}

/// [`stylize`] with a conditional network's style mix (from [`style_mix`]); `None` paints the
/// even blend of its styles (or a one-style network's only style).
pub fn stylize_mixed(
    net: &TransformerNet,
    content: &RgbImage,
    device: &Device,
    mix: Option<&[f32]>,
) -> Result<RgbImage> {
    let plan = TilePlan::for_photo(net, content.width(), content.height());
    Ok(stylize_planned(net, content, device, mix, plan, &mut |_, _| Ok(()))?.0)
}

/// [`stylize_mixed`] in tiles as `plan` says (`None`: in one piece). `on_tile(done, total)` is
/// called after each tile run (an error, such as [`Error::Cancelled`], stops the run).
pub fn stylize_planned(
    net: &TransformerNet,
    content: &RgbImage,
    device: &Device,
    mix: Option<&[f32]>,
    plan: Option<TilePlan>,
    on_tile: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<(RgbImage, Option<TileReport>)> {
    let mix = mix
        .map(|m| Tensor::from_slice(m, m.len(), device))
        .transpose()?;
    let Some(plan) = plan else {
        let x = imaging::to_tensor(content, device)?;
        let y = net.forward_mixed(&x, mix.as_ref())?;
        on_tile(1, 1)?;
        return Ok((imaging::from_tensor(&y)?, None));
    };
    let (width, height) = content.dimensions();
    // The network extends the photo to multiples of 4; the tiles cover that extended image.
    let (padded_w, padded_h) = (width.div_ceil(4) * 4, height.div_ceil(4) * 4);
    let halo = RECEPTIVE_RADIUS as u32;
    let grid = tiles::grid(padded_w, padded_h, plan.core, halo, 4);
    let sample = tiles::spread_sample(
        &tiles::grid(padded_w, padded_h, plan.sample_core, halo, 4),
        plan.sample_pixels,
    );
    let total = sample.len() * NORM_LAYERS + grid.len();
    let mut done = 0;
    let mut step = |done: &mut usize| {
        *done += 1;
        on_tile(*done, total)
    };

    // Statistics passes: norm k's whole-image statistics from the sample, with those of the
    // norms before it already fixed. Each tile's activations before norm k are kept for the
    // next pass while they fit `cache_bytes`, so a pass adds one convolution per tile instead
    // of running the tile from the start (8 MP, exact: 36.5 s before, see the README). The
    // sample's inputs are cut once, as bytes (a quarter of their f32 tensors).
    let inputs: Vec<RgbImage> = sample
        .iter()
        .map(|tile| tiles::crop_reflected(content, tile.input))
        .collect();
    let mut kept: Vec<Option<TileState>> = sample.iter().map(|_| None).collect();
    let mut known: Vec<ChannelStats> = Vec::with_capacity(NORM_LAYERS);
    for layer in 0..NORM_LAYERS {
        let mut sums = NormSums::default();
        let mut kept_bytes = 0u64;
        for ((tile, input), slot) in sample.iter().zip(&inputs).zip(&mut kept) {
            let mut state = match slot.take() {
                Some(state) => state,
                None => net.tile_start(&imaging::to_tensor(input, device)?)?,
            };
            while state.next_norm() < layer {
                let x = net.tile_norm_input(&state)?;
                let stats = &known[state.next_norm()];
                net.tile_advance(&mut state, &x, mix.as_ref(), stats)?;
            }
            sums.add_window(layer, &net.tile_norm_input(&state)?, window_of(tile))?;
            let bytes = state.bytes() as u64;
            if kept_bytes + bytes <= plan.cache_bytes {
                kept_bytes += bytes;
                *slot = Some(state);
            }
            step(&mut done)?;
        }
        known.push(
            sums.layer(layer)
                .ok_or_else(|| Error::invalid("the statistics sample covered no pixels"))?,
        );
    }
    drop(kept);
    drop(inputs);
    let stats = NormStats { layers: known };

    let mut out = RgbImage::new(width, height);
    for tile in &grid {
        let x = imaging::to_tensor(&tiles::crop_reflected(content, tile.input), device)?;
        let y = net.forward_tile(&x, mix.as_ref(), &stats, None)?;
        tiles::paste_core(&mut out, &imaging::from_tensor(&y)?, *tile);
        step(&mut done)?;
    }
    let sampled_pixels: u64 = sample
        .iter()
        .map(|t| u64::from(t.core.width) * u64::from(t.core.height))
        .sum();
    Ok((
        out,
        Some(TileReport {
            core: plan.core,
            tiles: grid.len(),
            sample_tiles: sample.len(),
            sampled: sampled_pixels as f64 / (f64::from(padded_w) * f64::from(padded_h)),
        }),
    ))
}

/// `net` on `content` with strokes scaled by `stroke` (the network runs on a smaller copy for
/// larger strokes, and its result is scaled back to `content`'s size), in tiles when the photo
/// is too large for one piece. `progress(done, total)` counts tile runs.
pub fn stylize_at_stroke(
    net: &TransformerNet,
    content: &RgbImage,
    device: &Device,
    mix: Option<&[f32]>,
    stroke: f64,
    progress: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<(RgbImage, Option<TileReport>)> {
    let input = stroke_input(content, stroke)?;
    let input = input.as_ref().unwrap_or(content);
    let plan = TilePlan::for_photo(net, input.width(), input.height());
    let (mut stylized, tiling) = stylize_planned(net, input, device, mix, plan, progress)?;
    if stylized.dimensions() != content.dimensions() {
        stylized = imaging::resize_exact(&stylized, content.width(), content.height());
    }
    Ok((stylized, tiling))
}

/// The copy of `content` the network runs on at stroke scale `stroke`; `None`: `content`
/// itself.
fn stroke_input(content: &RgbImage, stroke: f64) -> Result<Option<RgbImage>> {
    let side = content.width().max(content.height());
    let run_side = stroke_side(content.width(), content.height(), stroke)?;
    Ok((run_side != side).then(|| imaging::resize_longer_side(content, run_side)))
}

/// Several styles of one conditional network, each in its region, in one pass: every norm
/// takes per-pixel scales and shifts, the styles' mixes (`mixes`, one per style, from
/// [`style_mix`]) weighted by their shares of `weights` (at `content`'s size) at that norm's
/// resolution, so regions meet without a seam. `None` when the photo needs tiles (the caller
/// then runs a pass per style).
pub fn stylize_regions_one_pass(
    net: &TransformerNet,
    content: &RgbImage,
    device: &Device,
    mixes: &[Vec<f32>],
    weights: &RegionWeights,
    stroke: f64,
    progress: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<Option<RgbImage>> {
    if mixes.len() != weights.maps.len() {
        return Err(Error::invalid(format!(
            "{} style mixes for {} regions",
            mixes.len(),
            weights.maps.len()
        )));
    }
    let input = stroke_input(content, stroke)?;
    let input = input.as_ref().unwrap_or(content);
    if TilePlan::for_photo(net, input.width(), input.height()).is_some() {
        return Ok(None);
    }
    let (w, h) = input.dimensions();
    let shares = weights.resized(w, h).style_shares();
    // Per pixel, the network's own styles' weights: Σ over regions of share × that region's mix.
    let styles = net.styles();
    let pixels = (w * h) as usize;
    let mut per_style = vec![0f32; styles * pixels];
    for (share, mix) in shares.iter().zip(mixes) {
        if mix.len() != styles {
            return Err(Error::invalid(format!(
                "a style mix of {} weights for a network of {styles} styles",
                mix.len()
            )));
        }
        for (s, &m) in mix.iter().enumerate() {
            if m == 0.0 {
                continue;
            }
            let plane = &mut per_style[s * pixels..(s + 1) * pixels];
            for (v, &a) in plane.iter_mut().zip(share) {
                *v += m * a;
            }
        }
    }
    let mix_map = Tensor::from_vec(per_style, (1, styles, h as usize, w as usize), device)?;
    let x = imaging::to_tensor(input, device)?;
    let y = net.forward_spatial(&x, &mix_map)?;
    progress(1, 1)?;
    let mut painted = imaging::from_tensor(&y)?;
    if painted.dimensions() != content.dimensions() {
        painted = imaging::resize_exact(&painted, content.width(), content.height());
    }
    Ok(Some(painted))
}

/// The core of `tile` in its input's pixels.
fn window_of(tile: &tiles::Tile) -> TileWindow {
    TileWindow {
        top: (tile.core.y - tile.input.y) as usize,
        left: (tile.core.x - tile.input.x) as usize,
        height: tile.core.height as usize,
        width: tile.core.width as usize,
    }
}

/// Stroke scales the network methods take: a quarter to four times the strokes as trained.
pub const STROKE_RANGE: std::ops::RangeInclusive<f64> = 0.25..=4.0;

/// The longer side to run the network at for a `width`×`height` result at stroke scale
/// `stroke` (larger strokes: a smaller run), within [`MAX_NETWORK_PIXELS`] and at least 16 px.
pub fn stroke_side(width: u32, height: u32, stroke: f64) -> Result<u32> {
    if !(stroke.is_finite() && STROKE_RANGE.contains(&stroke)) {
        return Err(Error::invalid(format!(
            "the stroke scale must be between {} and {}, got {stroke}",
            STROKE_RANGE.start(),
            STROKE_RANGE.end()
        )));
    }
    let side = width.max(height);
    if (stroke - 1.0).abs() < 1e-9 {
        return Ok(side);
    }
    let wanted = ((f64::from(side) / stroke).round() as u32).max(16);
    Ok(network_side(width, height, Some(wanted)))
}

/// Largest image the network methods take: the input limit. Larger photos no longer need to be
/// downscaled, they run in tiles ([`TilePlan`]).
pub const MAX_NETWORK_PIXELS: u64 = imaging::MAX_INPUT_PIXELS;

/// The longer side to run the network at: the requested one, or the photo's own, capped so that
/// the pixel count stays under [`MAX_NETWORK_PIXELS`].
pub fn network_side(width: u32, height: u32, requested: Option<u32>) -> u32 {
    side_within(width, height, requested, MAX_NETWORK_PIXELS)
}

/// The longer side to run at: the requested one or the photo's own, capped so that the pixel
/// count stays under `max_pixels`.
pub fn side_within(width: u32, height: u32, requested: Option<u32>, max_pixels: u64) -> u32 {
    let own = width.max(height);
    let side = requested.unwrap_or(own);
    let (w, h) = imaging::fit_size(width, height, side);
    let pixels = u64::from(w) * u64::from(h);
    if pixels <= max_pixels {
        return side;
    }
    let shrink = (max_pixels as f64 / pixels as f64).sqrt();
    ((side as f64) * shrink).floor() as u32
}
