//! `atelier bench`: prints the benchmark table.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use atelier::bench::{self, BenchOptions, BenchRow};
use atelier::nn::transformer::TransformerNet;
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
    /// Also time candle's stock convolution on every layer shape.
    #[arg(long)]
    stock: bool,
    /// Run only the benchmarks whose name contains this text (or one of several, separated by `|`).
    #[arg(long)]
    only: Option<String>,
    /// Run each whole-network benchmark in its own process and report its peak memory.
    #[arg(long)]
    memory: bool,
    /// Also time the same networks on onnxruntime (runs benches/onnx/onnxruntime_bench.py;
    /// needs its requirements.txt installed).
    #[arg(long)]
    onnx: bool,
    /// The Python interpreter for --onnx.
    #[arg(long, default_value = "python3")]
    python: String,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let device = atelier::engine::best_device();
    let vgg = match &args.vgg {
        Some(path) => Some(Vgg::load(path, &device)?),
        None => None,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if !args.json {
        eprintln!("device: {device:?}, {threads} threads");
    }
    let options = BenchOptions {
        iterations: args.iterations,
        stock: args.stock,
        only: args.only.clone(),
    };
    let mut rows = if args.memory && args.only.is_none() {
        run_networks_apart(&args, &options, vgg.as_ref(), &device)?
    } else {
        let mut rows = bench::run_all(vgg.as_ref(), &device, &options)?;
        if args.only.is_some() {
            // A single benchmark in this process: its peak memory is the process's.
            let peak = bench::peak_rss_mb();
            rows.iter_mut().for_each(|r| r.peak_mb = peak);
        }
        rows
    };
    if args.onnx {
        rows.extend(onnxruntime_rows(&args, threads)?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", bench::format_table(&rows));
    }
    Ok(())
}

/// Everything but the networks here; each network in a child process of its own.
fn run_networks_apart(
    args: &BenchArgs,
    options: &BenchOptions,
    vgg: Option<&Vgg>,
    device: &candle_core::Device,
) -> anyhow::Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    for row in bench::run_all(vgg, device, options)? {
        if !bench::NETWORK_BENCHES.contains(&row.name.as_str()) {
            rows.push(row);
        }
    }
    let exe = std::env::current_exe().context("cannot find the atelier executable")?;
    for name in bench::NETWORK_BENCHES {
        let mut cmd = Command::new(&exe);
        cmd.args(["bench", "--json", "--only", name])
            .args(["--iterations", &args.iterations.to_string()]);
        if let Some(vgg) = &args.vgg {
            cmd.arg("--vgg").arg(vgg);
        }
        let output = cmd.output().context("cannot run the benchmark process")?;
        if !output.status.success() {
            anyhow::bail!(
                "benchmark `{name}` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let child: Vec<BenchRow> = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("benchmark `{name}` printed no JSON rows"))?;
        rows.extend(child.into_iter().filter(|r| r.name == name));
    }
    Ok(rows)
}

/// The onnxruntime rows: the same random transformer (saved to a temporary file) and, when
/// given, the same VGG file.
fn onnxruntime_rows(args: &BenchArgs, threads: usize) -> anyhow::Result<Vec<BenchRow>> {
    // A developer benchmark: the script lives in the source checkout this binary was built from.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/onnx/onnxruntime_bench.py");
    if !script.is_file() {
        anyhow::bail!(
            "--onnx needs the source checkout's {} (not found)",
            script.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let transformer = dir.path().join("transformer.safetensors");
    TransformerNet::random(&candle_core::Device::Cpu, 0)?.save_safetensors(
        &transformer,
        candle_core::DType::F32,
        Default::default(),
    )?;
    let mut cmd = Command::new(&args.python);
    cmd.arg(&script)
        .arg("--transformer")
        .arg(&transformer)
        .args(["--sizes", "512,1024", "--json"])
        .args(["--threads", &threads.to_string()])
        .args(["--iterations", &args.iterations.to_string()]);
    if let Some(vgg) = &args.vgg {
        cmd.arg("--vgg").arg(vgg);
    }
    let output = cmd
        .output()
        .with_context(|| format!("cannot run {} (is Python installed?)", args.python))?;
    if !output.status.success() {
        anyhow::bail!(
            "onnxruntime benchmark failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    #[derive(serde::Deserialize)]
    struct OrtRow {
        name: String,
        ms: f64,
        side: usize,
    }
    let ort: Vec<OrtRow> = serde_json::from_slice(&output.stdout)
        .context("the onnxruntime benchmark printed no JSON rows")?;
    Ok(ort
        .into_iter()
        .map(|r| {
            let flops = if r.name.contains("transformer") {
                Some(TransformerNet::flops(r.side, r.side))
            } else {
                None
            };
            BenchRow {
                gflops: flops.map(|f| f / (r.ms * 1e6)),
                name: r.name,
                ms: r.ms,
                peak_mb: None,
                kernels: "onnxruntime (MLAS, its own choice)".to_string(),
                note: None,
            }
        })
        .collect())
}
