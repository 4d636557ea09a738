//! `atelier train-decoder`: trains a decoder that inverts the VGG16 encoder at one layer, for the
//! `arbitrary` method (any painting, one pass). Runs as a training job of the engine.

use std::path::PathBuf;

use anyhow::{bail, Context};
use atelier::engine::{self, DecoderEvent, DecoderRecipe, DecoderTrainConfig, Engine, EventBody};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

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

const LOG_EVERY: u64 = 10;

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
    let stoppable = std::sync::Arc::downgrade(&engine);
    super::interrupt::set_hook(move || {
        if let Some(engine) = stoppable.upgrade() {
            engine.cancel(job);
        }
    });
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(args.iterations);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} it (eta {eta}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    let say = |line: String| match (args.quiet, bar.is_hidden()) {
        (true, _) => {}
        (false, true) => eprintln!("{line}"),
        (false, false) => bar.println(line),
    };
    for event in engine.events().iter() {
        if event.job != job {
            continue;
        }
        match event.body {
            EventBody::Decoder(DecoderEvent::Started {
                first_iteration,
                photos,
            }) => {
                bar.set_position(first_iteration);
                bar.reset_eta();
                if first_iteration > 0 {
                    say(format!("resuming after iteration {first_iteration}"));
                }
                bar.set_message(format!("{photos} photos"));
            }
            EventBody::Decoder(DecoderEvent::Progress(step)) => {
                bar.set_position(step.iteration);
                let l = step.losses;
                let message = format!(
                    "loss {:.5} (pixel {:.5} feature {:.5}) {:.2} s/it",
                    l.total, l.pixel, l.feature, step.seconds
                );
                if bar.is_hidden() && step.iteration.is_multiple_of(LOG_EVERY) {
                    say(format!(
                        "iteration {}/{}: {message}",
                        step.iteration, args.iterations
                    ));
                }
                bar.set_message(message);
            }
            EventBody::Decoder(DecoderEvent::Preview { path, .. }) => {
                say(format!("preview {}", path.display()));
            }
            EventBody::Decoder(DecoderEvent::Checkpoint { .. }) => {}
            EventBody::Decoder(DecoderEvent::Stopped {
                iteration,
                checkpoint,
            }) => {
                bar.abandon();
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
                bar.finish_and_clear();
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
                bar.abandon();
                bail!("{failure}");
            }
            EventBody::Cancelled => {
                bar.abandon();
                bail!("decoder training cancelled");
            }
            _ => {}
        }
    }
    bail!("the training thread stopped unexpectedly")
}
