//! Training data: the photos of `--data`, the style works, and deterministic random crops.
//!
//! Every random choice of iteration `i` comes from a generator seeded with (seed, i, stream,
//! slot) alone, so the batches do not depend on what ran before: a resumed run sees exactly the
//! batches an uninterrupted one would, and no generator state needs saving.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::Receiver;
use image::RgbImage;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::imaging;
use crate::styles::{file_kind, FileKind};

/// Independent random streams drawn for one iteration.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Photos = 1,
    StyleCrops = 2,
}

/// The generator for `slot` (e.g. the image within a batch) of `stream` at `iteration`.
pub(crate) fn rng_for(seed: u64, iteration: u64, stream: Stream, slot: usize) -> StdRng {
    // SplitMix64 finaliser over the combined words: neighbouring iterations get unrelated seeds.
    let mut z = seed
        ^ iteration.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (stream as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
        ^ (slot as u64).wrapping_mul(0x8CB9_2BA7_2F3C_B3A1);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// The image files directly inside `dir`, sorted by name (so the order, and with it every
/// sample, is the same on every machine).
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let read = std::fs::read_dir(dir)
        .map_err(|e| Error::invalid(format!("cannot read the folder {}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = read
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && file_kind(p) == Some(FileKind::Image))
        .collect();
    paths.sort();
    Ok(paths)
}

/// The training photos.
#[derive(Debug, Clone)]
pub struct PhotoSet {
    paths: Vec<PathBuf>,
}

impl PhotoSet {
    /// Lists the photos of `dir`; an empty or missing folder is an error.
    pub fn scan(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::invalid(format!(
                "training photos: {} is not a folder",
                dir.display()
            )));
        }
        let paths = list_images(dir)?;
        if paths.is_empty() {
            return Err(Error::invalid(format!(
                "training photos: {} holds no images (PNG, JPEG, WebP, BMP, TIFF)",
                dir.display()
            )));
        }
        Ok(Self { paths })
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Decodes photo `index`; an unreadable one is replaced by the next readable photo (with a
    /// warning), so one bad file among thousands does not end a long run, and the replacement is
    /// the same on every run.
    fn load_from(&self, index: usize) -> Result<RgbImage> {
        let mut last_error = None;
        for offset in 0..self.paths.len() {
            let path = &self.paths[(index + offset) % self.paths.len()];
            match imaging::load_rgb(path) {
                Ok(image) => return Ok(image),
                Err(e) => {
                    tracing::warn!("skipping a training photo: {e}");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::invalid("no training photos")))
    }

    /// The first `count` readable photos (fixed preview subjects).
    pub fn first_readable(&self, count: usize) -> Result<Vec<RgbImage>> {
        let mut found = Vec::new();
        let mut last_error = None;
        for path in &self.paths {
            if found.len() == count {
                break;
            }
            match imaging::load_rgb(path) {
                Ok(image) => found.push(image),
                Err(e) => last_error = Some(e),
            }
        }
        if found.is_empty() {
            return Err(last_error.unwrap_or_else(|| Error::invalid("no training photos")));
        }
        Ok(found)
    }

    /// The photo batch of `iteration`: `batch` random `size`×`size` crops, as (N, 3, S, S) pixel
    /// values in 0..255, flattened.
    pub fn batch(&self, seed: u64, iteration: u64, batch: usize, size: u32) -> Result<Vec<f32>> {
        let mut pixels = Vec::with_capacity(batch * 3 * (size as usize).pow(2));
        for slot in 0..batch {
            let mut rng = rng_for(seed, iteration, Stream::Photos, slot);
            let index = rng.random_range(0..self.paths.len());
            let photo = self.load_from(index)?;
            let covered = cover(&photo, size);
            append_chw(&random_crop(&covered, size, &mut rng), &mut pixels);
        }
        Ok(pixels)
    }
}

/// Resized (up or down) so that its shorter side is `side`, keeping the aspect ratio.
pub fn cover(image: &RgbImage, side: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let shorter = w.min(h).max(1) as f64;
    let scale = side as f64 / shorter;
    let nw = ((w as f64 * scale).round() as u32).max(side);
    let nh = ((h as f64 * scale).round() as u32).max(side);
    imaging::resize_exact(image, nw, nh)
}

/// A `size`×`size` crop at a random position; the image must be at least that large.
pub fn random_crop(image: &RgbImage, size: u32, rng: &mut StdRng) -> RgbImage {
    let x = rng.random_range(0..=image.width().saturating_sub(size));
    let y = rng.random_range(0..=image.height().saturating_sub(size));
    image::imageops::crop_imm(image, x, y, size, size).to_image()
}

/// Appends the image as planar RGB (C, H, W) floats in 0..255.
fn append_chw(image: &RgbImage, out: &mut Vec<f32>) {
    for channel in 0..3 {
        out.extend(image.pixels().map(|p| f32::from(p.0[channel])));
    }
}

/// Style works prepared for discriminator crops: each at least `size` on its shorter side.
pub struct StyleCrops {
    works: Vec<RgbImage>,
    size: u32,
}

impl StyleCrops {
    /// `works` as seen by the loss (longer side `style_size`), enlarged where needed so a
    /// `size`×`size` crop fits.
    pub fn new(works: &[RgbImage], size: u32) -> Self {
        let works = works
            .iter()
            .map(|w| {
                if w.width().min(w.height()) < size {
                    cover(w, size)
                } else {
                    w.clone()
                }
            })
            .collect();
        Self { works, size }
    }

    /// `batch` random crops of random works for `iteration`, as (N, 3, S, S) floats in 0..255.
    pub fn batch(&self, seed: u64, iteration: u64, batch: usize) -> Vec<f32> {
        let mut pixels = Vec::with_capacity(batch * 3 * (self.size as usize).pow(2));
        if self.works.is_empty() {
            return pixels;
        }
        for slot in 0..batch {
            let mut rng = rng_for(seed, iteration, Stream::StyleCrops, slot);
            let work = &self.works[rng.random_range(0..self.works.len())];
            append_chw(&random_crop(work, self.size, &mut rng), &mut pixels);
        }
        pixels
    }
}

/// Decodes photo batches on a background thread, a few iterations ahead, so JPEG decoding and
/// resizing overlap the network's compute.
pub struct BatchLoader {
    batches: Receiver<(u64, Result<Vec<f32>>)>,
    next: u64,
}

/// Batches prepared ahead of use: enough to hide decoding, few enough to bound memory.
const PREFETCH: usize = 2;

impl BatchLoader {
    /// Starts preparing the batches of `first_iteration`, `first_iteration + 1`, ...
    pub fn start(
        photos: Arc<PhotoSet>,
        seed: u64,
        batch: usize,
        size: u32,
        first_iteration: u64,
    ) -> Result<Self> {
        let (sender, batches) = crossbeam_channel::bounded(PREFETCH);
        std::thread::Builder::new()
            .name("atelier-train-data".into())
            .spawn(move || {
                let mut iteration = first_iteration;
                // Ends when the loader is dropped: the send then fails.
                loop {
                    let result = photos.batch(seed, iteration, batch, size);
                    if sender.send((iteration, result)).is_err() {
                        break;
                    }
                    iteration += 1;
                }
            })
            .map_err(|e| Error::invalid(format!("cannot start the photo loader: {e}")))?;
        Ok(Self {
            batches,
            next: first_iteration,
        })
    }

    /// The iteration whose batch [`Self::next_batch`] returns next.
    pub fn next_iteration(&self) -> u64 {
        self.next
    }

    /// The next batch, waiting for it if the loader is behind.
    pub fn next_batch(&mut self) -> Result<Vec<f32>> {
        let (iteration, batch) = self
            .batches
            .recv()
            .map_err(|_| Error::invalid("the photo loader stopped"))?;
        if iteration != self.next {
            return Err(Error::invalid(format!(
                "the photo loader is out of step (iteration {iteration}, expected {})",
                self.next
            )));
        }
        self.next += 1;
        batch
    }
}

/// The style works named by `--style` (image files, or folders of them), decoded and resized so
/// their longer side is `style_size`, with their paths. A missing or corrupt work is an error:
/// silently training on fewer works would give a different style.
pub fn load_style_works(sources: &[PathBuf], style_size: u32) -> Result<Vec<(PathBuf, RgbImage)>> {
    let mut paths = Vec::new();
    for source in sources {
        if source.is_dir() {
            let found = list_images(source)?;
            if found.is_empty() {
                return Err(Error::image(
                    source,
                    "style folder holds no images (PNG, JPEG, WebP, BMP, TIFF)",
                ));
            }
            paths.extend(found);
        } else {
            paths.push(source.clone());
        }
    }
    if paths.is_empty() {
        return Err(Error::invalid("no style image given"));
    }
    paths
        .into_iter()
        .map(|path| {
            let image = imaging::load_rgb(&path)?;
            Ok((path, imaging::resize_longer_side(&image, style_size)))
        })
        .collect()
}
