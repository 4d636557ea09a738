//! What the engine reports back. Every event names its job and lane. Per job, in order:
//! `Started` (or `TrainingStarted`), then `Progress`/`Training`/`Preview`/`Checkpoint` as work
//! goes on, then exactly one terminal event: `Finished`, `Trained`, `Failed`, `Cancelled` or
//! `Stopped`. A job cancelled before it ran gets only `Cancelled`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use image::RgbImage;
use serde::Serialize;

use super::failure::Failure;
use super::job::{JobId, JobKind};
use crate::stylize::gatys::Losses;
use crate::stylize::network::TileReport;
use crate::train::decoder::DecoderEvent;
use crate::train::{ExportedStyle, TrainProgress};

#[derive(Clone)]
pub struct Event {
    pub job: JobId,
    pub kind: JobKind,
    pub body: EventBody,
}

#[derive(Clone)]
pub enum EventBody {
    Started {
        total_steps: usize,
    },
    Progress {
        step: usize,
        total_steps: usize,
        /// The optimisation's losses (none for the network).
        losses: Option<Losses>,
        elapsed: Duration,
    },
    /// A preview image is waiting in the engine's slot for this lane
    /// ([`super::Engine::take_preview`]): only the newest is kept, so a slow UI never queues
    /// images.
    Preview {
        step: usize,
        /// Where the job wrote it, if it did (training keeps its previews in the style folder).
        saved: Option<PathBuf>,
    },
    /// A training job checked its inputs; it continues after `first_iteration` iterations (more
    /// than 0 when resuming).
    TrainingStarted {
        first_iteration: u64,
        iterations: u64,
        photos: usize,
    },
    Training(TrainProgress),
    Checkpoint {
        iteration: u64,
        path: PathBuf,
    },
    Finished(Box<JobOutput>),
    Trained(Box<TrainedStyle>),
    /// A decoder training's progress; `Finished` and `Stopped` end the job.
    Decoder(DecoderEvent),
    Failed(Failure),
    Cancelled,
    /// A training job stopped on request after `iteration`, its checkpoint saved: resume from it.
    Stopped {
        iteration: u64,
        checkpoint: PathBuf,
    },
}

impl Event {
    /// Whether this is the last event of its job.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.body,
            EventBody::Finished(_)
                | EventBody::Trained(_)
                | EventBody::Failed(_)
                | EventBody::Cancelled
                | EventBody::Stopped { .. }
                | EventBody::Decoder(DecoderEvent::Finished(_))
                | EventBody::Decoder(DecoderEvent::Stopped { .. })
        )
    }
}

/// A finished preview or render: its images and numbers.
#[derive(Clone)]
pub struct JobOutput {
    /// The result blended with the photo at the job's strength.
    pub image: Arc<RgbImage>,
    /// The full-strength result, so a strength change needs no recompute.
    pub stylized: Arc<RgbImage>,
    /// The photo at the result's size (the other end of the strength blend).
    pub content: Arc<RgbImage>,
    pub stats: JobStats,
}

#[derive(Clone, Debug, Serialize)]
pub struct JobStats {
    pub method: &'static str,
    pub width: u32,
    pub height: u32,
    pub steps: usize,
    pub evaluations: usize,
    pub seconds: f64,
    pub losses: Option<Losses>,
    pub initial_style_loss: Option<f64>,
    /// How a photo too large for one piece was tiled (network methods); `None`: one piece.
    pub tiling: Option<TileReport>,
    /// What the user should know about the job's input (masks stretched to fit, empty or
    /// all-white masks), one sentence each.
    pub notes: Vec<String>,
    /// A video job's figures.
    pub video: Option<VideoReport>,
}

/// What a video job did.
#[derive(Clone, Debug, Serialize)]
pub struct VideoReport {
    pub frames: usize,
    /// The clip's (and the output's) frame rate.
    pub frame_rate: f64,
    /// Frames stylised per second of wall time (flow and writing included).
    pub frames_per_second: f64,
    /// Mean |out_t − warp(out_{t−1})| over the pixels where the input's flow is reliable (0..1),
    /// of the result and of the frames as the method painted them alone; `None` for a single
    /// frame or a job that did not measure flicker (`VideoJob::measure_flicker`).
    pub warping_error: Option<f64>,
    pub per_frame_warping_error: Option<f64>,
    /// Cuts detected (the previous result was not carried over them).
    pub scene_cuts: usize,
    /// The input's audio was copied.
    pub audio: bool,
    pub temporal_weight: f32,
    /// Where the wall time went, summed over the frames.
    pub stages: VideoStages,
}

/// Seconds of a video job spent in each stage, summed over its frames.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VideoStages {
    /// Reading the next frame (waiting for ffmpeg or the image decoder) and scaling it.
    pub decode: f64,
    /// The method's pass (or optimisation) on the frame.
    pub stylize: f64,
    /// Optical flow between input frames, both ways, and its reliability.
    pub flow: f64,
    /// Warping the previous result, the blend and the report's warping errors.
    pub blend: f64,
    /// Writing the frame (the pipe to ffmpeg, or a PNG) and the work folder.
    pub encode: f64,
}

/// A finished training job.
#[derive(Clone, Debug)]
pub struct TrainedStyle {
    pub iteration: u64,
    pub style: ExportedStyle,
    /// Mean wall time of the iterations this job ran.
    pub seconds_per_iteration: f64,
}

/// The newest preview image of a lane.
#[derive(Clone)]
pub struct PreviewFrame {
    pub job: JobId,
    pub step: usize,
    pub image: Arc<RgbImage>,
}
