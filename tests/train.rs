//! Training custom styles: the loss goes down, resuming is exact, exports load, the
//! discriminator learns and teaches, and bad input fails cleanly. Everything is tiny (16–32 px
//! crops, a 4-wide network, a random VGG) so the whole file runs in seconds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use candle_core::{Device, Tensor, Var};
use image::{Rgb, RgbImage};

use atelier::engine::{Engine, EventBody, Failure, JobKind};
use atelier::nn::transformer::TransformerNet;
use atelier::nn::vgg::{Vgg, VggArch};
use atelier::styles;
use atelier::stylize::adam::AdamConfig;
use atelier::train::discriminator::Discriminator;
use atelier::train::export::VGG16_CREDIT;
use atelier::train::params::ParameterSet;
use atelier::train::{TrainConfig, TrainRecipe, Trainer};

mod common;

type TestResult = anyhow::Result<()>;

const REAL_VGG: &str = "../shared/models/vgg16-features.safetensors";

fn vgg() -> Arc<Vgg> {
    Arc::new(Vgg::random(VggArch::Vgg16, &Device::Cpu, 0).unwrap())
}

fn save(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> PathBuf {
    RgbImage::from_fn(w, h, |x, y| Rgb(f(x, y)))
        .save(path)
        .unwrap();
    path.to_path_buf()
}

/// `count` different synthetic photos (gradients and blobs) in `dir/photos`.
fn photos(dir: &Path, count: u32, w: u32, h: u32) -> PathBuf {
    let folder = dir.join("photos");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..count {
        save(&folder.join(format!("p{i}.png")), w, h, |x, y| {
            let blob = ((x as i32 - (5 + 3 * i) as i32).pow(2) + (y as i32 - 8).pow(2)) < 30;
            [
                (x * 9 + i * 40) as u8,
                (y * 7) as u8,
                if blob { 230 } else { 40 + (i * 30) as u8 },
            ]
        });
    }
    folder
}

/// Diagonal colour stripes: a style with strong, simple statistics.
fn painting(dir: &Path, name: &str, phase: u32) -> PathBuf {
    save(&dir.join(name), 40, 32, |x, y| {
        if ((x + y + phase) / 3).is_multiple_of(2) {
            [220, 60, 20]
        } else {
            [20, 40, 200]
        }
    })
}

fn recipe(data: &Path, style: &Path) -> TrainRecipe {
    TrainRecipe {
        style: vec![style.to_path_buf()],
        data: data.to_path_buf(),
        vgg: PathBuf::from("random-vgg16"),
        size: 16,
        style_size: 32,
        batch: 2,
        width: 4,
        learning_rate: 1e-2,
        seed: 7,
        ..TrainRecipe::default()
    }
}

fn config(recipe: TrainRecipe, output: &Path, iterations: u64) -> TrainConfig {
    let mut config = TrainConfig::new(recipe, output, iterations);
    config.preview_every = 0;
    config.checkpoint_every = 0;
    config
}

fn parameters(net: &TransformerNet) -> Vec<(String, Vec<f32>)> {
    net.tensors()
        .into_iter()
        .map(|(name, t)| (name, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

#[test]
fn loss_decreases_on_a_tiny_problem() -> TestResult {
    let dir = tempfile::tempdir()?;
    // One photo of exactly the crop size: every batch is the same, so the curve is clean.
    let data = photos(dir.path(), 1, 16, 16);
    let style = painting(dir.path(), "style.png", 0);
    let mut trainer = Trainer::new(
        config(recipe(&data, &style), &dir.path().join("out"), 12),
        vgg(),
        &Device::Cpu,
    )?;
    let losses: Vec<f64> = (0..12)
        .map(|_| trainer.step().map(|r| r.losses.total))
        .collect::<Result<_, _>>()?;
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(
        losses[11] < 0.8 * losses[0],
        "the loss did not go down: {losses:?}"
    );
    assert_eq!(trainer.iteration(), 12);
    Ok(())
}

#[test]
fn resuming_continues_exactly_where_it_stopped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = photos(dir.path(), 3, 24, 20);
    let style = painting(dir.path(), "style.png", 0);
    let mut recipe = recipe(&data, &style);
    // With a discriminator, so its parameters and moments are covered too.
    recipe.adversarial_weight = 0.5;
    let vgg = vgg();

    let straight_dir = dir.path().join("straight");
    let mut straight = Trainer::new(
        config(recipe.clone(), &straight_dir, 6),
        vgg.clone(),
        &Device::Cpu,
    )?;
    let straight_losses: Vec<_> = (0..6)
        .map(|_| straight.step().map(|r| r.losses))
        .collect::<Result<_, _>>()?;

    let split_dir = dir.path().join("split");
    let mut first = Trainer::new(
        config(recipe.clone(), &split_dir, 6),
        vgg.clone(),
        &Device::Cpu,
    )?;
    for _ in 0..3 {
        first.step()?;
    }
    first.save_checkpoint()?;
    drop(first);
    let mut resumed_config = config(recipe, &split_dir, 6);
    resumed_config.resume = true;
    let mut resumed = Trainer::new(resumed_config, vgg, &Device::Cpu)?;
    assert_eq!(resumed.iteration(), 3);
    let resumed_losses: Vec<_> = (0..3)
        .map(|_| resumed.step().map(|r| r.losses))
        .collect::<Result<_, _>>()?;

    assert_eq!(resumed_losses, straight_losses[3..]);
    for ((name, a), (_, b)) in parameters(straight.network())
        .iter()
        .zip(parameters(resumed.network()).iter())
    {
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff <= 1e-6, "{name} differs by {diff}");
    }
    Ok(())
}

/// Training is an engine job: cancelling it stops it with a checkpoint, and a resumed job
/// continues from there to an exported style.
#[test]
fn a_training_job_stops_with_a_checkpoint_and_resumes_to_an_exported_style() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = photos(dir.path(), 3, 20, 20);
    let style = painting(dir.path(), "style.png", 0);
    let output = dir.path().join("styles").join("stripes");
    let vgg_file = dir.path().join("vgg16.safetensors");
    common::fixtures::random_vgg(&vgg_file);
    let recipe = || TrainRecipe {
        vgg: vgg_file.clone(),
        ..recipe(&data, &style)
    };
    let engine = Engine::cpu()?;

    let mut long = config(recipe(), &output, 1000);
    long.preview_every = 1;
    let job = engine.train(long)?;
    let mut stopped_at = None;
    let mut previews = 0;
    for event in engine.events().iter() {
        assert_eq!((event.job, event.kind), (job, JobKind::Training));
        match event.body {
            EventBody::Training(p) => {
                assert!(p.images_per_second > 0.0);
                engine.cancel(job);
            }
            EventBody::Preview { saved, .. } => {
                let frame = engine
                    .take_preview(JobKind::Training)
                    .expect("preview image");
                assert_eq!(
                    frame.image.dimensions(),
                    (32, 16),
                    "two 16 px previews side by side"
                );
                assert!(saved.is_some_and(|path| path.is_file()));
                previews += 1;
            }
            EventBody::Stopped {
                iteration,
                checkpoint,
            } => {
                assert!(checkpoint.is_file());
                stopped_at = Some(iteration);
                break;
            }
            EventBody::Failed(failure) => panic!("training failed: {failure}"),
            _ => {}
        }
    }
    let stopped_at = stopped_at.expect("a Stopped event");
    assert!(stopped_at >= 1 && previews >= 1);
    assert!(!engine.cancel(job), "the stopped job has ended");

    let mut resume = config(recipe(), &output, stopped_at + 2);
    resume.resume = true;
    let job = engine.train(resume)?;
    let mut started_from = None;
    let mut finished = None;
    for event in engine.events().iter() {
        if event.job != job {
            continue;
        }
        match event.body {
            EventBody::TrainingStarted {
                first_iteration, ..
            } => started_from = Some(first_iteration),
            EventBody::Trained(trained) => {
                finished = Some(trained);
                break;
            }
            EventBody::Failed(failure) => panic!("resume failed: {failure}"),
            _ => {}
        }
    }
    assert_eq!(started_from, Some(stopped_at));
    let trained = finished.expect("a Trained event");
    assert_eq!(trained.iteration, stopped_at + 2);
    let style = &trained.style;
    assert!(style.model.is_file() && style.thumbnail.is_file() && style.manifest.is_file());

    // A missing loss network fails the job with the typed reason, before any work.
    let mut no_vgg = config(recipe(), &dir.path().join("other"), 5);
    no_vgg.recipe.vgg = dir.path().join("missing-vgg.safetensors");
    let job = engine.train(no_vgg)?;
    for event in engine.events().iter() {
        if event.job == job && event.is_terminal() {
            assert!(matches!(
                event.body,
                EventBody::Failed(Failure::BadModel { .. })
            ));
            break;
        }
    }
    Ok(())
}

#[test]
fn export_writes_an_f16_model_a_manifest_and_a_thumbnail() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = photos(dir.path(), 2, 20, 24);
    let style = painting(dir.path(), "style.png", 0);
    let styles_dir = dir.path().join("styles");
    let mut config = config(recipe(&data, &style), &styles_dir.join("stripes"), 1);
    config.credits.artist = Some("A. Painter".into());
    config.credits.year = Some("1905".into());
    let mut trainer = Trainer::new(config, vgg(), &Device::Cpu)?;
    trainer.step()?;
    let exported = trainer.export()?;

    // The model is stored as f16 and loads back at its own width.
    let bytes = std::fs::read(&exported.model)?;
    let file = safetensors::SafeTensors::deserialize(&bytes)?;
    assert_eq!(
        file.tensor("conv1.conv2d.weight")?.dtype(),
        safetensors::Dtype::F16
    );
    let loaded = TransformerNet::load(&exported.model, &Device::Cpu)?;
    assert_eq!(loaded.width(), 4);
    let photo = Tensor::rand(0f32, 255., (1, 3, 20, 24), &Device::Cpu)?;
    let diff = (loaded.forward(&photo)? - trainer.network().forward(&photo)?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    assert!(diff < 2.0, "f16 model differs by {diff} pixel levels");

    // The gallery lists it, with the credits and training table.
    let (entries, problems) = styles::load_bundled(&styles_dir);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].name, "stripes");
    assert_eq!(entries[0].model.as_deref(), Some(exported.model.as_path()));
    assert_eq!(
        entries[0].thumbnail.as_deref(),
        Some(exported.thumbnail.as_path())
    );
    let text = std::fs::read_to_string(&exported.manifest)?;
    let manifest = styles::parse_manifest(&text, &exported.manifest)?;
    assert!(manifest.credits.iter().any(|c| c == VGG16_CREDIT), "{text}");
    assert_eq!(manifest.artist.as_deref(), Some("A. Painter"));
    let training = manifest.training.expect("a [training] table");
    assert_eq!((training.iterations, training.width), (Some(1), Some(4)));
    assert_eq!(training.style_images, ["style.png"]);
    assert_eq!(
        styles::model_in_folder(&styles_dir.join("stripes"))?,
        exported.model
    );

    // The thumbnail is the model's painting of a photo, not the style image.
    let thumb = image::open(&exported.thumbnail)?.to_rgb8();
    assert_eq!(
        thumb.dimensions(),
        (13, 16),
        "the first photo at the crop size"
    );
    Ok(())
}

#[test]
fn a_discriminator_step_lowers_its_hinge_loss() -> TestResult {
    let device = Device::Cpu;
    let params = ParameterSet::new(Discriminator::random_parameters(&device, 3, 4)?)?;
    let discriminator = Discriminator::from_tensors(&params.tensor_map())?;
    let mut params = params;
    let real = (Tensor::rand(0f32, 1., (2, 3, 32, 32), &device)? * 255.)?;
    let fake = (Tensor::rand(0f32, 1., (2, 3, 32, 32), &device)? * 60.)?;
    let adam = AdamConfig {
        learning_rate: 1e-3,
        ..AdamConfig::default()
    };
    let before = discriminator.hinge_loss(&real, &fake)?;
    let grads = before.backward()?;
    params.step(&grads, &adam)?;
    let after = discriminator.hinge_loss(&real, &fake)?;
    let (before, after) = (before.to_scalar::<f32>()?, after.to_scalar::<f32>()?);
    assert!(after < before, "hinge loss {before} -> {after}");
    Ok(())
}

#[test]
fn the_adversarial_gradient_reaches_the_transformer_only() -> TestResult {
    let device = Device::Cpu;
    let net_params =
        ParameterSet::new(TransformerNet::random_with_width(&device, 1, 4)?.tensors())?;
    let mut net = TransformerNet::from_tensors(&net_params.tensor_map(), Path::new("vars"))?;
    net.trainable = true;
    let d_vars: HashMap<String, Tensor> = Discriminator::random_parameters(&device, 2, 4)?
        .into_iter()
        .map(|(name, t)| (name, Var::from_tensor(&t).unwrap().as_tensor().clone()))
        .collect();
    let discriminator = Discriminator::from_tensors(&d_vars)?;

    let photo = (Tensor::rand(0f32, 1., (1, 3, 16, 16), &device)? * 255.)?;
    let loss = discriminator.generator_loss(&net.forward(&photo)?)?;
    let grads = loss.backward()?;
    let map = net_params.tensor_map();
    for name in [
        "conv1.conv2d.weight",
        "res3.conv1.conv2d.weight",
        "deconv3.conv2d.bias",
    ] {
        let grad = grads
            .get(&map[name])
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = grad.sqr()?.sum_all()?.to_scalar::<f32>()?;
        assert!(norm > 0.0 && norm.is_finite(), "{name}: {norm}");
    }
    assert!(
        d_vars.values().all(|t| grads.get(t).is_none()),
        "the network's loss must not update the discriminator"
    );
    Ok(())
}

#[test]
fn a_collection_of_works_trains_with_a_discriminator() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = photos(dir.path(), 2, 20, 20);
    let works = dir.path().join("works");
    std::fs::create_dir(&works)?;
    painting(&works, "a.png", 0);
    painting(&works, "b.png", 2);
    let mut recipe = recipe(&data, &works);
    recipe.adversarial_weight = 1.0;
    let mut trainer = Trainer::new(
        config(recipe, &dir.path().join("out"), 2),
        vgg(),
        &Device::Cpu,
    )?;
    let report = trainer.step()?;
    assert!(report.losses.discriminator > 0.0 && report.losses.adversarial != 0.0);
    assert_eq!(
        trainer.manifest().training.unwrap().style_images,
        ["a.png", "b.png"]
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------------------------

fn atelier(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(args)
        .env_remove("ATELIER_VGG")
        .output()
        .expect("run atelier")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A failed run with a one-line message containing `needle`, leaving no output folder.
fn assert_fails(out: &Output, needle: &str, output: &Path) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "stderr lacks `{needle}`: {err}"
    );
    assert_eq!(
        err.trim().lines().count(),
        1,
        "error is not one line: {err}"
    );
    assert!(
        !output.exists(),
        "{} was created despite the error",
        output.display()
    );
}

#[test]
fn bad_training_input_gives_one_line_errors_and_writes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = photos(dir.path(), 2, 20, 20);
    let style = painting(dir.path(), "style.png", 0);
    let vgg = dir.path().join("fake-vgg.safetensors");
    std::fs::write(&vgg, b"not a weights file")?;
    let out = dir.path().join("styles").join("new");
    let train = |style: &Path, data: &Path, output: &Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--style",
            s(style),
            "--data",
            s(data),
            "--vgg",
            s(&vgg),
            "-o",
            s(output),
            "--size",
            "16",
            "--width",
            "4",
            "--iterations",
            "2",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        atelier(&args)
    };

    let missing = dir.path().join("missing.jpg");
    assert_fails(&train(&missing, &data, &out, &[]), "file not found", &out);

    let corrupt = dir.path().join("corrupt.jpg");
    std::fs::write(&corrupt, b"\xFF\xD8\xFF\xE0 truncated jpeg")?;
    assert_fails(&train(&corrupt, &data, &out, &[]), "corrupt.jpg", &out);

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty)?;
    assert_fails(&train(&style, &empty, &out, &[]), "holds no images", &out);
    assert_fails(
        &train(&empty, &data, &out, &[]),
        "style folder holds no images",
        &out,
    );

    assert_fails(
        &train(&style, &data, &out, &["--batch", "0"]),
        "--batch",
        &out,
    );

    let file = dir.path().join("file.txt");
    std::fs::write(&file, b"x")?;
    let under_file = file.join("style");
    assert_fails(
        &train(&style, &data, &under_file, &[]),
        "is a file",
        &under_file,
    );

    // Good inputs, bad VGG: refused before the output folder exists.
    assert_fails(
        &train(&style, &data, &out, &[]),
        "fake-vgg.safetensors",
        &out,
    );

    // --resume without a checkpoint, and with something else in its place.
    let resumable = dir.path().join("resumable");
    assert_fails(
        &train(&style, &data, &resumable, &["--resume"]),
        "no training checkpoint",
        &resumable,
    );
    std::fs::create_dir(&resumable)?;
    std::fs::write(resumable.join("checkpoint.safetensors"), b"garbage")?;
    let err = train(&style, &data, &resumable, &["--resume"]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("checkpoint.safetensors"));
    assert_eq!(
        std::fs::read_dir(&resumable)?.count(),
        1,
        "nothing else written"
    );
    Ok(())
}

#[test]
fn resuming_with_other_settings_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = photos(dir.path(), 2, 20, 20).canonicalize()?;
    let style = painting(dir.path(), "style.png", 0).canonicalize()?;
    let vgg_path = dir.path().join("fake-vgg.safetensors");
    std::fs::write(&vgg_path, b"not a weights file")?;
    let output = dir.path().join("run");
    // A checkpoint as `atelier train --size 16 --width 4` would write it (absolute paths).
    let mut recipe = recipe(&data, &style);
    recipe.vgg = vgg_path.canonicalize()?;
    recipe.learning_rate = TrainRecipe::default().learning_rate;
    recipe.seed = 0;
    let trainer = Trainer::new(config(recipe, &output, 1), vgg(), &Device::Cpu)?;
    trainer.save_checkpoint()?;

    let out = atelier(&[
        "train",
        "--style",
        s(&style),
        "--data",
        s(&data),
        "--vgg",
        s(&vgg_path),
        "-o",
        s(&output),
        "--size",
        "16",
        "--style-size",
        "32",
        "--batch",
        "2",
        "--width",
        "8",
        "--resume",
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("other settings") && err.contains("width 4 (now 8)"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Without --resume the checkpoint is not overwritten either.
    let out = atelier(&[
        "train",
        "--style",
        s(&style),
        "--data",
        s(&data),
        "--vgg",
        s(&vgg_path),
        "-o",
        s(&output),
        "--quiet",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --resume"));
    Ok(())
}

#[test]
fn the_cli_trains_a_style_that_stylize_and_the_gallery_use() -> TestResult {
    if !Path::new(REAL_VGG).is_file() {
        eprintln!("skipping: {REAL_VGG} not found");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let data = photos(dir.path(), 3, 40, 36);
    let style = painting(dir.path(), "style.png", 0);
    let styles_dir = dir.path().join("styles");
    let output = styles_dir.join("mine");
    let out = atelier(&[
        "train",
        "--style",
        s(&style),
        "--data",
        s(&data),
        "--vgg",
        REAL_VGG,
        "-o",
        s(&output),
        "--size",
        "32",
        "--width",
        "4",
        "--batch",
        "1",
        "--iterations",
        "2",
        "--preview-every",
        "1",
        "--name",
        "Mine",
        "--licence",
        "CC0",
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(output.join("previews/iter-000002.png").is_file());

    let (entries, problems) = styles::load_bundled(&styles_dir);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(entries[0].name, "Mine");

    let photo = save(&dir.path().join("photo.png"), 30, 20, |x, y| {
        [x as u8 * 8, y as u8 * 9, 50]
    });
    let result = dir.path().join("result.png");
    let out = atelier(&[
        "stylize",
        s(&photo),
        "--method",
        "network",
        "--style",
        s(&output),
        "-o",
        s(&result),
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(image::open(&result)?.to_rgb8().dimensions(), (30, 20));
    Ok(())
}

/// Ctrl+C (SIGINT) or SIGTERM during `atelier train` stops after the current iteration with a
/// checkpoint and says how to resume; the exit status is 130.
#[cfg(unix)]
#[test]
fn an_interrupted_cli_training_saves_a_checkpoint_and_says_how_to_resume() -> TestResult {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir()?;
    let data = photos(dir.path(), 3, 20, 20);
    let style = painting(dir.path(), "style.png", 0);
    let vgg = dir.path().join("vgg16.safetensors");
    common::fixtures::random_vgg(&vgg);
    for signal in ["-INT", "-TERM"] {
        let output = dir.path().join("styles").join(format!("stopped{signal}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_atelier"))
            .args([
                "train",
                "--style",
                s(&style),
                "--data",
                s(&data),
                "--vgg",
                s(&vgg),
                "-o",
                s(&output),
                "--size",
                "16",
                "--width",
                "4",
                "--batch",
                "1",
                "--iterations",
                "100000",
                "--checkpoint-every",
                "0",
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        // Without a terminal the progress is printed as lines: wait for training to run.
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut seen = String::new();
        let mut line = String::new();
        while !seen.contains("iteration") {
            line.clear();
            if stderr.read_line(&mut line)? == 0 {
                break;
            }
            seen.push_str(&line);
        }
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()?;
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut rest)?;
        let status = child.wait()?;
        assert_eq!(status.code(), Some(130), "{signal}: {seen}{rest}");
        assert!(rest.contains("checkpoint saved"), "{signal}: {rest}");
        assert!(rest.contains("--resume"), "{signal}: {rest}");
        assert!(output.join("checkpoint.safetensors").is_file());
    }
    Ok(())
}

/// Solid blocks of two colours: a style whose statistics differ from the stripes'.
fn blocks(dir: &Path, name: &str) -> PathBuf {
    save(&dir.join(name), 36, 36, |x, y| {
        if (x / 12 + y / 12).is_multiple_of(2) {
            [250, 230, 40]
        } else {
            [30, 150, 60]
        }
    })
}

#[test]
fn a_conditional_network_learns_its_styles_in_turn_and_the_gallery_lists_them() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = photos(dir.path(), 1, 16, 16);
    let stripes = painting(dir.path(), "stripes.png", 0);
    let squares = blocks(dir.path(), "squares.png");
    let mut recipe = recipe(&data, &stripes);
    recipe.style.push(squares);
    recipe.conditional = true;
    let styles_dir = dir.path().join("styles");
    let mut config = config(recipe, &styles_dir.join("pair"), 24);
    config.groups = vec![atelier::engine::StyleGroup {
        name: "geometric".into(),
        members: vec!["stripes".into(), "squares".into()],
    }];
    let mut trainer = Trainer::new(config, vgg(), &Device::Cpu)?;
    assert_eq!(trainer.styles(), 2);
    let mut per_style: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for i in 0..24 {
        let report = trainer.step()?;
        let condition = report
            .condition
            .expect("a conditional step names its style");
        assert_eq!(condition, i % 2, "the styles take turns");
        per_style[condition].push(report.losses.style);
    }
    for losses in &per_style {
        assert!(
            losses[losses.len() - 1] < losses[0],
            "a style's loss did not go down: {losses:?}"
        );
    }
    let exported = trainer.export()?;
    let net = TransformerNet::load(&exported.model, &Device::Cpu)?;
    assert_eq!(net.styles(), 2);
    let bytes = std::fs::read(&exported.model)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)?;
    let names = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("styles").cloned());
    assert_eq!(names.as_deref(), Some("stripes\nsquares"));

    // The gallery: the network (even blend), each style, and the group.
    let (entries, problems) = styles::load_bundled(&styles_dir);
    assert!(problems.is_empty(), "{problems:?}");
    let listed: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(listed, ["pair", "stripes", "squares", "geometric"]);
    let mixes: Vec<Option<Vec<f64>>> = entries
        .iter()
        .map(|e| e.condition.as_ref().map(|c| c.mix.clone()))
        .collect();
    assert_eq!(
        mixes,
        [
            None,
            Some(vec![1.0, 0.0]),
            Some(vec![0.0, 1.0]),
            Some(vec![0.5, 0.5])
        ]
    );
    let keys: std::collections::HashSet<&Path> = entries.iter().map(|e| e.key()).collect();
    assert_eq!(keys.len(), 4, "every entry has its own key");
    assert!(entries[1]
        .thumbnail
        .as_deref()
        .is_some_and(|t| t.ends_with("thumb-0.jpg") && t.is_file()));

    // The styles paint differently, and the even mix is the network's own forward.
    let photo = imaging_photo();
    let paint = |mix: &[f64]| -> anyhow::Result<RgbImage> {
        let weights = atelier::stylize::network::style_mix(&net, mix, &exported.model)?;
        Ok(atelier::stylize::network::stylize_mixed(
            &net,
            &photo,
            &Device::Cpu,
            Some(&weights),
        )?)
    };
    let (a, b) = (paint(&[1.0, 0.0])?, paint(&[0.0, 1.0])?);
    let gap = a
        .pixels()
        .zip(b.pixels())
        .map(|(p, q)| (0..3).map(|c| p[c].abs_diff(q[c]) as u64).sum::<u64>())
        .sum::<u64>() as f64
        / (3 * a.width() * a.height()) as f64;
    assert!(gap > 2.0, "the two styles paint alike (mean gap {gap})");
    let err = atelier::stylize::network::style_mix(&net, &[1.0], &exported.model).unwrap_err();
    assert!(err.to_string().contains("holds 2 styles"), "{err}");
    Ok(())
}

fn imaging_photo() -> RgbImage {
    RgbImage::from_fn(24, 20, |x, y| Rgb([(x * 10) as u8, (y * 12) as u8, 90]))
}

#[test]
fn the_cli_trains_a_conditional_network_and_mixes_its_styles() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = photos(dir.path(), 2, 24, 24);
    let stripes = painting(dir.path(), "stripes.png", 0);
    let squares = blocks(dir.path(), "squares.png");
    let vgg_file = dir.path().join("vgg16.safetensors");
    common::fixtures::random_vgg(&vgg_file);
    let output = dir.path().join("styles").join("pair");
    let train = |extra: &[&str], output: &Path| {
        let mut args = vec![
            "train",
            "--style",
            s(&stripes),
            "--data",
            s(&data),
            "--vgg",
            s(&vgg_file),
            "--size",
            "16",
            "--style-size",
            "32",
            "--width",
            "4",
            "--batch",
            "1",
            "--iterations",
            "4",
            "--preview-every",
            "0",
            "--quiet",
            "-o",
            s(output),
        ];
        args.extend_from_slice(extra);
        atelier(&args)
    };
    // One style is not a conditional network; a group must name the styles.
    assert_fails(
        &train(&["--conditional"], &output),
        "at least two --style",
        &output,
    );
    assert_fails(
        &train(
            &[
                "--conditional",
                "--style",
                s(&squares),
                "--group",
                "g=stripes,nope",
            ],
            &output,
        ),
        "`nope` is not one of the styles",
        &output,
    );
    let out = train(
        &[
            "--conditional",
            "--style",
            s(&squares),
            "--group",
            "geometric=stripes,squares",
        ],
        &output,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(output.join("style.toml"))?;
    assert!(
        text.contains("[[styles]]") && text.contains("geometric"),
        "{text}"
    );

    let photo = save(&dir.path().join("photo.png"), 30, 20, |x, y| {
        [x as u8 * 8, y as u8 * 9, 50]
    });
    let stylize = |mix: &str, result: &Path| {
        atelier(&[
            "stylize",
            s(&photo),
            "--method",
            "network",
            "--style",
            s(&output),
            "--mix",
            mix,
            "-o",
            s(result),
            "--quiet",
        ])
    };
    let mut results = Vec::new();
    for (i, mix) in ["stripes", "squares", "stripes=0.5,squares=0.5", "geometric"]
        .iter()
        .enumerate()
    {
        let result = dir.path().join(format!("mix{i}.png"));
        let out = stylize(mix, &result);
        assert!(
            out.status.success(),
            "{mix}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        results.push(image::open(&result)?.to_rgb8());
    }
    assert_ne!(results[0], results[1], "the styles paint alike");
    assert_eq!(
        results[2], results[3],
        "the group is the even blend of its members"
    );
    let out = stylize("nosuch=1", &dir.path().join("bad.png"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no style or group called `nosuch`") && err.contains("stripes, squares"),
        "{err}"
    );
    Ok(())
}
