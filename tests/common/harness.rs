//! The desktop app under egui_kittest, with a real engine.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atelier::app::{AppOptions, AtelierApp};
use egui_kittest::Harness;

/// Options for a test app: styles from `dir/styles`, trained styles into `dir/trained`, no
/// storage, a short debounce.
pub fn options(dir: &Path, vgg: Option<PathBuf>) -> AppOptions {
    let styles = dir.join("styles");
    std::fs::create_dir_all(&styles).unwrap();
    AppOptions {
        photo: None,
        styles_dir: styles,
        trained_styles_dir: Some(dir.join("trained")),
        vgg,
        debounce: Duration::from_millis(20),
        use_storage: false,
    }
}

pub fn harness(options: AppOptions) -> Harness<'static, AtelierApp> {
    Harness::builder()
        .with_size(eframe::egui::vec2(1280.0, 800.0))
        .build_eframe(move |cc| AtelierApp::new(cc, options).expect("the app starts"))
}

/// Steps frames in real time (the engine runs on its own threads) until `done` or `timeout`.
pub fn step_until(
    harness: &mut Harness<'_, AtelierApp>,
    timeout: Duration,
    what: &str,
    done: impl Fn(&AtelierApp) -> bool,
) {
    let start = Instant::now();
    while !done(harness.state()) {
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}; messages: {:?}; training: {:?}",
            harness.state().messages(),
            harness.state().new_style_panel().status()
        );
        harness.step();
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn has_message(harness: &Harness<'_, AtelierApp>, needle: &str) -> bool {
    harness
        .state()
        .messages()
        .iter()
        .any(|(_, m)| m.contains(needle))
}

/// A file dropped on the window, as the windowing integration would report it.
#[derive(Debug)]
pub struct Dropped(pub PathBuf);

impl eframe::egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

/// The gallery's tile names, in order.
pub fn gallery_names(harness: &Harness<'_, AtelierApp>) -> Vec<String> {
    harness
        .state()
        .gallery_entries()
        .iter()
        .map(|e| e.name.clone())
        .collect()
}
