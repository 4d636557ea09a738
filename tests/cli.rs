//! The command line as a user meets it: real runs and every kind of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{Rgb, RgbImage};

const VGG: &str = "../shared/models/vgg16-features.safetensors";

fn atelier(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(args)
        .env_remove("ATELIER_VGG")
        .output()
        .expect("run atelier")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_photo(dir: &Path, name: &str, w: u32, h: u32) -> PathBuf {
    let path = dir.join(name);
    RgbImage::from_fn(w, h, |x, y| Rgb([(x * 5) as u8, (y * 3) as u8, 90]))
        .save(&path)
        .unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Asserts a failed run with a short message containing `needle` and no output file.
fn assert_fails(out: &Output, needle: &str, output: &Path) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "stderr lacks `{needle}`: {err}"
    );
    assert!(err.trim().lines().count() <= 2, "error is not short: {err}");
    assert!(!output.exists(), "output was written despite the error");
}

#[test]
fn bad_inputs_give_clear_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let photo = write_photo(dir.path(), "photo.png", 40, 30);
    let style = write_photo(dir.path(), "style.png", 30, 30);
    let out = dir.path().join("out.png");
    let vgg = dir.path().join("fake-vgg.safetensors");
    std::fs::write(&vgg, b"this is not a weights file").unwrap();

    let missing = dir.path().join("missing.jpg");
    let r = atelier(&[
        "stylize",
        s(&missing),
        "--style",
        s(&style),
        "--vgg",
        s(&vgg),
        "-o",
        s(&out),
    ]);
    assert_fails(&r, "not found", &out);

    let corrupt = dir.path().join("corrupt.jpg");
    let mut bytes = std::fs::read(write_photo(dir.path(), "ok.jpg", 40, 30)).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&corrupt, &bytes).unwrap();
    let r = atelier(&[
        "stylize",
        s(&corrupt),
        "--style",
        s(&style),
        "--vgg",
        s(&vgg),
        "-o",
        s(&out),
    ]);
    assert_fails(&r, "corrupt", &out);

    let text = dir.path().join("notes.png");
    std::fs::write(&text, b"hello").unwrap();
    let r = atelier(&[
        "stylize",
        s(&text),
        "--style",
        s(&style),
        "--vgg",
        s(&vgg),
        "-o",
        s(&out),
    ]);
    assert_fails(&r, "format", &out);

    let huge = dir.path().join("huge.png");
    std::fs::write(&huge, png_header_only(100_000, 100_000)).unwrap();
    let r = atelier(&[
        "stylize",
        s(&huge),
        "--style",
        s(&style),
        "--vgg",
        s(&vgg),
        "-o",
        s(&out),
    ]);
    assert_fails(&r, "megapixels", &out);

    let r = atelier(&[
        "stylize",
        s(&photo),
        "--style",
        s(&style),
        "--vgg",
        s(&vgg),
        "-o",
        s(&out),
    ]);
    assert_fails(&r, "not a weights file", &out);

    let r = atelier(&[
        "stylize",
        s(&photo),
        "--style",
        s(&style),
        "--vgg",
        s(&vgg),
        "-o",
        s(&photo),
    ]);
    assert!(!r.status.success());
    assert!(
        stderr(&r).contains("refusing to overwrite"),
        "{}",
        stderr(&r)
    );

    let nowhere = dir.path().join("no-such-folder/out.png");
    let r = atelier(&[
        "stylize",
        s(&photo),
        "--style",
        s(&style),
        "--vgg",
        s(&vgg),
        "-o",
        s(&nowhere),
    ]);
    assert_fails(&r, "does not exist", &nowhere);

    let r = atelier(&[
        "stylize",
        s(&photo),
        "--style",
        s(&style),
        "--vgg",
        s(&vgg),
        "--style-weight",
        "-1",
        "-o",
        s(&out),
    ]);
    assert_fails(&r, "style weight", &out);

    let r = atelier(&[
        "stylize",
        s(&photo),
        "--style",
        s(&style),
        "--vgg",
        s(&vgg),
        "--size",
        "0",
        "-o",
        s(&out),
    ]);
    assert_fails(&r, "size", &out);

    let bad_ext = dir.path().join("out.gifx");
    let r = atelier(&[
        "stylize",
        s(&photo),
        "--style",
        s(&style),
        "--vgg",
        s(&vgg),
        "-o",
        s(&bad_ext),
    ]);
    assert_fails(&r, "output format", &bad_ext);

    let r = atelier(&[
        "stylize",
        s(&photo),
        "--method",
        "network",
        "--style",
        s(&style),
        "-o",
        s(&out),
    ]);
    assert_fails(&r, "not a weights file", &out);

    // Nothing but the inputs and our own fixtures is left in the folder: no temp files.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("atelier") || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn missing_vgg_explains_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let photo = write_photo(dir.path(), "photo.png", 40, 30);
    let out = dir.path().join("out.png");
    let r = Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(["stylize", s(&photo), "--style", s(&photo), "-o", s(&out)])
        .current_dir(dir.path())
        .env_remove("ATELIER_VGG")
        .env("ATELIER_CACHE", dir.path().join("empty-cache"))
        .output()
        .unwrap();
    assert_fails(&r, "fetch-vgg", &out);
}

#[test]
fn network_method_writes_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let photo = write_photo(dir.path(), "photo.png", 45, 31);
    let style_dir = dir.path().join("styles/random");
    std::fs::create_dir_all(&style_dir).unwrap();
    atelier::nn::transformer::TransformerNet::random(&candle_core::Device::Cpu, 1)
        .unwrap()
        .save_safetensors(
            &style_dir.join("model.safetensors"),
            candle_core::DType::F16,
            Default::default(),
        )
        .unwrap();
    let out = dir.path().join("out.jpg");
    let r = atelier(&[
        "stylize",
        s(&photo),
        "--method",
        "network",
        "--style",
        s(&style_dir),
        "--strength",
        "0.5",
        "--json",
        "-o",
        s(&out),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let json: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(json["method"], "network");
    assert_eq!(json["width"], 45);
    let img = image::open(&out).unwrap();
    assert_eq!((img.width(), img.height()), (45, 31));
}

#[test]
fn optimize_reports_json_and_writes_previews() {
    if !Path::new(VGG).exists() {
        eprintln!("skipping: {VGG} not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let photo = write_photo(dir.path(), "photo.png", 64, 48);
    let style = write_photo(dir.path(), "style.png", 48, 48);
    let out = dir.path().join("out.png");
    let previews = dir.path().join("previews");
    let r = atelier(&[
        "stylize",
        s(&photo),
        "--style",
        s(&style),
        "--vgg",
        VGG,
        "--size",
        "48",
        "--steps",
        "4",
        "--preview-every",
        "2",
        "--preview-dir",
        s(&previews),
        "--json",
        "-o",
        s(&out),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let json: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    for key in [
        "method",
        "width",
        "height",
        "steps",
        "seconds",
        "content_loss",
        "style_loss",
        "initial_style_loss",
        "output",
    ] {
        assert!(!json[key].is_null(), "missing {key} in {json}");
    }
    assert_eq!(json["steps"], 4);
    assert!(json["style_loss"].as_f64().unwrap() < json["initial_style_loss"].as_f64().unwrap());
    assert!(out.exists());
    assert!(previews.join("preview-00002.png").exists());
    assert!(previews.join("preview-00004.png").exists());
}

/// A PNG whose header claims the given size, with no pixel data: enough to test size limits.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
