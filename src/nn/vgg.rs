//! The VGG16/VGG19 loss network (conv layers only): features for content and style losses.
//!
//! Two weight layouts are read:
//! - Atelier/Keras names `conv1_1.weight` … `conv5_3.bias` (`conv5_4` for VGG19), with the input
//!   normalisation in the safetensors metadata (`mean`, `std`, `input_range`); without metadata
//!   the Caffe/Keras convention (RGB 0..255 minus the ImageNet mean) is assumed.
//! - torchvision/timm names `features.N.weight`, with torchvision's normalisation (RGB 0..1,
//!   ImageNet mean and std) unless the metadata says otherwise.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::error::{Error, Result};
use crate::nn::ops;
use crate::nn::weights::WeightFile;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VggArch {
    Vgg16,
    Vgg19,
}

impl VggArch {
    /// Convs per block; every block ends with a 2×2 max-pool.
    fn block_sizes(self) -> [usize; 5] {
        match self {
            VggArch::Vgg16 => [2, 2, 3, 3, 3],
            VggArch::Vgg19 => [2, 2, 4, 4, 4],
        }
    }

    fn name(self) -> &'static str {
        match self {
            VggArch::Vgg16 => "VGG16",
            VggArch::Vgg19 => "VGG19",
        }
    }
}

const BLOCK_CHANNELS: [usize; 5] = [64, 128, 256, 512, 512];

/// Every VGG conv: 3×3, zero padding 1, stride 1, ReLU fused into the convolution.
const CONV_RELU: ops::ConvParams = ops::ConvParams {
    pad: 1,
    mode: ops::PadMode::Zero,
    stride: 1,
    upsample: false,
    relu: true,
};

/// How pixels in 0..255 map to network input: `input = (pixel * scale - mean) / std`, per RGB
/// channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub scale: f32,
}

impl Normalization {
    /// Caffe/Keras VGG: RGB 0..255 minus the ImageNet mean, no division.
    pub const CAFFE: Normalization = Normalization {
        mean: [123.68, 116.779, 103.939],
        std: [1.0, 1.0, 1.0],
        scale: 1.0,
    };

    /// torchvision: RGB 0..1, ImageNet mean and std.
    pub const TORCHVISION: Normalization = Normalization {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        scale: 1.0 / 255.0,
    };
}

/// One 3×3 conv + ReLU, optionally followed by the block's max-pool.
#[derive(Debug, Clone)]
struct ConvLayer {
    relu_name: String,
    weight: Tensor,
    bias: Tensor,
    c_in: usize,
    c_out: usize,
    pool_after: bool,
}

impl ConvLayer {
    /// conv + bias + ReLU.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::conv2d_fused(
            x,
            &self.weight,
            Some(&self.bias),
            CONV_RELU,
            false,
        )?)
    }

    /// conv + bias + ReLU + 2×2 max-pool, without keeping the full-size activation.
    fn forward_pooled(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::conv2d_fused_maxpool(
            x,
            &self.weight,
            &self.bias,
            CONV_RELU,
        )?)
    }
}

/// What one forward pass of [`Vgg::forward_tape`] keeps for its backward pass.
pub struct VggTape {
    steps: Vec<TapeStep>,
    features: HashMap<String, Tensor>,
}

struct TapeStep {
    layer: usize,
    input_dims: (usize, usize, usize, usize),
    /// The layer's ReLU output (before its pool): the ReLU mask and the pool's argmax.
    output: Tensor,
    /// Whether the next layer read the pooled output.
    pooled: bool,
}

impl VggTape {
    /// The requested feature maps.
    pub fn features(&self) -> &HashMap<String, Tensor> {
        &self.features
    }
}

/// The conv part of VGG16/VGG19 with its input normalisation.
#[derive(Debug, Clone)]
pub struct Vgg {
    arch: VggArch,
    layers: Vec<ConvLayer>,
    normalization: Normalization,
    /// `1 / std * scale` and `-mean / std`, shaped (1, 3, 1, 1), so normalising is one mul + add.
    input_mul: Tensor,
    input_add: Tensor,
}

/// The path that names the VGG16 built into the program (see [`Vgg::bundled`]); never a file.
pub const BUNDLED_VGG: &str = "<built-in VGG16 to relu4_3>";
static BUNDLED_VGG16: &[u8] = include_bytes!("../../models/vgg16-relu4_3.safetensors");

/// Static description of one conv layer of an architecture.
struct LayerSpec {
    /// "1_1", "3_4", ...
    suffix: String,
    /// Index of the conv in torchvision's `features` sequential.
    torchvision_index: usize,
    c_in: usize,
    c_out: usize,
    pool_after: bool,
}

fn layer_specs(arch: VggArch) -> Vec<LayerSpec> {
    let mut specs = Vec::new();
    let mut c_in = 3;
    // torchvision's `features` interleaves conv, ReLU, ..., max-pool.
    let mut torchvision_index = 0;
    for (block, (&convs, &c_out)) in arch.block_sizes().iter().zip(&BLOCK_CHANNELS).enumerate() {
        for conv in 0..convs {
            specs.push(LayerSpec {
                suffix: format!("{}_{}", block + 1, conv + 1),
                torchvision_index,
                c_in,
                c_out,
                pool_after: conv + 1 == convs,
            });
            c_in = c_out;
            torchvision_index += 2;
        }
        torchvision_index += 1;
    }
    specs
}

/// Which naming scheme a weight file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Atelier,
    Torchvision,
}

impl Vgg {
    /// Loads VGG16 or VGG19 conv weights (`.safetensors` or PyTorch `.pth`), detecting the
    /// architecture and layout from the tensor names.
    pub fn load(path: &Path, device: &Device) -> Result<Vgg> {
        if path == Path::new(BUNDLED_VGG) {
            return Self::bundled(device);
        }
        // Only the convolutions: torchvision/timm files also hold a ~470 MB classifier.
        let file = WeightFile::load_only(path, device, |name| {
            name.starts_with("conv") || name.starts_with("features.")
        })?;
        Self::from_weight_file(&file, device)
    }

    /// VGG16's convolutions up to relu4_3 (f16, 15 MB), built into the program: every method
    /// works offline with no download.
    pub fn bundled(device: &Device) -> Result<Vgg> {
        let file = WeightFile::from_bytes(BUNDLED_VGG16, Path::new(BUNDLED_VGG), device)?;
        Self::from_weight_file(&file, device)
    }

    fn from_weight_file(file: &WeightFile, device: &Device) -> Result<Vgg> {
        let (layout, arch) = detect_layout(file)?;
        let defaults = match layout {
            Layout::Atelier => Normalization::CAFFE,
            Layout::Torchvision => Normalization::TORCHVISION,
        };
        let normalization = normalization_from_metadata(file, defaults)?;
        // A file may hold the first layers only (the bundled VGG16 stops at relu4_3), when its
        // metadata says so: a missing tensor is otherwise an error.
        let mut specs = layer_specs(arch);
        if let Some(last) = file.metadata.get("last_layer") {
            let keep = specs
                .iter()
                .position(|s| format!("relu{}", s.suffix) == *last)
                .ok_or_else(|| {
                    Error::weights(
                        &file.path,
                        format!(
                            "metadata `last_layer` {last:?} is not a {} layer",
                            arch.name()
                        ),
                    )
                })?;
            specs.truncate(keep + 1);
        }
        let layers = specs
            .into_iter()
            .map(|spec| {
                let prefix = match layout {
                    Layout::Atelier => format!("conv{}", spec.suffix),
                    Layout::Torchvision => format!("features.{}", spec.torchvision_index),
                };
                let weight = file
                    .get(&format!("{prefix}.weight"), &[spec.c_out, spec.c_in, 3, 3])
                    .map_err(|e| in_arch(e, arch))?;
                let bias = file
                    .get(&format!("{prefix}.bias"), &[spec.c_out])
                    .map_err(|e| in_arch(e, arch))?;
                Ok(ConvLayer {
                    relu_name: format!("relu{}", spec.suffix),
                    weight,
                    bias,
                    c_in: spec.c_in,
                    c_out: spec.c_out,
                    pool_after: spec.pool_after,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(arch, layers, normalization, device)
    }

    /// Randomly initialised network (Kaiming-normal weights, zero biases, Caffe normalisation),
    /// for benchmarks and tests.
    pub fn random(arch: VggArch, device: &Device, seed: u64) -> Result<Vgg> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let layers = layer_specs(arch)
            .into_iter()
            .map(|spec| {
                let fan_in = spec.c_in * 9;
                let normal = Normal::new(0.0f32, (2.0 / fan_in as f32).sqrt())
                    .map_err(|e| Error::invalid(format!("random VGG init: {e}")))?;
                let values: Vec<f32> = (0..spec.c_out * fan_in)
                    .map(|_| normal.sample(&mut rng))
                    .collect();
                Ok(ConvLayer {
                    relu_name: format!("relu{}", spec.suffix),
                    weight: Tensor::from_vec(values, (spec.c_out, spec.c_in, 3, 3), device)?,
                    bias: Tensor::zeros(spec.c_out, candle_core::DType::F32, device)?,
                    c_in: spec.c_in,
                    c_out: spec.c_out,
                    pool_after: spec.pool_after,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(arch, layers, Normalization::CAFFE, device)
    }

    fn new(
        arch: VggArch,
        layers: Vec<ConvLayer>,
        normalization: Normalization,
        device: &Device,
    ) -> Result<Vgg> {
        let Normalization { mean, std, scale } = normalization;
        let mul: Vec<f32> = std.iter().map(|s| scale / s).collect();
        let add: Vec<f32> = mean.iter().zip(&std).map(|(m, s)| -m / s).collect();
        Ok(Vgg {
            arch,
            layers,
            normalization,
            input_mul: Tensor::from_vec(mul, (1, 3, 1, 1), device)?,
            input_add: Tensor::from_vec(add, (1, 3, 1, 1), device)?,
        })
    }

    pub fn arch(&self) -> VggArch {
        self.arch
    }

    pub fn normalization(&self) -> Normalization {
        self.normalization
    }

    /// The feature layers, shallow to deep: relu1_1, relu1_2, relu2_1, ...
    pub fn layer_names(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.relu_name.clone()).collect()
    }

    /// Activations of the requested ReLU layers for `pixels` (N, 3, H, W), f32 RGB in 0..255.
    /// Stops after the deepest requested layer. Differentiable with respect to `pixels` through
    /// candle's autograd; the network's own weights never get a gradient. Losses that need the
    /// gradient of many steps use [`Vgg::forward_tape`] and [`Vgg::backward`] instead, which
    /// skip autograd's bookkeeping.
    pub fn features(&self, pixels: &Tensor, layers: &[String]) -> Result<HashMap<String, Tensor>> {
        let Some(deepest) = self.deepest(pixels, layers)? else {
            return Ok(HashMap::new());
        };
        let mut x = self.normalize(pixels)?;
        let mut out = HashMap::new();
        for (index, layer) in self.layers.iter().enumerate().take(deepest + 1) {
            let wanted = layers.contains(&layer.relu_name);
            if index < deepest && layer.pool_after && !wanted {
                // Only the pooled activation goes on: never store the full-size one.
                x = layer.forward_pooled(&x)?;
                continue;
            }
            x = layer.forward(&x)?;
            if wanted {
                out.insert(layer.relu_name.clone(), x.clone());
            }
            if index < deepest && layer.pool_after {
                x = ops::max_pool2x2(&x)?;
            }
        }
        Ok(out)
    }

    /// A forward pass without an autograd graph that keeps every activation [`Vgg::backward`]
    /// needs. The features of `layers` are in [`VggTape::features`].
    pub fn forward_tape(&self, pixels: &Tensor, layers: &[String]) -> Result<VggTape> {
        let mut tape = VggTape {
            steps: Vec::new(),
            features: HashMap::new(),
        };
        let Some(deepest) = self.deepest(pixels, layers)? else {
            return Ok(tape);
        };
        let mut x = self.normalize(&pixels.detach())?;
        for (index, layer) in self.layers.iter().enumerate().take(deepest + 1) {
            let y = layer.forward(&x)?;
            if layers.contains(&layer.relu_name) {
                tape.features.insert(layer.relu_name.clone(), y.clone());
            }
            let input = std::mem::replace(&mut x, y.clone());
            if index < deepest && layer.pool_after {
                x = ops::max_pool2x2(&y)?;
            }
            tape.steps.push(TapeStep {
                layer: index,
                input_dims: input.dims4()?,
                output: y,
                pooled: index < deepest && layer.pool_after,
            });
        }
        Ok(tape)
    }

    /// dL/dpixels for the tape's input, given dL/dfeature for some of its feature layers: the
    /// backward pass of [`Vgg::forward_tape`], run layer by layer with the conv kernels' own
    /// input-gradient op.
    pub fn backward(
        &self,
        tape: &VggTape,
        feature_grads: &HashMap<String, Tensor>,
    ) -> Result<Option<Tensor>> {
        // Gradient with respect to the current step's output (after its pool, if any).
        let mut grad: Option<Tensor> = None;
        for step in tape.steps.iter().rev() {
            let layer = &self.layers[step.layer];
            let grad_y = match (grad.take(), step.pooled) {
                (Some(g), true) => Some(ops::max_pool2x2_backward(&step.output, &g)?),
                (g, _) => g,
            };
            let extra = feature_grads.get(&layer.relu_name);
            let grad_y = match (grad_y, extra) {
                (Some(g), e) => ops::relu_backward(&g, &step.output, e)?,
                (None, Some(e)) => ops::relu_backward(e, &step.output, None)?,
                // Nothing reaches this layer or any shallower one from here on.
                (None, None) => continue,
            };
            grad = Some(ops::conv2d_input_grad(
                &grad_y,
                &layer.weight,
                step.input_dims,
                CONV_RELU,
            )?);
        }
        // Through the input normalisation: pixels · mul + add.
        grad.map(|g| g.broadcast_mul(&self.input_mul))
            .transpose()
            .map_err(Error::from)
    }

    /// Maps pixels in 0..255 to the network's input.
    fn normalize(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(pixels
            .broadcast_mul(&self.input_mul)?
            .broadcast_add(&self.input_add)?)
    }

    /// Index of the deepest of `layers`, after checking that `pixels` can go that deep.
    fn deepest(&self, pixels: &Tensor, layers: &[String]) -> Result<Option<usize>> {
        let deepest = layers
            .iter()
            .map(|name| self.layer_index(name))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .max();
        let Some(deepest) = deepest else {
            return Ok(None);
        };
        let (_, channels, h, w) = pixels.dims4().map_err(|_| {
            Error::invalid(format!(
                "VGG input must be (N, 3, H, W), got {:?}",
                pixels.dims()
            ))
        })?;
        if channels != 3 {
            return Err(Error::invalid(format!(
                "VGG input must have 3 (RGB) channels, got {channels}"
            )));
        }
        let pools_needed = self.layers[..deepest]
            .iter()
            .filter(|l| l.pool_after)
            .count();
        let min_size = 1usize << pools_needed;
        if h < min_size || w < min_size {
            return Err(Error::invalid(format!(
                "image of {w}x{h} pixels (width x height) is too small for VGG layer {} (needs at least {min_size}x{min_size})",
                self.layers[deepest].relu_name
            )));
        }
        Ok(Some(deepest))
    }

    /// Multiply-add FLOPs (2 per MAC) of the convs of a forward pass on an `h`×`w` image up to and
    /// including layer `up_to`; 0 for an unknown layer name.
    pub fn conv_flops(&self, h: usize, w: usize, up_to: &str) -> f64 {
        let Ok(deepest) = self.layer_index(up_to) else {
            return 0.0;
        };
        let (mut h, mut w) = (h, w);
        let mut flops = 0.0;
        for layer in &self.layers[..=deepest] {
            flops += 2.0 * (layer.c_in * layer.c_out * 9) as f64 * (h * w) as f64;
            if layer.pool_after {
                (h, w) = (h / 2, w / 2);
            }
        }
        flops
    }

    /// Refuses a layer this network lacks, naming the valid ones (or, for a layer deeper than a
    /// truncated file holds, how to get a full VGG).
    pub fn check_layer(&self, name: &str) -> Result<()> {
        self.layer_index(name).map(|_| ())
    }

    fn layer_index(&self, name: &str) -> Result<usize> {
        self.layers
            .iter()
            .position(|l| l.relu_name == name)
            .ok_or_else(|| {
                let deeper = layer_specs(self.arch)
                    .iter()
                    .any(|s| format!("relu{}", s.suffix) == name);
                if deeper {
                    return Error::invalid(format!(
                        "layer `{name}` is deeper than this {} has (it stops at {}); pass --vgg \
                         with a full VGG16/VGG19 file, or get VGG19 with `atelier fetch-vgg`",
                        self.arch.name(),
                        self.layer_names().last().map(String::as_str).unwrap_or("?")
                    ));
                }
                Error::invalid(format!(
                    "unknown {} layer `{name}`; valid layers: {}",
                    self.arch.name(),
                    self.layer_names().join(", ")
                ))
            })
    }
}

/// Adds the architecture to a missing-tensor / wrong-shape error so the user knows what was
/// expected.
fn in_arch(error: Error, arch: VggArch) -> Error {
    match error {
        Error::Weights { path, reason } => Error::Weights {
            path,
            reason: format!("{reason} (reading it as {})", arch.name()),
        },
        other => other,
    }
}

fn detect_layout(file: &WeightFile) -> Result<(Layout, VggArch)> {
    if file.contains("conv1_1.weight") {
        let vgg19 = ["conv3_4.weight", "conv4_4.weight", "conv5_4.weight"]
            .iter()
            .any(|name| file.contains(name));
        let arch = if vgg19 {
            VggArch::Vgg19
        } else {
            VggArch::Vgg16
        };
        return Ok((Layout::Atelier, arch));
    }
    if file.contains("features.0.weight") {
        // Batch-norm variants put a BatchNorm at index 1 and shift every later index.
        if file.contains("features.1.weight") || file.contains("features.1.running_mean") {
            return Err(Error::weights(
                &file.path,
                "this looks like a batch-norm VGG (vgg16_bn/vgg19_bn), which is not supported; use plain VGG16/VGG19 weights",
            ));
        }
        // Index 16 is a conv only in VGG19 (a ReLU in VGG16); 17 only in VGG16.
        if file.contains("features.16.weight") {
            return Ok((Layout::Torchvision, VggArch::Vgg19));
        }
        if file.contains("features.17.weight") {
            return Ok((Layout::Torchvision, VggArch::Vgg16));
        }
        return Err(Error::weights(
            &file.path,
            "this does not look like a VGG16/VGG19 file: it has `features.0.weight` but neither `features.16.weight` (VGG19) nor `features.17.weight` (VGG16)",
        ));
    }
    let mut names: Vec<&str> = file.names().collect();
    names.sort_unstable();
    let shown = names.iter().take(5).copied().collect::<Vec<_>>().join(", ");
    let found = if names.is_empty() {
        "the file holds no tensors".to_string()
    } else {
        format!("found {} tensors, e.g. {shown}", names.len())
    };
    Err(Error::weights(
        &file.path,
        format!(
            "this does not look like a VGG16/VGG19 file: no `conv1_1.weight` (Atelier/Keras layout) or `features.0.weight` (torchvision layout); {found}"
        ),
    ))
}

fn normalization_from_metadata(
    file: &WeightFile,
    defaults: Normalization,
) -> Result<Normalization> {
    let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
        let Some(text) = file.metadata.get(key) else {
            return Ok(default);
        };
        let values = text
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .ok()
            .and_then(|v| <[f32; 3]>::try_from(v).ok())
            .ok_or_else(|| {
                Error::weights(
                    &file.path,
                    format!("metadata `{key}` must be three comma-separated numbers, got {text:?}"),
                )
            })?;
        Ok(values)
    };
    let mean = triple("mean", defaults.mean)?;
    let std = triple("std", defaults.std)?;
    if std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
        return Err(Error::weights(
            &file.path,
            format!("metadata `std` must be positive, got {std:?}"),
        ));
    }
    let scale = match file.metadata.get("input_range").map(|s| s.trim()) {
        None => defaults.scale,
        Some("0..255") => 1.0,
        Some("0..1") => 1.0 / 255.0,
        Some(other) => {
            return Err(Error::weights(
                &file.path,
                format!("metadata `input_range` must be \"0..255\" or \"0..1\", got {other:?}"),
            ))
        }
    };
    Ok(Normalization { mean, std, scale })
}
