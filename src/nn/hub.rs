//! Finding the VGG loss network on disk, and fetching it from the Hugging Face hub when missing.
//!
//! Search order ([`resolve_vgg`]): an explicit path (`--vgg`), `$ATELIER_VGG`, then the files a
//! download leaves in [`cache_dir`]. Nothing relative to the working directory: a folder whose
//! parent happens to hold `shared/models/` must not change which network a user gets (the
//! development copy is passed explicitly by tests and scripts).
//! [`download_vgg19`] fetches torchvision's ImageNet VGG19 (`timm/vgg19.tv_in1k`, BSD-3) with the
//! `hf-hub` crate and places it at `<cache>/vgg19.safetensors`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::Cache;

use crate::error::{Error, Result};

/// Hub repository of torchvision's ImageNet VGG19 (layout `features.N.weight`).
pub const VGG19_REPO: &str = "timm/vgg19.tv_in1k";
/// File of [`VGG19_REPO`] that holds the weights.
pub const VGG19_FILE: &str = "model.safetensors";
/// Rough size of [`VGG19_FILE`], for messages.
pub const VGG19_DOWNLOAD_SIZE: &str = "~575 MB";

/// Overrides the cache directory.
pub const CACHE_ENV: &str = "ATELIER_CACHE";
/// Points at a VGG16/VGG19 weights file to use.
pub const VGG_ENV: &str = "ATELIER_VGG";
/// hf-hub's own variable for another hub (a mirror); honoured when no endpoint is given.
pub const HF_ENDPOINT_ENV: &str = "HF_ENDPOINT";
/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Name [`download_vgg19`] gives the downloaded network inside the cache directory.
pub const VGG19_CACHE_NAME: &str = "vgg19.safetensors";
/// A VGG16 `features` file a user may drop into the cache directory by hand.
pub const VGG16_CACHE_NAME: &str = "vgg16-features.safetensors";

/// Where a safetensors header may not plausibly be larger than this (VGG19's is ~3 KB); guards the
/// header allocation against garbage.
const MAX_SAFETENSORS_HEADER: u64 = 100 << 20;

/// Atelier's cache directory: `$ATELIER_CACHE` if set, else the platform's user cache directory
/// plus `atelier` (`$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches` on macOS,
/// `%LOCALAPPDATA%` on Windows). `None` when no home directory can be told.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = non_empty_env(CACHE_ENV) {
        return Some(PathBuf::from(dir));
    }
    platform_cache_root().map(|root| root.join("atelier"))
}

/// Where [`download_vgg19`] places the network for a given cache directory.
pub fn vgg19_cache_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join(VGG19_CACHE_NAME)
}

fn non_empty_env(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|value| !value.is_empty())
}

#[cfg(windows)]
fn platform_cache_root() -> Option<PathBuf> {
    non_empty_env("LOCALAPPDATA").map(PathBuf::from)
}

#[cfg(target_os = "macos")]
fn platform_cache_root() -> Option<PathBuf> {
    non_empty_env("HOME").map(|home| PathBuf::from(home).join("Library").join("Caches"))
}

#[cfg(not(any(windows, target_os = "macos")))]
fn platform_cache_root() -> Option<PathBuf> {
    // The XDG spec says a relative $XDG_CACHE_HOME is invalid and must be ignored.
    let xdg = non_empty_env("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|path| path.is_absolute());
    xdg.or_else(|| non_empty_env("HOME").map(|home| PathBuf::from(home).join(".cache")))
}

/// The places [`resolve_vgg`] looks at after an explicit path, read from the environment once so
/// the lookup itself is a pure function of them (and testable without touching the environment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VggSearch {
    /// `$ATELIER_VGG`: when set, it must exist (a typo should not silently pick another file).
    pub env_path: Option<PathBuf>,
    /// [`cache_dir`], searched for [`VGG19_CACHE_NAME`] then [`VGG16_CACHE_NAME`].
    pub cache_dir: Option<PathBuf>,
}

impl VggSearch {
    /// The search as configured by the environment.
    pub fn from_env() -> Self {
        Self {
            env_path: non_empty_env(VGG_ENV).map(PathBuf::from),
            cache_dir: cache_dir(),
        }
    }

    /// The optional files looked at, in order (the environment path is not optional and is
    /// handled before these).
    pub fn candidates(&self) -> Vec<PathBuf> {
        let mut candidates = Vec::new();
        if let Some(cache) = &self.cache_dir {
            candidates.push(cache.join(VGG19_CACHE_NAME));
            candidates.push(cache.join(VGG16_CACHE_NAME));
        }
        candidates
    }

    /// Like [`resolve_vgg`], with this search instead of the environment.
    pub fn resolve(&self, explicit: Option<&Path>) -> Result<PathBuf> {
        if let Some(path) = explicit {
            return existing_file(path, "given with --vgg");
        }
        if let Some(path) = &self.env_path {
            return existing_file(path, &format!("given by ${VGG_ENV}"));
        }
        let candidates = self.candidates();
        if let Some(found) = candidates.iter().find(|path| path.is_file()) {
            return Ok(found.clone());
        }
        Err(Error::MissingVgg {
            message: missing_vgg_message(&candidates),
            searched: candidates,
        })
    }
}

/// Finds the VGG loss network: `explicit` (must exist), else `$ATELIER_VGG` (must exist), else
/// `<cache>/vgg19.safetensors`, else `<cache>/vgg16-features.safetensors`. When none is there the
/// error ([`Error::MissingVgg`]) lists the places and says how to get one.
///
/// With none on disk, the VGG16 built into the program ([`crate::nn::vgg::BUNDLED_VGG`], up to
/// relu4_3) is used: every method works offline. Layers deeper than it have are refused by the
/// network with a message that names `fetch-vgg` and `--vgg`.
pub fn resolve_vgg(explicit: Option<&Path>) -> Result<PathBuf> {
    match VggSearch::from_env().resolve(explicit) {
        Err(Error::MissingVgg { .. }) => Ok(PathBuf::from(crate::nn::vgg::BUNDLED_VGG)),
        other => other,
    }
}

fn missing_vgg_message(searched: &[PathBuf]) -> String {
    let searched = if searched.is_empty() {
        "nowhere: no cache directory could be told".to_string()
    } else {
        searched
            .iter()
            .map(|path| path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "no VGG loss network found (looked in: {searched}). Get one with `atelier fetch-vgg` \
         (downloads {VGG19_DOWNLOAD_SIZE} from the Hugging Face hub, {VGG19_REPO}), or set \
         {VGG_ENV} or pass --vgg PATH to a VGG16/VGG19 .safetensors or .pth file"
    )
}

fn existing_file(path: &Path, origin: &str) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let reason = if path.exists() {
        format!("is not a file ({origin}); expected a VGG16/VGG19 .safetensors or .pth file")
    } else {
        format!("no such file ({origin}); expected a VGG16/VGG19 .safetensors or .pth file")
    };
    Err(Error::weights(path, reason))
}

/// Downloads [`VGG19_REPO`]/[`VGG19_FILE`] into [`cache_dir`] and returns
/// `<cache>/vgg19.safetensors`. See [`download_vgg19_into`].
pub fn download_vgg19(endpoint: Option<&str>, progress: bool) -> Result<PathBuf> {
    let cache = cache_dir().ok_or_else(|| {
        Error::invalid(format!(
            "cannot tell the user cache directory (no home directory); set {CACHE_ENV}"
        ))
    })?;
    download_vgg19_into(&cache, endpoint, progress)
}

/// Downloads VGG19 with hf-hub into `cache_dir` and places it at `<cache_dir>/vgg19.safetensors`.
///
/// `endpoint` is the hub's base URL; `None` means `$HF_ENDPOINT`, else <https://huggingface.co>.
/// `progress` draws a progress bar on stderr. A valid file already at the final path is returned
/// without touching the network. hf-hub keeps its blob under `<cache_dir>/hub` (an interrupted
/// download resumes from its `.part` file); the final path is a hard link to that blob (a copy
/// where links are impossible) made under a temporary name and renamed, so it only ever holds a
/// complete, checked file.
pub fn download_vgg19_into(
    cache_dir: &Path,
    endpoint: Option<&str>,
    progress: bool,
) -> Result<PathBuf> {
    let final_path = vgg19_cache_path(cache_dir);
    if check_vgg_safetensors(&final_path).is_ok() {
        return Ok(final_path);
    }
    let endpoint = endpoint_or_default(endpoint)?;
    let hub_dir = cache_dir.join("hub");
    std::fs::create_dir_all(&hub_dir).map_err(|e| write_error(&hub_dir, e))?;

    let url = format!("{endpoint}/{VGG19_REPO}/resolve/main/{VGG19_FILE}");
    let api = ApiBuilder::from_cache(Cache::new(hub_dir.clone()))
        .with_endpoint(endpoint.clone())
        // A stray token file under our cache must never be sent anywhere; the repo is public.
        .with_token(None)
        // Resumes a broken transfer of the 575 MB body a few times before giving up.
        .with_retries(3)
        .with_progress(progress)
        .build()
        .map_err(|e| download_error(e, &url, &endpoint))?;
    let pointer = api
        .model(VGG19_REPO.to_string())
        .get(VGG19_FILE)
        .map_err(|e| download_error(e, &url, &endpoint))?;
    // The pointer is a relative symlink into `blobs/`; link the blob itself.
    let blob = pointer
        .canonicalize()
        .map_err(|e| Error::weights(&pointer, format!("downloaded file vanished: {e}")))?;

    if let Err(reason) = check_vgg_safetensors(&blob) {
        // Forget the bad blob so the next attempt downloads again instead of reusing it.
        let _ = std::fs::remove_file(&pointer);
        let _ = std::fs::remove_file(&blob);
        return Err(Error::weights(
            &url,
            format!("downloaded file is unusable: {reason}; run the download again"),
        ));
    }
    place_atomically(&blob, &final_path)?;
    Ok(final_path)
}

fn endpoint_or_default(endpoint: Option<&str>) -> Result<String> {
    let endpoint = match endpoint {
        Some(endpoint) => endpoint.to_string(),
        None => std::env::var(HF_ENDPOINT_ENV)
            .ok()
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
    };
    // hf-hub appends `/{repo}/...`; a trailing slash would double it.
    let endpoint = endpoint.trim().trim_end_matches('/').to_string();
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(Error::invalid(format!(
            "hub endpoint {endpoint:?} must be an http:// or https:// URL"
        )));
    }
    Ok(endpoint)
}

/// Makes `dest` hold `blob`'s bytes without ever exposing a partial file at `dest`.
fn place_atomically(blob: &Path, dest: &Path) -> Result<()> {
    let file_name = dest
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dest.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let linked = std::fs::hard_link(blob, &temp).is_ok();
    if !linked {
        if let Err(e) = std::fs::copy(blob, &temp).and_then(|_| File::open(&temp)?.sync_all()) {
            let _ = std::fs::remove_file(&temp);
            return Err(write_error(dest, e));
        }
    }
    if let Err(e) = std::fs::rename(&temp, dest) {
        let _ = std::fs::remove_file(&temp);
        return Err(write_error(dest, e));
    }
    if !linked {
        // A copy doubles the disk use; the hub blob is no longer needed since `dest` is checked
        // before any network access.
        let _ = std::fs::remove_file(blob);
    }
    Ok(())
}

fn write_error(path: &Path, e: std::io::Error) -> Error {
    Error::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Turns hf-hub's error into one message that says what failed and what to do.
fn download_error(err: ApiError, url: &str, endpoint: &str) -> Error {
    Error::weights(url, download_reason(err, url, endpoint))
}

fn download_reason(err: ApiError, url: &str, endpoint: &str) -> String {
    let by_hand = "or download it yourself and pass --vgg PATH";
    match err {
        ApiError::RequestError(request) => {
            // ureq prefixes its messages with the URL, which the error already names.
            let detail = request.to_string();
            let detail = detail
                .strip_prefix(&format!("{url}: "))
                .unwrap_or(&detail)
                .to_string();
            // `into_response` is `Some` exactly for HTTP status errors (4xx/5xx).
            match (*request).into_response() {
                Some(response) => {
                    let status = response.status();
                    let hub_message = response
                        .header("x-error-message")
                        .map(|message| format!(": {message}"))
                        .unwrap_or_default();
                    match status {
                        404 => format!(
                            "not found on {endpoint} (HTTP 404{hub_message}); check the endpoint \
                             (--endpoint / ${HF_ENDPOINT_ENV}), {by_hand}"
                        ),
                        401 | 403 => format!(
                            "access denied by {endpoint} (HTTP {status}{hub_message}); {by_hand}"
                        ),
                        _ => format!(
                            "{endpoint} answered HTTP {status} {}{hub_message}; try again later, \
                             {by_hand}",
                            response.status_text()
                        ),
                    }
                }
                None => format!(
                    "cannot reach {endpoint} ({detail}); check the internet connection or proxy \
                     (HTTPS_PROXY), {by_hand}"
                ),
            }
        }
        ApiError::MissingHeader(_) | ApiError::InvalidHeader(_) | ApiError::ParseIntError(_) => {
            format!(
                "{endpoint} does not answer like a Hugging Face hub ({err}); check the endpoint"
            )
        }
        ApiError::IoError(e) => format!(
            "download interrupted or not saved ({e}); check free disk space and run it again \
             (it resumes)"
        ),
        ApiError::TooManyRetries(last) => {
            format!(
                "gave up after retrying: {}",
                download_reason(*last, url, endpoint)
            )
        }
        ApiError::InvalidResume => format!(
            "the partial download under the cache's hub/ directory is corrupt; delete its \
             `.part` file and run it again, {by_hand}"
        ),
        ApiError::LockAcquisition(lock) => format!(
            "another download of the same file is running (lock {}); wait for it, or delete the \
             lock file if none is",
            lock.display()
        ),
        // Variants behind hf-hub features we do not enable (native TLS).
        #[allow(unreachable_patterns)]
        other => other.to_string(),
    }
}

/// Checks that `path` is a complete safetensors file holding a torchvision-layout VGG: the header
/// must parse and the data must be exactly as long as it says. This catches truncated downloads
/// and error pages served with status 200 before they are installed at the final path.
pub fn check_vgg_safetensors(path: &Path) -> std::result::Result<(), String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|_| format!("not a safetensors file ({file_len} bytes)"))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_SAFETENSORS_HEADER || header_len.saturating_add(8) > file_len {
        return Err("not a safetensors file (bad header length)".to_string());
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| e.to_string())?;
    let header: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| format!("not a safetensors file (header: {e})"))?;

    let mut data_len = 0u64;
    for (name, info) in header.iter().filter(|(name, _)| *name != "__metadata__") {
        let end = info
            .get("data_offsets")
            .and_then(|offsets| offsets.get(1))
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| format!("tensor {name} has no data_offsets"))?;
        data_len = data_len.max(end);
    }
    let expected_len = 8 + header_len + data_len;
    if file_len != expected_len {
        return Err(format!(
            "incomplete file: {file_len} bytes where its header says {expected_len}"
        ));
    }
    if !header.contains_key("features.0.weight") {
        return Err("no `features.0.weight` tensor: not a torchvision-layout VGG".to_string());
    }
    Ok(())
}
