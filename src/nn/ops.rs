//! Custom ops with correct and cheaper gradients than candle 0.11's built-in ones.
//!
//! Why they exist:
//! - candle's `max_pool2d` backward spreads 0.25 over the window instead of routing the whole
//!   gradient to the maximum, which silently breaks every loss that goes through a VGG.
//! - candle's `conv2d` backward always computes the kernel gradient and computes the input
//!   gradient with a slow direct `conv_transpose2d`. Optimisation-based stylisation only needs the
//!   input gradient, so [`conv2d`] skips the kernel gradient unless asked and computes the input
//!   gradient as an ordinary (im2col + gemm) convolution.
//!
//! The custom kernels are CPU/f32 only; other devices and dtypes use stock candle ops (always
//! correct in the forward pass, and with a gradient built from ops whose backward is right).

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Result, Shape, Tensor,
};

/// 2-D convolution, NCHW input, OIHW weight, optional bias of shape (O,).
/// `weight_grad`: whether the backward pass must produce a gradient for `w` (and the bias)
/// (training) or only for `x` (optimisation-based stylisation, where the network is fixed).
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    padding: usize,
    stride: usize,
    weight_grad: bool,
) -> Result<Tensor> {
    if stride == 0 {
        bail!("conv2d: stride must be at least 1")
    }
    // A fixed network: cut the weights out of the graph so no gradient is ever produced for them.
    let (w, bias) = if weight_grad {
        (w.clone(), bias.cloned())
    } else {
        (w.detach(), bias.map(Tensor::detach))
    };
    let y = if custom_kernels_apply(x) && w.dtype() == DType::F32 {
        conv2d_no_bias_cpu(x, &w, padding, stride)?
    } else {
        x.conv2d(&w, padding, stride, 1, 1)?
    };
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
        None => Ok(y),
    }
}

/// 2×2 max-pool with stride 2 (odd sizes are floored, as in PyTorch). The gradient goes entirely
/// to the maximum of each window (the first one on ties), as in PyTorch.
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h < 2 || w < 2 {
        bail!("max_pool2x2: input of {h}x{w} pixels is too small for a 2x2 pool")
    }
    if custom_kernels_apply(x) {
        x.contiguous()?.apply_op1(MaxPool2x2)
    } else {
        max_pool2x2_stock(x)
    }
}

fn custom_kernels_apply(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32
}

/// Max-pool from stock ops: max over explicit 2×2 window dims. Reduce-max's backward routes the
/// gradient to the maximum (to every tied maximum, the only difference from the CPU kernel).
fn max_pool2x2_stock(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (h / 2, w / 2);
    x.narrow(2, 0, oh * 2)?
        .narrow(3, 0, ow * 2)?
        .contiguous()?
        .reshape((n, c, oh, 2, ow, 2))?
        .max(5)?
        .max(3)
}

// ---------------------------------------------------------------------------------------------
// conv2d
// ---------------------------------------------------------------------------------------------

fn conv2d_no_bias_cpu(x: &Tensor, w: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    // candle's own forward conv is good (tiled im2col + gemm); only its backward is replaced.
    let y = x.detach().conv2d(&w.detach(), padding, stride, 1, 1)?;
    if !x.track_op() && !w.track_op() {
        return Ok(y);
    }
    let op = Conv2dWithGrad {
        padding,
        stride,
        output: Mutex::new(Some(y)),
    };
    x.apply_op2(w, op)
}

/// Wraps a precomputed convolution output so that autograd uses our backward.
///
/// The output is handed over through a `Mutex<Option<_>>` and taken in `cpu_fwd` (rather than
/// passed as a third op argument) so the graph does not keep a second copy of every activation.
struct Conv2dWithGrad {
    padding: usize,
    stride: usize,
    output: Mutex<Option<Tensor>>,
}

impl CustomOp2 for Conv2dWithGrad {
    fn name(&self) -> &'static str {
        "atelier-conv2d"
    }

    fn cpu_fwd(
        &self,
        _x: &CpuStorage,
        _x_layout: &Layout,
        _w: &CpuStorage,
        _w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = self
            .output
            .lock()
            .map_err(|_| candle_core::Error::Msg("conv2d: poisoned output lock".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("conv2d: forward evaluated twice".into()))?;
        let shape = y.shape().clone();
        let data = y.flatten_all()?.to_vec1::<f32>()?;
        Ok((CpuStorage::F32(data), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, wd) = x.dims4()?;
        let grad_x = if x.track_op() {
            Some(conv2d_input_grad(
                grad_y,
                w,
                (h, wd),
                self.padding,
                self.stride,
            )?)
        } else {
            None
        };
        // `conv2d` detaches `w` when no weight gradient is wanted, so tracking means wanted.
        let grad_w = if w.track_op() {
            Some(conv2d_weight_grad(x, grad_y, w, self.padding, self.stride)?)
        } else {
            None
        };
        Ok((grad_x, grad_w))
    }
}

/// dL/dx of `y = conv2d(x, w, padding, stride)`, computed as a plain convolution of the
/// (zero-dilated, for stride > 1) output gradient with the spatially flipped kernel whose
/// in/out channels are swapped.
fn conv2d_input_grad(
    grad_y: &Tensor,
    w: &Tensor,
    (in_h, in_w): (usize, usize),
    padding: usize,
    stride: usize,
) -> Result<Tensor> {
    let (_, _, k_h, k_w) = w.dims4()?;
    let w_flipped = flip_transpose_kernel(&w.detach())?;
    let grad_y = grad_y.detach();
    if stride == 1 && k_h == k_w && padding < k_h {
        // Full correlation: output size (H + 2p - k + 1) + 2(k - 1 - p) - k + 1 = H.
        return grad_y
            .contiguous()?
            .conv2d(&w_flipped, k_h - 1 - padding, 1, 1, 1);
    }
    // General case: put grad_y[o] at o*stride + (k - 1 - p) in a zero map of size H + k - 1; a
    // valid correlation with the flipped kernel then yields exactly H rows, including the rows
    // that the forward conv never reached when (H + 2p - k) is not divisible by the stride.
    let offset = |k: usize| k as isize - 1 - padding as isize;
    let spread = grad_y.contiguous()?.apply_op1_no_bwd(&SpreadGrad {
        stride,
        offset: (offset(k_h), offset(k_w)),
        out: (in_h + k_h - 1, in_w + k_w - 1),
    })?;
    spread.conv2d(&w_flipped, 0, 1, 1, 1)
}

/// dL/dw: correlate the input (batch and channels swapped) with the output gradient used as a
/// kernel dilated by the stride, the same identity candle uses, on detached tensors.
fn conv2d_weight_grad(
    x: &Tensor,
    grad_y: &Tensor,
    w: &Tensor,
    padding: usize,
    stride: usize,
) -> Result<Tensor> {
    let (_, _, k_h, k_w) = w.dims4()?;
    let grad_w = x
        .detach()
        .transpose(0, 1)?
        .conv2d(&grad_y.detach().transpose(0, 1)?, padding, 1, stride, 1)?
        .transpose(0, 1)?;
    // The correlation reaches a few extra taps when (H + 2p - k) is not divisible by the stride.
    grad_w.narrow(2, 0, k_h)?.narrow(3, 0, k_w)?.contiguous()
}

/// (O, I, kh, kw) -> (I, O, kh, kw), flipped along both spatial axes.
fn flip_transpose_kernel(w: &Tensor) -> Result<Tensor> {
    let (c_out, c_in, k_h, k_w) = w.dims4()?;
    let src = w.flatten_all()?.to_vec1::<f32>()?;
    let mut dst = vec![0f32; src.len()];
    let k_area = k_h * k_w;
    for o in 0..c_out {
        for i in 0..c_in {
            let s = &src[(o * c_in + i) * k_area..][..k_area];
            let d = &mut dst[(i * c_out + o) * k_area..][..k_area];
            for (dst_tap, src_tap) in d.iter_mut().zip(s.iter().rev()) {
                // Reversing the flattened kh*kw block flips both spatial axes at once.
                *dst_tap = *src_tap;
            }
        }
    }
    Tensor::from_vec(dst, (c_in, c_out, k_h, k_w), w.device())
}

/// Scatters a (N, C, Ho, Wo) map into a zero (N, C, out.0, out.1) map at
/// (offset + o * stride); positions that fall outside are dropped.
struct SpreadGrad {
    stride: usize,
    offset: (isize, isize),
    out: (usize, usize),
}

impl CustomOp1 for SpreadGrad {
    fn name(&self) -> &'static str {
        "atelier-spread-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(storage, layout, self.name())?;
        let (n, c, h, w) = layout.shape().dims4()?;
        let (out_h, out_w) = self.out;
        let mut dst = vec![0f32; n * c * out_h * out_w];
        let place = |o: usize, offset: isize, size: usize| {
            let p = offset + (o * self.stride) as isize;
            (p >= 0 && (p as usize) < size).then_some(p as usize)
        };
        for (plane_src, plane_dst) in src
            .chunks_exact(h * w)
            .zip(dst.chunks_exact_mut(out_h * out_w))
        {
            for (oy, row) in plane_src.chunks_exact(w).enumerate() {
                let Some(y) = place(oy, self.offset.0, out_h) else {
                    continue;
                };
                let dst_row = &mut plane_dst[y * out_w..][..out_w];
                for (ox, &v) in row.iter().enumerate() {
                    if let Some(x) = place(ox, self.offset.1, out_w) {
                        dst_row[x] = v;
                    }
                }
            }
        }
        Ok((CpuStorage::F32(dst), Shape::from((n, c, out_h, out_w))))
    }
}

// ---------------------------------------------------------------------------------------------
// max-pool
// ---------------------------------------------------------------------------------------------

/// Element count above which the max-pool kernels split planes over threads.
const PARALLEL_THRESHOLD: usize = 1 << 20;

struct MaxPool2x2;

impl CustomOp1 for MaxPool2x2 {
    fn name(&self) -> &'static str {
        "atelier-max-pool2x2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(storage, layout, self.name())?;
        let (n, c, h, w) = layout.shape().dims4()?;
        let (oh, ow) = (h / 2, w / 2);
        let mut dst = vec![0f32; n * c * oh * ow];
        for_each_plane(src, &mut dst, h * w, oh * ow, |plane, out| {
            for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
                for (ox, o) in out_row.iter_mut().enumerate() {
                    *o = plane[window_argmax(plane, w, oy, ox)];
                }
            }
        });
        Ok((CpuStorage::F32(dst), Shape::from((n, c, oh, ow))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad_y: &Tensor) -> Result<Option<Tensor>> {
        let grad_x = x
            .detach()
            .apply_op2_no_bwd(&grad_y.detach().contiguous()?, &MaxPool2x2Backward)?;
        Ok(Some(grad_x))
    }
}

/// (x, grad_y) -> grad_x: each window's gradient goes to its argmax, recomputed from x (cheaper
/// than keeping an index tensor alive through the whole forward pass).
struct MaxPool2x2Backward;

impl CustomOp2 for MaxPool2x2Backward {
    fn name(&self) -> &'static str {
        "atelier-max-pool2x2-backward"
    }

    fn cpu_fwd(
        &self,
        x_storage: &CpuStorage,
        x_layout: &Layout,
        g_storage: &CpuStorage,
        g_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(x_storage, x_layout, self.name())?;
        let g = contiguous_f32(g_storage, g_layout, self.name())?;
        let (n, c, h, w) = x_layout.shape().dims4()?;
        let (oh, ow) = (h / 2, w / 2);
        if g_layout.shape().dims() != [n, c, oh, ow] {
            bail!(
                "max_pool2x2 backward: gradient shape {:?} does not match input {:?}",
                g_layout.shape(),
                x_layout.shape()
            )
        }
        let mut dst = vec![0f32; x.len()];
        let planes = x.chunks_exact(h * w).zip(g.chunks_exact(oh * ow));
        let work = |(plane, grad): (&[f32], &[f32]), out: &mut [f32]| {
            for (oy, grad_row) in grad.chunks_exact(ow).enumerate() {
                for (ox, &gv) in grad_row.iter().enumerate() {
                    out[window_argmax(plane, w, oy, ox)] = gv;
                }
            }
        };
        let plane_count = n * c;
        let threads = thread_count(x.len(), plane_count);
        if threads <= 1 {
            for (inputs, out) in planes.zip(dst.chunks_exact_mut(h * w)) {
                work(inputs, out);
            }
        } else {
            let per_thread = plane_count.div_ceil(threads);
            let inputs: Vec<_> = planes.collect();
            std::thread::scope(|scope| {
                for (ins, outs) in inputs
                    .chunks(per_thread)
                    .zip(dst.chunks_mut(per_thread * h * w))
                {
                    scope.spawn(move || {
                        for (&inp, out) in ins.iter().zip(outs.chunks_exact_mut(h * w)) {
                            work(inp, out);
                        }
                    });
                }
            });
        }
        Ok((CpuStorage::F32(dst), x_layout.shape().clone()))
    }
}

/// Index in `plane` (row width `w`) of the maximum of window (oy, ox): row-major scan, first
/// maximum kept on ties, NaN wins (so NaNs propagate as in PyTorch).
#[inline(always)]
fn window_argmax(plane: &[f32], w: usize, oy: usize, ox: usize) -> usize {
    let top = 2 * oy * w + 2 * ox;
    let mut best = top;
    for idx in [top + 1, top + w, top + w + 1] {
        let (v, b) = (plane[idx], plane[best]);
        if v > b || (v.is_nan() && !b.is_nan()) {
            best = idx;
        }
    }
    best
}

/// Runs `f(input_plane, output_plane)` over all planes, on several threads for large inputs.
fn for_each_plane(
    src: &[f32],
    dst: &mut [f32],
    in_plane: usize,
    out_plane: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    let plane_count = src.len() / in_plane;
    let threads = thread_count(src.len(), plane_count);
    if threads <= 1 {
        for (plane, out) in src
            .chunks_exact(in_plane)
            .zip(dst.chunks_exact_mut(out_plane))
        {
            f(plane, out);
        }
        return;
    }
    let per_thread = plane_count.div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        for (ins, outs) in src
            .chunks(per_thread * in_plane)
            .zip(dst.chunks_mut(per_thread * out_plane))
        {
            scope.spawn(move || {
                for (plane, out) in ins
                    .chunks_exact(in_plane)
                    .zip(outs.chunks_exact_mut(out_plane))
                {
                    f(plane, out);
                }
            });
        }
    });
}

fn thread_count(elements: usize, planes: usize) -> usize {
    if elements < PARALLEL_THRESHOLD {
        return 1;
    }
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(planes)
}

/// The f32 data of a contiguous CPU storage; the wrappers make inputs contiguous first.
fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        bail!("{op}: only f32 is supported, got {:?}", storage.dtype())
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: input must be contiguous"),
    }
}
