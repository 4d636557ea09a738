//! Drives the desktop app through egui_kittest with a real engine: open a photo, pick a style,
//! move the strength slider, receive previews, save; and checks the UI thread never waits on the
//! engine (every frame's `ui` returns quickly while a job runs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atelier::app::{AppOptions, AtelierApp};
use atelier::nn::transformer::TransformerNet;
use candle_core::{DType, Device};
use eframe::egui::accesskit::Role;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use image::{Rgb, RgbImage};

const VGG: &str = "../shared/models/vgg16-features.safetensors";
/// A frame must stay under this (30 fps) while the engine works.
const FRAME_BUDGET: Duration = Duration::from_millis(33);

fn photo(dir: &Path) -> PathBuf {
    let path = dir.join("photo.png");
    let image = RgbImage::from_fn(64, 40, |x, y| Rgb([(x * 4) as u8, (y * 6) as u8, 128]));
    image.save(&path).unwrap();
    path
}

fn style_image(dir: &Path) -> PathBuf {
    let path = dir.join("tiny-style.png");
    let image = RgbImage::from_fn(32, 32, |x, y| {
        if (x / 4 + y / 4) % 2 == 0 {
            Rgb([220, 40, 30])
        } else {
            Rgb([20, 30, 200])
        }
    });
    image.save(&path).unwrap();
    path
}

fn harness(options: AppOptions) -> Harness<'static, AtelierApp> {
    Harness::builder()
        .with_size(eframe::egui::vec2(1280.0, 800.0))
        .build_eframe(move |cc| AtelierApp::new(cc, options))
}

fn options(dir: &Path, vgg: Option<PathBuf>) -> AppOptions {
    let styles = dir.join("styles");
    std::fs::create_dir_all(&styles).unwrap();
    AppOptions {
        photo: None,
        styles_dir: styles,
        vgg,
        debounce: Duration::from_millis(20),
        use_storage: false,
    }
}

/// Steps frames (in real time, the engine runs on its own thread) until `done` or `timeout`.
fn step_until(
    harness: &mut Harness<'_, AtelierApp>,
    timeout: Duration,
    what: &str,
    done: impl Fn(&AtelierApp) -> bool,
) {
    let start = Instant::now();
    while !done(harness.state()) {
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}; messages: {:?}",
            harness.state().messages()
        );
        harness.step();
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn strength_slider_to(harness: &mut Harness<'_, AtelierApp>, value: f64) {
    harness
        .get_by_role_and_label(Role::Slider, "Strength")
        .set_value_accesskit(value);
    harness.step();
    harness.step();
}

#[test]
fn network_style_previews_blends_and_saves_without_blocking_frames() {
    let dir = tempfile::tempdir().unwrap();
    let photo = photo(dir.path());
    // A custom model file, as a user would add one (random weights: no training needed).
    let model = dir.path().join("random-style.safetensors");
    TransformerNet::random(&Device::Cpu, 7)
        .unwrap()
        .save_safetensors(&model, DType::F32, HashMap::new())
        .unwrap();

    let mut harness = harness(options(dir.path(), None));
    harness.step();
    // An empty styles folder is an empty gallery, not an error.
    assert!(harness.state().gallery_entries().is_empty());
    harness.get_by_label("Open a photo…");

    harness.state_mut().open_photo(photo.clone());
    step_until(&mut harness, Duration::from_secs(20), "the photo", |app| {
        app.has_photo()
    });
    harness.state_mut().add_user_styles(vec![model.clone()]);
    harness.step();
    // The added model shows in the gallery; clicking its tile picks it and starts a job.
    harness
        .get_by_role_and_label(Role::Button, "random-style")
        .click();
    step_until(
        &mut harness,
        Duration::from_secs(60),
        "the network result",
        |app| app.finished_jobs() >= 1 && !app.job_running(),
    );
    let full = harness
        .state()
        .shown_image()
        .expect("a result on the canvas");

    strength_slider_to(&mut harness, 0.25);
    assert!((harness.state().controls().strength - 0.25).abs() < 1e-3);
    let quarter = harness.state().shown_image().unwrap();
    assert_ne!(full, quarter, "strength re-blends the shown result");
    // No recompute for a strength change.
    assert!(!harness.state().is_busy());

    let out = dir.path().join("out.jpg");
    harness.state_mut().save_to(out.clone());
    step_until(
        &mut harness,
        Duration::from_secs(60),
        "the saved file",
        |app| !app.is_busy(),
    );
    assert_eq!(harness.state().saved_files(), std::slice::from_ref(&out));
    let saved = image::open(&out).unwrap();
    assert_eq!(
        (saved.width(), saved.height()),
        (64, 40),
        "saved at the photo's full size"
    );

    // Never over the source.
    harness.state_mut().save_to(photo.clone());
    harness.step();
    assert!(harness
        .state()
        .messages()
        .iter()
        .any(|(_, m)| m.contains("refusing to overwrite")));
}

#[test]
fn gatys_previews_stream_while_frames_stay_fast_and_the_recipe_round_trips() {
    if !Path::new(VGG).is_file() {
        eprintln!("skipping: {VGG} not found (the VGG weights live in ../shared/models)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let photo = photo(dir.path());
    let style = style_image(dir.path());
    let mut harness = harness(options(dir.path(), Some(PathBuf::from(VGG))));
    harness.state_mut().update_controls(|c| {
        c.preview_size = 64;
        c.steps = 3;
        c.preview_every = 1;
    });
    harness.state_mut().open_photo(photo.clone());
    step_until(&mut harness, Duration::from_secs(20), "the photo", |app| {
        app.has_photo()
    });
    harness.state_mut().add_user_styles(vec![style.clone()]);

    // Previews stream in from the real engine while each frame returns quickly.
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    while harness.state().finished_jobs() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no result; messages: {:?}",
            harness.state().messages()
        );
        let frame = Instant::now();
        harness.step();
        slowest = slowest.max(frame.elapsed());
        std::thread::sleep(Duration::from_millis(2));
    }
    let stats = harness.state().frame_stats().clone();
    eprintln!(
        "frames during the Gatys job: {} (ui mean {:.2} ms, ui max {:.2} ms; whole harness step max {:.2} ms)",
        stats.frames_during_job,
        stats.mean_during_job().as_secs_f64() * 1e3,
        stats.max_during_job.as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3
    );
    assert!(
        harness.state().previews_received() >= 1,
        "previews arrive before the end"
    );
    assert!(
        stats.frames_during_job >= 3,
        "frames kept coming while the job ran"
    );
    assert!(
        stats.max_during_job < FRAME_BUDGET,
        "a frame took {:?} while the engine worked",
        stats.max_during_job
    );

    strength_slider_to(&mut harness, 0.5);
    let out = dir.path().join("result.png");
    harness.state_mut().save_to(out.clone());
    step_until(
        &mut harness,
        Duration::from_secs(300),
        "the saved PNG",
        |app| !app.is_busy() && !app.saved_files().is_empty(),
    );
    let recipe = atelier::recipe::load_recipe(&out).unwrap();
    assert_eq!(recipe.method, "optimize");
    assert_eq!(recipe.styles.len(), 1);
    assert_eq!(recipe.styles[0].path, style);
    assert_eq!(recipe.steps, 3);
    assert!((recipe.strength - 0.5).abs() < 1e-3);
    assert_eq!(recipe.size, 64, "full photo size");

    // Loading the recipe restores the controls.
    harness.state_mut().update_controls(|c| {
        c.steps = 9;
        c.strength = 1.0;
    });
    harness.state_mut().load_recipe_from(out);
    step_until(&mut harness, Duration::from_secs(20), "the recipe", |app| {
        app.controls().steps == 3
    });
    assert!((harness.state().controls().strength - 0.5).abs() < 1e-3);
}
