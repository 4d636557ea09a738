//! 2-D convolution on NCHW `f32` slices: forward, input gradient and weight gradient.
//!
//! Every convolution reads a *built* input (see [`super::pad`]): the stored tensor upsampled,
//! padded and, for stride-2 input gradients, zero-dilated, so one code path serves the VGG
//! (zero padding), the style transformer (reflection padding, upsampling) and all backward
//! passes. 3×3 stride-1 layers with enough channels run through Winograd F(4,3)
//! ([`super::winograd`]); the others through tiled im2col + GEMM.

use rayon::prelude::*;

use super::gemm::{sgemm, MatRef};
use super::pad::{fill, fold, AxisMap, AxisPlan, PadMode};
use super::winograd::{self, WinogradWeights};
use super::{with_scratch, SharedMut};

/// Winograd pays off only when both channel counts feed a reasonably wide GEMM.
const WINOGRAD_MIN_CHANNELS: usize = 16;
/// Target size of one im2col tile, in floats (about half of a 2 MiB L2 cache).
const COL_TILE_FLOATS: usize = 128 * 1024;

/// What a convolution does besides the plain correlation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvParams {
    pub pad: usize,
    pub mode: PadMode,
    pub stride: usize,
    /// Nearest-neighbour ×2 upsampling of the input before padding.
    pub upsample: bool,
    /// ReLU on the output (after the bias).
    pub relu: bool,
}

/// Tensor sizes of one convolution: input (batch, c_in, h, w), weight (c_out, c_in, kh, kw).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
}

impl ConvShape {
    /// Size of the built input (upsampled and padded), rows × columns.
    pub fn built(&self, p: &ConvParams) -> (usize, usize) {
        let up = if p.upsample { 2 } else { 1 };
        (up * self.h + 2 * p.pad, up * self.w + 2 * p.pad)
    }

    /// Output rows × columns.
    pub fn out(&self, p: &ConvParams) -> (usize, usize) {
        let (bh, bw) = self.built(p);
        ((bh - self.kh) / p.stride + 1, (bw - self.kw) / p.stride + 1)
    }

    /// Checks that the convolution is well defined; the message says what is wrong.
    pub fn validate(&self, p: &ConvParams) -> Result<(), String> {
        if p.stride == 0 {
            return Err("stride must be at least 1".into());
        }
        if self.kh == 0 || self.kw == 0 {
            return Err("empty kernel".into());
        }
        let (bh, bw) = self.built(p);
        if bh < self.kh || bw < self.kw {
            return Err(format!(
                "input of {}x{} pixels (padded {bh}x{bw}) is smaller than the {}x{} kernel",
                self.h, self.w, self.kh, self.kw
            ));
        }
        if p.mode == PadMode::Reflect {
            let up = if p.upsample { 2 } else { 1 };
            if p.pad >= up * self.h || p.pad >= up * self.w {
                return Err(format!(
                    "reflection padding {} needs an input larger than {}x{}, got {}x{}",
                    p.pad, p.pad, p.pad, self.h, self.w
                ));
            }
        }
        Ok(())
    }

    fn in_len(&self) -> usize {
        self.batch * self.c_in * self.h * self.w
    }

    fn weight_len(&self) -> usize {
        self.c_out * self.c_in * self.kh * self.kw
    }

    fn uses_winograd(&self, stride: usize) -> bool {
        self.kh == 3
            && self.kw == 3
            && stride == 1
            && self.c_in >= WINOGRAD_MIN_CHANNELS
            && self.c_out >= WINOGRAD_MIN_CHANNELS
    }
}

/// Winograd-transformed weights that a caller keeps between calls (a fixed network such as
/// the VGG), for the forward pass and for the input gradient.
#[derive(Debug, Default)]
pub struct PreparedWeights {
    pub forward: std::sync::OnceLock<WinogradWeights>,
    pub backward: std::sync::OnceLock<WinogradWeights>,
}

/// One convolution over a built input: how to build it and what to run on it.
struct Plan<'a> {
    rows: AxisPlan,
    cols: AxisPlan,
    /// Built size the convolution itself sees (before any tile rounding).
    built: (usize, usize),
    c_in: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    weight: &'a [f32],
    winograd: Option<&'a WinogradWeights>,
}

/// `y = act(conv(build(x), w) + bias)`, NCHW. `prepared` caches the Winograd weights.
pub fn forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    p: &ConvParams,
    prepared: Option<&PreparedWeights>,
) -> Vec<f32> {
    assert_eq!(x.len(), s.in_len(), "conv forward: input size");
    assert_eq!(weight.len(), s.weight_len(), "conv forward: weight size");
    let built = s.built(p);
    let axis = |len, out_len| AxisPlan {
        len,
        pad: p.pad,
        mode: p.mode,
        upsample: p.upsample,
        dilate: 1,
        out_len,
    };
    let local;
    let winograd = if s.uses_winograd(p.stride) {
        Some(match prepared {
            Some(cache) => cache
                .forward
                .get_or_init(|| WinogradWeights::new(weight, s.c_out, s.c_in)),
            None => {
                local = WinogradWeights::new(weight, s.c_out, s.c_in);
                &local
            }
        })
    } else {
        None
    };
    let plan = Plan {
        rows: axis(s.h, built.0),
        cols: axis(s.w, built.1),
        built,
        c_in: s.c_in,
        c_out: s.c_out,
        kh: s.kh,
        kw: s.kw,
        stride: p.stride,
        weight,
        winograd,
    };
    run(x, s.batch, (s.h, s.w), &plan, bias, p.relu)
}

/// dL/dx given dL/dy (already multiplied by the ReLU mask when the layer has one).
pub fn input_grad(
    grad_y: &[f32],
    weight: &[f32],
    s: &ConvShape,
    p: &ConvParams,
    prepared: Option<&PreparedWeights>,
) -> Vec<f32> {
    let (ho, wo) = s.out(p);
    assert_eq!(
        grad_y.len(),
        s.batch * s.c_out * ho * wo,
        "conv input grad: size"
    );
    let flipped = flip_transpose(weight, s);
    // The gradient is the full correlation of grad_y (zero-dilated by the stride) with the
    // flipped, transposed kernel: a convolution with in/out channels swapped.
    let grad_shape = ConvShape {
        c_in: s.c_out,
        c_out: s.c_in,
        ..*s
    };
    let local;
    let winograd = if grad_shape.uses_winograd(1) {
        Some(match prepared {
            Some(cache) => cache
                .backward
                .get_or_init(|| WinogradWeights::new(&flipped, s.c_in, s.c_out)),
            None => {
                local = WinogradWeights::new(&flipped, s.c_in, s.c_out);
                &local
            }
        })
    } else {
        None
    };
    let plain = p.mode == PadMode::Zero && !p.upsample && p.stride == 1;
    if plain && p.pad < s.kh && p.pad < s.kw && s.kh == s.kw {
        // Zero padding, stride 1: the gradient conv lands exactly on x's pixels.
        let pad = s.kh - 1 - p.pad;
        let axis = |len| AxisPlan {
            len,
            pad,
            mode: PadMode::Zero,
            upsample: false,
            dilate: 1,
            out_len: len + 2 * pad,
        };
        let plan = Plan {
            rows: axis(ho),
            cols: axis(wo),
            built: (ho + 2 * pad, wo + 2 * pad),
            c_in: s.c_out,
            c_out: s.c_in,
            kh: s.kh,
            kw: s.kw,
            stride: 1,
            weight: &flipped,
            winograd,
        };
        return run(grad_y, s.batch, (ho, wo), &plan, None, false);
    }
    // General case: the gradient with respect to the built input, folded back onto x.
    let (bh, bw) = s.built(p);
    let axis = |len, k: usize, out_len| AxisPlan {
        len,
        pad: k - 1,
        mode: PadMode::Zero,
        upsample: false,
        dilate: p.stride,
        out_len,
    };
    let plan = Plan {
        rows: axis(ho, s.kh, bh + s.kh - 1),
        cols: axis(wo, s.kw, bw + s.kw - 1),
        built: (bh + s.kh - 1, bw + s.kw - 1),
        c_in: s.c_out,
        c_out: s.c_in,
        kh: s.kh,
        kw: s.kw,
        stride: 1,
        weight: &flipped,
        winograd: if p.stride == 1 { winograd } else { None },
    };
    let grad_built = run(grad_y, s.batch, (ho, wo), &plan, None, false);
    let rows = AxisMap::new(forward_axis(s.h, bh, p));
    let cols = AxisMap::new(forward_axis(s.w, bw, p));
    let mut grad_x = vec![0.0; s.in_len()];
    fold(&grad_built, &rows, &cols, s.w, &mut grad_x);
    grad_x
}

fn forward_axis(len: usize, out_len: usize, p: &ConvParams) -> AxisPlan {
    AxisPlan {
        len,
        pad: p.pad,
        mode: p.mode,
        upsample: p.upsample,
        dilate: 1,
        out_len,
    }
}

/// dL/dw (c_out × c_in × kh × kw) and dL/db (c_out) given dL/dy (ReLU mask applied).
pub fn weight_grad(
    x: &[f32],
    grad_y: &[f32],
    s: &ConvShape,
    p: &ConvParams,
) -> (Vec<f32>, Vec<f32>) {
    let (ho, wo) = s.out(p);
    let (bh, bw) = s.built(p);
    let out_plane = ho * wo;
    assert_eq!(
        grad_y.len(),
        s.batch * s.c_out * out_plane,
        "conv weight grad: size"
    );
    let k = s.c_in * s.kh * s.kw;
    let rows = AxisMap::new(forward_axis(s.h, bh, p));
    let cols = AxisMap::new(forward_axis(s.w, bw, p));
    let tile = col_tile(k, out_plane);
    let tiles = out_plane.div_ceil(tile);
    let mut built = vec![0.0; s.c_in * bh * bw];
    let mut grad_w = vec![0.0f32; s.c_out * k];
    for n in 0..s.batch {
        let x_n = &x[n * s.c_in * s.h * s.w..][..s.c_in * s.h * s.w];
        fill(x_n, s.w, &rows, &cols, &mut built);
        let g_n = &grad_y[n * s.c_out * out_plane..][..s.c_out * out_plane];
        let geometry = ColGeometry {
            built: &built,
            bh,
            bw,
            c_in: s.c_in,
            kh: s.kh,
            kw: s.kw,
            stride: p.stride,
            wo,
        };
        let partial = (0..tiles)
            .into_par_iter()
            .fold(
                || vec![0.0f32; s.c_out * k],
                |mut acc, t| {
                    let q0 = t * tile;
                    let len = tile.min(out_plane - q0);
                    with_scratch(k * len, |col| {
                        geometry.build(q0, len, col);
                        // acc (c_out × k) += grad_y tile (c_out × len) · colᵀ (len × k)
                        let g = MatRef::row_major(g_n, q0, s.c_out, len, out_plane);
                        let c = MatRef::row_major(col, 0, k, len, len).t();
                        sgemm(g, c, &mut acc, k, true);
                    });
                    acc
                },
            )
            .reduce(
                || vec![0.0f32; s.c_out * k],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            );
        grad_w.iter_mut().zip(&partial).for_each(|(x, y)| *x += y);
    }
    let mut grad_b = vec![0.0f32; s.c_out];
    for (o, gb) in grad_b.iter_mut().enumerate() {
        let mut sum = 0f64;
        for n in 0..s.batch {
            let plane = &grad_y[(n * s.c_out + o) * out_plane..][..out_plane];
            sum += plane.iter().map(|&v| v as f64).sum::<f64>();
        }
        *gb = sum as f32;
    }
    (grad_w, grad_b)
}

/// (O, I, kh, kw) -> (I, O, kh, kw), flipped along both spatial axes.
pub fn flip_transpose(weight: &[f32], s: &ConvShape) -> Vec<f32> {
    let area = s.kh * s.kw;
    let mut out = vec![0.0; weight.len()];
    for o in 0..s.c_out {
        for i in 0..s.c_in {
            let src = &weight[(o * s.c_in + i) * area..][..area];
            let dst = &mut out[(i * s.c_out + o) * area..][..area];
            // Reversing the flattened kh*kw block flips both spatial axes at once.
            dst.iter_mut()
                .zip(src.iter().rev())
                .for_each(|(d, v)| *d = *v);
        }
    }
    out
}

/// Runs `plan` on every sample of `x` (stored planes of `stored.0` × `stored.1`).
fn run(
    x: &[f32],
    batch: usize,
    stored: (usize, usize),
    plan: &Plan,
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let (bh, bw) = plan.built;
    let ho = (bh - plan.kh) / plan.stride + 1;
    let wo = (bw - plan.kw) / plan.stride + 1;
    // Winograd reads whole 6×6 tiles: round the built input up with zeros.
    let (eh, ew) = match plan.winograd {
        Some(_) => (4 * ho.div_ceil(4) + 2, 4 * wo.div_ceil(4) + 2),
        None => (bh, bw),
    };
    let rows = AxisMap::new(AxisPlan {
        out_len: eh,
        ..plan.rows
    });
    let cols = AxisMap::new(AxisPlan {
        out_len: ew,
        ..plan.cols
    });
    let in_sample = plan.c_in * stored.0 * stored.1;
    let out_sample = plan.c_out * ho * wo;
    let mut out = vec![0.0f32; batch * out_sample];
    let mut built = vec![0.0f32; plan.c_in * eh * ew];
    for (x_n, out_n) in x
        .chunks_exact(in_sample)
        .zip(out.chunks_exact_mut(out_sample))
    {
        fill(x_n, stored.1, &rows, &cols, &mut built);
        match plan.winograd {
            Some(u) => winograd::forward(&built, (eh, ew), u, bias, relu, out_n, (ho, wo)),
            None => gemm_conv(
                &ColGeometry {
                    built: &built,
                    bh,
                    bw,
                    c_in: plan.c_in,
                    kh: plan.kh,
                    kw: plan.kw,
                    stride: plan.stride,
                    wo,
                },
                plan.weight,
                plan.c_out,
                ho,
                bias,
                relu,
                out_n,
            ),
        }
    }
    out
}

/// How im2col columns are cut from one sample's built input.
struct ColGeometry<'a> {
    built: &'a [f32],
    bh: usize,
    bw: usize,
    c_in: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    /// Output width.
    wo: usize,
}

impl ColGeometry<'_> {
    /// Fills `col` (k × len, row-major) with the im2col columns of output pixels
    /// `q0..q0 + len` (row-major over the output).
    fn build(&self, q0: usize, len: usize, col: &mut [f32]) {
        let plane = self.bh * self.bw;
        let mut row = 0;
        for c in 0..self.c_in {
            for i in 0..self.kh {
                for j in 0..self.kw {
                    let dst = &mut col[row * len..][..len];
                    row += 1;
                    let base = c * plane + i * self.bw + j;
                    let mut q = q0;
                    let mut done = 0;
                    while done < len {
                        let (oy, ox) = (q / self.wo, q % self.wo);
                        let seg = (self.wo - ox).min(len - done);
                        let start = base + self.stride * (oy * self.bw + ox);
                        let out = &mut dst[done..done + seg];
                        if self.stride == 1 {
                            out.copy_from_slice(&self.built[start..start + seg]);
                        } else {
                            let src = &self.built[start..start + self.stride * (seg - 1) + 1];
                            for (d, s) in out.iter_mut().zip(src.iter().step_by(self.stride)) {
                                *d = *s;
                            }
                        }
                        done += seg;
                        q += seg;
                    }
                }
            }
        }
    }
}

/// Output pixels per im2col tile for a column height of `k`.
fn col_tile(k: usize, pixels: usize) -> usize {
    let tile = (COL_TILE_FLOATS / k.max(1)).clamp(32, 4096);
    // Enough tiles for every thread, when the image allows it.
    let threads = rayon::current_num_threads().max(1);
    let per_thread = pixels.div_ceil(2 * threads).max(32);
    tile.min(per_thread)
}

/// Tiled im2col + GEMM for one sample: `out` is c_out × (ho · wo).
fn gemm_conv(
    g: &ColGeometry,
    weight: &[f32],
    c_out: usize,
    ho: usize,
    bias: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
) {
    let k = g.c_in * g.kh * g.kw;
    let pixels = ho * g.wo;
    let tile = col_tile(k, pixels);
    let tiles = pixels.div_ceil(tile);
    let shared = SharedMut::new(out);
    (0..tiles).into_par_iter().for_each(|t| {
        let q0 = t * tile;
        let len = tile.min(pixels - q0);
        with_scratch(k * len + c_out * len, |buf| {
            let (col, res) = buf.split_at_mut(k * len);
            g.build(q0, len, col);
            sgemm(
                MatRef::row_major(weight, 0, c_out, k, k),
                MatRef::row_major(col, 0, k, len, len),
                res,
                len,
                false,
            );
            for (o, r) in res.chunks_exact(len).enumerate() {
                // SAFETY: tile t alone writes pixels q0..q0+len of every output plane.
                let dst = unsafe { shared.slice(o * pixels + q0, len) };
                let b = bias.map_or(0.0, |b| b[o]);
                store_row(dst, r, b, relu);
            }
        });
    });
}

/// `dst = act(src + bias)`.
#[inline]
pub(crate) fn store_row(dst: &mut [f32], src: &[f32], bias: f32, relu: bool) {
    if relu {
        dst.iter_mut()
            .zip(src)
            .for_each(|(d, s)| *d = (s + bias).max(0.0));
    } else {
        dst.iter_mut().zip(src).for_each(|(d, s)| *d = s + bias);
    }
}
