//! Engine behaviour: one protocol for three lanes. Events in order; previews latest-wins with
//! their images in a latest-value slot; renders queued and cancelled by id; failures typed;
//! cancellation within one step; caching between jobs. The lane contracts run on random
//! networks (no `../shared`); the optimisation tests use the development VGG when present.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier::engine::{
    Engine, Event, EventBody, Failure, GatysConfig, Job, JobId, JobKind, Method, NetworkStyle,
    StyleImage,
};
use atelier::nn::transformer::TransformerNet;
use image::RgbImage;

mod common;
use common::fixtures::{chroma_gap, gradient_image, random_model, random_vgg, shared_vgg, stripes};

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
        regions: None,
    }
}

fn network_job(model: &Path, content: Arc<RgbImage>) -> Job {
    Job {
        content,
        method: Method::Network {
            styles: vec![NetworkStyle::new(model, None)],
            size: None,
            preserve_color: false,
            stroke: 1.0,
        },
        strength: 1.0,
        regions: None,
    }
}

/// Collects events of `job` until its terminal event.
fn events_until_done(engine: &Engine, job: JobId, limit: Duration) -> Vec<Event> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match engine.events().recv_timeout(Duration::from_millis(200)) {
            Ok(e) if e.job == job => {
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

/// Key under which [`events_of_all`] lists the terminal events in the order they arrived.
const ENDED_ORDER: JobId = 0;

/// Every event until each of `jobs` has ended, grouped by job (ids start at 1).
fn events_of_all(engine: &Engine, jobs: &[JobId], limit: Duration) -> HashMap<JobId, Vec<Event>> {
    let deadline = Instant::now() + limit;
    let mut seen: HashMap<JobId, Vec<Event>> = HashMap::new();
    let mut open: std::collections::HashSet<JobId> = jobs.iter().copied().collect();
    while !open.is_empty() {
        assert!(Instant::now() < deadline, "{} jobs did not end", open.len());
        let Ok(event) = engine.events().recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        if event.is_terminal() {
            assert!(
                open.remove(&event.job),
                "a second terminal event for {}",
                event.job
            );
            seen.entry(ENDED_ORDER).or_default().push(event.clone());
        }
        seen.entry(event.job).or_default().push(event);
    }
    seen
}

fn terminal(events: &[Event]) -> &EventBody {
    let ends: Vec<&Event> = events.iter().filter(|e| e.is_terminal()).collect();
    assert_eq!(ends.len(), 1, "exactly one terminal event");
    assert!(
        events.last().is_some_and(Event::is_terminal),
        "terminal event last"
    );
    &ends[0].body
}

/// A render that keeps the engine busy for a while (a random network on a large photo), so
/// that jobs submitted behind it are still queued when the test cancels them.
fn gate(engine: &Engine, model: &Path) -> JobId {
    engine
        .render(network_job(model, Arc::new(gradient_image(1400, 1400))))
        .unwrap()
}

#[test]
fn render_lane_runs_jobs_in_order_and_cancels_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.safetensors");
    random_model(&model, 7);
    let engine = Engine::cpu().unwrap();
    let first = gate(&engine, &model);
    let content = Arc::new(gradient_image(20, 16));
    let mut ids = Vec::new();
    for i in 0..100 {
        let id = engine.render(network_job(&model, content.clone())).unwrap();
        if i % 2 == 1 {
            assert!(engine.cancel(id), "job {id} is still queued");
        }
        ids.push(id);
    }
    let mut all = ids.clone();
    all.push(first);
    let events = events_of_all(&engine, &all, Duration::from_secs(600));
    assert!(matches!(terminal(&events[&first]), EventBody::Finished(_)));
    let mut finished = Vec::new();
    let mut cancelled = 0;
    for (i, id) in ids.iter().enumerate() {
        let job_events = &events[id];
        assert!(job_events
            .iter()
            .all(|e| e.kind == JobKind::Render && e.job == *id));
        match terminal(job_events) {
            EventBody::Finished(output) => {
                assert_eq!(i % 2, 0, "job {id} was cancelled but finished");
                assert_eq!(output.image.dimensions(), (20, 16));
                finished.push(*id);
            }
            EventBody::Cancelled => {
                assert_eq!(i % 2, 1, "job {id} was not cancelled");
                // Cancelled while queued: it never started.
                assert_eq!(job_events.len(), 1);
                cancelled += 1;
            }
            _ => panic!("job {id} neither finished nor was cancelled"),
        }
    }
    assert_eq!((finished.len(), cancelled), (50, 50));
    // Renders run in submission order: they finish sorted by id (cancelled ones end as soon as
    // the worker looks at the queue, ahead of their turn).
    let order: Vec<JobId> = events[&ENDED_ORDER]
        .iter()
        .filter(|e| matches!(e.body, EventBody::Finished(_)))
        .map(|e| e.job)
        .collect();
    assert_eq!(order.len(), 51);
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert_eq!(engine.live_jobs(JobKind::Render), 0);
    // A job that has ended can no longer be cancelled.
    assert!(!engine.cancel(ids[0]));
}

#[test]
fn previews_are_latest_wins_and_do_not_cancel_renders() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.safetensors");
    random_model(&model, 3);
    let engine = Engine::cpu().unwrap();
    let render = gate(&engine, &model);
    let content = Arc::new(gradient_image(24, 18));
    let previews: Vec<JobId> = (0..10)
        .map(|_| {
            engine
                .preview(network_job(&model, content.clone()))
                .unwrap()
        })
        .collect();
    let mut all = previews.clone();
    all.push(render);
    let events = events_of_all(&engine, &all, Duration::from_secs(300));
    // The render was not superseded by the previews.
    assert!(matches!(terminal(&events[&render]), EventBody::Finished(_)));
    for (i, id) in previews.iter().enumerate() {
        let body = terminal(&events[id]);
        if i + 1 == previews.len() {
            assert!(
                matches!(body, EventBody::Finished(_)),
                "the newest preview runs"
            );
        } else {
            assert!(
                matches!(body, EventBody::Cancelled),
                "preview {i} was superseded"
            );
        }
        assert!(events[id].iter().all(|e| e.kind == JobKind::Preview));
    }
}

#[test]
fn preview_images_wait_in_a_latest_value_slot() {
    let dir = tempfile::tempdir().unwrap();
    let vgg = dir.path().join("vgg.safetensors");
    random_vgg(&vgg);
    let engine = Engine::cpu().unwrap();
    let mut job = optimize_job(vgg, 32, 6);
    if let Method::Optimize { config, .. } = &mut job.method {
        config.preview_every = 1;
    }
    let id = engine.preview(job).unwrap();
    // Nobody takes the previews while the job runs: only the newest is kept.
    let events = events_until_done(&engine, id, Duration::from_secs(300));
    let announced: Vec<usize> = events
        .iter()
        .filter_map(|e| match e.body {
            EventBody::Preview { step, .. } => Some(step),
            _ => None,
        })
        .collect();
    assert!(announced.len() >= 6, "{announced:?}");
    let frame = engine.take_preview(JobKind::Preview).expect("a preview");
    assert_eq!(frame.job, id);
    assert_eq!(frame.step, *announced.last().unwrap());
    assert!(
        engine.take_preview(JobKind::Preview).is_none(),
        "taken once"
    );
    assert!(
        engine.take_preview(JobKind::Render).is_none(),
        "lanes have their own slot"
    );
}

#[test]
fn failures_carry_a_typed_reason() {
    let engine = Engine::cpu().unwrap();
    let missing = engine
        .render(network_job(
            Path::new("no/such/model.safetensors"),
            Arc::new(gradient_image(16, 16)),
        ))
        .unwrap();
    let events = events_until_done(&engine, missing, Duration::from_secs(30));
    match terminal(&events) {
        EventBody::Failed(Failure::BadModel { path, .. }) => {
            assert!(path.ends_with("model.safetensors"))
        }
        _ => panic!("expected a bad-model failure"),
    }

    let mut bad = network_job(Path::new("whatever"), Arc::new(gradient_image(16, 16)));
    bad.strength = 2.0;
    let bad_strength = engine.render(bad).unwrap();
    let events = events_until_done(&engine, bad_strength, Duration::from_secs(30));
    match terminal(&events) {
        EventBody::Failed(Failure::InvalidArgument(message)) => {
            assert!(message.contains("strength"))
        }
        _ => panic!("expected an invalid-argument failure"),
    }

    let dir = tempfile::tempdir().unwrap();
    let corrupt_vgg = dir.path().join("vgg.safetensors");
    std::fs::write(&corrupt_vgg, b"not a weights file").unwrap();
    let id = engine
        .render(optimize_job(corrupt_vgg.clone(), 32, 2))
        .unwrap();
    let events = events_until_done(&engine, id, Duration::from_secs(30));
    match terminal(&events) {
        EventBody::Failed(Failure::BadModel { path, .. }) => assert_eq!(path, &corrupt_vgg),
        _ => panic!("expected a bad-model failure for the VGG"),
    }
}

#[test]
fn optimize_job_streams_progress_and_previews_then_finishes() {
    let Some(vgg) = shared_vgg() else { return };
    let engine = Engine::cpu().unwrap();
    let id = engine.preview(optimize_job(vgg, 48, 4)).unwrap();
    let events = events_until_done(&engine, id, Duration::from_secs(300));
    assert!(matches!(
        events[0].body,
        EventBody::Started { total_steps: 4 }
    ));
    let steps: Vec<usize> = events
        .iter()
        .filter_map(|e| match e.body {
            EventBody::Progress { step, .. } => Some(step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4]);
    assert!(events
        .iter()
        .any(|e| matches!(e.body, EventBody::Preview { .. })));
    match events.last().map(|e| &e.body) {
        Some(EventBody::Finished(output)) => {
            assert_eq!(output.image.dimensions(), (48, 40));
            let stats = &output.stats;
            let losses = stats.losses.expect("losses");
            assert!(losses.style.is_finite() && losses.style >= 0.0);
            assert!(stats.initial_style_loss.expect("initial") > losses.style);
        }
        _ => panic!("expected Finished"),
    }
}

#[test]
fn newer_job_supersedes_running_one_and_cancel_is_prompt() {
    let Some(vgg) = shared_vgg() else { return };
    let engine = Engine::cpu().unwrap();
    let first = engine
        .preview(optimize_job(vgg.clone(), 64, 10_000))
        .unwrap();
    // Wait until the first job is really stepping.
    loop {
        match engine.events().recv_timeout(Duration::from_secs(120)) {
            Ok(Event {
                job,
                body: EventBody::Progress { .. },
                ..
            }) if job == first => break,
            Ok(_) => {}
            Err(e) => panic!("no progress from the first job: {e}"),
        }
    }
    let second = engine.preview(optimize_job(vgg, 48, 2)).unwrap();
    let mut progress_after_supersede = 0;
    let mut first_outcome = None;
    let mut second_outcome = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while (first_outcome.is_none() || second_outcome.is_none()) && Instant::now() < deadline {
        let Ok(e) = engine.events().recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        match (&e.body, e.job) {
            (EventBody::Progress { .. }, j) if j == first => progress_after_supersede += 1,
            (_, j) if j == first && e.is_terminal() => first_outcome = Some(e),
            (_, j) if j == second && e.is_terminal() => second_outcome = Some(e),
            _ => {}
        }
    }
    assert!(matches!(
        first_outcome.map(|e| e.body),
        Some(EventBody::Cancelled)
    ));
    assert!(matches!(
        second_outcome.map(|e| e.body),
        Some(EventBody::Finished(_))
    ));
    // Cancellation is checked before every loss evaluation: at most the step in flight completes.
    assert!(
        progress_after_supersede <= 1,
        "{progress_after_supersede} steps after cancel"
    );

    // Explicit cancel of a long job.
    let third = engine
        .render(optimize_job(shared_vgg().unwrap(), 64, 10_000))
        .unwrap();
    loop {
        match engine.events().recv_timeout(Duration::from_secs(120)) {
            Ok(Event {
                job,
                body: EventBody::Progress { .. },
                ..
            }) if job == third => break,
            Ok(_) => {}
            Err(e) => panic!("no progress from the third job: {e}"),
        }
    }
    assert!(engine.cancel(third));
    let events = events_until_done(&engine, third, Duration::from_secs(60));
    let late_steps = events
        .iter()
        .filter(|e| matches!(e.body, EventBody::Progress { .. }))
        .count();
    assert!(late_steps <= 1);
    assert!(matches!(
        events.last().map(|e| &e.body),
        Some(EventBody::Cancelled)
    ));
}

#[test]
fn network_job_runs_and_blends_with_strength() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.safetensors");
    let net = TransformerNet::random(&candle_core::Device::Cpu, 3).unwrap();
    net.save_safetensors(&model, candle_core::DType::F32, Default::default())
        .unwrap();

    let engine = Engine::cpu().unwrap();
    let content = Arc::new(gradient_image(37, 29));
    let run = |strength: f32| {
        let id = engine.preview(Job {
            content: content.clone(),
            method: Method::Network {
                styles: vec![NetworkStyle::new(model.clone(), None)],
                size: None,
                preserve_color: false,
                stroke: 1.0,
            },
            strength,
            regions: None,
        });
        match events_until_done(&engine, id.unwrap(), Duration::from_secs(60)).pop() {
            Some(Event {
                body: EventBody::Finished(output),
                ..
            }) => output,
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
    let engine = Engine::cpu().unwrap();
    let content = Arc::new(gradient_image(33, 27));
    let run = |preserve_color: bool| {
        let id = engine.preview(Job {
            content: content.clone(),
            method: Method::Network {
                styles: vec![NetworkStyle::new(model.clone(), None)],
                size: None,
                preserve_color,
                stroke: 1.0,
            },
            strength: 1.0,
            regions: None,
        });
        match events_until_done(&engine, id.unwrap(), Duration::from_secs(60)).pop() {
            Some(Event {
                body: EventBody::Finished(output),
                ..
            }) => output.stylized,
            _ => panic!("network job did not finish"),
        }
    };
    let chroma_gap = |image: &RgbImage| chroma_gap(image, &content);
    let kept = run(true);
    let free = run(false);
    assert_eq!(kept.dimensions(), (33, 27));
    assert!(chroma_gap(&kept) < 6.0, "chroma gap {}", chroma_gap(&kept));
    assert!(
        chroma_gap(&free) > chroma_gap(&kept),
        "the plain network changes the colours more"
    );
}

#[test]
fn the_stroke_scale_runs_the_network_at_another_size_and_keeps_the_photos() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("styles/starry-night/model.safetensors");
    let engine = Engine::cpu().unwrap();
    let content = Arc::new(gradient_image(160, 120));
    let run = |stroke: f64| {
        let id = engine.render(Job {
            content: content.clone(),
            method: Method::Network {
                styles: vec![NetworkStyle::new(model.clone(), None)],
                size: None,
                preserve_color: false,
                stroke,
            },
            strength: 1.0,
            regions: None,
        });
        events_until_done(&engine, id.unwrap(), Duration::from_secs(120)).pop()
    };
    let finished = |event: Option<Event>| match event {
        Some(Event {
            body: EventBody::Finished(output),
            ..
        }) => output,
        _ => panic!("the job did not finish"),
    };
    let as_trained = finished(run(1.0));
    let large = finished(run(2.0));
    assert_eq!(large.image.dimensions(), (160, 120));
    let differ = as_trained
        .image
        .as_raw()
        .iter()
        .zip(large.image.as_raw())
        .filter(|(a, b)| a.abs_diff(**b) > 8)
        .count();
    assert!(differ > as_trained.image.as_raw().len() / 10, "{differ}");
    match run(0.0) {
        Some(Event {
            body: EventBody::Failed(failure),
            ..
        }) => assert!(failure.to_string().contains("stroke scale"), "{failure}"),
        _ => panic!("a zero stroke scale must fail"),
    }
}
