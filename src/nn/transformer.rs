//! The Johnson et al. feed-forward style network, parameter-compatible with pytorch/examples
//! `fast_neural_style/neural_style/transformer_net.py`: its state dicts (saved as
//! `.safetensors`, or as the zip `.pth` that `torch.save(model.state_dict())` writes) load and
//! run unchanged. Input and output are RGB pixels in 0..255; the output is not clamped.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{bail, DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::nn::layers::pad_end_to;
use crate::nn::ops;
use crate::nn::weights::{self, WeightFile};

/// PyTorch's `InstanceNorm2d` default.
const INSTANCE_NORM_EPS: f64 = 1e-5;
const RESIDUAL_BLOCKS: usize = 5;
/// Two stride-2 convolutions: sizes must be multiples of 4 for the output to match the input.
const SIZE_MULTIPLE: usize = 4;
/// Smallest working size: after the two stride-2 convs a 3x3 reflection pad needs 2 pixels.
const MIN_SIZE: usize = 8;

/// `ConvLayer` (reflection pad k/2, then conv) or `UpsampleConvLayer` (nearest ×2 first).
#[derive(Debug, Clone)]
struct ConvLayer {
    name: &'static str,
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    upsample: bool,
}

/// Affine instance norm. A conditional network (Dumoulin et al. 2017, conditional instance
/// norm) holds one scale and shift per style: `weight` and `bias` are (S, C) instead of (C,), and
/// a style mix (S weights) picks or blends them.
#[derive(Debug, Clone)]
struct InstanceNorm {
    name: &'static str,
    weight: Tensor,
    bias: Tensor,
}

#[derive(Debug, Clone)]
struct ResidualBlock {
    conv1: ConvLayer,
    in1: InstanceNorm,
    conv2: ConvLayer,
    in2: InstanceNorm,
}

/// One convolution of the architecture: (name, in channels, out channels, kernel, stride,
/// upsample). Names are the PyTorch module paths; residual blocks are prefixed `resN.`.
type ConvSpec = (&'static str, usize, usize, usize, usize, bool);

/// pytorch/examples' base width (channels of the first convolution); the other layers have 2×
/// and 4× as many. Trained styles may be narrower (see [`TransformerNet::random_with_width`]).
pub const DEFAULT_WIDTH: usize = 32;

/// The layer shapes of a network whose first convolution has `width` channels. pytorch's
/// network is `width` 32; the names stay the same at every width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Architecture {
    width: usize,
}

impl Architecture {
    fn head(self) -> [ConvSpec; 3] {
        let w = self.width;
        [
            ("conv1", 3, w, 9, 1, false),
            ("conv2", w, 2 * w, 3, 2, false),
            ("conv3", 2 * w, 4 * w, 3, 2, false),
        ]
    }

    fn head_norms(self) -> [(&'static str, usize); 3] {
        let w = self.width;
        [("in1", w), ("in2", 2 * w), ("in3", 4 * w)]
    }

    fn residual(self) -> [ConvSpec; 2] {
        let c = 4 * self.width;
        [("conv1", c, c, 3, 1, false), ("conv2", c, c, 3, 1, false)]
    }

    fn residual_norms(self) -> [(&'static str, usize); 2] {
        let c = 4 * self.width;
        [("in1", c), ("in2", c)]
    }

    fn tail(self) -> [ConvSpec; 3] {
        let w = self.width;
        [
            ("deconv1", 4 * w, 2 * w, 3, 1, true),
            ("deconv2", 2 * w, w, 3, 1, true),
            ("deconv3", w, 3, 9, 1, false),
        ]
    }

    fn tail_norms(self) -> [(&'static str, usize); 2] {
        let w = self.width;
        [("in4", 2 * w), ("in5", w)]
    }
}

const RES_NAMES: [&str; RESIDUAL_BLOCKS] = ["res1", "res2", "res3", "res4", "res5"];

/// The feed-forward style transformer.
#[derive(Debug, Clone)]
pub struct TransformerNet {
    conv1: ConvLayer,
    in1: InstanceNorm,
    conv2: ConvLayer,
    in2: InstanceNorm,
    conv3: ConvLayer,
    in3: InstanceNorm,
    res: Vec<ResidualBlock>,
    deconv1: ConvLayer,
    in4: InstanceNorm,
    deconv2: ConvLayer,
    in5: InstanceNorm,
    deconv3: ConvLayer,
    /// Whether the convolutions' backward pass computes weight gradients (training). False
    /// after loading: inference and input-gradient uses skip that work.
    pub trainable: bool,
}

fn conv_param_shapes(
    prefix: &str,
    (name, cin, cout, k, _, _): ConvSpec,
) -> [(String, Vec<usize>); 2] {
    [
        (
            format!("{prefix}{name}.conv2d.weight"),
            vec![cout, cin, k, k],
        ),
        (format!("{prefix}{name}.conv2d.bias"), vec![cout]),
    ]
}

/// The shape of a norm's scale or shift: (C,) for a one-style network, (S, C) for a
/// conditional one.
fn norm_shape(styles: usize, c: usize) -> Vec<usize> {
    if styles > 1 {
        vec![styles, c]
    } else {
        vec![c]
    }
}

fn norm_param_shapes(
    prefix: &str,
    (name, c): (&str, usize),
    styles: usize,
) -> [(String, Vec<usize>); 2] {
    [
        (format!("{prefix}{name}.weight"), norm_shape(styles, c)),
        (format!("{prefix}{name}.bias"), norm_shape(styles, c)),
    ]
}

/// Looks tensors up by name, checking shape and converting to f32, with errors that name the
/// tensor and the file.
struct Source<'a> {
    map: &'a HashMap<String, Tensor>,
    /// Prepended to every name (`module.` for `DataParallel` checkpoints).
    prefix: &'static str,
    path: &'a Path,
}

impl Source<'_> {
    /// The base width, from `conv1`'s weight (out channels); shape errors for this and every
    /// other tensor are reported against it by [`Self::get`]. Falls back to pytorch's width
    /// when `conv1` is missing so the lookup names the missing tensor.
    fn width(&self) -> usize {
        self.map
            .get(&format!("{}conv1.conv2d.weight", self.prefix))
            .and_then(|t| t.dims().first().copied())
            .filter(|&w| w > 0)
            .unwrap_or(DEFAULT_WIDTH)
    }

    /// How many styles the norms hold: the rows of `in1.weight` when it is (S, C), else 1.
    fn styles(&self) -> usize {
        self.map
            .get(&format!("{}in1.weight", self.prefix))
            .and_then(|t| match t.dims() {
                [styles, _] if *styles > 0 => Some(*styles),
                _ => None,
            })
            .unwrap_or(1)
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self
            .map
            .get(&format!("{}{name}", self.prefix))
            .ok_or_else(|| Error::weights(self.path, format!("missing tensor `{name}`")))?;
        if t.dims() != shape {
            return Err(Error::weights(
                self.path,
                format!(
                    "tensor `{name}` has shape {:?}, expected {:?}",
                    t.dims(),
                    shape
                ),
            ));
        }
        t.to_dtype(DType::F32)
            .map_err(|e| Error::weights(self.path, format!("tensor `{name}`: {e}")))
    }

    fn conv(&self, prefix: &str, spec: ConvSpec) -> Result<ConvLayer> {
        let [(w_name, w_shape), (b_name, b_shape)] = conv_param_shapes(prefix, spec);
        Ok(ConvLayer {
            name: spec.0,
            weight: self.get(&w_name, &w_shape)?,
            bias: self.get(&b_name, &b_shape)?,
            stride: spec.4,
            upsample: spec.5,
        })
    }

    fn norm(
        &self,
        prefix: &str,
        spec: (&'static str, usize),
        styles: usize,
    ) -> Result<InstanceNorm> {
        let [(w_name, w_shape), (b_name, b_shape)] = norm_param_shapes(prefix, spec, styles);
        Ok(InstanceNorm {
            name: spec.0,
            weight: self.get(&w_name, &w_shape)?,
            bias: self.get(&b_name, &b_shape)?,
        })
    }
}

impl ConvLayer {
    /// Upsampling (for the tail), reflection padding and the bias run inside the convolution.
    fn forward(&self, x: &Tensor, weight_grad: bool) -> candle_core::Result<Tensor> {
        let params = ops::ConvParams {
            pad: self.weight.dim(3)? / 2,
            mode: ops::PadMode::Reflect,
            stride: self.stride,
            upsample: self.upsample,
            relu: false,
        };
        ops::conv2d_fused(x, &self.weight, Some(&self.bias), params, weight_grad)
    }
}

impl InstanceNorm {
    /// Normalisation followed by a ReLU when `relu`, fused in one pass. `mix` (S weights, for a
    /// conditional network) combines the styles' scales and shifts.
    fn forward(&self, x: &Tensor, relu: bool, mix: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let (weight, bias) = self.affine_params(mix)?;
        ops::instance_norm(x, &weight, &bias, INSTANCE_NORM_EPS, relu)
    }

    /// The scale and shift (C,) this norm applies: its own, or the mix of a conditional one's.
    fn affine_params(&self, mix: Option<&Tensor>) -> candle_core::Result<(Tensor, Tensor)> {
        Ok(match (self.weight.rank(), mix) {
            (2, Some(mix)) => (mix_rows(mix, &self.weight)?, mix_rows(mix, &self.bias)?),
            (2, None) => (self.weight.mean(0)?, self.bias.mean(0)?),
            _ => (self.weight.clone(), self.bias.clone()),
        })
    }

    /// The norm with per-pixel style weights `weights` (1, S, H, W, at `x`'s resolution): the
    /// input normalised as usual, then each pixel scaled and shifted by the styles' parameters
    /// mixed with its weights.
    fn forward_spatial(
        &self,
        x: &Tensor,
        relu: bool,
        weights: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        let (_, styles, wh, ww) = weights.dims4()?;
        if self.weight.rank() != 2 || (wh, ww) != (h, w) {
            bail!(
                "{}: per-pixel style weights {:?} for a norm of parameters {:?} on {h}x{w}",
                self.name,
                weights.dims(),
                self.weight.dims()
            )
        }
        let ones = Tensor::ones(c, DType::F32, x.device())?;
        let zeros = Tensor::zeros(c, DType::F32, x.device())?;
        let normed = ops::instance_norm(x, &ones, &zeros, INSTANCE_NORM_EPS, false)?;
        let weights = weights.reshape((styles, h * w))?;
        // (C, S)·(S, H·W): each pixel's scale and shift.
        let scale = self.weight.t()?.matmul(&weights)?.reshape((1, c, h, w))?;
        let shift = self.bias.t()?.matmul(&weights)?.reshape((1, c, h, w))?;
        let y = normed.mul(&scale)?.add(&shift)?;
        if relu {
            y.relu()
        } else {
            Ok(y)
        }
    }

    /// The norm with statistics taken elsewhere: `(x − mean)/sqrt(var + eps)·γ + β` as one
    /// per-channel scale and shift.
    fn forward_with(
        &self,
        x: &Tensor,
        relu: bool,
        mix: Option<&Tensor>,
        stats: &ChannelStats,
    ) -> candle_core::Result<Tensor> {
        let (weight, bias) = self.affine_params(mix)?;
        let weight = weight.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let bias = bias.to_vec1::<f32>()?;
        if stats.mean.len() != weight.len() {
            bail!(
                "{}: statistics for {} channels, the norm has {}",
                self.name,
                stats.mean.len(),
                weight.len()
            )
        }
        let mut scale = Vec::with_capacity(weight.len());
        let mut shift = Vec::with_capacity(weight.len());
        for (c, (&g, &b)) in weight.iter().zip(&bias).enumerate() {
            let a = f64::from(g) / (stats.var[c] + INSTANCE_NORM_EPS).sqrt();
            scale.push(a as f32);
            shift.push((f64::from(b) - stats.mean[c] * a) as f32);
        }
        ops::channel_affine(x, &scale, &shift, relu)
    }
}

/// Number of instance norms, in the order the network applies them: in1–in3, two per residual
/// block, in4, in5.
pub const NORM_LAYERS: usize = 3 + 2 * RESIDUAL_BLOCKS + 2;

/// Input pixels per activation pixel at each norm, in order (the stride-2 head halves twice,
/// the tail doubles back).
pub const NORM_STRIDES: [usize; NORM_LAYERS] = [1, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 2, 1];

/// How far (input pixels) a pixel of the output sees: 4 (9×9 head) + 1 + 2 (stride-2 3×3) +
/// 10 × 4 (residual 3×3 at stride 4) + 2 + 1 (upsampling 3×3) + 4 (9×9 tail) = 54, and the
/// nearest upsampling's rounding; a multiple of 4 so tiles keep the strides' grid. A tile
/// extended by this much on each side gives the untiled result in its core (tested).
pub const RECEPTIVE_RADIUS: usize = 64;

/// Per-channel mean and biased variance of one norm's input over a whole image.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
}

/// The statistics of every norm ([`NORM_LAYERS`] of them) for one image: with them, a tile
/// normalises as the whole image would.
#[derive(Debug, Clone, PartialEq)]
pub struct NormStats {
    pub layers: Vec<ChannelStats>,
}

/// Running sums toward [`NormStats`], fed one tile window at a time.
#[derive(Debug, Clone, Default)]
pub struct NormSums {
    /// Per norm: pixel count and per-channel (sum, sum of squares).
    layers: Vec<(f64, Vec<(f64, f64)>)>,
}

impl NormSums {
    fn add(&mut self, layer: usize, pixels: usize, sums: Vec<(f64, f64)>) {
        if self.layers.len() <= layer {
            self.layers.resize_with(layer + 1, || (0.0, Vec::new()));
        }
        let (count, acc) = &mut self.layers[layer];
        *count += pixels as f64;
        if acc.is_empty() {
            *acc = sums;
        } else {
            for (a, s) in acc.iter_mut().zip(sums) {
                a.0 += s.0;
                a.1 += s.1;
            }
        }
    }

    /// Adds `window` (in tile input pixels) of norm `layer`'s input `x` (from
    /// [`TransformerNet::tile_norm_input`]) to the sums.
    pub fn add_window(&mut self, layer: usize, x: &Tensor, window: TileWindow) -> Result<()> {
        if layer >= NORM_LAYERS {
            return Err(Error::invalid(format!("there is no norm {layer}")));
        }
        Ok(add_window(self, layer, x, window)?)
    }

    /// The statistics of norm `layer` summed so far; `None` when it saw no pixels.
    pub fn layer(&self, layer: usize) -> Option<ChannelStats> {
        let (n, sums) = self.layers.get(layer)?;
        (*n > 0.0).then(|| channel_stats(*n, sums))
    }

    /// The statistics summed so far; `None` when some norm saw no pixels.
    pub fn finish(&self) -> Option<NormStats> {
        if self.layers.len() != NORM_LAYERS || self.layers.iter().any(|(n, _)| *n <= 0.0) {
            return None;
        }
        let layers = self
            .layers
            .iter()
            .map(|(n, sums)| channel_stats(*n, sums))
            .collect();
        Some(NormStats { layers })
    }
}

/// Mean and biased variance per channel from `n` pixels' (sum, sum of squares).
fn channel_stats(n: f64, sums: &[(f64, f64)]) -> ChannelStats {
    let mean: Vec<f64> = sums.iter().map(|(s, _)| s / n).collect();
    let var = sums
        .iter()
        .zip(&mean)
        .map(|((_, sq), m)| (sq / n - m * m).max(0.0))
        .collect();
    ChannelStats { mean, var }
}

/// A window of a tile, in the tile's input pixels (multiples of 4): the part of the image this
/// tile owns, whose activations count toward the whole image's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileWindow {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// A tile part-way through a pass that applies one norm at a time ([`TransformerNet::tile_start`]).
pub struct TileState {
    /// The norm to apply next.
    next: usize,
    /// The last norm's output (the tile at the start).
    y: Tensor,
    /// Inside a residual block: the block's input, added back after its second norm.
    skip: Option<Tensor>,
}

impl TileState {
    /// The norm this tile applies next (0…[`NORM_LAYERS`]).
    pub fn next_norm(&self) -> usize {
        self.next
    }

    /// Bytes the state holds.
    pub fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        size(&self.y) + self.skip.as_ref().map_or(0, size)
    }
}

/// How each norm of a forward pass normalises.
enum Norming<'a> {
    /// Over its own input (the network as trained).
    Own,
    /// Over its own input, with per-pixel style weights (1, S, H, W) at the network's input
    /// resolution instead of one mix: each pixel's scale and shift mix the styles' by its weights.
    Spatial(&'a Tensor),
    /// Over its own input, and records the statistics.
    Measure(&'a mut Vec<ChannelStats>),
    /// With whole-image statistics; optionally adds the tile window's share to `sums`.
    Fixed {
        stats: &'a NormStats,
        collect: Option<(&'a mut NormSums, TileWindow)>,
    },
}

impl Norming<'_> {
    fn apply(
        &mut self,
        layer: usize,
        norm: &InstanceNorm,
        x: &Tensor,
        relu: bool,
        mix: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        match self {
            Norming::Own => norm.forward(x, relu, mix),
            Norming::Spatial(weights) => {
                let stride = NORM_STRIDES[layer];
                let here = if stride == 1 {
                    (*weights).clone()
                } else {
                    weights.avg_pool2d(stride)?
                };
                norm.forward_spatial(x, relu, &here)
            }
            Norming::Measure(out) => {
                let (_, _, h, w) = x.dims4()?;
                let sums = ops::window_sums(x, 0..h, 0..w)?;
                out.push(channel_stats((h * w).max(1) as f64, &sums));
                norm.forward(x, relu, mix)
            }
            Norming::Fixed { stats, collect } => {
                let Some(layer_stats) = stats.layers.get(layer) else {
                    bail!(
                        "the statistics hold {} norms, not {NORM_LAYERS}",
                        stats.layers.len()
                    )
                };
                if let Some((sums, window)) = collect {
                    add_window(sums, layer, x, *window)?;
                }
                norm.forward_with(x, relu, mix, layer_stats)
            }
        }
    }
}

/// Adds `window` (tile input pixels) of norm `layer`'s input `x` to `sums`.
fn add_window(
    sums: &mut NormSums,
    layer: usize,
    x: &Tensor,
    window: TileWindow,
) -> candle_core::Result<()> {
    let s = NORM_STRIDES[layer];
    let (top, left) = (window.top / s, window.left / s);
    let (h, w) = (window.height / s, window.width / s);
    let part = ops::window_sums(x, top..top + h, left..left + w)?;
    sums.add(layer, h * w, part);
    Ok(())
}

/// `mix` (S,) times `rows` (S, C): the weighted sum of the rows, (C,). A matmul, so gradients
/// reach only the rows a one-hot mix selects.
fn mix_rows(mix: &Tensor, rows: &Tensor) -> candle_core::Result<Tensor> {
    let (styles, channels) = rows.dims2()?;
    mix.reshape((1, styles))?.matmul(rows)?.reshape(channels)
}

/// A tile's sides must already be what the strides need.
fn check_tile(x: &Tensor) -> Result<()> {
    let (_, channels, h, w) = x.dims4()?;
    if channels != 3
        || h % SIZE_MULTIPLE != 0
        || w % SIZE_MULTIPLE != 0
        || h < MIN_SIZE
        || w < MIN_SIZE
    {
        return Err(Error::invalid(format!(
            "a tile must be RGB with sides multiples of {SIZE_MULTIPLE} (at least {MIN_SIZE}), got \
             {channels}×{h}×{w}"
        )));
    }
    Ok(())
}

/// The size the network actually runs at for an image side of `size` pixels.
fn padded_size(size: usize) -> usize {
    size.div_ceil(SIZE_MULTIPLE).max(1) * SIZE_MULTIPLE
}

fn run_size(size: usize) -> usize {
    padded_size(size).max(MIN_SIZE)
}

impl TransformerNet {
    /// Every parameter's PyTorch name and shape, in the order of [`Self::tensors`], for
    /// pytorch's width ([`DEFAULT_WIDTH`]).
    pub fn parameter_shapes() -> Vec<(String, Vec<usize>)> {
        Self::parameter_shapes_for_width(DEFAULT_WIDTH)
    }

    /// Every parameter's name and shape for a network of base width `width`.
    pub fn parameter_shapes_for_width(width: usize) -> Vec<(String, Vec<usize>)> {
        Self::parameter_shapes_for(width, 1)
    }

    /// Every parameter's name and shape for a network of base width `width` holding `styles`
    /// styles (conditional instance norm when more than one).
    pub fn parameter_shapes_for(width: usize, styles: usize) -> Vec<(String, Vec<usize>)> {
        let arch = Architecture { width };
        let mut shapes = Vec::new();
        for (conv, norm) in arch.head().iter().zip(arch.head_norms()) {
            shapes.extend(conv_param_shapes("", *conv));
            shapes.extend(norm_param_shapes("", norm, styles));
        }
        for block in RES_NAMES {
            let prefix = format!("{block}.");
            for (conv, norm) in arch.residual().iter().zip(arch.residual_norms()) {
                shapes.extend(conv_param_shapes(&prefix, *conv));
                shapes.extend(norm_param_shapes(&prefix, norm, styles));
            }
        }
        let tail = arch.tail();
        for (conv, norm) in tail[..2].iter().zip(arch.tail_norms()) {
            shapes.extend(conv_param_shapes("", *conv));
            shapes.extend(norm_param_shapes("", norm, styles));
        }
        shapes.extend(conv_param_shapes("", tail[2]));
        shapes
    }

    /// Loads a state dict from `.safetensors` or a PyTorch zip `.pth` (f32, f16 or bf16; held
    /// as f32). Extra tensors such as old checkpoints' `in1.running_mean` are ignored.
    /// A model whose weights are not all finite is refused: it would paint NaN.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let file = WeightFile::load(path, device)?;
        let net = Self::from_tensors(&file.tensors, path)?;
        for (name, t) in net.tensors() {
            let finite = all_finite(&t)
                .map_err(|e| Error::weights(path, format!("tensor `{name}`: {e}")))?;
            if !finite {
                return Err(Error::weights(
                    path,
                    format!("tensor `{name}` holds NaN or infinite values"),
                ));
            }
        }
        Ok(net)
    }

    /// Builds the network from named tensors (e.g. `Var`-backed ones for training; they are
    /// used as they are, so gradients reach them). `path_for_errors` names the source in errors.
    /// The width is read from `conv1`'s weight, so pytorch's 32-wide models and narrower
    /// trained ones both load.
    pub fn from_tensors(map: &HashMap<String, Tensor>, path_for_errors: &Path) -> Result<Self> {
        let source = Source {
            map,
            prefix: detect_prefix(map, path_for_errors)?,
            path: path_for_errors,
        };
        let arch = Architecture {
            width: source.width(),
        };
        let styles = source.styles();
        let (head, head_norms) = (arch.head(), arch.head_norms());
        let (residual, residual_norms) = (arch.residual(), arch.residual_norms());
        let (tail, tail_norms) = (arch.tail(), arch.tail_norms());
        // Built in forward order so a missing tensor is reported as PyTorch would list it.
        let conv1 = source.conv("", head[0])?;
        let in1 = source.norm("", head_norms[0], styles)?;
        let conv2 = source.conv("", head[1])?;
        let in2 = source.norm("", head_norms[1], styles)?;
        let conv3 = source.conv("", head[2])?;
        let in3 = source.norm("", head_norms[2], styles)?;
        let mut res = Vec::with_capacity(RESIDUAL_BLOCKS);
        for block in RES_NAMES {
            let prefix = format!("{block}.");
            res.push(ResidualBlock {
                conv1: source.conv(&prefix, residual[0])?,
                in1: source.norm(&prefix, residual_norms[0], styles)?,
                conv2: source.conv(&prefix, residual[1])?,
                in2: source.norm(&prefix, residual_norms[1], styles)?,
            });
        }
        let net = Self {
            conv1,
            in1,
            conv2,
            in2,
            conv3,
            in3,
            res,
            deconv1: source.conv("", tail[0])?,
            in4: source.norm("", tail_norms[0], styles)?,
            deconv2: source.conv("", tail[1])?,
            in5: source.norm("", tail_norms[1], styles)?,
            deconv3: source.conv("", tail[2])?,
            trainable: false,
        };
        let device = net.device();
        if let Some((name, t)) = net
            .tensors()
            .into_iter()
            .find(|(_, t)| !t.device().same_device(device))
        {
            return Err(Error::weights(
                path_for_errors,
                format!(
                    "tensor `{name}` is on {:?}, the others on {device:?}",
                    t.device()
                ),
            ));
        }
        Ok(net)
    }

    /// A freshly initialised network, as PyTorch initialises `TransformerNet()`: conv weights
    /// and biases uniform in ±1/sqrt(fan_in), instance-norm weight 1 and bias 0. Deterministic
    /// for a given `seed`.
    pub fn random(device: &Device, seed: u64) -> Result<Self> {
        Self::random_with_width(device, seed, DEFAULT_WIDTH)
    }

    /// [`Self::random`] with base width `width` (channels of the first convolution; the
    /// compute grows with its square). Narrower networks train much faster on a CPU.
    pub fn random_with_width(device: &Device, seed: u64, width: usize) -> Result<Self> {
        Self::random_conditional(device, seed, width, 1)
    }

    /// [`Self::random_with_width`] for a network of `styles` styles (conditional instance norm:
    /// every style starts with scale 1 and shift 0).
    pub fn random_conditional(
        device: &Device,
        seed: u64,
        width: usize,
        styles: usize,
    ) -> Result<Self> {
        if width == 0 {
            return Err(Error::invalid("the network width must be at least 1"));
        }
        if styles == 0 {
            return Err(Error::invalid("a style network holds at least one style"));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut map = HashMap::new();
        let mut fan_in = 1usize;
        for (name, shape) in Self::parameter_shapes_for(width, styles) {
            let numel: usize = shape.iter().product();
            let values: Vec<f32> = if name.ends_with("conv2d.weight") {
                // Weights come before their bias, so the bias reuses this fan-in.
                fan_in = shape[1..].iter().product();
                let bound = 1.0 / (fan_in as f32).sqrt();
                (0..numel)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect()
            } else if name.ends_with("conv2d.bias") {
                let bound = 1.0 / (fan_in as f32).sqrt();
                (0..numel)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect()
            } else if name.ends_with(".weight") {
                vec![1.0; numel]
            } else {
                vec![0.0; numel]
            };
            map.insert(name, Tensor::from_vec(values, shape, device)?);
        }
        Self::from_tensors(&map, Path::new("<random init>"))
    }

    pub fn device(&self) -> &Device {
        self.conv1.weight.device()
    }

    /// How many styles the network holds: 1, or the conditions of a conditional network.
    pub fn styles(&self) -> usize {
        match self.in1.weight.dims() {
            [styles, _] => *styles,
            _ => 1,
        }
    }

    /// The base width: channels of the first convolution (32 for pytorch's models).
    pub fn width(&self) -> usize {
        self.conv1.weight.dims().first().copied().unwrap_or(0)
    }

    /// Parameters by PyTorch name, in the order of [`Self::parameter_shapes`].
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(62);
        let conv = |prefix: &str, c: &ConvLayer, out: &mut Vec<(String, Tensor)>| {
            out.push((
                format!("{prefix}{}.conv2d.weight", c.name),
                c.weight.clone(),
            ));
            out.push((format!("{prefix}{}.conv2d.bias", c.name), c.bias.clone()));
        };
        let norm = |prefix: &str, n: &InstanceNorm, out: &mut Vec<(String, Tensor)>| {
            out.push((format!("{prefix}{}.weight", n.name), n.weight.clone()));
            out.push((format!("{prefix}{}.bias", n.name), n.bias.clone()));
        };
        for (c, n) in [
            (&self.conv1, &self.in1),
            (&self.conv2, &self.in2),
            (&self.conv3, &self.in3),
        ] {
            conv("", c, &mut out);
            norm("", n, &mut out);
        }
        for (block, name) in self.res.iter().zip(RES_NAMES) {
            let prefix = format!("{name}.");
            conv(&prefix, &block.conv1, &mut out);
            norm(&prefix, &block.in1, &mut out);
            conv(&prefix, &block.conv2, &mut out);
            norm(&prefix, &block.in2, &mut out);
        }
        for (c, n) in [(&self.deconv1, &self.in4), (&self.deconv2, &self.in5)] {
            conv("", c, &mut out);
            norm("", n, &mut out);
        }
        conv("", &self.deconv3, &mut out);
        out
    }

    /// Stylises `x`, (N,3,H,W) RGB in 0..255, any H,W >= 1. The image is extended at its
    /// bottom/right (reflection; edge replication below 8 pixels) to what the strides need and
    /// the output is cropped back to H×W.
    /// A conditional network paints the even blend of its styles here (see
    /// [`Self::forward_mixed`]).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_mixed(x, None)
    }

    /// [`Self::forward`] with a style mix for a conditional network: `mix` holds one weight per
    /// style (shape (S,), f32; weights summing to 1 keep the norms' scale), a one-hot mix paints
    /// one style. Ignored by a one-style network.
    pub fn forward_mixed(&self, x: &Tensor, mix: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let styles = self.styles();
        if let Some(mix) = mix {
            if styles > 1 && mix.dims() != [styles] {
                bail!(
                    "the style mix has shape {:?}; this network holds {styles} styles",
                    mix.dims()
                )
            }
        }
        let mix = if styles > 1 { mix } else { None };
        let (_, channels, h, w) = x.dims4()?;
        if channels != 3 {
            bail!("the style network expects 3 RGB channels, got {channels}")
        }
        if h == 0 || w == 0 {
            bail!("the style network got an empty {h}x{w} image")
        }
        let x = pad_end_to(x, 2, run_size(h))?;
        let x = pad_end_to(&x, 3, run_size(w))?;
        let mut y = self.run(&x, mix, &mut Norming::Own)?;
        if y.dim(2)? != h || y.dim(3)? != w {
            y = y.narrow(2, 0, h)?.narrow(3, 0, w)?;
        }
        Ok(y)
    }

    /// A conditional network with a style mix per pixel: `weights` (1, S, H, W) at `x`'s size
    /// gives each pixel's weights of the network's S styles (summing to 1 keeps the norms'
    /// scale), so regions of different styles paint in one pass without a seam.
    pub fn forward_spatial(&self, x: &Tensor, weights: &Tensor) -> Result<Tensor> {
        let styles = self.styles();
        let (_, channels, h, w) = x.dims4()?;
        if styles < 2 {
            return Err(Error::invalid(
                "per-pixel style weights need a conditional network (atelier train --conditional)",
            ));
        }
        if channels != 3 || h == 0 || w == 0 {
            return Err(Error::invalid(format!(
                "the style network expects a non-empty RGB image, got {:?}",
                x.dims()
            )));
        }
        if weights.dims() != [1, styles, h, w] {
            return Err(Error::invalid(format!(
                "per-pixel style weights of shape {:?} for a {h}x{w} image and {styles} styles",
                weights.dims()
            )));
        }
        let pad = |t: &Tensor| -> candle_core::Result<Tensor> {
            pad_end_to(&pad_end_to(t, 2, run_size(h))?, 3, run_size(w))
        };
        let (x, weights) = (pad(x)?, pad(&weights.to_dtype(DType::F32)?)?);
        let mut y = self.run(&x, None, &mut Norming::Spatial(&weights))?;
        if y.dim(2)? != h || y.dim(3)? != w {
            y = y.narrow(2, 0, h)?.narrow(3, 0, w)?;
        }
        Ok(y)
    }

    /// The statistics of every norm when the network runs on `x` (whose sides are multiples of
    /// 4): the first, low-resolution estimate for a tiled run.
    pub fn measure_norms(&self, x: &Tensor, mix: Option<&Tensor>) -> Result<NormStats> {
        let mix = self.checked_mix(mix)?;
        check_tile(x)?;
        let mut layers = Vec::with_capacity(NORM_LAYERS);
        self.run(x, mix, &mut Norming::Measure(&mut layers))?;
        Ok(NormStats { layers })
    }

    /// One tile of a tiled run: `x` (sides multiples of 4) normalised with the whole image's
    /// `stats`. With `collect`, the tile's window adds its share of each norm's input to the
    /// sums (the next, refined estimate of `stats`). Inference only.
    pub fn forward_tile(
        &self,
        x: &Tensor,
        mix: Option<&Tensor>,
        stats: &NormStats,
        collect: Option<(&mut NormSums, TileWindow)>,
    ) -> Result<Tensor> {
        let mix = self.checked_mix(mix)?;
        check_tile(x)?;
        if stats.layers.len() != NORM_LAYERS {
            return Err(Error::invalid(format!(
                "tile statistics hold {} norms; the network has {NORM_LAYERS}",
                stats.layers.len()
            )));
        }
        Ok(self.run(x, mix, &mut Norming::Fixed { stats, collect })?)
    }

    /// The start of a tile pass that runs one norm at a time: the tile `x` (sides multiples of
    /// 4) before any layer. With [`Self::tile_norm_input`] and [`Self::tile_advance`] the
    /// statistics passes of a tiled run take norm k's whole-image statistics with norms 0…k−1
    /// already fixed, and keep each tile's state between passes instead of running it again
    /// from the photo. Jumping ahead (all norms at once) would mix statistics of different
    /// inputs, which instance norm does not forgive (measured: 9.6 levels off after a
    /// low-resolution estimate, 34 after refining all norms at once from there).
    pub fn tile_start(&self, x: &Tensor) -> Result<TileState> {
        check_tile(x)?;
        Ok(TileState {
            next: 0,
            y: x.clone(),
            skip: None,
        })
    }

    /// The input of the next norm (the state's [`TileState::next_norm`]) for a tile pass.
    pub fn tile_norm_input(&self, state: &TileState) -> Result<Tensor> {
        if state.next >= NORM_LAYERS {
            return Err(Error::invalid(format!(
                "all {NORM_LAYERS} norms of this tile are applied"
            )));
        }
        Ok(self.norm_input(state.next, &state.y)?)
    }

    /// Applies the next norm to its `input` (from [`Self::tile_norm_input`]) with the whole
    /// image's statistics `stats` and moves the state past it.
    pub fn tile_advance(
        &self,
        state: &mut TileState,
        input: &Tensor,
        mix: Option<&Tensor>,
        stats: &ChannelStats,
    ) -> Result<()> {
        let mix = self.checked_mix(mix)?;
        let layer = state.next;
        if layer >= NORM_LAYERS {
            return Err(Error::invalid(format!(
                "all {NORM_LAYERS} norms of this tile are applied"
            )));
        }
        let (norm, relu) = self.norm(layer);
        let y = norm.forward_with(input, relu, mix, stats)?;
        self.advance(layer, y, &mut state.y, &mut state.skip)?;
        state.next += 1;
        Ok(())
    }

    /// The norm at position `layer` and whether a ReLU follows it.
    fn norm(&self, layer: usize) -> (&InstanceNorm, bool) {
        let last = NORM_LAYERS - 2;
        match layer {
            0 => (&self.in1, true),
            1 => (&self.in2, true),
            2 => (&self.in3, true),
            l if l == last => (&self.in4, true),
            l if l > last => (&self.in5, true),
            l => {
                let block = &self.res[(l - 3) / 2];
                if (l - 3) % 2 == 0 {
                    (&block.in1, true)
                } else {
                    (&block.in2, false)
                }
            }
        }
    }

    /// The convolution that feeds norm `layer`, applied to `y` (the previous norm's output, or
    /// the image for norm 0).
    fn norm_input(&self, layer: usize, y: &Tensor) -> candle_core::Result<Tensor> {
        let g = self.trainable;
        let last = NORM_LAYERS - 2;
        match layer {
            0 => self.conv1.forward(y, g),
            1 => self.conv2.forward(y, g),
            2 => self.conv3.forward(y, g),
            l if l == last => self.deconv1.forward(y, g),
            l if l > last => self.deconv2.forward(y, g),
            l => {
                let block = &self.res[(l - 3) / 2];
                if (l - 3) % 2 == 0 {
                    block.conv1.forward(y, g)
                } else {
                    block.conv2.forward(y, g)
                }
            }
        }
    }

    /// Moves a pass past norm `layer`, whose output is `normed`: a residual block's first norm
    /// keeps the block's input for its skip connection, its second adds it back.
    fn advance(
        &self,
        layer: usize,
        normed: Tensor,
        y: &mut Tensor,
        skip: &mut Option<Tensor>,
    ) -> candle_core::Result<()> {
        let in_blocks = (3..NORM_LAYERS - 2).contains(&layer);
        if in_blocks && (layer - 3).is_multiple_of(2) {
            *skip = Some(std::mem::replace(y, normed));
        } else if in_blocks {
            let Some(input) = skip.take() else {
                bail!("a residual block's second norm came without its first")
            };
            *y = ops::add(&normed, &input)?;
        } else {
            *y = normed;
        }
        Ok(())
    }

    fn checked_mix<'m>(&self, mix: Option<&'m Tensor>) -> Result<Option<&'m Tensor>> {
        let styles = self.styles();
        if let Some(mix) = mix {
            if styles > 1 && mix.dims() != [styles] {
                return Err(Error::invalid(format!(
                    "the style mix has shape {:?}; this network holds {styles} styles",
                    mix.dims()
                )));
            }
        }
        Ok(if styles > 1 { mix } else { None })
    }

    /// The layers on `x` (sides already what the strides need), each norm as `norming` says.
    fn run(
        &self,
        x: &Tensor,
        mix: Option<&Tensor>,
        norming: &mut Norming<'_>,
    ) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        let mut skip = None;
        for layer in 0..NORM_LAYERS {
            let input = self.norm_input(layer, &y)?;
            let (norm, relu) = self.norm(layer);
            let normed = norming.apply(layer, norm, &input, relu, mix)?;
            self.advance(layer, normed, &mut y, &mut skip)?;
        }
        self.deconv3.forward(&y, self.trainable)
    }

    /// Writes the parameters (PyTorch names) as `.safetensors` in `dtype` (F16 halves the file
    /// for shipping; F32 and BF16 also work), with `metadata` in the header. The file is written
    /// to a temporary file beside `path` and renamed, so a failure never leaves half a file.
    pub fn save_safetensors(
        &self,
        path: &Path,
        dtype: DType,
        mut metadata: HashMap<String, String>,
    ) -> Result<()> {
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::invalid(format!(
                "cannot save the style network as {dtype:?}; use F32, F16 or BF16"
            )));
        }
        metadata
            .entry("architecture".to_string())
            .or_insert_with(|| "fast_neural_style.TransformerNet".to_string());
        weights::save_safetensors(path, &self.tensors(), Some(dtype), metadata)
    }

    /// Floating-point operations of one forward pass of a pytorch-width network on an `h`×`w`
    /// image (2 × multiply-adds of all convolutions, at the padded size the network runs at).
    pub fn flops(h: usize, w: usize) -> f64 {
        Self::flops_for_width(h, w, DEFAULT_WIDTH)
    }

    /// [`Self::flops`] for a network of base width `width`.
    pub fn flops_for_width(h: usize, w: usize, width: usize) -> f64 {
        let arch = Architecture { width };
        let (mut h, mut w) = (run_size(h), run_size(w));
        let mut macs = 0f64;
        let mut conv = |h: &mut usize, w: &mut usize, (_, cin, cout, k, stride, up): ConvSpec| {
            if up {
                *h *= 2;
                *w *= 2;
            }
            // Reflection pad k/2 then a valid conv: out = (in - 1) / stride + 1 for odd k.
            *h = (*h - 1) / stride + 1;
            *w = (*w - 1) / stride + 1;
            macs += (*h * *w * cout * cin * k * k) as f64;
        };
        for spec in arch.head() {
            conv(&mut h, &mut w, spec);
        }
        for _ in 0..RESIDUAL_BLOCKS {
            for spec in arch.residual() {
                conv(&mut h, &mut w, spec);
            }
        }
        for spec in arch.tail() {
            conv(&mut h, &mut w, spec);
        }
        2.0 * macs
    }
}

/// Whether every value of `t` is finite (no NaN, no ±infinity).
fn all_finite(t: &Tensor) -> candle_core::Result<bool> {
    let values = t
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;
    Ok(values.iter().all(|v| v.is_finite()))
}

/// Decides whether names carry a `module.` prefix (checkpoints of `nn.DataParallel` models) and
/// recognises files that hold some other network.
fn detect_prefix(map: &HashMap<String, Tensor>, path: &Path) -> Result<&'static str> {
    const PROBE: &str = "conv1.conv2d.weight";
    for prefix in ["", "module."] {
        if map.contains_key(&format!("{prefix}{PROBE}")) {
            return Ok(prefix);
        }
    }
    let expected = TransformerNet::parameter_shapes();
    let present = expected
        .iter()
        .filter(|(name, _)| map.contains_key(name))
        .count();
    if present > 0 {
        // Partly there: let the lookup name the first missing tensor.
        return Ok("");
    }
    let mut names: Vec<&String> = map.keys().collect();
    names.sort();
    // torchvision names VGG layers `features.N.*`; converted files often use `conv1_1.*`.
    let vgg_like = |n: &str| n.starts_with("features.") || n.starts_with("conv1_1.");
    let looks_like = if names.iter().any(|n| vgg_like(n)) {
        " (it looks like a VGG/classification network)".to_string()
    } else if names.is_empty() {
        " (it holds no tensors)".to_string()
    } else {
        let sample: Vec<&str> = names.iter().take(3).map(|n| n.as_str()).collect();
        format!(" (it holds e.g. {})", sample.join(", "))
    };
    Err(Error::weights(
        path,
        format!("not a fast_neural_style transformer: no `{PROBE}`{looks_like}"),
    ))
}
