//! What the engine reports back, in order: `Started`, then `Progress`/`Preview` as work goes
//! on, then exactly one of `Finished`, `Failed` or `Cancelled`.

use std::sync::Arc;
use std::time::Duration;

use image::RgbImage;
use serde::Serialize;

use super::job::JobId;
use crate::stylize::gatys::Losses;

#[derive(Clone)]
pub enum Event {
    Started {
        job: JobId,
        total_steps: usize,
    },
    Progress {
        job: JobId,
        step: usize,
        total_steps: usize,
        losses: Losses,
        elapsed: Duration,
    },
    Preview {
        job: JobId,
        step: usize,
        image: Arc<RgbImage>,
    },
    Finished {
        job: JobId,
        output: JobOutput,
    },
    Failed {
        job: JobId,
        message: String,
    },
    Cancelled {
        job: JobId,
    },
}

impl Event {
    pub fn job(&self) -> JobId {
        match self {
            Event::Started { job, .. }
            | Event::Progress { job, .. }
            | Event::Preview { job, .. }
            | Event::Finished { job, .. }
            | Event::Failed { job, .. }
            | Event::Cancelled { job } => *job,
        }
    }

    /// Whether this is the last event of its job.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Event::Finished { .. } | Event::Failed { .. } | Event::Cancelled { .. }
        )
    }
}

/// A finished job's images and numbers.
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
}
