//! Custom candle ops: the CPU kernels of [`crate::nn::cpu`] with correct, cheap gradients.
//!
//! Why they exist:
//! - candle 0.11's CPU convolution runs at a fraction of its matmul speed, its backward always
//!   computes the kernel gradient and uses a slow direct `conv_transpose2d`. [`conv2d_fused`]
//!   runs Winograd F(4,3) or tiled im2col + GEMM kernels, folds upsampling, reflection padding,
//!   bias and ReLU into the convolution (no padded copies kept in the graph), and computes the
//!   kernel gradient only when asked (training).
//! - candle's `max_pool2d` backward spreads 0.25 over the window instead of routing the whole
//!   gradient to the maximum, which silently breaks every loss that goes through a VGG.
//! - candle has no instance norm; one built from its ops makes five passes over the data.
//!
//! The custom kernels are CPU/f32 only; other devices and dtypes use stock candle ops (always
//! correct in the forward pass, and with a gradient built from ops whose backward is right).

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor,
};

pub use crate::nn::cpu::conv::ConvParams;
use crate::nn::cpu::conv::{self as conv_kernel, ConvShape};
use crate::nn::cpu::norm as norm_kernel;
pub use crate::nn::cpu::pad::PadMode;
use crate::nn::layers;

/// 2-D convolution with zero padding, NCHW input, OIHW weight, optional bias of shape (O,).
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
    let params = ConvParams {
        pad: padding,
        mode: PadMode::Zero,
        stride,
        upsample: false,
        relu: false,
    };
    conv2d_fused(x, w, bias, params, weight_grad)
}

/// `act(conv(pad(upsample(x)), w) + bias)` in one op: the upsampling, padding, bias and ReLU
/// that `params` asks for happen inside the convolution.
pub fn conv2d_fused(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    params: ConvParams,
    weight_grad: bool,
) -> Result<Tensor> {
    if params.stride == 0 {
        bail!("conv2d: stride must be at least 1")
    }
    // A fixed network: cut the weights out of the graph so no gradient is ever produced for them.
    let (w, bias) = if weight_grad {
        (w.clone(), bias.cloned())
    } else {
        (w.detach(), bias.map(Tensor::detach))
    };
    if !(custom_kernels_apply(x) && w.dtype() == DType::F32) {
        return conv2d_stock(x, &w, bias.as_ref(), params);
    }
    let shape = conv_shape(x, &w, &params)?;
    let c_out = shape.c_out;
    let bias = match bias {
        Some(b) => {
            if b.dims() != [c_out] {
                bail!("conv2d: bias of shape {:?}, expected [{c_out}]", b.dims())
            }
            b.to_dtype(DType::F32)?
        }
        None => Tensor::zeros(c_out, DType::F32, x.device())?,
    };
    let op = FusedConv {
        shape,
        params,
        pool: false,
    };
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &bias.contiguous()?, op)
}

/// `max_pool2x2(conv2d_fused(x, w, bias, params))` for inference. Where the Winograd kernel
/// runs, each block pools its own output rows, so the full-size activation (64 MB for a VGG's
/// conv1_2 at 512²) is never stored. Inputs that need a gradient, other devices and other
/// layer shapes take the two ops.
pub fn conv2d_fused_maxpool(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    params: ConvParams,
) -> Result<Tensor> {
    let two_ops = || max_pool2x2(&conv2d_fused(x, w, Some(bias), params, false)?);
    if x.track_op() || !(custom_kernels_apply(x) && w.dtype() == DType::F32) {
        return two_ops();
    }
    // Anything unusual (and every error message) goes through the two ops.
    let shape = match conv_shape(x, w, &params) {
        Ok(shape) if bias.dims() == [shape.c_out] && conv_kernel::can_pool(&shape, &params) => {
            shape
        }
        _ => return two_ops(),
    };
    x.contiguous()?.apply_op3_no_bwd(
        &w.detach().contiguous()?,
        &bias.detach().to_dtype(DType::F32)?.contiguous()?,
        &FusedConv {
            shape,
            params,
            pool: true,
        },
    )
}

/// The sizes of convolving `x` (NCHW) with `w` (OIHW), checked against `params`.
fn conv_shape(x: &Tensor, w: &Tensor, params: &ConvParams) -> Result<ConvShape> {
    let (batch, c_in, h, wd) = x.dims4()?;
    let (c_out, w_in, kh, kw) = w.dims4()?;
    if w_in != c_in {
        bail!("conv2d: input has {c_in} channels, the kernel expects {w_in}")
    }
    let shape = ConvShape {
        batch,
        c_in,
        h,
        w: wd,
        c_out,
        kh,
        kw,
    };
    shape
        .validate(params)
        .map_err(|e| candle_core::Error::Msg(format!("conv2d: {e}")))?;
    Ok(shape)
}

/// The same computation from candle's own ops (GPU builds, other dtypes).
fn conv2d_stock(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    params: ConvParams,
) -> Result<Tensor> {
    let x = if params.upsample {
        layers::upsample_nearest2x(x)?
    } else {
        x.clone()
    };
    let y = match params.mode {
        PadMode::Zero => x.conv2d(w, params.pad, params.stride, 1, 1)?,
        PadMode::Reflect => {
            layers::reflection_pad2d(&x, params.pad)?.conv2d(w, 0, params.stride, 1, 1)?
        }
    };
    let y = match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?)?,
        None => y,
    };
    if params.relu {
        y.relu()
    } else {
        Ok(y)
    }
}

/// dL/dx of `y = conv2d_fused(x, w, ·, params)` for `x` of shape `x_dims`, given dL/dy (with
/// the ReLU mask already applied when the layer has one). For callers that run a fixed
/// network's backward pass themselves (see `Vgg::backward`) instead of through autograd.
pub fn conv2d_input_grad(
    grad_y: &Tensor,
    w: &Tensor,
    x_dims: (usize, usize, usize, usize),
    params: ConvParams,
) -> Result<Tensor> {
    let (batch, c_in, h, wd) = x_dims;
    let (c_out, _, kh, kw) = w.dims4()?;
    let params = ConvParams {
        relu: false,
        ..params
    };
    if !(custom_kernels_apply(grad_y) && w.dtype() == DType::F32) {
        // conv is linear in x: the gradient of <conv(x), grad_y> at any x, here 0.
        let x = candle_core::Var::zeros(x_dims, grad_y.dtype(), grad_y.device())?;
        let y = conv2d_stock(x.as_tensor(), &w.detach(), None, params)?;
        let grads = (y * grad_y.detach())?.sum_all()?.backward()?;
        return grads
            .get(x.as_tensor())
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg("conv2d: no input gradient".into()));
    }
    let shape = ConvShape {
        batch,
        c_in,
        h,
        w: wd,
        c_out,
        kh,
        kw,
    };
    shape
        .validate(&params)
        .map_err(|e| candle_core::Error::Msg(format!("conv2d: {e}")))?;
    grad_y
        .detach()
        .contiguous()?
        .apply_op2_no_bwd(&w.detach().contiguous()?, &ConvInputGrad { shape, params })
}

/// The backward pass of a ReLU whose output is `y`: `(grad_y [+ extra]) · [y > 0]`. `extra` is
/// a second gradient reaching the same output (a loss on that feature map).
pub fn relu_backward(grad_y: &Tensor, y: &Tensor, extra: Option<&Tensor>) -> Result<Tensor> {
    let grad = match extra {
        Some(e) => add(grad_y, e)?,
        None => grad_y.clone(),
    };
    if custom_kernels_apply(&grad) {
        grad.detach()
            .contiguous()?
            .apply_op2_no_bwd(&y.detach().contiguous()?, &ReluMask)
    } else {
        grad.mul(&y.gt(0f64)?.to_dtype(grad.dtype())?)
    }
}

/// The backward pass of [`max_pool2x2`] at input `x`, given dL/dy.
pub fn max_pool2x2_backward(x: &Tensor, grad_y: &Tensor) -> Result<Tensor> {
    if custom_kernels_apply(x) {
        return x
            .detach()
            .contiguous()?
            .apply_op2_no_bwd(&grad_y.detach().contiguous()?, &MaxPool2x2Backward);
    }
    let var = candle_core::Var::from_tensor(&x.detach())?;
    let y = max_pool2x2_stock(var.as_tensor())?;
    let grads = (y * grad_y.detach())?.sum_all()?.backward()?;
    grads
        .get(var.as_tensor())
        .cloned()
        .ok_or_else(|| candle_core::Error::Msg("max_pool2x2: no input gradient".into()))
}

/// Instance normalisation with affine parameters `weight`, `bias` of shape (C,), optionally
/// followed by a ReLU, as PyTorch's `InstanceNorm2d(affine=True)` (biased variance; running
/// statistics are not used).
pub fn instance_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    if weight.dims() != [c] || bias.dims() != [c] {
        bail!(
            "instance_norm: weight {:?} and bias {:?} must have shape [{c}]",
            weight.dims(),
            bias.dims()
        )
    }
    if !(custom_kernels_apply(x) && weight.dtype() == DType::F32 && bias.dtype() == DType::F32) {
        let y = layers::instance_norm(x, weight, bias, eps)?;
        return if relu { y.relu() } else { Ok(y) };
    }
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        InstanceNorm { eps, relu },
    )
}

/// `act(x·scale[c] + shift[c])` per channel of an NCHW tensor: an instance norm whose statistics
/// were taken over a whole image, for inference in tiles. No gradient.
pub fn channel_affine(x: &Tensor, scale: &[f32], shift: &[f32], relu: bool) -> Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    if scale.len() != c || shift.len() != c {
        bail!(
            "channel_affine: {} scales and {} shifts for {c} channels",
            scale.len(),
            shift.len()
        )
    }
    if !custom_kernels_apply(x) {
        let scale = Tensor::from_slice(scale, (1, c, 1, 1), x.device())?.to_dtype(x.dtype())?;
        let shift = Tensor::from_slice(shift, (1, c, 1, 1), x.device())?.to_dtype(x.dtype())?;
        let y = x.broadcast_mul(&scale)?.broadcast_add(&shift)?;
        return if relu { y.relu() } else { Ok(y) };
    }
    x.contiguous()?.apply_op1_no_bwd(&ChannelAffine {
        scale: scale.to_vec(),
        shift: shift.to_vec(),
        relu,
    })
}

struct ChannelAffine {
    scale: Vec<f32>,
    shift: Vec<f32>,
    relu: bool,
}

impl CustomOp1 for ChannelAffine {
    fn name(&self) -> &'static str {
        "atelier-channel-affine"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let (_, c, h, w) = layout.shape().dims4()?;
        let y = norm_kernel::affine(x, c, h * w, &self.scale, &self.shift, self.relu);
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }
}

/// `a + b` for tensors of one shape (a residual connection). On the CPU in f32 it runs on
/// rayon's pool instead of candle's own element-wise pool, whose spinning caller cost the
/// width-8 network a fifth of its time (see [`crate::nn::cpu::elementwise`]).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if custom_kernels_apply(a) && custom_kernels_apply(b) && a.dims() == b.dims() {
        a.contiguous()?.apply_op2(&b.contiguous()?, Add)
    } else {
        a + b
    }
}

struct Add;

impl CustomOp2 for Add {
    fn name(&self) -> &'static str {
        "atelier-add"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        a_layout: &Layout,
        b: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = contiguous_f32(a, a_layout, self.name())?;
        let b = contiguous_f32(b, b_layout, self.name())?;
        if a.len() != b.len() {
            bail!("add: operand sizes differ")
        }
        let sum = crate::nn::cpu::elementwise::add(a, b);
        Ok((CpuStorage::F32(sum), a_layout.shape().clone()))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        _sum: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.clone()), Some(grad.clone())))
    }
}

/// Per-channel (sum, sum of squares) of sample 0 of an NCHW tensor over the window
/// `rows`×`cols`, in f64.
pub fn window_sums(
    x: &Tensor,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> Result<Vec<(f64, f64)>> {
    let (_, _, h, w) = x.dims4()?;
    if rows.end > h || cols.end > w || rows.start > rows.end || cols.start > cols.end {
        bail!("window_sums: window {rows:?}×{cols:?} outside a {h}×{w} tensor")
    }
    let data = x
        .narrow(0, 0, 1)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(norm_kernel::window_sums(&data, h, w, rows, cols))
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
// convolution
// ---------------------------------------------------------------------------------------------

struct FusedConv {
    shape: ConvShape,
    params: ConvParams,
    /// Followed by a 2×2 max-pool inside the kernel: inference only, no backward pass (see
    /// [`conv2d_fused_maxpool`]).
    pool: bool,
}

impl CustomOp3 for FusedConv {
    fn name(&self) -> &'static str {
        "atelier-conv2d"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
        b: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(x, x_layout, self.name())?;
        let w = contiguous_f32(w, w_layout, self.name())?;
        let b = contiguous_f32(b, b_layout, self.name())?;
        let (s, p) = (&self.shape, &self.params);
        let (ho, wo) = s.out(p);
        let (y, shape) = if self.pool {
            let y = conv_kernel::forward_pooled(x, w, Some(b), s, p);
            (y, Shape::from((s.batch, s.c_out, ho / 2, wo / 2)))
        } else {
            let y = conv_kernel::forward(x, w, Some(b), s, p);
            (y, Shape::from((s.batch, s.c_out, ho, wo)))
        };
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if self.pool {
            bail!("conv2d with a fused max-pool is for inference only: it has no backward pass")
        }
        let grad_y = grad_y.detach().contiguous()?;
        let grad_y = if self.params.relu {
            grad_y.apply_op2_no_bwd(&y.detach(), &ReluMask)?
        } else {
            grad_y
        };
        let grad_x = if x.track_op() {
            Some(grad_y.apply_op2_no_bwd(
                &w.detach(),
                &ConvInputGrad {
                    shape: self.shape,
                    params: self.params,
                },
            )?)
        } else {
            None
        };
        // `conv2d_fused` detaches `w` and `b` when no weight gradient is wanted.
        let (grad_w, grad_b) = if w.track_op() || b.track_op() {
            let packed = x.detach().apply_op2_no_bwd(
                &grad_y,
                &ConvWeightGrad {
                    shape: self.shape,
                    params: self.params,
                },
            )?;
            let s = self.shape;
            let w_len = s.c_out * s.c_in * s.kh * s.kw;
            let grad_w = packed.narrow(0, 0, w_len)?.reshape(w.shape())?;
            let grad_b = packed.narrow(0, w_len, s.c_out)?;
            (
                w.track_op().then_some(grad_w),
                b.track_op().then_some(grad_b),
            )
        } else {
            (None, None)
        };
        Ok((grad_x, grad_w, grad_b))
    }
}

/// (grad_y, w) -> grad_x.
struct ConvInputGrad {
    shape: ConvShape,
    params: ConvParams,
}

impl CustomOp2 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "atelier-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        g: &CpuStorage,
        g_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(g, g_layout, self.name())?;
        let w = contiguous_f32(w, w_layout, self.name())?;
        let grad_x = conv_kernel::input_grad(g, w, &self.shape, &self.params);
        let s = self.shape;
        Ok((
            CpuStorage::F32(grad_x),
            Shape::from((s.batch, s.c_in, s.h, s.w)),
        ))
    }
}

/// (x, grad_y) -> [grad_w (flattened) | grad_b].
struct ConvWeightGrad {
    shape: ConvShape,
    params: ConvParams,
}

impl CustomOp2 for ConvWeightGrad {
    fn name(&self) -> &'static str {
        "atelier-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        g: &CpuStorage,
        g_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(x, x_layout, self.name())?;
        let g = contiguous_f32(g, g_layout, self.name())?;
        let (mut grad_w, grad_b) = conv_kernel::weight_grad(x, g, &self.shape, &self.params);
        grad_w.extend_from_slice(&grad_b);
        let len = grad_w.len();
        Ok((CpuStorage::F32(grad_w), Shape::from(len)))
    }
}

/// (grad_y, y) -> grad_y where y > 0, else 0: the backward pass of a fused ReLU.
struct ReluMask;

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "atelier-relu-mask"
    }

    fn cpu_fwd(
        &self,
        g: &CpuStorage,
        g_layout: &Layout,
        y: &CpuStorage,
        y_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(g, g_layout, self.name())?;
        let y = contiguous_f32(y, y_layout, self.name())?;
        if g.len() != y.len() {
            bail!("relu mask: gradient and output sizes differ")
        }
        let out = g
            .iter()
            .zip(y)
            .map(|(&g, &y)| if y > 0.0 { g } else { 0.0 })
            .collect();
        Ok((CpuStorage::F32(out), g_layout.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// instance norm
// ---------------------------------------------------------------------------------------------

struct InstanceNorm {
    eps: f64,
    relu: bool,
}

impl CustomOp3 for InstanceNorm {
    fn name(&self) -> &'static str {
        "atelier-instance-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        gamma: &CpuStorage,
        gamma_layout: &Layout,
        beta: &CpuStorage,
        beta_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(x, x_layout, self.name())?;
        let gamma = contiguous_f32(gamma, gamma_layout, self.name())?;
        let beta = contiguous_f32(beta, beta_layout, self.name())?;
        let (_, c, h, w) = x_layout.shape().dims4()?;
        let y = norm_kernel::forward(x, c, h * w, gamma, beta, self.eps, self.relu);
        Ok((CpuStorage::F32(y), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = gamma.dim(0)?;
        let packed = x.detach().apply_op2_no_bwd(
            &grad_y.detach().contiguous()?,
            &InstanceNormBackward {
                eps: self.eps,
                relu: self.relu,
                gamma: gamma.to_vec1::<f32>()?,
                beta: beta.to_vec1::<f32>()?,
            },
        )?;
        let n = x.elem_count();
        let grad_x = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let grad_gamma = packed.narrow(0, n, c)?;
        let grad_beta = packed.narrow(0, n + c, c)?;
        Ok((
            x.track_op().then_some(grad_x),
            gamma.track_op().then_some(grad_gamma),
            beta.track_op().then_some(grad_beta),
        ))
    }
}

/// (x, grad_y) -> [grad_x (flattened) | grad_gamma | grad_beta].
struct InstanceNormBackward {
    eps: f64,
    relu: bool,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl CustomOp2 for InstanceNormBackward {
    fn name(&self) -> &'static str {
        "atelier-instance-norm-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        g: &CpuStorage,
        g_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(x, x_layout, self.name())?;
        let g = contiguous_f32(g, g_layout, self.name())?;
        if x.len() != g.len() {
            bail!("instance norm backward: gradient and input sizes differ")
        }
        let (_, c, h, w) = x_layout.shape().dims4()?;
        let (mut dx, dg, db) =
            norm_kernel::backward(x, g, c, h * w, &self.gamma, &self.beta, self.eps, self.relu);
        dx.extend_from_slice(&dg);
        dx.extend_from_slice(&db);
        let len = dx.len();
        Ok((CpuStorage::F32(dx), Shape::from(len)))
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
