//! Video benchmarks (issue targets): on 30 frames of bikes.mp4 at 480 px, the warping error of
//! the flicker-free result against plain per-frame processing (target ≤ 0.35×) with each
//! frame's style loss within 1.2× of its per-frame result; and network video at 640×360 in
//! frames per second, decoding, flow, blending and encoding included (target ≥ 8). They need
//! ffmpeg and the clips in `../shared/data/video`; without them the rows say why.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use image::RgbImage;

use super::{BenchOptions, BenchRow};
use crate::engine::{Engine, EventBody, JobOutput, Method, NetworkStyle, VideoJob};
use crate::error::{Error, Result};
use crate::imaging;
use crate::nn::vgg::{Vgg, BUNDLED_VGG};
use crate::stylize::cache::FeatureCache;
use crate::stylize::gatys::{GatysConfig, StyleImage, StyleProblem};
use crate::video::temporal;

const FLICKER: &str = "video network bikes 480 px, 30 frames (flicker)";
const SPEED: &str = "video network 640x360 bigbuckbunny (decode+flow+blend+encode)";
const SPEED_FAST: &str =
    "video fast network (width 8) 640x360 bigbuckbunny (decode+flow+blend+encode)";

fn clips() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/video")
}

fn starry_night() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("styles/starry-night/model.safetensors")
}

/// The same painting in the width-8 network trained for video and live previews.
fn starry_night_fast() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("styles/starry-night-fast/model.safetensors")
}

fn skipped(name: &str, why: impl Into<String>) -> BenchRow {
    BenchRow {
        name: name.into(),
        ms: f64::NAN,
        gflops: None,
        peak_mb: None,
        kernels: String::new(),
        note: Some(format!("skipped: {}", why.into())),
    }
}

fn run(engine: &Engine, job: VideoJob) -> Result<JobOutput> {
    let id = engine
        .video(job)
        .map_err(|e| Error::invalid(e.to_string()))?;
    loop {
        let event = engine
            .events()
            .recv_timeout(Duration::from_secs(1800))
            .map_err(|_| Error::invalid("the video benchmark timed out"))?;
        if event.job != id {
            continue;
        }
        match event.body {
            EventBody::Finished(output) => return Ok(*output),
            EventBody::Failed(failure) => return Err(Error::invalid(failure.to_string())),
            EventBody::Cancelled => return Err(Error::Cancelled),
            _ => {}
        }
    }
}

/// The flicker row's job: measures the warping errors.
fn network_job(input: &Path, output: &Path, side: u32, temporal: f32, frames: usize) -> VideoJob {
    VideoJob {
        measure_flicker: true,
        ..network_job_with(&starry_night(), input, output, side, temporal, frames)
    }
}

fn network_job_with(
    model: &Path,
    input: &Path,
    output: &Path,
    side: u32,
    temporal: f32,
    frames: usize,
) -> VideoJob {
    VideoJob {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        method: Method::Network {
            styles: vec![NetworkStyle::new(model, None)],
            size: Some(side),
            preserve_color: false,
            stroke: 1.0,
        },
        strength: 1.0,
        regions: None,
        temporal: Some(temporal),
        resumable: false,
        max_frames: Some(frames),
        measure_flicker: false,
    }
}

pub(super) fn video_rows(device: &Device, options: &BenchOptions) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    if ![FLICKER, SPEED, SPEED_FAST]
        .iter()
        .any(|name| options.wants(name))
    {
        return Ok(rows);
    }
    if std::process::Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_err()
    {
        rows.push(skipped(FLICKER, "ffmpeg is not installed"));
        return Ok(rows);
    }
    let engine = Engine::new(device.clone()).map_err(|e| Error::invalid(e.to_string()))?;
    let work = tempfile::tempdir().map_err(|e| Error::invalid(e.to_string()))?;
    if options.wants(FLICKER) {
        let bikes = clips().join("bikes.mp4");
        rows.push(if bikes.exists() {
            flicker_row(&engine, &bikes, work.path(), device)?
        } else {
            skipped(FLICKER, format!("{} not found", bikes.display()))
        });
    }
    let clip = clips().join("bigbuckbunny.mp4");
    for (name, model) in [(SPEED, starry_night()), (SPEED_FAST, starry_night_fast())] {
        if !options.wants(name) {
            continue;
        }
        rows.push(if !clip.exists() {
            skipped(name, format!("{} not found", clip.display()))
        } else if !model.exists() {
            skipped(name, format!("{} not found", model.display()))
        } else {
            let output = work.path().join("speed.mp4");
            let job = network_job_with(&model, &clip, &output, 640, temporal::DEFAULT_WEIGHT, 132);
            speed_row(name, &engine, job)?
        });
    }
    Ok(rows)
}

/// Frames per second of a whole network video (decoding, flow, blend and encoding included;
/// starting ffmpeg and loading the network too), with the per-frame stage times.
fn speed_row(name: &str, engine: &Engine, job: VideoJob) -> Result<BenchRow> {
    let started = Instant::now();
    let out = run(engine, job)?;
    let seconds = started.elapsed().as_secs_f64();
    let report = out
        .stats
        .video
        .ok_or_else(|| Error::invalid("the video job gave no report"))?;
    let frames = report.frames.max(1) as f64;
    let ms = |stage: f64| stage * 1000.0 / frames;
    let stages = &report.stages;
    Ok(BenchRow {
        name: name.into(),
        ms: seconds * 1000.0 / frames,
        gflops: None,
        peak_mb: None,
        kernels: crate::nn::cpu::kernel_paths(),
        note: Some(format!(
            "{:.1} frames/s over {} frames of {}x{} (target ≥ 8); per frame: network {:.0} ms, \
             beside it flow {:.0} ms + blend {:.0} ms + write {:.0} ms",
            frames / seconds,
            report.frames,
            out.stats.width,
            out.stats.height,
            ms(stages.stylize),
            ms(stages.flow),
            ms(stages.blend),
            ms(stages.encode),
        )),
    })
}

/// Per-frame and flicker-free runs of the same 30 frames; their warping errors, and each
/// frame's style loss (the built-in VGG16, against the Starry Night thumbnail the style ships
/// with, or the painting in `../shared` when present) as a ratio to the per-frame one.
fn flicker_row(engine: &Engine, bikes: &Path, work: &Path, device: &Device) -> Result<BenchRow> {
    let (plain_dir, smooth_dir) = (work.join("per-frame"), work.join("smooth"));
    let started = Instant::now();
    let smooth = run(
        engine,
        network_job(bikes, &smooth_dir, 480, temporal::DEFAULT_WEIGHT, 30),
    )?;
    let ms = started.elapsed().as_secs_f64() * 1000.0 / 30.0;
    run(engine, network_job(bikes, &plain_dir, 480, 0.0, 30))?;
    let report = smooth
        .stats
        .video
        .ok_or_else(|| Error::invalid("the video job gave no report"))?;
    let (Some(result), Some(per_frame)) = (report.warping_error, report.per_frame_warping_error)
    else {
        return Err(Error::invalid(
            "no warping error: the clip had no frame pairs",
        ));
    };
    let painting =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/styles/starry-night.jpg");
    let painting = if painting.exists() {
        painting
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("styles/starry-night/thumb.jpg")
    };
    let vgg = Vgg::load(Path::new(BUNDLED_VGG), device)?;
    let style = StyleImage {
        image: Arc::new(imaging::load_rgb(&painting)?),
        weight: 1.0,
    };
    let config = GatysConfig {
        size: 480,
        style_layers: vec![
            ("relu1_2".into(), 1.0),
            ("relu2_2".into(), 1.0),
            ("relu3_3".into(), 1.0),
            ("relu4_3".into(), 1.0),
        ],
        ..GatysConfig::default()
    };
    let mut cache = FeatureCache::default();
    let mut ratios = Vec::new();
    for index in 1..=30 {
        let name = format!("{index:05}.png");
        let (plain, smooth): (RgbImage, RgbImage) = (
            imaging::load_rgb(&plain_dir.join(&name))?,
            imaging::load_rgb(&smooth_dir.join(&name))?,
        );
        let problem = StyleProblem::new(
            &vgg,
            &plain,
            std::slice::from_ref(&style),
            &config,
            &mut cache,
            device,
        )?;
        let loss = |image: &RgbImage| -> Result<f64> {
            Ok(problem
                .evaluate(&imaging::to_tensor(image, device)?, false)?
                .0
                .style)
        };
        ratios.push(loss(&smooth)? / loss(&plain)?.max(1e-12));
    }
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    let (worst_frame, worst) =
        ratios.iter().enumerate().fold(
            (0, 0.0),
            |(k, w), (i, &r)| if r > w { (i + 1, r) } else { (k, w) },
        );

    Ok(BenchRow {
        name: FLICKER.into(),
        ms,
        gflops: None,
        peak_mb: None,
        kernels: crate::nn::cpu::kernel_paths(),
        note: Some(format!(
            "warping error {per_frame:.4} per-frame → {result:.4} ({:.2}×, target ≤ 0.35×); \
             style loss {mean:.2}× per-frame (worst: frame {worst_frame}, {worst:.2}×; target ≤ 1.2×); \
             {} scene cuts",
            result / per_frame.max(1e-12),
            report.scene_cuts
        )),
    })
}
