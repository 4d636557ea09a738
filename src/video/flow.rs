//! Dense optical flow between two frames: DIS, Dense Inverse Search (Kroeger, Timofte, Dai and
//! Van Gool, "Fast Optical Flow using Dense Inverse Search", ECCV 2016), written on plain `f32`
//! slices.
//!
//! Why DIS: video stylisation needs a flow field per frame pair, twice (forward and backward for
//! the consistency check), on a 2-core CPU next to the style network. DIS is the fastest method
//! with usable accuracy: a few thousand small patch alignments plus a weighted average, no global
//! solve.
//!
//! The algorithm, as implemented here:
//! 1. Both frames become grey (luma, 0..255) and a pyramid of 2×2 box averages. The finest level
//!    computed is [`FlowParams::finest_level`] (1: half resolution; the field is upsampled at
//!    the end), the coarsest the last whose shorter side is still ≥ [`FlowParams::min_coarse_side`]
//!    (640×360: level 4, 40×22, so 30 px of motion is under 2 px there).
//! 2. At each level, coarse to fine, a grid of `patch_size`² patches (every `stride` px, the last
//!    row and column flush with the border so every pixel is covered) is aligned to the other
//!    frame by inverse-compositional Gauss-Newton on the *mean-normalised* SSD (robust to
//!    brightness changes). The start is the coarser level's dense flow at the patch centre, or
//!    one patch side left, right, above or below if that fits better (patches straddling a
//!    motion boundary or a border start from their neighbour's motion). The Hessian is the
//!    template's, computed once per patch; an iteration costs one bilinear resample of the
//!    patch (constant weights over the patch, the warp being a translation). Samples that fall
//!    outside the frame are left out rather than edge-clamped. The patch keeps the iterate with
//!    the lowest SSD, so a diverging patch falls back instead of polluting the field.
//! 3. Densification: each pixel's flow is the average of the flows of the patches covering it,
//!    weighted by `1 / max(1, |I1(x + u) − I0(x) − patch offset|)`, so patches that fit the pixel
//!    win.
//! 4. Variational refinement (a light version of the paper's): a few red-black SOR sweeps on the
//!    linearised brightness constancy with a Charbonnier data term and a quadratic smoothness
//!    term. It removes the patch average's blockiness; on bikes.mp4 it raised the share of
//!    pixels passing the forward-backward check from 0.62 to 0.81 at the same warping error.
//! 5. The finest level's field is bilinearly upsampled to full resolution (values × 2^level).
//!
//! Measured (release build, this 2-core machine, shared with other builds so ±30 %): 14–22 ms
//! per 640×360 field on two threads, ~17 ms CPU on one; 7–10 ms at 480×204. A 5 px shift of a
//! synthetic texture is recovered within 0.03 px on average (0.12 worst), a 20 px one too.

use crate::error::{Error, Result};
use image::RgbImage;
use rayon::prelude::*;

/// A dense flow field: for pixel `p` of frame `from`, `p + (dx, dy)` is where it is in frame
/// `to`. Row-major, `width × height` values in each of `dx`, `dy`.
#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    pub width: u32,
    pub height: u32,
    pub dx: Vec<f32>,
    pub dy: Vec<f32>,
}

impl Flow {
    /// The zero field (no motion).
    pub fn zeros(width: u32, height: u32) -> Self {
        let n = width as usize * height as usize;
        Flow {
            width,
            height,
            dx: vec![0.0; n],
            dy: vec![0.0; n],
        }
    }

    /// Whether `dx` and `dy` both hold `width × height` values (the fields are public, so a
    /// hand-made flow may not).
    pub fn is_consistent(&self) -> bool {
        let n = self.width as usize * self.height as usize;
        self.dx.len() == n && self.dy.len() == n
    }

    /// The flow at pixel (x, y); (0, 0) outside the field.
    pub fn at(&self, x: u32, y: u32) -> (f32, f32) {
        if x >= self.width || y >= self.height {
            return (0.0, 0.0);
        }
        let i = y as usize * self.width as usize + x as usize;
        (
            self.dx.get(i).copied().unwrap_or(0.0),
            self.dy.get(i).copied().unwrap_or(0.0),
        )
    }

    /// The flow at a sub-pixel position, bilinear, clamped to the nearest edge outside.
    pub fn sample(&self, x: f32, y: f32) -> (f32, f32) {
        if !self.is_consistent() || self.dx.is_empty() {
            return (0.0, 0.0);
        }
        let (w, h) = (self.width as usize, self.height as usize);
        (
            bilinear(&self.dx, w, h, x, y),
            bilinear(&self.dy, w, h, x, y),
        )
    }

    /// The field resampled to another size (pixel centres aligned, vectors scaled), e.g. when
    /// the stylised frame is not the size the flow was computed at.
    pub fn resized(&self, width: u32, height: u32) -> Flow {
        if width == self.width && height == self.height {
            return self.clone();
        }
        let mut out = Flow::zeros(width, height);
        if !self.is_consistent() || self.dx.is_empty() || width == 0 || height == 0 {
            return out;
        }
        let sx = self.width as f32 / width as f32;
        let sy = self.height as f32 / height as f32;
        for y in 0..height as usize {
            let fy = (y as f32 + 0.5) * sy - 0.5;
            for x in 0..width as usize {
                let fx = (x as f32 + 0.5) * sx - 0.5;
                let (u, v) = self.sample(fx, fy);
                let i = y * width as usize + x;
                out.dx[i] = u / sx;
                out.dy[i] = v / sy;
            }
        }
        out
    }
}

/// The tuning of [`dense_flow`]. The defaults are close to OpenCV's "fast" DIS preset (8 px
/// patches, stride 4, 16 iterations, from half resolution) plus 5 refinement sweeps, the
/// refinement weights chosen on bikes.mp4; see the module docs for what each step does.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowParams {
    /// Side of the square patches, in pixels of the level (at most [`MAX_PATCH`]).
    pub patch_size: usize,
    /// Distance between patch origins; `patch_size / 2` makes each pixel covered by ~4 patches.
    pub stride: usize,
    /// Gauss-Newton iterations per patch (stops early once an update is under 0.01 px).
    pub iterations: usize,
    /// The finest pyramid level computed: 0 full resolution, 1 half (the field is upsampled).
    pub finest_level: usize,
    /// The coarsest level is the last whose shorter side is at least this many pixels.
    pub min_coarse_side: usize,
    /// Red-black SOR sweeps of variational refinement per level (0: none).
    pub refine_iterations: usize,
    /// Smoothness weight of the refinement (intensities in 0..255). On bikes.mp4 20, 60 and 200
    /// gave the same warping error of the input frames (0.0031–0.0032) and a reliable share
    /// of 0.80–0.81; 60 halves the synthetic error of 20.
    pub refine_smoothness: f32,
    /// ε of the refinement's Charbonnier data penalty √(r² + ε²), in grey levels: residuals
    /// well under ε weigh as in least squares, larger ones (occlusions) are damped.
    pub refine_epsilon: f32,
    /// Blur each level with a [1 2 1]² kernel before matching (less aliasing and noise). Off by
    /// default: on bikes.mp4 it lowered the reliable share (0.81 → 0.78) for no gain.
    pub presmooth: bool,
}

/// The largest supported [`FlowParams::patch_size`] (patches live in stack buffers).
pub const MAX_PATCH: usize = 16;

impl Default for FlowParams {
    fn default() -> Self {
        FlowParams {
            patch_size: 8,
            stride: 4,
            iterations: 16,
            finest_level: 1,
            min_coarse_side: 12,
            refine_iterations: 5,
            refine_smoothness: 60.0,
            refine_epsilon: 4.0,
            presmooth: false,
        }
    }
}

impl FlowParams {
    fn check(&self) -> Result<()> {
        if self.patch_size < 2 || self.patch_size > MAX_PATCH {
            return Err(Error::invalid(format!(
                "flow patch size {} must be 2..={MAX_PATCH}",
                self.patch_size
            )));
        }
        if self.stride == 0 || self.stride > self.patch_size {
            return Err(Error::invalid(format!(
                "flow patch stride {} must be 1..=patch size {}",
                self.stride, self.patch_size
            )));
        }
        if !(self.refine_smoothness.is_finite() && self.refine_smoothness >= 0.0) {
            return Err(Error::invalid(
                "flow refinement smoothness must be a finite number ≥ 0",
            ));
        }
        if !(self.refine_epsilon.is_finite() && self.refine_epsilon > 0.0) {
            return Err(Error::invalid(
                "flow refinement epsilon must be a finite number > 0",
            ));
        }
        Ok(())
    }
}

/// Dense optical flow from `from` to `to` (DIS with the default [`FlowParams`]).
///
/// Errors if the frames differ in size or are empty.
pub fn dense_flow(from: &RgbImage, to: &RgbImage) -> Result<Flow> {
    dense_flow_with(from, to, &FlowParams::default())
}

/// [`dense_flow`] with explicit parameters.
pub fn dense_flow_with(from: &RgbImage, to: &RgbImage, params: &FlowParams) -> Result<Flow> {
    if from.dimensions() != to.dimensions() {
        return Err(Error::invalid(format!(
            "optical flow needs frames of one size, got {}×{} and {}×{}",
            from.width(),
            from.height(),
            to.width(),
            to.height()
        )));
    }
    params.check()?;
    let (a, b) = rayon::join(|| Pyramid::new(from, params), || Pyramid::new(to, params));
    flow_between(&a?, &b?, params)
}

/// A frame prepared for flow: its grey pyramid and the template gradients. Build it once per
/// frame when the same frame takes part in two flows (forward and backward).
#[derive(Clone, Debug)]
pub struct Pyramid {
    width: u32,
    height: u32,
    /// Pyramid levels, finest (the params' `finest_level`, or less for tiny frames) first.
    levels: Vec<Level>,
    patch_size: usize,
}

#[derive(Clone, Debug)]
struct Level {
    w: usize,
    h: usize,
    grey: Vec<f32>,
    gx: Vec<f32>,
    gy: Vec<f32>,
}

impl Pyramid {
    /// The pyramid of `image` for `params` (the same params must be used in [`flow_between`]).
    pub fn new(image: &RgbImage, params: &FlowParams) -> Result<Pyramid> {
        params.check()?;
        let (width, height) = image.dimensions();
        if width == 0 || height == 0 {
            return Err(Error::invalid("optical flow needs a non-empty frame"));
        }
        let (mut w, mut h) = (width as usize, height as usize);
        // Shrink to the finest level, but never below a patch (tiny frames stay at full size).
        // The first halving is fused with the grey conversion (no full-size grey plane).
        let mut finest = 0;
        let mut grey = if params.finest_level > 0 && w.min(h) / 2 >= params.patch_size {
            let (g, w2, h2) = grey_half(image.as_raw(), w, h);
            w = w2;
            h = h2;
            finest = 1;
            g
        } else {
            grey(image.as_raw())
        };
        while finest < params.finest_level && w.min(h) / 2 >= params.patch_size {
            let (g, w2, h2) = downsample2(&grey, w, h);
            grey = g;
            w = w2;
            h = h2;
            finest += 1;
        }
        let patch_size = params.patch_size.min(w).min(h);
        let mut levels = Vec::new();
        loop {
            if params.presmooth {
                grey = blur121(&grey, w, h);
            }
            let (gx, gy) = gradients(&grey, w, h);
            let coarser_ok = w.min(h) / 2 >= params.min_coarse_side.max(patch_size);
            let current = grey;
            if coarser_ok {
                let (g, w2, h2) = downsample2(&current, w, h);
                levels.push(Level {
                    w,
                    h,
                    grey: current,
                    gx,
                    gy,
                });
                grey = g;
                w = w2;
                h = h2;
            } else {
                levels.push(Level {
                    w,
                    h,
                    grey: current,
                    gx,
                    gy,
                });
                break;
            }
        }
        Ok(Pyramid {
            width,
            height,
            levels,
            patch_size,
        })
    }

    /// Size of the frame it was built from.
    pub fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }
}

/// The flow from the frame of `from` to the frame of `to` (both built with `params`).
pub fn flow_between(from: &Pyramid, to: &Pyramid, params: &FlowParams) -> Result<Flow> {
    let (w, h) = from.dimensions();
    Ok(upscale(flow_at_finest_level(from, to, params)?, w, h))
}

/// A level's field scaled up to `width × height` (vectors scaled with it).
fn upscale(flow: Flow, width: u32, height: u32) -> Flow {
    if (flow.width, flow.height) == (width, height) || !flow.is_consistent() {
        return if (flow.width, flow.height) == (width, height) {
            flow
        } else {
            Flow::zeros(width, height)
        };
    }
    let (sw, sh) = (flow.width as usize, flow.height as usize);
    let (w, h) = (width as usize, height as usize);
    Flow {
        width,
        height,
        dx: resample(&flow.dx, sw, sh, w, h, w as f32 / sw as f32),
        dy: resample(&flow.dy, sw, sh, w, h, h as f32 / sh as f32),
    }
}

/// The flow from frame t (`now`) back to frame t−1 (`before`), at the frames' size, and the
/// mask of its reliable pixels ([`reliable`]). Both directions are computed at the finest
/// level only, and the check runs there, on a quarter of the pixels by default (the field
/// there holds all the detail the scaled-up one has): 640×360, 8 ms → 2 ms, and the forward
/// flow is never scaled up. The mask is scaled up to the frame (nearest neighbour).
pub fn backward_flow_and_reliable(
    before: &Pyramid,
    now: &Pyramid,
    params: &FlowParams,
) -> Result<(Flow, Vec<bool>)> {
    let (backward, forward) = rayon::join(
        || flow_at_finest_level(now, before, params),
        || flow_at_finest_level(before, now, params),
    );
    let (backward, forward) = (backward?, forward?);
    let (w, h) = now.dimensions();
    let scale =
        0.5 * (w as f32 / backward.width.max(1) as f32 + h as f32 / backward.height.max(1) as f32);
    let mask = reliable_in_pixels_of(&forward, &backward, scale);
    let mask = resize_mask(&mask, backward.width, backward.height, w, h);
    Ok((upscale(backward, w, h), mask))
}

/// Nearest-neighbour resize of a mask (pixel centres aligned).
pub fn resize_mask(mask: &[bool], sw: u32, sh: u32, dw: u32, dh: u32) -> Vec<bool> {
    let (sw, sh, dw, dh) = (sw as usize, sh as usize, dw as usize, dh as usize);
    if mask.len() != sw * sh || sw == 0 || sh == 0 {
        return vec![false; dw * dh];
    }
    if (sw, sh) == (dw, dh) {
        return mask.to_vec();
    }
    let cols: Vec<usize> = (0..dw)
        .map(|x| (((x as f32 + 0.5) * sw as f32 / dw as f32) as usize).min(sw - 1))
        .collect();
    let mut out = vec![false; dw * dh];
    out.par_chunks_mut(dw.max(1))
        .enumerate()
        .for_each(|(y, row)| {
            let sy = (((y as f32 + 0.5) * sh as f32 / dh as f32) as usize).min(sh - 1);
            let src = &mask[sy * sw..][..sw];
            for (o, &sx) in row.iter_mut().zip(&cols) {
                *o = src[sx];
            }
        });
    out
}

/// [`flow_between`] at the finest level computed ([`FlowParams::finest_level`]; half the
/// frame's size by default), in that level's pixels, before it is scaled up to the frame.
pub fn flow_at_finest_level(from: &Pyramid, to: &Pyramid, params: &FlowParams) -> Result<Flow> {
    params.check()?;
    if from.dimensions() != to.dimensions() || from.levels.len() != to.levels.len() {
        return Err(Error::invalid(format!(
            "optical flow needs frames of one size, got {}×{} and {}×{}",
            from.width, from.height, to.width, to.height
        )));
    }
    let ps = from.patch_size;
    let stride = params.stride.min(ps);
    let mut u: Vec<f32> = Vec::new();
    let mut v: Vec<f32> = Vec::new();
    let (mut uw, mut uh) = (0usize, 0usize);
    for (l0, l1) in from.levels.iter().zip(&to.levels).rev() {
        let (w, h) = (l0.w, l0.h);
        // Initial field: the coarser level's, upsampled (zero at the coarsest).
        let (iu, iv) = if u.is_empty() {
            (vec![0.0; w * h], vec![0.0; w * h])
        } else {
            (
                resample(&u, uw, uh, w, h, w as f32 / uw as f32),
                resample(&v, uw, uh, w, h, h as f32 / uh as f32),
            )
        };
        let grid = Grid::new(w, h, ps, stride);
        let patches = search_patches(l0, l1, &grid, &iu, &iv, params.iterations);
        let Dense {
            u: mut du,
            v: mut dv,
            offset,
        } = densify(l0, l1, &grid, &patches);
        if params.refine_iterations > 0 {
            refine(
                l0,
                l1,
                &offset,
                &mut du,
                &mut dv,
                params.refine_iterations,
                params.refine_smoothness,
                params.refine_epsilon,
            );
        }
        u = du;
        v = dv;
        uw = w;
        uh = h;
    }
    Ok(Flow {
        width: uw as u32,
        height: uh as u32,
        dx: u,
        dy: v,
    })
}

/// Luma (BT.601) of interleaved RGB bytes, 0..255.
pub fn grey(rgb: &[u8]) -> Vec<f32> {
    rgb.chunks_exact(3)
        .map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32)
        .collect()
}

/// Luma of interleaved RGB bytes at half size (2×2 box averages, an odd last row or column
/// dropped): [`grey`] then [`downsample2`] in one pass. Needs `w, h ≥ 2`.
pub fn grey_half(rgb: &[u8], w: usize, h: usize) -> (Vec<f32>, usize, usize) {
    let (w2, h2) = (w / 2, h / 2);
    let mut out = vec![0.0; w2 * h2];
    if w2 == 0 || h2 == 0 || rgb.len() < w * h * 3 {
        return (out, w2, h2);
    }
    let luma = |p: &[u8]| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
    out.par_chunks_mut(w2).enumerate().for_each(|(y, row)| {
        let r0 = &rgb[2 * y * w * 3..][..w * 3];
        let r1 = &rgb[(2 * y + 1) * w * 3..][..w * 3];
        for (x, o) in row.iter_mut().enumerate() {
            let i = 6 * x;
            *o = 0.25
                * (luma(&r0[i..i + 3])
                    + luma(&r0[i + 3..i + 6])
                    + luma(&r1[i..i + 3])
                    + luma(&r1[i + 3..i + 6]));
        }
    });
    (out, w2, h2)
}

/// Halves a `w × h` plane by 2×2 box averages (an odd last row or column is dropped), the
/// anti-aliasing the pyramid needs at the cost of four loads a pixel.
pub fn downsample2(src: &[f32], w: usize, h: usize) -> (Vec<f32>, usize, usize) {
    let (w2, h2) = ((w / 2).max(1), (h / 2).max(1));
    let mut out = vec![0.0; w2 * h2];
    if w < 2 || h < 2 {
        // Degenerate: keep a nearest-neighbour copy.
        for y in 0..h2 {
            for x in 0..w2 {
                out[y * w2 + x] = src[(2 * y).min(h - 1) * w + (2 * x).min(w - 1)];
            }
        }
        return (out, w2, h2);
    }
    out.par_chunks_mut(w2).enumerate().for_each(|(y, row)| {
        let r0 = &src[2 * y * w..2 * y * w + w];
        let r1 = &src[(2 * y + 1) * w..(2 * y + 1) * w + w];
        for (x, o) in row.iter_mut().enumerate() {
            *o = 0.25 * (r0[2 * x] + r0[2 * x + 1] + r1[2 * x] + r1[2 * x + 1]);
        }
    });
    (out, w2, h2)
}

/// Bilinear sample of a `w × h` plane at (x, y), clamped to the nearest edge outside.
#[inline]
pub fn bilinear(src: &[f32], w: usize, h: usize, x: f32, y: f32) -> f32 {
    let x = if x.is_finite() {
        x.clamp(0.0, (w - 1) as f32)
    } else {
        0.0
    };
    let y = if y.is_finite() {
        y.clamp(0.0, (h - 1) as f32)
    } else {
        0.0
    };
    let x0 = x as usize;
    let y0 = y as usize;
    let x1 = (x0 + 1).min(w - 1);
    let y1 = (y0 + 1).min(h - 1);
    let fx = x - x0 as f32;
    let fy = y - y0 as f32;
    let top = src[y0 * w + x0] * (1.0 - fx) + src[y0 * w + x1] * fx;
    let bottom = src[y1 * w + x0] * (1.0 - fx) + src[y1 * w + x1] * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Resamples a `sw × sh` field to `dw × dh` (pixel centres aligned) and multiplies it by
/// `scale` (the size ratio, since flow vectors are in pixels of their level).
fn resample(src: &[f32], sw: usize, sh: usize, dw: usize, dh: usize, scale: f32) -> Vec<f32> {
    // Per-column and per-row source taps computed once: the inner loop is then four loads and
    // two lerps, no clamping (the full-resolution upsample was a quarter of the flow's time).
    let xs = axis_taps(sw, dw);
    let ys = axis_taps(sh, dh);
    let mut out = vec![0.0; dw * dh];
    out.par_chunks_mut(dw).enumerate().for_each(|(y, row)| {
        let (y0, y1, fy) = ys[y];
        let r0 = &src[y0 * sw..][..sw];
        let r1 = &src[y1 * sw..][..sw];
        let column: Vec<f32> = r0
            .iter()
            .zip(r1)
            .map(|(&a, &b)| (a + (b - a) * fy) * scale)
            .collect();
        for (o, &(x0, x1, fx)) in row.iter_mut().zip(&xs) {
            let (a, b) = (column[x0], column[x1]);
            *o = a + (b - a) * fx;
        }
    });
    out
}

/// Bilinear taps (index, next index, fraction) mapping `d` destination pixels onto `s` source
/// pixels, centres aligned, clamped at the ends.
fn axis_taps(s: usize, d: usize) -> Vec<(usize, usize, f32)> {
    let r = s as f32 / d as f32;
    let last = s.saturating_sub(1);
    (0..d)
        .map(|i| {
            let f = ((i as f32 + 0.5) * r - 0.5).clamp(0.0, last as f32);
            let i0 = (f as usize).min(last);
            (i0, (i0 + 1).min(last), f - i0 as f32)
        })
        .collect()
}

/// A separable [1 2 1] / 4 blur in both directions, edges replicated.
fn blur121(src: &[f32], w: usize, h: usize) -> Vec<f32> {
    if w < 2 || h < 2 {
        return src.to_vec();
    }
    let mut tmp = vec![0.0f32; w * h];
    tmp.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let s = &src[y * w..][..w];
        row[0] = 0.75 * s[0] + 0.25 * s[1];
        for x in 1..w - 1 {
            row[x] = 0.25 * (s[x - 1] + s[x + 1]) + 0.5 * s[x];
        }
        row[w - 1] = 0.75 * s[w - 1] + 0.25 * s[w - 2];
    });
    let mut out = vec![0.0f32; w * h];
    out.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let up = &tmp[y.saturating_sub(1) * w..][..w];
        let mid = &tmp[y * w..][..w];
        let down = &tmp[(y + 1).min(h - 1) * w..][..w];
        for x in 0..w {
            row[x] = 0.25 * (up[x] + down[x]) + 0.5 * mid[x];
        }
    });
    out
}

/// Sobel gradients (÷ 8, so in intensity per pixel), edges replicated: smoother than central
/// differences, which matters for noisy frames.
fn gradients(src: &[f32], w: usize, h: usize) -> (Vec<f32>, Vec<f32>) {
    let mut gx = vec![0.0; w * h];
    let mut gy = vec![0.0; w * h];
    gx.par_chunks_mut(w)
        .zip(gy.par_chunks_mut(w))
        .enumerate()
        .for_each(|(y, (rx, ry))| {
            let up = &src[y.saturating_sub(1) * w..][..w];
            let mid = &src[y * w..][..w];
            let down = &src[(y + 1).min(h - 1) * w..][..w];
            for x in 0..w {
                let l = x.saturating_sub(1);
                let r = (x + 1).min(w - 1);
                rx[x] = ((up[r] - up[l]) + 2.0 * (mid[r] - mid[l]) + (down[r] - down[l])) / 8.0;
                ry[x] = ((down[l] - up[l]) + 2.0 * (down[x] - up[x]) + (down[r] - up[r])) / 8.0;
            }
        });
    (gx, gy)
}

/// Patch origins along both axes: every `stride`, the last flush with the far edge.
struct Grid {
    xs: Vec<usize>,
    ys: Vec<usize>,
    ps: usize,
}

impl Grid {
    fn new(w: usize, h: usize, ps: usize, stride: usize) -> Grid {
        Grid {
            xs: origins(w, ps, stride),
            ys: origins(h, ps, stride),
            ps,
        }
    }
}

fn origins(len: usize, ps: usize, stride: usize) -> Vec<usize> {
    let last = len.saturating_sub(ps);
    let mut v: Vec<usize> = (0..=last).step_by(stride).collect();
    if v.last() != Some(&last) {
        v.push(last);
    }
    v
}

/// The result of one patch alignment.
#[derive(Clone, Copy, Debug, Default)]
struct Patch {
    u: f32,
    v: f32,
    /// Mean of `I1(x + u) − I0(x)` over the patch (the brightness offset mean-normalisation removed).
    offset: f32,
}

/// Constant bilinear weights for sampling a patch translated by a sub-pixel amount.
struct Shift {
    ix: isize,
    iy: isize,
    w00: f32,
    w01: f32,
    w10: f32,
    w11: f32,
}

impl Shift {
    #[inline]
    fn new(x: f32, y: f32) -> Shift {
        // Huge or NaN vectors (a diverging patch) are clamped far outside; sampling clamps too.
        let x = if x.is_finite() {
            x.clamp(-1e6, 1e6)
        } else {
            0.0
        };
        let y = if y.is_finite() {
            y.clamp(-1e6, 1e6)
        } else {
            0.0
        };
        let fx0 = fast_floor(x);
        let fy0 = fast_floor(y);
        let fx = x - fx0;
        let fy = y - fy0;
        Shift {
            ix: fx0 as isize,
            iy: fy0 as isize,
            w00: (1.0 - fx) * (1.0 - fy),
            w01: fx * (1.0 - fy),
            w10: (1.0 - fx) * fy,
            w11: fx * fy,
        }
    }

    /// Samples the `n × n` block whose top-left lands at (ix, iy) (+ fraction) into `out`.
    #[inline]
    /// Returns whether every sample was inside the frame; samples whose bilinear footprint
    /// leaves it are NaN (an edge-clamped value would be a made-up match).
    fn sample_block(&self, img: &[f32], w: usize, h: usize, n: usize, out: &mut [f32]) -> bool {
        let inside =
            self.ix >= 0 && self.iy >= 0 && self.ix as usize + n < w && self.iy as usize + n < h;
        if inside {
            let (ix, iy) = (self.ix as usize, self.iy as usize);
            for j in 0..n {
                let r0 = &img[(iy + j) * w + ix..][..n + 1];
                let r1 = &img[(iy + j + 1) * w + ix..][..n + 1];
                let o = &mut out[j * n..][..n];
                for i in 0..n {
                    o[i] = self.w00 * r0[i]
                        + self.w01 * r0[i + 1]
                        + self.w10 * r1[i]
                        + self.w11 * r1[i + 1];
                }
            }
            true
        } else {
            let (wi, hi) = (w as isize, h as isize);
            for j in 0..n {
                let y = self.iy + j as isize;
                let row_ok = y >= 0 && y + 1 < hi;
                for i in 0..n {
                    let x = self.ix + i as isize;
                    out[j * n + i] = if row_ok && x >= 0 && x + 1 < wi {
                        let (x0, y0) = (x as usize, y as usize * w);
                        self.w00 * img[y0 + x0]
                            + self.w01 * img[y0 + x0 + 1]
                            + self.w10 * img[y0 + w + x0]
                            + self.w11 * img[y0 + w + x0 + 1]
                    } else {
                        f32::NAN
                    };
                }
            }
            false
        }
    }
}

/// `x.floor()` for |x| < 2³¹ without the libm call (`floorf` is not inlined without SSE4.1).
#[inline]
pub(crate) fn fast_floor(x: f32) -> f32 {
    let t = x as i32 as f32;
    if t > x {
        t - 1.0
    } else {
        t
    }
}

/// Aligns every patch of the grid (rows of patches in parallel).
fn search_patches(
    l0: &Level,
    l1: &Level,
    grid: &Grid,
    iu: &[f32],
    iv: &[f32],
    iterations: usize,
) -> Vec<Patch> {
    let nx = grid.xs.len();
    let mut out = vec![Patch::default(); nx * grid.ys.len()];
    out.par_chunks_mut(nx).enumerate().for_each(|(r, row)| {
        let py = grid.ys[r];
        for (c, p) in row.iter_mut().enumerate() {
            *p = search_patch(l0, l1, grid.xs[c], py, grid.ps, iu, iv, iterations);
        }
    });
    out
}

/// Inverse-compositional Gauss-Newton alignment of one patch on the mean-normalised SSD.
#[allow(clippy::too_many_arguments)]
fn search_patch(
    l0: &Level,
    l1: &Level,
    px: usize,
    py: usize,
    n: usize,
    iu: &[f32],
    iv: &[f32],
    iterations: usize,
) -> Patch {
    let w = l0.w;
    let count = (n * n) as f32;
    let mut t = [0.0f32; MAX_PATCH * MAX_PATCH];
    let mut gx = [0.0f32; MAX_PATCH * MAX_PATCH];
    let mut gy = [0.0f32; MAX_PATCH * MAX_PATCH];
    let (mut sgx, mut sgy, mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for j in 0..n {
        let base = (py + j) * w + px;
        for i in 0..n {
            let k = j * n + i;
            let (a, b) = (l0.gx[base + i], l0.gy[base + i]);
            t[k] = l0.grey[base + i];
            gx[k] = a;
            gy[k] = b;
            sgx += a;
            sgy += b;
            sxx += a * a;
            sxy += a * b;
            syy += b * b;
        }
    }
    // Hessian of the mean-normalised residual: gradients minus their mean.
    let (mgx, mgy) = (sgx / count, sgy / count);
    let hxx = sxx - count * mgx * mgx;
    let hxy = sxy - count * mgx * mgy;
    let hyy = syy - count * mgy * mgy;
    // A small ridge keeps flat or 1-D (edge-only) patches from taking huge steps.
    let ridge = 1e-2 * count;
    let (hxx, hyy) = (hxx + ridge, hyy + ridge);
    let det = hxx * hyy - hxy * hxy;

    // One evaluation at flow (u, v): mean-normalised SSD, mean residual, and Σ g·e.
    // One evaluation at flow (u, v): mean-normalised SSD, mean residual, and the steepest-
    // descent vector Σ (g − mean g)(e − mean e). Part-outside patches are scored on their
    // inside pixels (SSD and vector rescaled to the full patch); mostly outside ones lose.
    let evaluate = |u: f32, v: f32, warped: &mut [f32; MAX_PATCH * MAX_PATCH]| {
        let shift = Shift::new(px as f32 + u, py as f32 + v);
        if shift.sample_block(&l1.grey, l1.w, l1.h, n, warped) {
            let (mut se, mut see, mut bx, mut by) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
            for k in 0..n * n {
                let e = warped[k] - t[k];
                se += e;
                see += e * e;
                bx += gx[k] * e;
                by += gy[k] * e;
            }
            let me = se / count;
            return (
                see - count * me * me,
                me,
                bx - count * mgx * me,
                by - count * mgy * me,
            );
        }
        let (mut nv, mut se, mut see, mut bx, mut by, mut sx, mut sy) =
            (0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for k in 0..n * n {
            let e = warped[k] - t[k];
            if e.is_nan() {
                continue;
            }
            nv += 1.0;
            se += e;
            see += e * e;
            bx += gx[k] * e;
            by += gy[k] * e;
            sx += gx[k];
            sy += gy[k];
        }
        if nv < 0.25 * count {
            return (f32::INFINITY, 0.0, 0.0, 0.0);
        }
        let me = se / nv;
        let scale = count / nv;
        (
            (see - nv * me * me) * scale,
            me,
            (bx - me * sx) * scale,
            (by - me * sy) * scale,
        )
    };
    let mut warped = [0.0f32; MAX_PATCH * MAX_PATCH];

    // Initial flow: the coarser level's at the patch centre, or at a patch side left, right,
    // above or below if that fits better (a patch straddling a motion boundary, or near a
    // border where the coarse field went wrong, then starts from its neighbour's motion).
    let (h, side) = (l0.h, n as f32);
    let (cx, cy) = (
        px as f32 + (side - 1.0) * 0.5,
        py as f32 + (side - 1.0) * 0.5,
    );
    let mut u0 = bilinear(iu, w, h, cx, cy);
    let mut v0 = bilinear(iv, w, h, cx, cy);
    let mut first = evaluate(u0, v0, &mut warped);
    let mut tried = [(u0, v0); 5];
    let mut ntried = 1;
    for (ox, oy) in [(-side, 0.0), (side, 0.0), (0.0, -side), (0.0, side)] {
        let cu = bilinear(iu, w, h, cx + ox, cy + oy);
        let cv = bilinear(iv, w, h, cx + ox, cy + oy);
        if tried[..ntried]
            .iter()
            .any(|&(a, b)| (a - cu).abs() + (b - cv).abs() < 0.25)
        {
            continue;
        }
        tried[ntried] = (cu, cv);
        ntried += 1;
        let score = evaluate(cu, cv, &mut warped);
        if score.0 < first.0 {
            first = score;
            u0 = cu;
            v0 = cv;
        }
    }

    let (mut u, mut v) = (u0, v0);
    let mut best = Patch {
        u: u0,
        v: v0,
        offset: first.1,
    };
    let mut best_ssd = first.0;
    let (mut bx, mut by) = (first.2, first.3);
    let max_travel = (n * n) as f32 * 4.0; // (2 patch sides)²
    for _ in 0..iterations {
        if det <= 1e-6 {
            break;
        }
        let (bx_c, by_c) = (bx, by);
        let du = (hyy * bx_c - hxy * by_c) / det;
        let dv = (hxx * by_c - hxy * bx_c) / det;
        u -= du;
        v -= dv;
        let (tu, tv) = (u - u0, v - v0);
        let travel = tu * tu + tv * tv;
        // A NaN step (a flat patch) stops the search too.
        if travel.is_nan() || travel > max_travel {
            break;
        }
        let score = evaluate(u, v, &mut warped);
        if score.0 < best_ssd {
            best_ssd = score.0;
            best = Patch {
                u,
                v,
                offset: score.1,
            };
        }
        (bx, by) = (score.2, score.3);
        if du * du + dv * dv < 1e-4 {
            break; // converged (under 0.01 px)
        }
    }
    best
}

/// Densification: each pixel's flow is the average of its covering patches' flows, weighted by
/// how well each explains the pixel (`1 / max(1, |residual|)`, offset-corrected). Rows in
/// parallel.
fn densify(l0: &Level, l1: &Level, grid: &Grid, patches: &[Patch]) -> Dense {
    let (w, h, n) = (l0.w, l0.h, grid.ps);
    let nx = grid.xs.len();
    let mut u = vec![0.0; w * h];
    let mut v = vec![0.0; w * h];
    let mut offset = vec![0.0; w * h];
    u.par_chunks_mut(w)
        .zip(v.par_chunks_mut(w))
        .zip(offset.par_chunks_mut(w))
        .enumerate()
        .for_each(|(y, ((ru, rv), ro))| {
            let mut wsum = vec![0.0f32; w];
            let i0 = &l0.grey[y * w..][..w];
            let mut sampled = [0.0f32; MAX_PATCH];
            for (r, &py) in grid.ys.iter().enumerate() {
                if y < py || y >= py + n {
                    continue;
                }
                for (c, &px) in grid.xs.iter().enumerate() {
                    let p = patches[r * nx + c];
                    // One row of the patch: an n × 1 block at (px + u, y + v).
                    let s = Shift::new(px as f32 + p.u, y as f32 + p.v);
                    sample_row(&s, &l1.grey, l1.w, l1.h, n, &mut sampled);
                    for (i, &sample) in sampled[..n].iter().enumerate() {
                        let x = px + i;
                        let e = (sample - i0[x] - p.offset).abs();
                        let lambda = 1.0 / e.max(1.0);
                        wsum[x] += lambda;
                        ru[x] += lambda * p.u;
                        rv[x] += lambda * p.v;
                        ro[x] += lambda * p.offset;
                    }
                }
            }
            for x in 0..w {
                if wsum[x] > 0.0 {
                    ru[x] /= wsum[x];
                    rv[x] /= wsum[x];
                    ro[x] /= wsum[x];
                }
            }
        });
    Dense { u, v, offset }
}

/// A densified level: the flow and the local brightness offset between the frames.
struct Dense {
    u: Vec<f32>,
    v: Vec<f32>,
    offset: Vec<f32>,
}

/// One row of `n` bilinear samples at the shift's origin (clamped outside).
#[inline]
fn sample_row(s: &Shift, img: &[f32], w: usize, h: usize, n: usize, out: &mut [f32]) {
    let cy = |y: isize| y.clamp(0, h as isize - 1) as usize;
    let y0 = cy(s.iy) * w;
    let y1 = cy(s.iy + 1) * w;
    if s.ix >= 0 && s.ix as usize + n < w {
        let ix = s.ix as usize;
        let r0 = &img[y0 + ix..][..n + 1];
        let r1 = &img[y1 + ix..][..n + 1];
        for i in 0..n {
            out[i] = s.w00 * r0[i] + s.w01 * r0[i + 1] + s.w10 * r1[i] + s.w11 * r1[i + 1];
        }
    } else {
        let cx = |x: isize| x.clamp(0, w as isize - 1) as usize;
        for (i, o) in out.iter_mut().enumerate().take(n) {
            let x0 = cx(s.ix + i as isize);
            let x1 = cx(s.ix + i as isize + 1);
            *o = s.w00 * img[y0 + x0]
                + s.w01 * img[y0 + x1]
                + s.w10 * img[y1 + x0]
                + s.w11 * img[y1 + x1];
        }
    }
}

/// Variational refinement: minimises Σ ψ((I1(x+w0) + ∇I1·(w − w0) − I0 − o)²) + α Σ |∇w|² over the
/// field w by red-black SOR, ψ the Charbonnier penalty (weights lagged per sweep). One
/// linearisation (the patch field is already within a pixel or so). `o` is the densified patch
/// brightness offset, so a lighting change is not mistaken for motion.
#[allow(clippy::too_many_arguments)]
fn refine(
    l0: &Level,
    l1: &Level,
    offset: &[f32],
    u: &mut [f32],
    v: &mut [f32],
    sweeps: usize,
    alpha: f32,
    epsilon: f32,
) {
    let (w, h) = (l0.w, l0.h);
    if w < 3 || h < 3 {
        return;
    }
    let n = w * h;
    // Linearisation at the current field (u0, v0): the residual is r = c + ix·u + iy·v with
    // c = I1(x + w0) − I0 − o − ix·u0 − iy·v0, ix, iy the warped I1's gradient averaged with
    // I0's (better conditioned when the warp is slightly off). The unknowns are u, v themselves.
    let mut ix = vec![0.0f32; n];
    let mut iy = vec![0.0f32; n];
    let mut c = vec![0.0f32; n];
    ix.par_chunks_mut(w)
        .zip(iy.par_chunks_mut(w))
        .zip(c.par_chunks_mut(w))
        .enumerate()
        .for_each(|(y, ((rx, ry), rc))| {
            for x in 0..w {
                let k = y * w + x;
                let (u0, v0) = (u[k], v[k]);
                let (sx, sy) = (x as f32 + u0, y as f32 + v0);
                // Matched outside the frame (or not at all): no data, the smoothness term
                // continues the field from inside instead of fitting edge-clamped samples.
                if !(sx >= 0.0 && sy >= 0.0 && sx <= (w - 1) as f32 && sy <= (h - 1) as f32) {
                    rx[x] = 0.0;
                    ry[x] = 0.0;
                    rc[x] = 0.0;
                    continue;
                }
                let (x0, y0) = (sx as usize, sy as usize);
                let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
                let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
                let tap = |img: &[f32]| {
                    let top = img[y0 * w + x0] + (img[y0 * w + x1] - img[y0 * w + x0]) * fx;
                    let bottom = img[y1 * w + x0] + (img[y1 * w + x1] - img[y1 * w + x0]) * fx;
                    top + (bottom - top) * fy
                };
                let (i1, g1x, g1y) = (tap(&l1.grey), tap(&l1.gx), tap(&l1.gy));
                let (a, b) = (0.5 * (g1x + l0.gx[k]), 0.5 * (g1y + l0.gy[k]));
                rx[x] = a;
                ry[x] = b;
                rc[x] = i1 - l0.grey[k] - offset[k] - a * u0 - b * v0;
            }
        });
    let omega = 1.6f32;
    let eps2 = epsilon * epsilon;
    let mut psi = vec![0.0f32; n];
    // 1 / (ψ·ix² + 4α) and 1 / (ψ·iy² + 4α): the interior pixels' diagonals, inverted once per
    // sweep in a loop that vectorises (border pixels, with fewer neighbours, divide).
    let mut inv_u = vec![0.0f32; n];
    let mut inv_v = vec![0.0f32; n];
    // One Gauss-Seidel (over-relaxed) update of pixel k from its neighbours' sums.
    let update =
        |u: &mut [f32], v: &mut [f32], psi: &[f32], k: usize, cnt: f32, su: f32, sv: f32| {
            let (p, a, b) = (psi[k], ix[k], iy[k]);
            let un = (alpha * su - p * a * (c[k] + b * v[k])) / (p * a * a + alpha * cnt);
            u[k] += omega * (un - u[k]);
            let vn = (alpha * sv - p * b * (c[k] + a * u[k])) / (p * b * b + alpha * cnt);
            v[k] += omega * (vn - v[k]);
        };
    for _ in 0..sweeps {
        // Robust data weights from the current residual (Charbonnier, in 0..255 units).
        for k in 0..n {
            let r = c[k] + ix[k] * u[k] + iy[k] * v[k];
            let p = 0.5 / (r * r + eps2).sqrt();
            psi[k] = p;
            inv_u[k] = 1.0 / (p * ix[k] * ix[k] + 4.0 * alpha);
            inv_v[k] = 1.0 / (p * iy[k] * iy[k] + 4.0 * alpha);
        }
        for colour in 0..2 {
            for y in 0..h {
                let start = (y + colour) % 2;
                let interior_row = y > 0 && y + 1 < h;
                let mut x = start;
                while x < w {
                    let k = y * w + x;
                    if interior_row && x > 0 && x + 1 < w {
                        let su = u[k - 1] + u[k + 1] + u[k - w] + u[k + w];
                        let sv = v[k - 1] + v[k + 1] + v[k - w] + v[k + w];
                        let (p, a, b) = (psi[k], ix[k], iy[k]);
                        let un = (alpha * su - p * a * (c[k] + b * v[k])) * inv_u[k];
                        u[k] += omega * (un - u[k]);
                        let vn = (alpha * sv - p * b * (c[k] + a * u[k])) * inv_v[k];
                        v[k] += omega * (vn - v[k]);
                    } else {
                        let (mut cnt, mut su, mut sv) = (0.0f32, 0.0f32, 0.0f32);
                        let mut add = |m: usize| {
                            cnt += 1.0;
                            su += u[m];
                            sv += v[m];
                        };
                        if x > 0 {
                            add(k - 1);
                        }
                        if x + 1 < w {
                            add(k + 1);
                        }
                        if y > 0 {
                            add(k - w);
                        }
                        if y + 1 < h {
                            add(k + w);
                        }
                        update(u, v, &psi, k, cnt, su, sv);
                    }
                    x += 2;
                }
            }
        }
    }
}

/// Forward-backward consistency (Sundaram et al. 2010, as used by Ruder et al. 2016): which
/// pixels of `backward`'s frame have a trustworthy flow. `backward` maps frame t to t−1,
/// `forward` t−1 to t. For pixel p with q = p + backward(p), p is reliable when
/// - q is inside the frame,
/// - the two flows cancel: |b(p) + f(q)|² ≤ 0.01 (|b(p)|² + |f(q)|²) + 0.5 (an occluded or newly
///   uncovered pixel's flow points at something else, whose own flow does not come back), and
/// - p is not on a motion boundary: |∇u|² + |∇v|² ≤ 0.01 |b(p)|² + 0.002 (central differences
///   of `backward`), where the flow of thin or fast objects is smeared.
///
/// Flows of different sizes (or with short `dx`/`dy`) give an all-unreliable mask, which
/// [`crate::video::temporal::is_scene_cut`] treats as a cut: the safe fallback is the fresh
/// frame.
pub fn reliable(forward: &Flow, backward: &Flow) -> Vec<bool> {
    reliable_in_pixels_of(forward, backward, 1.0)
}

/// [`reliable`] for flows computed at `1/scale` of the frame's size: the thresholds stay in
/// the frame's pixels (vectors count `scale` times longer; the flow's derivatives are ratios
/// and do not change).
fn reliable_in_pixels_of(forward: &Flow, backward: &Flow, scale: f32) -> Vec<bool> {
    let (w, h) = (backward.width as usize, backward.height as usize);
    // |s·e|² ≤ 0.01 s²(…) + 0.5 ⇔ |e|² ≤ 0.01 (…) + 0.5 / s²; |∇|² ≤ 0.01 s²|b|² + 0.002.
    let (slack, scale2) = (0.5 / (scale * scale), scale * scale);
    let n = w * h;
    if forward.width != backward.width
        || forward.height != backward.height
        || !forward.is_consistent()
        || !backward.is_consistent()
        || n == 0
    {
        return vec![false; n];
    }
    let (bu, bv) = (&backward.dx, &backward.dy);
    let mut out = vec![false; n];
    out.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let up = y.saturating_sub(1);
        let down = (y + 1).min(h - 1);
        let dy_span = (down - up).max(1) as f32;
        for (x, r) in row.iter_mut().enumerate() {
            let k = y * w + x;
            let (u, v) = (bu[k], bv[k]);
            let qx = x as f32 + u;
            let qy = y as f32 + v;
            if !(qx >= 0.0 && qy >= 0.0 && qx <= (w - 1) as f32 && qy <= (h - 1) as f32) {
                continue;
            }
            let fu = bilinear(&forward.dx, w, h, qx, qy);
            let fv = bilinear(&forward.dy, w, h, qx, qy);
            let (su, sv) = (u + fu, v + fv);
            let b2 = u * u + v * v;
            if su * su + sv * sv > 0.01 * (b2 + fu * fu + fv * fv) + slack {
                continue;
            }
            let left = x.saturating_sub(1);
            let right = (x + 1).min(w - 1);
            let dx_span = (right - left).max(1) as f32;
            let ux = (bu[y * w + right] - bu[y * w + left]) / dx_span;
            let vx = (bv[y * w + right] - bv[y * w + left]) / dx_span;
            let uy = (bu[down * w + x] - bu[up * w + x]) / dy_span;
            let vy = (bv[down * w + x] - bv[up * w + x]) / dy_span;
            if ux * ux + uy * uy + vx * vx + vy * vy > 0.01 * scale2 * b2 + 0.002 {
                continue;
            }
            *r = true;
        }
    });
    out
}
