//! Quiet failures turned loud (issue 17): damaged, hostile or nonsensical input must end in a
//! short error naming the problem, with nothing written and nothing changed. Every case runs
//! the real binary; photo cases use `--method network` with a random model, so no VGG is needed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use atelier::nn::transformer::TransformerNet;
use candle_core::{DType, Device, Tensor};
use image::{Rgb, RgbImage};

// Included by path so this test does not depend on a shared tests/common/mod.rs.
#[path = "common/png.rs"]
mod png;
#[path = "common/pth.rs"]
mod pth;

/// Longest a run may take: a binary that blocks (on a FIFO, say) fails the test instead of
/// hanging it.
const TIMEOUT: Duration = Duration::from_secs(120);

fn atelier(args: &[&str]) -> Output {
    atelier_env(args, &[])
}

/// Runs the binary with `env` set, stdin closed and a time limit.
fn atelier_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(args)
        .env_remove("ATELIER_VGG")
        .env_remove("ATELIER_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run atelier");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > TIMEOUT {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "atelier {args:?} did not finish in {TIMEOUT:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write_photo(dir: &Path, name: &str, w: u32, h: u32) -> PathBuf {
    let path = dir.join(name);
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 7 + y) as u8, (y * 5) as u8, ((x * y) % 251) as u8])
    })
    .save(&path)
    .unwrap();
    path
}

/// A random style network saved as `.safetensors` at `path`.
fn write_model(path: &Path) {
    TransformerNet::random(&Device::Cpu, 1)
        .unwrap()
        .save_safetensors(path, DType::F16, HashMap::new())
        .unwrap();
}

/// A random network's tensors with `name` replaced by `f(original)`, saved as F32.
fn write_model_with(path: &Path, name: &str, f: impl Fn(&Tensor) -> Tensor) {
    let mut tensors = TransformerNet::random(&Device::Cpu, 1).unwrap().tensors();
    let entry = tensors.iter_mut().find(|(n, _)| n == name).unwrap();
    entry.1 = f(&entry.1);
    atelier::nn::weights::save_safetensors(path, &tensors, Some(DType::F32), HashMap::new())
        .unwrap();
}

/// Files and their bytes, to check that a failed run changed none of them.
struct Sources(Vec<(PathBuf, Vec<u8>)>);

impl Sources {
    fn of(paths: &[&Path]) -> Self {
        Self(
            paths
                .iter()
                .map(|p| (p.to_path_buf(), std::fs::read(p).unwrap()))
                .collect(),
        )
    }

    fn assert_unchanged(&self) {
        for (path, bytes) in &self.0 {
            assert_eq!(
                &std::fs::read(path).unwrap(),
                bytes,
                "{} changed",
                path.display()
            );
        }
    }
}

/// Asserts a failed run: non-zero exit, a short message (at most two lines, no colour codes)
/// containing every one of `needles`, no `output`, and no temporary file left in its folder.
fn assert_refused(out: &Output, needles: &[&str], output: &Path) {
    let err = stderr(out);
    eprintln!("refused as expected: {}", err.trim());
    assert!(!out.status.success(), "expected a failure, stderr: {err}");
    for needle in needles {
        assert!(
            err.to_lowercase().contains(&needle.to_lowercase()),
            "stderr lacks `{needle}`: {err}"
        );
    }
    assert!(err.trim().lines().count() <= 2, "error is not short: {err}");
    assert!(
        !err.contains('\x1b'),
        "colour codes in a piped stderr: {err:?}"
    );
    assert!(!output.exists(), "{} was written", output.display());
    assert_no_temporary_files(output.parent().unwrap());
}

fn assert_no_temporary_files(dir: &Path) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in read {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !(name.starts_with(".atelier-") && name.ends_with(".tmp")),
            "leftover temporary file {name} in {}",
            dir.display()
        );
    }
}

/// `atelier stylize PHOTO --method network --style MODEL EXTRA... -o OUT`.
fn network(photo: &Path, model: &Path, extra: &[&str], out: &Path) -> Output {
    let mut args = vec![
        "stylize",
        s(photo),
        "--method",
        "network",
        "--style",
        s(model),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    args.extend(["-o", s(out)]);
    atelier(&args)
}

#[test]
fn truncated_jpegs_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.safetensors");
    write_model(&model);
    let whole = write_photo(dir.path(), "whole.jpg", 96, 64);
    let bytes = std::fs::read(&whole).unwrap();
    let out = dir.path().join("out.png");

    // The complete photo works: the check does not refuse good JPEGs.
    let r = network(&whole, &model, &[], &out);
    assert!(r.status.success(), "{}", stderr(&r));
    std::fs::remove_file(&out).unwrap();

    for percent in [10, 50, 99] {
        let cut = dir.path().join(format!("cut-{percent}.jpg"));
        std::fs::write(&cut, &bytes[..bytes.len() * percent / 100]).unwrap();
        let sources = Sources::of(&[&cut, &model]);
        let r = network(&cut, &model, &[], &out);
        assert_refused(&r, &["truncated or damaged JPEG", "cut-"], &out);
        sources.assert_unchanged();

        // Opt-in: the damaged photo is used, with a warning.
        let r = network(&cut, &model, &["--allow-truncated"], &out);
        let err = stderr(&r);
        if r.status.success() {
            assert!(
                err.contains("warning") && err.contains("truncated"),
                "{err}"
            );
            assert!(out.is_file());
            std::fs::remove_file(&out).unwrap();
        } else {
            // Cut before the image data starts there is nothing to use: still a short error.
            assert!(percent <= 10, "{percent} %: {err}");
            assert_refused(&r, &["image"], &out);
        }
        sources.assert_unchanged();
    }

    // A truncated style image is refused too (before any VGG is needed).
    let cut = dir.path().join("cut-style.jpg");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let photo = write_photo(dir.path(), "photo.png", 40, 30);
    let vgg = dir.path().join("fake-vgg.safetensors");
    std::fs::write(&vgg, b"not a weights file").unwrap();
    let r = atelier(&[
        "stylize",
        s(&photo),
        "--style",
        s(&cut),
        "--vgg",
        s(&vgg),
        "-o",
        s(&out),
    ]);
    assert_refused(&r, &["truncated or damaged JPEG"], &out);
}

#[test]
fn models_with_nan_or_infinite_weights_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let photo = write_photo(dir.path(), "photo.png", 40, 30);
    let out = dir.path().join("out.png");

    let nan = dir.path().join("nan.safetensors");
    write_model_with(&nan, "in1.weight", |t| {
        let mut v = t.to_vec1::<f32>().unwrap();
        v[3] = f32::NAN;
        Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap()
    });
    let sources = Sources::of(&[&nan, &photo]);
    let r = network(&photo, &nan, &[], &out);
    assert_refused(&r, &["in1.weight", "NaN or infinite"], &out);
    sources.assert_unchanged();

    let inf = dir.path().join("inf.safetensors");
    write_model_with(&inf, "deconv3.conv2d.bias", |t| {
        (t.ones_like().unwrap() * f64::INFINITY).unwrap()
    });
    let r = network(&photo, &inf, &[], &out);
    assert_refused(&r, &["deconv3.conv2d.bias", "NaN or infinite"], &out);

    // Finite weights whose result overflows: the non-finite pixels are never written.
    let huge = dir.path().join("huge.safetensors");
    write_model_with(&huge, "deconv3.conv2d.weight", |t| {
        (t.ones_like().unwrap() * 1e38).unwrap()
    });
    let r = network(&photo, &huge, &[], &out);
    assert_refused(&r, &["NaN or infinite"], &out);
    sources.assert_unchanged();
}

/// A style folder whose `style.toml` says `model = "<model>"`.
fn style_folder(root: &Path, name: &str, model: &str) -> PathBuf {
    let folder = root.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("style.toml"),
        format!("name = \"{name}\"\nmodel = \"{model}\"\n"),
    )
    .unwrap();
    folder
}

#[cfg(unix)]
#[test]
fn style_folders_may_only_name_regular_files_inside_them() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let photo = write_photo(dir.path(), "photo.png", 40, 30);
    let out = dir.path().join("out.png");
    let styles = dir.path().join("styles");
    let outside = dir.path().join("outside.safetensors");
    write_model(&outside);

    // A well-formed folder works.
    let good = style_folder(&styles, "good", "model.safetensors");
    write_model(&good.join("model.safetensors"));
    let r = network(&photo, &good, &[], &out);
    assert!(r.status.success(), "{}", stderr(&r));
    std::fs::remove_file(&out).unwrap();

    let dotdot = style_folder(&styles, "dotdot", "../../etc/passwd");
    let r = network(&photo, &dotdot, &[], &out);
    assert_refused(
        &r,
        &["style.toml: model = \"../../etc/passwd\" must name a file inside the style folder"],
        &out,
    );

    let absolute = style_folder(&styles, "absolute", s(&outside));
    let r = network(&photo, &absolute, &[], &out);
    assert_refused(
        &r,
        &["model = ", "must name a file inside the style folder"],
        &out,
    );

    let link = style_folder(&styles, "link", "model.safetensors");
    symlink(&outside, link.join("model.safetensors")).unwrap();
    let r = network(&photo, &link, &[], &out);
    assert_refused(&r, &["must name a file inside the style folder"], &out);

    let device = style_folder(&styles, "device", "model.safetensors");
    symlink("/dev/zero", device.join("model.safetensors")).unwrap();
    let r = network(&photo, &device, &[], &out);
    assert_refused(&r, &["model = ", "is not a regular file"], &out);

    let fifo = style_folder(&styles, "fifo", "model.safetensors");
    mkfifo(&fifo.join("model.safetensors"));
    let r = network(&photo, &fifo, &[], &out);
    assert_refused(&r, &["is not a regular file"], &out);

    let sources = Sources::of(&[&outside, &photo, &good.join("model.safetensors")]);
    sources.assert_unchanged();
}

#[test]
fn pth_files_that_call_code_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let photo = write_photo(dir.path(), "photo.png", 40, 30);
    let out = dir.path().join("out.png");

    // A genuine state dict still loads.
    let good = dir.path().join("good.pth");
    let net = TransformerNet::random(&Device::Cpu, 1).unwrap();
    pth::write_state_dict(&good, &net.tensors()).unwrap();
    let r = network(&photo, &good, &[], &out);
    assert!(r.status.success(), "{}", stderr(&r));
    std::fs::remove_file(&out).unwrap();

    for (module, name, stack_global) in [
        ("os", "system", false),
        ("builtins", "exec", false),
        ("posix", "system", true),
    ] {
        let evil = dir.path().join(format!("{module}-{name}.pth"));
        pth::write_raw_pickle(&evil, &pth::pickle_calling(module, name, stack_global)).unwrap();
        let sources = Sources::of(&[&evil, &photo]);
        let r = network(&photo, &evil, &[], &out);
        let message = format!("refusing to run code from this file: it calls {module}.{name}");
        assert_refused(&r, &[&message], &out);
        sources.assert_unchanged();
    }
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[cfg(unix)]
#[test]
fn special_files_and_link_loops_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.safetensors");
    write_model(&model);
    let out = dir.path().join("out.png");

    // A FIFO is never opened (that would block until a writer came).
    let fifo = dir.path().join("photo.jpg");
    mkfifo(&fifo);
    let r = network(&fifo, &model, &[], &out);
    assert_refused(&r, &["photo.jpg", "is not a regular file"], &out);

    let r = network(Path::new("/dev/null"), &model, &[], &out);
    assert_refused(&r, &["is not a regular file"], &out);

    let a = dir.path().join("a.png");
    let b = dir.path().join("b.png");
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    let r = network(&a, &model, &[], &out);
    assert_refused(&r, &["symbolic link loop"], &out);
    assert!(!stderr(&r).contains("not found"), "{}", stderr(&r));
}

#[test]
fn bad_numbers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let photo = write_photo(dir.path(), "photo.png", 40, 30);
    let model = dir.path().join("model.safetensors");
    write_model(&model);
    let vgg = dir.path().join("fake-vgg.safetensors");
    std::fs::write(&vgg, b"not a weights file").unwrap();
    let jpg = dir.path().join("out.jpg");
    let png = dir.path().join("out.png");
    let sources = Sources::of(&[&photo, &model]);

    for quality in ["0", "101"] {
        let r = network(&photo, &model, &["--quality", quality], &jpg);
        assert_refused(&r, &["--quality must be between 1 and 100"], &jpg);
    }
    for size in ["0", "8", "15"] {
        let r = network(&photo, &model, &["--size", size], &png);
        assert_refused(&r, &["--size must be at least 16 pixels"], &png);
        let r = atelier(&[
            "stylize",
            s(&photo),
            "--style",
            s(&photo),
            "--vgg",
            s(&vgg),
            "--size",
            size,
            "-o",
            s(&png),
        ]);
        assert_refused(&r, &["--size must be at least 16 pixels"], &png);
    }
    let r = network(&photo, &model, &["--blend", "1"], &png);
    assert_refused(
        &r,
        &["--blend needs several styles; --method network takes one"],
        &png,
    );
    // Above what the network runs on (150 MP; 15000 px is 169 MP at 4:3): refused, not
    // silently shrunk. Anything below runs, in tiles when large.
    let r = network(&photo, &model, &["--size", "15000"], &png);
    assert_refused(&r, &["--size 15000", "megapixels", "choose --size"], &png);
    // At the limit it would run; 16 is the smallest size and works.
    let r = network(&photo, &model, &["--size", "16"], &png);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(image::open(&png).unwrap().width(), 16);
    sources.assert_unchanged();
}

#[test]
fn score_refuses_size_zero_and_names_width_then_height() {
    let dir = tempfile::tempdir().unwrap();
    let photo = write_photo(dir.path(), "photo.png", 40, 30);
    let narrow = write_photo(dir.path(), "narrow.png", 1, 40);
    let vgg = dir.path().join("fake-vgg.safetensors");
    std::fs::write(&vgg, b"not a weights file").unwrap();
    let score = |photo: &Path, size: &str| {
        atelier(&[
            "score",
            s(photo),
            "--photo",
            s(photo),
            "--style",
            s(photo),
            "--vgg",
            s(&vgg),
            "--size",
            size,
        ])
    };
    let nothing = dir.path().join("nothing");
    let r = score(&photo, "0");
    assert_refused(&r, &["--size must be at least 16 pixels"], &nothing);
    let r = score(&narrow, "32");
    assert_refused(
        &r,
        &["narrow.png", "1x32 pixels (width x height)"],
        &nothing,
    );
}

#[test]
fn train_refuses_an_output_inside_the_photo_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("photos");
    std::fs::create_dir(&data).unwrap();
    for i in 0..2 {
        write_photo(&data, &format!("p{i}.png"), 40, 36);
    }
    let style = write_photo(dir.path(), "style.png", 32, 32);
    let vgg = dir.path().join("fake-vgg.safetensors");
    std::fs::write(&vgg, b"not a weights file").unwrap();
    let sources = Sources::of(&[&data.join("p0.png"), &data.join("p1.png"), &style]);
    // Inside (not yet existing), inside through `..`, and the folder itself.
    let inside = data.join("mine");
    let sneaky = dir.path().join("elsewhere/../photos/new");
    for output in [&inside, &sneaky, &data] {
        let r = atelier(&[
            "train",
            "--style",
            s(&style),
            "--data",
            s(&data),
            "--vgg",
            s(&vgg),
            "-o",
            s(output),
            "--quiet",
        ]);
        let err = stderr(&r);
        assert!(!r.status.success(), "{err}");
        assert!(err.contains("inside the photo folder"), "{err}");
        assert!(err.trim().lines().count() <= 2, "{err}");
    }
    assert!(!inside.exists());
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 2);
    sources.assert_unchanged();
}

#[test]
fn logs_have_no_colour_codes_in_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let photo = write_photo(dir.path(), "photo.png", 40, 30);
    let model = dir.path().join("model.safetensors");
    write_model(&model);
    let out = dir.path().join("out.png");
    let args = [
        "stylize",
        s(&photo),
        "--method",
        "network",
        "--style",
        s(&model),
        "--quiet",
        "-o",
        s(&out),
    ];
    let r = atelier_env(&args, &[("ATELIER_LOG", "trace")]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(!stderr(&r).contains('\x1b'), "{:?}", stderr(&r));
}

/// How the corpus case below runs the binary: as it is, as an unprivileged user (root ignores
/// a folder's permissions), or with no room at all for the files it writes (a full disk).
#[derive(Clone, Copy, Debug)]
enum Runner {
    Plain,
    Unprivileged,
    FileSizeLimit,
}

/// `atelier ARGS` through `runner`; `None` where the platform cannot run it that way.
fn run_as(runner: Runner, args: &[&str]) -> Option<Output> {
    let bin = env!("CARGO_BIN_EXE_atelier");
    match runner {
        Runner::Plain => Some(atelier(args)),
        Runner::Unprivileged => {
            let root = Command::new("id").arg("-u").output().ok()?.stdout == b"0\n";
            if !root {
                return Some(atelier(args));
            }
            let mut wrapped = vec!["--reuid=65534", "--regid=65534", "--clear-groups", bin];
            wrapped.extend_from_slice(args);
            let out = Command::new("setpriv")
                .args(&wrapped)
                .stdin(Stdio::null())
                .output()
                .ok()?;
            // The binary must be reachable for that user (CI's checkout may not be).
            let err = stderr(&out);
            (!err.contains("setpriv:")).then_some(out)
        }
        Runner::FileSizeLimit => {
            // SIGXFSZ ignored, so an over-long write fails with EFBIG instead of killing.
            let script = "trap '' XFSZ; ulimit -f 0; exec \"$0\" \"$@\"";
            let mut wrapped = vec!["-c", script, bin];
            wrapped.extend_from_slice(args);
            Some(
                Command::new("sh")
                    .args(&wrapped)
                    .env_remove("ATELIER_VGG")
                    .stdin(Stdio::null())
                    .output()
                    .ok()?,
            )
        }
    }
}

/// The faults that were handled before issue 17, kept as one corpus so they stay handled:
/// damaged and enormous images, weights of the wrong kind, unreadable style manifests, and
/// outputs that cannot be written. Each: a non-zero exit, a short message naming the problem,
/// no output, no temporary file, and the inputs unchanged.
#[cfg(unix)]
#[test]
fn faults_handled_before_still_fail_cleanly() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Readable for the unprivileged runner.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let photo = write_photo(root, "photo.png", 40, 30);
    let model = root.join("model.safetensors");
    write_model(&model);
    let file = |name: &str, bytes: &[u8]| {
        let path = root.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let png = std::fs::read(&photo).unwrap();
    let weights = std::fs::read(&model).unwrap();

    let empty = file("empty.png", b"");
    let text = file("notes.png", b"these are my notes, not a picture\n");
    let cut_png = file("cut.png", &png[..png.len() / 2]);
    let bomb = file("bomb.png", &png::png_header_only(30_000, 30_000));
    let int_weights = {
        let raw: Vec<u8> = [1i64, 2, 3, 4]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![4], &raw).unwrap();
        file(
            "int.safetensors",
            &safetensors::serialize([("in1.weight", view)], None).unwrap(),
        )
    };
    let header_bomb = file(
        "header-bomb.safetensors",
        &[&u64::MAX.to_le_bytes()[..], b"{}"].concat(),
    );
    let cut_weights = file("cut.safetensors", &weights[..weights.len() / 3]);
    let random_weights = file("random.safetensors", &[0x5a; 4096]);
    let not_zip = file("broken.pth", b"PK\x03\x04 this is no archive");
    // Found by the `pth` fuzz target: a tensor rebuilt from too few arguments made candle's
    // pickle reader panic.
    let malformed = root.join("malformed.pth");
    let regression = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/pth/candle-rebuild-args-too-short"),
    )
    .unwrap();
    // The regression is a pickle alone after the target's mode byte.
    pth::write_raw_pickle(&malformed, &regression[1..]).unwrap();
    // A state dict whose first storage holds 8 bytes where its shape needs 72: refused before
    // anything is allocated for it (a hostile shape could ask for terabytes).
    let short_storage = root.join("short-storage.pth");
    {
        let whole = root.join("whole.pth");
        let conv = Tensor::ones((2, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
        pth::write_state_dict(&whole, &[("conv.weight".to_string(), conv)]).unwrap();
        let mut archive = zip::ZipArchive::new(std::fs::File::open(&whole).unwrap()).unwrap();
        let mut out = zip::ZipWriter::new(std::fs::File::create(&short_storage).unwrap());
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for index in 0..archive.len() {
            let mut entry = archive.by_index(index).unwrap();
            let name = entry.name().unwrap().into_owned();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            if name.ends_with("data/0") {
                bytes.truncate(8);
            }
            out.start_file(name, stored).unwrap();
            std::io::Write::write_all(&mut out, &bytes).unwrap();
        }
        out.finish().unwrap();
        std::fs::remove_file(&whole).unwrap();
    }

    let manifest = |name: &str, text: &str| {
        let folder = root.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("style.toml"), text).unwrap();
        std::fs::copy(&model, folder.join("model.safetensors")).unwrap();
        folder
    };
    let bad_syntax = manifest(
        "bad-syntax",
        "name = \"Unclosed\nmodel = \"model.safetensors\"\n",
    );
    let unknown_field = manifest(
        "unknown-field",
        "model = \"model.safetensors\"\ncolour = 3\n",
    );
    let wrong_type = manifest("wrong-type", "model = 3\n");

    let read_only = root.join("read-only");
    std::fs::create_dir(&read_only).unwrap();
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o555)).unwrap();
    let full = root.join("full");
    std::fs::create_dir(&full).unwrap();

    let sources = Sources::of(&[
        &photo,
        &model,
        &empty,
        &text,
        &cut_png,
        &bomb,
        &int_weights,
        &header_bomb,
        &cut_weights,
        &random_weights,
        &not_zip,
        &malformed,
        &short_storage,
        &bad_syntax.join("style.toml"),
    ]);
    let out = root.join("out.png");
    let network_args = |photo: &Path, style: &Path, out: &Path| -> Vec<String> {
        [
            "stylize",
            s(photo),
            "--method",
            "network",
            "--style",
            s(style),
            "--quiet",
            "-o",
            s(out),
        ]
        .map(String::from)
        .to_vec()
    };
    let case =
        |what, runner, photo: &Path, style: &Path, output: &Path, needles: &[&'static str]| Case {
            what,
            runner,
            args: network_args(photo, style, output),
            needles: needles.to_vec(),
            output: output.to_path_buf(),
        };
    let plain = |what, photo: &Path, style: &Path, needles: &[&'static str]| {
        case(what, Runner::Plain, photo, style, &out, needles)
    };
    let cases = [
        plain("an empty photo", &empty, &model, &["empty.png"]),
        plain("a text file named .png", &text, &model, &["notes.png"]),
        plain("a truncated PNG", &cut_png, &model, &["cut.png"]),
        plain(
            "a 30000x30000 header",
            &bomb,
            &model,
            &["bomb.png", "megapixels"],
        ),
        plain(
            "integer weights",
            &photo,
            &int_weights,
            &["int.safetensors", "dtype I64"],
        ),
        plain(
            "a header-length bomb",
            &photo,
            &header_bomb,
            &["header-bomb", "header of"],
        ),
        plain(
            "truncated weights",
            &photo,
            &cut_weights,
            &["cut.safetensors", "truncated"],
        ),
        plain(
            "random bytes as weights",
            &photo,
            &random_weights,
            &["not a weights file"],
        ),
        plain(
            "a broken zip .pth",
            &photo,
            &not_zip,
            &["broken.pth", "corrupt zip"],
        ),
        plain(
            "a .pth that crashed candle's reader",
            &photo,
            &malformed,
            &["malformed.pth", "pickle is malformed"],
        ),
        plain(
            "a .pth storage shorter than its shape",
            &photo,
            &short_storage,
            &["conv.weight", "needs more than the 8 bytes"],
        ),
        plain(
            "a manifest that is not TOML",
            &photo,
            &bad_syntax,
            &["style.toml", "line 1"],
        ),
        plain(
            "an unknown manifest field",
            &photo,
            &unknown_field,
            &["unknown field `colour`"],
        ),
        plain(
            "a number for a path",
            &photo,
            &wrong_type,
            &["style.toml", "`model = 3`"],
        ),
        case(
            "a read-only output folder",
            Runner::Unprivileged,
            &photo,
            &model,
            &read_only.join("out.png"),
            &["cannot write", "permission denied"],
        ),
        case(
            "a full disk",
            Runner::FileSizeLimit,
            &photo,
            &model,
            &full.join("out.png"),
            &["cannot write", "too large"],
        ),
    ];
    for Case {
        what,
        runner,
        args,
        needles,
        output,
    } in cases
    {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let Some(result) = run_as(runner, &args) else {
            eprintln!("{what}: skipped, this platform cannot run it {runner:?}");
            continue;
        };
        eprintln!("{what}:");
        assert_refused(&result, &needles, &output);
        sources.assert_unchanged();
    }
}

/// One run of [`faults_handled_before_still_fail_cleanly`]: what it tries, how, the words its
/// message must hold and the output that must not appear.
struct Case {
    what: &'static str,
    runner: Runner,
    args: Vec<String>,
    needles: Vec<&'static str>,
    output: PathBuf,
}
