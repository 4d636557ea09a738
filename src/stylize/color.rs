//! Colour preservation by luminance-only transfer (Gatys et al. 2016, "Preserving color in
//! neural artistic style transfer"): stylise the luminance, keep the photo's chrominance.

use image::{Rgb, RgbImage};

fn luma(p: &Rgb<u8>) -> f32 {
    0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
}

/// YIQ chrominance (I, Q) of a pixel.
fn chroma(p: &Rgb<u8>) -> (f32, f32) {
    let (r, g, b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
    (
        0.596 * r - 0.274 * g - 0.322 * b,
        0.211 * r - 0.523 * g + 0.312 * b,
    )
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

fn grey(v: f32) -> Rgb<u8> {
    let g = to_u8(v);
    Rgb([g, g, g])
}

/// The image's luminance as a grey RGB image.
pub fn luminance(image: &RgbImage) -> RgbImage {
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        grey(luma(image.get_pixel(x, y)))
    })
}

fn mean_std(values: impl Iterator<Item = f32> + Clone) -> (f32, f32) {
    let n = values.clone().count().max(1) as f32;
    let mean = values.clone().sum::<f32>() / n;
    let var = values.map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, var.sqrt())
}

/// The style's luminance, shifted and scaled to the photo's luminance mean and spread, so the
/// stylised luminance stays in the photo's tonal range.
pub fn matched_luminance(style: &RgbImage, content: &RgbImage) -> RgbImage {
    let (sm, ss) = mean_std(style.pixels().map(luma));
    let (cm, cs) = mean_std(content.pixels().map(luma));
    let gain = if ss > 1e-3 { cs / ss } else { 1.0 };
    RgbImage::from_fn(style.width(), style.height(), |x, y| {
        grey((luma(style.get_pixel(x, y)) - sm) * gain + cm)
    })
}

/// Luminance of `styled` combined with the chrominance of `colors` (same size).
pub fn recombine(styled: &RgbImage, colors: &RgbImage) -> RgbImage {
    RgbImage::from_fn(styled.width(), styled.height(), |x, y| {
        let yl = luma(styled.get_pixel(x, y));
        let (i, q) = chroma(colors.get_pixel(x, y));
        Rgb([
            to_u8(yl + 0.956 * i + 0.621 * q),
            to_u8(yl - 0.272 * i - 0.647 * q),
            to_u8(yl - 1.106 * i + 1.703 * q),
        ])
    })
}

/// Colour preservation after the fact, for a result made without it (a trained network): the
/// result's luminance, shifted and scaled to the photo's tonal range as the optimisation does
/// with the style image, under the photo's chrominance. Without the matching, a dark or
/// high-contrast result clips the photo's colours away.
pub fn keep_photo_colors(styled: &RgbImage, photo: &RgbImage) -> RgbImage {
    recombine(&matched_luminance(styled, photo), photo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recombine_with_own_luminance_is_identity() {
        let img = RgbImage::from_fn(8, 8, |x, y| Rgb([x as u8 * 30, y as u8 * 30, 90]));
        let out = recombine(&luminance(&img), &img);
        for (a, b) in out.pixels().zip(img.pixels()) {
            for c in 0..3 {
                assert!(
                    (i32::from(a[c]) - i32::from(b[c])).abs() <= 2,
                    "{a:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn matched_luminance_takes_content_statistics() {
        let style = RgbImage::from_fn(4, 4, |x, _| grey(x as f32 * 20.0));
        let content = RgbImage::from_fn(4, 4, |x, _| grey(100.0 + x as f32 * 40.0));
        let m = matched_luminance(&style, &content);
        let (mm, ms) = mean_std(m.pixels().map(luma));
        let (cm, cs) = mean_std(content.pixels().map(luma));
        assert!((mm - cm).abs() < 1.0 && (ms - cs).abs() < 1.0);
    }
}
