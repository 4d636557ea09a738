//! 2-D convolution on NCHW `f32` slices: forward, input gradient and weight gradient.
//!
//! Every convolution reads a *built* input (see [`super::pad`]): the stored tensor upsampled,
//! padded and, for stride-2 input gradients, zero-dilated, so one code path serves the VGG
//! (zero padding), the style transformer (reflection padding, upsampling) and all backward
//! passes. 3×3 stride-1 layers with enough channels run through Winograd F(4,3)
//! ([`super::winograd`]); the others through tiled im2col + GEMM.

use rayon::prelude::*;

use super::direct;
use super::gemm::{sgemm, MatRef};
use super::pad::{fold, AxisMap, AxisPlan, BuiltInput, PadMode};
use super::winograd::{self, WinogradWeights};
use super::{assert_written, output_buffer, Scratch, SharedMut};

/// Winograd pays off only when both channel counts feed a reasonably wide GEMM.
const WINOGRAD_MIN_CHANNELS: usize = 16;

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
    /// 2×2 max-pool the output (Winograd only).
    pool: bool,
}

/// `y = act(conv(build(x), w) + bias)`, NCHW.
pub fn forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    p: &ConvParams,
) -> Vec<f32> {
    forward_maybe_pooled(x, weight, bias, s, p, false)
}

/// Whether [`forward_pooled`] can run this convolution.
pub fn can_pool(s: &ConvShape, p: &ConvParams) -> bool {
    let (ho, wo) = s.out(p);
    s.uses_winograd(p.stride) && ho >= 2 && wo >= 2
}

/// `maxpool2x2(forward(...))` without storing the full-size output (a VGG block's last
/// layer: 64 MB at 512², pooled to 16 MB). Only where [`can_pool`] says so.
pub fn forward_pooled(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    p: &ConvParams,
) -> Vec<f32> {
    assert!(can_pool(s, p), "conv forward_pooled: not a Winograd layer");
    forward_maybe_pooled(x, weight, bias, s, p, true)
}

fn forward_maybe_pooled(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    p: &ConvParams,
    pool: bool,
) -> Vec<f32> {
    assert_eq!(x.len(), s.in_len(), "conv forward: input size");
    assert_eq!(weight.len(), s.weight_len(), "conv forward: weight size");
    let built = s.built(p);
    // Transformed on every call: it costs ~1% of the convolution and keeps no copy.
    let winograd = s
        .uses_winograd(p.stride)
        .then(|| WinogradWeights::new(weight, s.c_out, s.c_in));
    let plan = Plan {
        rows: forward_axis(s.h, built.0, p),
        cols: forward_axis(s.w, built.1, p),
        built,
        c_in: s.c_in,
        c_out: s.c_out,
        kh: s.kh,
        kw: s.kw,
        stride: p.stride,
        weight,
        winograd: winograd.as_ref(),
        pool,
    };
    run(x, s.batch, (s.h, s.w), &plan, bias, p.relu)
}

/// dL/dx given dL/dy (already multiplied by the ReLU mask when the layer has one).
pub fn input_grad(grad_y: &[f32], weight: &[f32], s: &ConvShape, p: &ConvParams) -> Vec<f32> {
    let (ho, wo) = s.out(p);
    assert_eq!(
        grad_y.len(),
        s.batch * s.c_out * ho * wo,
        "conv input grad: size"
    );
    // The gradient is the full correlation of grad_y (zero-dilated by the stride) with the
    // flipped, transposed kernel: a convolution with in/out channels swapped.
    let grad_shape = ConvShape {
        c_in: s.c_out,
        c_out: s.c_in,
        ..*s
    };
    let winograd = grad_shape
        .uses_winograd(1)
        .then(|| WinogradWeights::flipped_transposed(weight, s.c_out, s.c_in));
    // Only the im2col path reads the flipped kernel itself.
    let flipped = match winograd {
        Some(_) => Vec::new(),
        None => flip_transpose(weight, s),
    };
    let winograd = winograd.as_ref();
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
            pool: false,
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
        // Stride 1 on the zero-dilated gradient: Winograd applies whatever the forward stride.
        winograd,
        pool: false,
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
    let rows = AxisMap::new(forward_axis(s.h, bh, p));
    let cols = AxisMap::new(forward_axis(s.w, bw, p));
    let k = s.c_in * s.kh * s.kw;
    // Accumulated in the (kh, c_in, kw) column order of the expanded rows, permuted at the end.
    let mut grad_w = vec![0.0f32; s.c_out * k];
    let scratch = Scratch::default();
    for n in 0..s.batch {
        let x_n = &x[n * s.c_in * s.h * s.w..][..s.c_in * s.h * s.w];
        let g_n = &grad_y[n * s.c_out * out_plane..][..s.c_out * out_plane];
        let geometry = RowGeometry {
            input: &BuiltInput::new(x_n, (s.h, s.w), &rows, &cols),
            c_in: s.c_in,
            kh: s.kh,
            kw: s.kw,
            stride: p.stride,
            ho,
            wo,
        };
        let tiles = geometry.tiles();
        let partial = tiles
            .par_iter()
            .fold(
                || vec![0.0f32; s.c_out * k],
                |mut acc, tile| {
                    scratch.with(geometry.expanded_len(tile), |expanded| {
                        geometry.expand(tile, expanded);
                        for y in tile.rows.clone() {
                            // acc (c_out × k) += grad_y row (c_out × wc) · B(y)ᵀ (wc × k)
                            let g = MatRef::row_major(
                                g_n,
                                y * wo + tile.cols.start,
                                s.c_out,
                                tile.cols.len(),
                                out_plane,
                            );
                            let b = geometry.row_matrix(expanded, tile, y);
                            sgemm(g, b.t(), &mut acc, k, true);
                        }
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
    let grad_w = unpermute_weight(&grad_w, s.c_out, s.c_in, s.kh, s.kw);
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
    let out_sample = match plan.pool {
        true => plan.c_out * (ho / 2) * (wo / 2),
        false => plan.c_out * ho * wo,
    };
    let mut out = output_buffer(batch * out_sample);
    let method = if plan.winograd.is_some() {
        Method::Winograd
    } else if (plan.c_in * plan.kh * plan.kw <= SMALL_K
        || (plan.c_out <= DIRECT_MAX_OUT_CHANNELS && plan.c_in <= DIRECT_MAX_IN_CHANNELS))
        && direct::applies(plan.c_out, plan.stride)
        && direct::available()
    {
        Method::Direct
    } else if plan.c_out < SCATTER_MAX_OUT_CHANNELS && plan.stride == 1 {
        Method::Scatter
    } else {
        Method::Rows
    };
    let permuted = match method {
        Method::Winograd => Vec::new(),
        Method::Scatter => scatter_weight(plan.weight, plan.c_out, plan.c_in, plan.kh, plan.kw),
        Method::Rows => permute_weight(plan.weight, plan.c_out, plan.c_in, plan.kh, plan.kw),
        Method::Direct => {
            direct::pack_weight(plan.weight, plan.c_out, plan.c_in * plan.kh * plan.kw)
        }
    };
    let streaming = out.len() >= STREAMING_MIN_FLOATS;
    for (x_n, out_n) in x
        .chunks_exact(in_sample)
        .zip(out.chunks_exact_mut(out_sample))
    {
        let input = BuiltInput::new(x_n, stored, &rows, &cols);
        match (method, plan.winograd) {
            (Method::Winograd, Some(u)) => {
                winograd::forward(&input, u, bias, relu, plan.pool, out_n, (ho, wo))
            }
            (Method::Direct, _) => direct::forward(
                &input,
                &permuted,
                (plan.c_in, plan.c_out, plan.kh, plan.kw),
                (ho, wo),
                bias,
                relu,
                out_n,
                if streaming {
                    store_row_streaming
                } else {
                    store_row
                },
                if streaming { streaming_done } else { || {} },
            ),
            (Method::Scatter, _) => scatter_conv(
                &input,
                &permuted,
                (plan.c_in, plan.c_out, plan.kh, plan.kw),
                (ho, wo),
                bias,
                relu,
                out_n,
            ),
            _ => gemm_conv(
                &RowGeometry {
                    input: &input,
                    c_in: plan.c_in,
                    kh: plan.kh,
                    kw: plan.kw,
                    stride: plan.stride,
                    ho,
                    wo,
                },
                &permuted,
                plan.c_out,
                bias,
                relu,
                out_n,
            ),
        }
    }
    assert_written(&out);
    out
}

/// Layers with fewer output channels than this (the style network's 9×9 output layer, the
/// input gradient of a VGG's first layer) run as [`scatter_conv`]: a GEMM with only c_out rows
/// would leave most of the multiply units idle.
const SCATTER_MAX_OUT_CHANNELS: usize = 8;

/// Narrow layers, at most this many output channels and [`DIRECT_MAX_IN_CHANNELS`] input
/// channels, run [`direct`] whatever their kernel size (the width-8 network's 9×9 layers and
/// its last upsampling layer): a GEMM with 3 or 8 rows keeps its 16-row microkernel half idle.
/// Measured at 512² (ms, direct against GEMM or scatter): 9×9 3→8 10.8/13.4, 9×9 8→3
/// 18.4/21.6, up+3×3 16→8 10.0/13.9, 9×9 16→3 32.1/34.9.
const DIRECT_MAX_OUT_CHANNELS: usize = 8;

/// See [`DIRECT_MAX_OUT_CHANNELS`]. With more input channels the band of input rows the
/// direct kernel walks outgrows the cache: 3×3 64→3 took 20.1 ms against scatter's 17.1, 9×9
/// 32→3 at 1024² 386 ms against 213.
const DIRECT_MAX_IN_CHANNELS: usize = 16;

/// How one convolution is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Winograd,
    /// Few input channels: [`direct`], every output written once from registers.
    Direct,
    Rows,
    Scatter,
}

/// OIHW -> (c_out·kh·kw) × c_in: one GEMM row per output channel and kernel tap.
fn scatter_weight(w: &[f32], c_out: usize, c_in: usize, kh: usize, kw: usize) -> Vec<f32> {
    let taps = kh * kw;
    let mut out = vec![0.0; w.len()];
    for o in 0..c_out {
        for c in 0..c_in {
            for t in 0..taps {
                out[(o * taps + t) * c_in + c] = w[(o * c_in + c) * taps + t];
            }
        }
    }
    out
}

/// Convolution for few output channels, stride 1: for every built row r, one GEMM
/// z = W (c_out·kh·kw × c_in) · row r (c_in × width) gives every tap's contribution of that
/// row, and output row y = r − i gathers taps (·, i, j) of it shifted by j. The GEMM has
/// c_out·kh·kw rows (243 for the 9×9 RGB output layer) instead of c_out.
fn scatter_conv(
    input: &BuiltInput,
    weight: &[f32],
    (c_in, c_out, kh, kw): (usize, usize, usize, usize),
    (ho, wo): (usize, usize),
    bias: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
) {
    let bw = input.width();
    let taps = kh * kw;
    let plane = ho * wo;
    let threads = rayon::current_num_threads().max(1);
    // Bands of output rows; each re-reads kh − 1 rows of the band above, so keep bands tall.
    let band = ho.div_ceil(2 * threads).max(1);
    let shared = SharedMut::new(out);
    let bands: Vec<usize> = (0..ho).step_by(band).collect();
    let scratch = Scratch::default();
    bands.par_iter().for_each(|&y0| {
        let y1 = (y0 + band).min(ho);
        let (rows_len, z_len, acc_len) = (c_in * bw, c_out * taps * bw, c_out * (y1 - y0) * wo);
        scratch.with(rows_len + z_len + acc_len, |buf| {
            let (rows, rest) = buf.split_at_mut(rows_len);
            let (z, acc) = rest.split_at_mut(z_len);
            acc.fill(0.0);
            for r in y0..y1 + kh - 1 {
                for (c, row) in rows.chunks_exact_mut(bw).enumerate() {
                    input.row_range(c, r, 0, row);
                }
                sgemm(
                    MatRef::row_major(weight, 0, c_out * taps, c_in, c_in),
                    MatRef::row_major(rows, 0, c_in, bw, bw),
                    z,
                    bw,
                    false,
                );
                for o in 0..c_out {
                    for i in 0..kh {
                        // Built row r feeds output row r − i through kernel row i.
                        let Some(y) = r.checked_sub(i).filter(|y| (y0..y1).contains(y)) else {
                            continue;
                        };
                        let acc_row = &mut acc[(o * (y1 - y0) + y - y0) * wo..][..wo];
                        for j in 0..kw {
                            let z_row = &z[((o * kh + i) * kw + j) * bw + j..][..wo];
                            acc_row.iter_mut().zip(z_row).for_each(|(a, v)| *a += v);
                        }
                    }
                }
            }
            for o in 0..c_out {
                let b = bias.map_or(0.0, |b| b[o]);
                let src = &acc[o * (y1 - y0) * wo..][..(y1 - y0) * wo];
                // SAFETY: this band alone writes rows y0..y1 of every output plane.
                let dst = unsafe { shared.slice(o * plane + y0 * wo, (y1 - y0) * wo) };
                store_row(dst, src, b, relu);
            }
        });
    });
}

/// Target size of one tile's expanded rows, in floats: 512 KiB, half of a core's 1 MiB L2
/// cache, so the GEMM's packed operands and output rows fit beside them.
const EXPANDED_TILE_FLOATS: usize = 128 * 1024;

/// im2col by rows: for built-input row r, the *expanded row* holds, for every input channel c
/// and kernel column j, the pixels `built[c][r][stride·x + j]` of the output columns x. The
/// kh expanded rows an output row needs are consecutive in memory, so its im2col matrix
/// (kh·c_in·kw × columns) is a plain view, and each expanded row serves kh output rows (it is
/// built once instead of kh times). The weights are permuted to the matching (kh, c_in, kw)
/// column order.
struct RowGeometry<'a> {
    input: &'a BuiltInput<'a>,
    c_in: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    ho: usize,
    wo: usize,
}

/// A block of output rows × output columns.
#[derive(Debug, Clone)]
struct Tile {
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
}

impl RowGeometry<'_> {
    fn k(&self) -> usize {
        self.kh * self.c_in * self.kw
    }

    /// Splits the output into tiles whose expanded rows fit the cache, enough for every thread.
    fn tiles(&self) -> Vec<Tile> {
        let per_row = self.c_in * self.kw;
        // Columns: the whole width unless even a few rows would not fit.
        let min_rows = self.kh + 3 * self.stride;
        let mut wc = self.wo;
        if min_rows * per_row * wc > EXPANDED_TILE_FLOATS {
            // A multiple of 16: the GEMM runs on the transposed problem in 16-row blocks, and a
            // ragged last block costs nearly as much as a full one.
            wc = (EXPANDED_TILE_FLOATS / (min_rows * per_row) / 16 * 16)
                .max(16)
                .min(self.wo);
        }
        // Rows: as many as fit, but leave work for every thread.
        let fit_in = EXPANDED_TILE_FLOATS / (per_row * wc).max(1);
        let mut band = (fit_in.saturating_sub(self.kh) / self.stride + 1).max(1);
        let col_chunks = self.wo.div_ceil(wc);
        let threads = rayon::current_num_threads().max(1);
        let wanted = 2 * threads;
        if self.ho.div_ceil(band) * col_chunks < wanted {
            band = self.ho.div_ceil(wanted.div_ceil(col_chunks)).max(1);
        }
        let mut tiles = Vec::new();
        for y0 in (0..self.ho).step_by(band) {
            for x0 in (0..self.wo).step_by(wc) {
                tiles.push(Tile {
                    rows: y0..(y0 + band).min(self.ho),
                    cols: x0..(x0 + wc).min(self.wo),
                });
            }
        }
        tiles
    }

    fn input_rows(&self, tile: &Tile) -> usize {
        self.stride * (tile.rows.len() - 1) + self.kh
    }

    fn expanded_len(&self, tile: &Tile) -> usize {
        self.input_rows(tile) * self.c_in * self.kw * tile.cols.len()
    }

    /// Fills `dst` with the expanded rows the tile needs.
    fn expand(&self, tile: &Tile, dst: &mut [f32]) {
        let wc = tile.cols.len();
        let first = self.stride * tile.rows.start;
        // The built columns the tile reads, gathered once per (row, channel).
        let col_start = self.stride * tile.cols.start;
        let s = self.stride;
        let span = s * (wc - 1) + self.kw;
        let rows = self.input_rows(tile);
        // One spare column, so a stride-2 gather can read whole pairs.
        with_row_buffer(span + 1, |buf| {
            buf[span] = 0.0;
            // Channel by channel, so the stored rows are read in memory order and the
            // next one can be prefetched while this one is copied.
            for c in 0..self.c_in {
                for r in first..first + rows {
                    self.input.prefetch_row(c, r + 1);
                    self.input.row_range(c, r, col_start, &mut buf[..span]);
                    let base = ((r - first) * self.c_in + c) * self.kw * wc;
                    for (j, d) in dst[base..base + self.kw * wc]
                        .chunks_exact_mut(wc)
                        .enumerate()
                    {
                        // Kernel column j reads built columns j, j + s, j + 2s, ...
                        let src = &buf[j..j + s * (wc - 1) + 1];
                        if s == 1 {
                            d.copy_from_slice(src);
                        } else if s == 2 {
                            let pairs = buf[j..j + 2 * wc].chunks_exact(2);
                            for (v, pair) in d.iter_mut().zip(pairs) {
                                *v = pair[0];
                            }
                        } else {
                            for (x, v) in d.iter_mut().enumerate() {
                                *v = src[s * x];
                            }
                        }
                    }
                }
            }
        });
    }

    /// Output row y's im2col matrix (k × wc) inside the tile's expanded rows.
    fn row_matrix<'b>(&self, expanded: &'b [f32], tile: &Tile, y: usize) -> MatRef<'b> {
        let wc = tile.cols.len();
        let offset = self.stride * (y - tile.rows.start) * self.c_in * self.kw * wc;
        MatRef::row_major(expanded, offset, self.k(), wc, wc)
    }
}

/// Runs `f` with a per-thread buffer of `len` floats for one built row.
fn with_row_buffer<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static ROW: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    ROW.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// OIHW -> O × (kh, c_in, kw), the column order of the expanded rows.
fn permute_weight(w: &[f32], c_out: usize, c_in: usize, kh: usize, kw: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for o in 0..c_out {
        for c in 0..c_in {
            for i in 0..kh {
                let src = &w[((o * c_in + c) * kh + i) * kw..][..kw];
                let dst = &mut out[((o * kh + i) * c_in + c) * kw..][..kw];
                dst.copy_from_slice(src);
            }
        }
    }
    out
}

/// The inverse of [`permute_weight`].
fn unpermute_weight(w: &[f32], c_out: usize, c_in: usize, kh: usize, kw: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for o in 0..c_out {
        for c in 0..c_in {
            for i in 0..kh {
                let src = &w[((o * kh + i) * c_in + c) * kw..][..kw];
                let dst = &mut out[((o * c_in + c) * kh + i) * kw..][..kw];
                dst.copy_from_slice(src);
            }
        }
    }
    out
}

/// Row-expanded im2col + GEMM for one sample: `out` is c_out × (ho · wo).
fn gemm_conv(
    g: &RowGeometry,
    permuted: &[f32],
    c_out: usize,
    bias: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
) {
    let k = g.k();
    let plane = g.ho * g.wo;
    let streaming = k <= SMALL_K && out.len() >= STREAMING_MIN_FLOATS;
    let shared = SharedMut::new(out);
    let tiles = g.tiles();
    let scratch = Scratch::default();
    tiles.par_iter().for_each(|tile| {
        let wc = tile.cols.len();
        let expanded_len = g.expanded_len(tile);
        // Rows per GEMM: one, unless the kernel is so small (a first layer's 3 input channels)
        // that a GEMM per row would be dominated by call and packing overhead; then several
        // rows' columns are laid side by side.
        let group = if k <= SMALL_K {
            (EXPANDED_TILE_FLOATS / ((k + c_out) * wc)).clamp(1, tile.rows.len())
        } else {
            1
        };
        let col_len = if group > 1 { k * group * wc } else { 0 };
        scratch.with(expanded_len + col_len + c_out * group * wc, |buf| {
            let (expanded, rest) = buf.split_at_mut(expanded_len);
            let (col, res) = rest.split_at_mut(col_len);
            g.expand(tile, expanded);
            let rows: Vec<usize> = tile.rows.clone().collect();
            for ys in rows.chunks(group) {
                let n = ys.len() * wc;
                let b = if group > 1 {
                    for (i, &y) in ys.iter().enumerate() {
                        let m = g.row_matrix(expanded, tile, y);
                        for q in 0..k {
                            col[q * n + i * wc..][..wc]
                                .copy_from_slice(&m.data[m.offset + q * wc..][..wc]);
                        }
                    }
                    MatRef::row_major(col, 0, k, n, n)
                } else {
                    g.row_matrix(expanded, tile, ys[0])
                };
                sgemm(
                    MatRef::row_major(permuted, 0, c_out, k, k),
                    b,
                    res,
                    n,
                    false,
                );
                for (o, r) in res.chunks_exact(n).take(c_out).enumerate() {
                    for (i, &y) in ys.iter().enumerate() {
                        // SAFETY: this tile alone writes these pixels of every output plane.
                        let dst =
                            unsafe { shared.slice(o * plane + y * g.wo + tile.cols.start, wc) };
                        let b = bias.map_or(0.0, |b| b[o]);
                        let src = &r[i * wc..][..wc];
                        if streaming {
                            store_row_streaming(dst, src, b, relu);
                        } else {
                            store_row(dst, src, b, relu);
                        }
                    }
                }
            }
        });
        if streaming {
            streaming_done();
        }
    });
}

/// Column heights (c_in·kh·kw) up to which several output rows share one GEMM.
const SMALL_K: usize = 64;

/// Outputs at least this large (floats per sample, 16 MiB) are written with streaming stores:
/// they cannot stay in the caches anyway, and bypassing them halves the memory traffic (no
/// read-for-ownership of every line before it is overwritten).
const STREAMING_MIN_FLOATS: usize = 4 << 20;

/// [`store_row`] with non-temporal stores where the destination is 16-byte aligned. Call
/// [`streaming_done`] on the same thread before another thread reads the output.
#[inline]
fn store_row_streaming(dst: &mut [f32], src: &[f32], bias: f32, relu: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_add_ps, _mm_loadu_ps, _mm_max_ps, _mm_set1_ps};
        use std::arch::x86_64::{_mm_setzero_ps, _mm_stream_ps};
        let n = dst.len().min(src.len());
        let head = dst.as_ptr().align_offset(16).min(n);
        let body = (n - head) / 4 * 4;
        store_row(&mut dst[..head], &src[..head], bias, relu);
        // SAFETY: SSE is part of baseline x86-64.
        let (b, zero) = unsafe { (_mm_set1_ps(bias), _mm_setzero_ps()) };
        for (d, s) in dst[head..head + body]
            .chunks_exact_mut(4)
            .zip(src[head..head + body].chunks_exact(4))
        {
            // SAFETY: `s` holds 4 floats; `d` holds 4 floats and is 16-byte aligned (the head
            // above brought it to that alignment and every chunk advances 16 bytes).
            unsafe {
                let v = _mm_add_ps(_mm_loadu_ps(s.as_ptr()), b);
                let v = if relu { _mm_max_ps(v, zero) } else { v };
                _mm_stream_ps(d.as_mut_ptr(), v);
            }
        }
        store_row(&mut dst[head + body..n], &src[head + body..n], bias, relu);
    }
    #[cfg(not(target_arch = "x86_64"))]
    store_row(dst, src, bias, relu);
}

/// Orders this thread's streaming stores before whatever it does next (such as telling rayon
/// its block is done), so other threads see them.
#[inline]
fn streaming_done() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a store fence has no preconditions.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
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
