//! Speed measurements of the building blocks, printed by `atelier bench`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::error::Result;
use crate::nn::transformer::TransformerNet;
use crate::nn::vgg::{Vgg, VggArch};
use crate::stylize::cache::FeatureCache;
use crate::stylize::gatys::{GatysConfig, StyleImage, StyleProblem};

/// One line of the benchmark table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRow {
    pub name: String,
    /// Median wall time of one run.
    pub ms: f64,
    /// Useful floating-point work per second (multiply-adds count as 2), where defined.
    pub gflops: Option<f64>,
}

/// Median milliseconds of `iterations` runs of `f`, after one warm-up run.
pub fn median_ms(iterations: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(iterations.max(1));
    for _ in 0..iterations.max(1) {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn row(name: impl Into<String>, ms: f64, flops: Option<f64>) -> BenchRow {
    BenchRow {
        name: name.into(),
        ms,
        gflops: flops.map(|f| f / (ms * 1e6)),
    }
}

/// A deterministic test pattern, so runs are comparable.
fn pattern(side: u32) -> RgbImage {
    RgbImage::from_fn(side, side, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x + y) * 3 % 256) as u8,
        ])
    })
}

/// Runs the standard benchmark set. `vgg` is a loaded loss network or `None` for random
/// VGG16 weights (same work, so the same speed).
pub fn run_all(vgg: Option<&Vgg>, device: &Device, iterations: usize) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();

    let n = 1024;
    let a = Tensor::randn(0f32, 1.0, (n, n), device)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), device)?;
    let ms = median_ms(iterations.max(3), || {
        a.matmul(&b)?.to_device(&Device::Cpu)?;
        Ok(())
    })?;
    rows.push(row(
        "matmul 1024x1024 (reference)",
        ms,
        Some(2.0 * (n as f64).powi(3)),
    ));

    let random_vgg;
    let vgg = match vgg {
        Some(v) => v,
        None => {
            random_vgg = Vgg::random(VggArch::Vgg16, device, 0)?;
            &random_vgg
        }
    };
    let side = 512usize;
    let x = crate::imaging::to_tensor(&pattern(side as u32), device)?;
    let layers = vec!["relu4_3".to_string()];
    let forward_flops = vgg.conv_flops(side, side, "relu4_3");
    let ms = median_ms(iterations, || {
        vgg.features(&x, &layers)?;
        Ok(())
    })?;
    rows.push(row(
        "VGG16 forward to relu4_3, 512x512",
        ms,
        Some(forward_flops),
    ));

    let config = GatysConfig::default();
    let style = StyleImage {
        image: std::sync::Arc::new(pattern(256)),
        weight: 1.0,
    };
    let mut cache = FeatureCache::default();
    let content = pattern(side as u32);
    let problem = StyleProblem::new(vgg, &content, &[style], &config, &mut cache, device)?;
    let ms = median_ms(iterations, || {
        problem.evaluate(&x, true)?;
        Ok(())
    })?;
    // Forward plus input-gradient backward: about twice the forward convolutions.
    rows.push(row(
        "Gatys step (loss + gradient), 512x512",
        ms,
        Some(2.0 * forward_flops),
    ));

    let net = TransformerNet::random(device, 0)?;
    for side in [512usize, 1024] {
        let x = crate::imaging::to_tensor(&pattern(side as u32), device)?;
        let ms = median_ms(iterations, || {
            net.forward(&x)?;
            Ok(())
        })?;
        rows.push(row(
            format!("transformer forward, {side}x{side}"),
            ms,
            Some(TransformerNet::flops(side, side)),
        ));
    }
    Ok(rows)
}

/// The table as Markdown.
pub fn format_table(rows: &[BenchRow]) -> String {
    let mut out = String::from("| benchmark | ms | GFLOP/s |\n|---|---:|---:|\n");
    for r in rows {
        let gflops = r
            .gflops
            .map_or_else(|| "-".to_string(), |g| format!("{g:.1}"));
        out.push_str(&format!("| {} | {:.1} | {} |\n", r.name, r.ms, gflops));
    }
    out
}
