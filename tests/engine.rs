//! Engine behaviour: events in order, latest job wins, cancellation within one step, failures
//! as events, caching between jobs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier::engine::{Engine, Event, Job, JobId, Method};
use atelier::nn::transformer::TransformerNet;
use atelier::stylize::gatys::{GatysConfig, StyleImage};
use image::{Rgb, RgbImage};

const VGG: &str = "../shared/models/vgg16-features.safetensors";

fn shared_vgg() -> Option<PathBuf> {
    let p = PathBuf::from(VGG);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {VGG} not found (see README: getting the VGG weights)");
        None
    }
}

fn gradient_image(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
    })
}

fn stripes(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        if (x / 4 + y / 4) % 2 == 0 {
            Rgb([230, 40, 30])
        } else {
            Rgb([20, 40, 200])
        }
    })
}

fn optimize_job(vgg: PathBuf, size: u32, steps: usize) -> Job {
    Job {
        content: Arc::new(gradient_image(48, 40)),
        method: Method::Optimize {
            vgg,
            styles: vec![StyleImage {
                image: Arc::new(stripes(40, 40)),
                weight: 1.0,
            }],
            config: GatysConfig {
                size,
                steps,
                preview_every: 2,
                ..GatysConfig::default()
            },
        },
        strength: 1.0,
    }
}

/// Collects events of `job` until its terminal event.
fn events_until_done(engine: &Engine, job: JobId, limit: Duration) -> Vec<Event> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match engine.events().recv_timeout(Duration::from_millis(200)) {
            Ok(e) if e.job() == job => {
                let done = e.is_terminal();
                seen.push(e);
                if done {
                    return seen;
                }
            }
            Ok(_) => {}
            Err(_) => {}
        }
    }
    panic!("job {job} did not finish within {limit:?}");
}

#[test]
fn optimize_job_streams_progress_and_previews_then_finishes() {
    let Some(vgg) = shared_vgg() else { return };
    let engine = Engine::cpu();
    let id = engine.submit(optimize_job(vgg, 48, 4));
    let events = events_until_done(&engine, id, Duration::from_secs(300));
    assert!(matches!(events[0], Event::Started { total_steps: 4, .. }));
    let steps: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress { step, .. } => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4]);
    assert!(events.iter().any(|e| matches!(e, Event::Preview { .. })));
    match events.last() {
        Some(Event::Finished { output, .. }) => {
            assert_eq!(output.image.dimensions(), (48, 40));
            let stats = &output.stats;
            let losses = stats.losses.expect("losses");
            assert!(losses.style.is_finite() && losses.style >= 0.0);
            assert!(stats.initial_style_loss.expect("initial") > losses.style);
        }
        other => panic!("expected Finished, got {:?}", other.map(|e| e.job())),
    }
}

#[test]
fn newer_job_supersedes_running_one_and_cancel_is_prompt() {
    let Some(vgg) = shared_vgg() else { return };
    let engine = Engine::cpu();
    let first = engine.submit(optimize_job(vgg.clone(), 64, 10_000));
    // Wait until the first job is really stepping.
    loop {
        match engine.events().recv_timeout(Duration::from_secs(120)) {
            Ok(Event::Progress { job, .. }) if job == first => break,
            Ok(_) => {}
            Err(e) => panic!("no progress from the first job: {e}"),
        }
    }
    let second = engine.submit(optimize_job(vgg, 48, 2));
    let mut progress_after_supersede = 0;
    let mut first_outcome = None;
    let mut second_outcome = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while (first_outcome.is_none() || second_outcome.is_none()) && Instant::now() < deadline {
        let Ok(e) = engine.events().recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        match (&e, e.job()) {
            (Event::Progress { .. }, j) if j == first => progress_after_supersede += 1,
            (_, j) if j == first && e.is_terminal() => first_outcome = Some(e),
            (_, j) if j == second && e.is_terminal() => second_outcome = Some(e),
            _ => {}
        }
    }
    assert!(matches!(first_outcome, Some(Event::Cancelled { .. })));
    assert!(matches!(second_outcome, Some(Event::Finished { .. })));
    // Cancellation is checked before every loss evaluation: at most the step in flight completes.
    assert!(
        progress_after_supersede <= 1,
        "{progress_after_supersede} steps after cancel"
    );

    // Explicit cancel of a long job.
    let third = engine.submit(optimize_job(PathBuf::from(VGG), 64, 10_000));
    loop {
        match engine.events().recv_timeout(Duration::from_secs(120)) {
            Ok(Event::Progress { job, .. }) if job == third => break,
            Ok(_) => {}
            Err(e) => panic!("no progress from the third job: {e}"),
        }
    }
    engine.cancel();
    let events = events_until_done(&engine, third, Duration::from_secs(60));
    let late_steps = events
        .iter()
        .filter(|e| matches!(e, Event::Progress { .. }))
        .count();
    assert!(late_steps <= 1);
    assert!(matches!(events.last(), Some(Event::Cancelled { .. })));
}

#[test]
fn failures_are_events_not_crashes() {
    let engine = Engine::cpu();
    let missing = engine.submit(Job {
        content: Arc::new(gradient_image(16, 16)),
        method: Method::Network {
            model: PathBuf::from("no/such/model.safetensors"),
            size: None,
            preserve_color: false,
        },
        strength: 1.0,
    });
    let events = events_until_done(&engine, missing, Duration::from_secs(30));
    match events.last() {
        Some(Event::Failed { message, .. }) => assert!(message.contains("model.safetensors")),
        _ => panic!("expected Failed"),
    }

    let bad_strength = engine.submit(Job {
        content: Arc::new(gradient_image(16, 16)),
        method: Method::Network {
            model: PathBuf::from("whatever"),
            size: None,
            preserve_color: false,
        },
        strength: 2.0,
    });
    let events = events_until_done(&engine, bad_strength, Duration::from_secs(30));
    match events.last() {
        Some(Event::Failed { message, .. }) => assert!(message.contains("strength")),
        _ => panic!("expected Failed"),
    }
}

#[test]
fn network_job_runs_and_blends_with_strength() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.safetensors");
    let net = TransformerNet::random(&candle_core::Device::Cpu, 3).unwrap();
    net.save_safetensors(&model, candle_core::DType::F32, Default::default())
        .unwrap();

    let engine = Engine::cpu();
    let content = Arc::new(gradient_image(37, 29));
    let run = |strength: f32| {
        let id = engine.submit(Job {
            content: content.clone(),
            method: Method::Network {
                model: model.clone(),
                size: None,
                preserve_color: false,
            },
            strength,
        });
        match events_until_done(&engine, id, Duration::from_secs(60)).pop() {
            Some(Event::Finished { output, .. }) => output,
            _ => panic!("network job did not finish"),
        }
    };
    let full = run(1.0);
    assert_eq!(full.image.dimensions(), (37, 29));
    assert_eq!(*full.image, *full.stylized);
    let none = run(0.0);
    assert_eq!(*none.image, *content);
}

#[test]
fn network_job_preserves_the_photos_colours_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.safetensors");
    TransformerNet::random(&candle_core::Device::Cpu, 5)
        .unwrap()
        .save_safetensors(&model, candle_core::DType::F32, Default::default())
        .unwrap();
    let engine = Engine::cpu();
    let content = Arc::new(gradient_image(33, 27));
    let run = |preserve_color: bool| {
        let id = engine.submit(Job {
            content: content.clone(),
            method: Method::Network {
                model: model.clone(),
                size: None,
                preserve_color,
            },
            strength: 1.0,
        });
        match events_until_done(&engine, id, Duration::from_secs(60)).pop() {
            Some(Event::Finished { output, .. }) => output.stylized,
            _ => panic!("network job did not finish"),
        }
    };
    // Mean YIQ chroma distance to the photo.
    let chroma_gap = |image: &RgbImage| {
        let iq = |p: &Rgb<u8>| {
            let (r, g, b) = (p[0] as f32, p[1] as f32, p[2] as f32);
            (
                0.596 * r - 0.274 * g - 0.322 * b,
                0.211 * r - 0.523 * g + 0.312 * b,
            )
        };
        let total: f32 = image
            .pixels()
            .zip(content.pixels())
            .map(|(a, b)| {
                let ((ia, qa), (ib, qb)) = (iq(a), iq(b));
                (ia - ib).abs() + (qa - qb).abs()
            })
            .sum();
        total / (image.width() * image.height()) as f32
    };
    let kept = run(true);
    let free = run(false);
    assert_eq!(kept.dimensions(), (33, 27));
    assert!(chroma_gap(&kept) < 6.0, "chroma gap {}", chroma_gap(&kept));
    assert!(
        chroma_gap(&free) > chroma_gap(&kept),
        "the plain network changes the colours more"
    );
}
