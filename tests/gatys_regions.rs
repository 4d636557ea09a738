//! Spatial control of the optimisation method (Gatys et al. 2017): masked Gram matrices per
//! region. The loss and gradient checks run on a random VGG16; the checks that a region really
//! takes its style need the development VGG16 in ../shared (they skip without it).

mod common;

use std::sync::Arc;
use std::time::Instant;

use atelier::error::Error;
use atelier::imaging;
use atelier::nn::vgg::{Vgg, VggArch};
use atelier::stylize::cache::FeatureCache;
use atelier::stylize::gatys::{self, GatysConfig, Observer, StepUpdate, StyleImage, StyleProblem};
use atelier::stylize::optim::OptimizerKind;
use atelier::stylize::regions::RegionWeights;
use candle_core::{Device, Tensor, Var};
use common::fixtures;
use image::{imageops, Rgb, RgbImage};
use rand::{Rng, SeedableRng};

struct Quiet;

impl Observer for Quiet {
    fn on_step(&mut self, _: StepUpdate) -> atelier::Result<()> {
        Ok(())
    }
}

fn style(image: RgbImage, weight: f64) -> StyleImage {
    StyleImage {
        image: Arc::new(image),
        weight,
    }
}

fn random_vgg() -> Vgg {
    Vgg::random(VggArch::Vgg16, &Device::Cpu, 7).unwrap()
}

fn photo(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 200 / w) as u8 + 30, (y * 180 / h) as u8 + 40, 120])
    })
}

/// Red and dark red horizontal stripes.
fn red_stripes(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |_, y| {
        if (y / 3) % 2 == 0 {
            Rgb([230, 30, 30])
        } else {
            Rgb([110, 10, 20])
        }
    })
}

/// Blue dots on dark navy.
fn blue_dots(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = ((x % 8) as i32 - 4, (y % 8) as i32 - 4);
        if dx * dx + dy * dy <= 5 {
            Rgb([60, 140, 255])
        } else {
            Rgb([10, 15, 60])
        }
    })
}

/// Weights with a map per entry of `columns`: 1 where `start <= x < end`, 0 elsewhere.
fn column_weights(w: u32, h: u32, columns: &[(u32, u32)]) -> RegionWeights {
    let maps = columns
        .iter()
        .map(|&(start, end)| {
            (0..w * h)
                .map(|p| f32::from(u8::from((start..end).contains(&(p % w)))))
                .collect()
        })
        .collect();
    RegionWeights {
        width: w,
        height: h,
        maps,
    }
}

fn noise(w: usize, h: usize, seed: u64) -> Tensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let data: Vec<f32> = (0..3 * w * h)
        .map(|_| rng.random_range(0.0..255.0))
        .collect();
    Tensor::from_vec(data, (1, 3, h, w), &Device::Cpu).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn masked_gram_with_an_all_ones_mask_is_the_plain_gram() {
    let features = Tensor::randn(0f32, 1.0, (1, 8, 5, 7), &Device::Cpu)
        .unwrap()
        .relu()
        .unwrap();
    let plain = gatys::gram(&features).unwrap();
    let ones = Tensor::ones((5, 7), candle_core::DType::F32, &Device::Cpu).unwrap();
    let masked = gatys::masked_gram(&features, &ones).unwrap();
    let diff = max_abs(&(&masked - &plain).unwrap());
    assert!(diff <= 1e-6 * max_abs(&plain), "differs by {diff}");

    // A 0/1 mask is the Gram of the columns it keeps.
    let left: Vec<f32> = (0..35).map(|p| f32::from(u8::from(p % 7 < 3))).collect();
    let left = Tensor::from_vec(left, (1, 1, 5, 7), &Device::Cpu).unwrap();
    let masked = gatys::masked_gram(&features, &left).unwrap();
    let cropped = gatys::gram(&features.narrow(3, 0, 3).unwrap()).unwrap();
    let diff = max_abs(&(&masked - &cropped).unwrap());
    assert!(diff <= 1e-6 * max_abs(&cropped), "differs by {diff}");

    let empty = Tensor::zeros((5, 7), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(gatys::masked_gram(&features, &empty).is_err());
    assert!(gatys::masked_gram(&features, &ones.narrow(1, 0, 6).unwrap()).is_err());
}

#[test]
fn a_region_covering_everything_is_the_plain_problem() {
    let vgg = random_vgg();
    let config = GatysConfig {
        size: 40,
        ..GatysConfig::default()
    };
    let (content, styles) = (photo(40, 32), [style(blue_dots(32, 32), 1.0)]);
    let mut cache = FeatureCache::default();
    let device = Device::Cpu;
    let plain = StyleProblem::new(&vgg, &content, &styles, &config, &mut cache, &device).unwrap();
    let everywhere = column_weights(40, 32, &[(0, 40)]);
    let regional = StyleProblem::with_regions(
        &vgg,
        &content,
        &styles,
        &config,
        Some(&everywhere),
        &mut cache,
        &device,
    )
    .unwrap();
    let x = noise(40, 32, 5);
    let (a, ga) = plain.evaluate(&x, true).unwrap();
    let (b, gb) = regional.evaluate(&x, true).unwrap();
    assert!(
        (a.style - b.style).abs() <= 1e-5 * a.style,
        "{a:?} vs {b:?}"
    );
    assert!(
        (a.total - b.total).abs() <= 1e-5 * a.total,
        "{a:?} vs {b:?}"
    );
    let (ga, gb) = (ga.unwrap(), gb.unwrap());
    let diff = max_abs(&(&ga - &gb).unwrap());
    assert!(diff <= 1e-5 * max_abs(&ga), "gradients differ by {diff}");
}

#[test]
fn region_gradient_matches_autograd_through_the_network() {
    // Odd sizes, so VGG's pools drop a row and a column the masks must drop too; feathered
    // overlapping maps with a photo-only band; two styles of different weights.
    let (w, h) = (37usize, 29usize);
    let vgg = random_vgg();
    let config = GatysConfig {
        size: 37,
        content_weight: 0.7,
        style_weight: 1.3,
        tv_weight: 0.0,
        style_layers: vec![
            ("relu1_2".into(), 1.0),
            ("relu2_2".into(), 0.5),
            ("relu3_3".into(), 1.0),
            ("relu4_3".into(), 2.0),
        ],
        ..GatysConfig::default()
    };
    let device = Device::Cpu;
    let content = photo(w as u32, h as u32);
    let paintings = [red_stripes(30, 24), blue_dots(24, 30)];
    let styles = [
        style(paintings[0].clone(), 1.0),
        style(paintings[1].clone(), 0.5),
    ];
    let maps: Vec<Vec<f32>> = vec![
        (0..w * h)
            .map(|p| (1.0 - (p % w) as f32 / 16.0).clamp(0.0, 1.0))
            .collect(),
        (0..w * h)
            .map(|p| ((p % w) as f32 / 8.0 - 3.0).clamp(0.0, 0.8))
            .collect(),
    ];
    let regions = RegionWeights {
        width: w as u32,
        height: h as u32,
        maps: maps.clone(),
    };
    let mut cache = FeatureCache::default();
    let problem = StyleProblem::with_regions(
        &vgg,
        &content,
        &styles,
        &config,
        Some(&regions),
        &mut cache,
        &device,
    )
    .unwrap();
    let x = noise(w, h, 3);
    let (losses, grad) = problem.evaluate(&x, true).unwrap();

    // The reference: the whole loss by autograd through the network, masks pooled by candle.
    let var = Var::from_tensor(&x).unwrap();
    let mut reference = Tensor::new(0f32, &device).unwrap();
    let content_layers = &config.content_layers;
    let targets = vgg
        .features(
            &imaging::to_tensor(&content, &device).unwrap(),
            content_layers,
        )
        .unwrap();
    let ours = vgg.features(var.as_tensor(), content_layers).unwrap();
    for layer in content_layers {
        let norm = targets[layer].sqr().unwrap().sum_all().unwrap();
        let term = (&ours[layer] - &targets[layer])
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        reference =
            (reference + (term.div(&norm).unwrap() * config.content_weight).unwrap()).unwrap();
    }
    let style_layers: Vec<String> = config.style_layers.iter().map(|(l, _)| l.clone()).collect();
    let layer_total: f64 = config.style_layers.iter().map(|(_, w)| w).sum();
    let ours = vgg.features(var.as_tensor(), &style_layers).unwrap();
    for ((painting, s), map) in paintings.iter().zip(&styles).zip(&maps) {
        let scaled = imaging::resize_longer_side(painting, w as u32);
        let theirs = vgg
            .features(
                &imaging::to_tensor(&scaled, &device).unwrap(),
                &style_layers,
            )
            .unwrap();
        let mask = Tensor::from_vec(map.clone(), (1, 1, h, w), &device).unwrap();
        for (pools, (layer, layer_weight)) in config.style_layers.iter().enumerate() {
            let mut m = mask.clone();
            for _ in 0..pools {
                m = m.avg_pool2d(2).unwrap();
            }
            let f = &ours[layer];
            let (_, c, fh, fw) = f.dims4().unwrap();
            assert_eq!(m.dims4().unwrap(), (1, 1, fh, fw));
            let mass = m.sqr().unwrap().sum_all().unwrap();
            let weighted = f
                .broadcast_mul(&m.sqr().unwrap())
                .unwrap()
                .reshape((c, fh * fw))
                .unwrap();
            let plain = f.reshape((c, fh * fw)).unwrap();
            let g = weighted
                .matmul(&plain.t().unwrap())
                .unwrap()
                .broadcast_div(&mass)
                .unwrap();
            let target = gatys::gram(&theirs[layer]).unwrap().squeeze(0).unwrap();
            let norm = target.sqr().unwrap().sum_all().unwrap();
            let share = (mass / (fh * fw) as f64).unwrap();
            let term = (g - &target).unwrap().sqr().unwrap().sum_all().unwrap();
            let term = term.div(&norm).unwrap().mul(&share).unwrap();
            let factor = config.style_weight * s.weight * layer_weight / layer_total;
            reference = (reference + (term * factor).unwrap()).unwrap();
        }
    }
    let expected_total = f64::from(reference.to_scalar::<f32>().unwrap());
    assert!(
        (losses.total - expected_total).abs() <= 1e-4 * expected_total,
        "{} vs {expected_total}",
        losses.total
    );
    let grads = reference.backward().unwrap();
    let expected = grads.get(var.as_tensor()).unwrap();
    let got = grad.unwrap();
    let scale = max_abs(expected);
    let diff = max_abs(&(&got - expected).unwrap());
    assert!(
        diff <= 1e-4 * scale,
        "gradient differs by {diff} (scale {scale})"
    );
}

#[test]
fn an_empty_region_adds_nothing_and_the_style_cache_serves_regions() {
    let vgg = random_vgg();
    let config = GatysConfig {
        size: 40,
        ..GatysConfig::default()
    };
    let (content, device) = (photo(40, 32), Device::Cpu);
    let mut cache = FeatureCache::default();
    let one = [style(red_stripes(32, 32), 1.0)];
    let plain = StyleProblem::new(&vgg, &content, &one, &config, &mut cache, &device).unwrap();
    let hits = cache.hits();
    let left = column_weights(40, 32, &[(0, 20)]);
    let single = StyleProblem::with_regions(
        &vgg,
        &content,
        &one,
        &config,
        Some(&left),
        &mut cache,
        &device,
    )
    .unwrap();
    assert_eq!(
        cache.hits(),
        hits + 2,
        "content features and style Grams reused"
    );
    let two = [one[0].clone(), style(blue_dots(32, 32), 1.0)];
    let left_and_nothing = column_weights(40, 32, &[(0, 20), (0, 0)]);
    let with_empty = StyleProblem::with_regions(
        &vgg,
        &content,
        &two,
        &config,
        Some(&left_and_nothing),
        &mut cache,
        &device,
    )
    .unwrap();
    let x = noise(40, 32, 9);
    let (a, _) = single.evaluate(&x, false).unwrap();
    let (b, _) = with_empty.evaluate(&x, false).unwrap();
    assert_eq!(a, b);
    // Half the image under the style: less style loss than the whole image, yet more than none.
    let (whole, _) = plain.evaluate(&x, false).unwrap();
    assert!(
        a.style < whole.style && a.style > 0.1 * whole.style,
        "{a:?} {whole:?}"
    );
    assert_eq!(a.content, whole.content);
}

#[test]
fn region_maps_that_do_not_fit_are_refused() {
    let vgg = random_vgg();
    let config = GatysConfig {
        size: 40,
        steps: 1,
        ..GatysConfig::default()
    };
    let content = photo(40, 32);
    let styles = [
        style(red_stripes(16, 16), 1.0),
        style(blue_dots(16, 16), 1.0),
    ];
    let one_map = column_weights(40, 32, &[(0, 20)]);
    let mut short = column_weights(40, 32, &[(0, 20), (20, 40)]);
    short.maps[1].pop();
    for regions in [one_map, short] {
        let result = gatys::stylize_in_regions(
            &vgg,
            &Device::Cpu,
            &content,
            &styles,
            &config,
            Some(&regions),
            &mut FeatureCache::default(),
            &mut Quiet,
        );
        assert!(matches!(result, Err(Error::InvalidArgument(_))));
    }
}

// --- With the development VGG16: does each region take its style? ---

/// The style layers of [`GatysConfig::default`], where the distances are measured.
const LAYERS: [&str; 4] = ["relu1_2", "relu2_2", "relu3_3", "relu4_3"];

fn dev_vgg() -> Option<Vgg> {
    let path = fixtures::shared_vgg()?;
    Some(Vgg::load(&path, &Device::Cpu).unwrap())
}

/// A grey photo with a soft diagonal gradient and a light disc: neutral colours, so a style's
/// colours can show, and some structure for the content loss to keep.
fn grey_photo(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = (80 + (x + y) * 100 / (w + h)) as u8;
        let (dx, dy) = (x as i32 - w as i32 / 3, y as i32 - 2 * h as i32 / 3);
        let disc = if dx * dx + dy * dy < 100 { 40 } else { 0 };
        Rgb([v + disc; 3])
    })
}

/// ‖G(image) − G(style)‖² / ‖G(style)‖² at each of [`LAYERS`], each image seen on its own.
fn gram_distances(vgg: &Vgg, image: &RgbImage, style: &RgbImage) -> [f64; 4] {
    let layers = LAYERS.map(String::from);
    let grams = |image: &RgbImage| {
        let t = imaging::to_tensor(image, &Device::Cpu).unwrap();
        vgg.features(&t, &layers).unwrap()
    };
    let (ours, theirs) = (grams(image), grams(style));
    LAYERS.map(|layer| {
        let (g, a) = (
            gatys::gram(&ours[layer]).unwrap(),
            gatys::gram(&theirs[layer]).unwrap(),
        );
        let num = (g - &a).unwrap().sqr().unwrap().sum_all().unwrap();
        let den = a.sqr().unwrap().sum_all().unwrap();
        f64::from(num.to_scalar::<f32>().unwrap() / den.to_scalar::<f32>().unwrap())
    })
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn crop(image: &RgbImage, x: u32, width: u32) -> RgbImage {
    imageops::crop_imm(image, x, 0, width, image.height()).to_image()
}

/// Mean absolute difference per channel value.
fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    let total: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&p, &q)| f64::from(p.abs_diff(q)))
        .sum();
    total / a.as_raw().len() as f64
}

fn mean_color(image: &RgbImage) -> [f64; 3] {
    let mut sum = [0.0; 3];
    for p in image.pixels() {
        for (s, &v) in sum.iter_mut().zip(&p.0) {
            *s += f64::from(v);
        }
    }
    sum.map(|s| s / f64::from(image.width() * image.height()))
}

#[test]
fn one_region_paints_only_its_half() {
    let Some(vgg) = dev_vgg() else { return };
    let started = Instant::now();
    let (content, painting) = (grey_photo(64, 64), fixtures::stripes(64, 64));
    let regions = column_weights(64, 64, &[(0, 32)]);
    let config = GatysConfig {
        size: 64,
        steps: 10,
        style_weight: 1000.0,
        ..GatysConfig::default()
    };
    let out = gatys::stylize_in_regions(
        &vgg,
        &Device::Cpu,
        &content,
        &[style(painting.clone(), 1.0)],
        &config,
        Some(&regions),
        &mut FeatureCache::default(),
        &mut Quiet,
    )
    .unwrap();
    let image = out.image;
    let left = gram_distances(&vgg, &crop(&image, 0, 32), &painting);
    let right = gram_distances(&vgg, &crop(&image, 32, 32), &painting);
    let photo_left = gram_distances(&vgg, &crop(&content, 0, 32), &painting);
    // Change from the photo in bands of 8 columns.
    let bands: Vec<f64> = (0..8)
        .map(|b| mean_abs_diff(&crop(&image, 8 * b, 8), &crop(&content, 8 * b, 8)))
        .collect();
    eprintln!(
        "Gram distance to the style at {LAYERS:?}: left {left:.3?} (the photo's \
         {photo_left:.3?}), right {right:.3?}; change from the photo per 8 columns {bands:.1?}; \
         {} evaluations, {:.1}s",
        out.evaluations,
        started.elapsed().as_secs_f64()
    );
    assert!(mean(&left) < 0.5 * mean(&right), "{left:?} vs {right:?}");
    assert!(
        mean(&left) < 0.5 * mean(&photo_left),
        "{left:?} vs {photo_left:?}"
    );
    // Style gradients reach some way across the edge through the network's receptive fields
    // (at 64 px those of relu4_3 span the image); from 16 px beyond it the photo stays.
    let (inside, outside) = (mean(&bands[..3]), mean(&bands[6..]));
    assert!(outside < 0.15 * inside, "{bands:?}");
    assert!(
        outside < 4.0,
        "the outer right quarter moved {outside} from the photo"
    );
}

#[test]
fn two_regions_take_their_own_styles() {
    let Some(vgg) = dev_vgg() else { return };
    let started = Instant::now();
    let content = grey_photo(64, 64);
    let (red, blue) = (red_stripes(64, 64), blue_dots(64, 64));
    let regions = column_weights(64, 64, &[(0, 32), (32, 64)]);
    // Adam with long strides reaches the styles' colours in fewer evaluations than L-BFGS.
    let config = GatysConfig {
        size: 64,
        steps: 16,
        style_weight: 1000.0,
        optimizer: OptimizerKind::Adam,
        learning_rate: Some(8.0),
        ..GatysConfig::default()
    };
    let out = gatys::stylize_in_regions(
        &vgg,
        &Device::Cpu,
        &content,
        &[style(red.clone(), 1.0), style(blue.clone(), 1.0)],
        &config,
        Some(&regions),
        &mut FeatureCache::default(),
        &mut Quiet,
    )
    .unwrap();
    let (left, right) = (crop(&out.image, 0, 32), crop(&out.image, 32, 32));
    let left_red = gram_distances(&vgg, &left, &red);
    let left_blue = gram_distances(&vgg, &left, &blue);
    let right_red = gram_distances(&vgg, &right, &red);
    let right_blue = gram_distances(&vgg, &right, &blue);
    let (left_mean, right_mean) = (mean_color(&left), mean_color(&right));
    eprintln!(
        "Gram distances at {LAYERS:?}: left→red {left_red:.3?}, left→blue {left_blue:.3?}, \
         right→red {right_red:.3?}, right→blue {right_blue:.3?}; mean colours: left \
         {left_mean:.0?}, right {right_mean:.0?}; {} evaluations, {:.1}s",
        out.evaluations,
        started.elapsed().as_secs_f64()
    );
    assert!(mean(&left_red) < 0.75 * mean(&left_blue), "left half");
    assert!(mean(&right_blue) < 0.75 * mean(&right_red), "right half");
    // Red minus blue: the left half turned red, the right half blue.
    let redness = |c: [f64; 3]| c[0] - c[2];
    assert!(
        redness(left_mean) > redness(right_mean) + 50.0,
        "{left_mean:?} {right_mean:?}"
    );
    assert!(redness(right_mean) < -30.0, "{right_mean:?}");
}
