//! Tiled runs of the style network: with the whole image's norm statistics a tile's core is
//! the untiled result, and the statistics that tiles estimate (a low-resolution pass, then sums
//! over the tiles) bring a tiled photo within a fraction of a level of the untiled one.

use atelier::bench::mean_abs_diff;
use atelier::nn::transformer::{
    NormSums, TileWindow, TransformerNet, NORM_LAYERS, RECEPTIVE_RADIUS,
};
use atelier::stylize::network::{stylize_planned, TilePlan};
use atelier::stylize::tiles;
use candle_core::{Device, Tensor};
use image::{Rgb, RgbImage};

type TestResult = anyhow::Result<()>;

/// Smooth gradients with a texture on top, so every layer sees structure at several scales.
fn textured_photo(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let noise = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663)) % 61;
        let wave = ((x as f32 / 9.0).sin() * (y as f32 / 13.0).cos() * 40.0) as i32;
        let base = [x * 200 / w, y * 200 / h, (x + y) * 100 / (w + h)];
        let px = |b: u32| (b as i32 + wave + noise as i32).clamp(0, 255) as u8;
        Rgb([px(base[0]), px(base[1]), px(base[2] + 60)])
    })
}

fn bundled(style: &str) -> anyhow::Result<TransformerNet> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("styles")
        .join(style)
        .join("model.safetensors");
    Ok(TransformerNet::load(&path, &Device::Cpu)?)
}

fn tensor_of(image: &RgbImage) -> anyhow::Result<Tensor> {
    Ok(atelier::imaging::to_tensor(image, &Device::Cpu)?)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

#[test]
fn with_whole_image_statistics_tile_cores_are_the_untiled_result() -> TestResult {
    let net = TransformerNet::random_with_width(&Device::Cpu, 7, 8)?;
    let photo = textured_photo(296, 200);
    let x = tensor_of(&photo)?;
    let untiled = net.forward(&x)?;
    let stats = net.measure_norms(&x, None)?;
    // One tile holding everything, with the image's own statistics, is the plain forward pass.
    let whole = net.forward_tile(&x, None, &stats, None)?;
    assert!(max_abs_diff(&whole, &untiled)? < 1e-3);

    // Small cores: every core pixel sees through the receptive radius as in the untiled run,
    // and the cores' sums give back the whole image's statistics.
    let grid = tiles::grid(296, 200, 64, RECEPTIVE_RADIUS as u32, 4);
    assert!(grid.len() >= 12);
    let mut sums = NormSums::default();
    let mut worst = 0.0f32;
    for tile in &grid {
        let input = tensor_of(&tiles::crop_reflected(&photo, tile.input))?;
        let window = TileWindow {
            top: (tile.core.y - tile.input.y) as usize,
            left: (tile.core.x - tile.input.x) as usize,
            height: tile.core.height as usize,
            width: tile.core.width as usize,
        };
        let y = net.forward_tile(&input, None, &stats, Some((&mut sums, window)))?;
        let core = y
            .narrow(2, window.top, window.height)?
            .narrow(3, window.left, window.width)?;
        let expected = untiled
            .narrow(2, tile.core.y as usize, tile.core.height as usize)?
            .narrow(3, tile.core.x as usize, tile.core.width as usize)?;
        worst = worst.max(max_abs_diff(&core, &expected)?);
    }
    assert!(
        worst < 2e-2,
        "tile cores differ from the untiled run by {worst}"
    );
    let summed = sums.finish().expect("every norm saw pixels");
    for (a, b) in summed.layers.iter().zip(&stats.layers) {
        for (m, n) in a.mean.iter().zip(&b.mean) {
            assert!((m - n).abs() <= 1e-4 * (1.0 + n.abs()), "{m} vs {n}");
        }
        for (v, u) in a.var.iter().zip(&b.var) {
            assert!((v - u).abs() <= 1e-3 * (1.0 + u.abs()), "{v} vs {u}");
        }
    }
    Ok(())
}

#[test]
fn a_tiled_photo_matches_the_untiled_one_within_a_level() -> TestResult {
    // A trained network (a random one paints a flat image, which would hide any seam).
    let net = bundled("starry-night")?;
    // Sides that are not multiples of 4: the tiles cover the network's reflected extension.
    let photo = textured_photo(402, 287);
    let mut calls = Vec::new();
    let (untiled, report) =
        stylize_planned(&net, &photo, &Device::Cpu, None, None, &mut |d, t| {
            calls.push((d, t));
            Ok(())
        })?;
    assert!(report.is_none());
    assert_eq!(calls, [(1, 1)]);
    let spread = {
        let v = untiled.as_raw();
        let mean = v.iter().map(|&p| f64::from(p)).sum::<f64>() / v.len() as f64;
        v.iter().map(|&p| (f64::from(p) - mean).abs()).sum::<f64>() / v.len() as f64
    };
    assert!(spread > 5.0, "the network paints something ({spread})");

    // Statistics from every pixel: the tiled photo is the untiled one.
    let plan = TilePlan {
        core: 96,
        sample_core: 64,
        sample_pixels: u64::MAX,
        cache_bytes: u64::MAX,
    };
    let mut progress = Vec::new();
    let (tiled, report) = stylize_planned(
        &net,
        &photo,
        &Device::Cpu,
        None,
        Some(plan),
        &mut |done, total| {
            progress.push((done, total));
            Ok(())
        },
    )?;
    let report = report.expect("a tiled run reports its tiles");
    assert_eq!(tiled.dimensions(), photo.dimensions());
    assert!(report.tiles >= 12 && report.sampled >= 1.0, "{report:?}");
    let runs = report.sample_tiles * NORM_LAYERS + report.tiles;
    assert_eq!(progress.len(), runs);
    assert_eq!(progress.last(), Some(&(runs, runs)));
    let gap = mean_abs_diff(&tiled, &untiled);
    assert!(
        gap <= 0.05,
        "tiled vs untiled: mean difference {gap:.3} levels"
    );

    // Without room to keep activations between passes, every pass runs the tiles from the
    // photo: the same statistics, so the same picture.
    let (recomputed, _) = stylize_planned(
        &net,
        &photo,
        &Device::Cpu,
        None,
        Some(TilePlan {
            cache_bytes: 0,
            ..plan
        }),
        &mut |_, _| Ok(()),
    )?;
    assert!(mean_abs_diff(&recomputed, &tiled) <= 0.01);

    // Statistics from a third of the photo, spread over it: an estimate. This photo's colours
    // change across it, so a sample misses more than on most photos.
    let (sampled, report) = stylize_planned(
        &net,
        &photo,
        &Device::Cpu,
        None,
        Some(TilePlan {
            sample_pixels: 40_000,
            ..plan
        }),
        &mut |_, _| Ok(()),
    )?;
    let report = report.expect("tiled");
    assert!(report.sampled < 0.5, "{report:?}");
    let sampled_gap = mean_abs_diff(&sampled, &untiled);
    eprintln!(
        "tiled vs untiled: {gap:.4} levels exact, {sampled_gap:.4} from {:.0} %",
        report.sampled * 100.0
    );
    assert!(
        sampled_gap <= 4.0,
        "sampled statistics: {sampled_gap:.3} levels off"
    );
    Ok(())
}

#[test]
fn a_tiled_run_stops_when_asked() -> TestResult {
    let net = TransformerNet::random_with_width(&Device::Cpu, 3, 8)?;
    let photo = textured_photo(256, 256);
    let plan = TilePlan {
        core: 64,
        sample_core: 64,
        sample_pixels: u64::MAX,
        cache_bytes: u64::MAX,
    };
    let mut seen = 0;
    let result = stylize_planned(&net, &photo, &Device::Cpu, None, Some(plan), &mut |d, _| {
        seen = d;
        if d == 3 {
            Err(atelier::Error::Cancelled)
        } else {
            Ok(())
        }
    });
    assert!(matches!(result, Err(atelier::Error::Cancelled)));
    assert_eq!(seen, 3);
    Ok(())
}

#[test]
fn a_conditional_mix_tiles_like_its_untiled_run() -> TestResult {
    let net = bundled("four-painters")?;
    let photo = textured_photo(330, 250);
    let mix = [0.7f32, 0.0, 0.3, 0.0];
    let (untiled, _) =
        stylize_planned(&net, &photo, &Device::Cpu, Some(&mix), None, &mut |_, _| {
            Ok(())
        })?;
    let plan = TilePlan {
        core: 96,
        sample_core: 96,
        sample_pixels: u64::MAX,
        cache_bytes: u64::MAX,
    };
    let (tiled, report) = stylize_planned(
        &net,
        &photo,
        &Device::Cpu,
        Some(&mix),
        Some(plan),
        &mut |_, _| Ok(()),
    )?;
    assert!(report.is_some_and(|r| r.tiles > 4));
    let gap = mean_abs_diff(&tiled, &untiled);
    assert!(
        gap <= 0.05,
        "tiled vs untiled mix: mean difference {gap:.3} levels"
    );
    Ok(())
}

#[test]
fn the_arbitrary_method_tiles_like_its_untiled_run() -> TestResult {
    use atelier::stylize::arbitrary::{self, ArbitraryConfig, FeatureTransform};
    let device = Device::Cpu;
    let vgg = atelier::nn::vgg::Vgg::bundled(&device)?;
    let decoders = atelier::nn::decoder::bundled(&device)?;
    let painting = textured_photo(128, 128);
    let style = arbitrary::style_stats(&vgg, std::slice::from_ref(&painting), 128, &device)?;
    for (transform, photo) in [
        (FeatureTransform::Adain, textured_photo(300, 219)),
        (FeatureTransform::Wct, textured_photo(180, 140)),
    ] {
        let config = ArbitraryConfig {
            transform,
            strength: 0.8,
        };
        let untiled =
            arbitrary::stylize(&vgg, &decoders, &photo, &style, config, &device, |_, _| {
                Ok(())
            })?;
        let mut runs = 0;
        let tiled = arbitrary::stylize_tiled(
            &vgg,
            &decoders,
            &photo,
            &style,
            config,
            &device,
            64,
            |done, _| {
                runs = done;
                Ok(())
            },
        )?;
        assert!(runs >= 2 * 6 * transform.levels().len(), "{runs} tile runs");
        assert_eq!(tiled.dimensions(), photo.dimensions());
        let gap = mean_abs_diff(&tiled, &untiled);
        eprintln!("arbitrary {transform:?}: tiled vs untiled {gap:.4} levels");
        assert!(
            gap <= 0.05,
            "{transform:?}: tiled vs untiled {gap:.3} levels"
        );
    }
    Ok(())
}
