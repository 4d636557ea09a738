//! Video mode: a clip is open, one of its frames is the photo (so the canvas, gallery, controls,
//! masks and previews work on that frame unchanged), the video bar scrubs to other frames and
//! renders the whole clip through [`crate::engine::Engine::video`] with progress and Cancel.

use std::path::{Path, PathBuf};
use std::time::Duration;

use eframe::egui;

use super::actions::AppAction;
use super::jobs::{describe_failure, NotReady};
use super::progress::{self, JobPurpose};
use super::tasks::{self, DialogPurpose, LoadedPhoto, TaskResult};
use super::AtelierApp;
use crate::engine::{ClipInfo, Event, EventBody, JobId, JobKind, JobOutput, Method, VideoJob};

/// Files opened (and dropped) as videos rather than photos.
pub const VIDEO_EXTENSIONS: [&str; 6] = ["mp4", "mkv", "mov", "webm", "avi", "m4v"];

/// Whether `path` names a video file by its extension.
pub fn is_video_file(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.as_str()))
}

/// What the video bar asks for.
pub enum VideoAction {
    /// Show frame `index` (the slider was released there).
    Scrub(u64),
    /// Ask where to write, then render the clip.
    Render,
    Cancel,
    Close,
}

/// The open clip.
pub struct VideoState {
    pub path: PathBuf,
    pub info: ClipInfo,
    /// The frame the photo is.
    pub frame: u64,
    /// The slider's position (differs from `frame` while dragging).
    slider: u64,
    /// The frame being read (latest wins).
    loading: Option<u64>,
    render: Option<VideoRender>,
    /// A render asked for while the style images still load (retried every frame).
    render_waiting: Option<PathBuf>,
    /// How much of the previous result each rendered frame carries where the flow is reliable
    /// (0: every frame alone).
    pub smoothing: f32,
    /// Render only the first this many frames (0: all).
    pub first_frames: u64,
}

/// A render of the clip in the engine's render lane.
struct VideoRender {
    id: JobId,
    output: PathBuf,
    done: usize,
    total: usize,
    elapsed: Duration,
    /// A finished frame waits in the render lane's preview slot.
    preview_waiting: bool,
}

impl VideoState {
    fn frames(&self) -> Option<u64> {
        self.info.frames.filter(|&n| n > 0)
    }

    fn name(&self) -> String {
        self.path
            .file_name()
            .unwrap_or(self.path.as_os_str())
            .to_string_lossy()
            .into_owned()
    }

    /// `<clip stem>-atelier.mp4` beside the clip.
    pub fn default_output(&self) -> PathBuf {
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "video".into());
        self.path.with_file_name(format!("{stem}-atelier.mp4"))
    }
}

/// Reads the clip at `path` and its first frame (on a task thread: ffprobe and ffmpeg take a
/// while).
fn load_clip(path: PathBuf) -> TaskResult {
    let loaded = crate::engine::describe_clip(&path)
        .and_then(|info| crate::engine::clip_frame_at(&path, 0).map(|frame| (info, frame)));
    match loaded {
        Ok((info, frame)) => TaskResult::Clip {
            info,
            first: Box::new(tasks::loaded_photo(path, frame)),
        },
        Err(e) => TaskResult::Failed {
            what: "video",
            key: path,
            message: e.to_string(),
        },
    }
}

fn load_clip_frame(path: PathBuf, index: u64) -> TaskResult {
    match crate::engine::clip_frame_at(&path, index) {
        Ok(frame) => TaskResult::ClipFrame {
            index,
            frame: Box::new(tasks::loaded_photo(path, frame)),
        },
        Err(e) => TaskResult::Failed {
            what: "video frame",
            key: path,
            message: e.to_string(),
        },
    }
}

/// "frame 12 of 240, 3.1 frames/s, 1 min 16 s left".
fn progress_text(render: &VideoRender) -> String {
    let seconds = render.elapsed.as_secs_f64();
    let mut text = format!("Rendering frame {} of {}", render.done, render.total);
    if render.done > 0 && seconds > 0.0 {
        let rate = render.done as f64 / seconds;
        let left = render.total.saturating_sub(render.done) as f64 / rate;
        text.push_str(&format!(
            ", {rate:.1} frames/s, {} left",
            duration_text(left)
        ));
    }
    text
}

fn duration_text(seconds: f64) -> String {
    let seconds = seconds.round() as u64;
    if seconds >= 60 {
        format!("{} min {} s", seconds / 60, seconds % 60)
    } else {
        format!("{seconds} s")
    }
}

impl AtelierApp {
    // ---- For tests (the same paths the menu and the video bar take) ----

    /// A clip is open (video mode).
    pub fn video_open(&self) -> bool {
        self.video.is_some()
    }

    /// The frame of the open clip that is the photo.
    pub fn video_frame(&self) -> Option<u64> {
        self.video
            .as_ref()
            .filter(|v| v.loading.is_none())
            .map(|v| v.frame)
    }

    /// A video render is in flight.
    pub fn video_rendering(&self) -> bool {
        self.video
            .as_ref()
            .is_some_and(|v| v.render.is_some() || v.render_waiting.is_some())
    }

    /// The photo (in video mode: the current frame) at full size.
    pub fn photo_image(&self) -> Option<std::sync::Arc<image::RgbImage>> {
        self.photo.as_ref().map(|p| p.original.clone())
    }

    /// Videos written so far.
    pub fn videos_written(&self) -> &[PathBuf] {
        &self.videos_written
    }

    /// Starts reading the clip at `path` (a video file or a folder of frames), as "Open
    /// video…" does; on success its first frame becomes the photo.
    pub fn open_video(&mut self, path: PathBuf) {
        self.remember_folder(&path);
        self.tasks.spawn("open-video", move || load_clip(path));
    }

    /// Carries out what the video bar asked for (tests call it directly).
    pub fn video_action(&mut self, action: VideoAction) {
        match action {
            VideoAction::Scrub(index) => self.scrub_video(index),
            VideoAction::Render => self.open_dialog(DialogPurpose::RenderVideo),
            VideoAction::Cancel => self.cancel_video(),
            VideoAction::Close => self.close_video(),
        }
    }

    /// Reads frame `index` in the background; it becomes the photo (the masks stay: they
    /// apply to every frame).
    pub fn scrub_video(&mut self, index: u64) {
        let Some(video) = &mut self.video else {
            return;
        };
        let index = video.frames().map_or(0, |n| index.min(n.saturating_sub(1)));
        video.slider = index;
        if index == video.frame && video.loading.is_none() {
            return;
        }
        video.loading = Some(index);
        let path = video.path.clone();
        self.tasks
            .spawn("video-frame", move || load_clip_frame(path, index));
    }

    /// Renders the whole clip to `output` (a video file, or a name without an extension for a
    /// folder of PNG frames) with the method, style, strength and masks that Save would use.
    pub fn render_video_to(&mut self, output: PathBuf) {
        let Some(video) = &self.video else {
            return;
        };
        if video.render.is_some() {
            self.toasts.info("A video render is already running.");
            return;
        }
        if output == video.path {
            self.fail("The output would overwrite the clip: choose another name.".into());
            return;
        }
        let input = video.path.clone();
        let (smoothing, first_frames) = (video.smoothing, video.first_frames);
        // The Save job's method, strength and regions, for every frame.
        let job = match self.build_job(JobPurpose::Save) {
            Ok((job, _)) => job,
            Err(NotReady::Waiting) => {
                if let Some(video) = &mut self.video {
                    video.render_waiting = Some(output);
                }
                return;
            }
            Err(NotReady::Idle(message)) => {
                self.fail(format!("Cannot render the video: {message}"));
                return;
            }
            Err(NotReady::Problem(message)) => {
                self.fail(message);
                return;
            }
        };
        let resumable = matches!(job.method, Method::Optimize { .. });
        let submitted = self.engine.video(VideoJob {
            input,
            output: output.clone(),
            method: job.method,
            strength: job.strength,
            regions: job.regions,
            temporal: Some(smoothing),
            resumable,
            max_frames: (first_frames > 0).then_some(first_frames as usize),
            measure_flicker: false,
        });
        match submitted {
            Ok(id) => {
                // The render gets the CPU and the canvas: no preview meanwhile.
                if let Some((running, _)) = &self.running {
                    self.engine.cancel(*running);
                }
                self.restart_at = None;
                self.outcome = None;
                if let Some(video) = &mut self.video {
                    video.render_waiting = None;
                    video.render = Some(VideoRender {
                        id,
                        output,
                        done: 0,
                        total: match (video.info.frames.unwrap_or(0), first_frames) {
                            (all, 0) => all,
                            (0, first) => first,
                            (all, first) => all.min(first),
                        } as usize,
                        elapsed: Duration::ZERO,
                        preview_waiting: false,
                    });
                }
            }
            Err(e) => self.fail(format!("Cannot render the video: {e}")),
        }
    }

    /// Stops the video render; nothing is written.
    pub fn cancel_video(&mut self) {
        if let Some(video) = &mut self.video {
            video.render_waiting = None;
            if let Some(render) = &video.render {
                self.engine.cancel(render.id);
            }
        }
    }

    /// Leaves video mode (a running render is cancelled); the frame stays as the photo.
    pub fn close_video(&mut self) {
        self.cancel_video();
        self.video = None;
    }

    /// Whether a video render owns the engine and the canvas (previews wait).
    pub(super) fn video_busy(&self) -> bool {
        self.video
            .as_ref()
            .is_some_and(|v| v.render.is_some() || v.render_waiting.is_some())
    }

    /// Retries a render that waited for style images.
    pub(super) fn video_tick(&mut self, ctx: &egui::Context) {
        let waiting = self.video.as_mut().and_then(|v| v.render_waiting.take());
        if let Some(output) = waiting {
            self.render_video_to(output);
            ctx.request_repaint_after(Duration::from_millis(50));
        }
        if self.video_busy() {
            // Ticks the elapsed time (events wake the UI too).
            ctx.request_repaint_after(Duration::from_millis(250));
        }
    }

    /// A clip was described: video mode starts on its first frame (a new clip: masks start
    /// over, as for a new photo).
    pub(super) fn clip_opened(&mut self, ctx: &egui::Context, info: ClipInfo, first: LoadedPhoto) {
        // A render of the previous clip stops.
        self.cancel_video();
        // A photo still loading would replace the frame.
        self.loading_photo = None;
        self.video = Some(VideoState {
            path: first.path.clone(),
            info,
            frame: 0,
            slider: 0,
            loading: None,
            render: None,
            render_waiting: None,
            smoothing: crate::engine::DEFAULT_TEMPORAL_WEIGHT,
            first_frames: 0,
        });
        self.install_photo(ctx, first, false);
    }

    /// A scrubbed frame arrived: it becomes the photo, the masks stay.
    pub(super) fn clip_frame_loaded(
        &mut self,
        ctx: &egui::Context,
        index: u64,
        frame: LoadedPhoto,
    ) {
        let current = self
            .video
            .as_mut()
            .filter(|v| v.path == frame.path && v.loading == Some(index));
        if let Some(video) = current {
            video.loading = None;
            video.frame = index;
            self.install_photo(ctx, frame, true);
        }
    }

    pub(super) fn clip_frame_failed(&mut self, clip: &Path, message: String) {
        if let Some(video) = self.video.as_mut().filter(|v| v.path == clip) {
            video.loading = None;
            video.slider = video.frame;
        }
        self.fail(format!("Cannot read that frame: {message}"));
    }

    /// Handles an engine event of the video render; returns false when it is not one.
    pub(super) fn video_event(&mut self, event: &Event) -> bool {
        let Some(video) = &mut self.video else {
            return false;
        };
        let Some(render) = video.render.as_mut().filter(|r| r.id == event.job) else {
            return false;
        };
        match &event.body {
            EventBody::Started { total_steps } => render.total = *total_steps,
            EventBody::Progress {
                step,
                total_steps,
                elapsed,
                ..
            } => {
                render.done = *step;
                render.total = *total_steps;
                render.elapsed = *elapsed;
            }
            EventBody::Preview { .. } => render.preview_waiting = true,
            EventBody::Finished(output) => {
                let output_path = render.output.clone();
                video.render = None;
                self.video_finished(output_path, output);
            }
            EventBody::Failed(failure) => {
                video.render = None;
                self.back_to_frame_preview();
                self.fail(format!(
                    "The video render failed: {}",
                    describe_failure(failure)
                ));
            }
            EventBody::Cancelled => {
                video.render = None;
                self.back_to_frame_preview();
                // A toast too: the frame's preview soon takes the status line.
                let message = "Video render cancelled; nothing was written.";
                self.outcome = Some((progress::Level::Info, message.into()));
                self.toasts.info(message);
            }
            _ => {}
        }
        true
    }

    /// The newest rendered frame goes on the canvas (once per UI frame).
    pub(super) fn video_preview(&mut self) {
        let Some(render) = self.video.as_mut().and_then(|v| v.render.as_mut()) else {
            return;
        };
        if !std::mem::take(&mut render.preview_waiting) {
            return;
        }
        let id = render.id;
        if let Some(frame) = self.engine.take_preview(JobKind::Render) {
            if frame.job == id {
                // The frame is already blended at the job's strength: show it as it is.
                self.show_stylized(frame.image.clone(), Some(frame.image), false);
            }
        }
    }

    fn video_finished(&mut self, output_path: PathBuf, output: &JobOutput) {
        self.show_notes(&output.stats.notes);
        let mut message = format!("Wrote {}", output_path.display());
        if let Some(report) = &output.stats.video {
            message.push_str(&format!(
                " ({} frames, {:.1} frames/s)",
                report.frames, report.frames_per_second
            ));
        }
        message.push('.');
        self.back_to_frame_preview();
        self.outcome = Some((progress::Level::Info, message.clone()));
        self.toasts.info(message);
        self.videos_written.push(output_path);
    }

    /// The canvas showed the render's frames: it goes back to the current frame's preview.
    fn back_to_frame_preview(&mut self) {
        self.shown = None;
        self.schedule_restart();
    }

    /// The default file name and folder of the render dialog.
    pub(super) fn video_dialog_defaults(&self) -> Option<(Option<PathBuf>, String)> {
        let video = self.video.as_ref()?;
        let output = video.default_output();
        let name = output.file_name()?.to_string_lossy().into_owned();
        Some((output.parent().map(Path::to_path_buf), name))
    }

    /// The video bar above the canvas: the clip, the frame slider, Render, progress, Cancel.
    pub(super) fn video_bar(&mut self, ui: &mut egui::Ui) -> Vec<AppAction> {
        let mut actions = Vec::new();
        let Some(video) = &mut self.video else {
            return actions;
        };
        let info = video.info.clone();
        let name = video.name();
        ui.add_space(2.0);
        ui.horizontal(|ui| {
            let frames = video
                .frames()
                .map_or("frames unknown".to_string(), |n| format!("{n} frames"));
            ui.strong(name);
            ui.label(format!(
                "{}×{}, {frames}, {:.2} fps",
                info.width,
                info.height,
                info.fps()
            ));
            ui.separator();
            let rendering = video.render.is_some() || video.render_waiting.is_some();
            if let Some(n) = video.frames() {
                let response = ui
                    .add_enabled(
                        !rendering,
                        egui::Slider::new(&mut video.slider, 0..=n.saturating_sub(1)).text("Frame"),
                    )
                    .on_hover_text("Scrub: the frame under the style preview (read when released)");
                // Only on release: every frame read costs ffmpeg a seek.
                let released =
                    response.drag_stopped() || (response.changed() && !response.dragged());
                if released {
                    actions.push(AppAction::Video(VideoAction::Scrub(video.slider)));
                }
            }
            if video.loading.is_some() {
                ui.spinner();
            }
            ui.separator();
            ui.add_enabled(
                !rendering,
                egui::Slider::new(&mut video.smoothing, 0.0..=0.95)
                    .fixed_decimals(2)
                    .text("Smoothing"),
            )
            .on_hover_text(
                "How much of the previous frame each frame carries along the motion: more \
                 flickers less; 0 paints every frame alone",
            );
            let most = video.frames().unwrap_or(u64::MAX);
            let label = ui.label("Render");
            ui.add_enabled(
                !rendering,
                egui::DragValue::new(&mut video.first_frames)
                    .range(0..=most)
                    .custom_formatter(|n, _| {
                        if n < 1.0 {
                            "all".into()
                        } else {
                            format!("first {n}")
                        }
                    })
                    .custom_parser(|text| {
                        let text = text.trim().trim_start_matches("first").trim();
                        if text == "all" {
                            Some(0.0)
                        } else {
                            text.parse().ok()
                        }
                    }),
            )
            .labelled_by(label.id)
            .on_hover_text("Frames to render: all, or only the first N (a quick look)");
            ui.label("frames");
            ui.separator();
            if rendering {
                if ui
                    .button("Cancel")
                    .on_hover_text("Stop the render; nothing is written")
                    .clicked()
                {
                    actions.push(AppAction::Video(VideoAction::Cancel));
                }
            } else if ui
                .button("Render video…")
                .on_hover_text("Stylise every frame as Save would, without flicker")
                .clicked()
            {
                actions.push(AppAction::Video(VideoAction::Render));
            }
            if ui
                .button("Close video")
                .on_hover_text("Leave video mode; this frame stays as the photo")
                .clicked()
            {
                actions.push(AppAction::Video(VideoAction::Close));
            }
        });
        if let Some(render) = &video.render {
            let fraction = if render.total > 0 {
                render.done as f32 / render.total as f32
            } else {
                0.0
            };
            ui.add(egui::ProgressBar::new(fraction).text(progress_text(render)));
        } else if video.render_waiting.is_some() {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Loading the style images…");
            });
        }
        ui.add_space(2.0);
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_files_are_known_by_their_extension() {
        assert!(is_video_file(Path::new("/clips/Holiday.MP4")));
        assert!(is_video_file(Path::new("a.webm")));
        assert!(!is_video_file(Path::new("photo.png")));
        assert!(!is_video_file(Path::new("frames")));
    }

    #[test]
    fn progress_says_frames_rate_and_time_left() {
        let render = VideoRender {
            id: 1,
            output: PathBuf::from("out.mp4"),
            done: 10,
            total: 250,
            elapsed: Duration::from_secs(5),
            preview_waiting: false,
        };
        assert_eq!(
            progress_text(&render),
            "Rendering frame 10 of 250, 2.0 frames/s, 2 min 0 s left"
        );
    }
}
