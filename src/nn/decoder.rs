//! Decoders that invert the VGG16 encoder up to one ReLU layer (universal style transfer, Li et
//! al. 2017; Huang & Belongie 2017): the mirror of the VGG's convolutions up to that layer, with
//! nearest ×2 upsampling where the VGG pools, reflection padding, and a ReLU after every
//! convolution but the last. A decoder is trained only to reconstruct photos from their
//! features, so it decodes the features of any feature transform (AdaIN, WCT).
//!
//! Widths: `width` is the channel count of the layers that mirror VGG block 1 (the VGG has 64);
//! deeper blocks have 2×, 4× and 8× as many. The first convolution reads the VGG's own
//! channels at the layer. A half-width decoder (32) costs about a quarter of the VGG's compute.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::nn::ops;
use crate::nn::weights::{self, WeightFile};

/// VGG16's convolutions per block and their channels.
const VGG16_BLOCKS: [usize; 5] = [2, 2, 3, 3, 3];
const VGG16_CHANNELS: [usize; 5] = [64, 128, 256, 512, 512];
/// The VGG's block-1 width.
pub const FULL_WIDTH: usize = 64;
/// `architecture` in a decoder file's metadata.
pub const ARCHITECTURE: &str = "atelier.vgg16-decoder";

/// Root-mean-square of VGG16's (Caffe weights, 0..255 input) features per block's first
/// layer, measured on 128² crops of the training photos (relu1_1 50, relu2_1 341, relu3_1 617,
/// relu4_1 426). The decoder divides its input by it so its first layer sees values near 1:
/// with the raw features (hundreds) Adam's steps were far too coarse and training stalled at
/// 13 dB.
const FEATURE_RMS: [f32; 5] = [50.0, 340.0, 620.0, 430.0, 100.0];
/// The last convolution's output is scaled to pixels: `pixel = 64 · y + 120`, so the network
/// works in unit-sized values too.
const OUTPUT_SCALE: f64 = 64.0;
const OUTPUT_OFFSET: f64 = 120.0;

/// One convolution of a decoder: 3×3, reflection padding 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderConvSpec {
    /// `dec4_1`, … `dec1_1`: the VGG convolution it mirrors.
    pub name: String,
    pub c_in: usize,
    pub c_out: usize,
    /// Nearest ×2 upsampling before the convolution (where the VGG pooled).
    pub upsample: bool,
    pub relu: bool,
}

/// `relu4_1` → (block 4, conv 1), for VGG16's layers up to relu5_3.
pub fn parse_layer(layer: &str) -> Result<(usize, usize)> {
    let bad = || {
        Error::invalid(format!(
            "unknown VGG16 layer `{layer}`; decoders invert relu1_1 … relu5_3 (e.g. relu4_1)"
        ))
    };
    let rest = layer.strip_prefix("relu").ok_or_else(bad)?;
    let (block, conv) = rest.split_once('_').ok_or_else(bad)?;
    let block: usize = block.parse().map_err(|_| bad())?;
    let conv: usize = conv.parse().map_err(|_| bad())?;
    if !(1..=5).contains(&block) || conv == 0 || conv > VGG16_BLOCKS[block - 1] {
        return Err(bad());
    }
    Ok((block, conv))
}

/// Channels of VGG16's feature map at `layer`.
pub fn layer_channels(layer: &str) -> Result<usize> {
    let (block, _) = parse_layer(layer)?;
    Ok(VGG16_CHANNELS[block - 1])
}

/// How many times the VGG halves the image before `layer` (the decoder doubles it as often).
pub fn layer_pools(layer: &str) -> Result<usize> {
    Ok(parse_layer(layer)?.0 - 1)
}

/// The convolutions of the decoder for `layer` at `width`, in the order they run.
pub fn architecture(layer: &str, width: usize) -> Result<Vec<DecoderConvSpec>> {
    let (deepest_block, deepest_conv) = parse_layer(layer)?;
    if width == 0 || width > FULL_WIDTH {
        return Err(Error::invalid(format!(
            "decoder width must be 1..={FULL_WIDTH}, got {width}"
        )));
    }
    // The VGG's convolutions up to the layer, shallow to deep: (block, conv, c_in, c_out).
    let mut vgg = Vec::new();
    let mut c_in = 3;
    for (b, (&convs, &c_out)) in VGG16_BLOCKS.iter().zip(&VGG16_CHANNELS).enumerate() {
        for k in 0..convs {
            if b + 1 > deepest_block || (b + 1 == deepest_block && k + 1 > deepest_conv) {
                break;
            }
            vgg.push((b + 1, k + 1, c_in, c_out));
            c_in = c_out;
        }
    }
    let scaled = |c: usize| if c == 3 { 3 } else { c * width / FULL_WIDTH };
    let last = vgg.len() - 1;
    Ok(vgg
        .iter()
        .enumerate()
        .rev()
        .map(|(i, &(block, conv, vgg_in, vgg_out))| {
            // The VGG pooled after the last conv of a block when a deeper conv followed.
            let pooled_after = conv == VGG16_BLOCKS[block - 1] && i < last;
            DecoderConvSpec {
                name: format!("dec{block}_{conv}"),
                c_in: if i == last { vgg_out } else { scaled(vgg_out) },
                c_out: scaled(vgg_in),
                upsample: pooled_after,
                relu: i > 0,
            }
        })
        .collect())
}

#[derive(Debug, Clone)]
struct DecoderConv {
    spec: DecoderConvSpec,
    weight: Tensor,
    bias: Tensor,
}

/// A trained (or freshly initialised) decoder for one VGG16 layer.
#[derive(Debug, Clone)]
pub struct Decoder {
    layer: String,
    width: usize,
    convs: Vec<DecoderConv>,
    /// Whether the backward pass computes weight gradients (training only).
    pub trainable: bool,
}

impl Decoder {
    /// Every parameter's name and shape, in running order.
    pub fn parameter_shapes(layer: &str, width: usize) -> Result<Vec<(String, Vec<usize>)>> {
        Ok(architecture(layer, width)?
            .into_iter()
            .flat_map(|s| {
                [
                    (format!("{}.weight", s.name), vec![s.c_out, s.c_in, 3, 3]),
                    (format!("{}.bias", s.name), vec![s.c_out]),
                ]
            })
            .collect())
    }

    /// PyTorch's default initialisation (uniform ±1/sqrt(fan_in)), except that the last
    /// convolution's bias starts at 0 (mid-grey after the output scaling).
    pub fn random(layer: &str, width: usize, device: &Device, seed: u64) -> Result<Self> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut map = HashMap::new();
        let specs = architecture(layer, width)?;
        for spec in &specs {
            let fan_in = spec.c_in * 9;
            let bound = 1.0 / (fan_in as f32).sqrt();
            let weight: Vec<f32> = (0..spec.c_out * fan_in)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let bias: Vec<f32> = if spec.relu {
                (0..spec.c_out)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect()
            } else {
                vec![0.0; spec.c_out]
            };
            map.insert(
                format!("{}.weight", spec.name),
                Tensor::from_vec(weight, (spec.c_out, spec.c_in, 3, 3), device)?,
            );
            map.insert(
                format!("{}.bias", spec.name),
                Tensor::from_vec(bias, spec.c_out, device)?,
            );
        }
        Self::from_tensors(layer, width, &map, Path::new("<random init>"))
    }

    /// Builds the decoder from named tensors, checking every name and shape.
    pub fn from_tensors(
        layer: &str,
        width: usize,
        map: &HashMap<String, Tensor>,
        path: &Path,
    ) -> Result<Self> {
        let convs = architecture(layer, width)?
            .into_iter()
            .map(|spec| {
                let get = |name: String, shape: &[usize]| -> Result<Tensor> {
                    let t = map
                        .get(&name)
                        .ok_or_else(|| Error::weights(path, format!("missing tensor `{name}`")))?;
                    if t.dims() != shape {
                        return Err(Error::weights(
                            path,
                            format!(
                                "tensor `{name}` has shape {:?}, expected {shape:?}",
                                t.dims()
                            ),
                        ));
                    }
                    Ok(t.to_dtype(DType::F32)?)
                };
                let weight = get(
                    format!("{}.weight", spec.name),
                    &[spec.c_out, spec.c_in, 3, 3],
                )?;
                let bias = get(format!("{}.bias", spec.name), &[spec.c_out])?;
                Ok(DecoderConv { spec, weight, bias })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layer: layer.to_string(),
            width,
            convs,
            trainable: false,
        })
    }

    /// Loads a decoder file; its layer and width come from the metadata.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let file = WeightFile::load(path, device)?;
        Self::from_weight_file(&file)
    }

    /// [`Self::load`] for an already-read file.
    pub fn from_weight_file(file: &WeightFile) -> Result<Self> {
        let path = file.path.as_path();
        if file.metadata.get("architecture").map(String::as_str) != Some(ARCHITECTURE) {
            return Err(Error::weights(
                path,
                format!("not an Atelier decoder (metadata `architecture` is not {ARCHITECTURE})"),
            ));
        }
        let layer = file
            .metadata
            .get("layer")
            .ok_or_else(|| Error::weights(path, "decoder metadata has no `layer`"))?;
        let width = file
            .metadata
            .get("width")
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| Error::weights(path, "decoder metadata has no valid `width`"))?;
        let decoder = Self::from_tensors(layer, width, &file.tensors, path)?;
        for conv in &decoder.convs {
            weights::check_finite(&conv.weight, path, &conv.spec.name)?;
        }
        Ok(decoder)
    }

    /// The VGG16 layer this decoder inverts.
    pub fn layer(&self) -> &str {
        &self.layer
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn device(&self) -> &Device {
        self.convs[0].weight.device()
    }

    /// Parameters by name, in running order.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.convs
            .iter()
            .flat_map(|c| {
                [
                    (format!("{}.weight", c.spec.name), c.weight.clone()),
                    (format!("{}.bias", c.spec.name), c.bias.clone()),
                ]
            })
            .collect()
    }

    /// Features (N, C, h, w) at the decoder's layer → pixels (N, 3, h·2^p, w·2^p) in about
    /// 0..255 (not clamped).
    pub fn forward(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        let (block, _) =
            parse_layer(&self.layer).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mut x = (features * f64::from(1.0 / FEATURE_RMS[block - 1]))?;
        for conv in &self.convs {
            let params = ops::ConvParams {
                pad: 1,
                mode: ops::PadMode::Reflect,
                stride: 1,
                upsample: conv.spec.upsample,
                relu: conv.spec.relu,
            };
            x = ops::conv2d_fused(&x, &conv.weight, Some(&conv.bias), params, self.trainable)?;
        }
        x.affine(OUTPUT_SCALE, OUTPUT_OFFSET)
    }

    /// Writes the decoder as `.safetensors` in `dtype` with its layer, width and `metadata`.
    pub fn save(
        &self,
        path: &Path,
        dtype: DType,
        mut metadata: HashMap<String, String>,
    ) -> Result<()> {
        metadata.insert("architecture".into(), ARCHITECTURE.into());
        metadata.insert("layer".into(), self.layer.clone());
        metadata.insert("width".into(), self.width.to_string());
        weights::save_safetensors(path, &self.tensors(), Some(dtype), metadata)
    }

    /// Multiply-add FLOPs (2 per MAC) of decoding features of `h`×`w` (at the layer).
    pub fn flops(&self, h: usize, w: usize) -> f64 {
        let (mut h, mut w) = (h, w);
        let mut flops = 0.0;
        for conv in &self.convs {
            if conv.spec.upsample {
                (h, w) = (2 * h, 2 * w);
            }
            flops += 2.0 * (conv.spec.c_in * conv.spec.c_out * 9 * h * w) as f64;
        }
        flops
    }
}

/// The decoders built into the program, one per level of the arbitrary method's cascade
/// (trained here with `atelier train-decoder`; see the README for how).
static BUNDLED: [(&str, &[u8]); 4] = [
    (
        "relu4_1",
        include_bytes!("../../models/decoders/relu4_1.safetensors"),
    ),
    (
        "relu3_1",
        include_bytes!("../../models/decoders/relu3_1.safetensors"),
    ),
    (
        "relu2_1",
        include_bytes!("../../models/decoders/relu2_1.safetensors"),
    ),
    (
        "relu1_1",
        include_bytes!("../../models/decoders/relu1_1.safetensors"),
    ),
];

/// The built-in decoders.
pub fn bundled(device: &Device) -> Result<Decoders> {
    let decoders = BUNDLED
        .iter()
        .map(|(layer, bytes)| {
            let name = format!("<built-in decoder {layer}>");
            Decoder::from_weight_file(&WeightFile::from_bytes(bytes, Path::new(&name), device)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Decoders::new(decoders))
}

/// Every decoder in `dir`: its `*.safetensors` files and its subfolders' `decoder.safetensors`
/// (what `atelier train-decoder -o DIR/decoder-LAYER` writes).
pub fn load_folder(dir: &Path, device: &Device) -> Result<Decoders> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::weights(dir, e))?;
    let mut paths: Vec<std::path::PathBuf> = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::weights(dir, e))?.path();
        if path.is_dir() {
            let inner = path.join("decoder.safetensors");
            if inner.is_file() {
                paths.push(inner);
            }
        } else if path.extension().is_some_and(|e| e == "safetensors")
            && !path.ends_with("checkpoint.safetensors")
        {
            paths.push(path);
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(Error::weights(
            dir,
            "holds no decoders (*.safetensors or */decoder.safetensors)",
        ));
    }
    let decoders = paths
        .iter()
        .map(|p| Decoder::load(p, device))
        .collect::<Result<Vec<_>>>()?;
    Ok(Decoders::new(decoders))
}

/// The decoders of the cascade levels, by layer.
#[derive(Debug, Clone, Default)]
pub struct Decoders {
    by_layer: HashMap<String, Arc<Decoder>>,
}

impl Decoders {
    pub fn new(decoders: impl IntoIterator<Item = Decoder>) -> Self {
        Self {
            by_layer: decoders
                .into_iter()
                .map(|d| (d.layer().to_string(), Arc::new(d)))
                .collect(),
        }
    }

    pub fn get(&self, layer: &str) -> Result<&Decoder> {
        self.by_layer.get(layer).map(|d| d.as_ref()).ok_or_else(|| {
            Error::invalid(format!(
                "no decoder for {layer} (have: {})",
                self.layers().join(", ")
            ))
        })
    }

    pub fn layers(&self) -> Vec<String> {
        let mut layers: Vec<String> = self.by_layer.keys().cloned().collect();
        layers.sort();
        layers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu4_1_mirrors_the_vgg() -> Result<()> {
        let specs = architecture("relu4_1", 64)?;
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["dec4_1", "dec3_3", "dec3_2", "dec3_1", "dec2_2", "dec2_1", "dec1_2", "dec1_1"]
        );
        assert_eq!((specs[0].c_in, specs[0].c_out), (512, 256));
        assert!(specs[1].upsample && specs[4].upsample && specs[6].upsample);
        assert!(!specs[0].upsample && !specs[2].upsample);
        assert_eq!(
            (specs[7].c_in, specs[7].c_out, specs[7].relu),
            (64, 3, false)
        );
        let half = architecture("relu4_1", 32)?;
        assert_eq!((half[0].c_in, half[0].c_out), (512, 128));
        assert_eq!((half[7].c_in, half[7].c_out), (32, 3));
        Ok(())
    }

    #[test]
    fn relu1_1_is_one_convolution() -> Result<()> {
        let specs = architecture("relu1_1", 16)?;
        assert_eq!(specs.len(), 1);
        assert_eq!(
            (specs[0].c_in, specs[0].c_out, specs[0].upsample),
            (64, 3, false)
        );
        Ok(())
    }

    #[test]
    fn decodes_to_the_image_size() -> Result<()> {
        let decoder = Decoder::random("relu3_1", 16, &Device::Cpu, 1)?;
        let features = Tensor::zeros((1, 256, 5, 7), DType::F32, &Device::Cpu)?;
        let y = decoder.forward(&features)?;
        assert_eq!(y.dims(), [1, 3, 20, 28]);
        Ok(())
    }

    #[test]
    fn unknown_layers_are_refused() {
        for bad in ["relu4_4", "conv4_1", "relu0_1", "relu6_1", "relu"] {
            assert!(architecture(bad, 32).is_err(), "{bad}");
        }
    }
}
