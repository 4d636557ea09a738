//! The command line as a user meets it: real runs and every kind of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{Rgb, RgbImage};

const VGG: &str = "../shared/models/vgg16-features.safetensors";

mod common;
use common::png::png_header_only;

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
    // `atelier stylize CONTENT --style style.png --vgg fake EXTRA... -o OUT`
    let stylize = |content: &Path, extra: &[&str], output: &Path| {
        let mut args = vec![
            "stylize",
            s(content),
            "--style",
            s(&style),
            "--vgg",
            s(&vgg),
        ];
        args.extend_from_slice(extra);
        args.extend(["-o", s(output)]);
        atelier(&args)
    };

    let missing = dir.path().join("missing.jpg");
    assert_fails(&stylize(&missing, &[], &out), "not found", &out);

    let corrupt = dir.path().join("corrupt.jpg");
    let mut bytes = std::fs::read(write_photo(dir.path(), "ok.jpg", 40, 30)).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&corrupt, &bytes).unwrap();
    assert_fails(&stylize(&corrupt, &[], &out), "corrupt", &out);

    let text = dir.path().join("notes.png");
    std::fs::write(&text, b"hello").unwrap();
    assert_fails(&stylize(&text, &[], &out), "format", &out);

    let huge = dir.path().join("huge.png");
    std::fs::write(&huge, png_header_only(100_000, 100_000)).unwrap();
    assert_fails(&stylize(&huge, &[], &out), "megapixels", &out);

    assert_fails(&stylize(&photo, &[], &out), "not a weights file", &out);

    let r = stylize(&photo, &[], &photo);
    assert!(!r.status.success());
    assert!(
        stderr(&r).contains("refusing to overwrite"),
        "{}",
        stderr(&r)
    );

    let nowhere = dir.path().join("no-such-folder/out.png");
    assert_fails(&stylize(&photo, &[], &nowhere), "does not exist", &nowhere);

    let r = stylize(&photo, &["--style-weight", "-1"], &out);
    assert_fails(&r, "style weight", &out);

    assert_fails(&stylize(&photo, &["--size", "0"], &out), "size", &out);

    let bad_ext = dir.path().join("out.gifx");
    assert_fails(&stylize(&photo, &[], &bad_ext), "output format", &bad_ext);

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
        // The built-in VGG16 stops at relu4_3: deeper layers need a downloaded VGG.
        .args(["stylize", s(&photo), "--style", s(&photo), "-o", s(&out)])
        .args(["--style-layers", "relu5_1"])
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

    // --preserve-color works with the network too: the photo's colours come back.
    let kept = dir.path().join("kept.png");
    let r = atelier(&[
        "stylize",
        s(&photo),
        "--method",
        "network",
        "--style",
        s(&style_dir),
        "--preserve-color",
        "-o",
        s(&kept),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let kept = image::open(&kept).unwrap().to_rgb8();
    let original = image::open(&photo).unwrap().to_rgb8();
    let gap = common::fixtures::chroma_gap(&kept, &original);
    assert!(gap < 6.0, "mean chroma gap {gap}");

    // --stroke: larger strokes at the photo's size; out of range, a clear error.
    let broad = dir.path().join("broad.png");
    let r = atelier(&[
        "stylize",
        s(&photo),
        "--method",
        "network",
        "--style",
        s(&style_dir),
        "--stroke",
        "2",
        "-o",
        s(&broad),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(
        image::open(&broad).unwrap().to_rgb8().dimensions(),
        (45, 31)
    );
    let wild = dir.path().join("wild.png");
    let r = atelier(&[
        "stylize",
        s(&photo),
        "--method",
        "network",
        "--style",
        s(&style_dir),
        "--stroke",
        "9",
        "-o",
        s(&wild),
    ]);
    assert_fails(&r, "--stroke must be between 0.25 and 4", &wild);
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

#[test]
fn score_ranks_a_photo_against_its_stylisation() {
    if !Path::new(VGG).exists() {
        eprintln!("skipping: {VGG} not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let photo = write_photo(dir.path(), "photo.png", 64, 48);
    let style = dir.path().join("style.png");
    RgbImage::from_fn(48, 48, |x, y| {
        if (x / 4 + y / 4) % 2 == 0 {
            Rgb([220, 40, 40])
        } else {
            Rgb([30, 30, 200])
        }
    })
    .save(&style)
    .unwrap();
    let out = dir.path().join("out.png");
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
        "20",
        "-o",
        s(&out),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let r = atelier(&[
        "score",
        s(&photo),
        s(&out),
        "--photo",
        s(&photo),
        "--style",
        s(&style),
        "--vgg",
        VGG,
        "--size",
        "48",
        "--json",
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&r.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let loss = |i: usize, key: &str| rows[i][key].as_f64().unwrap();
    // The photo is its own content target; the stylisation matches the style better.
    assert_eq!(loss(0, "content_loss"), 0.0);
    assert!(loss(1, "style_loss") < loss(0, "style_loss"), "{rows:?}");

    let missing = dir.path().join("missing.png");
    let r = atelier(&[
        "score",
        s(&missing),
        "--photo",
        s(&photo),
        "--style",
        s(&style),
        "--vgg",
        VGG,
    ]);
    assert!(!r.status.success());
    assert!(stderr(&r).contains("missing.png"), "{}", stderr(&r));
}

#[test]
fn batch_writes_every_good_photo_and_fails_the_corrupt_one_alone() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for (i, name) in ["a.png", "b.jpg", "c.png", "d.png"].iter().enumerate() {
        write_photo(&photos, name, 30 + i as u32 * 3, 24);
    }
    // A file named like a photo that is not one, and a photo given apart from the folder.
    std::fs::write(
        photos.join("broken.jpg"),
        b"\xff\xd8\xff\xe0 not really a jpeg",
    )
    .unwrap();
    let extra = write_photo(dir.path(), "extra.png", 26, 20);
    let model = dir.path().join("model.safetensors");
    atelier::nn::transformer::TransformerNet::random(&candle_core::Device::Cpu, 2)
        .unwrap()
        .save_safetensors(&model, candle_core::DType::F16, Default::default())
        .unwrap();
    let out = dir.path().join("out");
    let r = atelier(&[
        "stylize",
        s(&photos),
        s(&extra),
        "--method",
        "network",
        "--style",
        s(&model),
        "--json",
        "--quiet",
        "-o",
        s(&out),
    ]);
    let err = stderr(&r);
    assert!(
        !r.status.success(),
        "a failed photo makes the run fail: {err}"
    );
    // One line for the broken photo, one summary.
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 2, "{err}");
    assert!(error_lines[0].contains("broken.jpg"), "{err}");
    assert!(err.contains("1 of 6 photos failed"), "{err}");
    for name in ["a", "b", "c", "d", "extra"] {
        let written = out.join(format!("{name}.png"));
        assert!(written.is_file(), "{} missing", written.display());
    }
    assert!(!out.join("broken.png").exists());
    // --json: one object per photo, the failed one with its error.
    let objects: Vec<serde_json::Value> = String::from_utf8_lossy(&r.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 6);
    let failed: Vec<&serde_json::Value> = objects
        .iter()
        .filter(|o| o.get("error").is_some())
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["input"].as_str().unwrap().ends_with("broken.jpg"));
    assert_eq!(
        objects.iter().filter(|o| o["method"] == "network").count(),
        5
    );

    // Several photos need a folder, not a file name.
    let r = atelier(&[
        "stylize",
        s(&photos),
        "--method",
        "network",
        "--style",
        s(&model),
        "-o",
        s(&dir.path().join("one.png")),
    ]);
    assert_fails(&r, "output folder", &dir.path().join("one.png"));
}

fn mean_gap(a: &RgbImage, b: &RgbImage) -> f64 {
    let sum: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs())
        .sum();
    sum / a.as_raw().len() as f64
}

fn painting(dir: &Path, name: &str, seed: u32) -> PathBuf {
    let path = dir.join(name);
    RgbImage::from_fn(96, 80, |x, y| {
        if ((x + seed * 3) / 6 + y / 6).is_multiple_of(2) {
            Rgb([(200 + seed * 20) as u8, 40, 30])
        } else {
            Rgb([20, (60 + seed * 60) as u8, 200])
        }
    })
    .save(&path)
    .unwrap();
    path
}

/// `--method arbitrary` on the built-in models, with no VGG anywhere (ATELIER_VGG unset, an
/// empty cache): strength, blends and collections each change the picture as they say.
#[test]
fn arbitrary_method_works_offline_and_its_controls_act() {
    let dir = tempfile::tempdir().unwrap();
    let photo = write_photo(dir.path(), "photo.png", 64, 48);
    let a = painting(dir.path(), "a.png", 0);
    let b = painting(dir.path(), "b.png", 2);
    let run = |extra: &[&str], out: &str| -> RgbImage {
        let out = dir.path().join(out);
        let r = Command::new(env!("CARGO_BIN_EXE_atelier"))
            .args(["stylize", s(&photo), "--method", "arbitrary", "-o", s(&out)])
            .args(extra)
            .env_remove("ATELIER_VGG")
            .env("ATELIER_CACHE", dir.path().join("empty-cache"))
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", stderr(&r));
        image::open(&out).unwrap().to_rgb8()
    };
    let original = image::open(&photo).unwrap().to_rgb8();
    let full = run(&["--style", s(&a)], "full.png");
    assert_eq!(full.dimensions(), (64, 48));
    let weak = run(&["--style", s(&a), "--strength", "0.1"], "weak.png");
    assert!(
        mean_gap(&weak, &original) < mean_gap(&full, &original),
        "a lower strength stays nearer the photo"
    );
    // A blend of weights 1 and 0 is the first style alone; 0.5/0.5 is something else.
    let only_a = run(
        &["--style", s(&a), "--style", s(&b), "--blend", "1,0"],
        "only-a.png",
    );
    assert!(
        mean_gap(&only_a, &full) < 0.5,
        "{}",
        mean_gap(&only_a, &full)
    );
    let half = run(
        &["--style", s(&a), "--style", s(&b), "--blend", "0.5,0.5"],
        "half.png",
    );
    assert!(mean_gap(&half, &full) > 1.0);
    // A folder is a collection: its statistics pooled.
    let works = dir.path().join("works");
    std::fs::create_dir(&works).unwrap();
    std::fs::copy(&a, works.join("a.png")).unwrap();
    std::fs::copy(&b, works.join("b.png")).unwrap();
    let pooled = run(&["--style", s(&works)], "pooled.png");
    assert!(mean_gap(&pooled, &full) > 1.0);
    let wct = run(&["--style", s(&a), "--transform", "wct"], "wct.png");
    assert!(mean_gap(&wct, &full) > 1.0);
    let kept = run(&["--style", s(&a), "--preserve-color"], "kept.png");
    assert!(
        common::fixtures::chroma_gap(&kept, &original)
            < common::fixtures::chroma_gap(&full, &original)
    );

    let out = dir.path().join("never.png");
    let r = atelier(&[
        "stylize",
        s(&photo),
        "--method",
        "arbitrary",
        "--style",
        s(&a),
        "--vgg",
        s(&a),
        "-o",
        s(&out),
    ]);
    assert_fails(&r, "built-in VGG16", &out);
}

/// `atelier train-decoder` trains, checkpoints, resumes to the end and writes the decoder and
/// its report; a resume with other settings is refused.
#[test]
fn train_decoder_resumes_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("photos");
    std::fs::create_dir(&data).unwrap();
    for i in 0..3 {
        write_photo(&data, &format!("p{i}.png"), 40 + i * 8, 36);
    }
    let out = dir.path().join("decoder");
    let train = |iterations: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_atelier"))
            .args([
                "train-decoder",
                "--data",
                s(&data),
                "--layer",
                "relu2_1",
                "-o",
                s(&out),
            ])
            .args([
                "--width",
                "8",
                "--size",
                "16",
                "--batch",
                "2",
                "--iterations",
                iterations,
            ])
            .args([
                "--checkpoint-every",
                "2",
                "--preview-every",
                "0",
                "--eval",
                s(&data),
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let r = train("2", &[]);
    assert!(r.status.success(), "{}", stderr(&r));
    let r = train("4", &["--resume"]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(
        stderr(&r).contains("resuming after iteration 2"),
        "{}",
        stderr(&r)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("training.json")).unwrap()).unwrap();
    assert_eq!(report["iterations"], 4);
    assert!(report["heldout_psnr_db"].as_f64().unwrap() > 0.0);
    let decoder = atelier::nn::decoder::Decoder::load(
        &out.join("decoder.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!((decoder.layer(), decoder.width()), ("relu2_1", 8));
    let r = train("6", &["--resume", "--lr", "0.01"]);
    assert!(!r.status.success());
    assert!(stderr(&r).contains("another recipe"), "{}", stderr(&r));
}

/// Started with no display, the app says what is missing and what to use instead, in one line
/// without the windowing library's source paths.
#[cfg(all(feature = "gui", target_os = "linux"))]
#[test]
fn the_app_without_a_display_says_so_plainly() {
    let out = Command::new(env!("CARGO_BIN_EXE_atelier"))
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("WAYLAND_SOCKET")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("needs a graphical display"), "{err}");
    assert!(err.contains("atelier stylize"), "{err}");
    assert!(!err.contains(".rs:"), "a source path leaked: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// SIGTERM to the desktop app: the handler installed before any command runs removes the
/// temporary file of a write in progress and exits with 130, as for the command line. Needs an
/// X server: runs under Xvfb where it is installed (`.ci/run` installs it), else says so.
#[cfg(all(feature = "gui", target_os = "linux"))]
#[test]
fn the_app_stops_cleanly_on_sigterm() {
    use std::time::{Duration, Instant};
    let display = format!(":{}", 100 + std::process::id() % 800);
    let Ok(mut xvfb) = Command::new("Xvfb")
        .args([
            display.as_str(),
            "-screen",
            "0",
            "1024x768x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        eprintln!("skipped: no Xvfb on this machine (apt-get install xvfb)");
        return;
    };
    let socket = PathBuf::from(format!("/tmp/.X11-unix/X{}", &display[1..]));
    let start = Instant::now();
    while !socket.exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(socket.exists(), "Xvfb did not start on {display}");
    let home = tempfile::tempdir().unwrap();
    let app = Command::new(env!("CARGO_BIN_EXE_atelier"))
        .env("DISPLAY", &display)
        .env_remove("WAYLAND_DISPLAY")
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Long enough for the window and the engine thread to be up.
    std::thread::sleep(Duration::from_secs(4));
    let killed = Command::new("kill")
        .args(["-TERM", &app.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = app.wait_with_output().unwrap();
    let _ = xvfb.kill();
    let _ = xvfb.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.trim_end().ends_with("interrupted"), "{err}");
}
