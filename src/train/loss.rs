//! The perceptual loss of Johnson et al.: VGG content loss against the photo, Gram-matrix style
//! loss against the style works, and total variation, each normalised as in
//! [`crate::stylize::gatys`] (divided by its target's squared norm) so the weights mean the same
//! there and here.
//!
//! With several works (a collection) the style target of each layer is the mean of their Gram
//! matrices: a fixed target the whole batch is pulled towards, which is the statistics the
//! collection shares. Sampling one work per iteration instead would make the target jump
//! between works and the network would chase whichever it saw last.

use std::sync::Arc;

use candle_core::{Device, Tensor, Var};
use image::RgbImage;

use crate::error::{Error, Result};
use crate::imaging;
use crate::nn::vgg::Vgg;
use crate::stylize::gatys::{gram, squared_norm, total_variation};

/// The weights of the loss terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossWeights {
    pub content: f64,
    pub style: f64,
    pub tv: f64,
}

/// The weighted loss terms of one batch. `content` and `style` are values only; their gradient
/// with respect to the styled images is carried by `vgg_gradient` (see [`PerceptualLoss::terms`]).
pub struct LossTerms {
    pub content: Tensor,
    pub style: Tensor,
    /// Still in the autograd graph of the styled images.
    pub tv: Tensor,
    /// ⟨styled, d(content + style)/d styled⟩ with the gradient held constant: in the graph of
    /// the styled images, its gradient is that of the content and style terms; its value means
    /// nothing.
    vgg_gradient: Tensor,
}

impl LossTerms {
    /// What to differentiate: its gradient with respect to the styled images is the gradient
    /// of content + style + tv.
    pub fn objective(&self) -> Result<Tensor> {
        Ok((&self.vgg_gradient + &self.tv)?)
    }

    /// The value of content + style + tv.
    pub fn total_value(&self) -> Result<f64> {
        let sum = ((&self.content + &self.style)? + self.tv.detach())?;
        Ok(f64::from(sum.to_scalar::<f32>()?))
    }
}

/// Fixed style targets and the loss over (photo batch, stylised batch) pairs.
pub struct PerceptualLoss {
    vgg: Arc<Vgg>,
    content_layer: String,
    /// (layer, mean Gram (1, C, C), layer share / ‖target‖²).
    style_targets: Vec<(String, Tensor, f64)>,
    /// Every layer the stylised batch is needed at; VGG stops at the deepest.
    layers: Vec<String>,
    weights: LossWeights,
}

impl PerceptualLoss {
    /// Computes the style targets of `works` (already at the size the style is seen at).
    pub fn new(
        vgg: Arc<Vgg>,
        works: &[RgbImage],
        content_layer: &str,
        style_layers: &[String],
        weights: LossWeights,
        device: &Device,
    ) -> Result<Self> {
        if works.is_empty() {
            return Err(Error::invalid("at least one style image is needed"));
        }
        for layer in style_layers
            .iter()
            .chain(std::iter::once(&content_layer.to_string()))
        {
            vgg.check_layer(layer)?;
        }
        let mut sums: Vec<Option<Tensor>> = vec![None; style_layers.len()];
        for work in works {
            let features = vgg.features(&imaging::to_tensor(work, device)?, style_layers)?;
            for (sum, layer) in sums.iter_mut().zip(style_layers) {
                let g = gram(
                    features
                        .get(layer)
                        .ok_or_else(|| Error::invalid(format!("missing layer {layer}")))?,
                )?;
                *sum = Some(match sum.take() {
                    Some(acc) => (acc + g)?,
                    None => g,
                });
            }
        }
        let share = 1.0 / style_layers.len() as f64;
        let mut style_targets = Vec::with_capacity(style_layers.len());
        for (sum, layer) in sums.into_iter().zip(style_layers) {
            let sum = sum.ok_or_else(|| Error::invalid(format!("missing layer {layer}")))?;
            let target = (sum / works.len() as f64)?.detach();
            let norm = squared_norm(&target)?.max(1e-12);
            style_targets.push((layer.clone(), target, share / norm));
        }
        let mut layers = style_layers.to_vec();
        if !layers.iter().any(|l| l == content_layer) {
            layers.push(content_layer.to_string());
        }
        Ok(Self {
            vgg,
            content_layer: content_layer.to_string(),
            style_targets,
            layers,
            weights,
        })
    }

    /// The loss terms of `styled` = network(`photos`), both (N, 3, S, S) in 0..255. Gradients
    /// flow to `styled` only.
    pub fn terms(&self, photos: &Tensor, styled: &Tensor) -> Result<LossTerms> {
        let photos = photos.detach();
        let batch = styled.dim(0)?;
        let missing = |l: &str| Error::invalid(format!("missing layer {l}"));
        let target_features = self
            .vgg
            .features(&photos, std::slice::from_ref(&self.content_layer))?;
        let target = target_features
            .get(&self.content_layer)
            .ok_or_else(|| missing(&self.content_layer))?
            .detach();
        // The VGG runs outside autograd (its own backward pass is much cheaper); the loss is
        // built by autograd from the feature maps as leaf variables.
        let tape = self.vgg.forward_tape(styled, &self.layers)?;
        let mut vars = std::collections::HashMap::new();
        let mut features = std::collections::HashMap::new();
        for (name, f) in tape.features() {
            let var = Var::from_tensor(f)?;
            features.insert(name.clone(), var.as_tensor().clone());
            vars.insert(name.clone(), var);
        }

        let f = features
            .get(&self.content_layer)
            .ok_or_else(|| missing(&self.content_layer))?;
        let target_norm = target.sqr()?.sum_all()?.clamp(1e-12f32, f32::MAX)?;
        let content = (f - &target)?.sqr()?.sum_all()?.div(&target_norm)?;

        let mut style: Option<Tensor> = None;
        for (layer, target, scale) in &self.style_targets {
            let f = features.get(layer).ok_or_else(|| missing(layer))?;
            // Mean over the batch of each image's distance to the shared target.
            let term =
                (gram(f)?.broadcast_sub(target)?.sqr()?.sum_all()? * (*scale / batch as f64))?;
            style = Some(match style {
                Some(acc) => (acc + term)?,
                None => term,
            });
        }
        let style = style.ok_or_else(|| Error::invalid("no style layers"))?;

        let photo_tv = total_variation(&photos)?.clamp(1e-6f32, f32::MAX)?;
        let tv = total_variation(styled)?.div(&photo_tv)?;

        let w = self.weights;
        let content = (content * w.content)?;
        let style = (style * w.style)?;
        let grads = (&content + &style)?.backward()?;
        let feature_grads = vars
            .iter()
            .filter_map(|(name, v)| Some((name.clone(), grads.get(v.as_tensor())?.clone())))
            .collect();
        let vgg_gradient = match self.vgg.backward(&tape, &feature_grads)? {
            Some(g) => (styled * g.detach())?.sum_all()?,
            None => styled.zeros_like()?.sum_all()?,
        };
        Ok(LossTerms {
            content: content.detach(),
            style: style.detach(),
            tv: (tv * w.tv)?,
            vgg_gradient,
        })
    }
}
