//! `atelier train`: trains a feed-forward style from a painting (or a folder of works) on a
//! folder of photos and writes a gallery style folder. Runs as a training job of the engine, as
//! the app's New style panel does.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use atelier::engine::{self, Engine, EventBody, JobKind, StyleCredits, TrainConfig, TrainRecipe};
use clap::Args;

use super::training_progress::TrainingProgress;

#[derive(Args)]
pub struct TrainArgs {
    /// A style image, or a folder of works to learn a personal style from.
    #[arg(long = "style", required = true)]
    pub styles: Vec<PathBuf>,
    /// Folder of training photos (random crops are taken from them).
    #[arg(long)]
    pub data: PathBuf,
    /// The style folder to write (model.safetensors, style.toml, thumb.jpg, previews/).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Side of the square photo crops, in pixels.
    #[arg(long, default_value_t = TrainRecipe::default().size)]
    pub size: u32,
    /// Longer side the style works are seen at (smaller: bigger brush strokes).
    #[arg(long, default_value_t = TrainRecipe::default().style_size)]
    pub style_size: u32,
    /// Photos per iteration.
    #[arg(long, default_value_t = TrainRecipe::default().batch)]
    pub batch: usize,
    /// Iterations in total (a resumed run counts the earlier ones).
    #[arg(long, default_value_t = 2000)]
    pub iterations: u64,
    /// Base width of the network (channels of its first layer; pytorch's models use 32).
    #[arg(long, default_value_t = TrainRecipe::default().width)]
    pub width: usize,
    #[arg(long, allow_negative_numbers = true, default_value_t = TrainRecipe::default().content_weight)]
    pub content_weight: f64,
    #[arg(long, allow_negative_numbers = true, default_value_t = TrainRecipe::default().style_weight)]
    pub style_weight: f64,
    #[arg(long, allow_negative_numbers = true, default_value_t = TrainRecipe::default().tv_weight)]
    pub tv_weight: f64,
    /// Weight of a patch discriminator trained on the style works (0: none).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub adversarial: f64,
    /// Adam learning rate.
    #[arg(long, default_value_t = TrainRecipe::default().learning_rate)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Content layer of the VGG loss network (relu2_2 keeps detail; relu3_3 paints more freely).
    #[arg(long, default_value_t = TrainRecipe::default().content_layer)]
    pub content_layer: String,
    /// Style layers, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub style_layers: Vec<String>,
    /// VGG weights (.safetensors or .pth); default $ATELIER_VGG, then the user cache.
    #[arg(long)]
    pub vgg: Option<PathBuf>,
    /// Continue the checkpoint in the output folder (same settings).
    #[arg(long)]
    pub resume: bool,
    /// Save a preview (previews/iter-N.png) every N iterations (0: never).
    #[arg(long, default_value_t = 100)]
    pub preview_every: u64,
    /// Save a checkpoint every N iterations (0: only at the end).
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    /// Name shown in the gallery (default: the output folder's name).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub artist: Option<String>,
    #[arg(long)]
    pub title: Option<String>,
    #[arg(long)]
    pub year: Option<String>,
    /// The style work's licence, e.g. "public domain".
    #[arg(long)]
    pub licence: Option<String>,
    /// A further credit line for style.toml (repeatable).
    #[arg(long = "credit")]
    pub credits: Vec<String>,
    /// One network for all the --style entries (conditional instance norm): each is its own
    /// style, picked or blended at run time with `stylize --mix`.
    #[arg(long)]
    pub conditional: bool,
    /// A group of a conditional network's styles, e.g. ukiyo-e=great-wave,red-fuji (names are
    /// the --style files' stems); repeatable. The gallery lists each group as one style.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// The photo the thumbnail is painted from (default: the first training photo).
    #[arg(long)]
    pub thumbnail_photo: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// An absolute form of `path` (so a checkpoint resumes from any working directory); a path
/// that does not exist is kept as given and reported by the trainer.
fn absolute(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// The canonical form of `path`, which may not exist yet: its deepest existing ancestor
/// canonicalised, the rest appended.
fn canonical_maybe_missing(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut missing = Vec::new();
    let mut existing = path.as_path();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            let mut out = canonical;
            for part in missing.iter().rev() {
                match part {
                    std::path::Component::ParentDir => {
                        out.pop();
                    }
                    std::path::Component::CurDir => {}
                    other => out.push(other),
                }
            }
            return out;
        }
        let Some(parent) = existing.parent() else {
            return path.clone();
        };
        if let Some(last) = existing.components().next_back() {
            missing.push(last);
        }
        existing = parent;
    }
}

/// Refuses an output folder inside the photo folder: the style's files (thumbnail, previews)
/// would be read as training photos by the next run, and a folder listing would include them.
fn check_output_outside_data(output: &Path, data: &Path) -> anyhow::Result<()> {
    let Ok(data_dir) = data.canonicalize() else {
        return Ok(()); // A missing photo folder is reported by the trainer.
    };
    let out = canonical_maybe_missing(output);
    if out.starts_with(&data_dir) {
        bail!(
            "the output folder {} is inside the photo folder {} (--data): its previews and \
             thumbnail would become training photos; choose an output outside it",
            output.display(),
            data.display()
        );
    }
    Ok(())
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    check_output_outside_data(&args.output, &args.data)?;
    let vgg = engine::resolve_vgg(args.vgg.as_deref())?;
    let defaults = TrainRecipe::default();
    let recipe = TrainRecipe {
        style: args.styles.iter().map(|p| absolute(p)).collect(),
        data: absolute(&args.data),
        vgg: absolute(&vgg),
        size: args.size,
        style_size: args.style_size,
        batch: args.batch,
        width: args.width,
        content_weight: args.content_weight,
        style_weight: args.style_weight,
        tv_weight: args.tv_weight,
        adversarial_weight: args.adversarial,
        learning_rate: args.lr,
        seed: args.seed,
        content_layer: args.content_layer.clone(),
        style_layers: if args.style_layers.is_empty() {
            defaults.style_layers
        } else {
            args.style_layers.clone()
        },
        conditional: args.conditional,
    };
    let mut config = TrainConfig::new(recipe, &args.output, args.iterations);
    config.preview_every = args.preview_every;
    config.checkpoint_every = args.checkpoint_every;
    config.resume = args.resume;
    config.credits = StyleCredits {
        name: args.name.clone(),
        artist: args.artist.clone(),
        title: args.title.clone(),
        year: args.year.clone(),
        licence: args.licence.clone(),
        extra: args.credits.clone(),
    };
    config.thumbnail_photo = args.thumbnail_photo.clone();
    config.groups = args
        .groups
        .iter()
        .map(|spec| {
            let Some((name, members)) = spec.split_once('=') else {
                bail!("--group {spec}: write it as NAME=style,style");
            };
            Ok(engine::StyleGroup {
                name: name.trim().to_string(),
                members: members
                    .split(',')
                    .map(|m| m.trim().to_string())
                    .filter(|m| !m.is_empty())
                    .collect(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    config.validate()?;

    let engine =
        std::sync::Arc::new(Engine::new(engine::best_device()).context("cannot start training")?);
    let job = engine.train(config).context("cannot start training")?;
    // Ctrl+C or SIGTERM stops after the current iteration with a checkpoint.
    super::training_progress::stop_on_signal(&engine, job);
    let progress = TrainingProgress::new(args.iterations, args.quiet);
    for event in engine.events().iter() {
        if event.job != job {
            continue;
        }
        match event.body {
            EventBody::TrainingStarted {
                first_iteration,
                photos,
                ..
            } => progress.started(first_iteration, photos),
            EventBody::Training(p) => {
                let l = p.losses;
                let mut message = format!(
                    "loss {:.3} (content {:.3} style {:.3} tv {:.3}",
                    l.total, l.content, l.style, l.tv
                );
                if args.adversarial > 0.0 {
                    message += &format!(" adv {:.3} disc {:.3}", l.adversarial, l.discriminator);
                }
                message += &format!(") {:.2} img/s", p.images_per_second);
                progress.step(p.iteration, p.iterations, message);
            }
            EventBody::Preview { saved, step } => {
                // The image itself waits in the engine's slot; the CLI only names the file.
                let _ = engine.take_preview(JobKind::Training);
                match saved {
                    Some(path) => progress.say(format!("preview {}", path.display())),
                    None => progress.say(format!("preview at iteration {step}")),
                }
            }
            EventBody::Stopped {
                checkpoint,
                iteration,
            } => {
                progress.abandon();
                super::interrupt::clear_hook();
                if super::interrupt::interrupted() {
                    return Err(super::interrupt::Interrupted(format!(
                        "interrupted after iteration {iteration}: checkpoint saved in {}; run the \
                         same command with --resume to continue",
                        checkpoint.display()
                    ))
                    .into());
                }
                bail!(
                    "training stopped; resume with --resume (checkpoint {})",
                    checkpoint.display()
                );
            }
            EventBody::Trained(trained) => {
                progress.finish();
                if !args.quiet {
                    eprintln!(
                        "wrote {} after {} iterations ({:.2} s per iteration)",
                        trained.style.folder.display(),
                        trained.iteration,
                        trained.seconds_per_iteration
                    );
                }
                super::interrupt::clear_hook();
                return Ok(());
            }
            EventBody::Failed(failure) => {
                progress.abandon();
                bail!("{failure}");
            }
            EventBody::Cancelled => {
                progress.abandon();
                bail!("training cancelled");
            }
            _ => {}
        }
    }
    bail!("the training thread stopped unexpectedly")
}
