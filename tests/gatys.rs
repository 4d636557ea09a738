//! Gatys optimisation logic on a random VGG16 and tiny images (the real network is exercised by
//! the engine and CLI tests).

use std::sync::Arc;

use atelier::error::Error;
use atelier::nn::vgg::{Vgg, VggArch};
use atelier::stylize::cache::FeatureCache;
use atelier::stylize::gatys::{self, GatysConfig, Init, Observer, StepUpdate, StyleImage};
use atelier::stylize::optim::OptimizerKind;
use candle_core::{Device, Tensor, Var};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};

fn photo() -> RgbImage {
    RgbImage::from_fn(40, 32, |x, y| Rgb([(x * 6) as u8, (y * 7) as u8, 120]))
}

fn checker(color_a: [u8; 3], color_b: [u8; 3]) -> RgbImage {
    RgbImage::from_fn(32, 32, |x, y| {
        if (x / 3 + y / 3) % 2 == 0 {
            Rgb(color_a)
        } else {
            Rgb(color_b)
        }
    })
}

fn style(image: RgbImage, weight: f64) -> StyleImage {
    StyleImage {
        image: Arc::new(image),
        weight,
    }
}

fn small_config(steps: usize) -> GatysConfig {
    GatysConfig {
        size: 40,
        steps,
        ..GatysConfig::default()
    }
}

/// Records updates; optionally cancels after a number of steps.
#[derive(Default)]
struct Recorder {
    steps: Vec<usize>,
    previews: usize,
    cancel_after: Option<usize>,
}

impl Observer for Recorder {
    fn on_step(&mut self, update: StepUpdate) -> atelier::Result<()> {
        self.steps.push(update.step);
        self.previews += usize::from(update.preview.is_some());
        Ok(())
    }
    fn cancelled(&self) -> bool {
        self.cancel_after.is_some_and(|n| self.steps.len() >= n)
    }
}

fn vgg() -> Vgg {
    Vgg::random(VggArch::Vgg16, &Device::Cpu, 7).unwrap()
}

#[test]
fn style_loss_falls_with_both_optimizers() {
    let vgg = vgg();
    for optimizer in [OptimizerKind::Lbfgs, OptimizerKind::Adam] {
        let config = GatysConfig {
            optimizer,
            ..small_config(8)
        };
        let mut recorder = Recorder::default();
        let out = gatys::stylize(
            &vgg,
            &Device::Cpu,
            &photo(),
            &[style(checker([250, 20, 20], [10, 10, 240]), 1.0)],
            &config,
            &mut FeatureCache::default(),
            &mut recorder,
        )
        .unwrap();
        assert_eq!(out.image.dimensions(), (40, 32));
        assert_eq!(recorder.steps, (1..=8).collect::<Vec<_>>());
        // L-BFGS converges much faster than Adam in so few steps.
        let expected = match optimizer {
            OptimizerKind::Lbfgs => 0.7,
            OptimizerKind::Adam => 0.95,
        };
        assert!(
            out.losses.style < expected * out.initial_style_loss,
            "{optimizer:?}: style {} vs initial {}",
            out.losses.style,
            out.initial_style_loss
        );
    }
}

#[test]
fn cancellation_stops_within_a_step() {
    let vgg = vgg();
    let mut recorder = Recorder {
        cancel_after: Some(2),
        ..Recorder::default()
    };
    let result = gatys::stylize(
        &vgg,
        &Device::Cpu,
        &photo(),
        &[style(checker([250, 20, 20], [10, 10, 240]), 1.0)],
        &small_config(50),
        &mut FeatureCache::default(),
        &mut recorder,
    );
    assert!(matches!(result, Err(Error::Cancelled)));
    assert_eq!(recorder.steps, vec![1, 2]);
}

#[test]
fn preserve_color_keeps_the_photos_chroma() {
    let vgg = vgg();
    let content = photo();
    let config = GatysConfig {
        preserve_color: true,
        ..small_config(5)
    };
    let out = gatys::stylize(
        &vgg,
        &Device::Cpu,
        &content,
        &[style(checker([0, 255, 0], [255, 0, 255]), 1.0)],
        &config,
        &mut FeatureCache::default(),
        &mut Recorder::default(),
    )
    .unwrap();
    // YIQ chroma of output and photo agree (up to rounding and clamping).
    let chroma = |p: &Rgb<u8>| {
        let (r, g, b) = (p[0] as f32, p[1] as f32, p[2] as f32);
        (
            0.596 * r - 0.274 * g - 0.322 * b,
            0.211 * r - 0.523 * g + 0.312 * b,
        )
    };
    let mut diff = 0.0;
    for (a, b) in out.image.pixels().zip(content.pixels()) {
        let (ia, qa) = chroma(a);
        let (ib, qb) = chroma(b);
        diff += (ia - ib).abs() + (qa - qb).abs();
    }
    let mean = diff / (content.width() * content.height()) as f32;
    assert!(mean < 6.0, "mean chroma difference {mean}");
}

#[test]
fn seeded_noise_init_is_reproducible_and_blend_is_validated() {
    let vgg = vgg();
    let config = GatysConfig {
        init: Init::Noise,
        seed: 42,
        ..small_config(2)
    };
    let run = |config: &GatysConfig, styles: &[StyleImage]| {
        gatys::stylize(
            &vgg,
            &Device::Cpu,
            &photo(),
            styles,
            config,
            &mut FeatureCache::default(),
            &mut Recorder::default(),
        )
    };
    let styles = [style(checker([250, 20, 20], [10, 10, 240]), 1.0)];
    let a = run(&config, &styles).unwrap();
    let b = run(&config, &styles).unwrap();
    assert_eq!(a.image, b.image);

    let bad = [
        style(checker([250, 20, 20], [10, 10, 240]), 0.0),
        style(checker([0, 0, 0], [255, 255, 255]), 0.0),
    ];
    assert!(matches!(run(&config, &bad), Err(Error::InvalidArgument(_))));
    assert!(matches!(run(&config, &[]), Err(Error::InvalidArgument(_))));
    let bad_layer = GatysConfig {
        style_layers: vec![("relu9_9".into(), 1.0)],
        ..config.clone()
    };
    match run(&bad_layer, &styles) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("relu9_9") && m.contains("relu1_1")),
        _ => panic!("unknown layer accepted"),
    }
}

#[test]
fn two_styles_blend_and_features_are_cached_between_runs() {
    let vgg = vgg();
    let mut cache = FeatureCache::default();
    let styles = [
        style(checker([250, 20, 20], [10, 10, 240]), 0.7),
        style(checker([0, 0, 0], [255, 255, 255]), 0.3),
    ];
    let config = small_config(2);
    gatys::stylize(
        &vgg,
        &Device::Cpu,
        &photo(),
        &styles,
        &config,
        &mut cache,
        &mut Recorder::default(),
    )
    .unwrap();
    assert_eq!(cache.hits(), 0);
    // Same inputs, another style weight: content features and Gram matrices come from the cache.
    let config = GatysConfig {
        style_weight: 100.0,
        ..config
    };
    gatys::stylize(
        &vgg,
        &Device::Cpu,
        &photo(),
        &styles,
        &config,
        &mut cache,
        &mut Recorder::default(),
    )
    .unwrap();
    assert_eq!(cache.hits(), 3);
}

#[test]
fn coarse_to_fine_runs_every_scale() {
    let config = GatysConfig {
        size: 1024,
        ..GatysConfig::default()
    };
    assert_eq!(config.scale_sides(), vec![512, 1024]);
    let config = GatysConfig {
        size: 2048,
        ..GatysConfig::default()
    };
    assert_eq!(config.scale_sides(), vec![512, 1024, 2048]);
    let config = GatysConfig {
        size: 300,
        scales: 2,
        ..GatysConfig::default()
    };
    assert_eq!(config.scale_sides(), vec![150, 300]);

    let vgg = vgg();
    let config = GatysConfig {
        size: 64,
        scales: 2,
        steps: 2,
        ..GatysConfig::default()
    };
    let mut recorder = Recorder::default();
    let out = gatys::stylize(
        &vgg,
        &Device::Cpu,
        &photo(),
        &[style(checker([250, 20, 20], [10, 10, 240]), 1.0)],
        &config,
        &mut FeatureCache::default(),
        &mut recorder,
    )
    .unwrap();
    assert_eq!(recorder.steps, vec![1, 2, 3, 4]);
    // One preview at the end of each scale.
    assert_eq!(recorder.previews, 2);
    assert_eq!(out.image.dimensions(), (64, 51));
}

#[test]
fn bad_numbers_are_rejected() {
    for config in [
        GatysConfig {
            size: 0,
            ..GatysConfig::default()
        },
        GatysConfig {
            steps: 0,
            ..GatysConfig::default()
        },
        GatysConfig {
            content_weight: -1.0,
            ..GatysConfig::default()
        },
        GatysConfig {
            tv_weight: f64::NAN,
            ..GatysConfig::default()
        },
        GatysConfig {
            size: 100_000,
            ..GatysConfig::default()
        },
    ] {
        assert!(matches!(config.validate(), Err(Error::InvalidArgument(_))));
    }
}

#[test]
fn loss_gradient_matches_autograd_through_the_network() {
    // The loss's gradient comes from the VGG's hand-run backward pass plus autograd on the loss
    // head; the reference builds the same loss with autograd through the whole network.
    let vgg = vgg();
    let config = GatysConfig {
        content_weight: 0.7,
        style_weight: 1.3,
        tv_weight: 0.0,
        ..small_config(1)
    };
    let device = Device::Cpu;
    let (content, painting) = (photo(), checker([200, 30, 30], [20, 20, 220]));
    let mut cache = FeatureCache::default();
    let styles = [style(painting.clone(), 1.0)];
    let problem =
        gatys::StyleProblem::new(&vgg, &content, &styles, &config, &mut cache, &device).unwrap();
    // Far from the optimum (seeded noise), so every term has a sizeable gradient.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let noise: Vec<f32> = (0..3 * 32 * 40)
        .map(|_| rng.random_range(0.0..255.0))
        .collect();
    let x = Tensor::from_vec(noise, (1, 3, 32, 40), &device).unwrap();
    let (losses, grad) = problem.evaluate(&x, true).unwrap();

    let features = |image: &Tensor, layers: &[String]| vgg.features(image, layers).unwrap();
    let var = Var::from_tensor(&x).unwrap();
    let mut reference = Tensor::new(0f32, &device).unwrap();
    let photo_tensor = atelier::imaging::to_tensor(&content, &device).unwrap();
    let targets = features(&photo_tensor, &config.content_layers);
    let ours = features(var.as_tensor(), &config.content_layers);
    for layer in &config.content_layers {
        let norm = targets[layer].sqr().unwrap().sum_all().unwrap();
        let term = (&ours[layer] - &targets[layer])
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let term = (term.div(&norm).unwrap() * config.content_weight).unwrap();
        reference = (reference + term).unwrap();
    }
    let style_layers: Vec<String> = config.style_layers.iter().map(|(l, _)| l.clone()).collect();
    let share: f64 = config.style_layers.iter().map(|(_, w)| w).sum();
    let scaled = atelier::imaging::resize_longer_side(&painting, 40);
    let style_features = features(
        &atelier::imaging::to_tensor(&scaled, &device).unwrap(),
        &style_layers,
    );
    let ours = features(var.as_tensor(), &style_layers);
    for (layer, weight) in &config.style_layers {
        let target = gatys::gram(&style_features[layer]).unwrap();
        let norm = target.sqr().unwrap().sum_all().unwrap();
        let diff = (gatys::gram(&ours[layer]).unwrap() - &target).unwrap();
        let term = diff.sqr().unwrap().sum_all().unwrap().div(&norm).unwrap();
        reference = (reference + (term * (config.style_weight * weight / share)).unwrap()).unwrap();
    }
    let expected_total = reference.to_scalar::<f32>().unwrap() as f64;
    assert!((losses.total - expected_total).abs() <= 1e-5 * expected_total);
    let grads = reference.backward().unwrap();
    let expected = grads.get(var.as_tensor()).unwrap();
    let got = grad.unwrap();
    let scale = expected
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let diff = (&got - expected).unwrap().abs().unwrap().max_all().unwrap();
    let diff = diff.to_scalar::<f32>().unwrap();
    assert!(
        diff <= 1e-5 * scale,
        "gradient differs by {diff} (scale {scale})"
    );
}
