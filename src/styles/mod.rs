//! The style gallery's model: bundled styles (`styles/NAME/style.toml`), style images the user
//! added, and custom-trained model files. No UI here; the app's gallery panel draws these.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// File extensions taken as trained feed-forward models (pytorch fast_neural_style layout).
pub const MODEL_EXTENSIONS: [&str; 2] = ["safetensors", "pth"];
/// File extensions taken as style images.
pub const IMAGE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"];
/// The manifest's file name inside each bundled style folder.
pub const MANIFEST_NAME: &str = "style.toml";

#[derive(Debug, thiserror::Error)]
pub enum StyleError {
    #[error("{path}: cannot read the style manifest: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Unusable { path: PathBuf, reason: String },
}

/// `styles/NAME/style.toml`. Paths are relative to the style's folder.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Shown under the thumbnail; defaults to the folder name.
    pub name: Option<String>,
    /// Painter, title, licence: shown as the thumbnail's tooltip.
    pub description: Option<String>,
    /// A trained network (`.safetensors` / `.pth`), run with the network method.
    pub model: Option<PathBuf>,
    /// A style image, used by the optimisation method.
    pub image: Option<PathBuf>,
    /// A small picture for the gallery; defaults to the style image.
    pub thumbnail: Option<PathBuf>,
}

/// Where a gallery entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Bundled,
    /// Added by the user (remembered between runs).
    User,
}

/// One gallery entry. At least one of `model` and `image` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct StyleEntry {
    pub name: String,
    pub description: Option<String>,
    pub model: Option<PathBuf>,
    pub image: Option<PathBuf>,
    pub thumbnail: Option<PathBuf>,
    pub origin: Origin,
}

impl StyleEntry {
    /// A stable key (the file the style runs from) for selections and persistence.
    pub fn key(&self) -> &Path {
        self.image
            .as_deref()
            .or(self.model.as_deref())
            .unwrap_or_else(|| Path::new(""))
    }

    /// An entry for a file the user added: a model file by extension, else a style image.
    pub fn from_user_file(path: &Path) -> Result<Self, StyleError> {
        if !path.is_file() {
            return Err(StyleError::Unusable {
                path: path.to_path_buf(),
                reason: "no such file".into(),
            });
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "style".into());
        let (model, image) = match file_kind(path) {
            Some(FileKind::Model) => (Some(path.to_path_buf()), None),
            Some(FileKind::Image) => (None, Some(path.to_path_buf())),
            None => {
                return Err(StyleError::Unusable {
                    path: path.to_path_buf(),
                    reason: "not a style image (PNG, JPEG, WebP, BMP, TIFF) or a model file \
                             (.safetensors, .pth)"
                        .into(),
                })
            }
        };
        Ok(Self {
            name,
            description: None,
            thumbnail: image.clone(),
            model,
            image,
            origin: Origin::User,
        })
    }

    /// The entry a bundled style folder describes.
    pub fn from_manifest(folder: &Path, manifest: Manifest) -> Result<Self, StyleError> {
        let resolve = |p: Option<PathBuf>| p.map(|p| folder.join(p));
        let model = resolve(manifest.model);
        let image = resolve(manifest.image);
        let manifest_path = folder.join(MANIFEST_NAME);
        if model.is_none() && image.is_none() {
            return Err(StyleError::Unusable {
                path: manifest_path,
                reason: "names neither a `model` nor an `image`".into(),
            });
        }
        for path in model.iter().chain(image.iter()) {
            if !path.is_file() {
                return Err(StyleError::Unusable {
                    path: manifest_path,
                    reason: format!("refers to {}, which does not exist", path.display()),
                });
            }
        }
        let name = manifest.name.unwrap_or_else(|| {
            folder
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "style".into())
        });
        let thumbnail = resolve(manifest.thumbnail)
            .filter(|p| p.is_file())
            .or_else(|| image.clone());
        Ok(Self {
            name,
            description: manifest.description,
            model,
            image,
            thumbnail,
            origin: Origin::Bundled,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Image,
    Model,
}

/// Classifies a file by its extension (case-insensitive).
pub fn file_kind(path: &Path) -> Option<FileKind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    if MODEL_EXTENSIONS.contains(&ext.as_str()) {
        Some(FileKind::Model)
    } else if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
        Some(FileKind::Image)
    } else {
        None
    }
}

/// Parses a `style.toml`.
pub fn parse_manifest(text: &str, path: &Path) -> Result<Manifest, StyleError> {
    toml::from_str(text).map_err(|e| StyleError::Manifest {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Reads every `DIR/*/style.toml`, sorted by folder name. A missing `dir` is an empty gallery;
/// a broken style is skipped and reported in the second list, so one bad folder hides nothing else.
pub fn load_bundled(dir: &Path) -> (Vec<StyleEntry>, Vec<StyleError>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let Ok(read) = std::fs::read_dir(dir) else {
        return (entries, problems);
    };
    let mut folders: Vec<PathBuf> = read
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(MANIFEST_NAME).is_file())
        .collect();
    folders.sort();
    for folder in folders {
        let manifest_path = folder.join(MANIFEST_NAME);
        let loaded = std::fs::read_to_string(&manifest_path)
            .map_err(|e| StyleError::Manifest {
                path: manifest_path.clone(),
                reason: e.to_string(),
            })
            .and_then(|text| parse_manifest(&text, &manifest_path))
            .and_then(|manifest| StyleEntry::from_manifest(&folder, manifest));
        match loaded {
            Ok(entry) => entries.push(entry),
            Err(e) => problems.push(e),
        }
    }
    (entries, problems)
}

/// The bundled styles folder: `$ATELIER_STYLES`, else `styles/` beside the executable's working
/// directory (the repository root in development).
pub fn default_styles_dir() -> PathBuf {
    std::env::var_os("ATELIER_STYLES")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("styles"))
}

/// Bundled entries followed by the user's files (skipping ones that vanished or are already
/// listed), plus the problems found on the way.
pub fn build_gallery(
    styles_dir: &Path,
    user_files: &[PathBuf],
) -> (Vec<StyleEntry>, Vec<StyleError>) {
    let (mut entries, mut problems) = load_bundled(styles_dir);
    for path in user_files {
        if entries.iter().any(|e| e.key() == path.as_path()) {
            continue;
        }
        match StyleEntry::from_user_file(path) {
            Ok(entry) => entries.push(entry),
            Err(e) => problems.push(e),
        }
    }
    (entries, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_load_and_bad_ones_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("wave");
        std::fs::create_dir(&good).unwrap();
        std::fs::write(good.join("wave.png"), b"not really a png").unwrap();
        std::fs::write(
            good.join(MANIFEST_NAME),
            "name = \"The Wave\"\nimage = \"wave.png\"\n",
        )
        .unwrap();
        let bad = dir.path().join("broken");
        std::fs::create_dir(&bad).unwrap();
        std::fs::write(bad.join(MANIFEST_NAME), "model = \"missing.safetensors\"\n").unwrap();
        let (entries, problems) = load_bundled(dir.path());
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].name, "The Wave");
        assert_eq!(entries[0].thumbnail, Some(good.join("wave.png")));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].to_string().contains("does not exist"));
    }

    #[test]
    fn missing_folder_is_an_empty_gallery() {
        let (entries, problems) = load_bundled(Path::new("/nonexistent/styles"));
        assert!(entries.is_empty() && problems.is_empty());
    }

    #[test]
    fn user_files_are_classified_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("candy.PTH");
        std::fs::write(&model, b"x").unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, b"x").unwrap();
        let entry = StyleEntry::from_user_file(&model).unwrap();
        assert_eq!(entry.model.as_deref(), Some(model.as_path()));
        assert!(StyleEntry::from_user_file(&text).is_err());
    }
}
