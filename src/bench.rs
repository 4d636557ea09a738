//! Speed measurements of the building blocks, printed by `atelier bench`: a matmul reference,
//! every convolution shape of the VGG and the style transformer (Atelier's kernels and candle's
//! stock conv side by side), the whole networks, and optionally onnxruntime on the same
//! networks (see `benches/onnx/`).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use crate::error::Result;
use crate::nn::layers;
use crate::nn::ops::{self, ConvParams, PadMode};
use crate::nn::transformer::TransformerNet;
use crate::nn::vgg::{Vgg, VggArch};
use crate::stylize::cache::FeatureCache;
use crate::stylize::gatys::{GatysConfig, StyleImage, StyleProblem};

mod video;

/// One line of the benchmark table.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BenchRow {
    pub name: String,
    /// Median wall time of one run.
    pub ms: f64,
    /// Useful floating-point work per second (multiply-adds count as 2, direct convolution
    /// counts, whatever algorithm ran), where defined.
    pub gflops: Option<f64>,
    /// Peak resident memory of a process that ran only this benchmark, where measured.
    pub peak_mb: Option<f64>,
    /// The kernel paths that ran ([`crate::nn::cpu::kernel_paths`], or the peer's name).
    #[serde(default)]
    pub kernels: String,
    /// A measured figure that is not a time (e.g. how far a tiled result is from an untiled one).
    #[serde(default)]
    pub note: Option<String>,
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
        peak_mb: None,
        kernels: crate::nn::cpu::kernel_paths(),
        note: None,
    }
}

/// Milliseconds of one run of `f` (for runs of minutes, where a median would take too long).
fn once_ms(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

/// A deterministic test pattern, so runs are comparable.
fn pattern(side: u32) -> RgbImage {
    pattern_sized(side, side)
}

/// [`pattern`] at `width × height`.
fn pattern_sized(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x + y) * 3 % 256) as u8,
        ])
    })
}

/// One convolution shape of the networks: input side and channels, kernel, stride, whether
/// the input is upsampled first and how it is padded.
#[derive(Debug, Clone, Copy)]
pub struct ConvCase {
    pub name: &'static str,
    pub side: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub upsample: bool,
    pub mode: PadMode,
}

impl ConvCase {
    fn params(&self) -> ConvParams {
        ConvParams {
            pad: self.k / 2,
            mode: self.mode,
            stride: self.stride,
            upsample: self.upsample,
            relu: false,
        }
    }

    fn flops(&self) -> f64 {
        let side = if self.upsample {
            2 * self.side
        } else {
            self.side
        };
        let out = side.div_ceil(self.stride);
        2.0 * (out * out * self.c_in * self.c_out * self.k * self.k) as f64
    }
}

const fn case(
    name: &'static str,
    side: usize,
    (c_in, c_out, k, stride): (usize, usize, usize, usize),
    upsample: bool,
    mode: PadMode,
) -> ConvCase {
    ConvCase {
        name,
        side,
        c_in,
        c_out,
        k,
        stride,
        upsample,
        mode,
    }
}

/// The VGG16 layers of a 512² Gatys step, the transformer layers of a 1024² image and the
/// width-8 transformer's full-resolution layers.
pub const CONV_CASES: [ConvCase; 16] = [
    case(
        "VGG conv1_1 3→64, 512²",
        512,
        (3, 64, 3, 1),
        false,
        PadMode::Zero,
    ),
    case(
        "VGG conv1_2 64→64, 512²",
        512,
        (64, 64, 3, 1),
        false,
        PadMode::Zero,
    ),
    case(
        "VGG conv2_2 128→128, 256²",
        256,
        (128, 128, 3, 1),
        false,
        PadMode::Zero,
    ),
    case(
        "VGG conv3_3 256→256, 128²",
        128,
        (256, 256, 3, 1),
        false,
        PadMode::Zero,
    ),
    case(
        "VGG conv4_3 512→512, 64²",
        64,
        (512, 512, 3, 1),
        false,
        PadMode::Zero,
    ),
    case(
        "TN conv1 9×9 3→32, 1024²",
        1024,
        (3, 32, 9, 1),
        false,
        PadMode::Reflect,
    ),
    case(
        "TN conv2 3×3/2 32→64, 1024²",
        1024,
        (32, 64, 3, 2),
        false,
        PadMode::Reflect,
    ),
    case(
        "TN conv3 3×3/2 64→128, 512²",
        512,
        (64, 128, 3, 2),
        false,
        PadMode::Reflect,
    ),
    case(
        "TN residual 128→128, 256²",
        256,
        (128, 128, 3, 1),
        false,
        PadMode::Reflect,
    ),
    case(
        "TN deconv1 up+3×3 128→64, 256²→512²",
        256,
        (128, 64, 3, 1),
        true,
        PadMode::Reflect,
    ),
    case(
        "TN deconv2 up+3×3 64→32, 512²→1024²",
        512,
        (64, 32, 3, 1),
        true,
        PadMode::Reflect,
    ),
    case(
        "TN deconv3 9×9 32→3, 1024²",
        1024,
        (32, 3, 9, 1),
        false,
        PadMode::Reflect,
    ),
    // The width-8 network of live previews and video, at about a 640×360 frame's pixel count.
    case(
        "TN8 conv1 9×9 3→8, 512²",
        512,
        (3, 8, 9, 1),
        false,
        PadMode::Reflect,
    ),
    case(
        "TN8 conv2 3×3/2 8→16, 512²",
        512,
        (8, 16, 3, 2),
        false,
        PadMode::Reflect,
    ),
    case(
        "TN8 deconv2 up+3×3 16→8, 256²→512²",
        256,
        (16, 8, 3, 1),
        true,
        PadMode::Reflect,
    ),
    case(
        "TN8 deconv3 9×9 8→3, 512²",
        512,
        (8, 3, 9, 1),
        false,
        PadMode::Reflect,
    ),
];

/// What `atelier bench` runs.
#[derive(Debug, Clone, Default)]
pub struct BenchOptions {
    pub iterations: usize,
    /// Also time candle's stock convolution on every layer shape.
    pub stock: bool,
    /// Run only the benchmarks whose name contains this (or one of these, separated by `|`).
    pub only: Option<String>,
}

impl BenchOptions {
    fn wants(&self, name: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|f| f.split('|').any(|part| name.contains(part.trim())))
    }
}

/// Names of the whole-network benchmarks (run one per process to measure peak memory).
pub const NETWORK_BENCHES: [&str; 16] = [
    "VGG16 forward to relu4_3, 512x512",
    "Gatys step (loss + gradient), 512x512",
    "transformer forward, 512x512",
    "transformer forward, 1024x1024",
    "transformer training step (forward + all gradients), 4x256x256",
    "arbitrary AdaIN (encode + transform + decode), 512x512",
    "arbitrary AdaIN (encode + transform + decode), 1024x1024",
    "arbitrary WCT (4-level cascade), 512x512",
    "arbitrary WCT (4-level cascade), 1024x1024",
    "arbitrary style statistics of a painting, 512 px",
    "trained style network (width 16, one style), 1024x1024",
    "conditional network (width 16, 4 styles, a 2-style mix), 1024x1024",
    "tiled network (starry-night), 8 MP 3264x2448, one run",
    "tiled network (starry-night), 50 MP 8192x6144, one run",
    "one-piece network (starry-night), 8 MP 3264x2448, one run, against the tiled result",
    "video network (width 8), 640x360",
];

/// Runs the benchmark set. `vgg` is a loaded loss network or `None` for random VGG16 weights
/// (same work, so the same speed).
pub fn run_all(
    vgg: Option<&Vgg>,
    device: &Device,
    options: &BenchOptions,
) -> Result<Vec<BenchRow>> {
    let iterations = options.iterations.max(1);
    let mut rows = Vec::new();

    let matmul_name = "matmul 1024x1024 (reference)";
    if options.wants(matmul_name) {
        let n = 1024;
        let a = Tensor::randn(0f32, 1.0, (n, n), device)?;
        let b = Tensor::randn(0f32, 1.0, (n, n), device)?;
        let ms = median_ms(iterations.max(5), || {
            a.matmul(&b)?.to_device(&Device::Cpu)?;
            Ok(())
        })?;
        rows.push(row(matmul_name, ms, Some(2.0 * (n as f64).powi(3))));
    }

    for case in CONV_CASES {
        let ours = format!("conv {}", case.name);
        let stock = format!("conv {} (candle stock)", case.name);
        let want_ours = options.wants(&ours);
        let want_stock = options.stock && options.wants(&stock);
        if !want_ours && !want_stock {
            continue;
        }
        let x = Tensor::randn(0f32, 1.0, (1, case.c_in, case.side, case.side), device)?;
        let w =
            (Tensor::randn(0f32, 1.0, (case.c_out, case.c_in, case.k, case.k), device)? * 0.05)?;
        let b = Tensor::zeros(case.c_out, DType::F32, device)?;
        let p = case.params();
        if want_ours {
            let ms = median_ms(iterations, || {
                ops::conv2d_fused(&x, &w, Some(&b), p, false)?;
                Ok(())
            })?;
            rows.push(row(ours, ms, Some(case.flops())));
        }
        if want_stock {
            let ms = median_ms(iterations, || {
                let x = if p.upsample {
                    layers::upsample_nearest2x(&x)?
                } else {
                    x.clone()
                };
                let y = match p.mode {
                    PadMode::Zero => x.conv2d(&w, p.pad, p.stride, 1, 1)?,
                    PadMode::Reflect => {
                        layers::reflection_pad2d(&x, p.pad)?.conv2d(&w, 0, p.stride, 1, 1)?
                    }
                };
                y.broadcast_add(&b.reshape((1, (), 1, 1))?)?;
                Ok(())
            })?;
            rows.push(row(stock, ms, Some(case.flops())));
        }
    }

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
    let forward_flops = vgg.conv_flops(side, side, "relu4_3");
    if options.wants(NETWORK_BENCHES[0]) {
        let layers = vec!["relu4_3".to_string()];
        let ms = median_ms(iterations, || {
            vgg.features(&x, &layers)?;
            Ok(())
        })?;
        rows.push(row(NETWORK_BENCHES[0], ms, Some(forward_flops)));
    }

    if options.wants(NETWORK_BENCHES[1]) {
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
        rows.push(row(NETWORK_BENCHES[1], ms, Some(2.0 * forward_flops)));
    }

    let net = TransformerNet::random(device, 0)?;
    for (side, name) in [(512usize, NETWORK_BENCHES[2]), (1024, NETWORK_BENCHES[3])] {
        if !options.wants(name) {
            continue;
        }
        let x = crate::imaging::to_tensor(&pattern(side as u32), device)?;
        let ms = median_ms(iterations, || {
            net.forward(&x)?;
            Ok(())
        })?;
        rows.push(row(name, ms, Some(TransformerNet::flops(side, side))));
    }

    if options.wants(NETWORK_BENCHES[4]) {
        // Parameters as variables, so the backward pass computes every weight gradient.
        let mut params = std::collections::HashMap::new();
        for (name, t) in net.tensors() {
            params.insert(name, candle_core::Var::from_tensor(&t)?.as_tensor().clone());
        }
        let mut trainable = TransformerNet::from_tensors(&params, std::path::Path::new("bench"))?;
        trainable.trainable = true;
        let (batch, side) = (4usize, 256usize);
        let one = crate::imaging::to_tensor(&pattern(side as u32), device)?;
        let x = Tensor::cat(&vec![&one; batch], 0)?;
        let ms = median_ms(iterations, || {
            trainable.forward(&x)?.sqr()?.mean_all()?.backward()?;
            Ok(())
        })?;
        // Forward, input gradient and weight gradient: three times the forward convolutions.
        let flops = 3.0 * batch as f64 * TransformerNet::flops(side, side);
        rows.push(row(NETWORK_BENCHES[4], ms, Some(flops)));
    }
    rows.extend(conditional_rows(device, options, iterations)?);
    rows.extend(video_network_row(device, options, iterations)?);
    rows.extend(arbitrary_rows(device, options, iterations)?);
    rows.extend(tiled_rows(device, options)?);
    rows.extend(video::video_rows(device, options)?);
    Ok(rows)
}

/// A photo-like test image: smooth gradients, large shapes and fine texture, so tiles and the
/// norms' statistics see structure at every scale.
fn photo_like(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let (u, v) = (x as f32 / width as f32, y as f32 / height as f32);
        let shape = ((u * 9.0).sin() * (v * 7.0).cos() * 60.0) as i32;
        let texture = ((x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) % 41) as i32;
        let channel = |base: f32| (base * 200.0) as i32 + shape + texture;
        image::Rgb([
            channel(u).clamp(0, 255) as u8,
            channel(v).clamp(0, 255) as u8,
            channel(1.0 - u * v).clamp(0, 255) as u8,
        ])
    })
}

/// Whole photos through the network method as the engine runs them: tiled (tile size from the
/// free memory, exact norm statistics up to 12 MP, a spread sample above) and, at 8 MP, in one
/// piece for comparison. One run each: they take seconds to minutes.
fn tiled_rows(device: &Device, options: &BenchOptions) -> Result<Vec<BenchRow>> {
    use crate::stylize::network::{stylize_planned, TilePlan};
    let names = &NETWORK_BENCHES[12..15];
    let mut rows = Vec::new();
    if !names.iter().any(|n| options.wants(n)) {
        return Ok(rows);
    }
    // A trained network: a random one paints a flat picture, which would hide any seam.
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("styles/starry-night/model.safetensors");
    let net = TransformerNet::load(&model, device)?;
    let cases = [(3264u32, 2448u32, names[0]), (8192, 6144, names[1])];
    for (width, height, name) in cases {
        if !options.wants(name) {
            continue;
        }
        let photo = photo_like(width, height);
        let plan = TilePlan::for_photo(&net, width, height);
        let mut report = None;
        let ms = once_ms(|| {
            report = stylize_planned(&net, &photo, device, None, plan, &mut |_, _| Ok(()))?.1;
            Ok(())
        })?;
        let flops = TransformerNet::flops_for_width(width as usize, height as usize, net.width());
        let mut r = row(name, ms, Some(flops));
        r.note = Some(report.map_or_else(|| "one piece".to_string(), |t| t.describe()));
        rows.push(r);
    }
    if options.wants(names[2]) {
        let (width, height) = (3264u32, 2448u32);
        let photo = photo_like(width, height);
        let mut untiled = None;
        let ms = once_ms(|| {
            untiled =
                Some(stylize_planned(&net, &photo, device, None, None, &mut |_, _| Ok(()))?.0);
            Ok(())
        })?;
        let plan = TilePlan::for_photo(&net, width, height);
        let (tiled, report) =
            stylize_planned(&net, &photo, device, None, plan, &mut |_, _| Ok(()))?;
        let flops = TransformerNet::flops_for_width(width as usize, height as usize, net.width());
        let mut r = row(names[2], ms, Some(flops));
        if let Some(untiled) = untiled {
            let gap = mean_abs_diff(&tiled, &untiled);
            r.note = Some(format!(
                "tiled vs untiled: mean |difference| {gap:.4}/255, {} ({})",
                report.map_or_else(|| "one piece".to_string(), |t| t.describe()),
                max_seam_note(&tiled, &untiled)
            ));
        }
        rows.push(r);
    }
    Ok(rows)
}

/// Mean absolute difference of two images of one size, in levels (0..255).
pub fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    let total: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&p, &q)| u64::from(p.abs_diff(q)))
        .sum();
    total as f64 / a.as_raw().len().max(1) as f64
}

fn max_seam_note(a: &RgbImage, b: &RgbImage) -> String {
    let max = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&p, &q)| p.abs_diff(q))
        .max()
        .unwrap_or(0);
    format!("largest pixel difference {max}")
}

/// The width the project trains its styles at, one-style and conditional: the conditional
/// network's only extra work is mixing its norms' scales and shifts (a tiny matmul per norm).
fn conditional_rows(
    device: &Device,
    options: &BenchOptions,
    iterations: usize,
) -> Result<Vec<BenchRow>> {
    let width = crate::train::DEFAULT_WIDTH;
    let side = 1024usize;
    let flops = TransformerNet::flops_for_width(side, side, width);
    let x = crate::imaging::to_tensor(&pattern(side as u32), device)?;
    let mut rows = Vec::new();
    if options.wants(NETWORK_BENCHES[10]) {
        let net = TransformerNet::random_with_width(device, 0, width)?;
        let ms = median_ms(iterations, || {
            net.forward(&x)?;
            Ok(())
        })?;
        rows.push(row(NETWORK_BENCHES[10], ms, Some(flops)));
    }
    if options.wants(NETWORK_BENCHES[11]) {
        let net = TransformerNet::random_conditional(device, 0, width, 4)?;
        let mix = Tensor::new(&[0.6f32, 0.4, 0.0, 0.0], device)?;
        let ms = median_ms(iterations, || {
            net.forward_mixed(&x, Some(&mix))?;
            Ok(())
        })?;
        rows.push(row(NETWORK_BENCHES[11], ms, Some(flops)));
    }
    Ok(rows)
}

/// The width-8 network that paints video frames and live previews, on one 640×360 frame: the
/// critical path of network video (`video fast network` row).
fn video_network_row(
    device: &Device,
    options: &BenchOptions,
    iterations: usize,
) -> Result<Option<BenchRow>> {
    let name = NETWORK_BENCHES[15];
    if !options.wants(name) {
        return Ok(None);
    }
    let (w, h) = (640usize, 360usize);
    let frame = pattern_sized(w as u32, h as u32);
    let x = crate::imaging::to_tensor(&frame, device)?;
    let net = TransformerNet::random_with_width(device, 0, 8)?;
    let ms = median_ms(iterations, || {
        net.forward(&x)?;
        Ok(())
    })?;
    Ok(Some(row(
        name,
        ms,
        Some(TransformerNet::flops_for_width(h, w, 8)),
    )))
}

/// The arbitrary method with the built-in VGG16 and decoders (their real widths). A painting's
/// statistics are computed once per painting and cached by the engine, so they have a row of
/// their own and the stylisation rows start from them.
fn arbitrary_rows(
    device: &Device,
    options: &BenchOptions,
    iterations: usize,
) -> Result<Vec<BenchRow>> {
    use crate::stylize::arbitrary::{self, ArbitraryConfig, FeatureTransform};
    let mut rows = Vec::new();
    let names = &NETWORK_BENCHES[5..10];
    if !names.iter().any(|n| options.wants(n)) {
        return Ok(rows);
    }
    let vgg = Vgg::bundled(device)?;
    let decoders = crate::nn::decoder::bundled(device)?;
    let painting = pattern(512);
    let stats = arbitrary::style_stats(&vgg, std::slice::from_ref(&painting), 512, device)?;
    if options.wants(names[4]) {
        let ms = median_ms(iterations, || {
            arbitrary::style_stats(&vgg, std::slice::from_ref(&painting), 512, device)?;
            Ok(())
        })?;
        rows.push(row(names[4], ms, None));
    }
    let cases = [
        (FeatureTransform::Adain, 512u32, names[0]),
        (FeatureTransform::Adain, 1024, names[1]),
        (FeatureTransform::Wct, 512, names[2]),
        (FeatureTransform::Wct, 1024, names[3]),
    ];
    for (transform, side, name) in cases {
        if !options.wants(name) {
            continue;
        }
        let photo = pattern(side);
        let config = ArbitraryConfig {
            transform,
            strength: 1.0,
        };
        let ms = median_ms(iterations, || {
            arbitrary::stylize(&vgg, &decoders, &photo, &stats, config, device, |_, _| {
                Ok(())
            })?;
            Ok(())
        })?;
        let s = side as usize;
        let mut flops = 0.0;
        for layer in transform.levels() {
            let decoder = decoders.get(layer)?;
            let pools = crate::nn::decoder::layer_pools(layer)?;
            flops += vgg.conv_flops(s, s, layer) + decoder.flops(s >> pools, s >> pools);
        }
        rows.push(row(name, ms, Some(flops)));
    }
    Ok(rows)
}

/// Peak resident memory of this process so far, in MiB (Linux; `None` elsewhere).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The table as Markdown, with each throughput also as a share of the matmul reference.
pub fn format_table(rows: &[BenchRow]) -> String {
    let matmul = rows
        .iter()
        .find(|r| r.name.starts_with("matmul"))
        .and_then(|r| r.gflops);
    let mut out = String::from(
        "| benchmark | ms | GFLOP/s | % of matmul | peak MiB | kernels | note |\n\
         |---|---:|---:|---:|---:|---|---|\n",
    );
    let opt = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "-".to_string(), |g| format!("{g:.digits$}"))
    };
    for r in rows {
        let share = match (r.gflops, matmul) {
            (Some(g), Some(m)) if m > 0.0 => Some(100.0 * g / m),
            _ => None,
        };
        out.push_str(&format!(
            "| {} | {:.1} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.ms,
            opt(r.gflops, 1),
            opt(share, 0),
            opt(r.peak_mb, 0),
            r.kernels,
            r.note.as_deref().unwrap_or("")
        ));
    }
    out
}
