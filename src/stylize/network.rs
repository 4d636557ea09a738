//! Feed-forward stylisation: one pass of a trained transformer network.

use std::path::Path;

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::error::{Error, Result};
use crate::imaging;
use crate::nn::transformer::TransformerNet;

/// Largest image the network runs on in one piece; its activations grow with the pixel count
/// (about 0.6 GB per megapixel), so bigger photos are downscaled with a message.
pub const MAX_NETWORK_PIXELS: u64 = 16_000_000;

/// The photo painted by `net`, at the photo's size.
pub fn stylize(net: &TransformerNet, content: &RgbImage, device: &Device) -> Result<RgbImage> {
    stylize_mixed(net, content, device, None)
}

/// The weights of a conditional network's style mix, checked against `net` (one weight per
/// style, none negative, not all zero) and normalised to sum to 1, so the norms' scales stay
/// those the network learnt. `model` names the network in errors.
pub fn style_mix(net: &TransformerNet, weights: &[f64], model: &Path) -> Result<Vec<f32>> {
    let styles = net.styles();
    if styles < 2 {
        return Err(Error::invalid(format!(
            "{} holds one style; a style mix needs a conditional network (atelier train \
             --conditional)",
            model.display()
        )));
    }
    if weights.len() != styles {
        return Err(Error::invalid(format!(
            "the style mix has {} weights; {} holds {styles} styles",
            weights.len(),
            model.display()
        )));
    }
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(Error::invalid(
            "style mix weights must be non-negative numbers",
        ));
    }
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return Err(Error::invalid(
            "a style mix needs at least one positive weight",
        ));
    }
    Ok(weights.iter().map(|w| (w / total) as f32).collect())
}

/// [`stylize`] with a conditional network's style mix (from [`style_mix`]); `None` paints the
/// even blend of its styles (or a one-style network's only style).
pub fn stylize_mixed(
    net: &TransformerNet,
    content: &RgbImage,
    device: &Device,
    mix: Option<&[f32]>,
) -> Result<RgbImage> {
    let pixels = u64::from(content.width()) * u64::from(content.height());
    if pixels > MAX_NETWORK_PIXELS {
        return Err(Error::invalid(format!(
            "image is {}x{}; the network runs on at most {} megapixels at once (choose a smaller --size)",
            content.width(),
            content.height(),
            MAX_NETWORK_PIXELS / 1_000_000
        )));
    }
    let x = imaging::to_tensor(content, device)?;
    let mix = mix
        .map(|m| Tensor::from_slice(m, m.len(), device))
        .transpose()?;
    let y = net.forward_mixed(&x, mix.as_ref())?;
    imaging::from_tensor(&y)
}

/// The longer side to run the network at: the requested one, or the photo's own, capped so that
/// the pixel count stays under [`MAX_NETWORK_PIXELS`].
pub fn network_side(width: u32, height: u32, requested: Option<u32>) -> u32 {
    side_within(width, height, requested, MAX_NETWORK_PIXELS)
}

/// The longer side to run at: the requested one or the photo's own, capped so that the pixel
/// count stays under `max_pixels`.
pub fn side_within(width: u32, height: u32, requested: Option<u32>, max_pixels: u64) -> u32 {
    let own = width.max(height);
    let side = requested.unwrap_or(own);
    let (w, h) = imaging::fit_size(width, height, side);
    let pixels = u64::from(w) * u64::from(h);
    if pixels <= max_pixels {
        return side;
    }
    let shrink = (max_pixels as f64 / pixels as f64).sqrt();
    ((side as f64) * shrink).floor() as u32
}
