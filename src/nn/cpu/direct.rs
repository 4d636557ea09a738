//! Direct convolution for layers with very few input channels (a network's first layer, such
//! as the VGG's conv1_1: 3 → 64 channels, 27 multiplies per output). Such a layer is bound by
//! writing its large output, so it must write each output once, straight from registers:
//! there is no im2col matrix and no GEMM output buffer, only the padded input rows of a band,
//! and a register-blocked kernel that keeps 4 output channels × 16 pixels in eight vector
//! accumulators while it walks the kernel taps.
//!
//! The kernel is compiled for AVX2 + FMA and chosen at run time; other CPUs use the im2col
//! path ([`available`] says which).

use rayon::prelude::*;

use super::pad::BuiltInput;
use super::{Scratch, SharedMut};

/// Output channels per register block.
const BLOCK: usize = 4;
/// Pixels per register block: with 4 channels, 8 accumulators of 8 lanes (AVX2), and per
/// kernel tap 2 pixel loads and 4 weight broadcasts for 8 FMAs, so the FMA units, not the
/// load ports, set the pace.
const PIXELS: usize = 16;

/// Whether this CPU runs the direct kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the direct kernel handles this layer (stride 1). A channel count that is not a
/// multiple of 4 (an RGB output layer) fills its last block with zero weights.
pub fn applies(c_out: usize, stride: usize) -> bool {
    stride == 1 && c_out > 0
}

/// Blocks of [`BLOCK`] output channels for `c_out` channels, the last one padded.
fn blocks(c_out: usize) -> usize {
    c_out.div_ceil(BLOCK)
}

/// OIHW → for each block of 4 output channels, tap-major (c, i, j), 4 channels innermost: the
/// kernel broadcasts one weight per accumulator from one contiguous group of 4. Lanes past
/// `c_out` in the last block hold zeros.
pub fn pack_weight(w: &[f32], c_out: usize, taps: usize) -> Vec<f32> {
    let mut out = vec![0.0; blocks(c_out) * BLOCK * taps];
    for o in 0..c_out {
        let (block, lane) = (o / BLOCK, o % BLOCK);
        for q in 0..taps {
            out[(block * taps + q) * BLOCK + lane] = w[o * taps + q];
        }
    }
    out
}

/// `out` (c_out × ho × wo) = act(conv(input) + bias) with the weights from [`pack_weight`].
/// `store(dst, src, bias, relu)` writes one finished output row (plain or streaming stores);
/// `done` runs on each worker after its last row (a store fence for streaming stores).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    input: &BuiltInput,
    packed: &[f32],
    (c_in, c_out, kh, kw): (usize, usize, usize, usize),
    (ho, wo): (usize, usize),
    bias: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
    store: fn(&mut [f32], &[f32], f32, bool),
    done: fn(),
) {
    assert!(applies(c_out, 1), "direct conv: {c_out} output channels");
    assert!(available(), "direct conv: needs AVX2 and FMA");
    let taps = c_in * kh * kw;
    assert_eq!(
        packed.len(),
        blocks(c_out) * BLOCK * taps,
        "direct conv: weight size"
    );
    assert_eq!(out.len(), c_out * ho * wo, "direct conv: output size");
    // Rows are padded to whole pixel blocks (+ the kernel's width) with zeros.
    let wo_pad = wo.div_ceil(PIXELS) * PIXELS;
    let row_len = wo_pad + kw - 1;
    let built_w = input.width();
    let threads = rayon::current_num_threads().max(1);
    let band = ho.div_ceil(4 * threads).clamp(1, 16);
    let plane = ho * wo;
    let shared = SharedMut::new(out);
    let scratch = Scratch::default();
    let bands: Vec<usize> = (0..ho).step_by(band).collect();
    bands.par_iter().for_each(|&y0| {
        let y1 = (y0 + band).min(ho);
        let rows_in = y1 - y0 + kh - 1;
        let rows_len = c_in * rows_in * row_len;
        let mut offsets = vec![0usize; taps];
        scratch.with(rows_len + BLOCK * wo_pad, |buf| {
            let (rows, acc) = buf.split_at_mut(rows_len);
            for c in 0..c_in {
                for r in 0..rows_in {
                    let row = &mut rows[(c * rows_in + r) * row_len..][..row_len];
                    let valid = built_w.min(row_len);
                    input.row_range(c, y0 + r, 0, &mut row[..valid]);
                    row[valid..].fill(0.0);
                }
            }
            for y in y0..y1 {
                // Where tap (c, i, j) of output row y starts in `rows`.
                for (q, off) in offsets.iter_mut().enumerate() {
                    let (c, i, j) = (q / (kh * kw), q / kw % kh, q % kw);
                    *off = (c * rows_in + y - y0 + i) * row_len + j;
                }
                for block in 0..blocks(c_out) {
                    let weights = &packed[block * taps * BLOCK..][..taps * BLOCK];
                    // SAFETY: `available()` checked AVX2 and FMA above.
                    unsafe { row_block(rows, &offsets, weights, acc, wo_pad) };
                    for lane in 0..BLOCK.min(c_out - block * BLOCK) {
                        let o = block * BLOCK + lane;
                        // SAFETY: this band alone writes rows y0..y1 of every output plane.
                        let dst = unsafe { shared.slice(o * plane + y * wo, wo) };
                        let b = bias.map_or(0.0, |b| b[o]);
                        store(dst, &acc[lane * wo_pad..][..wo], b, relu);
                    }
                }
            }
        });
        done();
    });
}

/// One output row of 4 channels: `acc[lane][x] = Σ_q weights[q][lane] · rows[offsets[q] + x]`.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
unsafe fn row_block(
    rows: &[f32],
    offsets: &[usize],
    weights: &[f32],
    acc: &mut [f32],
    wo_pad: usize,
) {
    for x0 in (0..wo_pad).step_by(PIXELS) {
        let mut sums = [[0.0f32; PIXELS]; BLOCK];
        for (&off, w) in offsets.iter().zip(weights.chunks_exact(BLOCK)) {
            let start = off + x0;
            let pixels = &rows[start..start + PIXELS];
            for (sum, &wl) in sums.iter_mut().zip(w) {
                for (s, &p) in sum.iter_mut().zip(pixels) {
                    *s = wl.mul_add(p, *s);
                }
            }
        }
        for (lane, sum) in sums.iter().enumerate() {
            acc[lane * wo_pad + x0..][..PIXELS].copy_from_slice(sum);
        }
    }
}
