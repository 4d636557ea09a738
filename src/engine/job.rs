//! What the engine is asked to do.

use std::path::PathBuf;
use std::sync::Arc;

use image::RgbImage;

pub use crate::stylize::arbitrary::FeatureTransform;
use crate::stylize::gatys::{GatysConfig, StyleImage};
use crate::stylize::regions::Regions;

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
        /// The network to run: one, or one per region of the job's [`Job::regions`] (several
        /// styles of one conditional network paint their regions in one pass).
        styles: Vec<NetworkStyle>,
        size: Option<u32>,
        preserve_color: bool,
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

/// A trained network and, for a conditional one, the style mix it paints.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkStyle {
    pub model: PathBuf,
    /// For a conditional network: one weight per style (normalised by the engine; a one-hot
    /// mix paints one style). `None`: a one-style network, or the even blend.
    pub mix: Option<Vec<f64>>,
}

impl NetworkStyle {
    pub fn new(model: impl Into<PathBuf>, mix: Option<Vec<f64>>) -> Self {
        Self {
            model: model.into(),
            mix,
        }
    }
}

/// One style of an arbitrary stylisation: a painting, or a collection of works whose
/// statistics are pooled, with its blend weight.
#[derive(Clone)]
pub struct ArbitraryStyle {
    pub works: Vec<Arc<RgbImage>>,
    pub weight: f64,
}

impl Method {
    /// How many styles the method paints with: what [`Job::regions`] gives one mask each.
    pub fn style_count(&self) -> usize {
        match self {
            Method::Optimize { styles, .. } => styles.len(),
            Method::Network { styles, .. } => styles.len(),
            Method::Arbitrary { styles, .. } => styles.len(),
        }
    }

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
    /// Where each style paints (`None`: everywhere, blended by the method's weights).
    pub regions: Option<Regions>,
}

/// A clip to stylise frame by frame (render lane): frames from `input` (a video file through
/// ffmpeg, or a folder of images), each through `method`, the previous result carried along
/// the optical flow where it is reliable (`temporal`), written to `output` (a video file with
/// the input's audio, or a folder of PNG frames), which appears only when complete.
#[derive(Clone)]
pub struct VideoJob {
    pub input: PathBuf,
    pub output: PathBuf,
    /// The method for every frame; its `size` (network, arbitrary) or `config.size`
    /// (optimisation) sets the frames' size.
    pub method: Method,
    pub strength: f32,
    pub regions: Option<Regions>,
    /// How much of the previous result is carried into each frame where the flow is reliable
    /// (0: plain per-frame processing). `None`: the default.
    pub temporal: Option<f32>,
    /// Optimisation only: keep finished frames in a work folder beside the output so a stopped
    /// run resumes from the last finished frame.
    pub resumable: bool,
    /// Only the first this many frames (a look at a long clip); `None`: all.
    pub max_frames: Option<usize>,
    /// Measure the flicker for the report: the warping error of the result and of plain
    /// per-frame processing ([`super::VideoReport`]). Two extra warps per frame, about 8 % of a
    /// 640x360 network video's CPU time, so only when asked.
    pub measure_flicker: bool,
}
