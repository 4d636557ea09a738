//! Optical flow and temporal blending on synthetic frames (fast in the debug build), plus two
//! `#[ignore]`d measurements: flow timing at 640×360 and the warping errors on bikes.mp4 frames.

use atelier::video::flow::{
    backward_flow_and_reliable, dense_flow, reliable, Flow, FlowParams, Pyramid,
};
use atelier::video::temporal::{
    is_scene_cut, warp, warping_error, warping_error_sum, Blender, Interpolation, VideoBlender,
};
use image::{Rgb, RgbImage};

/// Deterministic lattice hash in 0..1.
fn hash(x: i64, y: i64, seed: u64) -> f32 {
    let mut h = (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ seed.wrapping_mul(0x1656_67B1_9E37_79F9);
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    (h >> 40) as f32 / (1u64 << 24) as f32
}

/// Smooth value noise at one period.
fn value_noise(x: f32, y: f32, period: f32, seed: u64) -> f32 {
    let (fx, fy) = (x / period, y / period);
    let (x0, y0) = (fx.floor(), fy.floor());
    let (tx, ty) = (fx - x0, fy - y0);
    let s = |t: f32| t * t * (3.0 - 2.0 * t);
    let (sx, sy) = (s(tx), s(ty));
    let (ix, iy) = (x0 as i64, y0 as i64);
    let a = hash(ix, iy, seed);
    let b = hash(ix + 1, iy, seed);
    let c = hash(ix, iy + 1, seed);
    let d = hash(ix + 1, iy + 1, seed);
    (a * (1.0 - sx) + b * sx) * (1.0 - sy) + (c * (1.0 - sx) + d * sx) * sy
}

/// A continuous multi-scale colour texture, so shifted frames can be rendered exactly.
fn texture(x: f32, y: f32, seed: u64) -> [f32; 3] {
    let mut g = 0.0;
    for (i, (period, amp)) in [(40.0, 0.4), (16.0, 0.3), (7.0, 0.2), (3.0, 0.1)]
        .iter()
        .enumerate()
    {
        g += amp * value_noise(x, y, *period, seed + i as u64);
    }
    let tint = value_noise(x, y, 30.0, seed + 99);
    [
        255.0 * g,
        255.0 * (0.7 * g + 0.3 * tint),
        255.0 * (0.5 * g + 0.5 * (1.0 - tint)),
    ]
}

/// Frame showing the texture moved by (sx, sy): content at p in the unshifted frame is at
/// p + (sx, sy) here.
fn frame(w: u32, h: u32, sx: f32, sy: f32, seed: u64) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let c = texture(x as f32 - sx, y as f32 - sy, seed);
        Rgb(c.map(|v| v.round().clamp(0.0, 255.0) as u8))
    })
}

fn add_noise(img: &RgbImage, amplitude: f32, seed: u64) -> RgbImage {
    let mut out = img.clone();
    for (i, p) in out.pixels_mut().enumerate() {
        for ch in 0..3 {
            let n = (hash(i as i64, ch as i64, seed) - 0.5) * 2.0 * amplitude;
            p[ch] = (p[ch] as f32 + n).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Mean and worst deviation of the flow from (ex, ey) over pixels at least `margin` inside.
fn flow_error(flow: &Flow, ex: f32, ey: f32, margin: u32) -> (f32, f32) {
    let mut sum = 0.0;
    let mut worst: f32 = 0.0;
    let mut n = 0;
    for y in margin..flow.height - margin {
        for x in margin..flow.width - margin {
            let (u, v) = flow.at(x, y);
            let e = ((u - ex).powi(2) + (v - ey).powi(2)).sqrt();
            sum += e;
            worst = worst.max(e);
            n += 1;
        }
    }
    (sum / n as f32, worst)
}

#[test]
fn small_shift_is_recovered_both_ways_and_checked() {
    let (w, h) = (192, 144);
    let a = frame(w, h, 0.0, 0.0, 1);
    let b = frame(w, h, 5.0, -3.0, 1);
    let forward = dense_flow(&a, &b).unwrap();
    let backward = dense_flow(&b, &a).unwrap();
    assert_eq!((forward.width, forward.height), (w, h));
    let (mean_f, worst_f) = flow_error(&forward, 5.0, -3.0, 12);
    let (mean_b, worst_b) = flow_error(&backward, -5.0, 3.0, 12);
    println!("forward: mean {mean_f:.3} px, worst {worst_f:.3}; backward: mean {mean_b:.3}, worst {worst_b:.3}");
    assert!(worst_f < 0.5, "forward flow off by up to {worst_f} px");
    assert!(worst_b < 0.5, "backward flow off by up to {worst_b} px");

    // The mask lives in `b`'s frame (backward maps b → a): b's left 5 columns and bottom 3 rows
    // show content that is not in `a`.
    let mask = reliable(&forward, &backward);
    assert_eq!(mask.len(), (w * h) as usize);
    let at = |x: u32, y: u32| mask[(y * w + x) as usize];
    let (mut interior, mut interior_ok) = (0, 0);
    for y in 10..h - 10 {
        for x in 10..w - 10 {
            interior += 1;
            interior_ok += at(x, y) as usize;
        }
    }
    let (mut border, mut border_bad) = (0, 0);
    for y in 0..h {
        for x in 0..w {
            if x < 4 || y >= h - 2 {
                border += 1;
                border_bad += !at(x, y) as usize;
            }
        }
    }
    let interior_frac = interior_ok as f32 / interior as f32;
    let border_frac = border_bad as f32 / border as f32;
    println!("interior reliable {interior_frac:.3}, uncovered border unreliable {border_frac:.3}");
    assert!(interior_frac > 0.98, "interior reliable: {interior_frac}");
    assert!(
        border_frac > 0.95,
        "uncovered border unreliable: {border_frac}"
    );
    assert!(!is_scene_cut(&mask));
}

#[test]
fn the_check_at_the_flows_own_level_agrees_with_the_full_size_one() {
    // The video loop checks consistency at the flow's finest level (half size) and scales the
    // mask up; it must mark the same pixels as the check on the scaled-up flows.
    let (w, h) = (192, 144);
    let a = frame(w, h, 0.0, 0.0, 1);
    let b = frame(w, h, 5.0, -3.0, 1);
    let params = FlowParams::default();
    let (pa, pb) = (
        Pyramid::new(&a, &params).unwrap(),
        Pyramid::new(&b, &params).unwrap(),
    );
    let (backward, mask) = backward_flow_and_reliable(&pa, &pb, &params).unwrap();
    let (forward_full, backward_full) = (dense_flow(&a, &b).unwrap(), dense_flow(&b, &a).unwrap());
    assert_eq!(backward.dx, backward_full.dx, "the same backward flow");
    let full = reliable(&forward_full, &backward_full);
    assert_eq!(mask.len(), full.len());
    let agree = mask.iter().zip(&full).filter(|(a, b)| a == b).count();
    let agree = agree as f32 / full.len() as f32;
    println!("masks agree on {agree:.3} of the pixels");
    assert!(agree > 0.97, "masks agree on {agree}");
    // The uncovered left columns stay unreliable.
    assert!((0..h).all(|y| !mask[(y * w) as usize]));
}

#[test]
fn large_shift_is_recovered_by_the_pyramid() {
    let (w, h) = (256, 192);
    let a = frame(w, h, 0.0, 0.0, 2);
    let b = frame(w, h, 20.0, 12.0, 2);
    let flow = dense_flow(&a, &b).unwrap();
    // Away from the 20 px strip that leaves the frame.
    let mut sum = 0.0;
    let mut worst: f32 = 0.0;
    let mut n = 0;
    for y in 8..h - 24 {
        for x in 8..w - 32 {
            let (u, v) = flow.at(x, y);
            let e = ((u - 20.0).powi(2) + (v - 12.0).powi(2)).sqrt();
            sum += e;
            worst = worst.max(e);
            n += 1;
        }
    }
    let mean = sum / n as f32;
    println!("20 px shift: mean error {mean:.3} px, worst {worst:.3}");
    assert!(mean < 0.25, "mean error {mean}");
    assert!(worst < 1.0, "worst error {worst}");
}

#[test]
fn flow_is_robust_to_brightness_noise_and_changes() {
    let (w, h) = (192, 144);
    let a = add_noise(&frame(w, h, 0.0, 0.0, 3), 12.0, 10);
    // Brighter by 15 levels and differently noisy.
    let mut b = frame(w, h, -7.0, 4.0, 3);
    for p in b.pixels_mut() {
        for ch in 0..3 {
            p[ch] = p[ch].saturating_add(15);
        }
    }
    let b = add_noise(&b, 12.0, 11);
    let flow = dense_flow(&a, &b).unwrap();
    let (mean, worst) = flow_error(&flow, -7.0, 4.0, 14);
    println!("noisy, brighter: mean {mean:.3} px, worst {worst:.3}");
    assert!(mean < 0.3, "mean error {mean}");
    assert!(worst < 1.5, "worst error {worst}");
}

#[test]
fn warp_along_the_flow_reproduces_the_original() {
    let (w, h) = (192, 144);
    let a = frame(w, h, 0.0, 0.0, 4);
    let b = frame(w, h, 5.0, -3.0, 4);
    // Pixel p of `a` is at p + flow(p) in `b`: sampling `b` there rebuilds `a`.
    let flow = dense_flow(&a, &b).unwrap();
    let rebuilt = warp(&b, &flow);
    let mut sum = 0.0;
    let mut n = 0;
    for y in 8..h - 8 {
        for x in 8..w - 8 {
            for ch in 0..3 {
                sum += (rebuilt.get_pixel(x, y)[ch] as f32 - a.get_pixel(x, y)[ch] as f32).abs();
                n += 1;
            }
        }
    }
    let mean = sum / n as f32;
    println!("warp: mean |rebuilt − original| {mean:.3} levels");
    assert!(
        mean < 2.0,
        "warped image differs by {mean} levels on average"
    );

    // The exact field rebuilds it exactly (integer shift, bilinear is exact).
    let exact = Flow {
        width: w,
        height: h,
        dx: vec![5.0; (w * h) as usize],
        dy: vec![-3.0; (w * h) as usize],
    };
    let rebuilt = warp(&b, &exact);
    for y in 3..h {
        for x in 0..w - 5 {
            assert_eq!(rebuilt.get_pixel(x, y), a.get_pixel(x, y));
        }
    }
}

#[test]
fn warping_error_measures_flicker_and_blending_lowers_it() {
    let (w, h) = (160, 120);
    let n = (w * h) as usize;
    // Each frame moves (2, 1) px; the flow t → t−1 is (−2, −1).
    let inputs: Vec<RgbImage> = (0..6)
        .map(|t| frame(w, h, 2.0 * t as f32, t as f32, 5))
        .collect();
    let back = Flow {
        width: w,
        height: h,
        dx: vec![-2.0; n],
        dy: vec![-1.0; n],
    };
    let all = vec![true; n];

    // A perfectly warped pair has no warping error.
    let warped = warp(&inputs[0], &back);
    assert_eq!(
        warping_error(&warped, &inputs[0], &back, &all).unwrap(),
        0.0
    );

    // It grows with noise (flicker).
    let e1 = warping_error(&add_noise(&warped, 8.0, 1), &inputs[0], &back, &all).unwrap();
    let e2 = warping_error(&add_noise(&warped, 24.0, 2), &inputs[0], &back, &all).unwrap();
    println!("warping error: noise 8 → {e1:.4}, noise 24 → {e2:.4}");
    assert!(e1 > 0.005 && e2 > 2.0 * e1);

    // "Stylised" frames = inputs with independent noise per frame (per-frame flicker); blending
    // along the estimated flow lowers the warping error.
    let fresh: Vec<RgbImage> = inputs
        .iter()
        .enumerate()
        .map(|(t, f)| add_noise(f, 30.0, 100 + t as u64))
        .collect();
    let mut video = VideoBlender::new(Blender::default());
    let mut outs = Vec::new();
    for (input, styled) in inputs.iter().zip(&fresh) {
        let frame = video.push(input, styled).unwrap();
        outs.push(frame.image);
    }
    let (mut per_frame, mut blended, mut count) = (0.0, 0.0, 0);
    for t in 1..inputs.len() {
        let backward = dense_flow(&inputs[t], &inputs[t - 1]).unwrap();
        let forward = dense_flow(&inputs[t - 1], &inputs[t]).unwrap();
        let mask = reliable(&forward, &backward);
        let (s, c) = warping_error_sum(&fresh[t], &fresh[t - 1], &backward, &mask).unwrap();
        let (s2, _) = warping_error_sum(&outs[t], &outs[t - 1], &backward, &mask).unwrap();
        per_frame += s;
        blended += s2;
        count += c;
    }
    let (per_frame, blended) = (per_frame / count as f64, blended / count as f64);
    println!(
        "per-frame {per_frame:.4}, blended {blended:.4} ({:.2}×)",
        blended / per_frame
    );
    assert!(blended < 0.5 * per_frame);
}

#[test]
fn blend_uses_fresh_pixels_where_unreliable_and_on_cuts() {
    let (w, h) = (64, 48);
    let n = (w * h) as usize;
    let prev = RgbImage::from_pixel(w, h, Rgb([200, 200, 200]));
    let fresh = RgbImage::from_pixel(w, h, Rgb([100, 100, 100]));
    let zero = Flow::zeros(w, h);
    // Left half unreliable.
    let mask: Vec<bool> = (0..n).map(|i| (i as u32 % w) >= w / 2).collect();
    let blender = Blender::new(0.75).unwrap();
    let out = blender.blend(&fresh, &prev, &zero, &mask).unwrap();
    assert_eq!(
        out.get_pixel(5, 20)[0],
        100,
        "unreliable pixel takes the fresh frame"
    );
    assert_eq!(
        out.get_pixel(w - 5, 20)[0],
        175,
        "deep inside: 0.75·200 + 0.25·100"
    );
    let edge = out.get_pixel(w / 2, 20)[0];
    assert!(
        edge > 100 && edge < 175,
        "the mask edge is softened: {edge}"
    );

    // Mostly unreliable: a scene cut, fresh only.
    let few: Vec<bool> = (0..n).map(|i| i % 10 == 0).collect();
    assert!(is_scene_cut(&few));
    assert_eq!(blender.blend(&fresh, &prev, &zero, &few).unwrap(), fresh);
    assert!(Blender::new(1.0).is_err());
    assert!(Blender::new(-0.1).is_err());
}

#[test]
fn unrelated_frames_are_a_scene_cut() {
    let (w, h) = (160, 120);
    let a = frame(w, h, 0.0, 0.0, 7);
    let b = frame(w, h, 0.0, 0.0, 8);
    let mask = reliable(&dense_flow(&a, &b).unwrap(), &dense_flow(&b, &a).unwrap());
    let fraction = mask.iter().filter(|&&r| r).count() as f32 / mask.len() as f32;
    println!("unrelated frames: {fraction:.3} reliable");
    assert!(is_scene_cut(&mask));

    let mut video = VideoBlender::new(Blender::default());
    let first = video.push(&a, &a).unwrap();
    assert!(first.scene_cut);
    let cut = video.push(&b, &b).unwrap();
    assert!(cut.scene_cut);
    assert_eq!(cut.image, b);
    let c = frame(w, h, 1.0, 1.0, 8);
    assert!(!video.push(&c, &c).unwrap().scene_cut);
}

#[test]
fn sizes_must_match() {
    let a = frame(64, 48, 0.0, 0.0, 9);
    let b = frame(48, 64, 0.0, 0.0, 9);
    let err = dense_flow(&a, &b).unwrap_err().to_string();
    assert!(err.contains("one size"), "{err}");
    let flow = Flow::zeros(64, 48);
    assert!(warping_error(&a, &b, &flow, &vec![true; 64 * 48]).is_err());
    assert!(warping_error(&a, &a, &flow, &[true; 10]).is_err());
    assert!(Blender::default()
        .blend(&a, &b, &flow, &vec![true; 64 * 48])
        .is_err());
    assert!(dense_flow(&RgbImage::new(0, 0), &RgbImage::new(0, 0)).is_err());
    // Mismatched flows give an all-unreliable mask (a cut), not a panic.
    let mask = reliable(&Flow::zeros(10, 10), &Flow::zeros(64, 48));
    assert!(mask.iter().all(|&r| !r) && is_scene_cut(&mask));
    // Tiny frames work (the patch shrinks to fit).
    let t = frame(5, 4, 0.0, 0.0, 9);
    assert_eq!(dense_flow(&t, &t).unwrap().dx.len(), 20);
}

/// CPU time of this process so far (user + system, all threads), from /proc (Linux only): on
/// a loaded machine it says what the flow costs better than the wall clock.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Flow timing at 640×360: a synthetic 19 px shift, and real frames from
/// `ffmpeg -i ../shared/data/video/bikes.mp4 -vf scale=640:360 -frames:v 12 /tmp/bikes360/%04d.png`
/// when present ($BIKES_360). `cargo test --release --test video_flow -- --ignored --nocapture flow_timing`
#[test]
#[ignore]
fn flow_timing_640x360() {
    let a = frame(640, 360, 0.0, 0.0, 11);
    let b = frame(640, 360, 17.0, -9.0, 11);
    let mut pairs = vec![(a, b)];
    let dir = std::env::var("BIKES_360").unwrap_or_else(|_| "/tmp/bikes360".into());
    if std::path::Path::new(&dir).is_dir() {
        let frames = load_folder(dir.as_ref());
        for t in 1..frames.len() {
            pairs.push((frames[t - 1].clone(), frames[t].clone()));
        }
    }
    let _ = dense_flow(&pairs[0].0, &pairs[0].1).unwrap();
    let rounds = (40 / pairs.len()).max(1);
    let cpu0 = cpu_seconds();
    let start = std::time::Instant::now();
    let mut fields = 0;
    for _ in 0..rounds {
        for (a, b) in &pairs {
            std::hint::black_box(dense_flow(a, b).unwrap());
            fields += 1;
        }
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0 / fields as f64;
    let cpu_ms = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) => (b - a) * 1000.0 / fields as f64,
        _ => f64::NAN,
    };
    let flow = dense_flow(&pairs[0].0, &pairs[0].1).unwrap();
    let (mean, _) = flow_error(&flow, 17.0, -9.0, 24);

    // The whole per-frame step of a video: both flows (in parallel), the check and the blend.
    let mut video = VideoBlender::new(Blender::default());
    let _ = video.push(&pairs[0].0, &pairs[0].0).unwrap();
    let start = std::time::Instant::now();
    let mut steps = 0;
    for _ in 0..rounds {
        for (_, b) in &pairs {
            std::hint::black_box(video.push(b, b).unwrap());
            steps += 1;
        }
    }
    let step_ms = start.elapsed().as_secs_f64() * 1000.0 / steps as f64;
    let blender = Blender::default();
    let mask = reliable(&flow, &dense_flow(&pairs[0].1, &pairs[0].0).unwrap());
    let start = std::time::Instant::now();
    for _ in 0..10 {
        std::hint::black_box(
            blender
                .blend(&pairs[0].1, &pairs[0].0, &flow, &mask)
                .unwrap(),
        );
    }
    let blend_ms = start.elapsed().as_secs_f64() * 100.0;
    println!("VideoBlender::push 640×360: {step_ms:.1} ms per frame (2 flows + check + blend); blend alone {blend_ms:.1} ms");
    println!(
        "dense_flow 640×360 over {fields} fields ({} pairs): {ms:.1} ms wall, {cpu_ms:.1} ms CPU per field \
         ({} threads); synthetic shift mean error {mean:.3} px",
        pairs.len(),
        rayon::current_num_threads()
    );
}

fn load_folder(dir: &std::path::Path) -> Vec<RgbImage> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| image::open(p).unwrap().to_rgb8())
        .collect()
}

/// Mean gradient magnitude: how much texture (brush strokes) a frame holds, to check blending
/// does not wash the style out.
fn texture_energy(img: &RgbImage) -> f64 {
    let (w, h) = img.dimensions();
    let mut sum = 0.0;
    for y in 0..h - 1 {
        for x in 0..w - 1 {
            for ch in 0..3 {
                let c = img.get_pixel(x, y)[ch] as f64;
                sum += (img.get_pixel(x + 1, y)[ch] as f64 - c).abs()
                    + (img.get_pixel(x, y + 1)[ch] as f64 - c).abs();
            }
        }
    }
    sum / (3.0 * (w - 1) as f64 * (h - 1) as f64 * 255.0)
}

/// The measurement on real frames. Frames from
/// `ffmpeg -i ../shared/data/video/bikes.mp4 -vf scale=480:-2 -frames:v 30 /tmp/bikes/%04d.png`
/// and `atelier stylize /tmp/bikes --method network --style styles/starry-night -o /tmp/bikes-styled`
/// (or $BIKES_INPUT / $BIKES_STYLED). `cargo test --release --test video_flow -- --ignored --nocapture bikes`
#[test]
#[ignore]
fn bikes_warping_error() {
    let input_dir = std::env::var("BIKES_INPUT").unwrap_or_else(|_| "/tmp/bikes".into());
    let styled_dir = std::env::var("BIKES_STYLED").unwrap_or_else(|_| "/tmp/bikes-styled".into());
    let inputs = load_folder(input_dir.as_ref());
    let styled = load_folder(styled_dir.as_ref());
    assert!(inputs.len() >= 2 && inputs.len() == styled.len());
    let n = inputs.len();
    let start = std::time::Instant::now();
    let mut flows = Vec::new(); // (backward t→t−1, mask) for t ≥ 1
    for t in 1..n {
        let backward = dense_flow(&inputs[t], &inputs[t - 1]).unwrap();
        let forward = dense_flow(&inputs[t - 1], &inputs[t]).unwrap();
        let mask = reliable(&forward, &backward);
        flows.push((backward, mask));
    }
    let per_flow_ms = start.elapsed().as_secs_f64() * 1000.0 / (2 * (n - 1)) as f64;
    let pooled = |frames: &[RgbImage]| {
        let (mut s, mut c) = (0.0, 0);
        for t in 1..n {
            let (b, m) = &flows[t - 1];
            let (s1, c1) = warping_error_sum(&frames[t], &frames[t - 1], b, m).unwrap();
            s += s1;
            c += c1;
        }
        s / c.max(1) as f64
    };
    let reliable_share: f64 = flows
        .iter()
        .map(|(_, m)| m.iter().filter(|&&r| r).count() as f64 / m.len() as f64)
        .sum::<f64>()
        / (n - 1) as f64;
    let cuts = flows.iter().filter(|(_, m)| is_scene_cut(m)).count();
    let input_err = pooled(&inputs);
    let per_frame = pooled(&styled);
    let energy_fresh: f64 = styled.iter().map(texture_energy).sum::<f64>() / n as f64;
    // What one bilinear warp costs in texture (interpolation blur).
    let warp_blur: f64 = (1..n)
        .map(|t| {
            texture_energy(&warp(&styled[t - 1], &flows[t - 1].0)) / texture_energy(&styled[t - 1])
        })
        .sum::<f64>()
        / (n - 1) as f64;
    println!("one warp keeps {warp_blur:.3} of the texture energy");
    println!(
        "{n} frames {}×{}: {per_flow_ms:.1} ms per flow field, {:.1}% reliable on average, {cuts} cuts",
        inputs[0].width(),
        inputs[0].height(),
        100.0 * reliable_share
    );
    println!("input warping error {input_err:.4}; per-frame stylised {per_frame:.4}; texture energy {energy_fresh:.4}");
    let variants: Vec<(f32, Interpolation, bool)> = [0.6f32, 0.7, 0.75, 0.8, 0.85]
        .iter()
        .flat_map(|&w| {
            [
                (w, Interpolation::Bilinear, false),
                (w, Interpolation::Cubic, false),
                (w, Interpolation::Cubic, true),
            ]
        })
        .collect();
    for (weight, interpolation, keep) in variants {
        let blender = Blender::new(weight)
            .unwrap()
            .with_interpolation(interpolation)
            .with_keep_contrast(keep);
        let mut outs: Vec<RgbImage> = vec![styled[0].clone()];
        for t in 1..n {
            let (b, m) = &flows[t - 1];
            let out = blender.blend(&styled[t], &outs[t - 1], b, m).unwrap();
            outs.push(out);
        }
        let blended = pooled(&outs);
        let energy: f64 = outs.iter().map(texture_energy).sum::<f64>() / n as f64;
        // How far the output drifts from each frame's own stylisation (style kept?).
        let drift: f64 = outs
            .iter()
            .zip(&styled)
            .map(|(o, s)| {
                o.as_raw()
                    .iter()
                    .zip(s.as_raw())
                    .map(|(&a, &b)| a.abs_diff(b) as f64)
                    .sum::<f64>()
                    / (o.as_raw().len() as f64 * 255.0)
            })
            .sum::<f64>()
            / n as f64;
        println!(
            "weight {weight:.2} {interpolation:?} contrast {keep}: blended {blended:.4} = {:.3}× per-frame; texture energy {:.3}× fresh; mean |out − fresh| {drift:.4}",
            blended / per_frame,
            energy / energy_fresh
        );
        if let Ok(dir) = std::env::var("BIKES_OUT") {
            let dir =
                std::path::Path::new(&dir).join(format!("w{weight:.2}-{interpolation:?}-{keep}"));
            std::fs::create_dir_all(&dir).unwrap();
            for (t, o) in outs.iter().enumerate() {
                o.save(dir.join(format!("{:04}.png", t + 1))).unwrap();
            }
        }
    }
}

/// Scene cuts over a whole clip's frames ($BIKES_ALL, default /tmp/bikes-all, from
/// `ffmpeg -i ../shared/data/video/bikes.mp4 -vf scale=480:-2 /tmp/bikes-all/%04d.png`):
/// prints the frames detected as cuts and the least reliable ones.
/// `cargo test --release --test video_flow -- --ignored --nocapture scene_cuts`
#[test]
#[ignore]
fn bikes_scene_cuts() {
    let dir = std::env::var("BIKES_ALL").unwrap_or_else(|_| "/tmp/bikes-all".into());
    let frames = load_folder(dir.as_ref());
    let mut fractions = Vec::new();
    for t in 1..frames.len() {
        let backward = dense_flow(&frames[t], &frames[t - 1]).unwrap();
        let forward = dense_flow(&frames[t - 1], &frames[t]).unwrap();
        let mask = reliable(&forward, &backward);
        let f = mask.iter().filter(|&&r| r).count() as f32 / mask.len() as f32;
        fractions.push((t + 1, f, is_scene_cut(&mask)));
    }
    let cuts: Vec<usize> = fractions.iter().filter(|c| c.2).map(|c| c.0).collect();
    let mut sorted = fractions.clone();
    sorted.sort_by(|a, b| a.1.total_cmp(&b.1));
    let lowest: Vec<String> = sorted
        .iter()
        .take(8)
        .map(|(t, f, _)| format!("{t}: {f:.2}"))
        .collect();
    let mean = fractions.iter().map(|c| c.1).sum::<f32>() / fractions.len() as f32;
    println!(
        "{} frames: cuts at frames {cuts:?}; mean reliable {mean:.3}; least reliable {}",
        frames.len(),
        lowest.join(", ")
    );
}
