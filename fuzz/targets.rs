//! The bodies of the fuzz targets, shared by `fuzz/fuzz_targets/*.rs` (run with `cargo fuzz`
//! on nightly) and `tests/fuzz_corpus.rs` (replays the kept corpus on stable, in CI).
//!
//! Each body feeds untrusted bytes to the loader a user's file reaches and checks what must
//! hold whatever the bytes: no panic, no unbounded work, and the loader's own promises (an
//! image within the pixel limit, style files inside their folder, a recipe that round-trips).
// Each fuzz target uses one body; the corpus test uses them all.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use atelier::imaging::{self, MAX_INPUT_PIXELS};
use atelier::nn::weights::WeightFile;
use atelier::recipe::{self, RECIPE_KEYWORD};
use atelier::styles::{self, MANIFEST_NAME};
use candle_core::Device;

/// The names of the targets, as `fuzz/fuzz_targets/NAME.rs` and `fuzz/corpus/NAME/`.
pub const TARGETS: [&str; 5] = ["image", "safetensors", "pth", "style_toml", "png_recipe"];

/// Runs target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "image" => image(data),
        "safetensors" => safetensors(data),
        "pth" => pth(data),
        "style_toml" => style_toml(data),
        "png_recipe" => png_recipe(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// Image decoding with the limits of [`imaging::decode_rgb`]. The first byte chooses whether a
/// damaged JPEG is allowed, so both paths are explored.
pub fn image(data: &[u8]) {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let allow_damaged = flags & 1 == 1;
    if let Ok((image, warning)) =
        imaging::decode_rgb(bytes.to_vec(), Path::new("fuzz"), allow_damaged)
    {
        let pixels = u64::from(image.width()) * u64::from(image.height());
        assert!(pixels > 0 && pixels <= MAX_INPUT_PIXELS, "{pixels} pixels");
        assert!(allow_damaged || warning.is_none());
    }
}

/// A `.safetensors` file: every tensor it declares, within the file, converted to f32.
pub fn safetensors(data: &[u8]) {
    if let Ok(file) = WeightFile::from_bytes(data, Path::new("fuzz.safetensors"), &Device::Cpu) {
        for tensor in file.tensors.values() {
            assert!(tensor.elem_count() * 2 <= data.len() || tensor.elem_count() == 0);
        }
    }
}

/// A PyTorch zip `.pth`, loaded as a file is: its pickles checked for code, then read. An odd
/// first byte: the rest is the whole file. An even one: the rest is `archive/data.pkl`,
/// wrapped in a valid archive with two storages of data, so that mutations reach the pickle
/// machine instead of dying at the zip's checksums.
pub fn pth(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let file = if flags & 1 == 1 {
        rest.to_vec()
    } else {
        zip_with_pickle(rest)
    };
    let path = scratch().join("fuzz.pth");
    if std::fs::write(&path, file).is_ok() {
        let _ = WeightFile::load(&path, &Device::Cpu);
    }
}

/// A zip `.pth` laid out as torch lays it out, with `pickle` as its `archive/data.pkl` and
/// storages `0` (72 bytes) and `1` (8 bytes).
pub fn zip_with_pickle(pickle: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let entries: [(&str, &[u8]); 5] = [
        ("archive/data.pkl", pickle),
        ("archive/byteorder", b"little"),
        ("archive/data/0", &[0x3f; 72]),
        ("archive/data/1", &[0; 8]),
        ("archive/version", b"3\n"),
    ];
    for (name, bytes) in entries {
        zip.start_file(name, options)
            .and_then(|()| zip.write_all(bytes).map_err(Into::into))
            .expect("writing a zip in memory");
    }
    zip.finish().expect("writing a zip in memory").into_inner()
}

/// A `style.toml` in a style folder that holds a model, an image and a link out of the
/// folder, beside another style folder: every file an accepted manifest names must be a
/// regular file inside its own folder.
pub fn style_toml(data: &[u8]) {
    let root = style_root();
    let folder = root.join("fuzzed");
    if std::fs::write(folder.join(MANIFEST_NAME), data).is_err() {
        return;
    }
    let inside = folder
        .canonicalize()
        .unwrap_or_else(|_| panic!("the scratch folder {} vanished", folder.display()));
    let (entries, _problems) = styles::load_bundled(root);
    for entry in entries.iter().filter(|e| e.key().starts_with(&folder)) {
        for file in [&entry.model, &entry.image, &entry.thumbnail]
            .into_iter()
            .flatten()
        {
            let real = file
                .canonicalize()
                .unwrap_or_else(|e| panic!("{} was accepted but {e}", file.display()));
            assert!(real.starts_with(&inside), "{} is outside", real.display());
            assert!(real.is_file(), "{} is not a regular file", real.display());
        }
    }
}

/// A PNG's recipe chunk. An odd first byte: the rest is a whole PNG. An even one: the rest is
/// the body of a `tEXt` chunk (keyword, NUL, text), wrapped in a valid 1×1 PNG so that the
/// mutations reach the recipe parser instead of dying at the chunk's checksum. A recipe that
/// parses writes back to text that parses to the same recipe.
pub fn png_recipe(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let png = if flags & 1 == 1 {
        rest.to_vec()
    } else {
        png_with_text_chunk(rest)
    };
    if let Ok(recipe) = recipe::recipe_from_png(png, Path::new("fuzz.png")) {
        if let Ok(text) = recipe.to_text() {
            let again = recipe::Recipe::from_text(&text).expect("a written recipe reads back");
            assert_eq!(again.to_text().ok(), Some(text));
        }
    }
}

/// A 1×1 RGB PNG with one `tEXt` chunk whose body is `body`.
pub fn png_with_text_chunk(body: &[u8]) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0]);
    chunk(&mut png, b"tEXt", body);
    // zlib: a stored block holding the one scanline (filter 0, then RGB 0,0,0).
    chunk(
        &mut png,
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x04, 0x00, 0xfb, 0xff, 0, 0, 0, 0, 0x00, 0x04, 0x00, 0x01,
        ],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

/// The body of a `tEXt` chunk holding a recipe, as the seeds start from.
pub fn recipe_chunk_body(text: &str) -> Vec<u8> {
    let mut body = RECIPE_KEYWORD.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(text.as_bytes());
    body
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], body: &[u8]) {
    png.extend_from_slice(&(body.len() as u32).to_be_bytes());
    png.extend_from_slice(kind);
    png.extend_from_slice(body);
    let mut crc = !0u32;
    for &byte in kind.iter().chain(body) {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    png.extend_from_slice(&(!crc).to_be_bytes());
}

/// A scratch folder for this process, made once.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("atelier-fuzz-")
            .tempdir()
            .expect("a scratch folder");
        dir.keep()
    })
}

/// `scratch()/styles`: `fuzzed/` (the manifest under test, a model, an image, a link to the
/// other folder's model) and `other/` (a style of its own).
fn style_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = scratch().join("styles");
        let fuzzed = root.join("fuzzed");
        let other = root.join("other");
        for dir in [&fuzzed, &other.join("sub")] {
            std::fs::create_dir_all(dir).expect("scratch style folders");
        }
        for (path, bytes) in [
            (
                fuzzed.join("model.safetensors"),
                &b"not read by the gallery"[..],
            ),
            (fuzzed.join("painting.jpg"), b"not read by the gallery"),
            (other.join("model.safetensors"), b"another style's model"),
            (
                other.join(MANIFEST_NAME),
                b"name = \"Other\"\nmodel = \"model.safetensors\"\n",
            ),
        ] {
            std::fs::write(path, bytes).expect("scratch style files");
        }
        #[cfg(unix)]
        {
            let _ = std::os::unix::fs::symlink("../other/model.safetensors", fuzzed.join("out"));
            let _ = std::os::unix::fs::symlink("/etc", fuzzed.join("etc"));
            let _ = std::os::unix::fs::symlink(&fuzzed, fuzzed.join("loop"));
        }
        root
    })
}
