//! The render lane's video jobs: frames read one at a time, each stylised by the job's method
//! (through the same code as a photo), the previous result carried along the optical flow of
//! the input where forward and backward flow agree, written as they finish. Progress counts
//! frames; the newest frame waits in the lane's preview slot.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;

use super::event::{EventBody, JobOutput, JobStats, PreviewFrame, VideoReport, VideoStages};
use super::job::{Job, Method, VideoJob};
use super::worker::{Outbox, Worker};
use crate::error::{Error, Result};
use crate::imaging::{self, OutputFormat};
use crate::stylize::gatys::{TemporalTarget, TEMPORAL_WEIGHT};
use crate::stylize::{arbitrary, network};
use crate::video::{clip, flow, temporal};

/// One finished frame, kept for the next one's flow and blend.
struct Previous {
    /// The input frame at the output's size.
    input: RgbImage,
    output: RgbImage,
    /// The frame as the method painted it alone (for the report's per-frame figure); `None`
    /// when the job does not measure flicker, or for a frame taken from a resumed run's work
    /// folder.
    fresh: Option<RgbImage>,
}

/// Running sums of the report's warping errors.
#[derive(Default)]
struct Flicker {
    result: f64,
    per_frame: f64,
    pairs: usize,
    scene_cuts: usize,
}

/// A frame the method has painted, waiting for its blend with the previous result and its
/// write, which run beside the next frame's painting.
struct Painted {
    index: usize,
    /// The input frame at the output's size.
    input: RgbImage,
    fresh: RgbImage,
    /// The flow to the input frame before it (`None` for the first frame).
    flows: Option<Flows>,
}

/// Where finished frames go, and the figures gathered on the way.
struct Finisher<'a> {
    job: &'a VideoJob,
    info: &'a clip::ClipInfo,
    weight: f32,
    sink: Option<Box<dyn clip::FrameSink>>,
    work: Option<WorkFolder>,
    notes: Vec<String>,
    flicker: Flicker,
    stages: VideoStages,
}

impl Finisher<'_> {
    /// Blends `painted` with the previous result where the flow is reliable and writes it; it
    /// becomes the next frame's previous one.
    fn finish(&mut self, painted: Painted, previous: Option<&Previous>) -> Result<Previous> {
        let clock = Instant::now();
        let Painted {
            index,
            input,
            fresh,
            flows,
        } = painted;
        let input = if input.dimensions() == fresh.dimensions() {
            input
        } else {
            imaging::resize_exact(&input, fresh.width(), fresh.height())
        };
        let output = match (previous, flows) {
            (Some(previous), Some(flows)) if flows.input_matches(&input) => {
                carry(previous, &fresh, &flows, self.weight, &mut self.flicker)?
            }
            _ => fresh.clone(),
        };
        self.stages.blend += clock.elapsed().as_secs_f64();
        self.write(index, &output, true)?;
        Ok(Previous {
            input,
            output,
            fresh: self.job.measure_flicker.then_some(fresh),
        })
    }

    /// Writes frame `index` (`painted`: painted in this run, so the work folder keeps it).
    fn write(&mut self, index: usize, output: &RgbImage, painted: bool) -> Result<()> {
        let clock = Instant::now();
        let job = self.job;
        if self.sink.is_none() && clip::pads_odd_sides(&job.output, output.dimensions()) {
            self.notes.push(format!(
                "the frames are {}x{}: H.264 needs even sides, so the video repeats the last \
                 column or row",
                output.width(),
                output.height()
            ));
        }
        let sink = match &mut self.sink {
            Some(sink) => sink,
            None => self.sink.insert(clip::create(
                &job.output,
                output.width(),
                output.height(),
                self.info.frame_rate,
                self.info.has_audio.then_some(job.input.as_path()),
            )?),
        };
        sink.write_frame(output)?;
        if let Some(work) = &mut self.work {
            if painted {
                work.save(index, output)?;
            }
        }
        self.stages.encode += clock.elapsed().as_secs_f64();
        Ok(())
    }
}

impl Worker {
    pub(super) fn run_video(
        &mut self,
        outbox: &Outbox,
        job: &VideoJob,
        cancel: &AtomicBool,
    ) -> Result<JobOutput> {
        let started = Instant::now();
        let weight = job.temporal.unwrap_or(temporal::DEFAULT_WEIGHT);
        if !(0.0..1.0).contains(&weight) {
            return Err(Error::invalid(format!(
                "the temporal weight must be at least 0 and below 1, got {weight}"
            )));
        }
        imaging::ensure_not_an_input(&job.output, &[job.input.as_path()])?;
        // Frames are read at the size the method paints them, so nothing is scaled twice.
        let mut source = clip::open_scaled(&job.input, &|w, h| frame_size(&job.method, w, h))?;
        let info = source.info().clone();
        let mut notes = Vec::new();
        if info.variable_frame_rate {
            notes.push(format!(
                "the clip has a variable frame rate: every frame is kept, written at a constant \
                 {:.3} frames/s",
                info.fps()
            ));
        }
        let mut total = info.frames.unwrap_or(0) as usize;
        if let Some(most) = job.max_frames {
            total = if total == 0 { most } else { total.min(most) };
        }
        outbox.send(EventBody::Started { total_steps: total });
        // Each frame's own job reports nothing: the video's progress counts frames.
        let quiet = outbox.quiet();
        let work = if job.resumable {
            Some(WorkFolder::open(&job.output, &fingerprint(job, &info))?)
        } else {
            None
        };
        let mut out = Finisher {
            job,
            info: &info,
            weight,
            sink: None,
            work,
            notes,
            flicker: Flicker::default(),
            stages: VideoStages::default(),
        };
        let shared = self.shared.clone();
        let announce = |frame: &RgbImage, step: usize| {
            shared.put_preview(
                outbox.kind,
                PreviewFrame {
                    job: outbox.id,
                    step,
                    image: Arc::new(frame.clone()),
                },
            );
            outbox.send(EventBody::Preview { step, saved: None });
            outbox.send(EventBody::Progress {
                step,
                total_steps: total.max(step),
                losses: None,
                elapsed: started.elapsed(),
            });
        };
        // One thread for the blend and flow that run beside the network (below); without it
        // (the OS refused a thread) they share the network's pool.
        let side_pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().ok();
        let mut previous: Option<Previous> = None;
        let mut pending: Option<Painted> = None;
        let mut resumed = 0usize;
        let mut index = 0usize;
        while job.max_frames.is_none_or(|most| index < most) {
            let clock = Instant::now();
            let Some(frame) = source.next_frame()? else {
                break;
            };
            out.stages.decode += clock.elapsed().as_secs_f64();
            if cancel.load(Ordering::SeqCst) {
                return Err(Error::Cancelled);
            }
            index += 1;
            let before = pending
                .as_ref()
                .map(|p| &p.input)
                .or(previous.as_ref().map(|p| &p.input));
            let input = match before.map(|b| b.dimensions()) {
                Some((w, h)) if (w, h) != frame.dimensions() => imaging::resize_exact(&frame, w, h),
                _ => frame.clone(),
            };
            if let Some(output) = out.work.as_ref().and_then(|w| w.frame(index)) {
                if let Some(waiting) = pending.take() {
                    let finished = out.finish(waiting, previous.as_ref())?;
                    announce(&finished.output, index - 1);
                }
                resumed += 1;
                let input = imaging::resize_exact(&frame, output.width(), output.height());
                out.write(index, &output, false)?;
                announce(&output, index);
                previous = Some(Previous {
                    input,
                    output,
                    fresh: None,
                });
                continue;
            }
            let frame_job = |method| Job {
                content: Arc::new(frame.clone()),
                method,
                strength: job.strength,
                regions: job.regions.clone(),
            };
            let (painted, flows) = if matches!(job.method, Method::Optimize { .. }) {
                // The optimisation starts from the previous result warped along the flow, so
                // the previous frame is finished and the flow worked out first.
                if let Some(waiting) = pending.take() {
                    let finished = out.finish(waiting, previous.as_ref())?;
                    announce(&finished.output, index - 1);
                    previous = Some(finished);
                }
                let clock = Instant::now();
                let flows = previous
                    .as_ref()
                    .map(|p| Flows::between(&p.input, &input))
                    .transpose()?;
                out.stages.flow += clock.elapsed().as_secs_f64();
                let method = frame_method(
                    &job.method,
                    previous.as_ref(),
                    flows.as_ref(),
                    &input,
                    weight,
                );
                let clock = Instant::now();
                let painted = self.run_job(&quiet, &frame_job(method), cancel)?;
                out.stages.stylize += clock.elapsed().as_secs_f64();
                (painted, flows)
            } else {
                // A one-pass method paints frame t while frame t−1 is blended and written and
                // the flow t → t−1 is worked out beside it: the network alone keeps the two
                // cores only about 80 % busy (166 % CPU over a 640x360 clip). The side work runs
                // in a pool of its own, one thread: in the network's pool its tasks held up the
                // network's bands (width-8 network at 640x360: 5.7–6.3 frames/s, 7.0–7.4 so).
                let waiting = pending.take();
                let (painted, side) = std::thread::scope(|scope| {
                    let (out, previous, input) = (&mut out, previous.as_ref(), &input);
                    let side_pool = side_pool.as_ref();
                    let side = scope.spawn(move || -> Result<(Option<Previous>, Option<Flows>)> {
                        let work = move || -> Result<(Option<Previous>, Option<Flows>)> {
                            let clock = Instant::now();
                            let before = waiting
                                .as_ref()
                                .map(|p| &p.input)
                                .or(previous.map(|p| &p.input));
                            let flows = before.map(|b| Flows::between(b, input)).transpose()?;
                            out.stages.flow += clock.elapsed().as_secs_f64();
                            let finished = waiting.map(|w| out.finish(w, previous)).transpose()?;
                            Ok((finished, flows))
                        };
                        match side_pool {
                            Some(pool) => pool.install(work),
                            None => work(),
                        }
                    });
                    let clock = Instant::now();
                    let painted = self.run_job(&quiet, &frame_job(job.method.clone()), cancel);
                    let painting = clock.elapsed().as_secs_f64();
                    let side = side
                        .join()
                        .map_err(|_| Error::invalid("the video's blending thread panicked"));
                    (painted.map(|p| (p, painting)), side)
                });
                let (finished, flows) = side??;
                if let Some(finished) = finished {
                    announce(&finished.output, index - 1);
                    previous = Some(finished);
                }
                let (painted, painting) = painted?;
                out.stages.stylize += painting;
                (painted, flows)
            };
            pending = Some(Painted {
                index,
                input,
                fresh: Arc::unwrap_or_clone(painted.image),
                flows,
            });
        }
        if let Some(waiting) = pending.take() {
            let finished = out.finish(waiting, previous.as_ref())?;
            announce(&finished.output, index);
            previous = Some(finished);
        }
        let Finisher {
            sink,
            work,
            mut notes,
            flicker,
            stages,
            ..
        } = out;
        let (Some(sink), Some(last)) = (sink, previous) else {
            return Err(Error::image(&job.input, "the clip has no frames"));
        };
        sink.finish()?;
        if let Some(work) = work {
            work.remove();
        }
        if resumed > 0 {
            notes.push(format!(
                "resumed: {resumed} frames came from the stopped run's work folder"
            ));
        }
        let seconds = started.elapsed().as_secs_f64();
        let ran = index - resumed;
        let pairs = flicker.pairs.max(1) as f64;
        let report = VideoReport {
            frames: index,
            frame_rate: info.fps(),
            frames_per_second: ran as f64 / seconds.max(1e-9),
            warping_error: (flicker.pairs > 0).then(|| flicker.result / pairs),
            per_frame_warping_error: (flicker.pairs > 0).then(|| flicker.per_frame / pairs),
            scene_cuts: flicker.scene_cuts,
            audio: info.has_audio,
            temporal_weight: weight,
            stages,
        };
        let image = Arc::new(last.output);
        Ok(JobOutput {
            image: image.clone(),
            stylized: image.clone(),
            content: Arc::new(last.input),
            stats: JobStats {
                method: job.method.name(),
                width: image.width(),
                height: image.height(),
                steps: index,
                evaluations: ran,
                seconds,
                losses: None,
                initial_style_loss: None,
                tiling: None,
                notes,
                video: Some(report),
            },
        })
    }
}

/// The size `method` paints a `width`×`height` frame at.
fn frame_size(method: &Method, width: u32, height: u32) -> (u32, u32) {
    let side = match method {
        Method::Optimize { config, .. } => config.size,
        Method::Network { size, .. } => network::network_side(width, height, *size),
        Method::Arbitrary {
            size, transform, ..
        } => arbitrary::arbitrary_side(width, height, *size, *transform),
    };
    if side == width.max(height) {
        (width, height)
    } else {
        imaging::fit_size(width, height, side)
    }
}

/// The optical flow between two input frames (at the output's size), both ways, and where it
/// can be trusted.
struct Flows {
    /// From the current frame to the previous one: where each pixel was.
    backward: flow::Flow,
    reliable: Vec<bool>,
}

impl Flows {
    fn between(previous: &RgbImage, current: &RgbImage) -> Result<Self> {
        // Each frame's pyramid once for both directions, and the two flows side by side.
        let params = flow::FlowParams::default();
        let (before, now) = rayon::join(
            || flow::Pyramid::new(previous, &params),
            || flow::Pyramid::new(current, &params),
        );
        let (before, now) = (before?, now?);
        let (backward, reliable) = flow::backward_flow_and_reliable(&before, &now, &params)?;
        Ok(Self { backward, reliable })
    }

    fn input_matches(&self, input: &RgbImage) -> bool {
        (self.backward.width, self.backward.height) == input.dimensions()
    }
}

/// The method for one frame: the optimisation starts from the previous result warped along
/// the flow (the photo where the flow is unreliable), at one scale, with a temporal loss that
/// keeps it close to that warped result where the flow is reliable, as Ruder et al. (2016) do;
/// the one-pass methods run as they are (their frames are blended afterwards).
fn frame_method(
    method: &Method,
    previous: Option<&Previous>,
    flows: Option<&Flows>,
    input: &RgbImage,
    weight: f32,
) -> Method {
    let (
        Method::Optimize {
            vgg,
            styles,
            config,
        },
        Some(previous),
        Some(flows),
    ) = (method, previous, flows)
    else {
        return method.clone();
    };
    if weight <= 0.0
        || temporal::is_scene_cut(&flows.reliable)
        || !flows.input_matches(input)
        || previous.output.dimensions() != input.dimensions()
    {
        return method.clone();
    }
    let warped = temporal::warp(&previous.output, &flows.backward);
    let mut start = input.clone();
    for (p, (out, warped)) in start.pixels_mut().zip(warped.pixels()).enumerate() {
        if flows.reliable[p] {
            *out = *warped;
        }
    }
    let reliable = flows
        .reliable
        .iter()
        .map(|&r| if r { 1.0 } else { 0.0 })
        .collect();
    let mut config = config.clone();
    config.start_from = Some(Arc::new(start));
    config.scales = 1;
    config.temporal = Some(TemporalTarget {
        warped: Arc::new(warped),
        reliable: Arc::new(reliable),
        weight: TEMPORAL_WEIGHT * f64::from(weight / temporal::DEFAULT_WEIGHT),
    });
    Method::Optimize {
        vgg: vgg.clone(),
        styles: styles.clone(),
        config,
    }
}

/// Frame `fresh` with the previous result carried in along the flow where it is reliable (a
/// scene cut starts afresh); counts cuts in `flicker` and, when the job measures flicker (its
/// frames keep their fresh versions), adds the pair's warping errors.
fn carry(
    previous: &Previous,
    fresh: &RgbImage,
    flows: &Flows,
    weight: f32,
    flicker: &mut Flicker,
) -> Result<RgbImage> {
    if temporal::is_scene_cut(&flows.reliable) {
        flicker.scene_cuts += 1;
        return Ok(fresh.clone());
    }
    let output = temporal::Blender::new(weight)?.blend(
        fresh,
        &previous.output,
        &flows.backward,
        &flows.reliable,
    )?;
    // Only a job that measures flicker keeps the fresh frames.
    if let Some(previous_fresh) = &previous.fresh {
        flicker.result +=
            temporal::warping_error(&output, &previous.output, &flows.backward, &flows.reliable)?;
        flicker.per_frame +=
            temporal::warping_error(fresh, previous_fresh, &flows.backward, &flows.reliable)?;
        flicker.pairs += 1;
    }
    Ok(output)
}

/// What a resumed run must share with the stopped one for its frames to be reused.
fn fingerprint(job: &VideoJob, info: &clip::ClipInfo) -> String {
    let size = match &job.method {
        Method::Optimize { config, .. } => Some(config.size),
        Method::Network { size, .. } | Method::Arbitrary { size, .. } => *size,
    };
    format!(
        "input {}\nclip {}x{} {:?} {:?}\nmethod {}\nsize {size:?}\nstrength {}\n",
        job.input.display(),
        info.width,
        info.height,
        info.frame_rate,
        info.frames,
        job.method.name(),
        job.strength
    )
}

/// Finished frames of a resumable (optimisation) video, kept beside the output until the video
/// is complete: `.NAME.atelier-frames/00001.png`… and the job's fingerprint.
struct WorkFolder {
    dir: PathBuf,
}

const FINGERPRINT_FILE: &str = "job.txt";

impl WorkFolder {
    fn open(output: &Path, fingerprint: &str) -> Result<Self> {
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "video".into());
        let parent = imaging::parent_folder(output);
        let dir = parent.join(format!(".{name}.atelier-frames"));
        let same_job = std::fs::read_to_string(dir.join(FINGERPRINT_FILE))
            .map(|f| f == fingerprint)
            .unwrap_or(false);
        if !same_job && dir.exists() {
            // Another job's frames: they cannot be reused.
            let _ = std::fs::remove_dir_all(&dir);
        }
        let write_error = |e: std::io::Error| Error::Write {
            path: dir.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&dir).map_err(write_error)?;
        imaging::write_bytes_atomic(&dir.join(FINGERPRINT_FILE), fingerprint.as_bytes())?;
        Ok(Self { dir })
    }

    fn path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("{index:05}.png"))
    }

    /// Frame `index` of the stopped run, when it finished it.
    fn frame(&self, index: usize) -> Option<RgbImage> {
        let path = self.path(index);
        path.is_file()
            .then(|| imaging::load_rgb(&path).ok())
            .flatten()
    }

    fn save(&mut self, index: usize, frame: &RgbImage) -> Result<()> {
        imaging::save_atomic(frame, &self.path(index), OutputFormat::Png)
    }

    fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for WorkFolder {
    /// A work folder without a finished frame is of no use to a rerun: a job that failed before
    /// its first frame (an output that cannot be written, say) leaves nothing behind.
    fn drop(&mut self) {
        let has_frames = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "png"))
            })
            .unwrap_or(false);
        if !has_frames {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
