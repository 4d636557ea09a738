//! Instance normalisation (per sample and channel, over H×W, biased variance, as PyTorch's
//! `InstanceNorm2d(affine=True)`), with an optional fused ReLU, forward and backward in one
//! pass each over the data.

use rayon::prelude::*;

use super::{assert_written, output_buffer};

/// Mean and 1/sqrt(var + eps) of one plane; sums in f64 so large planes keep their precision.
fn stats(plane: &[f32], eps: f64) -> (f32, f32) {
    let n = plane.len().max(1) as f64;
    let mean = lane_sum(plane, |v| v) / n;
    let var = lane_sum(plane, |v| {
        let d = v - mean;
        d * d
    }) / n;
    (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
}

/// Σ f(v) over `values` in f64, in eight independent running sums so the compiler vectorises
/// it: one running sum is bound by the adder's latency, and the norms' statistics took 8 % of
/// a 640x360 frame of the width-8 network that way.
#[inline]
fn lane_sum(values: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    const LANES: usize = 8;
    let mut sums = [0.0f64; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (sum, &v) in sums.iter_mut().zip(chunk) {
            *sum += f(f64::from(v));
        }
    }
    let tail: f64 = rest.iter().map(|&v| f(f64::from(v))).sum();
    sums.iter().sum::<f64>() + tail
}

/// `y = act((x − mean)·rstd·γ + β)` for `channels`-channel samples of `plane` pixels each.
pub fn forward(
    x: &[f32],
    channels: usize,
    plane: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    relu: bool,
) -> Vec<f32> {
    // Not zeroed: every plane is written below (zeroing was 1 % of a video run).
    let mut y = output_buffer(x.len());
    if plane == 0 {
        return y;
    }
    y.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .enumerate()
        .for_each(|(i, (out, src))| {
            let c = i % channels;
            let (mean, rstd) = stats(src, eps);
            let scale = rstd * gamma[c];
            scale_shift(out, src, scale, beta[c] - mean * scale, relu);
        });
    assert_written(&y);
    y
}

/// `out = act(src·scale + shift)` for one plane.
fn scale_shift(out: &mut [f32], src: &[f32], scale: f32, shift: f32, relu: bool) {
    if relu {
        out.iter_mut()
            .zip(src)
            .for_each(|(o, &v)| *o = (v * scale + shift).max(0.0));
    } else {
        out.iter_mut()
            .zip(src)
            .for_each(|(o, &v)| *o = v * scale + shift);
    }
}

/// Gradients of [`forward`]: returns (dx, dγ, dβ).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    grad_y: &[f32],
    channels: usize,
    plane: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0f32; x.len()];
    if plane == 0 {
        return (dx, vec![0.0; channels], vec![0.0; channels]);
    }
    let sums: Vec<(f64, f64)> = dx
        .par_chunks_mut(plane)
        .zip(x.par_chunks(plane).zip(grad_y.par_chunks(plane)))
        .enumerate()
        .map(|(i, (dx, (x, gy)))| {
            let c = i % channels;
            let (mean, rstd) = stats(x, eps);
            let (g, b) = (gamma[c], beta[c]);
            // Pass 1: Σg and Σg·x̂ (g masked by the ReLU, which is recomputed from x).
            let (mut sum_g, mut sum_gx) = (0f64, 0f64);
            for (&xv, &gv) in x.iter().zip(gy) {
                let xhat = (xv - mean) * rstd;
                let gv = if relu && xhat * g + b <= 0.0 { 0.0 } else { gv };
                sum_g += gv as f64;
                sum_gx += (gv * xhat) as f64;
            }
            // Pass 2: dx = γ·rstd·(g − Σg/N − x̂·Σg·x̂/N).
            let n = plane as f64;
            let (mean_g, mean_gx) = ((sum_g / n) as f32, (sum_gx / n) as f32);
            let k = g * rstd;
            for ((d, &xv), &gv) in dx.iter_mut().zip(x).zip(gy) {
                let xhat = (xv - mean) * rstd;
                let gv = if relu && xhat * g + b <= 0.0 { 0.0 } else { gv };
                *d = k * (gv - mean_g - xhat * mean_gx);
            }
            (sum_gx, sum_g)
        })
        .collect();
    let mut d_gamma = vec![0f64; channels];
    let mut d_beta = vec![0f64; channels];
    for (i, (gx, g)) in sums.into_iter().enumerate() {
        d_gamma[i % channels] += gx;
        d_beta[i % channels] += g;
    }
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (dx, to_f32(d_gamma), to_f32(d_beta))
}

/// `y = act(x·scale[c] + shift[c])`: the normalisation of [`forward`] with statistics taken
/// elsewhere (over a whole image that runs in tiles, so every tile normalises alike).
pub fn affine(
    x: &[f32],
    channels: usize,
    plane: usize,
    scale: &[f32],
    shift: &[f32],
    relu: bool,
) -> Vec<f32> {
    // Not zeroed: every plane is written below (zeroing was 1 % of a video run).
    let mut y = output_buffer(x.len());
    if plane == 0 {
        return y;
    }
    y.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .enumerate()
        .for_each(|(i, (out, src))| {
            scale_shift(out, src, scale[i % channels], shift[i % channels], relu);
        });
    assert_written(&y);
    y
}

/// Sum and sum of squares (f64) of each plane of `x` (planes of `height`×`width`) over the
/// window `rows`×`cols`: one tile's share of whole-image statistics.
pub fn window_sums(
    x: &[f32],
    height: usize,
    width: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> Vec<(f64, f64)> {
    let plane = height * width;
    if plane == 0 {
        return Vec::new();
    }
    x.par_chunks(plane)
        .map(|src| {
            let mut sum = 0.0f64;
            let mut sum_sq = 0.0f64;
            for row in rows.clone() {
                for &v in &src[row * width + cols.start..row * width + cols.end] {
                    let v = f64::from(v);
                    sum += v;
                    sum_sq += v * v;
                }
            }
            (sum, sum_sq)
        })
        .collect()
}
