//! Command-line interface on top of the engine. With no subcommand it opens the desktop app.

mod bench;
pub mod interrupt;
mod score;
mod stylize;
mod train;
mod train_decoder;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "atelier",
    version,
    about = "Neural style transfer for photos",
    long_about = "Neural style transfer for photos. Without a subcommand, opens the desktop app \
                  (optionally on PHOTO).",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// A photo to open in the desktop app.
    photo: Option<PathBuf>,
    /// VGG weights for the app's Optimise method (default: $ATELIER_VGG, then the user cache).
    #[arg(long)]
    vgg: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Stylise a photo with style images (optimisation) or a trained network.
    Stylize(Box<stylize::StylizeArgs>),
    /// Train a feed-forward style from a painting (or a folder of works) on a folder of photos.
    Train(Box<train::TrainArgs>),
    /// Train a decoder that inverts the VGG16 at one layer (for `--method arbitrary`).
    TrainDecoder(Box<train_decoder::TrainDecoderArgs>),
    /// Score finished images with the optimisation method's losses (to compare methods).
    Score(score::ScoreArgs),
    /// Measure the speed of the building blocks and print a table.
    Bench(bench::BenchArgs),
    /// Download the standard ImageNet VGG19 from the Hugging Face hub into the cache.
    FetchVgg {
        /// Hub endpoint (default: https://huggingface.co, or $HF_ENDPOINT).
        #[arg(long)]
        endpoint: Option<String>,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let Some(command) = cli.command else {
        return open_app(cli.photo, cli.vgg);
    };
    match command {
        Command::Stylize(args) => stylize::run(*args),
        Command::Train(args) => train::run(*args),
        Command::TrainDecoder(args) => train_decoder::run(*args),
        Command::Bench(args) => bench::run(args),
        Command::Score(args) => score::run(args),
        Command::FetchVgg { endpoint } => {
            let path = atelier::engine::download_vgg19(endpoint.as_deref(), true)?;
            println!("{}", path.display());
            Ok(())
        }
    }
}

#[cfg(feature = "gui")]
fn open_app(photo: Option<PathBuf>, vgg: Option<PathBuf>) -> anyhow::Result<()> {
    atelier::app::run(photo, vgg)
        .map_err(|e| anyhow::anyhow!("the desktop app could not start: {e}"))
}

#[cfg(not(feature = "gui"))]
fn open_app(_photo: Option<PathBuf>, _vgg: Option<PathBuf>) -> anyhow::Result<()> {
    anyhow::bail!(
        "this build has no desktop app (built without the `gui` feature); use a subcommand \
         such as `atelier stylize` (see `atelier --help`)"
    )
}
