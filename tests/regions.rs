//! Local style through the engine and the CLI: one style with half the photo masked keeps the
//! photo beyond the feather and paints the rest in full, for every method; two regions each
//! look like their own style; a default style takes what no region covers; masks of another
//! shape, empty or all white say so; a mask that is not an image is a clear error.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier::engine::{
    ArbitraryStyle, Engine, EventBody, FeatureTransform, GatysConfig, Job, JobOutput, Method,
    NetworkStyle, Regions, Rest, StyleImage, BUNDLED_VGG, DEFAULT_STYLE_SIDE,
};
use atelier::nn::transformer::TransformerNet;
use candle_core::{Device, Tensor};
use image::{GrayImage, Luma, RgbImage};

mod common;
use common::fixtures::shared_vgg;

const FEATHER: f32 = 6.0;
/// Columns either side of the mask's edge that the feather (three boxes of radius 2) and the
/// mask's stretch (bilinear, about 2 px) may touch.
const EDGE: u32 = 8;

fn photo(width: u32, height: u32) -> Arc<RgbImage> {
    let path = Path::new("../shared/data/content/chicago.jpg");
    let image = match atelier::imaging::load_rgb(path) {
        Ok(image) => image,
        // Without the shared photos a synthetic one still has edges and colours.
        Err(_) => RgbImage::from_fn(640, 480, |x, y| {
            image::Rgb([
                (x * 255 / 640) as u8,
                ((x / 16 + y / 16) % 2 * 200) as u8,
                (y * 255 / 480) as u8,
            ])
        }),
    };
    Arc::new(atelier::imaging::resize_exact(&image, width, height))
}

/// White on the left `share` of the width.
fn left_mask(width: u32, height: u32, share: f32) -> Arc<GrayImage> {
    let edge = (width as f32 * share) as u32;
    Arc::new(GrayImage::from_fn(width, height, |x, _| {
        Luma([if x < edge { 255 } else { 0 }])
    }))
}

fn run(engine: &Engine, job: Job) -> JobOutput {
    let id = engine.render(job).expect("submitted");
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let Ok(event) = engine.events().recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        if event.job != id {
            continue;
        }
        match event.body {
            EventBody::Finished(output) => return *output,
            EventBody::Failed(failure) => panic!("job failed: {failure}"),
            EventBody::Cancelled => panic!("job cancelled"),
            _ => {}
        }
    }
    panic!("job did not finish");
}

/// Largest channel difference between `a` and `b` over columns `columns`.
fn max_diff(a: &RgbImage, b: &RgbImage, columns: std::ops::Range<u32>) -> u8 {
    let mut most = 0;
    for y in 0..a.height() {
        for x in columns.clone() {
            for c in 0..3 {
                most = most.max(a.get_pixel(x, y).0[c].abs_diff(b.get_pixel(x, y).0[c]));
            }
        }
    }
    most
}

fn mean_diff(a: &RgbImage, b: &RgbImage, columns: std::ops::Range<u32>) -> f64 {
    let mut sum = 0u64;
    let mut count = 0u64;
    for y in 0..a.height() {
        for x in columns.clone() {
            for c in 0..3 {
                sum += u64::from(a.get_pixel(x, y).0[c].abs_diff(b.get_pixel(x, y).0[c]));
                count += 1;
            }
        }
    }
    sum as f64 / count.max(1) as f64
}

/// The left half masked for `method`: beyond the feather the right half is the photo within
/// 2/255 and the left half is as stylised as the unmasked result (its difference from the photo
/// at least `fullness` of the unmasked one's).
fn check_left_half(engine: &Engine, content: Arc<RgbImage>, method: Method, fullness: f64) {
    let plain = run(
        engine,
        Job {
            content: content.clone(),
            method: method.clone(),
            strength: 1.0,
            regions: None,
        },
    );
    let masked = run(
        engine,
        Job {
            content: content.clone(),
            method,
            strength: 1.0,
            regions: Some(Regions::single(left_mask(100, 100, 0.5), FEATHER)),
        },
    );
    let (w, h) = masked.image.dimensions();
    assert_eq!(plain.image.dimensions(), (w, h));
    let photo = atelier::imaging::resize_exact(&content, w, h);
    let half = w / 2;
    let right = half + EDGE..w;
    let left = 0..half - EDGE;
    let kept = max_diff(&masked.image, &photo, right.clone());
    assert!(kept <= 2, "right half differs from the photo by {kept}/255");
    let styled = mean_diff(&masked.image, &photo, left.clone());
    let full = mean_diff(&plain.image, &photo, left.clone());
    eprintln!(
        "{}: left half {styled:.1} levels from the photo (unmasked {full:.1}); right half \
         within {kept}",
        masked.stats.method
    );
    assert!(
        styled >= fullness * full && styled > 5.0,
        "left half {styled:.1} levels from the photo, unmasked {full:.1}"
    );
}

fn bundled(name: &str) -> PathBuf {
    atelier::styles::model_in_folder(&Path::new("styles").join(name)).expect("bundled style")
}

#[test]
fn network_keeps_the_photo_beyond_the_feather_and_paints_the_rest_in_full() {
    let engine = Engine::new(Device::Cpu).expect("engine");
    let method = Method::Network {
        styles: vec![NetworkStyle::new(bundled("starry-night"), None)],
        size: None,
        preserve_color: false,
        stroke: 1.0,
    };
    check_left_half(&engine, photo(160, 96), method, 0.99);
}

#[test]
fn arbitrary_keeps_the_photo_beyond_the_feather_and_paints_the_rest_in_full() {
    let Ok(style) = atelier::imaging::load_rgb(Path::new("../shared/data/styles/the-scream.jpg"))
    else {
        eprintln!("skipping: ../shared/data/styles not found");
        return;
    };
    let engine = Engine::new(Device::Cpu).expect("engine");
    let method = Method::Arbitrary {
        vgg: PathBuf::from(BUNDLED_VGG),
        decoders: None,
        styles: vec![ArbitraryStyle {
            works: vec![Arc::new(style)],
            weight: 1.0,
        }],
        transform: FeatureTransform::Adain,
        size: None,
        style_side: DEFAULT_STYLE_SIDE.min(256),
        preserve_color: false,
    };
    // The region's own statistics differ from the whole photo's: close to, not equal to, the
    // unmasked result.
    check_left_half(&engine, photo(128, 96), method, 0.7);
}

#[test]
fn optimisation_keeps_the_photo_beyond_the_feather_and_paints_the_rest_in_full() {
    let Some(vgg) = shared_vgg() else { return };
    let Ok(style) = atelier::imaging::load_rgb(Path::new("../shared/data/styles/the-scream.jpg"))
    else {
        eprintln!("skipping: ../shared/data/styles not found");
        return;
    };
    let engine = Engine::new(Device::Cpu).expect("engine");
    let method = Method::Optimize {
        vgg,
        styles: vec![StyleImage {
            image: Arc::new(style),
            weight: 1.0,
        }],
        config: GatysConfig {
            size: 80,
            steps: 20,
            scales: 1,
            ..GatysConfig::default()
        },
    };
    check_left_half(&engine, photo(80, 56), method, 0.6);
}

#[test]
fn a_default_style_paints_what_no_region_covers() {
    let engine = Engine::new(Device::Cpu).expect("engine");
    let content = photo(128, 96);
    let network = |name: &str| Method::Network {
        styles: vec![NetworkStyle::new(bundled(name), None)],
        size: None,
        preserve_color: false,
        stroke: 1.0,
    };
    let plain = |name: &str| {
        run(
            &engine,
            Job {
                content: content.clone(),
                method: network(name),
                strength: 1.0,
                regions: None,
            },
        )
        .image
    };
    let (wave, scream) = (plain("great-wave"), plain("the-scream"));
    let masked = run(
        &engine,
        Job {
            content: content.clone(),
            method: Method::Network {
                styles: vec![
                    NetworkStyle::new(bundled("great-wave"), None),
                    NetworkStyle::new(bundled("the-scream"), None),
                ],
                size: None,
                preserve_color: false,
                stroke: 1.0,
            },
            strength: 1.0,
            regions: Some(Regions {
                masks: vec![Some(left_mask(128, 96, 0.5)), None],
                rest: Rest::Style(1),
                feather: FEATHER,
                labels: vec![],
            }),
        },
    )
    .image;
    assert!(max_diff(&masked, &wave, 0..64 - EDGE) <= 2);
    assert!(max_diff(&masked, &scream, 64 + EDGE..128) <= 2);
    // Across the seam the styles blend: no pixel is the photo's.
    assert!(mean_diff(&masked, &content, 60..68) > 5.0);
}

#[test]
fn one_conditional_network_paints_its_regions_in_one_pass() {
    let device = Device::Cpu;
    let net = TransformerNet::random_conditional(&device, 7, 8, 3).expect("network");
    let x = atelier::imaging::to_tensor(&photo(40, 32), &device).expect("tensor");
    // All weight on style 2 everywhere is the one-hot mix.
    let mut weights = vec![0f32; 3 * 32 * 40];
    weights[2 * 32 * 40..].fill(1.0);
    let weights = Tensor::from_vec(weights, (1, 3, 32, 40), &device).expect("weights");
    let spatial = net.forward_spatial(&x, &weights).expect("spatial");
    let one_hot = Tensor::new(&[0f32, 0.0, 1.0], &device).expect("mix");
    let mixed = net.forward_mixed(&x, Some(&one_hot)).expect("mixed");
    let gap: f32 = (spatial - mixed)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar())
        .expect("difference");
    assert!(gap < 1e-3, "spatial one-hot differs from the mix by {gap}");
    // A one-style network has no per-style parameters to vary.
    let plain = TransformerNet::random_with_width(&device, 7, 8).expect("network");
    assert!(plain
        .forward_spatial(&x, &weights.narrow(1, 0, 1).expect("narrow"))
        .is_err());
}

#[test]
fn masks_of_another_shape_empty_or_all_white_say_so() {
    let engine = Engine::new(Device::Cpu).expect("engine");
    let content = photo(96, 64);
    let job = |mask: GrayImage| Job {
        content: content.clone(),
        method: Method::Network {
            styles: vec![NetworkStyle::new(bundled("starry-night"), None)],
            size: None,
            preserve_color: false,
            stroke: 1.0,
        },
        strength: 1.0,
        regions: Some(Regions {
            masks: vec![Some(Arc::new(mask))],
            rest: Rest::Photo,
            feather: 0.0,
            labels: vec!["sky.png".into()],
        }),
    };
    let square = run(&engine, job(GrayImage::from_pixel(50, 50, Luma([255]))));
    assert!(square.stats.notes.iter().any(|n| n.contains("stretched")));
    assert!(square.stats.notes.iter().any(|n| n.contains("all white")));
    let empty = run(&engine, job(GrayImage::new(96, 64)));
    assert!(empty.stats.notes.iter().any(|n| n.contains("empty")));
    assert_eq!(*empty.image, *content, "an empty mask keeps the photo");
}

fn atelier() -> Command {
    Command::new(env!("CARGO_BIN_EXE_atelier"))
}

#[test]
fn cli_two_regions_each_score_closer_to_their_own_style() {
    let Some(vgg) = shared_vgg() else { return };
    let styles = Path::new("../shared/data/styles");
    if !styles.join("starry-night.jpg").exists() {
        eprintln!("skipping: ../shared/data/styles not found");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let content = photo(192, 128);
    let photo_path = dir.path().join("photo.png");
    content.save(&photo_path).expect("photo");
    let (left, right) = (dir.path().join("left.png"), dir.path().join("right.png"));
    left_mask(192, 128, 0.5).save(&left).expect("mask");
    let right_mask = GrayImage::from_fn(192, 128, |x, _| Luma([if x >= 96 { 255 } else { 0 }]));
    right_mask.save(&right).expect("mask");
    let out = dir.path().join("out.png");
    let status = atelier()
        .args(["stylize", "--method", "network", "-q", "-o"])
        .arg(&out)
        .arg(&photo_path)
        .arg("--region")
        .arg(format!(
            "{}=styles/four-painters#starry-night",
            left.display()
        ))
        .arg("--region")
        .arg(format!(
            "{}=styles/four-painters#the-scream",
            right.display()
        ))
        .status()
        .expect("runs");
    assert!(status.success());
    let result = atelier::imaging::load_rgb(&out).expect("result");
    let crop = |image: &RgbImage, x: u32, name: &str| {
        let path = dir.path().join(name);
        image::imageops::crop_imm(image, x, 0, 80, 128)
            .to_image()
            .save(&path)
            .expect("crop");
        path
    };
    let (result_left, result_right) = (crop(&result, 0, "rl.png"), crop(&result, 112, "rr.png"));
    let (photo_left, photo_right) = (crop(&content, 0, "pl.png"), crop(&content, 112, "pr.png"));
    let style_loss = |image: &Path, photo: &Path, style: &str| -> f64 {
        let output = atelier()
            .args(["score", "--json", "--size", "128", "--vgg"])
            .arg(&vgg)
            .arg(image)
            .arg("--photo")
            .arg(photo)
            .arg("--style")
            .arg(styles.join(style))
            .output()
            .expect("score runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = String::from_utf8_lossy(&output.stdout);
        let value: serde_json::Value = serde_json::from_str(line.trim()).expect("json");
        value["style_loss"].as_f64().expect("style loss")
    };
    let left_own = style_loss(&result_left, &photo_left, "starry-night.jpg");
    let left_other = style_loss(&result_left, &photo_left, "the-scream.jpg");
    let right_own = style_loss(&result_right, &photo_right, "the-scream.jpg");
    let right_other = style_loss(&result_right, &photo_right, "starry-night.jpg");
    eprintln!(
        "left {left_own:.2} (other {left_other:.2}), right {right_own:.2} (other {right_other:.2})"
    );
    assert!(left_own < left_other && right_own < right_other);
}

#[test]
fn cli_a_mask_that_is_not_an_image_is_a_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let photo_path = dir.path().join("photo.png");
    photo(64, 48).save(&photo_path).expect("photo");
    let mask = dir.path().join("mask.png");
    std::fs::write(&mask, "not an image").expect("mask");
    let out = dir.path().join("out.png");
    let output = atelier()
        .args([
            "stylize",
            "--method",
            "network",
            "--style",
            "styles/starry-night",
        ])
        .arg("--mask")
        .arg(&mask)
        .arg(&photo_path)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("mask.png") && stderr.contains("not an image"),
        "{stderr}"
    );
    assert!(!out.exists());
}
