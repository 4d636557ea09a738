//! Synthetic inputs: random networks (they only have to run, not to see), small images, and the
//! development VGG.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use atelier::nn::transformer::TransformerNet;
use candle_core::{DType, Device, Tensor};
use image::{Rgb, RgbImage};

/// The development copy of VGG16 beside the repository (never searched for by the program).
pub const DEV_VGG: &str = "../shared/models/vgg16-features.safetensors";

/// [`DEV_VGG`] when present; otherwise prints why the calling test skips itself.
pub fn shared_vgg() -> Option<PathBuf> {
    let path = PathBuf::from(DEV_VGG);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipping: {DEV_VGG} not found (see README: getting the VGG weights)");
        None
    }
}

/// A VGG16 with random weights in the Atelier layout (`conv1_1.weight`, …).
pub fn random_vgg(path: &Path) {
    let widths = [64, 128, 256, 512, 512];
    let convs = [2, 2, 3, 3, 3];
    let mut tensors = HashMap::new();
    let mut c_in = 3;
    for (block, (&count, &c_out)) in convs.iter().zip(&widths).enumerate() {
        for conv in 0..count {
            let name = format!("conv{}_{}", block + 1, conv + 1);
            let std = (2.0 / (c_in * 9) as f64).sqrt();
            let weight = Tensor::randn(0f32, std as f32, (c_out, c_in, 3, 3), &Device::Cpu);
            let bias = Tensor::zeros(c_out, DType::F32, &Device::Cpu);
            tensors.insert(format!("{name}.weight"), weight.unwrap());
            tensors.insert(format!("{name}.bias"), bias.unwrap());
            c_in = c_out;
        }
    }
    candle_core::safetensors::save(&tensors, path).unwrap();
}

/// A transformer network with random weights, written to `path`.
pub fn random_model(path: &Path, seed: u64) {
    TransformerNet::random(&Device::Cpu, seed)
        .unwrap()
        .save_safetensors(path, DType::F32, HashMap::new())
        .unwrap();
}

pub fn gradient_image(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
    })
}

pub fn stripes(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        if (x / 4 + y / 4) % 2 == 0 {
            Rgb([230, 40, 30])
        } else {
            Rgb([20, 40, 200])
        }
    })
}

/// Mean YIQ chroma distance between two images of the same size.
pub fn chroma_gap(a: &RgbImage, b: &RgbImage) -> f32 {
    let iq = |p: &Rgb<u8>| {
        let (r, g, b) = (p[0] as f32, p[1] as f32, p[2] as f32);
        (
            0.596 * r - 0.274 * g - 0.322 * b,
            0.211 * r - 0.523 * g + 0.312 * b,
        )
    };
    let total: f32 = a
        .pixels()
        .zip(b.pixels())
        .map(|(p, q)| {
            let ((ip, qp), (iq_, qq)) = (iq(p), iq(q));
            (ip - iq_).abs() + (qp - qq).abs()
        })
        .sum();
    total / (a.width() * a.height()) as f32
}

/// A conditional network of `styles` styles with random weights, written to `path`; each
/// style's norm shift is moved differently so the styles paint visibly differently.
pub fn random_conditional_model(path: &Path, seed: u64, styles: usize) {
    let net = TransformerNet::random_conditional(&Device::Cpu, seed, 8, styles).unwrap();
    let tensors: HashMap<String, Tensor> = net
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            if t.rank() == 2 && name.ends_with(".bias") {
                let (s, c) = t.dims2().unwrap();
                let shift: Vec<f32> = (0..s * c)
                    .map(|i| if (i / c + i % c) % 2 == 0 { 0.8 } else { -0.8 })
                    .collect();
                let t = (t + Tensor::from_vec(shift, (s, c), &Device::Cpu).unwrap()).unwrap();
                (name, t)
            } else {
                (name, t)
            }
        })
        .collect();
    TransformerNet::from_tensors(&tensors, Path::new("fixture"))
        .unwrap()
        .save_safetensors(path, DType::F32, HashMap::new())
        .unwrap();
}
