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

pub use super::flow::resize_mask;
use super::flow::{self, Flow, FlowParams, Pyramid};
use crate::error::{Error, Result};

/// Share of the warped previous output in reliable pixels. Measured on 30 frames of bikes.mp4 at
/// 480 px stylised by starry-night (`atelier bench --only flicker`, 3 December 2026, with the
/// two-scale contrast restoration): 0.8 gave a warping error 0.34× per-frame's, 0.85 gave 0.30×,
/// both with each frame's style loss at most 1.16× its per-frame result (0.9 with one scale:
/// 0.25× but 1.27×).
pub const DEFAULT_WEIGHT: f32 = 0.85;

/// Radius in pixels of the box blur that softens the mask's edges (reliable pixels next to
/// unreliable ones get a lower weight, so occlusion borders fade instead of showing a seam).
pub const DEFAULT_FEATHER: usize = 3;

/// A frame with fewer reliable pixels than this fraction is a scene cut. Measured on all 250
/// frames of bikes.mp4 at 480 px: its five cuts (frames 31, 77, 138, 188, 243; ffmpeg's scene
/// score agrees) leave 0.00–0.07 of the pixels reliable, while fast motion with blur (a bus
/// passing close, a panning shot) goes down to 0.32. 0.5 would have reset 15 of those frames.
pub const SCENE_CUT_RELIABLE: f32 = 0.2;

/// `image` warped along `flow`: output pixel p is `image` sampled at p + flow(p), bilinear,
/// clamped to the nearest edge outside. The output has the flow's size (`image` is sampled in
/// its own pixel coordinates; it is normally the same size).
pub fn warp(image: &RgbImage, flow: &Flow) -> RgbImage {
    warp_with(image, flow, sample_bilinear)
}

/// `image` warped along `flow`, each output pixel p given by `sample(source, its size, p's x,
/// p's y, flow dx, flow dy)`; zeros for an empty image or an inconsistent flow.
fn warp_with(
    image: &RgbImage,
    flow: &Flow,
    sample: impl Fn(&[u8], (usize, usize), usize, usize, f32, f32) -> [u8; 3] + Sync,
) -> RgbImage {
    let (w, h) = (flow.width as usize, flow.height as usize);
    let (sw, sh) = (image.width() as usize, image.height() as usize);
    let mut out = vec![0u8; w * h * 3];
    let src = image.as_raw();
    if sw > 0 && sh > 0 && flow.is_consistent() {
        out.par_chunks_mut(w * 3).enumerate().for_each(|(y, row)| {
            for x in 0..w {
                let k = y * w + x;
                let pixel = sample(src, (sw, sh), x, y, flow.dx[k], flow.dy[k]);
                row[3 * x..3 * x + 3].copy_from_slice(&pixel);
            }
        });
    }
    RgbImage::from_raw(w as u32, h as u32, out).unwrap_or_else(|| RgbImage::new(w as u32, h as u32))
}

/// Bilinear taps along one axis for coordinate `s` (clamped to 0..len−1; a non-finite one
/// falls back to the pixel's own `own`): index, next index, fraction.
#[inline]
fn tap(s: f32, own: usize, len: usize) -> (usize, usize, f32) {
    let last = (len - 1) as f32;
    let s = if s.is_finite() {
        s.clamp(0.0, last)
    } else {
        (own as f32).min(last)
    };
    let i0 = s as usize;
    ((i0), (i0 + 1).min(len - 1), s - i0 as f32)
}

/// The RGB pixel of `src` (`size` pixels) at (x + dx, y + dy), bilinear, clamped to the nearest
/// edge outside: [`warp`]'s sampling, shared with the warping error.
#[inline]
fn sample_bilinear(
    src: &[u8],
    (sw, sh): (usize, usize),
    x: usize,
    y: usize,
    dx: f32,
    dy: f32,
) -> [u8; 3] {
    let (x0, x1, fx) = tap(x as f32 + dx, x, sw);
    let (y0, y1, fy) = tap(y as f32 + dy, y, sh);
    let (a, b, c, d) = (
        (y0 * sw + x0) * 3,
        (y0 * sw + x1) * 3,
        (y1 * sw + x0) * 3,
        (y1 * sw + x1) * 3,
    );
    std::array::from_fn(|ch| {
        let top = src[a + ch] as f32 + (src[b + ch] as f32 - src[a + ch] as f32) * fx;
        let bottom = src[c + ch] as f32 + (src[d + ch] as f32 - src[c + ch] as f32) * fx;
        to_u8(top + (bottom - top) * fy)
    })
}

/// Rounds to the nearest byte, saturating (NaN → 0); no libm `roundf` call.
#[inline]
fn to_u8(x: f32) -> u8 {
    (x.clamp(0.0, 255.0) + 0.5) as u8
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

/// How [`Blender`] resamples the previous output along the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    /// Bilinear, as [`warp`]: cheapest, but each warp averages neighbours at fractional offsets
    /// (on bikes.mp4 stylised frames one warp kept 0.83 of the texture energy), and the blur
    /// accumulates along the history.
    Bilinear,
    /// Catmull-Rom bicubic ([`warp_cubic`]): keeps most of the fine brush texture per warp.
    Cubic,
}

/// `image` warped along `flow` like [`warp`], with Catmull-Rom bicubic interpolation (16 taps,
/// edges clamped, result clamped to 0..255): sharper, so a history carried over many frames
/// does not blur.
pub fn warp_cubic(image: &RgbImage, flow: &Flow) -> RgbImage {
    warp_with(image, flow, sample_cubic)
}

/// The RGB pixel of `src` (`size` pixels) at (x + dx, y + dy), Catmull-Rom bicubic with the
/// taps clamped to the image.
#[inline]
fn sample_cubic(
    src: &[u8],
    (sw, sh): (usize, usize),
    x: usize,
    y: usize,
    dx: f32,
    dy: f32,
) -> [u8; 3] {
    let (sx, sy) = (x as f32 + dx, y as f32 + dy);
    let sx = if sx.is_finite() {
        sx.clamp(0.0, (sw - 1) as f32)
    } else {
        0.0
    };
    let sy = if sy.is_finite() {
        sy.clamp(0.0, (sh - 1) as f32)
    } else {
        0.0
    };
    let (x0, y0) = (flow::fast_floor(sx), flow::fast_floor(sy));
    let wx = catmull_rom(sx - x0);
    let wy = catmull_rom(sy - y0);
    let (x0, y0) = (x0 as isize, y0 as isize);
    let mut acc = [0.0f32; 3];
    if x0 >= 1 && y0 >= 1 && x0 + 2 < sw as isize && y0 + 2 < sh as isize {
        // Interior: four contiguous pixels per source row, no clamping.
        let (x0, y0) = (x0 as usize - 1, y0 as usize - 1);
        for (j, &wyj) in wy.iter().enumerate() {
            let taps = &src[((y0 + j) * sw + x0) * 3..][..12];
            let mut line = [0.0f32; 3];
            for (i, &wxi) in wx.iter().enumerate() {
                line[0] += wxi * taps[3 * i] as f32;
                line[1] += wxi * taps[3 * i + 1] as f32;
                line[2] += wxi * taps[3 * i + 2] as f32;
            }
            for ch in 0..3 {
                acc[ch] += wyj * line[ch];
            }
        }
        return acc.map(to_u8);
    }
    let cols: [usize; 4] =
        std::array::from_fn(|i| (x0 + i as isize - 1).clamp(0, sw as isize - 1) as usize);
    for (j, &wyj) in wy.iter().enumerate() {
        let r = (y0 + j as isize - 1).clamp(0, sh as isize - 1) as usize * sw;
        let mut line = [0.0f32; 3];
        for (i, &wxi) in wx.iter().enumerate() {
            let p = (r + cols[i]) * 3;
            line[0] += wxi * src[p] as f32;
            line[1] += wxi * src[p + 1] as f32;
            line[2] += wxi * src[p + 2] as f32;
        }
        for ch in 0..3 {
            acc[ch] += wyj * line[ch];
        }
    }
    acc.map(to_u8)
}

/// Catmull-Rom weights of the taps at −1, 0, 1, 2 for a fraction `t` in 0..1.
#[inline]
fn catmull_rom(t: f32) -> [f32; 4] {
    let (t2, t3) = (t * t, t * t * t);
    [
        0.5 * (-t3 + 2.0 * t2 - t),
        0.5 * (3.0 * t3 - 5.0 * t2 + 2.0),
        0.5 * (-3.0 * t3 + 4.0 * t2 + t),
        0.5 * (t3 - t2),
    ]
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
    // Row by row in parallel, each value warped as it is compared ([`warp`]'s sampling): no
    // warped copy is kept (this ran twice per frame, 4.5 % of a 640x360 video's time, when it
    // warped a whole image first and summed on one core).
    let (w, h) = (
        flow_to_previous.width as usize,
        flow_to_previous.height as usize,
    );
    let (src, cur) = (previous.as_raw(), current.as_raw());
    let flow = flow_to_previous;
    let (sum, count) = (0..h)
        .into_par_iter()
        .map(|y| {
            let mut sum = 0u64;
            let mut count = 0usize;
            for x in 0..w {
                let k = y * w + x;
                if !reliable[k] {
                    continue;
                }
                let warped = sample_bilinear(src, (w, h), x, y, flow.dx[k], flow.dy[k]);
                for (ch, &value) in warped.iter().enumerate() {
                    sum += u64::from(cur[3 * k + ch].abs_diff(value));
                }
                count += 3;
            }
            (sum, count)
        })
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
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

/// Whether a reliability mask says the frame is a new shot: fewer than a fifth of its pixels
/// have a consistent flow ([`SCENE_CUT_RELIABLE`]). Then blending would paste an unrelated picture in,
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
    interpolation: Interpolation,
    keep_contrast: bool,
}

impl Default for Blender {
    fn default() -> Self {
        Blender {
            weight: DEFAULT_WEIGHT,
            feather: DEFAULT_FEATHER,
            interpolation: Interpolation::Cubic,
            keep_contrast: true,
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
            ..Blender::default()
        })
    }

    /// The same blender resampling the previous output with `interpolation`.
    pub fn with_interpolation(mut self, interpolation: Interpolation) -> Self {
        self.interpolation = interpolation;
        self
    }

    /// The same blender with contrast restoration on or off (see [`Blender::blend`]).
    pub fn with_keep_contrast(mut self, keep: bool) -> Self {
        self.keep_contrast = keep;
        self
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
        let warped = match self.interpolation {
            Interpolation::Bilinear => warp(previous_output, flow_to_previous),
            Interpolation::Cubic => warp_cubic(previous_output, flow_to_previous),
        };
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
                            row[i] = to_u8(v);
                        }
                    }
                }
            });
        if self.keep_contrast {
            // Coarse first, then fine: the fine windows alone left the strokes' larger-scale
            // contrast washed out (style loss up to 1.26× per-frame; with both, 1.16×).
            restore_contrast(&mut out, fresh, COARSE_CONTRAST_RADIUS);
            restore_contrast(&mut out, fresh, CONTRAST_RADIUS);
        }
        Ok(out)
    }
}

/// Radius of the windows in which [`restore_contrast`] matches local contrast.
const CONTRAST_RADIUS: usize = 2;

/// Radius of the first, coarser pass of [`restore_contrast`] (25×25 windows: a brush stroke's
/// size at 480 px). Measured on bikes.mp4 at 480 px: 6 gave worst-frame style loss 1.18×, 12
/// gave 1.15× (weight 0.8).
const COARSE_CONTRAST_RADIUS: usize = 12;

/// The most [`restore_contrast`] amplifies detail (a guard where the windows' statistics are
/// noisy; independent textures blended at 0.7 lose a factor 0.76).
const MAX_CONTRAST_GAIN: f32 = 1.6;

/// Gives the blend back the local contrast of the fresh frame: averaging two brush textures
/// that do not line up lowers their contrast (by √(a² + (1 − a)²) if independent), which reads
/// as a washed-out style. In each `(2r+1)²` window the blend's detail (each channel's difference
/// from its local mean) is scaled by σ_fresh / σ_blend (grey standard deviations, gain in
/// 1..1.6), so
/// the output keeps each frame's texture strength while its strokes stay where the history put
/// them. Pixels taken fresh have σ ratio 1 and do not change.
fn restore_contrast(out: &mut RgbImage, fresh: &RgbImage, r: usize) {
    let (w, h) = (out.width() as usize, out.height() as usize);
    let grey = |img: &RgbImage| -> Vec<f32> {
        img.as_raw()
            .chunks_exact(3)
            .map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32)
            .collect()
    };
    let (gf, gb) = rayon::join(|| grey(fresh), || grey(out));
    let stats = |g: &[f32]| {
        let sq: Vec<f32> = g.iter().map(|x| x * x).collect();
        rayon::join(|| box_blur(g, w, h, r), || box_blur(&sq, w, h, r))
    };
    // Per-channel local means of the blend, the base each channel's detail is scaled around.
    let channel_mean = |c: usize| -> Vec<f32> {
        let v: Vec<f32> = out
            .as_raw()
            .iter()
            .skip(c)
            .step_by(3)
            .map(|&x| x as f32)
            .collect();
        box_blur(&v, w, h, r)
    };
    let (((mf, mf2), (mb, mb2)), (m0, (m1, m2))) = rayon::join(
        || rayon::join(|| stats(&gf), || stats(&gb)),
        || {
            rayon::join(
                || channel_mean(0),
                || rayon::join(|| channel_mean(1), || channel_mean(2)),
            )
        },
    );
    let means = [m0, m1, m2];
    out.as_mut()
        .par_chunks_mut(3 * w.max(1))
        .enumerate()
        .for_each(|(y, row)| {
            for (x, p) in row.chunks_exact_mut(3).enumerate() {
                let i = y * w + x;
                let vf = (mf2[i] - mf[i] * mf[i]).max(0.0);
                let vb = (mb2[i] - mb[i] * mb[i]).max(0.0);
                // +4: a grey level² of slack so flat areas (noise-level variance) stay as they are.
                let gain = ((vf + 4.0) / (vb + 4.0))
                    .sqrt()
                    .clamp(1.0, MAX_CONTRAST_GAIN);
                if gain > 1.0 {
                    for (c, m) in p.iter_mut().zip(&means) {
                        let m = m[i];
                        *c = to_u8(m + gain * (*c as f32 - m));
                    }
                }
            }
        });
}

/// Mean over a `(2r+1)²` window (clamped at the borders), by running sums in both directions.
fn box_blur(src: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    if w == 0 || h == 0 || src.len() < w * h {
        return vec![0.0; w * h];
    }
    let mut tmp = vec![0.0f32; w * h];
    // Rows: a sliding sum over x − r ..= x + r (f64, see below).
    tmp.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let s = &src[y * w..][..w];
        let mut acc: f64 = s[..(r + 1).min(w)].iter().map(|&v| f64::from(v)).sum();
        let inner = 1.0 / (2 * r + 1) as f64;
        for (x, o) in row.iter_mut().enumerate() {
            let inv = if x >= r && x + r < w {
                inner
            } else {
                1.0 / ((x + r).min(w - 1) - x.saturating_sub(r) + 1) as f64
            };
            *o = (acc * inv) as f32;
            if x + r + 1 < w {
                acc += f64::from(s[x + r + 1]);
            }
            if x >= r {
                acc -= f64::from(s[x - r]);
            }
        }
    });
    // Columns: a sliding sum over rows y − r ..= y + r, one row added and one dropped per step.
    let mut out = vec![0.0f32; w * h];
    // f64: the running sum adds and drops thousands of values (squares up to 65025).
    let mut acc = vec![0.0f64; w];
    for row in tmp.chunks_exact(w).take(r.min(h - 1) + 1) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += f64::from(v);
        }
    }
    let mut lo = 0; // first row in the window
    let mut hi = r.min(h - 1); // last row in the window
    for y in 0..h {
        let want_lo = y.saturating_sub(r);
        let want_hi = (y + r).min(h - 1);
        while hi < want_hi {
            hi += 1;
            for (a, &v) in acc.iter_mut().zip(&tmp[hi * w..][..w]) {
                *a += f64::from(v);
            }
        }
        while lo < want_lo {
            for (a, &v) in acc.iter_mut().zip(&tmp[lo * w..][..w]) {
                *a -= f64::from(v);
            }
            lo += 1;
        }
        let inv = 1.0 / (hi - lo + 1) as f64;
        for (o, &a) in out[y * w..][..w].iter_mut().zip(&acc) {
            *o = (a * inv) as f32;
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
                let (backward, mut mask) =
                    flow::backward_flow_and_reliable(&prev_pyr, &pyramid, &self.params)?;
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
