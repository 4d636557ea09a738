//! The app's side of the engine: building preview and render jobs from the photo, the selection
//! and the controls, submitting them (debounced, latest wins), and handling their events.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui;
use image::RgbImage;

use super::controls::MethodChoice;
use super::progress::{self, JobProgress, JobPurpose};
use super::tasks;
use super::{AtelierApp, Shown};
use crate::engine::{
    network_side, ArbitraryStyle, Event, EventBody, Failure, Job, JobId, JobKind, JobOutput,
    JobStats, Method, NetworkStyle, Regions, StyleImage, MAX_NETWORK_PIXELS,
};
use crate::imaging;
use crate::styles::StyleEntry;

/// Network previews run on the whole photo up to this many pixels (about 1–2 s on two cores
/// for a 16-wide network); bigger photos preview at the canvas's resolution.
const CHEAP_NETWORK_PREVIEW_PIXELS: u64 = 3_000_000;
/// The same for the Instant (arbitrary) method, whose VGG encoder costs more per pixel: AdaIN
/// on 0.8 MP takes about a second on two cores.
const CHEAP_ARBITRARY_PREVIEW_PIXELS: u64 = 800_000;

/// Why a job cannot be submitted right now.
pub(super) enum NotReady {
    /// Style images are still loading; try again shortly.
    Waiting,
    /// No photo or no style yet: the status line already says what to do.
    Idle(String),
    /// Something the user must fix, in words.
    Problem(String),
}

impl AtelierApp {
    /// Builds the job for `purpose` from the current photo, selection and controls.
    pub(super) fn build_job(&mut self, purpose: JobPurpose) -> Result<(Job, u32), NotReady> {
        let Some(photo) = &self.photo else {
            return Err(NotReady::Idle("open a photo first.".into()));
        };
        let controls = &self.persisted.controls;
        let network = controls.method.is_one_pass();
        let (content, side) = match purpose {
            // What you see is what you save: the network paints strokes of a fixed size in
            // pixels, so a small render stretched over the canvas shows strokes several times
            // too large. It runs on the photo itself, at full size when that is cheap.
            JobPurpose::Preview if network => {
                (photo.original.clone(), self.network_preview_side(photo))
            }
            JobPurpose::Preview => {
                let photo_side = photo.original.width().max(photo.original.height());
                (
                    photo.working.clone(),
                    controls.preview_size.min(photo_side).max(16),
                )
            }
            JobPurpose::Save => (photo.original.clone(), self.save_side(photo)),
        };
        let entries: Vec<(StyleEntry, f64)> = self
            .persisted
            .selection
            .iter()
            .filter_map(|s| self.gallery.entry(&s.key).map(|e| (e.clone(), s.weight)))
            .collect();
        if entries.is_empty() {
            return Err(NotReady::Idle("pick a style in the gallery first.".into()));
        }
        // The masks, for the styles in the method's order; the feather scaled from photo
        // pixels to the result's, so the preview and Save look the same.
        let photo_side = photo.original.width().max(photo.original.height()).max(1);
        let feather = self.masks.feather * side as f32 / photo_side as f32;
        let regions_for = |styles: &[&(StyleEntry, f64)]| -> Option<Regions> {
            let keys: Vec<(PathBuf, String)> = styles
                .iter()
                .map(|(e, _)| (e.key().to_path_buf(), e.name.clone()))
                .collect();
            self.masks.regions(&keys, feather)
        };
        let regions;
        let method = match controls.method {
            MethodChoice::Network => {
                let networks: Vec<&(StyleEntry, f64)> =
                    entries.iter().filter(|(e, _)| e.model.is_some()).collect();
                regions = regions_for(&networks);
                let Some((model, mix)) = network_and_mix(&entries) else {
                    return Err(NotReady::Problem(
                        "The Network method needs a trained model (.safetensors / .pth): add one \
                         to the gallery, or switch to Optimise."
                            .into(),
                    ));
                };
                let styles = if regions.is_some() {
                    // One network (or conditional style) per region.
                    networks
                        .iter()
                        .filter_map(|(e, _)| {
                            let mix = e.condition.as_ref().map(|c| c.mix.clone());
                            e.model.clone().map(|model| NetworkStyle::new(model, mix))
                        })
                        .collect()
                } else if networks
                    .iter()
                    .any(|(e, _)| e.model.as_ref() != Some(&model))
                {
                    return Err(NotReady::Problem(
                        "Several networks paint only in regions: paint a mask for each (Paint \
                         masks), or pick one network."
                            .into(),
                    ));
                } else {
                    vec![NetworkStyle::new(model, mix)]
                };
                let size = match purpose {
                    JobPurpose::Preview => Some(side),
                    JobPurpose::Save => None,
                };
                Method::Network {
                    styles,
                    size,
                    preserve_color: controls.preserve_color,
                    stroke: controls.stroke,
                }
            }
            MethodChoice::Optimize | MethodChoice::Arbitrary => {
                let vgg = self
                    .vgg
                    .clone()
                    .map_err(|failure| NotReady::Problem(describe_failure(&failure)))?;
                let paintings: Vec<&(StyleEntry, f64)> =
                    entries.iter().filter(|(e, _)| e.image.is_some()).collect();
                regions = regions_for(&paintings);
                let images: Vec<(PathBuf, f64)> = paintings
                    .iter()
                    .filter_map(|(e, w)| e.image.clone().map(|p| (p, *w)))
                    .collect();
                if images.is_empty() {
                    return Err(NotReady::Problem(
                        "The Optimise method needs a style image: pick a painting in the \
                         gallery, or switch to Network."
                            .into(),
                    ));
                }
                let total: f64 = images.iter().map(|(_, w)| w).sum();
                let mut styles = Vec::new();
                let mut waiting = false;
                for (path, weight) in &images {
                    match self.style_images.get(path) {
                        Some(image) => styles.push(StyleImage {
                            image: image.clone(),
                            // Normalised so the blend does not change the overall style weight.
                            weight: if total > 0.0 {
                                weight / total
                            } else {
                                1.0 / images.len() as f64
                            },
                        }),
                        None => {
                            waiting = true;
                            if self.loading_styles.insert(path.clone()) {
                                let path = path.clone();
                                self.tasks
                                    .spawn("style-image", move || tasks::load_style_image(path));
                            }
                        }
                    }
                }
                if waiting {
                    return Err(NotReady::Waiting);
                }
                if controls.method == MethodChoice::Arbitrary {
                    Method::Arbitrary {
                        vgg: PathBuf::from(crate::engine::BUNDLED_VGG),
                        decoders: None,
                        styles: styles
                            .into_iter()
                            .map(|s| ArbitraryStyle {
                                works: vec![s.image],
                                weight: s.weight,
                            })
                            .collect(),
                        transform: controls.transform,
                        size: match purpose {
                            JobPurpose::Preview => Some(side),
                            JobPurpose::Save => None,
                        },
                        style_side: crate::engine::DEFAULT_STYLE_SIDE,
                        preserve_color: controls.preserve_color,
                    }
                } else {
                    let preview_every = match purpose {
                        JobPurpose::Preview => controls.preview_every,
                        JobPurpose::Save => 0,
                    };
                    let mut config = controls.gatys_config(side, preview_every);
                    if let Some(start) = &self.refine_from {
                        // Refine: Gatys from the Instant result, at one scale, a few steps.
                        config.start_from = Some(start.clone());
                        config.scales = 1;
                    }
                    Method::Optimize {
                        vgg,
                        styles,
                        config,
                    }
                }
            }
        };
        let job = Job {
            content,
            method,
            strength: controls.strength,
            regions,
        };
        Ok((job, side))
    }

    /// Sends `job` down the lane of `purpose`: previews latest-wins, Save renders queued.
    pub(super) fn submit(&mut self, job: Job, purpose: JobPurpose, side: u32) -> Option<JobId> {
        // The app follows one job at a time: a Save render replaces a running preview, which
        // would otherwise keep the engine busy before the render's turn.
        if let Some((running, progress)) = &self.running {
            if progress.purpose == JobPurpose::Preview && purpose == JobPurpose::Save {
                self.engine.cancel(*running);
            }
        }
        let submitted = match purpose {
            JobPurpose::Preview => self.engine.preview(job),
            JobPurpose::Save => self.engine.render(job),
        };
        match submitted {
            Ok(id) => {
                self.outcome = None;
                self.preview_waiting = false;
                self.running = Some((id, JobProgress::new(purpose, side)));
                Some(id)
            }
            Err(e) => {
                self.fail(e.to_string());
                None
            }
        }
    }

    /// Starts the debounced preview job once its quiet time is over (not during a Save render).
    pub(super) fn tick(&mut self, ctx: &egui::Context) {
        self.try_submit_save();
        let Some(at) = self.restart_at else {
            return;
        };
        let now = Instant::now();
        // A video render has the engine and the canvas: the preview waits for it.
        let saving = self.pending_save.is_some() || self.video_busy();
        if now < at || saving || self.photo.is_none() {
            ctx.request_repaint_after(
                at.saturating_duration_since(now)
                    .max(Duration::from_millis(20)),
            );
            return;
        }
        match self.build_job(JobPurpose::Preview) {
            Ok((job, side)) => {
                self.restart_at = None;
                self.submit(job, JobPurpose::Preview, side);
                ctx.request_repaint();
            }
            Err(NotReady::Waiting) => {
                self.restart_at = Some(now + Duration::from_millis(50));
                ctx.request_repaint_after(Duration::from_millis(50));
            }
            Err(NotReady::Idle(_)) => self.restart_at = None,
            Err(NotReady::Problem(message)) => {
                // Not a toast: it repeats on every control change until the user fixes it.
                self.restart_at = None;
                self.outcome = Some((progress::Level::Error, message));
            }
        }
    }

    /// Handles the engine's events. Training events go to the New style panel; preview images
    /// are taken from the engine's slot once per frame, the newest only.
    pub(super) fn drain_engine(&mut self) {
        while let Some(event) = self.events.try_recv() {
            if event.kind == JobKind::Training {
                self.new_style.deliver(event);
                continue;
            }
            if self.video_event(&event) {
                continue;
            }
            self.job_event(event);
        }
        self.video_preview();
        if std::mem::take(&mut self.preview_waiting) {
            if let Some(frame) = self.engine.take_preview(JobKind::Preview) {
                let current = self.running.as_ref().map(|(id, _)| *id);
                if current == Some(frame.job) {
                    self.previews_received += 1;
                    self.show_stylized(frame.image, None, false);
                }
            }
        }
    }

    pub(super) fn job_event(&mut self, event: Event) {
        let Some((id, progress)) = &mut self.running else {
            return;
        };
        // Events of superseded jobs are stale.
        if event.job != *id {
            return;
        }
        let purpose = progress.purpose;
        match event.body {
            EventBody::Started { total_steps } => progress.total_steps = total_steps,
            EventBody::Progress {
                step,
                total_steps,
                losses,
                elapsed,
            } => {
                progress.step = step;
                progress.total_steps = total_steps;
                progress.elapsed = elapsed;
                progress.losses = losses;
            }
            EventBody::Preview { .. } => {
                if purpose == JobPurpose::Preview {
                    self.preview_waiting = true;
                }
            }
            EventBody::Finished(output) => {
                self.running = None;
                self.finished_jobs += 1;
                self.job_finished(purpose, *output);
            }
            EventBody::Failed(failure) => {
                self.running = None;
                let what = match purpose {
                    JobPurpose::Save => {
                        self.pending_save = None;
                        "Save failed"
                    }
                    JobPurpose::Preview => "Preview failed",
                };
                self.fail(format!("{what}: {}", describe_failure(&failure)));
            }
            EventBody::Cancelled => {
                self.running = None;
                if purpose == JobPurpose::Save {
                    self.pending_save = None;
                }
                if self.restart_at.is_none() {
                    self.outcome = Some((
                        progress::Level::Info,
                        "Cancelled. Change a control or pick a style to render again.".into(),
                    ));
                }
            }
            // Training-only events.
            EventBody::TrainingStarted { .. }
            | EventBody::Training(_)
            | EventBody::Checkpoint { .. }
            | EventBody::Trained(_)
            | EventBody::Stopped { .. }
            | EventBody::Decoder(_) => {}
        }
    }

    /// Longer side of a network preview: the whole photo up to [`CHEAP_NETWORK_PREVIEW_PIXELS`]
    /// (so it is exactly what Save writes), else the resolution the canvas shows it at.
    pub(super) fn network_preview_side(&self, photo: &super::Photo) -> u32 {
        let (w, h) = photo.original.dimensions();
        let (full, cheap) = match self.persisted.controls.method {
            MethodChoice::Arbitrary => (
                crate::engine::arbitrary_side(w, h, None, self.persisted.controls.transform),
                CHEAP_ARBITRARY_PREVIEW_PIXELS,
            ),
            _ => (network_side(w, h, None), CHEAP_NETWORK_PREVIEW_PIXELS),
        };
        if u64::from(w) * u64::from(h) <= cheap {
            return full;
        }
        let shown = w.max(h) as f32 * self.canvas.scale() * self.ctx.pixels_per_point();
        let floor = self.persisted.controls.preview_size.min(full);
        (shown.round() as u32).clamp(floor, full)
    }

    /// "Preview 979×734 done in 0.4 s: full size, as Save writes it."
    pub(super) fn preview_outcome(&self, stats: &JobStats) -> String {
        let save = self.photo.as_ref().map(|photo| {
            let side = self.save_side(photo);
            let (w, h) = photo.original.dimensions();
            imaging::fit_size(w, h, side)
        });
        let steps = if stats.steps > 1 {
            // The network has no steps to count.
            format!(" ({} steps)", stats.steps)
        } else {
            String::new()
        };
        let size = match save {
            Some(save) if save == (stats.width, stats.height) => {
                "full size, as Save writes it.".to_string()
            }
            Some((w, h)) => format!("Save (Ctrl+S) renders {w}×{h}."),
            None => String::new(),
        };
        let tiles = stats
            .tiling
            .map(|t| format!(" Ran in {} (tile size from the free memory).", t.describe()))
            .unwrap_or_default();
        format!(
            "Preview {}×{} done in {:.1} s{steps}: {size}{tiles}",
            stats.width, stats.height, stats.seconds
        )
    }

    /// The engine's notes on a finished job (masks stretched, empty…), each shown once until
    /// the notes change.
    pub(super) fn show_notes(&mut self, notes: &[String]) {
        for note in notes {
            if !self.shown_notes.contains(note) {
                self.toasts.info(capitalised(note));
            }
        }
        self.shown_notes = notes.to_vec();
    }

    pub(super) fn job_finished(&mut self, purpose: JobPurpose, output: JobOutput) {
        self.show_notes(&output.stats.notes);
        let stats = &output.stats;
        match purpose {
            JobPurpose::Preview => {
                self.outcome = Some((progress::Level::Info, self.preview_outcome(stats)));
                self.show_stylized(output.stylized, Some(output.content), true);
            }
            JobPurpose::Save => {
                let Some(pending) = self.pending_save.take() else {
                    return;
                };
                if let Some(photo) = &self.photo {
                    let (w, h) = photo.original.dimensions();
                    let limit = match self.persisted.controls.method {
                        MethodChoice::Network => Some(MAX_NETWORK_PIXELS),
                        MethodChoice::Arbitrary => Some(crate::engine::MAX_ARBITRARY_PIXELS),
                        MethodChoice::Optimize => None,
                    };
                    if let Some(limit) = limit.filter(|_| stats.width.max(stats.height) < w.max(h))
                    {
                        // One-pass methods cap their input for memory; say so rather than surprise.
                        self.toasts.info(format!(
                            "Saved at {}×{} instead of {w}×{h}: this method runs on at most \
                             {} megapixels at once.",
                            stats.width,
                            stats.height,
                            limit / 1_000_000
                        ));
                    }
                }
                if let Some(tiling) = stats.tiling {
                    self.toasts.info(format!(
                        "Rendered in {} (tile size from the free memory).",
                        tiling.describe()
                    ));
                }
                // The canvas shows what was saved.
                self.show_stylized(output.stylized.clone(), Some(output.content.clone()), true);
                self.write_render(
                    output.stylized,
                    output.content,
                    pending.path,
                    pending.format,
                    pending.recipe,
                    pending.masks,
                );
                // The render superseded an unfinished preview: start it again.
                if !self.shown.as_ref().is_some_and(|s| s.finished) {
                    self.restart_at = Some(Instant::now());
                }
            }
        }
    }

    /// Puts a full-strength picture on the canvas; `content` is the photo at its size (computed
    /// from the working photo when not given).
    pub(super) fn show_stylized(
        &mut self,
        stylized: Arc<RgbImage>,
        content: Option<Arc<RgbImage>>,
        finished: bool,
    ) {
        let Some(photo) = &self.photo else {
            return;
        };
        let (w, h) = stylized.dimensions();
        let content = content.unwrap_or_else(|| match &self.shown {
            Some(shown) if shown.content.dimensions() == (w, h) => shown.content.clone(),
            _ => Arc::new(tasks::display_resize(&photo.working, w, h)),
        });
        let blended = imaging::blend(
            &stylized,
            &content,
            self.persisted.controls.pixel_strength(),
        )
        .unwrap_or_else(|_| (*stylized).clone());
        let color = tasks::to_color_image(&blended);
        self.uploads += 1;
        let texture = match self.shown.take() {
            Some(mut shown) => {
                shown.texture.set(color, egui::TextureOptions::LINEAR);
                shown.texture
            }
            None => self
                .ctx
                .load_texture("result", color, egui::TextureOptions::LINEAR),
        };
        self.shown = Some(Shown {
            stylized,
            content,
            texture,
            finished,
        });
    }

    pub(super) fn reblend(&mut self) {
        if let Some(shown) = &mut self.shown {
            if let Ok(blended) = imaging::blend(
                &shown.stylized,
                &shown.content,
                self.persisted.controls.pixel_strength(),
            ) {
                self.uploads += 1;
                shown.texture.set(
                    tasks::to_color_image(&blended),
                    egui::TextureOptions::LINEAR,
                );
            }
        }
    }
}

/// `text` with its first letter in upper case (the engine's notes start in lower case).
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A failure in words that say what to do about it.
pub(super) fn describe_failure(failure: &Failure) -> String {
    match failure {
        Failure::MissingVgg { .. } => {
            format!("{failure}. Until then the Network method works without it.")
        }
        Failure::BadInput { path, reason } => {
            format!("cannot use {}: {reason}", path.display())
        }
        Failure::BadModel { path, reason } => format!(
            "the model {} cannot be used: {reason}. Remove it from the gallery (right-click) or \
             pick another style.",
            path.display()
        ),
        Failure::OutOfMemory(_) => {
            format!("{failure}. Try a smaller preview size or Save size.")
        }
        other => other.to_string(),
    }
}

/// The network the selection runs, and for a conditional network's styles their mix: the
/// selected entries of the first selected model, each entry's own mix scaled by its weight
/// (entries of other models are left out: networks cannot be blended with each other).
pub(super) fn network_and_mix(
    entries: &[(StyleEntry, f64)],
) -> Option<(PathBuf, Option<Vec<f64>>)> {
    let model = entries.iter().find_map(|(e, _)| e.model.clone())?;
    let mut mix: Option<Vec<f64>> = None;
    for (entry, weight) in entries {
        let (Some(condition), Some(m)) = (&entry.condition, &entry.model) else {
            continue;
        };
        if *m != model {
            continue;
        }
        let sum = mix.get_or_insert_with(|| vec![0.0; condition.mix.len()]);
        if sum.len() == condition.mix.len() {
            for (s, w) in sum.iter_mut().zip(&condition.mix) {
                *s += w * weight.max(0.0);
            }
        }
    }
    Some((model, mix))
}
