//! Winograd F(4×4, 3×3) convolution (Lavin & Gray, 2016): each 6×6 input tile and 3×3 kernel
//! are transformed so that a 4×4 output tile costs 36 multiplies per channel pair instead of
//! 144, and the multiplies become 36 independent GEMMs (c_out × c_in · c_in × tiles).
//!
//! Tiles are processed in blocks of whole tile rows sized for the L2 cache; blocks run in
//! parallel. The transforms are written as plain loops over tiles so the compiler vectorises
//! them.

use rayon::prelude::*;

use super::gemm::{sgemm, MatRef};
use super::pad::BuiltInput;
use super::{Scratch, SharedMut};

/// Transformed-domain points per tile (6 × 6).
const POINTS: usize = 36;
/// Tiles per block the GEMMs aim for: wide enough to amortise packing, small enough that a
/// block's transformed input and output stay in cache.
const TARGET_BLOCK_TILES: usize = 96;

/// Kernels in the transformed domain: `u[ξ][o][c]` for the 36 points ξ.
#[derive(Debug, Clone)]
pub struct WinogradWeights {
    pub c_out: usize,
    pub c_in: usize,
    u: Vec<f32>,
}

/// G (6×3) of F(4,3).
const G: [[f32; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// Kernels transformed per block of this many input channels, one SIMD lane each.
const LANES: usize = 16;

impl WinogradWeights {
    /// Transforms 3×3 kernels `weight` (c_out × c_in × 3 × 3): u = G g Gᵀ.
    pub fn new(weight: &[f32], c_out: usize, c_in: usize) -> Self {
        assert_eq!(weight.len(), c_out * c_in * 9, "winograd: weight size");
        Self::transform(weight, c_out, c_in, |o, c, k| (o * c_in + c) * 9 + k)
    }

    /// The transformed kernels of the input gradient's convolution: `weight` (c_out × c_in ×
    /// 3 × 3) flipped in both spatial axes, in and out channels swapped (c_in × c_out).
    pub fn flipped_transposed(weight: &[f32], c_out: usize, c_in: usize) -> Self {
        assert_eq!(weight.len(), c_out * c_in * 9, "winograd: weight size");
        Self::transform(weight, c_in, c_out, |i, o, k| (o * c_in + i) * 9 + 8 - k)
    }

    /// u[ξ][o][c] = G g Gᵀ for the kernel g whose tap k (row-major 3×3) is `weight[at(o, c, k)]`.
    /// Works on `LANES` input channels at once (the loops over lanes vectorise), so that the
    /// transform costs little next to the convolution and needs no caching.
    fn transform(
        weight: &[f32],
        c_out: usize,
        c_in: usize,
        at: impl Fn(usize, usize, usize) -> usize + Sync,
    ) -> Self {
        let mut u = vec![0.0f32; POINTS * c_out * c_in];
        let shared = SharedMut::new(&mut u);
        (0..c_out).into_par_iter().for_each(|o| {
            for c0 in (0..c_in).step_by(LANES) {
                let lanes = LANES.min(c_in - c0);
                let mut g = [[0f32; LANES]; 9];
                for (l, c) in (c0..c0 + lanes).enumerate() {
                    for (k, g_k) in g.iter_mut().enumerate() {
                        g_k[l] = weight[at(o, c, k)];
                    }
                }
                // t = G g (6×3), then u = t Gᵀ (6×6), lane by lane.
                let mut t = [[[0f32; LANES]; 3]; 6];
                for (t_row, g_row) in t.iter_mut().zip(G.iter()) {
                    for (j, t_aj) in t_row.iter_mut().enumerate() {
                        for (k, coef) in g_row.iter().enumerate() {
                            for (v, x) in t_aj.iter_mut().zip(g[k * 3 + j].iter()) {
                                *v += coef * x;
                            }
                        }
                    }
                }
                for (a, t_row) in t.iter().enumerate() {
                    for (b, g_row) in G.iter().enumerate() {
                        let mut v = [0f32; LANES];
                        for (t_aj, coef) in t_row.iter().zip(g_row.iter()) {
                            for (v, x) in v.iter_mut().zip(t_aj.iter()) {
                                *v += coef * x;
                            }
                        }
                        let xi = a * 6 + b;
                        // SAFETY: (xi, o, c0..c0 + lanes) is written by this `o` only.
                        let dst = unsafe { shared.slice((xi * c_out + o) * c_in + c0, lanes) };
                        dst.copy_from_slice(&v[..lanes]);
                    }
                }
            }
        });
        Self { c_out, c_in, u }
    }
}

/// `out` (c_out × ho × wo) = act(conv3x3(input) + bias), where the built `input` is c_in
/// planes of (4·⌈ho/4⌉ + 2) × (4·⌈wo/4⌉ + 2), zero beyond the real input.
///
/// With `pool`, `out` (c_out × ⌊ho/2⌋ × ⌊wo/2⌋) receives the 2×2 max-pool of that instead:
/// each block pools its own rows (always an even number from an even start), so the
/// full-size activation is never stored.
pub fn forward(
    input: &BuiltInput,
    u: &WinogradWeights,
    bias: Option<&[f32]>,
    relu: bool,
    pool: bool,
    out: &mut [f32],
    (ho, wo): (usize, usize),
) {
    let (c_in, c_out) = (u.c_in, u.c_out);
    let (th, tw) = (ho.div_ceil(4), wo.div_ceil(4));
    let ext = (input.height(), input.width());
    assert_eq!(ext, (4 * th + 2, 4 * tw + 2), "winograd: built size");
    let (hp, wp) = (ho / 2, wo / 2);
    let out_plane = if pool { hp * wp } else { ho * wo };
    assert_eq!(out.len(), c_out * out_plane, "winograd: output size");
    let threads = rayon::current_num_threads().max(1);
    let mut rows_per_block = TARGET_BLOCK_TILES.div_ceil(tw).max(1);
    // Keep every thread busy on small images.
    rows_per_block = rows_per_block.min(th.div_ceil(2 * threads)).max(1);
    let blocks = th.div_ceil(rows_per_block);
    let shared = SharedMut::new(out);
    let scratch = Scratch::default();
    (0..blocks).into_par_iter().for_each(|b| {
        let ty0 = b * rows_per_block;
        let ty1 = (ty0 + rows_per_block).min(th);
        let tiles = (ty1 - ty0) * tw;
        let v_len = POINTS * c_in * tiles;
        let m_len = POINTS * c_out * tiles;
        // One channel's full-size rows of the block, pooled from there.
        let full_len = if pool { 4 * (ty1 - ty0) * wo } else { 0 };
        scratch.with(v_len + m_len + POINTS * tw + full_len, |buf| {
            let (v, rest) = buf.split_at_mut(v_len);
            let (m, rest) = rest.split_at_mut(m_len);
            let (tmp, full) = rest.split_at_mut(POINTS * tw);
            for c in 0..c_in {
                for ty in ty0..ty1 {
                    let t0 = (ty - ty0) * tw;
                    input_tile_row(input, c, ty, tw, tmp);
                    for xi in 0..POINTS {
                        let dst = &mut v[(xi * c_in + c) * tiles + t0..][..tw];
                        dst.copy_from_slice(&tmp[xi * tw..][..tw]);
                    }
                }
            }
            for xi in 0..POINTS {
                sgemm(
                    MatRef::row_major(&u.u, xi * c_out * c_in, c_out, c_in, c_in),
                    MatRef::row_major(v, xi * c_in * tiles, c_in, tiles, tiles),
                    &mut m[xi * c_out * tiles..][..c_out * tiles],
                    tiles,
                    false,
                );
            }
            let y0 = 4 * ty0;
            let y1 = (4 * ty1).min(ho);
            // Pooled rows y0/2..p1 (y0 is a multiple of 4; an odd last row is dropped).
            let p1 = (y1 / 2).min(hp);
            for o in 0..c_out {
                // SAFETY: block b alone writes output rows y0..y1 (pooled: y0/2..p1) of every
                // plane.
                let dst = unsafe {
                    if pool {
                        shared.slice((o * hp + y0 / 2) * wp, (p1 - y0 / 2) * wp)
                    } else {
                        shared.slice((o * ho + y0) * wo, (y1 - y0) * wo)
                    }
                };
                let rows_out = if pool { &mut *full } else { &mut *dst };
                let bias = bias.map_or(0.0, |b| b[o]);
                for ty in ty0..ty1 {
                    let t0 = (ty - ty0) * tw;
                    for xi in 0..POINTS {
                        let src = &m[(xi * c_out + o) * tiles + t0..][..tw];
                        tmp[xi * tw..][..tw].copy_from_slice(src);
                    }
                    let rows = &mut rows_out[(4 * ty - y0) * wo..];
                    output_tile_row(tmp, tw, rows, wo, (ho - 4 * ty).min(4), bias, relu);
                }
                if pool {
                    max_pool_rows(full, wo, dst, wp);
                }
            }
        });
    });
}

/// Bᵀ d B for the tiles of tile row `ty` of channel `c`: `out[ξ·tw + tx]` for the 36 points
/// ξ = 6a + b.
fn input_tile_row(input: &BuiltInput, c: usize, ty: usize, tw: usize, out: &mut [f32]) {
    let full = 4 * tw + 2;
    with_row_buffers(full, |bufs| {
        let (raw, vert) = bufs.split_at_mut(6);
        // The six built rows of this tile row.
        for (j, row) in raw.iter_mut().enumerate() {
            input.row_range(c, 4 * ty + j, 0, row);
        }
        // Bᵀ over the six rows first (plain vector arithmetic along the row), then Bᵀ along
        // each row's tiles.
        {
            let [d0, d1, d2, d3, d4, d5] = raw else {
                return;
            };
            let [r0, r1, r2, r3, r4, r5] = vert else {
                return;
            };
            for i in 0..full {
                let (a0, a1, a2, a3, a4, a5) = bt(d0[i], d1[i], d2[i], d3[i], d4[i], d5[i]);
                r0[i] = a0;
                r1[i] = a1;
                r2[i] = a2;
                r3[i] = a3;
                r4[i] = a4;
                r5[i] = a5;
            }
        }
        for (a, row) in vert.iter().enumerate() {
            let row = &row[..full];
            let (o0, rest) = out[a * 6 * tw..][..6 * tw].split_at_mut(tw);
            let (o1, rest) = rest.split_at_mut(tw);
            let (o2, rest) = rest.split_at_mut(tw);
            let (o3, rest) = rest.split_at_mut(tw);
            let (o4, o5) = rest.split_at_mut(tw);
            for tx in 0..tw {
                let d = &row[4 * tx..4 * tx + 6];
                let (b0, b1, b2, b3, b4, b5) = bt(d[0], d[1], d[2], d[3], d[4], d[5]);
                o0[tx] = b0;
                o1[tx] = b1;
                o2[tx] = b2;
                o3[tx] = b3;
                o4[tx] = b4;
                o5[tx] = b5;
            }
        }
    });
}

/// Runs `f` with twelve scratch rows of `len` floats (six built rows, six transformed), kept
/// per thread.
fn with_row_buffers<R>(len: usize, f: impl FnOnce(&mut [&mut [f32]]) -> R) -> R {
    thread_local! {
        static ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    ROWS.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < 12 * len {
            buf.resize(12 * len, 0.0);
        }
        let mut rows: Vec<&mut [f32]> = buf[..12 * len].chunks_exact_mut(len).collect();
        f(&mut rows)
    })
}

/// Bᵀ of F(4,3) applied to one 6-vector.
#[inline(always)]
fn bt(d0: f32, d1: f32, d2: f32, d3: f32, d4: f32, d5: f32) -> (f32, f32, f32, f32, f32, f32) {
    (
        4.0 * d0 - 5.0 * d2 + d4,
        -4.0 * (d1 + d2) + d3 + d4,
        4.0 * (d1 - d2) - d3 + d4,
        2.0 * (d3 - d1) + d4 - d2,
        2.0 * (d1 - d3) + d4 - d2,
        4.0 * d1 - 5.0 * d3 + d5,
    )
}

/// Aᵀ of F(4,3) applied to one 6-vector.
#[inline(always)]
fn at(m0: f32, m1: f32, m2: f32, m3: f32, m4: f32, m5: f32) -> (f32, f32, f32, f32) {
    let (p12, d12) = (m1 + m2, m1 - m2);
    let (p34, d34) = (m3 + m4, m3 - m4);
    (
        m0 + p12 + p34,
        d12 + 2.0 * d34,
        p12 + 4.0 * p34,
        d12 + 8.0 * d34 + m5,
    )
}

/// Aᵀ m A for one tile row: `m[ξ·tw + tx]` → `rows` (up to 4 output rows of `wo` pixels).
fn output_tile_row(
    m: &[f32],
    tw: usize,
    rows: &mut [f32],
    wo: usize,
    valid_rows: usize,
    bias: f32,
    relu: bool,
) {
    // Aᵀ over a (the point's row index) first: s[i][b][tx], vectorised along tx.
    with_scratch_s(24 * tw, |s| {
        for b in 0..6 {
            let col = |a: usize| &m[(a * 6 + b) * tw..][..tw];
            let (c0, c1, c2, c3, c4, c5) = (col(0), col(1), col(2), col(3), col(4), col(5));
            let (s0, rest) = s[b * 4 * tw..][..4 * tw].split_at_mut(tw);
            let (s1, rest) = rest.split_at_mut(tw);
            let (s2, s3) = rest.split_at_mut(tw);
            for tx in 0..tw {
                let (a0, a1, a2, a3) = at(c0[tx], c1[tx], c2[tx], c3[tx], c4[tx], c5[tx]);
                s0[tx] = a0;
                s1[tx] = a1;
                s2[tx] = a2;
                s3[tx] = a3;
            }
        }
        let full_tiles = wo / 4;
        for i in 0..valid_rows {
            let row = &mut rows[i * wo..][..wo];
            let sb = |b: usize| &s[(b * 4 + i) * tw..][..tw];
            let (e0, e1, e2, e3, e4, e5) = (sb(0), sb(1), sb(2), sb(3), sb(4), sb(5));
            let (body, tail) = row.split_at_mut(4 * full_tiles);
            for (tx, px) in body.chunks_exact_mut(4).enumerate() {
                let (y0, y1, y2, y3) = at(e0[tx], e1[tx], e2[tx], e3[tx], e4[tx], e5[tx]);
                px[0] = y0;
                px[1] = y1;
                px[2] = y2;
                px[3] = y3;
            }
            if !tail.is_empty() {
                let tx = full_tiles;
                let (y0, y1, y2, y3) = at(e0[tx], e1[tx], e2[tx], e3[tx], e4[tx], e5[tx]);
                for (d, v) in tail.iter_mut().zip([y0, y1, y2, y3]) {
                    *d = v;
                }
            }
            apply_bias(row, bias, relu);
        }
    });
}

/// `dst` (rows of `wp`) = 2×2 maxima of the row pairs of `src` (rows of `w`).
fn max_pool_rows(src: &[f32], w: usize, dst: &mut [f32], wp: usize) {
    for (pooled, pair) in dst.chunks_exact_mut(wp).zip(src.chunks_exact(2 * w)) {
        let (upper, lower) = pair.split_at(w);
        for ((d, a), b) in pooled
            .iter_mut()
            .zip(upper.chunks_exact(2))
            .zip(lower.chunks_exact(2))
        {
            *d = a[0].max(a[1]).max(b[0].max(b[1]));
        }
    }
}

fn apply_bias(row: &mut [f32], bias: f32, relu: bool) {
    if relu {
        row.iter_mut().for_each(|v| *v = (*v + bias).max(0.0));
    } else if bias != 0.0 {
        row.iter_mut().for_each(|v| *v += bias);
    }
}

fn with_scratch_s<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static S: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    S.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::cpu::conv::{flip_transpose, ConvShape};

    #[test]
    fn flipped_transposed_is_the_transform_of_the_flipped_kernel() {
        let (c_out, c_in) = (5, 19);
        let weight: Vec<f32> = (0..c_out * c_in * 9)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let shape = ConvShape {
            batch: 1,
            c_in,
            h: 8,
            w: 8,
            c_out,
            kh: 3,
            kw: 3,
        };
        let direct = WinogradWeights::flipped_transposed(&weight, c_out, c_in);
        let reference = WinogradWeights::new(&flip_transpose(&weight, &shape), c_in, c_out);
        assert_eq!((direct.c_out, direct.c_in), (c_in, c_out));
        assert_eq!(direct.u, reference.u);
    }
}
