//! Feed-forward stylisation: one pass of a trained transformer network.

use candle_core::Device;
use image::RgbImage;

use crate::error::{Error, Result};
use crate::imaging;
use crate::nn::transformer::TransformerNet;

/// Largest image the network runs on in one piece; its activations grow with the pixel count
/// (about 0.6 GB per megapixel), so bigger photos are downscaled with a message.
pub const MAX_NETWORK_PIXELS: u64 = 16_000_000;

/// The photo painted by `net`, at the photo's size.
pub fn stylize(net: &TransformerNet, content: &RgbImage, device: &Device) -> Result<RgbImage> {
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
    let y = net.forward(&x)?;
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
