//! The "New style" panel driven through egui_kittest with real training sessions: drop a
//! painting on the panel, start a tiny training (16 px crops, a random VGG16 file), watch
//! progress and previews, stop, resume from the checkpoint, finish, and pick the new style in
//! the gallery; closing the app while training waits for a checkpoint.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atelier::app::controls::MethodChoice;
use atelier::app::AtelierApp;
use atelier::styles::Origin;
use eframe::egui::accesskit::Role;
use eframe::egui::{Key, Modifiers, ViewportCommand};
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;

mod common;
use common::fixtures::random_vgg;
use common::harness::{gallery_names, has_message, step_until, Dropped};
use image::{Rgb, RgbImage};

fn harness(dir: &Path, vgg: PathBuf) -> Harness<'static, AtelierApp> {
    let mut options = common::harness::options(dir, Some(vgg));
    options.trained_styles_dir = Some(dir.join("my-styles"));
    common::harness::harness(options)
}

/// A few different synthetic photos in `dir/photos`.
fn photos(dir: &Path) -> PathBuf {
    let folder = dir.join("photos");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..3u32 {
        RgbImage::from_fn(24, 20, |x, y| {
            Rgb([(x * 9 + i * 40) as u8, (y * 7) as u8, (40 + i * 50) as u8])
        })
        .save(folder.join(format!("p{i}.png")))
        .unwrap();
    }
    folder
}

/// Diagonal colour stripes.
fn painting(dir: &Path) -> PathBuf {
    let path = dir.join("stripes.png");
    RgbImage::from_fn(40, 32, |x, y| {
        if ((x + y) / 3) % 2 == 0 {
            Rgb([220, 60, 20])
        } else {
            Rgb([20, 40, 200])
        }
    })
    .save(&path)
    .unwrap();
    path
}

/// Drops `path` on the middle of the "New style" window.
fn drop_on_panel(harness: &mut Harness<'_, AtelierApp>, path: &Path) {
    let rect = harness
        .state()
        .new_style_panel()
        .rect
        .expect("the panel is open");
    harness.hover_at(rect.center());
    harness.step();
    harness
        .input_mut()
        .dropped_files
        .push(std::sync::Arc::new(Dropped(path.to_path_buf())));
    harness.step();
}

#[test]
fn a_new_style_trains_stops_resumes_and_lands_in_the_gallery() {
    let dir = tempfile::tempdir().unwrap();
    let vgg = dir.path().join("vgg16.safetensors");
    random_vgg(&vgg);
    let photos = photos(dir.path());
    let painting = painting(dir.path());
    let mut harness = harness(dir.path(), vgg);
    harness.step();

    // Ctrl+N opens the panel; nothing can start without a work.
    harness.key_press_modifiers(Modifiers::COMMAND, Key::N);
    harness.run_steps(3);
    assert!(harness
        .get_by_role_and_label(Role::Button, "Start training")
        .accesskit_node()
        .is_disabled());

    // The painting is dropped on the panel; the name comes from its file until one is typed.
    drop_on_panel(&mut harness, &painting);
    assert_eq!(
        harness.state_mut().new_style_settings_mut().works,
        vec![painting.clone()]
    );
    assert_eq!(
        harness
            .state_mut()
            .new_style_settings_mut()
            .effective_name(),
        "Stripes"
    );
    // The name and the photo folder are typed into the panel.
    let name = harness.get_by_role_and_label(Role::TextInput, "Name");
    name.focus();
    name.type_text("Bold Stripes");
    harness.run_steps(2);
    let folder_field = harness.get_by_role_and_label(Role::TextInput, "Training photos");
    folder_field.focus();
    folder_field.set_text_value_accesskit(&photos.display().to_string());
    harness.run_steps(2);
    {
        let settings = harness.state_mut().new_style_settings_mut();
        assert_eq!(settings.name, "Bold Stripes");
        assert_eq!(settings.photos.as_deref(), Some(photos.as_path()));
    }
    harness.get_by_label("3 photos.");
    // Tiny settings through the panel's own sliders: a long run to stop in the middle of.
    harness
        .get_by_role_and_label(Role::Slider, "Iterations")
        .set_value_accesskit(5000.0);
    harness
        .get_by_role_and_label(Role::Slider, "Crop size")
        .set_value_accesskit(16.0);
    harness.run_steps(2);
    {
        let settings = harness.state_mut().new_style_settings_mut();
        assert_eq!((settings.iterations, settings.size), (5000, 16));
    }
    // One work: the adversarial weight is greyed out.
    assert!(harness
        .get_by_role_and_label(Role::Slider, "Adversarial weight")
        .accesskit_node()
        .is_disabled());

    harness.get_by_label("Start training").click();
    step_until(
        &mut harness,
        Duration::from_secs(120),
        "progress and a preview",
        |app| {
            let panel = app.new_style_panel();
            panel.previews_received() >= 1 && panel.progress().is_some_and(|(i, _)| i >= 2)
        },
    );
    assert!(harness.state().new_style_panel().is_training());
    // The progress line and the note about shared CPU are shown.
    harness.get_by_label_contains("Iteration ");
    harness.get_by_label_contains("images/s");
    assert!(harness
        .state()
        .new_style_panel()
        .status()
        .is_some_and(|s| s.starts_with("Training “Bold Stripes”")));

    harness.get_by_label("Stop").click();
    step_until(&mut harness, Duration::from_secs(60), "the stop", |app| {
        !app.new_style_panel().is_training()
    });
    assert!(has_message(&harness, "stopped at iteration"));
    let folder = dir.path().join("my-styles").join("bold-stripes");
    let checkpoint = folder.join("checkpoint.safetensors");
    assert!(checkpoint.is_file(), "Stop saves a checkpoint");
    let stopped_at = atelier::train::checkpoint::peek(&checkpoint)
        .unwrap()
        .iteration;
    assert!(stopped_at >= 2);
    assert!(
        harness.state().gallery_entries().is_empty(),
        "an unfinished training is not a style yet"
    );

    // The panel finds the checkpoint and offers Resume; a short way further it finishes.
    harness.run_steps(2);
    harness.get_by_label_contains("unfinished training");
    harness.state_mut().new_style_settings_mut().iterations = stopped_at + 2;
    harness.run_steps(2);
    harness.get_by_label("Resume").click();
    step_until(
        &mut harness,
        Duration::from_secs(120),
        "the finished style",
        |app| app.new_style_panel().finished_runs() == 1,
    );
    harness.step();
    assert!(
        has_message(&harness, "New style “Bold Stripes” is in the gallery"),
        "{:?}",
        harness.state().messages()
    );
    let entry = harness
        .state()
        .gallery_entries()
        .iter()
        .find(|e| e.name == "Bold Stripes")
        .expect("the new style in the gallery")
        .clone();
    assert_eq!(entry.origin, Origin::Trained);
    assert_eq!(entry.model, Some(folder.join("model.safetensors")));
    let manifest = std::fs::read_to_string(folder.join("style.toml")).unwrap();
    assert!(
        manifest.contains(&format!("iterations = {}", stopped_at + 2)),
        "{manifest}"
    );

    // Its tile picks it like any other style: a trained network.
    harness
        .get_by_role_and_label(Role::Button, "Bold Stripes")
        .click();
    harness.run_steps(2);
    assert_eq!(harness.state().controls().method, MethodChoice::Network);

    // The same name again: the panel asks before replacing; Cancel keeps the style.
    harness.run_steps(2);
    harness.get_by_label("Replace…").click();
    harness.run_steps(2);
    harness.get_by_label_contains("Replacing it deletes");
    harness.get_by_label("Cancel").click();
    harness.run_steps(2);
    assert!(harness
        .query_by_label_contains("Replacing it deletes")
        .is_none());
    assert!(folder.join("model.safetensors").is_file());
    assert!(!harness.state().new_style_panel().is_training());
}

#[test]
fn closing_the_app_while_training_waits_for_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let vgg = dir.path().join("vgg16.safetensors");
    random_vgg(&vgg);
    let photos = photos(dir.path());
    let painting = painting(dir.path());
    let mut harness = harness(dir.path(), vgg);
    harness.state_mut().open_new_style();
    harness.state_mut().add_new_style_works(vec![painting]);
    {
        let settings = harness.state_mut().new_style_settings_mut();
        settings.name = "Closing".into();
        settings.photos = Some(photos);
        settings.iterations = 5000;
        settings.size = 16;
    }
    harness.run_steps(2);
    harness.get_by_label("Start training").click();
    step_until(&mut harness, Duration::from_secs(120), "progress", |app| {
        app.new_style_panel()
            .progress()
            .is_some_and(|(i, _)| i >= 1)
    });

    // The close waits until the checkpoint is saved, then the app closes the window itself.
    assert!(harness.state_mut().close_requested());
    let start = Instant::now();
    loop {
        harness.step();
        let closes = harness
            .output()
            .viewport_output
            .values()
            .any(|v| v.commands.contains(&ViewportCommand::Close));
        if closes {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no close after the stop"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!harness.state().new_style_panel().is_training());
    let checkpoint = dir
        .path()
        .join("my-styles")
        .join("closing")
        .join("checkpoint.safetensors");
    assert!(checkpoint.is_file());
    // Nothing runs any more: a second close goes ahead at once.
    assert!(!harness.state_mut().close_requested());
}

/// Every control of the panel shows a tooltip when hovered (greyed-out ones say why).
#[test]
fn every_control_of_the_panel_has_a_tooltip() {
    let dir = tempfile::tempdir().unwrap();
    let photos = photos(dir.path());
    let painting = painting(dir.path());
    let mut harness = harness(dir.path(), dir.path().join("no-vgg.safetensors"));
    harness.state_mut().open_new_style();
    harness
        .state_mut()
        .add_new_style_works(vec![painting, photos.clone()]);
    harness.state_mut().new_style_settings_mut().photos = Some(photos);
    harness.run_steps(4);
    let panel = harness.state().new_style_panel().rect.expect("the panel");
    let interactive = [
        Role::Button,
        Role::CheckBox,
        Role::Slider,
        Role::SpinButton,
        Role::TextInput,
        Role::DisclosureTriangle,
    ];
    let controls: Vec<(Role, String, eframe::egui::Rect)> = harness
        .query_all_by(|node| interactive.contains(&node.role()))
        .filter(|node| panel.contains_rect(node.rect()))
        .map(|node| {
            let label = node.accesskit_node().label().unwrap_or_default();
            (node.accesskit_node().role(), label, node.rect())
        })
        // The window's close button is egui's own; the canvas's button lies under the window.
        .filter(|(_, label, _)| !["", "Close window", "Open a photo…"].contains(&label.as_str()))
        .collect();
    assert!(controls.len() >= 12, "found only {controls:?}");
    let mut missing = Vec::new();
    for (role, label, rect) in &controls {
        harness.hover_at(rect.center());
        harness.run_steps(4);
        if harness.query_by_role(Role::Tooltip).is_none() {
            missing.push(format!("{role:?} {label:?}"));
        }
        harness.remove_cursor();
        harness.run_steps(2);
    }
    assert!(missing.is_empty(), "no tooltip on: {missing:?}");
}

/// Two works trained as one conditional network from the panel: the checkbox is offered once
/// there are two, greys out the discriminator, and the finished network lands in the gallery
/// as the network plus one tile per work.
#[test]
fn two_works_train_as_one_conditional_network_from_the_panel() {
    let dir = tempfile::tempdir().unwrap();
    let vgg = dir.path().join("vgg16.safetensors");
    random_vgg(&vgg);
    let photos = photos(dir.path());
    let stripes = painting(dir.path());
    let squares = dir.path().join("squares.png");
    RgbImage::from_fn(36, 36, |x, y| {
        if (x / 12 + y / 12) % 2 == 0 {
            Rgb([250, 230, 40])
        } else {
            Rgb([30, 150, 60])
        }
    })
    .save(&squares)
    .unwrap();
    let mut harness = harness(dir.path(), vgg);
    harness.step();
    harness.key_press_modifiers(Modifiers::COMMAND, Key::N);
    harness.run_steps(3);
    drop_on_panel(&mut harness, &stripes);
    assert!(harness
        .get_by_role_and_label(Role::CheckBox, "One network, one style per work")
        .accesskit_node()
        .is_disabled());
    drop_on_panel(&mut harness, &squares);
    {
        let settings = harness.state_mut().new_style_settings_mut();
        settings.name = "Pair".into();
        settings.photos = Some(photos.clone());
        settings.iterations = 4;
        settings.size = 16;
    }
    harness.run_steps(2);
    harness
        .get_by_role_and_label(Role::CheckBox, "One network, one style per work")
        .click();
    harness.run_steps(2);
    assert!(harness.state_mut().new_style_settings_mut().conditional);
    assert!(harness
        .get_by_role_and_label(Role::Slider, "Adversarial weight")
        .accesskit_node()
        .is_disabled());
    harness.get_by_label("Start training").click();
    step_until(
        &mut harness,
        Duration::from_secs(120),
        "the finished network",
        |app| app.new_style_panel().finished_runs() == 1,
    );
    harness.step();
    assert_eq!(gallery_names(&harness), ["Pair", "stripes", "squares"]);
    let model = dir.path().join("my-styles/pair/model.safetensors");
    let net =
        atelier::nn::transformer::TransformerNet::load(&model, &candle_core::Device::Cpu).unwrap();
    assert_eq!(net.styles(), 2);
}
