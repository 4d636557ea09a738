//! `atelier stylize`: one photo, one or more styles, one output file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use atelier::engine::{Engine, Event, Job, Method};
use atelier::imaging::{self, OutputFormat};
use atelier::nn::hub;
use atelier::stylize::gatys::{GatysConfig, Init, StyleImage};
use atelier::stylize::optim::OptimizerKind;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// Gatys optimisation with VGG (any style image; slower).
    Optimize,
    /// A trained feed-forward network (instant; `--style` is a model file or style folder).
    Network,
}

#[derive(Args)]
pub struct StylizeArgs {
    /// The photo to stylise.
    pub content: PathBuf,
    /// Style image (optimize) or model file / style folder (network); repeat to blend styles.
    #[arg(long = "style", required = true)]
    pub styles: Vec<PathBuf>,
    /// Blend weights for several styles, e.g. 0.7,0.3 (default: equal).
    #[arg(long, value_delimiter = ',')]
    pub blend: Vec<f64>,
    #[arg(long, value_enum, default_value_t = MethodArg::Optimize)]
    pub method: MethodArg,
    /// VGG weights (.safetensors or .pth); default $ATELIER_VGG, then the user cache.
    #[arg(long)]
    pub vgg: Option<PathBuf>,
    /// Longer side of the result in pixels (optimize default 512; network default: the photo's size).
    #[arg(long)]
    pub size: Option<u32>,
    /// Optimisation steps at each scale.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Weight of keeping the photo's structure (α).
    #[arg(long, allow_negative_numbers = true, default_value_t = GatysConfig::default().content_weight)]
    pub content_weight: f64,
    /// Weight of matching the style (β).
    #[arg(long, allow_negative_numbers = true, default_value_t = GatysConfig::default().style_weight)]
    pub style_weight: f64,
    /// Weight of the smoothness (total variation) term.
    #[arg(long, allow_negative_numbers = true, default_value_t = GatysConfig::default().tv_weight)]
    pub tv_weight: f64,
    /// Content layers, comma-separated (default relu4_2).
    #[arg(long, value_delimiter = ',')]
    pub content_layers: Vec<String>,
    /// Style layers with optional weights, e.g. relu1_2:1,relu2_2:0.5 (default relu1_2,relu2_2,relu3_3,relu4_3).
    #[arg(long, value_delimiter = ',')]
    pub style_layers: Vec<String>,
    /// Blend of result and photo: 0 keeps the photo, 1 is the full style.
    #[arg(long, default_value_t = 1.0)]
    pub strength: f32,
    /// Keep the photo's colours (luminance-only transfer).
    #[arg(long)]
    pub preserve_color: bool,
    #[arg(long, value_enum, default_value_t = OptimizerArg::Lbfgs)]
    pub optimizer: OptimizerArg,
    /// Learning rate (Adam: pixels per step; L-BFGS: step scale).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Start from the photo or from seeded noise.
    #[arg(long, value_enum, default_value_t = InitArg::Content)]
    pub init: InitArg,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Coarse-to-fine scales (0: automatic, one per doubling above 512 px).
    #[arg(long, default_value_t = 0)]
    pub scales: usize,
    /// Style image size relative to the result.
    #[arg(long, default_value_t = 1.0)]
    pub style_scale: f64,
    /// Write a preview every N steps into --preview-dir.
    #[arg(long, default_value_t = 0)]
    pub preview_every: usize,
    #[arg(long)]
    pub preview_dir: Option<PathBuf>,
    /// JPEG quality for .jpg outputs.
    #[arg(long, default_value_t = 92)]
    pub quality: u8,
    /// Print one JSON object with the result's numbers on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Output image (.png or .jpg); never one of the inputs.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    Lbfgs,
    Adam,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InitArg {
    Content,
    Noise,
}

/// A trained model: the file itself, or the model a style folder's `style.toml` names (else its
/// `model.safetensors` or `model.pth`).
fn resolve_model(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if path.is_dir() {
        return Ok(atelier::styles::model_in_folder(path)?);
    }
    bail!("model {} not found", path.display())
}

fn parse_style_layers(specs: &[String]) -> anyhow::Result<Vec<(String, f64)>> {
    specs
        .iter()
        .map(|spec| match spec.split_once(':') {
            Some((name, weight)) => {
                let w: f64 = weight
                    .parse()
                    .with_context(|| format!("bad layer weight in `{spec}`"))?;
                Ok((name.to_string(), w))
            }
            None => Ok((spec.clone(), 1.0)),
        })
        .collect()
}

/// Fails now, not after minutes of work, when the output cannot be written.
fn check_output(args: &StylizeArgs) -> anyhow::Result<OutputFormat> {
    let format = OutputFormat::from_path(&args.output, args.quality)?;
    let mut inputs: Vec<&Path> = vec![&args.content];
    inputs.extend(args.styles.iter().map(PathBuf::as_path));
    imaging::ensure_not_an_input(&args.output, &inputs)?;
    let dir = match args.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!(
            "cannot write {}: folder {} does not exist",
            args.output.display(),
            dir.display()
        );
    }
    tempfile::tempfile_in(&dir).with_context(|| {
        format!(
            "cannot write {}: folder is not writable",
            args.output.display()
        )
    })?;
    Ok(format)
}

pub fn run(args: StylizeArgs) -> anyhow::Result<()> {
    let format = check_output(&args)?;
    if !(0.0..=1.0).contains(&args.strength) {
        bail!("--strength must be between 0 and 1, got {}", args.strength);
    }
    if let Some(0) = args.size {
        bail!("--size must be at least 16 pixels");
    }
    if let Some(dir) = &args.preview_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create preview folder {}", dir.display()))?;
    }
    let content = Arc::new(imaging::load_rgb(&args.content)?);
    let original_size = content.dimensions();

    let method = match args.method {
        MethodArg::Network => {
            if args.styles.len() != 1 {
                bail!("--method network takes exactly one --style (a model file or style folder)");
            }
            Method::Network {
                model: resolve_model(&args.styles[0])?,
                size: args.size,
                preserve_color: args.preserve_color,
            }
        }
        MethodArg::Optimize => {
            let vgg = hub::resolve_vgg(args.vgg.as_deref())?;
            let blend = if args.blend.is_empty() {
                vec![1.0; args.styles.len()]
            } else if args.blend.len() == args.styles.len() {
                args.blend.clone()
            } else {
                bail!(
                    "--blend has {} weights for {} styles",
                    args.blend.len(),
                    args.styles.len()
                );
            };
            let styles = args
                .styles
                .iter()
                .zip(blend)
                .map(|(path, weight)| {
                    Ok(StyleImage {
                        image: Arc::new(imaging::load_rgb(path)?),
                        weight,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let defaults = GatysConfig::default();
            let config = GatysConfig {
                size: args.size.unwrap_or(defaults.size),
                steps: args.steps,
                content_weight: args.content_weight,
                style_weight: args.style_weight,
                tv_weight: args.tv_weight,
                content_layers: if args.content_layers.is_empty() {
                    defaults.content_layers.clone()
                } else {
                    args.content_layers.clone()
                },
                style_layers: if args.style_layers.is_empty() {
                    defaults.style_layers.clone()
                } else {
                    parse_style_layers(&args.style_layers)?
                },
                preserve_color: args.preserve_color,
                init: match args.init {
                    InitArg::Content => Init::Content,
                    InitArg::Noise => Init::Noise,
                },
                seed: args.seed,
                optimizer: match args.optimizer {
                    OptimizerArg::Lbfgs => OptimizerKind::Lbfgs,
                    OptimizerArg::Adam => OptimizerKind::Adam,
                },
                learning_rate: args.lr,
                scales: args.scales,
                preview_every: if args.preview_dir.is_some() && args.preview_every == 0 {
                    10
                } else {
                    args.preview_every
                },
                style_scale: args.style_scale,
            };
            config.validate()?;
            Method::Optimize {
                vgg,
                styles,
                config,
            }
        }
    };

    let engine = Engine::new(atelier::engine::best_device());
    let job_id = engine.submit(Job {
        content,
        method,
        strength: args.strength,
    });
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };

    for event in engine.events().iter() {
        if event.job() != job_id {
            continue;
        }
        match event {
            Event::Started { total_steps, .. } => bar.set_length(total_steps as u64),
            Event::Progress { step, losses, .. } => {
                bar.set_position(step as u64);
                if losses.total > 0.0 {
                    bar.set_message(format!(
                        "content {:.3} style {:.3} tv {:.3}",
                        losses.content, losses.style, losses.tv
                    ));
                }
            }
            Event::Preview { step, image, .. } => {
                if let Some(dir) = &args.preview_dir {
                    let path = dir.join(format!("preview-{step:05}.png"));
                    imaging::save_atomic(&image, &path, OutputFormat::Png)?;
                }
            }
            Event::Finished { output, .. } => {
                bar.finish_and_clear();
                let longer = |w: u32, h: u32| w.max(h);
                if args.size.is_none()
                    && longer(output.stats.width, output.stats.height)
                        < longer(original_size.0, original_size.1)
                {
                    eprintln!(
                        "note: the {}x{} photo was downscaled to {}x{} to fit in memory (choose with --size)",
                        original_size.0, original_size.1, output.stats.width, output.stats.height
                    );
                }
                imaging::save_atomic(&output.image, &args.output, format)?;
                if args.json {
                    print_json(&output.stats, &args.output)?;
                } else if !args.quiet {
                    eprintln!(
                        "wrote {} ({}x{}, {:.1} s)",
                        args.output.display(),
                        output.stats.width,
                        output.stats.height,
                        output.stats.seconds
                    );
                }
                return Ok(());
            }
            Event::Failed { message, .. } => {
                bar.abandon();
                bail!("{message}");
            }
            Event::Cancelled { .. } => {
                bar.abandon();
                bail!("cancelled");
            }
        }
    }
    bail!("the engine stopped unexpectedly")
}

fn print_json(stats: &atelier::engine::JobStats, output: &Path) -> anyhow::Result<()> {
    let losses = stats.losses.unwrap_or_default();
    let value = serde_json::json!({
        "method": stats.method,
        "width": stats.width,
        "height": stats.height,
        "steps": stats.steps,
        "evaluations": stats.evaluations,
        "seconds": stats.seconds,
        "content_loss": stats.losses.map(|_| losses.content),
        "style_loss": stats.losses.map(|_| losses.style),
        "tv_loss": stats.losses.map(|_| losses.tv),
        "total_loss": stats.losses.map(|_| losses.total),
        "initial_style_loss": stats.initial_style_loss,
        "output": output.display().to_string(),
    });
    println!("{value}");
    Ok(())
}
