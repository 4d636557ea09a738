//! The styles a client may pick: the bundled gallery, each with a stable id for the API.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::styles::{self, StyleEntry};

/// One style of the gallery as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogStyle {
    /// Its id in the API: the style's folder name, and for one style (or group) of a
    /// conditional network `FOLDER.STYLE` (`FOLDER.group-GROUP`).
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    /// Methods it works with: `network` for a trained model; `arbitrary` and `optimize` for a
    /// painting.
    pub methods: Vec<&'static str>,
    /// Where its thumbnail is served (`None`: it has none).
    pub thumbnail: Option<String>,
    #[serde(skip)]
    pub entry: StyleEntry,
}

/// The gallery, read once at start.
pub struct Catalog {
    pub styles: Vec<CatalogStyle>,
    /// Style folders that could not be used (reported at start, not fatal).
    pub problems: Vec<String>,
}

impl Catalog {
    pub fn load(dir: &Path) -> Self {
        let (entries, problems) = styles::load_bundled(dir);
        let mut catalog = Self {
            styles: Vec::new(),
            problems: problems.iter().map(ToString::to_string).collect(),
        };
        for entry in entries {
            let id = style_id(&entry);
            if catalog.styles.iter().any(|s| s.id == id) {
                catalog.problems.push(format!(
                    "two styles have the id `{id}`; the second is left out"
                ));
                continue;
            }
            let mut methods = Vec::new();
            if entry.model.is_some() {
                methods.push("network");
            }
            if entry.image.is_some() {
                methods.extend(["arbitrary", "optimize"]);
            }
            catalog.styles.push(CatalogStyle {
                thumbnail: entry
                    .thumbnail
                    .as_ref()
                    .map(|_| format!("/api/styles/{id}/thumbnail")),
                id,
                name: entry.name.clone(),
                description: entry.description.clone(),
                methods,
                entry,
            });
        }
        catalog
    }

    pub fn get(&self, id: &str) -> Option<&CatalogStyle> {
        self.styles.iter().find(|s| s.id == id)
    }
}

/// The folder a style's files live in, by name; the conditional part of its key as a suffix.
fn style_id(entry: &StyleEntry) -> String {
    let file = entry
        .model
        .as_deref()
        .or(entry.image.as_deref())
        .unwrap_or_else(|| Path::new("style"));
    let folder = file
        .parent()
        .and_then(Path::file_name)
        .map(|name| styles::folder_name(&name.to_string_lossy()))
        .unwrap_or_else(|| "style".into());
    match &entry.condition {
        Some(condition) => {
            let key = condition.key.to_string_lossy();
            let suffix = key.rsplit_once('#').map_or("", |(_, s)| s);
            format!("{folder}.{}", styles::folder_name(suffix))
        }
        None => folder,
    }
}

/// The thumbnail's file and content type.
pub fn thumbnail(style: &CatalogStyle) -> Option<(PathBuf, &'static str)> {
    let path = style.entry.thumbnail.clone()?;
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let mime = match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        _ => "application/octet-stream",
    };
    Some((path, mime))
}
