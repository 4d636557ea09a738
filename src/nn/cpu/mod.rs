//! CPU compute kernels on plain `f32` slices (NCHW), with no candle types: convolution (a
//! Winograd F(4,3) path for 3×3 stride-1 layers, a tiled im2col + GEMM path for the rest),
//! padding/upsampling fused into the convolution's input, and instance normalisation.
//! `crate::nn::ops` wraps them as candle custom ops so autograd reaches them.
//!
//! Work is split over rayon's pool in blocks that fit the L2 cache; each block calls a
//! single-threaded GEMM (the `gemm` crate, the same kernels candle's matmul uses).

pub mod conv;
pub mod direct;
pub mod elementwise;
pub mod gemm;
pub mod norm;
pub mod pad;
pub mod winograd;

/// The kernel paths this CPU runs, chosen at run time, for benchmark tables: the `gemm` crate's
/// matrix kernels (its AVX-512 ones with the `x86-v4` feature, else AVX2+FMA, else portable)
/// and this module's direct and Winograd kernels (AVX2+FMA or portable). All f32: there is no
/// bf16 path (see the README).
pub fn kernel_paths() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        let fma = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        let gemm = if avx512 {
            "AVX-512"
        } else if fma {
            "AVX2"
        } else {
            "portable"
        };
        let own = if direct::available() {
            "AVX2"
        } else {
            "portable"
        };
        format!("gemm {gemm}, conv {own}, f32")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "gemm portable/NEON, conv portable, f32".to_string()
    }
}

use std::sync::{Mutex, PoisonError};

/// Scratch buffers for the parallel blocks of one operation: a block takes a buffer, uses it
/// and gives it back, so blocks reuse a few buffers instead of allocating (and zeroing) their
/// own, and the buffers are freed when the operation ends. Buffers kept per thread between
/// operations pinned megabytes in the middle of the allocator's arenas, so the next large
/// activation could not reuse the space around them: +30–65 MB peak on a VGG16 forward.
#[derive(Default)]
pub(crate) struct Scratch {
    free: Mutex<Vec<Vec<f32>>>,
}

impl Scratch {
    /// Runs `f` with a buffer of `len` floats (contents unspecified).
    pub fn with<R>(&self, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
        // A panicking block only leaves a buffer behind; the list itself stays valid.
        let taken = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut buf = taken.unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        let result = f(&mut buf[..len]);
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(buf);
        result
    }
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

/// A buffer of `len` floats for a kernel to overwrite completely, handed out without zeroing:
/// zeroing runs on the calling thread alone, and for a 64 MB first-layer output it cost as much
/// as the convolution's own (parallel, streaming) writes. Debug builds fill it with a marker
/// instead, and [`assert_written`] checks that the kernel left none behind.
pub(crate) fn output_buffer(len: usize) -> Vec<f32> {
    if cfg!(debug_assertions) {
        return vec![f32::from_bits(UNWRITTEN); len];
    }
    let mut out = Vec::with_capacity(len);
    // SAFETY: every f32 bit pattern is a valid value, and every caller hands the buffer to a
    // kernel that writes every element before anything reads it (each kernel covers all rows,
    // columns and channels of its output; debug builds check this with `assert_written`).
    #[allow(clippy::uninit_vec)]
    unsafe {
        out.set_len(len)
    };
    out
}

/// A NaN payload that arithmetic on finite inputs never produces.
const UNWRITTEN: u32 = 0x7fc0_5eed;

/// Debug builds: panics if a kernel left part of an [`output_buffer`] unwritten.
pub(crate) fn assert_written(out: &[f32]) {
    if cfg!(debug_assertions) {
        assert!(
            out.iter().all(|v| v.to_bits() != UNWRITTEN),
            "a kernel left output elements unwritten"
        );
    }
}
