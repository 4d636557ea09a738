//! A patch discriminator for personalised styles learnt from a collection of works.
//!
//! It scores overlapping patches (about 78 px square) of an image as "from the works" or "made
//! by the network", and the network is trained to fool it. The Gram loss already matches
//! feature statistics; the discriminator adds what statistics miss, such as the shape of
//! brush strokes shared by the works.
//!
//! Loss: **hinge** (Lim & Ye 2017; used by SAGAN and BigGAN), not WGAN-GP. WGAN-GP needs the
//! gradient of a gradient norm (double backpropagation), which our convolution op does not
//! provide and which would roughly double the discriminator's cost on a CPU; the hinge loss
//! needs a single ordinary backward pass and is stable in practice for patch discriminators.
//! Discriminator: `mean(relu(1 − D(real))) + mean(relu(1 + D(fake)))`; network:
//! `−mean(D(fake))`.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::nn::ops;

/// (out channels as a multiple of the width, kernel, stride, padding) per convolution; every
/// layer but the last is followed by a leaky ReLU.
const LAYERS: [(usize, usize, usize, usize); 5] = [
    (1, 4, 2, 1),
    (2, 4, 2, 1),
    (4, 4, 2, 1),
    (8, 4, 2, 1),
    (0, 3, 1, 1),
];
/// Slope of the leaky ReLU for negative inputs (the usual GAN choice).
const LEAK: f64 = 0.2;
/// Base width (channels of the first layer); the loss network dominates the cost anyway.
pub const DISCRIMINATOR_WIDTH: usize = 32;

/// The convolution weights; built from named tensors so training can use `Var`-backed ones.
pub struct Discriminator {
    layers: Vec<(Tensor, Tensor, usize, usize)>,
}

fn layer_names(index: usize) -> (String, String) {
    (
        format!("layer{}.weight", index + 1),
        format!("layer{}.bias", index + 1),
    )
}

impl Discriminator {
    /// Every parameter's name and shape for base width `width`.
    pub fn parameter_shapes(width: usize) -> Vec<(String, Vec<usize>)> {
        let mut shapes = Vec::new();
        let mut c_in = 3;
        for (index, &(multiple, kernel, _, _)) in LAYERS.iter().enumerate() {
            let c_out = if multiple == 0 { 1 } else { multiple * width };
            let (w, b) = layer_names(index);
            shapes.push((w, vec![c_out, c_in, kernel, kernel]));
            shapes.push((b, vec![c_out]));
            c_in = c_out;
        }
        shapes
    }

    /// Fresh parameters (PyTorch's default conv init: uniform in ±1/sqrt(fan_in)), by name.
    pub fn random_parameters(
        device: &Device,
        seed: u64,
        width: usize,
    ) -> Result<Vec<(String, Tensor)>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut bound = 1.0f32;
        Self::parameter_shapes(width)
            .into_iter()
            .map(|(name, shape)| {
                if name.ends_with(".weight") {
                    bound = 1.0 / (shape[1..].iter().product::<usize>() as f32).sqrt();
                }
                let numel: usize = shape.iter().product();
                let values: Vec<f32> = (0..numel)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                Ok((name, Tensor::from_vec(values, shape, device)?))
            })
            .collect()
    }

    pub fn from_tensors(map: &HashMap<String, Tensor>) -> Result<Self> {
        let layers = LAYERS
            .iter()
            .enumerate()
            .map(|(index, &(_, _, stride, padding))| {
                let (w, b) = layer_names(index);
                let get = |name: &str| {
                    map.get(name).cloned().ok_or_else(|| {
                        Error::invalid(format!("discriminator tensor `{name}` is missing"))
                    })
                };
                Ok((get(&w)?, get(&b)?, stride, padding))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    /// Patch scores (N, 1, H/16, W/16) for pixels (N, 3, H, W) in 0..255 (H, W at least 16).
    /// `train_weights`: whether the backward pass reaches the discriminator's own weights
    /// (its update) or only its input (the network's adversarial loss).
    pub fn forward(&self, pixels: &Tensor, train_weights: bool) -> Result<Tensor> {
        let mut x = ((pixels / 127.5)? - 1.0)?;
        let last = self.layers.len() - 1;
        for (index, (w, b, stride, padding)) in self.layers.iter().enumerate() {
            x = ops::conv2d(&x, w, Some(b), *padding, *stride, train_weights)?;
            if index < last {
                // Leaky ReLU from differentiable pieces: max(x, 0) − LEAK · max(−x, 0).
                x = (x.relu()? - (x.neg()?.relu()? * LEAK)?)?;
            }
        }
        Ok(x)
    }

    /// The discriminator's hinge loss on a batch of real crops and (detached) network outputs.
    pub fn hinge_loss(&self, real: &Tensor, fake: &Tensor) -> Result<Tensor> {
        let real_scores = self.forward(real, true)?;
        let fake_scores = self.forward(&fake.detach(), true)?;
        let real_term = real_scores.affine(-1.0, 1.0)?.relu()?.mean_all()?;
        let fake_term = fake_scores.affine(1.0, 1.0)?.relu()?.mean_all()?;
        Ok((real_term + fake_term)?)
    }

    /// The network's adversarial loss, `−mean(D(fake))`; its gradient reaches `fake` only.
    pub fn generator_loss(&self, fake: &Tensor) -> Result<Tensor> {
        Ok(self.forward(fake, false)?.mean_all()?.neg()?)
    }
}
