//! The style gallery's model: bundled styles (`styles/NAME/style.toml`), style images the user
//! added, and custom-trained model files. No UI here; the app's gallery panel draws these.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

/// `styles/NAME/style.toml`. Paths are relative to the style's folder. Every field is optional
/// so the first manifests (name, description, model, image, thumbnail) stay valid; unknown
/// top-level keys are refused so a typo is reported rather than silently ignored.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Shown under the thumbnail; defaults to the folder name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Painter, title, licence: shown as the thumbnail's tooltip (built from `title`, `artist`,
    /// `year` and `licence` when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A trained network (`.safetensors` / `.pth`), run with the network method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// A style image, used by the optimisation method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<PathBuf>,
    /// A small picture for the gallery; defaults to the style image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<PathBuf>,
    /// The painter (or "collection of …" for a style learnt from several works).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    /// The work's title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// When the work was made: free text such as "1889" or "c. 1910" (a TOML integer is
    /// accepted too).
    #[serde(
        default,
        deserialize_with = "year_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub year: Option<String>,
    /// The work's licence or copyright status, e.g. "public domain".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub licence: Option<String>,
    /// Attributions the style must carry (e.g. the loss network's weights).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credits: Vec<String>,
    /// The styles of a conditional network (`model` holds one instance-norm scale and shift
    /// per style), in condition order; empty for a one-style model. The gallery lists each, and
    /// each group they name, as its own entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub styles: Vec<ConditionalStyle>,
    /// How a trained model was made; informational.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingInfo>,
}

/// One style of a conditional network (a `[[styles]]` table of its `style.toml`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConditionalStyle {
    /// Shown under the thumbnail and accepted by `--mix NAME=WEIGHT`.
    pub name: String,
    /// This style's thumbnail (painted by the network in this style).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(
        default,
        deserialize_with = "year_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub year: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub licence: Option<String>,
    /// Groups (a school, a culture: "ukiyo-e", "post-impressionism") this style belongs to;
    /// one gallery entry per group paints the even blend of its members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl ConditionalStyle {
    /// "Title (Year), Artist. Licence." from the parts that are present.
    fn description(&self) -> Option<String> {
        Manifest {
            title: self.title.clone(),
            year: self.year.clone(),
            artist: self.artist.clone(),
            licence: self.licence.clone(),
            ..Manifest::default()
        }
        .display_description()
    }
}

/// The groups the styles name, in order of first mention, each with its members' indices.
pub fn style_groups(styles: &[ConditionalStyle]) -> Vec<(String, Vec<usize>)> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (index, style) in styles.iter().enumerate() {
        for group in &style.groups {
            match groups.iter_mut().find(|(name, _)| name == group) {
                Some((_, members)) => members.push(index),
                None => groups.push((group.clone(), vec![index])),
            }
        }
    }
    groups
}

/// The `[training]` table of a trained style: the recipe, for reproducing or comparing styles.
/// Informational only, so unknown keys are accepted (newer versions may record more).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct TrainingInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u64>,
    /// Crop side the network was trained at, in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    /// Base width (channels of the first convolution; pytorch's is 32).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_weight: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub style_weight: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tv_weight: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adversarial_weight: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_layer: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub style_layers: Vec<String>,
    /// Style works, by file name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub style_images: Vec<String>,
    /// Longer side the style works were seen at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub style_size: Option<u32>,
    /// Loss network, by file name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vgg: Option<String>,
    /// Number of training photos.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub photos: Option<u64>,
    /// Atelier version that trained it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trainer: Option<String>,
}

/// Accepts `year = 1889` as well as `year = "c. 1889"`.
fn year_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Year {
        Number(i64),
        Text(String),
    }
    Ok(Option::<Year>::deserialize(d)?.map(|y| match y {
        Year::Number(n) => n.to_string(),
        Year::Text(t) => t,
    }))
}

impl Manifest {
    /// The tooltip text: `description`, else "Title (Year), Artist. Licence." from the parts
    /// that are present.
    pub fn display_description(&self) -> Option<String> {
        if let Some(d) = &self.description {
            return Some(d.clone());
        }
        let mut text = self.title.clone().unwrap_or_default();
        if let Some(year) = &self.year {
            text = if text.is_empty() {
                year.clone()
            } else {
                format!("{text} ({year})")
            };
        }
        if let Some(artist) = &self.artist {
            text = if text.is_empty() {
                artist.clone()
            } else {
                format!("{text}, {artist}")
            };
        }
        if let Some(licence) = &self.licence {
            text = if text.is_empty() {
                licence.clone()
            } else {
                format!("{text}. {licence}")
            };
        }
        (!text.is_empty()).then_some(text)
    }

    /// The manifest as TOML text.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

/// A conditional network's style mix from `NAME=WEIGHT` terms (a bare `NAME` weighs 1): each
/// NAME is one of `styles` (by name or 0-based index) or a group they name (its weight is shared
/// evenly by its members). Returns one weight per style; the engine normalises them.
pub fn resolve_mix(styles: &[ConditionalStyle], terms: &[String]) -> Result<Vec<f64>, String> {
    let names: Vec<&str> = styles.iter().map(|s| s.name.as_str()).collect();
    let groups = style_groups(styles);
    let mut mix = vec![0.0; styles.len()];
    for term in terms {
        let (name, weight) = match term.split_once('=') {
            Some((name, weight)) => {
                let weight: f64 = weight
                    .trim()
                    .parse()
                    .map_err(|_| format!("--mix {term}: `{weight}` is not a number"))?;
                (name.trim(), weight)
            }
            None => (term.trim(), 1.0),
        };
        if !weight.is_finite() || weight < 0.0 {
            return Err(format!(
                "--mix {term}: weights must be non-negative numbers"
            ));
        }
        if let Some(index) = names.iter().position(|n| *n == name) {
            mix[index] += weight;
        } else if let Some((_, members)) = groups.iter().find(|(g, _)| g == name) {
            for &i in members {
                mix[i] += weight / members.len() as f64;
            }
        } else if let Some(index) = name.parse::<usize>().ok().filter(|&i| i < styles.len()) {
            mix[index] += weight;
        } else {
            let group_names: Vec<&str> = groups.iter().map(|(g, _)| g.as_str()).collect();
            return Err(format!(
                "--mix {term}: no style or group called `{name}` (styles: {}{})",
                names.join(", "),
                if group_names.is_empty() {
                    String::new()
                } else {
                    format!("; groups: {}", group_names.join(", "))
                }
            ));
        }
    }
    if mix.iter().sum::<f64>() <= 0.0 {
        return Err("--mix needs at least one positive weight".into());
    }
    Ok(mix)
}

/// Where a gallery entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Bundled,
    /// Added by the user (remembered between runs).
    User,
    /// Trained in the app, read from the user's styles folder.
    Trained,
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
    /// For one style (or group) of a conditional network: which of the model's styles it is.
    pub condition: Option<Condition>,
}

/// A style, or a group of styles, inside a conditional network.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The gallery key: the model's path with `#NAME` appended (`#group:NAME` for a group).
    pub key: PathBuf,
    /// One weight per style of the network, summing to 1.
    pub mix: Vec<f64>,
}

impl StyleEntry {
    /// A stable key (the file the style runs from) for selections and persistence.
    pub fn key(&self) -> &Path {
        self.condition
            .as_ref()
            .map(|c| c.key.as_path())
            .or(self.image.as_deref())
            .or(self.model.as_deref())
            .unwrap_or_else(|| Path::new(""))
    }

    /// The entries of a style folder: the style itself, and for a conditional network one
    /// entry per style and per group after it (the first paints the even blend of all).
    pub fn all_from_manifest(folder: &Path, manifest: Manifest) -> Result<Vec<Self>, StyleError> {
        let styles = manifest.styles.clone();
        let whole = Self::from_manifest(folder, manifest)?;
        let Some(model) = whole.model.clone().filter(|_| styles.len() > 1) else {
            return Ok(vec![whole]);
        };
        let manifest_path = folder.join(MANIFEST_NAME);
        let count = styles.len();
        let key = |suffix: &str| PathBuf::from(format!("{}#{suffix}", model.display()));
        let mut entries = vec![whole.clone()];
        for (index, style) in styles.iter().enumerate() {
            if styles[..index].iter().any(|s| s.name == style.name) {
                return Err(StyleError::Unusable {
                    path: manifest_path,
                    reason: format!("two [[styles]] are called `{}`", style.name),
                });
            }
            let thumbnail = match style.thumbnail.as_deref() {
                Some(p) if folder.join(p).symlink_metadata().is_ok() => Some(
                    check_manifest_file(folder, "thumbnail", p).map_err(|reason| {
                        StyleError::Unusable {
                            path: manifest_path.clone(),
                            reason,
                        }
                    })?,
                ),
                _ => whole.thumbnail.clone(),
            };
            let mut mix = vec![0.0; count];
            mix[index] = 1.0;
            entries.push(Self {
                // The work's title reads better on a tile than the file stem the style is
                // called by (`--mix starry-night`), which the tooltip still gives.
                name: style.title.clone().unwrap_or_else(|| style.name.clone()),
                description: Some(format!(
                    "Style {} of {} in {} (`{}`){}",
                    index + 1,
                    count,
                    whole.name,
                    style.name,
                    style
                        .description()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                )),
                thumbnail,
                condition: Some(Condition {
                    key: key(&style.name),
                    mix,
                }),
                ..whole.clone()
            });
        }
        for (group, members) in style_groups(&styles) {
            let mut mix = vec![0.0; count];
            for &i in &members {
                mix[i] = 1.0 / members.len() as f64;
            }
            let names: Vec<&str> = members.iter().map(|&i| styles[i].name.as_str()).collect();
            entries.push(Self {
                name: group.clone(),
                description: Some(format!(
                    "Group in {}: {} (their even blend, in one pass)",
                    whole.name,
                    names.join(", ")
                )),
                thumbnail: entries[1 + members[0]].thumbnail.clone(),
                condition: Some(Condition {
                    key: key(&format!("group:{group}")),
                    mix,
                }),
                ..whole.clone()
            });
        }
        Ok(entries)
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
            condition: None,
        })
    }

    /// The entry a bundled style folder describes. Style folders are untrusted (downloaded,
    /// shared): each file the manifest names must be a regular file inside the folder (see
    /// [`check_manifest_file`]).
    pub fn from_manifest(folder: &Path, manifest: Manifest) -> Result<Self, StyleError> {
        let description = manifest.display_description();
        let manifest_path = folder.join(MANIFEST_NAME);
        if manifest.model.is_none() && manifest.image.is_none() {
            return Err(StyleError::Unusable {
                path: manifest_path,
                reason: "names neither a `model` nor an `image`".into(),
            });
        }
        let unusable = |reason: String| StyleError::Unusable {
            path: manifest_path.clone(),
            reason,
        };
        let model = manifest
            .model
            .as_deref()
            .map(|p| check_manifest_file(folder, "model", p).map_err(unusable))
            .transpose()?;
        let image = manifest
            .image
            .as_deref()
            .map(|p| check_manifest_file(folder, "image", p).map_err(unusable))
            .transpose()?;
        // A missing thumbnail falls back to the style image; one that breaks the rules is an error.
        let thumbnail = match manifest.thumbnail.as_deref() {
            Some(p) if folder.join(p).symlink_metadata().is_ok() => {
                Some(check_manifest_file(folder, "thumbnail", p).map_err(unusable)?)
            }
            _ => None,
        }
        .or_else(|| image.clone());
        let name = manifest.name.unwrap_or_else(|| {
            folder
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "style".into())
        });
        Ok(Self {
            name,
            description,
            model,
            image,
            thumbnail,
            origin: Origin::Bundled,
            condition: None,
        })
    }
}

/// `folder`/`relative` when the manifest field `field` = `relative` names a regular file inside
/// `folder`: a relative path without `..`, which, links followed, stays inside the folder. The
/// error (for a [`StyleError::Unusable`] on the manifest) names the field and the rule.
pub fn check_manifest_file(folder: &Path, field: &str, relative: &Path) -> Result<PathBuf, String> {
    use std::path::Component;
    let shown = format!("{field} = {:?}", relative.display().to_string());
    let inside = |why: &str| format!("{shown} must name a file inside the style folder ({why})");
    if relative.is_absolute() || relative.has_root() {
        return Err(inside("not an absolute path"));
    }
    if relative.components().any(|c| c == Component::ParentDir) {
        return Err(inside("no `..`"));
    }
    if relative.as_os_str().is_empty() || relative.components().all(|c| c == Component::CurDir) {
        return Err(format!("{shown} names no file"));
    }
    let path = folder.join(relative);
    let resolved = path.canonicalize().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("{shown} refers to {}, which does not exist", path.display())
        } else {
            format!("{shown}: {}", crate::imaging::describe_metadata_error(&e))
        }
    })?;
    let metadata = std::fs::metadata(&resolved).map_err(|e| format!("{shown}: {e}"))?;
    if !metadata.is_file() {
        return Err(format!(
            "{shown} is not a regular file (it is {})",
            crate::imaging::describe_special_file(metadata.file_type())
        ));
    }
    let root = folder
        .canonicalize()
        .map_err(|e| format!("the style folder {}: {e}", folder.display()))?;
    if !resolved.starts_with(&root) {
        return Err(inside(&format!("it links to {}", resolved.display())));
    }
    Ok(path)
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

/// The trained model of a style folder: the manifest's `model` when the folder has a
/// `style.toml`, else `model.safetensors` or `model.pth`.
pub fn model_in_folder(folder: &Path) -> Result<PathBuf, StyleError> {
    let manifest_path = folder.join(MANIFEST_NAME);
    if manifest_path.is_file() {
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| StyleError::Manifest {
            path: manifest_path.clone(),
            reason: e.to_string(),
        })?;
        let entry = StyleEntry::from_manifest(folder, parse_manifest(&text, &manifest_path)?)?;
        return entry.model.ok_or_else(|| StyleError::Unusable {
            path: manifest_path,
            reason: "names no trained `model` (it is a style image for the optimize method)".into(),
        });
    }
    ["model.safetensors", "model.pth"]
        .iter()
        .map(|name| folder.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| StyleError::Unusable {
            path: folder.to_path_buf(),
            reason: format!("style folder has no {MANIFEST_NAME}, model.safetensors or model.pth"),
        })
}

/// Parses a `style.toml`.
pub fn parse_manifest(text: &str, path: &Path) -> Result<Manifest, StyleError> {
    toml::from_str(text).map_err(|e| StyleError::Manifest {
        path: path.to_path_buf(),
        reason: one_line_toml_error(&e, text),
    })
}

/// `line L, column C: MESSAGE`: toml's own text spans several lines (it quotes the source with
/// a caret), too much for a one-line error.
fn one_line_toml_error(error: &toml::de::Error, text: &str) -> String {
    let message = error.message().trim().replace('\n', "; ");
    let Some(span) = error.span() else {
        return message;
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    // The line itself names the field, which toml's message may not ("invalid type").
    let source: String = text
        .lines()
        .nth(line - 1)
        .unwrap_or("")
        .trim()
        .chars()
        .take(60)
        .collect();
    if source.is_empty() {
        format!("line {line}, column {column}: {message}")
    } else {
        format!("line {line}, column {column} (`{source}`): {message}")
    }
}

/// The styles trained in the app: every `DIR/*/style.toml` of the user's styles folder, like
/// [`load_bundled`]. Folders without a manifest (a training still running or stopped) are not
/// styles yet and are left out.
pub fn load_trained(dir: &Path) -> (Vec<StyleEntry>, Vec<StyleError>) {
    let (mut entries, problems) = load_bundled(dir);
    for entry in &mut entries {
        entry.origin = Origin::Trained;
    }
    (entries, problems)
}

/// A folder name for a style called `name`: lower-case letters, digits and dashes (other
/// characters become dashes), at most 48 characters; "style" when nothing is left. Keeps
/// folder names portable and free of path separators.
pub fn folder_name(name: &str) -> String {
    let mut slug = String::new();
    for c in name.trim().chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.chars().count() >= 48 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        "style".into()
    } else {
        slug.into()
    }
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
            .and_then(|manifest| StyleEntry::all_from_manifest(&folder, manifest));
        match loaded {
            Ok(found) => entries.extend(found),
            Err(e) => problems.push(e),
        }
    }
    (entries, problems)
}

/// The bundled styles folder: `$ATELIER_STYLES`, else the first `styles/` found in the working
/// directory, beside the executable, two levels up from it (`target/release/` in a checkout), or
/// in the source tree the binary was built from; `styles` when there is none (an empty gallery).
pub fn default_styles_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ATELIER_STYLES").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    let mut candidates = vec![PathBuf::from("styles")];
    if let Some(dir) = exe_dir {
        candidates.push(dir.join("styles"));
        if let Some(up) = dir.parent().and_then(Path::parent) {
            candidates.push(up.join("styles"));
        }
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("styles"));
    candidates
        .into_iter()
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| PathBuf::from("styles"))
}

/// Bundled entries, then the styles trained in the app (`trained_dir`, when there is one), then
/// the user's files (skipping ones that vanished or are already listed), plus the problems found
/// on the way.
pub fn build_gallery(
    styles_dir: &Path,
    trained_dir: Option<&Path>,
    user_files: &[PathBuf],
) -> (Vec<StyleEntry>, Vec<StyleError>) {
    let (mut entries, mut problems) = load_bundled(styles_dir);
    if let Some(dir) = trained_dir {
        let (trained, more) = load_trained(dir);
        entries.extend(trained);
        problems.extend(more);
    }
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
    fn extended_manifests_round_trip_and_old_ones_stay_valid() {
        let old = parse_manifest("name = \"Wave\"\nimage = \"w.png\"\n", Path::new("a")).unwrap();
        assert_eq!(old.name.as_deref(), Some("Wave"));
        let text = "model = \"model.safetensors\"\nartist = \"Van Gogh\"\ntitle = \"Starry\"\n\
                    year = 1889\nlicence = \"public domain\"\ncredits = [\"VGG16\"]\n\
                    [training]\niterations = 10\nwidth = 16\nfuture_key = 1\n";
        let manifest = parse_manifest(text, Path::new("b")).unwrap();
        assert_eq!(manifest.year.as_deref(), Some("1889"));
        assert_eq!(
            manifest.display_description().as_deref(),
            Some("Starry (1889), Van Gogh. public domain")
        );
        assert_eq!(manifest.training.as_ref().unwrap().width, Some(16));
        let again = parse_manifest(&manifest.to_toml().unwrap(), Path::new("c")).unwrap();
        assert_eq!(again, manifest);
        assert!(parse_manifest("nmae = \"typo\"\n", Path::new("d")).is_err());
        let broken = parse_manifest("name = \"Ok\"\nmodel = \"unclosed\n", Path::new("e"));
        let reason = broken.unwrap_err().to_string();
        assert!(
            reason.contains("line 2, column 18 (`model = \"unclosed`): "),
            "{reason}"
        );
        assert_eq!(reason.lines().count(), 1, "{reason}");
    }

    #[test]
    fn style_names_become_portable_folder_names() {
        assert_eq!(folder_name("Great Wave"), "great-wave");
        assert_eq!(folder_name("  ../My  Style!! "), "my-style");
        assert_eq!(folder_name("Été à Arles"), "été-à-arles");
        assert_eq!(folder_name("///"), "style");
        assert_eq!(folder_name(&"x".repeat(100)).len(), 48);
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
