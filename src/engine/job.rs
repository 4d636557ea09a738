//! What the engine is asked to do.

use std::path::PathBuf;
use std::sync::Arc;

use image::RgbImage;

pub use crate::stylize::arbitrary::FeatureTransform;
use crate::stylize::gatys::{GatysConfig, StyleImage};

/// Identifies a submitted job; later jobs have larger ids.
pub type JobId = u64;

/// The lane a job runs in, which decides how it is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Interactive previews: latest wins (a new preview cancels the one before it). A waiting
    /// preview runs before waiting renders: it is what the user is looking at.
    Preview,
    /// Full renders (Save, batches): queued in order, each finished, failed or cancelled on its
    /// own, by id.
    Render,
    /// Training a style: runs beside the other lanes on its own thread, with the engine's VGG.
    Training,
}

impl JobKind {
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Preview => "preview",
            JobKind::Render => "render",
            JobKind::Training => "training",
        }
    }
}

/// How to stylise.
#[derive(Clone)]
pub enum Method {
    /// Gatys optimisation against the VGG network at `vgg`.
    Optimize {
        vgg: PathBuf,
        styles: Vec<StyleImage>,
        config: GatysConfig,
    },
    /// One pass of a trained feed-forward network. `size` is the longer side to run at
    /// (`None`: the photo's own size, capped for memory); `preserve_color` keeps the photo's
    /// chrominance and takes only the network's luminance.
    Network {
        model: PathBuf,
        size: Option<u32>,
        preserve_color: bool,
        /// For a conditional network: one weight per style (normalised by the engine; a
        /// one-hot mix paints one style). `None`: a one-style network, or the even blend.
        mix: Option<Vec<f64>>,
        /// Stroke scale: the network runs on the photo scaled by 1/`stroke` and its result is
        /// scaled back, so 2 paints strokes twice as large
        /// ([`crate::stylize::network::STROKE_RANGE`]; 1: as trained).
        stroke: f64,
    },
    /// Any painting in one pass (universal style transfer): the VGG16 at `vgg` encodes, a
    /// feature transform gives the photo's features the styles' statistics, trained decoders
    /// paint. The job's `strength` blends in feature space here (not a pixel fade).
    Arbitrary {
        vgg: PathBuf,
        /// A folder of decoders (`*.safetensors`, or `*/decoder.safetensors`); `None`: the ones
        /// built into the program.
        decoders: Option<PathBuf>,
        styles: Vec<ArbitraryStyle>,
        transform: FeatureTransform,
        /// Longer side of the result (`None`: the photo's size, capped for memory).
        size: Option<u32>,
        /// Longer side the paintings are encoded at (their strokes' scale).
        style_side: u32,
        preserve_color: bool,
    },
}

/// One style of an arbitrary stylisation: a painting, or a collection of works whose
/// statistics are pooled, with its blend weight.
#[derive(Clone)]
pub struct ArbitraryStyle {
    pub works: Vec<Arc<RgbImage>>,
    pub weight: f64,
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::Optimize { .. } => "optimize",
            Method::Network { .. } => "network",
            Method::Arbitrary { .. } => "arbitrary",
        }
    }
}

/// A stylisation request (for the preview and render lanes).
#[derive(Clone)]
pub struct Job {
    pub content: Arc<RgbImage>,
    pub method: Method,
    /// 0 keeps the photo, 1 is the full stylisation; in between blends the two.
    pub strength: f32,
}
