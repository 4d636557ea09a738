//! Images in and out: decoding with limits, resizing, tensor conversion and atomic saving.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::{imageops::FilterType, DynamicImage, GrayImage, ImageDecoder, ImageReader, RgbImage};

use crate::error::{Error, Result};

/// How the reason of an [`Error::Image`] for a JPEG cut short (or otherwise broken in its
/// structure) begins, so a caller can offer its way of accepting one (see [`load_rgb_with`]).
pub const DAMAGED_JPEG: &str = "truncated or damaged JPEG";

/// Larger images are refused before decoding: decoding alone would take gigabytes.
pub const MAX_INPUT_PIXELS: u64 = 150_000_000;

/// Reads an image file as 8-bit RGB, applying its EXIF orientation.
///
/// Missing files, special files (FIFOs, devices), symbolic link loops, unknown formats,
/// corrupt or truncated data, zero-size and enormous images give an [`Error::Image`] naming the
/// file and the problem.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    load_rgb_with(path, false).map(|(image, _)| image)
}

/// [`load_rgb`], optionally accepting a damaged image: with `allow_damaged` a JPEG cut short
/// decodes (its missing part painted grey, as the decoder leaves it) and the second value is a
/// warning for the user naming the file and the damage; without it that is an error.
pub fn load_rgb_with(path: &Path, allow_damaged: bool) -> Result<(RgbImage, Option<String>)> {
    check_regular_file(path)?;
    // Read once, decode from memory: the JPEG check needs every byte anyway, and an encoded
    // file is a small fraction of its decoded size.
    let bytes = std::fs::read(path).map_err(|e| Error::image(path, e))?;
    decode_rgb(bytes, path, allow_damaged)
}

/// [`load_rgb_with`] for an image already in memory (an upload, a fuzzer's input); `name`
/// names it in errors and messages, and its extension is a hint for formats without a
/// signature.
pub fn decode_rgb(
    bytes: Vec<u8>,
    name: &Path,
    allow_damaged: bool,
) -> Result<(RgbImage, Option<String>)> {
    // The content's signature decides; the name's extension only for formats without one.
    let format = image::guess_format(&bytes)
        .ok()
        .or_else(|| image::ImageFormat::from_path(name).ok());
    let Some(format) = format else {
        return Err(Error::image(
            name,
            "unsupported or unrecognised image format (use PNG, JPEG, WebP, BMP or TIFF)",
        ));
    };
    let mut warning = None;
    if format == image::ImageFormat::Jpeg {
        // A truncated JPEG decodes "successfully" with its missing part grey: check its
        // structure first.
        if let Err(damage) = check_jpeg_structure(&bytes) {
            let reason = format!("{DAMAGED_JPEG} ({damage})");
            if !allow_damaged {
                return Err(Error::image(name, reason));
            }
            warning = Some(format!(
                "image {}: {reason}; using it anyway, the missing part may be grey",
                name.display()
            ));
        }
    }
    Ok((decode_checked(bytes, format, name)?.to_rgb8(), warning))
}

/// A mask (a grey image: white paints, black keeps) from a file: any image format; an alpha
/// channel counts too (transparent keeps), so a PNG painted on a transparent layer works.
pub fn load_mask(path: &Path) -> Result<GrayImage> {
    check_regular_file(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::image(path, e))?;
    decode_mask(bytes, path)
}

/// [`load_mask`] for bytes already in memory (a recipe's PNG chunk, an upload).
pub fn decode_mask(bytes: Vec<u8>, name: &Path) -> Result<GrayImage> {
    // A mask is judged by its content alone: a text file named mask.png is not an image.
    let format = image::guess_format(&bytes).map_err(|_| {
        Error::image(
            name,
            "not an image: a mask is a grey PNG, JPEG, WebP, BMP or TIFF (white paints)",
        )
    })?;
    let image = decode_checked(bytes, format, name)?;
    if !image.color().has_alpha() {
        return Ok(image.to_luma8());
    }
    let grey_alpha = image.to_luma_alpha8();
    Ok(GrayImage::from_fn(image.width(), image.height(), |x, y| {
        let [v, a] = grey_alpha.get_pixel(x, y).0;
        image::Luma([((u16::from(v) * u16::from(a) + 127) / 255) as u8])
    }))
}

/// Decodes `bytes` of `format`, with the size checks and the EXIF orientation applied.
fn decode_checked(bytes: Vec<u8>, format: image::ImageFormat, name: &Path) -> Result<DynamicImage> {
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes));
    reader.set_format(format);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| Error::image(name, format!("cannot decode: {e}")))?;
    let (width, height) = decoder.dimensions();
    check_dimensions(name, width, height)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder)
        .map_err(|e| Error::image(name, format!("corrupt or truncated image: {e}")))?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// `ELOOP`, "too many levels of symbolic links", where the platform's number is known.
#[cfg(any(target_os = "linux", target_os = "android"))]
const ELOOP: Option<i32> = Some(40);
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
const ELOOP: Option<i32> = Some(62);
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
)))]
const ELOOP: Option<i32> = None;

/// Why `error`, from reading `path`'s metadata, means the file cannot be used, in words.
pub fn describe_metadata_error(error: &std::io::Error) -> String {
    if ELOOP.is_some() && error.raw_os_error() == ELOOP {
        return "symbolic link loop (the link points back to itself)".into();
    }
    match error.kind() {
        std::io::ErrorKind::NotFound => "file not found".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => error.to_string(),
    }
}

/// What kind of non-regular file `file_type` is, for messages ("a FIFO", "a device", ...).
pub fn describe_special_file(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO";
        }
        if file_type.is_char_device() || file_type.is_block_device() {
            return "a device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    "a special file"
}

/// Checks from the metadata alone (a FIFO is never opened: that would block) that `path` is a
/// regular file or a link to one.
fn check_regular_file(path: &Path) -> Result<()> {
    let metadata =
        std::fs::metadata(path).map_err(|e| Error::image(path, describe_metadata_error(&e)))?;
    if metadata.is_dir() {
        return Err(Error::image(path, "is a directory, not an image"));
    }
    if !metadata.is_file() {
        return Err(Error::image(
            path,
            format!(
                "is not a regular file (it is {})",
                describe_special_file(metadata.file_type())
            ),
        ));
    }
    Ok(())
}

/// Walks a JPEG's marker segments and entropy-coded scans up to its end-of-image marker;
/// `Err` says what is wrong. Data after the end-of-image marker (the video of a phone's
/// "motion photo", padding) is allowed: the image itself is complete.
fn check_jpeg_structure(bytes: &[u8]) -> std::result::Result<(), String> {
    let cut_short = || {
        format!(
            "the file ends after {} bytes, before the end-of-image marker",
            bytes.len()
        )
    };
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return Err("no start-of-image marker".into());
    }
    let mut i = 2;
    loop {
        // Tolerate stray bytes between segments, as decoders do; then skip fill bytes.
        while i < bytes.len() && bytes[i] != 0xFF {
            i += 1;
        }
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = bytes.get(i) else {
            return Err(cut_short());
        };
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            // Standalone markers: no length.
            0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let Some(length) = bytes.get(i..i + 2) else {
            return Err(cut_short());
        };
        let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
        if length < 2 {
            return Err(format!("a marker segment at byte {i} has a bad length"));
        }
        i += length;
        if i > bytes.len() {
            return Err(cut_short());
        }
        if marker == 0xDA {
            // Start of scan: entropy-coded data up to the next marker other than a stuffed
            // 0xFF00 or a restart marker.
            loop {
                let Some(&byte) = bytes.get(i) else {
                    return Err(cut_short());
                };
                if byte == 0xFF {
                    match bytes.get(i + 1) {
                        None => return Err(cut_short()),
                        Some(0x00) | Some(0xD0..=0xD7) => i += 2,
                        Some(_) => break,
                    }
                } else {
                    i += 1;
                }
            }
        }
    }
}

fn check_dimensions(path: &Path, width: u32, height: u32) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::image(path, "image has zero width or height"));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_INPUT_PIXELS {
        return Err(Error::image(
            path,
            format!(
                "image is {width}x{height} ({:.0} megapixels); the limit is {} megapixels",
                pixels as f64 / 1e6,
                MAX_INPUT_PIXELS / 1_000_000
            ),
        ));
    }
    Ok(())
}

/// Size (width, height) with the longer side equal to `max_side`, keeping the aspect ratio.
pub fn fit_size(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let longer = width.max(height).max(1) as f64;
    let scale = max_side as f64 / longer;
    let w = ((width as f64 * scale).round() as u32).max(1);
    let h = ((height as f64 * scale).round() as u32).max(1);
    (w, h)
}

/// Resizes so that the longer side is `max_side` (up or down); returns a copy when it already is.
pub fn resize_longer_side(image: &RgbImage, max_side: u32) -> RgbImage {
    let (w, h) = fit_size(image.width(), image.height(), max_side);
    resize_exact(image, w, h)
}

/// Resizes to exactly `width`×`height` (Catmull-Rom: sharp enough, much faster than Lanczos).
pub fn resize_exact(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    if image.width() == width && image.height() == height {
        return image.clone();
    }
    image::imageops::resize(image, width, height, FilterType::CatmullRom)
}

/// (1, 3, H, W) f32 tensor of RGB pixels in 0..255.
pub fn to_tensor(image: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let data: Vec<f32> = image.as_raw().iter().map(|&v| f32::from(v)).collect();
    let t = Tensor::from_vec(data, (h, w, 3), &Device::Cpu)?
        .permute((2, 0, 1))?
        .contiguous()?
        .unsqueeze(0)?
        .to_device(device)?;
    Ok(t)
}

/// Converts a (1, 3, H, W) or (3, H, W) tensor of pixels in 0..255 to an image (clamped, rounded).
/// A tensor holding NaN or infinite values is refused: clamping would turn them into black or
/// white pixels and the broken result would pass for a picture.
pub fn from_tensor(t: &Tensor) -> Result<RgbImage> {
    let t = match t.rank() {
        4 => t.squeeze(0)?,
        _ => t.clone(),
    };
    let (c, h, w) = t.dims3()?;
    if c != 3 {
        return Err(Error::invalid(format!("expected 3 channels, got {c}")));
    }
    let data: Vec<f32> = t
        .to_dtype(DType::F32)?
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1()?;
    if let Some(bad) = data.iter().position(|v| !v.is_finite()) {
        let pixel = bad / 3;
        return Err(Error::invalid(format!(
            "the result holds NaN or infinite values (first at pixel {}, {}): the model or the \
             settings are broken; nothing was written",
            pixel % w.max(1),
            pixel / w.max(1)
        )));
    }
    let bytes: Vec<u8> = data
        .iter()
        .map(|&v| v.clamp(0.0, 255.0).round() as u8)
        .collect();
    RgbImage::from_raw(w as u32, h as u32, bytes)
        .ok_or_else(|| Error::invalid("tensor size does not match the image size"))
}

/// `strength` × `styled` + (1 − `strength`) × `original`, per pixel; both must have the same size.
pub fn blend(styled: &RgbImage, original: &RgbImage, strength: f32) -> Result<RgbImage> {
    if styled.dimensions() != original.dimensions() {
        return Err(Error::invalid(format!(
            "cannot blend images of different sizes {:?} and {:?}",
            styled.dimensions(),
            original.dimensions()
        )));
    }
    let s = strength.clamp(0.0, 1.0);
    let bytes = styled
        .as_raw()
        .iter()
        .zip(original.as_raw())
        .map(|(&a, &b)| (s * f32::from(a) + (1.0 - s) * f32::from(b)).round() as u8)
        .collect();
    RgbImage::from_raw(styled.width(), styled.height(), bytes)
        .ok_or_else(|| Error::invalid("blend size mismatch"))
}

/// A content hash of an image, used to key cached network features.
pub fn fingerprint(image: &RgbImage) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    image.dimensions().hash(&mut hasher);
    image.as_raw().hash(&mut hasher);
    hasher.finish()
}

/// Output formats the tool writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Png,
    Jpeg { quality: u8 },
}

impl OutputFormat {
    /// Picks the format from the file extension.
    pub fn from_path(path: &Path, jpeg_quality: u8) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("png") => Ok(OutputFormat::Png),
            Some("jpg") | Some("jpeg") => Ok(OutputFormat::Jpeg {
                quality: jpeg_quality.clamp(1, 100),
            }),
            _ => Err(Error::Write {
                path: path.to_path_buf(),
                reason: "unknown output format: use a .png, .jpg or .jpeg file name".into(),
            }),
        }
    }
}

/// Refuses an output path that is one of the inputs (we never overwrite a source).
pub fn ensure_not_an_input(output: &Path, inputs: &[&Path]) -> Result<()> {
    let out = comparable_path(output);
    for input in inputs {
        if comparable_path(input) == out {
            return Err(Error::Write {
                path: output.to_path_buf(),
                reason: format!(
                    "refusing to overwrite the input {}; choose another output name",
                    input.display()
                ),
            });
        }
    }
    Ok(())
}

/// Canonical form of a path that may not exist yet (canonical parent + file name).
fn comparable_path(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let parent = parent_folder(path);
    match (parent.canonicalize(), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// Encodes `image` and writes it atomically: a temporary file in the same folder, then a rename,
/// so a failure (full disk, permission) never leaves a half-written file at `path`.
pub fn save_atomic(image: &RgbImage, path: &Path, format: OutputFormat) -> Result<()> {
    // Encode in memory first: an encoder error then never touches the disk.
    let mut encoded = std::io::Cursor::new(Vec::new());
    let encode_result = match format {
        OutputFormat::Png => image.write_to(&mut encoded, image::ImageFormat::Png),
        OutputFormat::Jpeg { quality } => image.write_with_encoder(
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut encoded, quality),
        ),
    };
    encode_result.map_err(|e| Error::Write {
        path: path.to_path_buf(),
        reason: format!("encoding failed: {e}"),
    })?;
    write_bytes_atomic(path, encoded.get_ref())
}

/// The folder `path` is in (`.` for a bare file name), where its temporary files go.
pub fn parent_folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let write_error = |reason: String| Error::Write {
        path: path.to_path_buf(),
        reason,
    };
    let dir = parent_folder(path);
    if !dir.is_dir() {
        return Err(write_error(format!(
            "folder {} does not exist",
            dir.display()
        )));
    }
    if path.is_dir() {
        return Err(write_error("is a directory".into()));
    }
    let mut builder = tempfile::Builder::new();
    builder.prefix(".atelier-").suffix(".tmp");
    // Temporary files are private (0600) by default; the renamed result must be an ordinary
    // file, readable like any other the user creates (0666 less the umask).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    sweep_stale_temp_files(&dir);
    let mut tmp = builder
        .tempfile_in(&dir)
        .map_err(|e| write_error(describe_write_error(&e, &dir)))?;
    let unfinished = UnfinishedWrite::register(tmp.path());
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| write_error(describe_write_error(&e, &dir)))?;
    // On failure the temp file is removed when `tmp` is dropped.
    tmp.persist(path)
        .map_err(|e| write_error(describe_write_error(&e.error, &dir)))?;
    drop(unfinished);
    Ok(())
}

/// Why writing into `dir` failed, in words a user can act on (the OS's text follows in
/// brackets): the temporary file's own name, which tempfile adds, means nothing to them.
fn describe_write_error(error: &std::io::Error, dir: &Path) -> String {
    use std::io::ErrorKind;
    let what = match error.kind() {
        ErrorKind::PermissionDenied => format!(
            "permission denied: the folder {} is not writable for this user",
            dir.display()
        ),
        ErrorKind::ReadOnlyFilesystem => format!("{} is on a read-only disk", dir.display()),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
            "the disk is full (or the quota is used up); free some space".into()
        }
        ErrorKind::FileTooLarge => {
            "the file is too large for this disk or the process's file size limit".into()
        }
        _ => return error.to_string(),
    };
    let os = error
        .raw_os_error()
        .map(|code| std::io::Error::from_raw_os_error(code).to_string());
    match os {
        Some(os) => format!("{what} ({os})"),
        None => what,
    }
}

/// Temporary files being written right now, so that an interrupted program (Ctrl+C, SIGTERM)
/// removes them before it exits ([`remove_unfinished_writes`]).
static UNFINISHED_WRITES: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn unfinished_writes() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    UNFINISHED_WRITES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A temporary file being written: removed by [`remove_unfinished_writes`] if the process is
/// stopped by a signal before the guard is dropped (video outputs use it too).
pub struct UnfinishedWrite(PathBuf);

impl UnfinishedWrite {
    pub fn register(path: &Path) -> Self {
        unfinished_writes().push(path.to_path_buf());
        Self(path.to_path_buf())
    }
}

impl Drop for UnfinishedWrite {
    fn drop(&mut self) {
        unfinished_writes().retain(|p| p != &self.0);
    }
}

/// Removes the temporary files of writes still in progress (the process is about to exit on a
/// signal); returns how many there were. The outputs they were to replace stay as they were.
pub fn remove_unfinished_writes() -> usize {
    let mut writes = unfinished_writes();
    for path in writes.iter() {
        let _ = std::fs::remove_file(path);
    }
    let count = writes.len();
    writes.clear();
    count
}

/// Temporary files older than this beside an output were left by a process that was killed
/// (`kill -9`, a power cut) and are swept before the next write there.
const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Removes `.atelier-*.tmp` files older than [`STALE_TEMP_AGE`] in `dir`. Best effort: a file
/// that cannot be removed is left alone.
pub fn sweep_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(".atelier-") && name.ends_with(".tmp")) {
            continue;
        }
        let old = entry
            .metadata()
            .ok()
            .filter(std::fs::Metadata::is_file)
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP_AGE);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_round_trip_keeps_pixels() {
        let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 40, y as u8 * 80, 7]));
        let t = to_tensor(&img, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 3, 5]);
        assert_eq!(from_tensor(&t).unwrap(), img);
    }

    #[test]
    fn stale_temp_files_are_swept_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".atelier-old123.tmp");
        let fresh = dir.path().join(".atelier-new456.tmp");
        let other = dir.path().join("keep.tmp");
        for p in [&stale, &fresh, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        let two_days_ago = std::time::SystemTime::now() - 2 * STALE_TEMP_AGE;
        let file = std::fs::File::options().write(true).open(&stale).unwrap();
        file.set_modified(two_days_ago).unwrap();
        let old_other = std::fs::File::options().write(true).open(&other).unwrap();
        old_other.set_modified(two_days_ago).unwrap();
        write_bytes_atomic(&dir.path().join("out.png"), b"x").unwrap();
        assert!(!stale.exists(), "a day-old temp file is swept");
        assert!(fresh.exists(), "a temp file of a running write is kept");
        assert!(other.exists(), "only our own temp files are touched");
        // Only this test's own entries are checked: other tests write in parallel, and
        // `remove_unfinished_writes` here would delete their temp files mid-write.
        let ours = unfinished_writes()
            .iter()
            .filter(|p| p.starts_with(dir.path()))
            .count();
        assert_eq!(ours, 0, "finished writes are off the list");
    }

    #[cfg(unix)]
    #[test]
    fn saved_files_are_not_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.png");
        write_bytes_atomic(&path, b"x").unwrap();
        // The same mode as a file created the ordinary way (0666 less the umask).
        let ordinary = dir.path().join("ordinary");
        std::fs::write(&ordinary, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), mode(&ordinary));
    }

    #[test]
    fn non_finite_tensors_are_not_images() {
        let t = Tensor::from_vec(vec![1f32, f32::NAN, 3.0], (3, 1, 1), &Device::Cpu).unwrap();
        let err = from_tensor(&t).unwrap_err().to_string();
        assert!(err.contains("NaN or infinite"), "{err}");
        let t = Tensor::from_vec(vec![f32::INFINITY, 0.0, 0.0], (3, 1, 1), &Device::Cpu).unwrap();
        assert!(from_tensor(&t).is_err());
    }

    #[test]
    fn jpeg_structure_finds_the_end_marker() {
        let img = RgbImage::from_fn(40, 24, |x, y| image::Rgb([x as u8 * 6, y as u8 * 9, 50]));
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_to(&mut bytes, image::ImageFormat::Jpeg).unwrap();
        let mut bytes = bytes.into_inner();
        assert_eq!(check_jpeg_structure(&bytes), Ok(()));
        for keep in [3, bytes.len() / 10, bytes.len() / 2, bytes.len() - 2] {
            assert!(check_jpeg_structure(&bytes[..keep]).is_err(), "{keep}");
        }
        // Data after the end marker (a motion photo's video) leaves the image complete.
        bytes.extend_from_slice(b"\xFF\xD8ftypmp42 trailing");
        assert_eq!(check_jpeg_structure(&bytes), Ok(()));
    }

    #[cfg(unix)]
    #[test]
    fn special_files_are_named_without_opening_them() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_rgb(Path::new("/dev/null")).unwrap_err().to_string();
        assert!(err.contains("is not a regular file"), "{err}");
        let link = dir.path().join("loop.png");
        std::os::unix::fs::symlink(&link, &link).unwrap();
        let err = load_rgb(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link loop"), "{err}");
        let err = load_rgb(&dir.path().join("missing.png"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("file not found"), "{err}");
    }

    #[test]
    fn fit_size_keeps_aspect() {
        assert_eq!(fit_size(1000, 500, 256), (256, 128));
        assert_eq!(fit_size(300, 600, 100), (50, 100));
    }

    #[test]
    fn blend_endpoints() {
        let a = RgbImage::from_pixel(2, 2, image::Rgb([200, 0, 100]));
        let b = RgbImage::from_pixel(2, 2, image::Rgb([0, 100, 100]));
        assert_eq!(blend(&a, &b, 1.0).unwrap(), a);
        assert_eq!(blend(&a, &b, 0.0).unwrap(), b);
        assert_eq!(
            blend(&a, &b, 0.5).unwrap().get_pixel(0, 0).0,
            [100, 50, 100]
        );
    }
}
