//! `atelier video` and the engine's video jobs: folders of frames in and out (no ffmpeg), video
//! files through ffmpeg (frame count, frame rate and audio kept; odd sizes; variable frame
//! rates), flicker measured and lowered, bad input refused with nothing written, a cancelled job
//! leaving no output. The ffmpeg tests skip themselves (and say so) where ffmpeg is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use atelier::engine::{Engine, EventBody, Method, NetworkStyle, VideoJob};
use candle_core::Device;
use image::{Rgb, RgbImage};

fn atelier() -> Command {
    Command::new(env!("CARGO_BIN_EXE_atelier"))
}

fn has_ffmpeg() -> bool {
    let found = Command::new("ffmpeg").arg("-version").output().is_ok();
    if !found {
        eprintln!("skipping: ffmpeg is not installed (apt-get install ffmpeg)");
    }
    found
}

/// A textured scene panning right by 2 px a frame.
fn moving_frames(dir: &Path, count: u32, width: u32, height: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for t in 0..count {
        let frame = RgbImage::from_fn(width, height, |x, y| {
            let u = x + 2 * t;
            Rgb([
                ((u * 7 + y * 3) % 256) as u8,
                (((u / 6 + y / 6) % 2) * 180 + 30) as u8,
                ((y * 255) / height) as u8,
            ])
        });
        frame.save(dir.join(format!("f{t:03}.png"))).unwrap();
    }
}

fn ffprobe(path: &Path) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,width,height,r_frame_rate,nb_frames",
        ])
        .args(["-of", "compact"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg {args:?}");
}

#[test]
fn a_folder_of_frames_becomes_a_folder_of_stylised_frames_with_less_flicker() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("in");
    moving_frames(&frames, 6, 64, 48);
    let out = dir.path().join("out");
    let output = atelier()
        .args(["video", "--style", "styles/starry-night", "--report", "-o"])
        .arg(&out)
        .arg(&frames)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert_eq!(written.len(), 6);
    let first = image::open(out.join("00001.png")).unwrap();
    assert_eq!((first.width(), first.height()), (64, 48));
    assert!(stdout.contains("per-frame processing"), "{stdout}");
    let number = |label: &str| -> f64 {
        let line = stdout.lines().find(|l| l.contains(label)).unwrap();
        line.split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap()
    };
    let (per_frame, result) = (number("per-frame processing"), number("this result"));
    assert!(result < per_frame, "{stdout}");
    // Nothing else was left beside the output.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn each_frame_is_written_in_order_as_the_method_painted_it() {
    // Frame t is blended and written while frame t+1 is painted: with no temporal blend every
    // output frame must be exactly that frame stylised as a photo, in its own place.
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("in");
    moving_frames(&frames, 5, 64, 48);
    let out = dir.path().join("out");
    let output = atelier()
        .args([
            "video",
            "-q",
            "--style",
            "styles/starry-night",
            "--temporal",
            "0",
        ])
        .arg("-o")
        .arg(&out)
        .arg(&frames)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (t, name) in [(0, "00001.png"), (2, "00003.png"), (4, "00005.png")] {
        let still = dir.path().join(format!("still{t}.png"));
        let status = atelier()
            .args([
                "stylize",
                "-q",
                "--method",
                "network",
                "--style",
                "styles/starry-night",
            ])
            .arg(frames.join(format!("f{t:03}.png")))
            .arg("-o")
            .arg(&still)
            .status()
            .unwrap();
        assert!(status.success());
        let (frame, still) = (
            image::open(out.join(name)).unwrap().to_rgb8(),
            image::open(&still).unwrap().to_rgb8(),
        );
        assert!(frame == still, "frame {name} is not frame {t} stylised");
    }
}

#[test]
fn frames_are_read_at_the_size_they_are_painted_and_the_stages_are_timed() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("in");
    moving_frames(&frames, 3, 96, 64);
    let mut sources = vec![frames];
    if has_ffmpeg() {
        let clip = dir.path().join("clip.mp4");
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=96x64:rate=10",
            "-frames:v",
            "3",
            "-pix_fmt",
            "yuv420p",
            clip.to_str().unwrap(),
        ]);
        sources.push(clip);
    }
    for (k, source) in sources.iter().enumerate() {
        let out = dir.path().join(format!("out{k}"));
        let output = atelier()
            .args(["video", "--style", "styles/starry-night", "--size", "48"])
            .args(["--report", "-o"])
            .arg(&out)
            .arg(source)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let first = image::open(out.join("00001.png")).unwrap();
        assert_eq!((first.width(), first.height()), (48, 32), "{source:?}");
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 3);
        let stages = stdout
            .lines()
            .find(|l| l.starts_with("time per frame:"))
            .unwrap_or_else(|| panic!("no stage times: {stdout}"));
        for stage in ["decode", "stylise", "flow", "blend", "write"] {
            assert!(stages.contains(stage), "{stages}");
        }
    }
}

#[test]
fn a_video_keeps_its_frame_count_rate_and_audio() {
    if !has_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=10",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440",
        "-t",
        "1",
        "-shortest",
        "-pix_fmt",
        "yuv420p",
        clip.to_str().unwrap(),
    ]);
    let out = dir.path().join("out.mp4");
    let status = atelier()
        .args(["video", "-q", "--style", "styles/great-wave", "-o"])
        .arg(&out)
        .arg(&clip)
        .status()
        .unwrap();
    assert!(status.success());
    let probe = ffprobe(&out);
    assert!(
        probe.contains("codec_type=video|width=64|height=48|r_frame_rate=10/1|nb_frames=10"),
        "{probe}"
    );
    assert!(probe.contains("codec_type=audio"), "{probe}");
    // Scrubbing: one frame, by index.
    let frame = atelier::engine::clip_frame_at(&clip, 5).unwrap();
    assert_eq!(frame.dimensions(), (64, 48));
    assert!(atelier::engine::clip_frame_at(&clip, 500).is_err());
    let info = atelier::engine::describe_clip(&clip).unwrap();
    assert_eq!((info.frames, info.has_audio), (Some(10), true));
}

#[test]
fn odd_sizes_and_variable_frame_rates_work_and_say_so() {
    if !has_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("odd.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=65x47:rate=10",
        "-t",
        "0.5",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv444p",
        odd.to_str().unwrap(),
    ]);
    let out = dir.path().join("odd-out.mp4");
    let output = atelier()
        .args(["video", "-q", "--style", "styles/starry-night", "-o"])
        .arg(&out)
        .arg(&odd)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("even sides"), "{stderr}");
    assert!(ffprobe(&out).contains("width=66|height=48|r_frame_rate=10/1|nb_frames=5"));

    // Ten frames at 10/s, then ten at 30/s: every frame is kept.
    let (a, b) = (dir.path().join("a.mp4"), dir.path().join("b.mp4"));
    for (path, rate) in [(&a, 10), (&b, 30)] {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc=size=64x48:rate={rate}"),
            "-frames:v",
            "10",
            "-pix_fmt",
            "yuv420p",
            "-video_track_timescale",
            "90000",
            path.to_str().unwrap(),
        ]);
    }
    let list = dir.path().join("list.txt");
    std::fs::write(
        &list,
        format!("file '{}'\nfile '{}'\n", a.display(), b.display()),
    )
    .unwrap();
    let vfr = dir.path().join("vfr.mp4");
    ffmpeg(&[
        "-f",
        "concat",
        "-safe",
        "0",
        "-i",
        list.to_str().unwrap(),
        "-c",
        "copy",
        vfr.to_str().unwrap(),
    ]);
    let out = dir.path().join("vfr-out.mp4");
    let output = atelier()
        .args(["video", "-q", "--style", "styles/starry-night", "-o"])
        .arg(&out)
        .arg(&vfr)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("variable frame rate"), "{stderr}");
    assert!(ffprobe(&out).contains("nb_frames=20"), "{}", ffprobe(&out));
}

#[test]
fn bad_clips_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let run = |input: &Path, out: &Path| {
        let output = atelier()
            .args(["video", "-q", "--style", "styles/starry-night", "-o"])
            .arg(out)
            .arg(input)
            .output()
            .unwrap();
        assert!(!output.status.success());
        assert!(!out.exists(), "{} was written", out.display());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let said = run(&empty, &dir.path().join("out-frames"));
    assert!(said.contains("no frames"), "{said}");
    if has_ffmpeg() {
        let text = dir.path().join("notes.mp4");
        std::fs::write(&text, "not a video").unwrap();
        let said = run(&text, &dir.path().join("out.mp4"));
        assert!(said.contains("not a video"), "{said}");
        // No frames: a container with an audio track only.
        let silent = dir.path().join("audio-only.mkv");
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            "0.2",
            silent.to_str().unwrap(),
        ]);
        let said = run(&silent, &dir.path().join("out2.mp4"));
        assert!(said.contains("no video stream"), "{said}");
    }
    let photo_dir = dir.path().join("frames");
    moving_frames(&photo_dir, 2, 32, 24);
    let said = run(&photo_dir, &dir.path().join("out.avi"));
    assert!(said.contains(".mp4"), "{said}");
    // A resumable optimisation video whose output folder is taken: refused at its first write,
    // and its work folder (no finished frame in it) goes too.
    let taken = dir.path().join("taken");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("keep.txt"), "mine").unwrap();
    let output = atelier()
        .args(["video", "-q", "--method", "optimize", "--style"])
        .arg(photo_dir.join("f000.png"))
        .args(["--size", "24", "--steps", "2", "-o"])
        .arg(&taken)
        .arg(&photo_dir)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_eq!(std::fs::read_dir(&taken).unwrap().count(), 1);
    let leftovers: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_cancelled_video_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("in");
    moving_frames(&frames, 40, 96, 64);
    let out = dir.path().join("out");
    let engine = Engine::new(Device::Cpu).unwrap();
    let model = atelier::styles::model_in_folder(Path::new("styles/starry-night")).unwrap();
    let id = engine
        .video(VideoJob {
            input: frames,
            output: out.clone(),
            method: Method::Network {
                styles: vec![NetworkStyle::new(model, None)],
                size: None,
                preserve_color: false,
                stroke: 1.0,
            },
            strength: 1.0,
            regions: None,
            temporal: None,
            resumable: false,
            max_frames: None,
            measure_flicker: false,
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut cancelled = false;
    let mut frames_seen = 0;
    while Instant::now() < deadline {
        let Ok(event) = engine.events().recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        match event.body {
            EventBody::Progress { step, .. } => {
                frames_seen = step;
                if step == 2 {
                    engine.cancel(id);
                }
            }
            EventBody::Cancelled => {
                cancelled = true;
                break;
            }
            EventBody::Finished(_) | EventBody::Failed(_) => break,
            _ => {}
        }
    }
    assert!(
        cancelled,
        "the job was not cancelled (saw {frames_seen} frames)"
    );
    assert!(!out.exists());
    let hidden = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(hidden, 0, "temporary frames were left behind");
}
