//! Local style: where each style paints. A job's [`Regions`] hold one grey mask per style
//! (white: that style), what no mask covers (the photo, or one style as the default), and a
//! feather radius. [`Regions::weights`] turns them into per-pixel weights at a result's size,
//! which the methods use in their own way (a composite of per-style passes, spatially varying
//! norm parameters, a feature transform per region, masked Gram matrices) and the engine uses
//! last to keep the photo where no style paints.

use std::sync::Arc;

use image::{imageops, GrayImage, ImageBuffer, Luma, RgbImage};

use crate::error::{Error, Result};

/// The widest feather accepted, in pixels of the result.
pub const MAX_FEATHER: f32 = 1000.0;

/// A mask whose pixels all lie at or below this (of 255) covers nothing; at or above
/// `255 - EMPTY_LEVEL` it covers everything. JPEG noise stays within a few levels.
const EMPTY_LEVEL: u8 = 8;

/// Where each style of a job paints.
#[derive(Clone, Debug)]
pub struct Regions {
    /// One mask per style of the job's method, in its order (white: the style paints there,
    /// grey: partly). Any size: each is scaled to the result. `None`: the style paints only where
    /// [`Self::rest`] gives it.
    pub masks: Vec<Option<Arc<GrayImage>>>,
    /// What no mask covers.
    pub rest: Rest,
    /// Feather radius in pixels of the result: each mask's edge fades over about this distance
    /// on either side, so edges do not show.
    pub feather: f32,
    /// The masks' names for notes (file or style names); missing ones are "mask N".
    pub labels: Vec<String>,
}

/// What no mask covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rest {
    /// The photo, unchanged.
    Photo,
    /// The style of this index (the default style).
    Style(usize),
}

/// Per-pixel weights of each style at one size: at each pixel they sum to at most 1, and the
/// photo keeps the rest ([`Self::photo_share`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RegionWeights {
    pub width: u32,
    pub height: u32,
    /// One map per style, row-major, `width * height` values in 0..=1.
    pub maps: Vec<Vec<f32>>,
}

type GreyF32 = ImageBuffer<Luma<f32>, Vec<f32>>;

impl Regions {
    /// One mask for one style; the photo stays where it is black.
    pub fn single(mask: Arc<GrayImage>, feather: f32) -> Self {
        Self {
            masks: vec![Some(mask)],
            rest: Rest::Photo,
            feather,
            labels: Vec::new(),
        }
    }

    /// Checks the regions against a method of `styles` styles.
    pub fn check(&self, styles: usize) -> Result<()> {
        if self.masks.len() != styles {
            return Err(Error::invalid(format!(
                "{} masks for {styles} styles: give one per style (none for the default style)",
                self.masks.len()
            )));
        }
        if let Rest::Style(index) = self.rest {
            if index >= styles {
                return Err(Error::invalid(format!(
                    "the default style is style {}, but there are {styles}",
                    index + 1
                )));
            }
        }
        if self.rest == Rest::Photo && self.masks.iter().all(Option::is_none) {
            return Err(Error::invalid(
                "regions without a single mask: give a mask, or no regions at all",
            ));
        }
        if !(0.0..=MAX_FEATHER).contains(&self.feather) {
            return Err(Error::invalid(format!(
                "the feather must be between 0 and {MAX_FEATHER} pixels, got {}",
                self.feather
            )));
        }
        for mask in self.masks.iter().flatten() {
            if mask.width() == 0 || mask.height() == 0 {
                return Err(Error::invalid("a mask has zero width or height"));
            }
        }
        Ok(())
    }

    fn label(&self, index: usize) -> String {
        self.labels
            .get(index)
            .filter(|l| !l.is_empty())
            .cloned()
            .unwrap_or_else(|| format!("mask {}", index + 1))
    }

    /// What the user should know about the masks on a `width`×`height` result: masks of
    /// another shape (stretched to fit), masks that cover nothing or everything.
    pub fn notes(&self, width: u32, height: u32) -> Vec<String> {
        let mut notes = Vec::new();
        let aspect = f64::from(width) / f64::from(height.max(1));
        for (index, mask) in self.masks.iter().enumerate() {
            let Some(mask) = mask else { continue };
            let label = self.label(index);
            let mask_aspect = f64::from(mask.width()) / f64::from(mask.height().max(1));
            if (mask_aspect / aspect - 1.0).abs() > 0.02 {
                notes.push(format!(
                    "{label} is {}x{}, another shape than the {width}x{height} result: \
                     stretched to fit",
                    mask.width(),
                    mask.height()
                ));
            }
            let (low, high) = mask.pixels().fold((u8::MAX, u8::MIN), |(lo, hi), p| {
                (lo.min(p.0[0]), hi.max(p.0[0]))
            });
            if high <= EMPTY_LEVEL {
                notes.push(format!(
                    "{label} is empty (all black): its style paints nowhere"
                ));
            } else if low >= u8::MAX - EMPTY_LEVEL {
                notes.push(format!(
                    "{label} is all white: its style covers the whole photo"
                ));
            }
        }
        notes
    }

    /// The styles' weights at `width`×`height`: each mask scaled to that size, what no mask
    /// covers given to the default style (if any), every map feathered, and overlaps shared out
    /// so the weights at a pixel never sum above 1.
    pub fn weights(&self, width: u32, height: u32) -> RegionWeights {
        let pixels = width as usize * height as usize;
        let mut maps: Vec<Vec<f32>> = self
            .masks
            .iter()
            .map(|mask| match mask {
                Some(mask) => scaled(mask, width, height),
                None => vec![0.0; pixels],
            })
            .collect();
        if let Rest::Style(index) = self.rest {
            for p in 0..pixels {
                let covered: f32 = maps.iter().map(|m| m[p]).sum();
                maps[index][p] += (1.0 - covered).max(0.0);
            }
        }
        // Blur is linear, so feathering each map keeps their sum 1 wherever it was 1.
        let radius = box_radius(self.feather);
        for map in &mut maps {
            feather(map, width as usize, height as usize, radius);
        }
        for p in 0..pixels {
            let sum: f32 = maps.iter().map(|m| m[p]).sum();
            if sum > 1.0 {
                for map in &mut maps {
                    map[p] /= sum;
                }
            }
        }
        RegionWeights {
            width,
            height,
            maps,
        }
    }
}

/// `mask` scaled to `width`×`height` (bilinear), as 0..=1.
fn scaled(mask: &GrayImage, width: u32, height: u32) -> Vec<f32> {
    let unit: GreyF32 = ImageBuffer::from_fn(mask.width(), mask.height(), |x, y| {
        Luma([f32::from(mask.get_pixel(x, y).0[0]) / 255.0])
    });
    if unit.dimensions() == (width, height) {
        return unit.into_raw();
    }
    let resized = imageops::resize(&unit, width, height, imageops::FilterType::Triangle);
    resized
        .into_raw()
        .into_iter()
        .map(|v| v.clamp(0.0, 1.0))
        .collect()
}

/// Radius of each of the three box blurs that make a feather of `feather` pixels: three boxes of
/// radius r approximate a Gaussian and reach exactly 3r, so nothing changes beyond the feather.
fn box_radius(feather: f32) -> usize {
    (feather / 3.0).round() as usize
}

/// Three box blurs of `radius` over `map` (`width`×`height`), each a horizontal then a
/// vertical pass with the edge pixels repeated.
fn feather(map: &mut [f32], width: usize, height: usize, radius: usize) {
    if radius == 0 || map.is_empty() {
        return;
    }
    let mut line = Vec::new();
    for _ in 0..3 {
        for y in 0..height {
            line.clear();
            line.extend_from_slice(&map[y * width..(y + 1) * width]);
            box_blur_line(&line, radius, |x, v| map[y * width + x] = v);
        }
        for x in 0..width {
            line.clear();
            line.extend((0..height).map(|y| map[y * width + x]));
            box_blur_line(&line, radius, |y, v| map[y * width + x] = v);
        }
    }
}

/// The running mean of `line` over `2 * radius + 1` values, the ends repeated, given to `out`.
fn box_blur_line(line: &[f32], radius: usize, mut out: impl FnMut(usize, f32)) {
    let n = line.len() as isize;
    let r = radius as isize;
    let at = |i: isize| line[i.clamp(0, n - 1) as usize] as f64;
    let mut sum: f64 = (-r..=r).map(at).sum();
    let count = (2 * r + 1) as f64;
    for i in 0..n {
        out(i as usize, (sum / count) as f32);
        sum += at(i + r + 1) - at(i - r);
    }
}

impl RegionWeights {
    /// How much of each pixel the photo keeps: 1 minus the styles' weights.
    pub fn photo_share(&self) -> Vec<f32> {
        let pixels = self.width as usize * self.height as usize;
        (0..pixels)
            .map(|p| (1.0 - self.maps.iter().map(|m| m[p]).sum::<f32>()).max(0.0))
            .collect()
    }

    /// Each style's share of the styles at every pixel (summing to 1 among them): what a
    /// one-pass method paints before the photo's share is put back. Where no style paints the
    /// styles share evenly (the photo covers those pixels anyway).
    pub fn style_shares(&self) -> Vec<Vec<f32>> {
        let pixels = self.width as usize * self.height as usize;
        let even = 1.0 / self.maps.len().max(1) as f32;
        let mut shares = self.maps.clone();
        for p in 0..pixels {
            let sum: f32 = self.maps.iter().map(|m| m[p]).sum();
            for share in &mut shares {
                share[p] = if sum > 1e-6 { share[p] / sum } else { even };
            }
        }
        shares
    }

    /// The weights at another size (area-weighted when smaller): for feature maps and the
    /// scales of a coarse-to-fine optimisation.
    pub fn resized(&self, width: u32, height: u32) -> RegionWeights {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let maps = self
            .maps
            .iter()
            .map(|map| {
                let image: GreyF32 = ImageBuffer::from_raw(self.width, self.height, map.clone())
                    .unwrap_or_else(|| ImageBuffer::new(self.width, self.height));
                imageops::resize(&image, width, height, imageops::FilterType::Triangle)
                    .into_raw()
                    .into_iter()
                    .map(|v| v.clamp(0.0, 1.0))
                    .collect()
            })
            .collect();
        RegionWeights {
            width,
            height,
            maps,
        }
    }

    /// Whether every style paints everywhere in full (a single all-white mask): the result is
    /// then the plain stylisation.
    pub fn covers_all(&self) -> bool {
        self.photo_share().iter().all(|&p| p <= 1e-6)
    }

    /// The photo where no style paints and each style's image where it does:
    /// `photo·(1 − Σw) + Σ wᵢ·styledᵢ`. `styled` holds one image per style, or one image for
    /// all of them (a one-pass method that painted every region itself).
    pub fn composite(&self, photo: &RgbImage, styled: &[&RgbImage]) -> Result<RgbImage> {
        let size = (self.width, self.height);
        if photo.dimensions() != size || styled.iter().any(|s| s.dimensions() != size) {
            return Err(Error::invalid(format!(
                "region composite of {}x{} weights over images of other sizes",
                self.width, self.height
            )));
        }
        if styled.len() != 1 && styled.len() != self.maps.len() {
            return Err(Error::invalid(format!(
                "region composite of {} styles from {} images",
                self.maps.len(),
                styled.len()
            )));
        }
        let mut out = photo.clone();
        let photo_raw = photo.as_raw();
        let raws: Vec<&[u8]> = styled.iter().map(|s| s.as_raw().as_slice()).collect();
        for (p, pixel) in out.as_mut().chunks_exact_mut(3).enumerate() {
            let weights = self.maps.iter().map(|m| m[p]);
            let total: f32 = self.maps.iter().map(|m| m[p]).sum();
            if total <= 0.0 {
                continue;
            }
            for (c, value) in pixel.iter_mut().enumerate() {
                let i = 3 * p + c;
                let styled_part: f32 = if raws.len() == 1 {
                    total * f32::from(raws[0][i])
                } else {
                    weights
                        .clone()
                        .zip(&raws)
                        .map(|(w, r)| w * f32::from(r[i]))
                        .sum()
                };
                let v = (1.0 - total) * f32::from(photo_raw[i]) + styled_part;
                *value = v.round().clamp(0.0, 255.0) as u8;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half_mask(width: u32, height: u32) -> Arc<GrayImage> {
        Arc::new(GrayImage::from_fn(width, height, |x, _| {
            Luma([if x < width / 2 { 255 } else { 0 }])
        }))
    }

    #[test]
    fn feather_stays_within_its_radius() {
        let regions = Regions::single(half_mask(100, 10), 12.0);
        let weights = regions.weights(100, 10);
        let row = &weights.maps[0][..100];
        assert!(row[..50 - 12].iter().all(|&w| (w - 1.0).abs() < 1e-6));
        assert!(row[50 + 12..].iter().all(|&w| w.abs() < 1e-6));
        assert!(row[49] > 0.3 && row[49] < 0.7, "edge {}", row[49]);
        assert!(row.windows(2).all(|w| w[0] >= w[1] - 1e-6), "monotone");
    }

    #[test]
    fn the_default_style_takes_what_no_mask_covers() {
        let regions = Regions {
            masks: vec![Some(half_mask(40, 20)), None],
            rest: Rest::Style(1),
            feather: 6.0,
            labels: vec![],
        };
        regions.check(2).expect("valid");
        let weights = regions.weights(80, 40);
        for (p, share) in weights.photo_share().iter().enumerate() {
            assert!(share.abs() < 1e-5, "pixel {p} keeps {share} of the photo");
        }
        assert!(weights.maps[1][79] > 0.999 && weights.maps[0][0] > 0.999);
    }

    #[test]
    fn overlaps_never_sum_above_one() {
        let white = Arc::new(GrayImage::from_pixel(8, 8, Luma([255])));
        let regions = Regions {
            masks: vec![Some(white.clone()), Some(white)],
            rest: Rest::Photo,
            feather: 0.0,
            labels: vec![],
        };
        let weights = regions.weights(8, 8);
        assert!(weights
            .maps
            .iter()
            .all(|m| m.iter().all(|&w| (w - 0.5).abs() < 1e-6)));
        assert!(weights.covers_all());
    }

    #[test]
    fn composite_keeps_the_photo_exactly_where_nothing_paints() {
        let regions = Regions::single(half_mask(16, 4), 0.0);
        let weights = regions.weights(16, 4);
        let photo = RgbImage::from_pixel(16, 4, image::Rgb([10, 20, 30]));
        let styled = RgbImage::from_pixel(16, 4, image::Rgb([200, 100, 0]));
        let out = weights.composite(&photo, &[&styled]).expect("composite");
        assert_eq!(out.get_pixel(0, 0).0, [200, 100, 0]);
        assert_eq!(out.get_pixel(15, 3).0, [10, 20, 30]);
    }

    #[test]
    fn notes_name_stretched_empty_and_full_masks() {
        let regions = Regions {
            masks: vec![
                Some(Arc::new(GrayImage::new(10, 10))),
                Some(Arc::new(GrayImage::from_pixel(20, 10, Luma([255])))),
            ],
            rest: Rest::Photo,
            feather: 0.0,
            labels: vec!["sky.png".into()],
        };
        let notes = regions.notes(200, 100);
        assert!(notes
            .iter()
            .any(|n| n.contains("sky.png") && n.contains("stretched")));
        assert!(notes
            .iter()
            .any(|n| n.contains("sky.png") && n.contains("empty")));
        assert!(notes
            .iter()
            .any(|n| n.contains("mask 2") && n.contains("all white")));
    }

    #[test]
    fn weights_shrink_for_feature_maps() {
        let weights = Regions::single(half_mask(64, 32), 0.0).weights(64, 32);
        let small = weights.resized(8, 4);
        assert_eq!(small.maps[0].len(), 32);
        assert!(small.maps[0][0] > 0.99 && small.maps[0][7] < 0.01);
    }

    #[test]
    fn checks_refuse_what_cannot_work() {
        let mask = half_mask(4, 4);
        assert!(Regions::single(mask.clone(), 0.0).check(2).is_err());
        assert!(Regions::single(mask.clone(), -1.0).check(1).is_err());
        let none = Regions {
            masks: vec![None],
            rest: Rest::Photo,
            feather: 0.0,
            labels: vec![],
        };
        assert!(none.check(1).is_err());
        let bad_default = Regions {
            masks: vec![Some(mask)],
            rest: Rest::Style(3),
            feather: 0.0,
            labels: vec![],
        };
        assert!(bad_default.check(1).is_err());
    }
}
