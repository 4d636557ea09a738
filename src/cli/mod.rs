//! Command-line interface on top of the engine. With no subcommand it opens the desktop app.

mod bench;
pub mod interrupt;
mod regions;
mod score;
mod serve;
mod stylize;
mod train;
mod train_decoder;
mod training_progress;
mod video;

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
    /// Stylise a video (or a folder of frames) without flicker: atelier video IN -o OUT --style …
    Video(Box<video::VideoArgs>),
    /// Train a feed-forward style from a painting (or a folder of works) on a folder of photos.
    Train(Box<train::TrainArgs>),
    /// Train a decoder that inverts the VGG16 at one layer (for `--method arbitrary`).
    TrainDecoder(Box<train_decoder::TrainDecoderArgs>),
    /// Score finished images with the optimisation method's losses (to compare methods).
    Score(score::ScoreArgs),
    /// Serve a web page and an HTTP API on the engine (loopback only unless --public).
    Serve(Box<serve::ServeArgs>),
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
        Command::Video(args) => video::run(*args),
        Command::Train(args) => train::run(*args),
        Command::TrainDecoder(args) => train_decoder::run(*args),
        Command::Bench(args) => bench::run(args),
        Command::Score(args) => score::run(args),
        Command::Serve(args) => serve::run(*args),
        Command::FetchVgg { endpoint } => {
            let path = atelier::engine::download_vgg19(endpoint.as_deref(), true)?;
            println!("{}", path.display());
            Ok(())
        }
    }
}

#[cfg(feature = "gui")]
fn open_app(photo: Option<PathBuf>, vgg: Option<PathBuf>) -> anyhow::Result<()> {
    if !display_available() {
        anyhow::bail!(
            "the desktop app needs a graphical display and none is set (no DISPLAY or \
             WAYLAND_DISPLAY): start it in a desktop session, or use the command line, e.g. \
             `atelier stylize photo.jpg --method arbitrary --style painting.jpg -o out.png` \
             (see `atelier --help`)"
        );
    }
    atelier::app::run(photo, vgg).map_err(|e| {
        anyhow::anyhow!(
            "the desktop app could not start: {}",
            without_source_locations(&e.to_string())
        )
    })
}

/// Whether a windowing system is reachable: on Linux and the BSDs winit needs X11 (`DISPLAY`)
/// or Wayland (`WAYLAND_DISPLAY` / `WAYLAND_SOCKET`); elsewhere there always is one.
#[cfg(feature = "gui")]
fn display_available() -> bool {
    if cfg!(all(unix, not(target_os = "macos"))) {
        ["DISPLAY", "WAYLAND_DISPLAY", "WAYLAND_SOCKET"]
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
    } else {
        true
    }
}

#[cfg(feature = "gui")]
/// `text` without the ` at /path/to/dependency/src/file.rs:765:` locations that winit puts in
/// its errors: they name our build machine's files and mean nothing to a user.
fn without_source_locations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(" at /") {
        let after = &rest[start + 4..];
        let Some(rs) = after.find(".rs:") else {
            break;
        };
        let tail = &after[rs + 4..];
        let digits = tail.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 || after[..rs].contains(' ') {
            out.push_str(&rest[..start + 4]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..start]);
        rest = tail[digits..].strip_prefix(':').unwrap_or(&tail[digits..]);
    }
    out.push_str(rest);
    out
}

#[cfg(all(test, feature = "gui"))]
mod tests {
    #[test]
    fn source_locations_are_cut_from_messages() {
        let winit = "os error at /home/builder/.cargo/registry/src/winit-0.30.13/src/platform_impl/linux/mod.rs:765: \
                     neither WAYLAND_DISPLAY nor DISPLAY is set.";
        assert_eq!(
            super::without_source_locations(winit),
            "os error neither WAYLAND_DISPLAY nor DISPLAY is set."
        );
        let plain = "looked at /home/me/photo.jpg: not found";
        assert_eq!(super::without_source_locations(plain), plain);
    }
}

#[cfg(not(feature = "gui"))]
fn open_app(_photo: Option<PathBuf>, _vgg: Option<PathBuf>) -> anyhow::Result<()> {
    anyhow::bail!(
        "this build has no desktop app (built without the `gui` feature); use a subcommand \
         such as `atelier stylize` (see `atelier --help`)"
    )
}
