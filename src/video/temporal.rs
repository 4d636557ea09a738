//! Temporal consistency for feed-forward video stylisation: warp the previous output along the
//! optical flow of the *input* frames and blend it into the fresh stylised frame where the flow
//! is reliable (Ruder et al. 2016's idea without the optimisation).
//!
//! Why blending works: a style network stylises each frame from scratch, so the brush strokes of
//! a static or moving surface change every frame (flicker). Carrying part of the previous output
//! along the motion makes the strokes follow the surface; where the flow is unreliable
//! (occlusions, newly uncovered areas, motion boundaries) the fresh frame is used alone, so
//! nothing is dragged along wrongly (ghosting), and the history only propagates through
//! reliable pixels. A scene cut (most pixels unreliable) restarts from the fresh frame.

use image::RgbImage;
use rayon::prelude::*;

use super::flow::{self, Flow, FlowParams, Pyramid};
use crate::error::{Error, Result};

/// Share of the warped previous output in reliable pixels. Measured on 30 frames of bikes.mp4 at
/// 480 px stylised by starry-night (see `tests/video_flow.rs`, `bikes_warping_error`): see the
/// report in that test for the numbers behind the choice.
pub const DEFAULT_WEIGHT: f32 = 0.7;

/// Radius in pixels of the box blur that softens the mask's edges (reliable pixels next to
/// unreliable ones get a lower weight, so occlusion borders fade instead of showing a seam).
pub const DEFAULT_FEATHER: usize = 3;

/// A frame with fewer reliable pixels than this fraction is a scene cut.
pub const SCENE_CUT_RELIABLE: f32 = 0.5;

/// `image` warped along `flow`: output pixel p is `image` sampled at p + flow(p), bilinear,
/// clamped to the nearest edge outside. The output has the flow's size (`image` is sampled in
/// its own pixel coordinates; it is normally the same size).
pub fn warp(image: &RgbImage, flow: &Flow) -> RgbImage {
    let (w, h) = (flow.width as usize, flow.height as usize);
    let src: Vec<f32> = image.as_raw().iter().map(|&b| b as f32).collect();
    let out = warp_f32(
        &src,
        3,
        image.width() as usize,
        image.height() as usize,
        flow,
    );
    let bytes: Vec<u8> = out
        .iter()
        .map(|&x| x.round().clamp(0.0, 255.0) as u8)
        .collect();
    // The buffer has exactly w × h × 3 values, so this cannot fail; fall back to black anyway.
    RgbImage::from_raw(w as u32, h as u32, bytes)
        .unwrap_or_else(|| RgbImage::new(w as u32, h as u32))
}

/// [`warp`] on an interleaved `f32` image of `channels` channels and `width × height` pixels;
/// returns `flow.width × flow.height × channels` values. An empty or short source gives zeros.
pub fn warp_f32(
    src: &[f32],
    channels: usize,
    width: usize,
    height: usize,
    flow: &Flow,
) -> Vec<f32> {
    let (w, h) = (flow.width as usize, flow.height as usize);
    let mut out = vec![0.0f32; w * h * channels];
    if channels == 0
        || width == 0
        || height == 0
        || src.len() < width * height * channels
        || !flow.is_consistent()
    {
        return out;
    }
    out.par_chunks_mut(w * channels)
        .enumerate()
        .for_each(|(y, row)| {
            for x in 0..w {
                let k = y * w + x;
                let sx = x as f32 + flow.dx[k];
                let sy = y as f32 + flow.dy[k];
                let sx = if sx.is_finite() {
                    sx.clamp(0.0, (width - 1) as f32)
                } else {
                    x.min(width - 1) as f32
                };
                let sy = if sy.is_finite() {
                    sy.clamp(0.0, (height - 1) as f32)
                } else {
                    y.min(height - 1) as f32
                };
                let x0 = sx as usize;
                let y0 = sy as usize;
                let x1 = (x0 + 1).min(width - 1);
                let y1 = (y0 + 1).min(height - 1);
                let fx = sx - x0 as f32;
                let fy = sy - y0 as f32;
                let (a, b, c, d) = (
                    (y0 * width + x0) * channels,
                    (y0 * width + x1) * channels,
                    (y1 * width + x0) * channels,
                    (y1 * width + x1) * channels,
                );
                for ch in 0..channels {
                    let top = src[a + ch] * (1.0 - fx) + src[b + ch] * fx;
                    let bottom = src[c + ch] * (1.0 - fx) + src[d + ch] * fx;
                    row[x * channels + ch] = top * (1.0 - fy) + bottom * fy;
                }
            }
        });
    out
}

/// The flicker metric: mean |current − warp(previous)| over the reliable pixels and the
/// three channels, on a 0..1 scale. `flow_to_previous` maps `current`'s frame to `previous`'s
/// (t → t−1) and `reliable` is its mask (see [`flow::reliable`]). 0 when no pixel is reliable.
///
/// Errors if the sizes disagree.
pub fn warping_error(
    current: &RgbImage,
    previous: &RgbImage,
    flow_to_previous: &Flow,
    reliable: &[bool],
) -> Result<f64> {
    let (sum, count) = warping_error_sum(current, previous, flow_to_previous, reliable)?;
    Ok(if count == 0 { 0.0 } else { sum / count as f64 })
}

/// The sum of |current − warp(previous)| (0..1 per channel) and how many values it adds up, to
/// pool [`warping_error`] over a clip.
pub fn warping_error_sum(
    current: &RgbImage,
    previous: &RgbImage,
    flow_to_previous: &Flow,
    reliable: &[bool],
) -> Result<(f64, usize)> {
    check_sizes(current, previous, flow_to_previous, reliable)?;
    let warped = warp(previous, flow_to_previous);
    let mut sum = 0u64;
    let mut count = 0usize;
    for ((c, p), &r) in current
        .as_raw()
        .chunks_exact(3)
        .zip(warped.as_raw().chunks_exact(3))
        .zip(reliable)
    {
        if r {
            for ch in 0..3 {
                sum += u64::from(c[ch].abs_diff(p[ch]));
            }
            count += 3;
        }
    }
    Ok((sum as f64 / 255.0, count))
}

fn check_sizes(a: &RgbImage, b: &RgbImage, flow: &Flow, reliable: &[bool]) -> Result<()> {
    if a.dimensions() != b.dimensions() || a.dimensions() != (flow.width, flow.height) {
        return Err(Error::invalid(format!(
            "frames {}×{} and {}×{} and flow {}×{} must be one size",
            a.width(),
            a.height(),
            b.width(),
            b.height(),
            flow.width,
            flow.height
        )));
    }
    if !flow.is_consistent() {
        return Err(Error::invalid(
            "flow field holds the wrong number of values",
        ));
    }
    let n = a.width() as usize * a.height() as usize;
    if reliable.len() != n {
        return Err(Error::invalid(format!(
            "reliability mask has {} values for {} pixels",
            reliable.len(),
            n
        )));
    }
    Ok(())
}

/// Whether a reliability mask says the frame is a new shot: fewer than half its pixels have a
/// consistent flow ([`SCENE_CUT_RELIABLE`]). Then blending would paste an unrelated picture in,
/// so the output restarts from the fresh frame. An empty mask counts as a cut.
pub fn is_scene_cut(reliable: &[bool]) -> bool {
    reliable_fraction(reliable) < SCENE_CUT_RELIABLE
}

/// The fraction of reliable pixels (0 for an empty mask).
pub fn reliable_fraction(reliable: &[bool]) -> f32 {
    if reliable.is_empty() {
        return 0.0;
    }
    reliable.iter().filter(|&&r| r).count() as f32 / reliable.len() as f32
}

/// Blends a fresh stylised frame with the previous output warped along the flow:
/// `out = a·warp(previous) + (1 − a)·fresh`, with `a = weight` deep inside reliable regions,
/// fading to 0 over `feather` pixels towards unreliable ones, and 0 (fresh only) on unreliable
/// pixels and whole scene cuts.
#[derive(Clone, Debug, PartialEq)]
pub struct Blender {
    weight: f32,
    feather: usize,
}

impl Default for Blender {
    fn default() -> Self {
        Blender {
            weight: DEFAULT_WEIGHT,
            feather: DEFAULT_FEATHER,
        }
    }
}

impl Blender {
    /// A blender carrying `weight` (0..1, exclusive of 1: some fresh frame must always come in,
    /// or the style would freeze) of the warped previous output.
    pub fn new(weight: f32) -> Result<Self> {
        if !(0.0..1.0).contains(&weight) {
            return Err(Error::invalid(format!(
                "temporal blend weight {weight} must be in 0..1 (1 would freeze the first frame)"
            )));
        }
        Ok(Blender {
            weight,
            feather: DEFAULT_FEATHER,
        })
    }

    /// The same blender with another feather radius (0: hard mask edges).
    pub fn with_feather(mut self, radius: usize) -> Self {
        self.feather = radius;
        self
    }

    pub fn weight(&self) -> f32 {
        self.weight
    }

    pub fn feather(&self) -> usize {
        self.feather
    }

    /// The per-pixel share of the warped previous output for a `width × height` mask: `weight`
    /// times the mask times its box-blurred self (so 0 on unreliable pixels and a soft ramp
    /// next to them), or all 0 on a scene cut.
    pub fn weights(&self, reliable: &[bool], width: usize, height: usize) -> Vec<f32> {
        let n = width * height;
        if reliable.len() != n || is_scene_cut(reliable) {
            return vec![0.0; n];
        }
        let mask: Vec<f32> = reliable
            .iter()
            .map(|&r| if r { 1.0 } else { 0.0 })
            .collect();
        let soft = if self.feather == 0 {
            mask.clone()
        } else {
            box_blur(&mask, width, height, self.feather)
        };
        mask.iter()
            .zip(&soft)
            .map(|(&m, &s)| self.weight * m * s)
            .collect()
    }

    /// The output frame t from the fresh stylised frame t, the previous *output* t−1, the flow
    /// t → t−1 of the input frames and its reliability mask. All must be one size.
    pub fn blend(
        &self,
        fresh: &RgbImage,
        previous_output: &RgbImage,
        flow_to_previous: &Flow,
        reliable: &[bool],
    ) -> Result<RgbImage> {
        check_sizes(fresh, previous_output, flow_to_previous, reliable)?;
        if is_scene_cut(reliable) {
            return Ok(fresh.clone());
        }
        let (w, h) = fresh.dimensions();
        let a = self.weights(reliable, w as usize, h as usize);
        let warped = warp(previous_output, flow_to_previous);
        let mut out = fresh.clone();
        out.as_mut()
            .par_chunks_mut(3 * w as usize)
            .zip(warped.as_raw().par_chunks(3 * w as usize))
            .zip(a.par_chunks(w as usize))
            .for_each(|((row, prev), a)| {
                for (x, &a) in a.iter().enumerate() {
                    if a > 0.0 {
                        for ch in 0..3 {
                            let i = 3 * x + ch;
                            let v = a * prev[i] as f32 + (1.0 - a) * row[i] as f32;
                            row[i] = v.round().clamp(0.0, 255.0) as u8;
                        }
                    }
                }
            });
        Ok(out)
    }
}

/// Mean over a `(2r+1)²` window (clamped at the borders), by running sums in both directions.
fn box_blur(src: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let mut tmp = vec![0.0f32; w * h];
    tmp.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let s = &src[y * w..][..w];
        let mut prefix = vec![0.0f32; w + 1];
        for x in 0..w {
            prefix[x + 1] = prefix[x] + s[x];
        }
        for (x, o) in row.iter_mut().enumerate() {
            let lo = x.saturating_sub(r);
            let hi = (x + r + 1).min(w);
            *o = (prefix[hi] - prefix[lo]) / (hi - lo) as f32;
        }
    });
    let mut out = vec![0.0f32; w * h];
    // Columns: a running sum per column, row by row.
    let mut col = vec![0.0f32; w];
    let mut prefix = vec![vec![0.0f32; w]; h + 1];
    for y in 0..h {
        for x in 0..w {
            col[x] += tmp[y * w + x];
        }
        prefix[y + 1].copy_from_slice(&col);
    }
    for y in 0..h {
        let lo = y.saturating_sub(r);
        let hi = (y + r + 1).min(h);
        let inv = 1.0 / (hi - lo) as f32;
        for x in 0..w {
            out[y * w + x] = (prefix[hi][x] - prefix[lo][x]) * inv;
        }
    }
    out
}

/// One blended frame from [`VideoBlender::push`].
#[derive(Clone, Debug)]
pub struct BlendedFrame {
    pub image: RgbImage,
    /// Fraction of pixels whose flow was reliable (1 for the first frame).
    pub reliable_fraction: f32,
    /// The frame started a new shot (or the clip): the output is the fresh frame.
    pub scene_cut: bool,
}

/// The whole per-frame loop for a feed-forward video: keeps the previous input's pyramid and
/// the previous output, computes both flows of each new input frame against it, checks them and
/// blends. The stylised frame may differ in size from the input (the flow is resampled).
pub struct VideoBlender {
    blender: Blender,
    params: FlowParams,
    previous: Option<(Pyramid, RgbImage)>,
}

impl VideoBlender {
    pub fn new(blender: Blender) -> Self {
        VideoBlender {
            blender,
            params: FlowParams::default(),
            previous: None,
        }
    }

    /// The same with other flow parameters.
    pub fn with_flow_params(mut self, params: FlowParams) -> Self {
        self.params = params;
        self
    }

    /// Forgets the history: the next frame is taken fresh.
    pub fn reset(&mut self) {
        self.previous = None;
    }

    /// The output for input frame `input` whose per-frame stylisation is `fresh`.
    pub fn push(&mut self, input: &RgbImage, fresh: &RgbImage) -> Result<BlendedFrame> {
        let pyramid = Pyramid::new(input, &self.params)?;
        let result = match self.previous.take() {
            Some((prev_pyr, prev_out))
                if prev_pyr.dimensions() == pyramid.dimensions()
                    && prev_out.dimensions() == fresh.dimensions() =>
            {
                let (backward, forward) = rayon::join(
                    || flow::flow_between(&pyramid, &prev_pyr, &self.params),
                    || flow::flow_between(&prev_pyr, &pyramid, &self.params),
                );
                let (backward, forward) = (backward?, forward?);
                let mut mask = flow::reliable(&forward, &backward);
                let fraction = reliable_fraction(&mask);
                let cut = is_scene_cut(&mask);
                let image = if cut {
                    fresh.clone()
                } else {
                    let (fw, fh) = fresh.dimensions();
                    let backward = if (fw, fh) == input.dimensions() {
                        backward
                    } else {
                        mask = resize_mask(&mask, input.width(), input.height(), fw, fh);
                        backward.resized(fw, fh)
                    };
                    self.blender.blend(fresh, &prev_out, &backward, &mask)?
                };
                BlendedFrame {
                    image,
                    reliable_fraction: fraction,
                    scene_cut: cut,
                }
            }
            _ => BlendedFrame {
                image: fresh.clone(),
                reliable_fraction: 1.0,
                scene_cut: true,
            },
        };
        self.previous = Some((pyramid, result.image.clone()));
        Ok(result)
    }
}

/// Nearest-neighbour resize of a mask (pixel centres aligned).
pub fn resize_mask(mask: &[bool], sw: u32, sh: u32, dw: u32, dh: u32) -> Vec<bool> {
    let (sw, sh, dw, dh) = (sw as usize, sh as usize, dw as usize, dh as usize);
    if mask.len() != sw * sh || sw == 0 || sh == 0 {
        return vec![false; dw * dh];
    }
    let mut out = vec![false; dw * dh];
    for y in 0..dh {
        let sy = (((y as f32 + 0.5) * sh as f32 / dh as f32) as usize).min(sh - 1);
        for x in 0..dw {
            let sx = (((x as f32 + 0.5) * sw as f32 / dw as f32) as usize).min(sw - 1);
            out[y * dw + x] = mask[sy * sw + sx];
        }
    }
    out
}
