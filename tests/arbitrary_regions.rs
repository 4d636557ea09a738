//! Regions for the arbitrary method, done in feature space: each style's transform runs with the
//! photo's statistics within its region, and the transforms mix by the styles' shares before the
//! decoder. Small images with the bundled VGG16 and decoders; the paintings come from
//! `../shared/data/styles` when it is there (synthetic ones otherwise).

use std::sync::Arc;
use std::time::Instant;

use atelier::bench::mean_abs_diff;
use atelier::nn::decoder::{self, Decoders};
use atelier::nn::layers::pad_end_to;
use atelier::nn::vgg::Vgg;
use atelier::stylize::arbitrary::{
    self, adain, adain_with, feature_stats, region_weights_at, wct, wct_with, ArbitraryConfig,
    FeatureStats, FeatureTransform, StyleStats,
};
use atelier::stylize::regions::{RegionWeights, Regions, Rest};
use candle_core::{DType, Device, Tensor};
use image::{GrayImage, Luma, Rgb, RgbImage};

type TestResult = anyhow::Result<()>;

const FEATHER: f32 = 8.0;

fn models() -> anyhow::Result<(Vgg, Decoders)> {
    Ok((Vgg::bundled(&Device::Cpu)?, decoder::bundled(&Device::Cpu)?))
}

/// Smooth gradients with a texture on top, different on the left and the right.
fn textured_photo(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let noise = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663)) % 61;
        let wave = ((x as f32 / 9.0).sin() * (y as f32 / 13.0).cos() * 40.0) as i32;
        let base = [x * 200 / w, y * 200 / h, (x + y) * 100 / (w + h)];
        let px = |b: u32| (b as i32 + wave + noise as i32).clamp(0, 255) as u8;
        Rgb([px(base[0]), px(base[1]), px(base[2] + 60)])
    })
}

fn shared(path: &str) -> Option<RgbImage> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(path);
    image::open(&path).ok().map(|i| i.to_rgb8())
}

/// A photo of `w`×`h`: Tübingen when the shared data is there, else a synthetic one.
fn photo(w: u32, h: u32) -> RgbImage {
    match shared("content/tubingen.jpg") {
        Some(p) => image::imageops::resize(&p, w, h, image::imageops::FilterType::Triangle),
        None => textured_photo(w, h),
    }
}

/// Two paintings of clearly different colour and texture: Candy and the Starry Night, or
/// synthetic warm stripes and cool checks.
fn paintings() -> (RgbImage, RgbImage, &'static str) {
    let side = |i: RgbImage| atelier::imaging::resize_longer_side(&i, 256);
    match (
        shared("styles/candy.jpg"),
        shared("styles/starry-night.jpg"),
    ) {
        (Some(a), Some(b)) => (side(a), side(b), "candy / starry-night"),
        _ => (
            RgbImage::from_fn(192, 192, |x, y| {
                let s = ((x + y / 3) / 6) % 2 == 0;
                if s {
                    Rgb([230, 60, 40])
                } else {
                    Rgb([250, 200, 60])
                }
            }),
            RgbImage::from_fn(192, 192, |x, y| {
                let s = (x / 12 + y / 12) % 2 == 0;
                if s {
                    Rgb([20, 40, 150])
                } else {
                    Rgb([90, 170, 210])
                }
            }),
            "synthetic",
        ),
    }
}

fn stats_of(vgg: &Vgg, painting: &RgbImage) -> anyhow::Result<StyleStats> {
    let side = painting.width().max(painting.height());
    Ok(arbitrary::style_stats(
        vgg,
        std::slice::from_ref(painting),
        side,
        &Device::Cpu,
    )?)
}

fn left_mask(w: u32, h: u32) -> Arc<GrayImage> {
    Arc::new(GrayImage::from_fn(w, h, |x, _| {
        Luma([if x < w / 2 { 255 } else { 0 }])
    }))
}

fn crop(image: &RgbImage, x: u32, width: u32) -> RgbImage {
    image::imageops::crop_imm(image, x, 0, width, image.height()).to_image()
}

fn mean_color(image: &RgbImage) -> [f64; 3] {
    let mut sum = [0.0; 3];
    for p in image.pixels() {
        for (total, &value) in sum.iter_mut().zip(&p.0) {
            *total += f64::from(value);
        }
    }
    let n = f64::from(image.width() * image.height());
    sum.map(|s| s / n)
}

fn color_distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// Distance of two feature statistics: the means' and the covariances' (Gram) Euclidean
/// distances, each relative to `reference`'s size.
fn stats_distance(a: &FeatureStats, b: &FeatureStats, reference: &FeatureStats) -> f64 {
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let diff = |x: &[f64], y: &[f64]| -> f64 {
        x.iter()
            .zip(y)
            .map(|(p, q)| (p - q) * (p - q))
            .sum::<f64>()
            .sqrt()
    };
    diff(&a.mean, &b.mean) / norm(&reference.mean).max(1e-9)
        + diff(&a.covariance, &b.covariance) / norm(&reference.covariance).max(1e-9)
}

/// How far apart two images' styles are at `layers`: 1 − the cosine similarity of their Gram
/// matrices (E[x·xᵀ] = Σ + μ·μᵀ, Gatys et al.'s style statistics), summed over the layers. The
/// cosine ignores the features' overall scale, which a decoder does not keep exactly.
fn gram_distance(a: &StyleStats, b: &StyleStats, layers: &[&str]) -> f64 {
    let gram = |s: &FeatureStats| -> Vec<f64> {
        let c = s.channels;
        (0..c * c)
            .map(|k| s.covariance[k] + s.mean[k / c] * s.mean[k % c])
            .collect()
    };
    layers
        .iter()
        .map(|layer| {
            let (ga, gb) = (gram(&a[*layer]), gram(&b[*layer]));
            let dot: f64 = ga.iter().zip(&gb).map(|(x, y)| x * y).sum();
            let norm = |g: &[f64]| g.iter().map(|x| x * x).sum::<f64>().sqrt();
            1.0 - dot / (norm(&ga) * norm(&gb)).max(1e-12)
        })
        .sum()
}

fn max_abs(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn max_pixel_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(p, q)| p.abs_diff(*q))
        .max()
        .unwrap_or(0)
}

fn encode(vgg: &Vgg, image: &RgbImage, layer: &str) -> anyhow::Result<Tensor> {
    let multiple = 1usize << decoder::layer_pools(layer)?;
    let x = atelier::imaging::to_tensor(image, &Device::Cpu)?;
    let (h, w) = (image.height() as usize, image.width() as usize);
    let x = pad_end_to(&x, 2, h.div_ceil(multiple) * multiple)?;
    let x = pad_end_to(&x, 3, w.div_ceil(multiple) * multiple)?;
    let mut f = vgg.features(&x, &[layer.to_string()])?;
    f.remove(layer)
        .ok_or_else(|| anyhow::anyhow!("no features at {layer}"))
}

/// AdaIN as it was before regions: per-pixel centring and scaling with the features' own
/// tensor mean and deviation.
fn adain_before_regions(features: &Tensor, style: &FeatureStats) -> anyhow::Result<Tensor> {
    let (_, c, h, w) = features.dims4()?;
    let x = features.reshape((c, h * w))?;
    let mean = x.mean_keepdim(1)?;
    let centered = x.broadcast_sub(&mean)?;
    let std = (centered.sqr()?.mean_keepdim(1)? + 1e-5)?.sqrt()?;
    let style_std: Vec<f32> = (0..c)
        .map(|i| style.covariance[i * c + i].max(0.0).sqrt() as f32)
        .collect();
    let style_mean: Vec<f32> = style.mean.iter().map(|&m| m as f32).collect();
    let style_std = Tensor::from_vec(style_std, (c, 1), &Device::Cpu)?;
    let style_mean = Tensor::from_vec(style_mean, (c, 1), &Device::Cpu)?;
    let y = centered
        .broadcast_div(&std)?
        .broadcast_mul(&style_std)?
        .broadcast_add(&style_mean)?;
    Ok(y.reshape((1, c, h, w))?)
}

/// What `stylize_in_regions` did before: the whole method once per style, the images
/// composited by the styles' shares.
fn per_style_passes(
    models: &(Vgg, Decoders),
    content: &RgbImage,
    styles: &[&StyleStats],
    weights: &RegionWeights,
    config: ArbitraryConfig,
) -> anyhow::Result<RgbImage> {
    let mut painted = Vec::new();
    for style in styles {
        painted.push(arbitrary::stylize(
            &models.0,
            &models.1,
            content,
            style,
            config,
            &Device::Cpu,
            |_, _| Ok(()),
        )?);
    }
    let shares = RegionWeights {
        maps: weights.style_shares(),
        ..weights.clone()
    };
    let refs: Vec<&RgbImage> = painted.iter().collect();
    Ok(shares.composite(content, &refs)?)
}

fn in_regions(
    models: &(Vgg, Decoders),
    content: &RgbImage,
    styles: &[&StyleStats],
    weights: &RegionWeights,
    config: ArbitraryConfig,
) -> anyhow::Result<RgbImage> {
    Ok(arbitrary::stylize_in_regions(
        &models.0,
        &models.1,
        content,
        styles,
        weights,
        config,
        &Device::Cpu,
        |_, _| Ok(()),
    )?)
}

fn config(transform: FeatureTransform) -> ArbitraryConfig {
    ArbitraryConfig {
        transform,
        strength: 1.0,
    }
}

#[test]
fn weighted_statistics_with_all_ones_are_the_plain_ones() -> TestResult {
    let started = Instant::now();
    let models = models()?;
    let (painting, _, _) = paintings();
    let style = stats_of(&models.0, &painting)?;
    let content = photo(100, 76);
    for (layer, transform) in [
        ("relu4_1", FeatureTransform::Adain),
        ("relu4_1", FeatureTransform::Wct),
        ("relu2_1", FeatureTransform::Wct),
    ] {
        let features = encode(&models.0, &content, layer)?;
        let (_, _, h, w) = features.dims4()?;
        let ones = Tensor::ones((h, w), DType::F32, &Device::Cpu)?;
        let plain = feature_stats(&features, None, transform)?;
        let weighted = feature_stats(&features, Some(&ones), transform)?;
        assert_eq!(plain, weighted, "{layer} {transform:?}");
        let s = &style[layer];
        let (reference, with_ones) = match transform {
            FeatureTransform::Adain => (
                adain_before_regions(&features, s)?,
                adain_with(&features, &weighted, s)?,
            ),
            FeatureTransform::Wct => (wct(&features, s)?, wct_with(&features, &weighted, s)?),
        };
        let scale = reference.abs()?.max_keepdim(1)?.flatten_all()?.max(0)?;
        let gap = max_abs(&reference, &with_ones)? / scale.to_scalar::<f32>()?.max(1.0);
        eprintln!("{layer} {transform:?}: all-ones weights vs plain, max rel. diff {gap:.2e}");
        assert!(gap < 1e-4, "{layer} {transform:?}: {gap}");
        if transform == FeatureTransform::Adain {
            // The refactored AdaIN (through the shared scale and shift) is the old one.
            let now = adain(&features, s)?;
            assert!(max_abs(&now, &reference)? / scale.to_scalar::<f32>()?.max(1.0) < 1e-4);
        }
    }

    // End to end: one all-white region is the plain stylisation.
    let all = Regions::single(Arc::new(GrayImage::from_pixel(4, 4, Luma([255]))), 0.0)
        .weights(content.width(), content.height());
    for transform in [FeatureTransform::Adain, FeatureTransform::Wct] {
        let plain = arbitrary::stylize(
            &models.0,
            &models.1,
            &content,
            &style,
            config(transform),
            &Device::Cpu,
            |_, _| Ok(()),
        )?;
        let regional = in_regions(&models, &content, &[&style], &all, config(transform))?;
        let gap = max_pixel_diff(&plain, &regional);
        eprintln!("{transform:?}: one all-white region vs plain, max {gap} levels");
        assert!(gap <= 1, "{transform:?}: {gap}");
    }
    eprintln!("all-ones test: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn one_style_in_the_left_half() -> TestResult {
    let started = Instant::now();
    let models = models()?;
    let (painting, _, _) = paintings();
    let style = stats_of(&models.0, &painting)?;
    // Sides off the pools' multiple, so the maps need the features' padding.
    let (w, h) = (150u32, 106u32);
    let content = photo(w, h);
    let weights = Regions::single(left_mask(w, h), FEATHER).weights(w, h);
    let edge = w / 2 + FEATHER as u32;

    // AdaIN: the result is exactly the plain transform with the left region's statistics.
    let adain_config = ArbitraryConfig {
        transform: FeatureTransform::Adain,
        strength: 0.9,
    };
    let mut progress = Vec::new();
    let result = arbitrary::stylize_in_regions(
        &models.0,
        &models.1,
        &content,
        &[&style],
        &weights,
        adain_config,
        &Device::Cpu,
        |done, total| {
            progress.push((done, total));
            Ok(())
        },
    )?;
    assert_eq!(progress, [(1, 1)]);
    let features = encode(&models.0, &content, "relu4_1")?;
    let (_, _, fh, fw) = features.dims4()?;
    let level = region_weights_at(&weights, "relu4_1")?;
    assert_eq!((level.width as usize, level.height as usize), (fw, fh));
    let map = Tensor::from_vec(level.maps[0].clone(), (fh, fw), &Device::Cpu)?;
    let region = feature_stats(&features, Some(&map), FeatureTransform::Adain)?;
    let whole = feature_stats(&features, None, FeatureTransform::Adain)?;
    // The right half's statistics are not the left's: the region's differ from the photo's.
    let right_map = map.affine(-1.0, 1.0)?;
    let right = feature_stats(&features, Some(&right_map), FeatureTransform::Adain)?;
    let left_vs_right = stats_distance(&region, &right, &whole);
    let left_vs_whole = stats_distance(&region, &whole, &whole);
    eprintln!(
        "relu4_1 statistics: left region vs right {left_vs_right:.3}, vs whole photo \
         {left_vs_whole:.3} (relative)"
    );
    assert!(left_vs_right > 0.1 && left_vs_whole > 0.03);
    let transformed = adain_with(&features, &region, &style["relu4_1"])?;
    let mixed = ((transformed * 0.9)? + (&features * 0.1)?)?;
    let decoded = models.1.get("relu4_1")?.forward(&mixed)?;
    let expected = atelier::imaging::from_tensor(
        &decoded
            .narrow(2, 0, h as usize)?
            .narrow(3, 0, w as usize)?
            .clamp(0f32, 255f32)?,
    )?;
    let gap = max_pixel_diff(&expected, &result);
    eprintln!("AdaIN left half: vs the plain transform with the region's statistics, max {gap}");
    assert!(gap <= 1, "{gap} levels from the region's own transform");

    for transform in [FeatureTransform::Adain, FeatureTransform::Wct] {
        let result = in_regions(&models, &content, &[&style], &weights, config(transform))?;
        let plain = arbitrary::stylize(
            &models.0,
            &models.1,
            &content,
            &style,
            config(transform),
            &Device::Cpu,
            |_, _| Ok(()),
        )?;
        // The left half is painted: far from the photo, near the whole-photo stylisation (which
        // differs only by the statistics it was normalised with).
        let inner = w / 2 - FEATHER as u32 - 16;
        let left = crop(&result, 0, inner);
        let to_photo = mean_abs_diff(&left, &crop(&content, 0, inner));
        let to_plain = mean_abs_diff(&left, &crop(&plain, 0, inner));
        eprintln!(
            "{transform:?} left half: {to_photo:.1} levels from the photo, {to_plain:.1} from \
             the whole-photo stylisation"
        );
        assert!(
            to_photo > 20.0 && to_plain < to_photo / 2.0,
            "{transform:?}"
        );
        // After the engine's composite the right half beyond the feather is the photo.
        let composite = weights.composite(&content, &[&result])?;
        let right = max_pixel_diff(
            &crop(&composite, edge, w - edge),
            &crop(&content, edge, w - edge),
        );
        assert!(
            right <= 2,
            "{transform:?}: the right half is {right} levels off"
        );
        // And its features are the photo's, not the painting's.
        let s = stats_of(&models.0, &crop(&composite, edge, w - edge))?;
        let p = stats_of(&models.0, &crop(&content, edge, w - edge))?;
        let l = stats_of(&models.0, &crop(&composite, 0, inner))?;
        let levels = &arbitrary::LEVELS;
        let (right_to_style, left_to_style) = (
            gram_distance(&s, &style, levels),
            gram_distance(&l, &style, levels),
        );
        let right_to_photo = gram_distance(&s, &p, levels);
        eprintln!(
            "{transform:?} Gram distance to the painting: left {left_to_style:.3}, right \
             {right_to_style:.3}; right to the photo {right_to_photo:.4}"
        );
        assert!(left_to_style < right_to_style && right_to_photo < 1e-3);
    }
    eprintln!("left-half test: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Two paintings, one per half (the right one the default style).
struct TwoHalves {
    content: RgbImage,
    styles: [StyleStats; 2],
    paintings: [RgbImage; 2],
    weights: RegionWeights,
}

fn two_halves(models: &(Vgg, Decoders), w: u32, h: u32) -> anyhow::Result<TwoHalves> {
    let (a, b, names) = paintings();
    eprintln!("paintings: {names}");
    let regions = Regions {
        masks: vec![Some(left_mask(w, h)), None],
        rest: Rest::Style(1),
        feather: FEATHER,
        labels: vec![],
    };
    Ok(TwoHalves {
        content: photo(w, h),
        styles: [stats_of(&models.0, &a)?, stats_of(&models.0, &b)?],
        paintings: [a, b],
        weights: regions.weights(w, h),
    })
}

/// How each half (away from the seam) compares with its own painting and the other.
#[derive(Debug)]
struct HalfScore {
    /// Mean colour's distance to its own painting's and to the other's.
    color: (f64, f64),
    /// [`gram_distance`] to its own and the other at each of [`arbitrary::LEVELS`].
    gram: [(f64, f64); 4],
}

fn half_scores(vgg: &Vgg, image: &RgbImage, case: &TwoHalves) -> anyhow::Result<[HalfScore; 2]> {
    let w = image.width();
    let band = FEATHER as u32 + 16;
    let halves = [
        crop(image, 0, w / 2 - band),
        crop(image, w / 2 + band, w - w / 2 - band),
    ];
    let colors = [
        mean_color(&case.paintings[0]),
        mean_color(&case.paintings[1]),
    ];
    let score = |i: usize| -> anyhow::Result<HalfScore> {
        let (own, other) = (i, 1 - i);
        let c = mean_color(&halves[i]);
        let s = stats_of(vgg, &halves[i])?;
        let gram = arbitrary::LEVELS.map(|layer| {
            (
                gram_distance(&s, &case.styles[own], &[layer]),
                gram_distance(&s, &case.styles[other], &[layer]),
            )
        });
        Ok(HalfScore {
            color: (
                color_distance(c, colors[own]),
                color_distance(c, colors[other]),
            ),
            gram,
        })
    };
    Ok([score(0)?, score(1)?])
}

/// Where the test's images go for a look (`target/tmp`).
fn keep(image: &RgbImage, name: &str) {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    if let Err(e) = image.save(&path) {
        eprintln!("could not save {}: {e}", path.display());
    }
}

#[test]
fn two_paintings_each_in_its_half_compared_with_per_style_passes() -> TestResult {
    let started = Instant::now();
    let models = models()?;
    let (w, h) = (160u32, 112u32);
    let case = two_halves(&models, w, h)?;
    keep(&case.content, "regions-photo.png");
    let styles = [&case.styles[0], &case.styles[1]];
    for transform in [FeatureTransform::Adain, FeatureTransform::Wct] {
        let t0 = Instant::now();
        let regional = in_regions(
            &models,
            &case.content,
            &styles,
            &case.weights,
            config(transform),
        )?;
        let one_pass = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let fallback = per_style_passes(
            &models,
            &case.content,
            &styles,
            &case.weights,
            config(transform),
        )?;
        let passes = t0.elapsed().as_secs_f64();
        for (name, image) in [("regions", &regional), ("per-style passes", &fallback)] {
            keep(
                image,
                &format!(
                    "regions-{}-{}.png",
                    transform.name(),
                    name.replace(' ', "-")
                ),
            );
            for (half, score) in ["left", "right"]
                .iter()
                .zip(half_scores(&models.0, image, &case)?)
            {
                let (own_c, other_c) = score.color;
                let grams: Vec<String> = score
                    .gram
                    .iter()
                    .map(|(own, other)| format!("{own:.2}/{other:.2}"))
                    .collect();
                let (own_g, other_g) = score
                    .gram
                    .iter()
                    .fold((0.0, 0.0), |(a, b), g| (a + g.0, b + g.1));
                eprintln!(
                    "{transform:?} {name} {half}: colour {own_c:.1} to its painting vs \
                     {other_c:.1} to the other; Gram (own/other, relu4_1..relu1_1) {}, \
                     summed {own_g:.2} vs {other_g:.2}",
                    grams.join(" ")
                );
                if name == "regions" {
                    assert!(own_c < other_c, "{transform:?} {half}: colour");
                    assert!(own_g < other_g, "{transform:?} {half}: Gram matrices");
                }
            }
        }
        // How far the one pass is from the old composite of whole-photo passes: overall, in
        // each half away from the seam, and in the seam's band.
        let band = FEATHER as u32 + 16;
        let part = |x: u32, width: u32| {
            mean_abs_diff(&crop(&regional, x, width), &crop(&fallback, x, width))
        };
        eprintln!(
            "{transform:?} regions vs per-style passes: {:.1} levels overall, left {:.1}, right \
             {:.1}, seam band {:.1}; {one_pass:.1} s vs {passes:.1} s",
            mean_abs_diff(&regional, &fallback),
            part(0, w / 2 - band),
            part(w / 2 + band, w - w / 2 - band),
            part(w / 2 - band, 2 * band),
        );
    }
    eprintln!(
        "two-paintings test: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn regions_in_tiles_match_the_untiled_run() -> TestResult {
    let started = Instant::now();
    let models = models()?;
    for (transform, w, h) in [
        (FeatureTransform::Adain, 232u32, 150u32),
        (FeatureTransform::Wct, 128, 80),
    ] {
        let case = two_halves(&models, w, h)?;
        let styles = [&case.styles[0], &case.styles[1]];
        let config = ArbitraryConfig {
            transform,
            strength: 0.8,
        };
        let untiled = in_regions(&models, &case.content, &styles, &case.weights, config)?;
        let mut runs = (0, 0);
        let tiled = arbitrary::stylize_in_regions_tiled(
            &models.0,
            &models.1,
            &case.content,
            &styles,
            &case.weights,
            config,
            &Device::Cpu,
            64,
            |done, total| {
                runs = (done, total);
                Ok(())
            },
        )?;
        assert!(
            runs.0 == runs.1 && runs.0 >= 2 * 4 * transform.levels().len(),
            "{runs:?}"
        );
        let gap = mean_abs_diff(&tiled, &untiled);
        eprintln!(
            "{transform:?} regions: tiled vs untiled {gap:.4} levels ({} tile runs)",
            runs.0
        );
        assert!(
            gap <= 0.05,
            "{transform:?}: tiled vs untiled {gap:.3} levels"
        );
    }
    eprintln!("tiles test: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn empty_regions_are_skipped_and_bad_maps_refused() -> TestResult {
    let models = models()?;
    let (w, h) = (96u32, 64u32);
    let case = two_halves(&models, w, h)?;
    let styles = [&case.styles[0], &case.styles[1]];
    let adain = config(FeatureTransform::Adain);
    let left = Regions::single(left_mask(w, h), FEATHER).weights(w, h);
    // A second style with an empty map changes nothing.
    let with_empty = RegionWeights {
        maps: vec![left.maps[0].clone(), vec![0.0; (w * h) as usize]],
        ..left.clone()
    };
    let alone = in_regions(&models, &case.content, &styles[..1], &left, adain)?;
    let skipped = in_regions(&models, &case.content, &styles, &with_empty, adain)?;
    assert_eq!(alone, skipped);
    // No style paints anywhere: the photo as it is.
    let none = RegionWeights {
        maps: vec![vec![0.0; (w * h) as usize]; 2],
        ..left.clone()
    };
    assert_eq!(
        in_regions(&models, &case.content, &styles, &none, adain)?,
        case.content
    );
    // Maps that do not fit the photo or the styles, or out of 0..=1, are refused.
    let small = left.resized(w / 2, h / 2);
    let bad_value = RegionWeights {
        maps: vec![vec![1.5; (w * h) as usize]],
        ..left.clone()
    };
    for (weights, count) in [(&small, 1), (&left, 2), (&bad_value, 1)] {
        let result = arbitrary::stylize_in_regions(
            &models.0,
            &models.1,
            &case.content,
            &styles[..count],
            weights,
            adain,
            &Device::Cpu,
            |_, _| Ok(()),
        );
        assert!(
            matches!(result, Err(atelier::Error::InvalidArgument(_))),
            "{:?}",
            result.as_ref().err()
        );
    }
    Ok(())
}
