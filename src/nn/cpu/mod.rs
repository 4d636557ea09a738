//! CPU compute kernels on plain `f32` slices (NCHW), with no candle types: convolution (a
//! Winograd F(4,3) path for 3×3 stride-1 layers, a tiled im2col + GEMM path for the rest),
//! padding/upsampling fused into the convolution's input, and instance normalisation.
//! `crate::nn::ops` wraps them as candle custom ops so autograd reaches them.
//!
//! Work is split over rayon's pool in blocks that fit the L2 cache; each block calls a
//! single-threaded GEMM (the `gemm` crate, the same kernels candle's matmul uses).

pub mod conv;
pub mod gemm;
pub mod norm;
pub mod pad;
pub mod winograd;

use std::cell::RefCell;

thread_local! {
    /// Per-thread scratch space reused between blocks and calls (rayon's threads live for the
    /// whole process), so hot loops do not page-fault fresh allocations in.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer of at least `len` floats (contents unspecified).
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        // Re-entered on the same thread (not expected): fall back to a fresh buffer.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// A raw output pointer shared by parallel blocks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: every user writes a region no other block writes (checked by construction at each
// call site), and the buffer outlives the parallel loop that uses it.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub fn new(data: &mut [f32]) -> Self {
        Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
        }
    }

    /// `len` floats starting at `start`.
    ///
    /// # Safety
    /// No other live slice obtained from this `SharedMut` may overlap the range.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.len, "SharedMut: range out of bounds");
        // SAFETY: in bounds (checked above); exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}
