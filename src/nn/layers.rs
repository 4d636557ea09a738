//! Layers that candle lacks (reflection padding, instance norm) and a nearest-neighbour upsample
//! with a cheap backward pass. All are built from differentiable candle ops so autograd reaches
//! the inputs and the affine parameters.

use candle_core::{bail, DType, Result, Tensor, D};

/// Reflection padding by `pad` on all four sides of an NCHW tensor, as PyTorch's
/// `ReflectionPad2d(pad)`: the edge pixel is not repeated (`[a b c d]` padded by 2 gives
/// `[c b a b c d c b]`). Needs `pad < H` and `pad < W`.
pub fn reflection_pad2d(x: &Tensor, pad: usize) -> Result<Tensor> {
    if pad == 0 {
        return Ok(x.clone());
    }
    let (_, _, h, w) = x.dims4()?;
    if pad >= h || pad >= w {
        bail!("reflection padding {pad} needs an input larger than {pad}x{pad}, got {h}x{w}")
    }
    let x = reflect_dim(x, 3, pad)?;
    reflect_dim(&x, 2, pad)
}

/// Reflects `pad` entries on both ends of `dim`. Only the two thin edge strips are gathered
/// (index_select on the whole tensor copies element by element along the last dimension, which
/// is several times slower than candle's block copy in `cat`).
fn reflect_dim(x: &Tensor, dim: usize, pad: usize) -> Result<Tensor> {
    let size = x.dim(dim)?;
    let x = x.contiguous()?;
    // Left strip: entries pad, pad-1, ..., 1; right strip: size-2, ..., size-1-pad.
    let left: Vec<u32> = (1..=pad).rev().map(|i| i as u32).collect();
    let right: Vec<u32> = (1..=pad).map(|i| (size - 1 - i) as u32).collect();
    let left = x.index_select(&Tensor::new(left, x.device())?, dim)?;
    let right = x.index_select(&Tensor::new(right, x.device())?, dim)?;
    Tensor::cat(&[&left, &x, &right], dim)
}

/// Extends `dim` of an NCHW tensor at its far end to `target` entries, by reflection where it
/// fits (`target - size < size`) and by repeating the last entry otherwise (tiny inputs).
/// Used to bring arbitrary image sizes to what the network's strides need.
pub fn pad_end_to(x: &Tensor, dim: usize, target: usize) -> Result<Tensor> {
    let size = x.dim(dim)?;
    if target <= size {
        return Ok(x.clone());
    }
    let extra = target - size;
    let ids: Vec<u32> = if extra < size {
        (1..=extra).map(|i| (size - 1 - i) as u32).collect()
    } else {
        vec![(size - 1) as u32; extra]
    };
    let x = x.contiguous()?;
    let tail = x.index_select(&Tensor::new(ids, x.device())?, dim)?;
    Tensor::cat(&[&x, &tail], dim)
}

/// Instance normalisation of an NCHW tensor with affine parameters `weight`, `bias` of shape
/// (C,): each sample's channel is normalised over H×W with the biased variance, as PyTorch's
/// `InstanceNorm2d(affine=True)` in training and eval mode (running stats are not used).
pub fn instance_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if weight.dims() != [c] || bias.dims() != [c] {
        bail!(
            "instance_norm: weight {:?} and bias {:?} must have shape [{c}]",
            weight.dims(),
            bias.dims()
        )
    }
    // Statistics in f32 at least: f16 sums over a whole image lose too much precision.
    let in_dtype = x.dtype();
    let x = if in_dtype == DType::F64 {
        x.clone()
    } else {
        x.to_dtype(DType::F32)?
    };
    let x = x.reshape((n, c, h * w))?;
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    // Fold the affine weight into the per-channel scale: one full-size multiply instead of two.
    let weight = weight.to_dtype(x.dtype())?.reshape((1, c, 1))?;
    let bias = bias.to_dtype(x.dtype())?.reshape((1, c, 1))?;
    let scale = (var + eps)?.sqrt()?.recip()?.broadcast_mul(&weight)?;
    let y = centered.broadcast_mul(&scale)?.broadcast_add(&bias)?;
    y.reshape((n, c, h, w))?.to_dtype(in_dtype)
}

/// Nearest-neighbour upsampling by 2 of an NCHW tensor (`nn.Upsample(scale_factor=2)` /
/// `F.interpolate(mode="nearest")`). Written as a broadcast so the backward pass is a plain sum;
/// candle's own `upsample_nearest2d` backward runs a grouped convolution and overwrites, rather
/// than accumulates, the input's gradient.
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h, 1, w, 1))?
        .broadcast_as((n, c, h, 2, w, 2))?
        .reshape((n, c, 2 * h, 2 * w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn reflect_row() -> Result<()> {
        let x = Tensor::new(&[1f32, 2., 3., 4.], &Device::Cpu)?.reshape((1, 1, 1, 4))?;
        let y = reflect_dim(&x, 3, 2)?;
        assert_eq!(
            y.flatten_all()?.to_vec1::<f32>()?,
            [3., 2., 1., 2., 3., 4., 3., 2.]
        );
        Ok(())
    }

    #[test]
    fn pad_end_reflects_then_replicates() -> Result<()> {
        let x = Tensor::new(&[1f32, 2., 3.], &Device::Cpu)?.reshape((1, 1, 1, 3))?;
        let y = pad_end_to(&x, 3, 5)?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [1., 2., 3., 2., 1.]);
        let y = pad_end_to(&x, 3, 8)?;
        assert_eq!(
            y.flatten_all()?.to_vec1::<f32>()?,
            [1., 2., 3., 3., 3., 3., 3., 3.]
        );
        Ok(())
    }
}
