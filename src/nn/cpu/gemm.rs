//! A bounds-checked wrapper around the `gemm` crate's single-precision kernel.

/// A strided matrix view: element (r, c) is `data[offset + r * row_stride + c * col_stride]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows`×`cols` matrix starting at `offset` with rows `row_stride` apart.
    pub fn row_major(
        data: &'a [f32],
        offset: usize,
        rows: usize,
        cols: usize,
        row_stride: usize,
    ) -> Self {
        Self {
            data,
            offset,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn last_index(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            return self.offset;
        }
        self.offset + (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
    }
}

/// `dst (m×n, row-major, rows dst_stride apart) = [dst +] a (m×k) · b (k×n)`, on the calling
/// thread. Panics if a view reaches outside its slice (the unsafe call relies on it).
pub fn sgemm(a: MatRef, b: MatRef, dst: &mut [f32], dst_stride: usize, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "sgemm: inner dimensions differ");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        m == 0 || (m - 1) * dst_stride + n <= dst.len(),
        "sgemm: destination too small"
    );
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_stride).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    assert!(a.last_index() < a.data.len(), "sgemm: lhs out of bounds");
    assert!(b.last_index() < b.data.len(), "sgemm: rhs out of bounds");
    // SAFETY: every element the kernel touches lies inside the slices (checked above); dst
    // does not alias a or b (it is a distinct &mut).
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            accumulate,
            a.data.as_ptr().add(a.offset),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr().add(b.offset),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            ::gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_product_with_transposed_views() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.91).cos()).collect();
        let mut dst = vec![1.0f32; m * n];
        let b = MatRef::row_major(&bt, 0, n, k, k).t();
        sgemm(MatRef::row_major(&a, 0, m, k, k), b, &mut dst, n, true);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|p| a[i * k + p] * bt[j * k + p]).sum::<f32>();
                assert!((dst[i * n + j] - want).abs() < 1e-5);
            }
        }
    }
}
