//! `atelier video IN -o OUT --style …`: a clip (a video file through ffmpeg, or a folder of
//! frames) stylised frame by frame on the engine's render lane, the previous result carried
//! along the optical flow so it does not flicker. The output appears only when complete;
//! Ctrl+C stops cleanly (an optimisation video resumes from its last finished frame).

use std::sync::Arc;

use anyhow::{bail, Context};
use atelier::engine::{self, Engine, EventBody, JobKind, VideoJob, VideoReport};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::regions;
use super::stylize::{self, MethodArg, StylizeArgs};

#[derive(Args)]
pub struct VideoArgs {
    /// The clip (a video file, read with ffmpeg; or a folder of frames) as the only photo, its
    /// output with -o (a .mp4/.mkv/.mov file, or a folder for PNG frames), and the style as
    /// for `atelier stylize` (default --method network).
    #[command(flatten)]
    pub stylize: StylizeArgs,
    /// How much of the previous result each frame takes where the optical flow is reliable (0
    /// paints every frame alone, which flickers).
    #[arg(long)]
    pub temporal: Option<f32>,
    /// Print the warping error (flicker) of the result and of plain per-frame processing.
    #[arg(long)]
    pub report: bool,
    /// Only the first N frames (a quick look at a long clip).
    #[arg(long)]
    pub frames: Option<usize>,
}

pub fn run(mut args: VideoArgs) -> anyhow::Result<()> {
    let settings = &mut args.stylize;
    settings.method.get_or_insert(MethodArg::Network);
    stylize::check_settings(settings)?;
    if settings.content.len() != 1 {
        bail!(
            "atelier video takes one clip (a video file or a folder of frames), got {}",
            settings.content.len()
        );
    }
    let input = settings.content[0].clone();
    let output = settings.output.clone();
    if output == input {
        bail!("the output {} is the input", output.display());
    }
    if let Some(weight) = args.temporal {
        if !(0.0..1.0).contains(&weight) {
            bail!("--temporal must be at least 0 and below 1, got {weight}");
        }
    }
    let specs = regions::style_specs(&settings.regions, &settings.styles, &settings.mix);
    let method = stylize::build_method(settings, &specs)?;
    let job_regions = regions::build(
        settings.mask.as_deref(),
        &settings.regions,
        &settings.styles,
        settings.feather,
    )?;
    // Reads the clip's header now: a file that is not a video (or a missing ffmpeg) fails here.
    let info = if input.is_dir() {
        None
    } else {
        Some(engine::probe_clip(&input)?)
    };
    let resumable = settings.method() == MethodArg::Optimize;
    let engine = Arc::new(Engine::new(engine::best_device())?);
    let id = engine.video(VideoJob {
        input: input.clone(),
        output: output.clone(),
        method,
        strength: settings.strength,
        regions: job_regions,
        temporal: args.temporal,
        resumable,
        max_frames: args.frames,
        measure_flicker: args.report,
    })?;
    let stopping = engine.clone();
    super::interrupt::set_hook(
        if resumable {
            "stopping after this frame; run the same command again to resume"
        } else {
            "stopping; nothing is written"
        },
        move || {
            stopping.cancel(id);
        },
    );
    let bar = if settings.quiet {
        ProgressBar::hidden()
    } else {
        let frames = info.as_ref().and_then(|i| i.frames).unwrap_or(0);
        let frames = args.frames.map_or(frames, |most| frames.min(most as u64));
        let bar = ProgressBar::new(frames);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} frames, {per_sec}, {eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    let outcome = loop {
        let event = engine
            .events()
            .recv()
            .context("the engine stopped unexpectedly")?;
        if event.job != id {
            continue;
        }
        match event.body {
            EventBody::Started { total_steps } if total_steps > 0 => {
                bar.set_length(total_steps as u64)
            }
            EventBody::Progress {
                step, total_steps, ..
            } => {
                bar.set_length(total_steps as u64);
                bar.set_position(step as u64);
            }
            EventBody::Preview { .. } => {
                engine.take_preview(JobKind::Render);
            }
            EventBody::Finished(output) => break Ok(*output),
            EventBody::Failed(failure) => break Err(anyhow::anyhow!("{failure}")),
            EventBody::Cancelled => break Err(anyhow::anyhow!("cancelled")),
            _ => {}
        }
    };
    super::interrupt::clear_hook();
    bar.finish_and_clear();
    let output_job = match outcome {
        Ok(output) => output,
        Err(_) if super::interrupt::interrupted() => {
            let kept = if resumable {
                "; the finished frames are kept: run the same command to resume"
            } else {
                ""
            };
            return Err(super::interrupt::Interrupted(format!(
                "stopped: {} was not written{kept}",
                output.display()
            ))
            .into());
        }
        Err(e) => return Err(e),
    };
    for note in &output_job.stats.notes {
        eprintln!("note: {note}");
    }
    let report = output_job.stats.video.clone();
    if settings.json {
        println!(
            "{}",
            serde_json::json!({
                "input": input.display().to_string(),
                "output": output.display().to_string(),
                "method": output_job.stats.method,
                "width": output_job.stats.width,
                "height": output_job.stats.height,
                "seconds": output_job.stats.seconds,
                "video": report,
                "notes": output_job.stats.notes,
            })
        );
    } else if !settings.quiet {
        let frames = report.as_ref().map(|r| r.frames).unwrap_or(0);
        eprintln!(
            "wrote {} ({frames} frames, {}x{}, {:.1} s{})",
            output.display(),
            output_job.stats.width,
            output_job.stats.height,
            output_job.stats.seconds,
            report
                .as_ref()
                .map(|r| format!(", {:.1} frames/s", r.frames_per_second))
                .unwrap_or_default()
        );
    }
    if args.report {
        if let Some(report) = &report {
            print_report(report, output_job.stats.method);
        }
    }
    Ok(())
}

fn print_report(report: &VideoReport, method: &str) {
    match (report.warping_error, report.per_frame_warping_error) {
        (Some(result), Some(per_frame)) => {
            println!("warping error (flicker, 0..1, where the input's flow is reliable):");
            if method == "optimize" && report.temporal_weight > 0.0 {
                // Each frame already starts from, and is held to, the previous one.
                println!(
                    "  frames before the blend {per_frame:.4}  (with the temporal loss; \
                     --temporal 0 gives plain per-frame processing)"
                );
            } else {
                println!("  per-frame processing  {per_frame:.4}");
            }
            println!(
                "  this result           {result:.4}  ({:.2}x per-frame, temporal weight {})",
                result / per_frame.max(1e-12),
                report.temporal_weight
            );
        }
        _ => println!("warping error: needs at least two frames in one scene"),
    }
    println!(
        "{} frames at {:.3} frames/s; {:.1} frames/s stylised; {} scene cuts; audio {}",
        report.frames,
        report.frame_rate,
        report.frames_per_second,
        report.scene_cuts,
        if report.audio { "copied" } else { "none" }
    );
    let stages = &report.stages;
    let per_frame = |seconds: f64| 1000.0 * seconds / report.frames.max(1) as f64;
    println!(
        "time per frame: decode {:.0} ms, stylise {:.0} ms, flow {:.0} ms (beside the \
         stylisation for one-pass methods), blend {:.0} ms, write {:.0} ms",
        per_frame(stages.decode),
        per_frame(stages.stylize),
        per_frame(stages.flow),
        per_frame(stages.blend),
        per_frame(stages.encode)
    );
}
