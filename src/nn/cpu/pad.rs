//! The input a convolution actually reads, built from the stored tensor in one pass: nearest ×2
//! upsampling, zero or reflection padding, zero-dilation (for stride-2 input gradients), and
//! extra zero rows/columns that tile-based kernels need. The adjoint (`fold`) sends a gradient
//! with respect to that input back to the stored tensor.

use rayon::prelude::*;

/// How the border of a convolution's input is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PadMode {
    Zero,
    /// PyTorch's `ReflectionPad2d`: the edge pixel is not repeated.
    Reflect,
}

/// Marks a position of the built input that is zero rather than a copy of a stored pixel.
const ZERO: u32 = u32::MAX;

/// For each position along one axis of the built input, the stored index it copies.
#[derive(Debug, Clone)]
pub struct AxisMap {
    src: Vec<u32>,
    /// `(dst_start, src_start, len)`: a run where both indices advance by one (plain copy).
    run: Option<(usize, usize, usize)>,
}

/// How a stored axis of `len` entries becomes a built axis of `out_len` entries.
#[derive(Debug, Clone, Copy)]
pub struct AxisPlan {
    pub len: usize,
    pub pad: usize,
    pub mode: PadMode,
    pub upsample: bool,
    /// Zeros inserted between stored entries (1: none).
    pub dilate: usize,
    pub out_len: usize,
}

impl AxisMap {
    pub fn new(plan: AxisPlan) -> Self {
        let dilate = plan.dilate.max(1);
        let extent = if plan.upsample {
            2 * plan.len
        } else {
            (plan.len.max(1) - 1) * dilate + 1
        } as isize;
        let src: Vec<u32> = (0..plan.out_len)
            .map(|r| {
                let mut u = r as isize - plan.pad as isize;
                // Only the padding itself reflects; positions beyond it (tile rounding) are zero.
                let pad = plan.pad as isize;
                if plan.mode == PadMode::Reflect && extent > 1 && u >= -pad && u < extent + pad {
                    if u < 0 && -u < extent {
                        u = -u;
                    } else if u >= extent && u < 2 * extent - 1 {
                        u = 2 * (extent - 1) - u;
                    }
                }
                if plan.len == 0 || u < 0 || u >= extent {
                    return ZERO;
                }
                let u = u as usize;
                if plan.upsample {
                    (u / 2) as u32
                } else if u.is_multiple_of(dilate) {
                    (u / dilate) as u32
                } else {
                    ZERO
                }
            })
            .collect();
        let run = longest_copy_run(&src);
        Self { src, run }
    }

    pub fn len(&self) -> usize {
        self.src.len()
    }

    pub fn is_empty(&self) -> bool {
        self.src.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<usize> {
        let s = self.src[i];
        (s != ZERO).then_some(s as usize)
    }
}

fn longest_copy_run(src: &[u32]) -> Option<(usize, usize, usize)> {
    let mut best: Option<(usize, usize, usize)> = None;
    let mut i = 0;
    while i < src.len() {
        if src[i] == ZERO {
            i += 1;
            continue;
        }
        let start = i;
        while i + 1 < src.len() && src[i + 1] != ZERO && src[i + 1] == src[i] + 1 {
            i += 1;
        }
        let len = i + 1 - start;
        if best.is_none_or(|(_, _, l)| len > l) {
            best = Some((start, src[start] as usize, len));
        }
        i += 1;
    }
    best.filter(|&(_, _, len)| len > 1)
}

/// One sample's stored planes seen through the row and column maps: the built input, read a
/// row (or part of one) at a time, never materialised whole. Kernels pull the rows they are
/// about to use into cache-sized buffers, which saves a full write and read of the input.
pub struct BuiltInput<'a> {
    planes: &'a [f32],
    src_h: usize,
    src_w: usize,
    rows: &'a AxisMap,
    cols: &'a AxisMap,
}

impl<'a> BuiltInput<'a> {
    /// `planes`: channels × `src_h` × `src_w` stored pixels.
    pub fn new(
        planes: &'a [f32],
        (src_h, src_w): (usize, usize),
        rows: &'a AxisMap,
        cols: &'a AxisMap,
    ) -> Self {
        Self {
            planes,
            src_h,
            src_w,
            rows,
            cols,
        }
    }

    pub fn height(&self) -> usize {
        self.rows.len()
    }

    pub fn width(&self) -> usize {
        self.cols.len()
    }

    /// Asks the CPU to start loading the stored row behind built row `r` of channel `c`.
    ///
    /// Rows of wide images are whole 4 KiB pages, and hardware prefetchers stop at page
    /// boundaries: without this, every row a kernel gathers starts with a string of cache
    /// misses. Issued a row ahead, the loads overlap the work on the current row.
    pub fn prefetch_row(&self, c: usize, r: usize) {
        if r >= self.rows.len() {
            return;
        }
        let Some(sr) = self.rows.get(r) else { return };
        let start = (c * self.src_h + sr) * self.src_w;
        if let Some(row) = self.planes.get(start..start + self.src_w) {
            prefetch(row);
        }
    }

    /// Built row `r` of channel `c`, columns `start..start + out.len()`, into `out`.
    pub fn row_range(&self, c: usize, r: usize, start: usize, out: &mut [f32]) {
        let len = out.len();
        let Some(sr) = self.rows.get(r) else {
            out.fill(0.0);
            return;
        };
        let src_row = &self.planes[(c * self.src_h + sr) * self.src_w..][..self.src_w];
        let map = &self.cols.src[start..start + len];
        let gather = |out: &mut [f32], map: &[u32]| {
            for (o, &s) in out.iter_mut().zip(map) {
                *o = if s == ZERO { 0.0 } else { src_row[s as usize] };
            }
        };
        // The interior is a plain copy; only the borders need the index map.
        if let Some((d, s, n)) = self.cols.run {
            let (a, b) = (d.max(start), (d + n).min(start + len));
            if a < b {
                let (a_rel, b_rel) = (a - start, b - start);
                gather(&mut out[..a_rel], &map[..a_rel]);
                out[a_rel..b_rel].copy_from_slice(&src_row[s + a - d..s + b - d]);
                gather(&mut out[b_rel..], &map[b_rel..]);
                return;
            }
        }
        gather(out, map);
    }
}

/// Prefetches every cache line of `data` into the cache hierarchy (a no-op off x86-64).
fn prefetch(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        const LINE_FLOATS: usize = 16;
        for i in (0..data.len()).step_by(LINE_FLOATS) {
            // SAFETY: prefetching is a hint that never faults; the address lies in `data`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().add(i).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// Builds every plane of the built input into `dst` (channels × rows × columns); the kernels
/// read rows on the fly instead, this is the reference for tests.
#[cfg(test)]
pub fn fill(src: &[f32], src_w: usize, rows: &AxisMap, cols: &AxisMap, dst: &mut [f32]) {
    let plane_out = rows.len() * cols.len();
    let channels = dst.len() / plane_out;
    let src_h = src.len() / channels / src_w;
    let input = BuiltInput::new(src, (src_h, src_w), rows, cols);
    for (i, row) in dst.chunks_exact_mut(cols.len()).enumerate() {
        input.row_range(i / rows.len(), i % rows.len(), 0, row);
    }
}

/// The adjoint of [`fill`]: `grad_src` (stored planes, `src_w` wide) receives the sum of the
/// gradients of every built position that copied it.
pub fn fold(
    grad_built: &[f32],
    rows: &AxisMap,
    cols: &AxisMap,
    src_w: usize,
    grad_src: &mut [f32],
) {
    let plane_built = rows.len() * cols.len();
    if plane_built == 0 {
        grad_src.fill(0.0);
        return;
    }
    let planes = grad_built.len() / plane_built;
    let plane_src = grad_src.len() / planes.max(1);
    grad_src
        .par_chunks_mut(plane_src.max(1))
        .zip(grad_built.par_chunks(plane_built))
        .for_each(|(acc, g)| {
            acc.fill(0.0);
            for (r, g_row) in g.chunks_exact(cols.len()).enumerate() {
                let Some(sr) = rows.get(r) else { continue };
                let acc_row = &mut acc[sr * src_w..][..src_w];
                match cols.run {
                    // Fast path for the interior, then the few border entries one by one.
                    Some((d, s, len)) => {
                        for (a, &v) in acc_row[s..s + len].iter_mut().zip(&g_row[d..d + len]) {
                            *a += v;
                        }
                        for (x, &s) in cols.src.iter().enumerate() {
                            if s != ZERO && !(d..d + len).contains(&x) {
                                acc_row[s as usize] += g_row[x];
                            }
                        }
                    }
                    None => {
                        for (&s, &v) in cols.src.iter().zip(g_row) {
                            if s != ZERO {
                                acc_row[s as usize] += v;
                            }
                        }
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(
        len: usize,
        pad: usize,
        mode: PadMode,
        upsample: bool,
        dilate: usize,
        out: usize,
    ) -> Vec<Option<usize>> {
        let map = AxisMap::new(AxisPlan {
            len,
            pad,
            mode,
            upsample,
            dilate,
            out_len: out,
        });
        (0..map.len()).map(|i| map.get(i)).collect()
    }

    #[test]
    fn reflection_matches_pytorch() {
        // [a b c d] reflect-padded by 2: [c b a b c d c b]
        let got = axis(4, 2, PadMode::Reflect, false, 1, 8);
        let want = [2, 1, 0, 1, 2, 3, 2, 1].map(Some);
        assert_eq!(got, want);
    }

    #[test]
    fn upsample_then_reflect_and_zero_tail() {
        // [a b] upsampled: [a a b b]; reflect 1: [a a a b b b]; two extra zeros.
        let got = axis(2, 1, PadMode::Reflect, true, 1, 8);
        let mut want = [0, 0, 0, 1, 1, 1].map(Some).to_vec();
        want.extend([None, None]);
        assert_eq!(got, want);
    }

    #[test]
    fn dilation_inserts_zeros() {
        let got = axis(3, 2, PadMode::Zero, false, 2, 9);
        let want = [
            None,
            None,
            Some(0),
            None,
            Some(1),
            None,
            Some(2),
            None,
            None,
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn fold_is_the_adjoint_of_fill() {
        let (h, w) = (3, 5);
        let rows = AxisMap::new(AxisPlan {
            len: h,
            pad: 2,
            mode: PadMode::Reflect,
            upsample: true,
            dilate: 1,
            out_len: 2 * h + 5,
        });
        let cols = AxisMap::new(AxisPlan {
            len: w,
            pad: 2,
            mode: PadMode::Reflect,
            upsample: true,
            dilate: 1,
            out_len: 2 * w + 4,
        });
        let x: Vec<f32> = (0..2 * h * w).map(|i| (i as f32 * 0.7).sin()).collect();
        let g: Vec<f32> = (0..2 * rows.len() * cols.len())
            .map(|i| (i as f32 * 0.3).cos())
            .collect();
        let mut built = vec![0.0; g.len()];
        fill(&x, w, &rows, &cols, &mut built);
        let mut back = vec![0.0; x.len()];
        fold(&g, &rows, &cols, w, &mut back);
        let lhs: f64 = built
            .iter()
            .zip(&g)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        let rhs: f64 = x
            .iter()
            .zip(&back)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        assert!((lhs - rhs).abs() < 1e-4, "{lhs} vs {rhs}");
    }
}
