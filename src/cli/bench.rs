//! `atelier bench`: prints the benchmark table.

use std::path::PathBuf;

use atelier::bench;
use atelier::nn::vgg::Vgg;
use clap::Args;

#[derive(Args)]
pub struct BenchArgs {
    /// VGG weights to time (default: random VGG16 weights; the speed is the same).
    #[arg(long)]
    vgg: Option<PathBuf>,
    /// Timed runs per benchmark (the median is reported).
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// Print JSON rows instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let device = atelier::engine::best_device();
    let vgg = match &args.vgg {
        Some(path) => Some(Vgg::load(path, &device)?),
        None => None,
    };
    eprintln!(
        "device: {:?}, {} threads",
        device,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let rows = bench::run_all(vgg.as_ref(), &device, args.iterations)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", bench::format_table(&rows));
    }
    Ok(())
}
