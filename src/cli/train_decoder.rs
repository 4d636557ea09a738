//! `atelier train-decoder`: trains a decoder that inverts the VGG16 encoder at one layer, for the
//! `arbitrary` method (any painting, one pass). Runs as a training job of the engine.

use std::path::PathBuf;

use anyhow::{bail, Context};
use atelier::engine::{self, DecoderEvent, DecoderRecipe, DecoderTrainConfig, Engine, EventBody};
use clap::Args;

use super::training_progress::TrainingProgress;

#[derive(Args)]
pub struct TrainDecoderArgs {
    /// Folder of training photos (random crops are taken from them).
    #[arg(long)]
    pub data: PathBuf,
    /// The VGG16 layer to invert: relu1_1, relu2_1, relu3_1 or relu4_1 (any reluN_M works).
    #[arg(long, default_value = "relu4_1")]
    pub layer: String,
    /// The folder to write (decoder.safetensors, training.json, checkpoint, previews/).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Channels of the block-1 layers (the VGG has 64; 32 costs about a quarter).
    #[arg(long, default_value_t = DecoderRecipe::new("", "relu4_1").width)]
    pub width: usize,
    /// Side of the square photo crops.
    #[arg(long, default_value_t = DecoderRecipe::new("", "relu4_1").size)]
    pub size: u32,
    #[arg(long, default_value_t = DecoderRecipe::new("", "relu4_1").batch)]
    pub batch: usize,
    #[arg(long, default_value_t = 2000)]
    pub iterations: u64,
    /// Adam learning rate.
    #[arg(long, default_value_t = DecoderRecipe::new("", "relu4_1").learning_rate)]
    pub lr: f64,
    /// Weight of the feature reconstruction loss against the pixel loss.
    #[arg(long, default_value_t = DecoderRecipe::new("", "relu4_1").feature_weight)]
    pub feature_weight: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Photos no training uses: previews and the held-out PSNR in training.json.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// VGG16 weights (default: the bundled VGG16).
    #[arg(long)]
    pub vgg: Option<PathBuf>,
    /// Continue the checkpoint in the output folder (same settings).
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value_t = 100)]
    pub preview_every: u64,
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: TrainDecoderArgs) -> anyhow::Result<()> {
    let vgg = engine::resolve_vgg(args.vgg.as_deref())?;
    let absolute = |p: &PathBuf| p.canonicalize().unwrap_or_else(|_| p.clone());
    let recipe = DecoderRecipe {
        data: absolute(&args.data),
        layer: args.layer.clone(),
        width: args.width,
        size: args.size,
        batch: args.batch,
        learning_rate: args.lr,
        feature_weight: args.feature_weight,
        seed: args.seed,
    };
    recipe.validate()?;
    let config = DecoderTrainConfig {
        recipe,
        output: args.output.clone(),
        iterations: args.iterations,
        resume: args.resume,
        checkpoint_every: args.checkpoint_every,
        preview_every: args.preview_every,
        eval: args.eval.as_ref().map(absolute),
    };
    let engine = std::sync::Arc::new(
        Engine::new(engine::best_device()).context("cannot start the decoder training")?,
    );
    let job = engine
        .train_decoder(config, vgg)
        .context("cannot start the decoder training")?;
    super::training_progress::stop_on_signal(&engine, job);
    let progress = TrainingProgress::new(args.iterations, args.quiet);
    for event in engine.events().iter() {
        if event.job != job {
            continue;
        }
        match event.body {
            EventBody::Decoder(DecoderEvent::Started {
                first_iteration,
                photos,
            }) => progress.started(first_iteration, photos),
            EventBody::Decoder(DecoderEvent::Progress(step)) => {
                let l = step.losses;
                let message = format!(
                    "loss {:.5} (pixel {:.5} feature {:.5}) {:.2} s/it",
                    l.total, l.pixel, l.feature, step.seconds
                );
                progress.step(step.iteration, args.iterations, message);
            }
            EventBody::Decoder(DecoderEvent::Preview { path, .. }) => {
                progress.say(format!("preview {}", path.display()));
            }
            EventBody::Decoder(DecoderEvent::Checkpoint { .. }) => {}
            EventBody::Decoder(DecoderEvent::Stopped {
                iteration,
                checkpoint,
            }) => {
                progress.abandon();
                super::interrupt::clear_hook();
                let message = format!(
                    "stopped after iteration {iteration}: checkpoint saved in {}; run the same \
                     command with --resume to continue",
                    checkpoint.display()
                );
                if super::interrupt::interrupted() {
                    return Err(super::interrupt::Interrupted(message).into());
                }
                bail!(message);
            }
            EventBody::Decoder(DecoderEvent::Finished(report)) => {
                progress.finish();
                super::interrupt::clear_hook();
                if !args.quiet {
                    let psnr = report
                        .heldout_psnr_db
                        .map(|p| {
                            format!(
                                ", held-out PSNR {p:.2} dB on {} photos",
                                report.heldout_photos
                            )
                        })
                        .unwrap_or_default();
                    eprintln!(
                        "wrote {} after {} iterations ({:.0} s of training{psnr})",
                        args.output.join(engine::DECODER_FILE).display(),
                        report.iterations,
                        report.training_seconds
                    );
                }
                return Ok(());
            }
            EventBody::Failed(failure) => {
                progress.abandon();
                bail!("{failure}");
            }
            EventBody::Cancelled => {
                progress.abandon();
                bail!("decoder training cancelled");
            }
            _ => {}
        }
    }
    bail!("the training thread stopped unexpectedly")
}
