//! Small background jobs the UI must not wait for: decoding photos, style images and thumbnails,
//! writing renders, file dialogs. Each runs on its own short-lived thread and reports over one
//! channel the app drains every frame.

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use eframe::egui;
use image::{GrayImage, RgbImage};

use super::mask::Layer;
use crate::recipe::Recipe;

/// The photo is shown at most this large; the original is kept for the final render.
pub const DISPLAY_MAX_SIDE: u32 = 2048;
/// Preview jobs get the photo at most this large (the engine scales it down further).
pub const WORKING_MAX_SIDE: u32 = 1024;
/// Style images are kept at most this large (enough for any sensible render size).
pub const STYLE_MAX_SIDE: u32 = 2048;
/// Gallery thumbnails' longer side.
pub const THUMBNAIL_SIDE: u32 = 160;

/// A decoded photo in the sizes the app needs.
pub struct LoadedPhoto {
    pub path: PathBuf,
    pub original: Arc<RgbImage>,
    /// For preview jobs.
    pub working: Arc<RgbImage>,
    /// For the canvas.
    pub display: egui::ColorImage,
}

/// What a file dialog was opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogPurpose {
    OpenPhoto,
    AddStyles,
    SaveAs,
    LoadRecipe,
    /// An image to use as the brush's current mask.
    LoadMask,
    /// Style works for a new style (images).
    StyleWorks,
    /// A folder of works for a new style.
    StyleWorksFolder,
    /// The folder of training photos for a new style.
    TrainingPhotos,
    /// A video file to stylise frame by frame.
    OpenVideo,
    /// A folder of frames (images in name order) to stylise as a clip.
    OpenFrameFolder,
    /// Where the stylised video goes.
    RenderVideo,
}

pub enum TaskResult {
    Photo(Box<LoadedPhoto>),
    StyleImage {
        path: PathBuf,
        image: Arc<RgbImage>,
    },
    Thumbnail {
        path: PathBuf,
        image: egui::ColorImage,
    },
    Saved {
        path: PathBuf,
    },
    Recipe(Box<LoadedRecipe>),
    /// A clip described, with its first frame.
    Clip {
        info: crate::engine::ClipInfo,
        first: Box<LoadedPhoto>,
    },
    /// Frame `index` of the clip at `first.path` (scrubbing).
    ClipFrame {
        index: u64,
        frame: Box<LoadedPhoto>,
    },
    /// A mask file for `layer`.
    Mask {
        path: PathBuf,
        layer: Layer,
        image: GrayImage,
    },
    Picked {
        purpose: DialogPurpose,
        paths: Vec<PathBuf>,
    },
    /// A task failed; `what` says which (e.g. "thumbnail"), `key` names the file it was about.
    Failed {
        what: &'static str,
        key: PathBuf,
        message: String,
    },
}

/// A recipe read from a PNG, its masks decoded.
pub struct LoadedRecipe {
    pub recipe: Recipe,
    pub masks: Vec<(Layer, GrayImage)>,
    /// Masks that could not be read, in words.
    pub problems: Vec<String>,
}

/// Reads the recipe of the PNG at `path` and decodes its masks.
pub fn load_recipe(path: PathBuf) -> TaskResult {
    match crate::recipe::load_recipe(&path) {
        Ok(recipe) => {
            let mut masks = Vec::new();
            let mut problems = Vec::new();
            for mask in recipe.regions.iter().flat_map(|r| &r.masks) {
                let layer = mask.style.clone().map_or(Layer::Photo, Layer::Style);
                match mask.image(&path) {
                    Ok(image) => masks.push((layer, image)),
                    Err(e) => problems.push(format!("A mask of the recipe is unreadable: {e}")),
                }
            }
            TaskResult::Recipe(Box::new(LoadedRecipe {
                recipe,
                masks,
                problems,
            }))
        }
        Err(e) => TaskResult::Failed {
            what: "recipe",
            key: path,
            message: e.to_string(),
        },
    }
}

/// Reads an image file as a grey mask (alpha counts as black) for `layer`.
pub fn load_mask(path: PathBuf, layer: Layer) -> TaskResult {
    match crate::imaging::load_mask(&path) {
        Ok(image) => TaskResult::Mask { path, layer, image },
        Err(e) => TaskResult::Failed {
            what: "mask",
            key: path,
            message: e.to_string(),
        },
    }
}

/// Spawns tasks and collects their results.
pub struct Tasks {
    sender: Sender<TaskResult>,
    receiver: Receiver<TaskResult>,
    ctx: egui::Context,
}

impl Tasks {
    pub fn new(ctx: egui::Context) -> Self {
        let (sender, receiver) = crossbeam_channel::unbounded();
        Self {
            sender,
            receiver,
            ctx,
        }
    }

    /// Runs `work` on a new thread; its result wakes the UI.
    pub fn spawn(&self, name: &str, work: impl FnOnce() -> TaskResult + Send + 'static) {
        let sender = self.sender.clone();
        let ctx = self.ctx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("atelier-{name}"))
            .spawn(move || {
                let _ = sender.send(work());
                ctx.request_repaint();
            });
        if let Err(e) = spawned {
            let _ = self.sender.send(TaskResult::Failed {
                what: "background task",
                key: PathBuf::new(),
                message: format!("could not start a thread: {e}"),
            });
        }
    }

    /// Results that arrived since the last call; never blocks.
    pub fn drain(&self) -> Vec<TaskResult> {
        self.receiver.try_iter().collect()
    }
}

pub fn to_color_image(image: &RgbImage) -> egui::ColorImage {
    egui::ColorImage::from_rgb(
        [image.width() as usize, image.height() as usize],
        image.as_raw(),
    )
}

/// Shrinks `image` so its longer side is at most `max_side` (never enlarges).
pub fn shrink_to(image: &RgbImage, max_side: u32) -> RgbImage {
    if image.width().max(image.height()) <= max_side {
        image.clone()
    } else {
        crate::imaging::resize_longer_side(image, max_side)
    }
}

/// Resizes for display on the UI thread: area averaging when shrinking, which is several times
/// cheaper than the Catmull-Rom filter used for rendering (that one cost a 60 ms frame when the
/// first preview arrived). The finished result brings the engine's own photo copy.
pub fn display_resize(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    if width <= image.width() && height <= image.height() {
        image::imageops::thumbnail(image, width, height)
    } else {
        crate::imaging::resize_exact(image, width, height)
    }
}

/// `original` in the sizes the app needs (a photo, or a video's frame).
pub fn loaded_photo(path: PathBuf, original: RgbImage) -> LoadedPhoto {
    let working = shrink_to(&original, WORKING_MAX_SIDE);
    let display = to_color_image(&shrink_to(&original, DISPLAY_MAX_SIDE));
    LoadedPhoto {
        path,
        original: Arc::new(original),
        working: Arc::new(working),
        display,
    }
}

pub fn load_photo(path: PathBuf) -> TaskResult {
    match crate::imaging::load_rgb(&path) {
        Ok(original) => TaskResult::Photo(Box::new(loaded_photo(path, original))),
        Err(e) => TaskResult::Failed {
            what: "photo",
            key: path,
            message: e.to_string(),
        },
    }
}

pub fn load_style_image(path: PathBuf) -> TaskResult {
    match crate::imaging::load_rgb(&path) {
        Ok(image) => TaskResult::StyleImage {
            image: Arc::new(shrink_to(&image, STYLE_MAX_SIDE)),
            path,
        },
        Err(e) => TaskResult::Failed {
            what: "style image",
            key: path,
            message: e.to_string(),
        },
    }
}

pub fn load_thumbnail(path: PathBuf) -> TaskResult {
    match crate::imaging::load_rgb(&path) {
        Ok(image) => TaskResult::Thumbnail {
            image: to_color_image(&shrink_to(&image, THUMBNAIL_SIDE)),
            path,
        },
        Err(e) => TaskResult::Failed {
            what: "thumbnail",
            key: path,
            message: e.to_string(),
        },
    }
}

/// Checks that `path`'s folder exists and takes new files, before minutes of rendering are
/// spent on a Save that cannot be written (the write itself stays atomic and checks again).
pub fn check_writable(path: &std::path::Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!("the folder {} does not exist", dir.display()));
    }
    if path.is_dir() {
        return Err(format!("{} is a folder", path.display()));
    }
    tempfile::Builder::new()
        .prefix(".atelier-probe-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| {
            // The kind only: the error itself names the probe file, which means nothing to users.
            let why = match e.kind() {
                std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                std::io::ErrorKind::ReadOnlyFilesystem => "read-only file system".to_string(),
                std::io::ErrorKind::StorageFull => "the disk is full".to_string(),
                std::io::ErrorKind::NotFound => "files cannot be created there".to_string(),
                other => other.to_string(),
            };
            format!("cannot write in {} ({why})", dir.display())
        })
}

/// What to say when no native file dialog can be shown.
const NO_DIALOG: &str = "No file dialog is available on this system (it needs the XDG desktop \
     portal over D-Bus, or `zenity`). Drop files on the window instead, pass the photo on the \
     command line, or type the output path in the Save field.";

/// A dialog that comes back empty sooner than this did not show (nobody cancels that fast).
const DIALOG_FAILED_WITHIN: std::time::Duration = std::time::Duration::from_millis(250);

/// Why no dialog can open, when that is known beforehand: rfd asks the XDG portal over the
/// D-Bus session bus and falls back to `zenity`; with neither it returns nothing, exactly like
/// a cancelled dialog, so the user would see nothing happen.
fn dialog_unavailable() -> bool {
    if !cfg!(all(unix, not(target_os = "macos"))) || on_path("zenity") {
        return false;
    }
    let bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|v| !v.is_empty())
        || std::env::var_os("XDG_RUNTIME_DIR")
            .is_some_and(|dir| std::path::Path::new(&dir).join("bus").exists());
    !bus
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Opens a native file dialog (on this background thread, so the UI keeps drawing).
pub fn run_dialog(
    purpose: DialogPurpose,
    folder: Option<PathBuf>,
    file_name: Option<String>,
) -> TaskResult {
    let failed = || TaskResult::Failed {
        what: "file dialog",
        key: PathBuf::new(),
        message: NO_DIALOG.into(),
    };
    if dialog_unavailable() {
        return failed();
    }
    let opened = std::time::Instant::now();
    // Both cases: the zenity fallback matches extensions case-sensitively (PHOTO.JPG).
    let any_case = |extensions: &[&str]| -> Vec<String> {
        extensions
            .iter()
            .flat_map(|e| [e.to_string(), e.to_ascii_uppercase()])
            .collect()
    };
    let images = any_case(&crate::styles::IMAGE_EXTENSIONS);
    let mut styles_and_models = images.clone();
    styles_and_models.extend(any_case(&crate::styles::MODEL_EXTENSIONS));
    let mut dialog = rfd::FileDialog::new();
    if let Some(folder) = folder.filter(|f| f.is_dir()) {
        dialog = dialog.set_directory(folder);
    }
    let paths: Vec<PathBuf> = match purpose {
        DialogPurpose::OpenPhoto => dialog
            .set_title("Open a photo")
            .add_filter("Images", &images)
            .pick_file()
            .into_iter()
            .collect(),
        DialogPurpose::AddStyles => dialog
            .set_title("Add style images or trained models")
            .add_filter("Style images and models", &styles_and_models)
            .pick_files()
            .unwrap_or_default(),
        DialogPurpose::SaveAs => {
            if let Some(name) = file_name {
                dialog = dialog.set_file_name(name);
            }
            dialog
                .set_title("Save the stylised photo")
                .add_filter("PNG (keeps the recipe)", &any_case(&["png"]))
                .add_filter("JPEG", &any_case(&["jpg", "jpeg"]))
                .save_file()
                .into_iter()
                .collect()
        }
        DialogPurpose::LoadRecipe => dialog
            .set_title("Load the recipe of a PNG saved by Atelier")
            .add_filter("PNG", &any_case(&["png"]))
            .pick_file()
            .into_iter()
            .collect(),
        DialogPurpose::LoadMask => dialog
            .set_title("Load a mask (white: the style paints)")
            .add_filter("Images", &images)
            .pick_file()
            .into_iter()
            .collect(),
        DialogPurpose::StyleWorks => dialog
            .set_title("Choose a painting, or several works by one artist")
            .add_filter("Images", &images)
            .pick_files()
            .unwrap_or_default(),
        DialogPurpose::StyleWorksFolder => dialog
            .set_title("Choose a folder of works by one artist")
            .pick_folder()
            .into_iter()
            .collect(),
        DialogPurpose::TrainingPhotos => dialog
            .set_title("Choose the folder of training photos")
            .pick_folder()
            .into_iter()
            .collect(),
        DialogPurpose::OpenVideo => dialog
            .set_title("Open a video")
            .add_filter("Videos", &any_case(&super::video::VIDEO_EXTENSIONS))
            .pick_file()
            .into_iter()
            .collect(),
        DialogPurpose::OpenFrameFolder => dialog
            .set_title("Open a folder of frames (images in name order)")
            .pick_folder()
            .into_iter()
            .collect(),
        DialogPurpose::RenderVideo => {
            if let Some(name) = file_name {
                dialog = dialog.set_file_name(name);
            }
            // A name without an extension is a folder of PNG frames.
            dialog
                .set_title("Render the stylised video")
                .add_filter("MP4", &any_case(&["mp4"]))
                .add_filter("Matroska", &any_case(&["mkv"]))
                .add_filter("QuickTime", &any_case(&["mov"]))
                .save_file()
                .into_iter()
                .collect()
        }
    };
    let no_fallback =
        cfg!(all(unix, not(target_os = "macos"))) && !on_path("zenity") && paths.is_empty();
    if no_fallback && opened.elapsed() < DIALOG_FAILED_WITHIN {
        // The portal refused at once (no portal service on the bus) and there is no zenity.
        return failed();
    }
    TaskResult::Picked { purpose, paths }
}
