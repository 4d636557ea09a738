//! `atelier score`: the Gatys losses of finished images (from any method) against a photo and a
//! style, so results of different methods can be compared on one scale.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use atelier::imaging;
use atelier::nn::hub;
use atelier::nn::vgg::Vgg;
use atelier::stylize::cache::FeatureCache;
use atelier::stylize::gatys::{GatysConfig, StyleImage, StyleProblem};
use clap::Args;

#[derive(Args)]
pub struct ScoreArgs {
    /// Stylised images to score (each is resized to the photo's size at --size).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// The photo the images were made from (the content loss's target).
    #[arg(long)]
    pub photo: PathBuf,
    /// The style image (the style loss's target).
    #[arg(long)]
    pub style: PathBuf,
    /// Longer side the losses are computed at (the style image is seen at the same size, as
    /// `atelier stylize` does).
    #[arg(long, default_value_t = 512)]
    pub size: u32,
    /// VGG weights (.safetensors or .pth); default $ATELIER_VGG, then the user cache.
    #[arg(long)]
    pub vgg: Option<PathBuf>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Smallest longer side `--size` accepts, as `atelier stylize` does.
const MIN_SIZE: u32 = 16;
/// Smallest side of the photo at `--size`: the default layers (relu4_x) come after three 2×2
/// poolings.
const MIN_SIDE: u32 = 8;

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    if args.size < MIN_SIZE {
        return Err(atelier::error::Error::invalid(format!(
            "--size must be at least {MIN_SIZE} pixels, got {}",
            args.size
        ))
        .into());
    }
    // The inputs are checked before the VGG network is loaded (seconds, and maybe missing).
    let photo = imaging::resize_longer_side(&imaging::load_rgb(&args.photo)?, args.size);
    let (width, height) = photo.dimensions();
    if width.min(height) < MIN_SIDE {
        anyhow::bail!(
            "photo {} is {width}x{height} pixels (width x height) at --size {}: too narrow to \
             score, each side needs at least {MIN_SIDE} pixels",
            args.photo.display(),
            args.size
        );
    }
    let style = StyleImage {
        image: Arc::new(imaging::load_rgb(&args.style)?),
        weight: 1.0,
    };
    let device = atelier::engine::best_device();
    let vgg = Vgg::load(&hub::resolve_vgg(args.vgg.as_deref())?, &device)?;
    // The default weights and layers of `atelier stylize`: the losses it minimises.
    let config = GatysConfig {
        size: args.size,
        ..GatysConfig::default()
    };
    let mut cache = FeatureCache::default();
    let problem = StyleProblem::new(&vgg, &photo, &[style], &config, &mut cache, &device)?;
    // Written, not println!: a closed pipe (`| head`) is an error to report, not a panic.
    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(
            out,
            "| image | content | style | tv |\n|---|---:|---:|---:|"
        )?;
    }
    for path in &args.images {
        let image = imaging::load_rgb(path)?;
        let image = imaging::resize_exact(&image, photo.width(), photo.height());
        let (losses, _) = problem
            .evaluate(&imaging::to_tensor(&image, &device)?, false)
            .with_context(|| format!("cannot score {}", path.display()))?;
        if args.json {
            let row = serde_json::json!({
                "image": path,
                "content_loss": losses.content,
                "style_loss": losses.style,
                "tv_loss": losses.tv,
            });
            writeln!(out, "{row}")?;
        } else {
            writeln!(
                out,
                "| {} | {:.4} | {:.4} | {:.4} |",
                path.display(),
                losses.content,
                losses.style,
                losses.tv
            )?;
        }
    }
    Ok(())
}
