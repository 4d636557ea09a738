//! Frames in and out: a video file through the `ffmpeg` program (raw RGB frames over pipes,
//! the audio track copied), or a folder of images (no ffmpeg needed). Outputs appear only when
//! complete: a video is encoded into a temporary file renamed at the end, a folder of frames is
//! filled under a temporary name and renamed; a run stopped half-way leaves neither.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use image::RgbImage;

use crate::error::{Error, Result};
use crate::imaging::{self, OutputFormat, UnfinishedWrite};

/// How to get ffmpeg when it is missing.
const INSTALL_FFMPEG: &str = "install it (Debian/Ubuntu: sudo apt-get install ffmpeg; macOS: \
     brew install ffmpeg), or give a folder of frames instead of a video file";

/// What a clip holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipInfo {
    pub width: u32,
    pub height: u32,
    /// Frames per second as ffmpeg states it (numerator, denominator).
    pub frame_rate: (u32, u32),
    /// Frames, when the container says (a folder: always).
    pub frames: Option<u64>,
    pub has_audio: bool,
    /// The container's average rate differs from its base rate: frames are read in order and
    /// written at the constant [`Self::frame_rate`].
    pub variable_frame_rate: bool,
}

impl ClipInfo {
    pub fn fps(&self) -> f64 {
        f64::from(self.frame_rate.0) / f64::from(self.frame_rate.1.max(1))
    }
}

/// Whether `path` is read as a folder of frames (else as a video file through ffmpeg).
pub fn is_frame_folder(path: &Path) -> bool {
    path.is_dir()
}

/// Runs `program` with `args`, failing with how to install ffmpeg when it is missing.
fn tool(program: &str) -> Command {
    let mut command = Command::new(program);
    command.stdin(Stdio::null());
    command
}

fn missing_tool(program: &str, error: &std::io::Error) -> Error {
    if error.kind() == std::io::ErrorKind::NotFound {
        Error::invalid(format!(
            "video files need the `{program}` program, which is not installed: {INSTALL_FFMPEG}"
        ))
    } else {
        Error::invalid(format!("cannot run {program}: {error}"))
    }
}

/// The clip's size, rate, frame count and audio, from `ffprobe`.
pub fn probe(path: &Path) -> Result<ClipInfo> {
    if !path.exists() {
        return Err(Error::image(path, "no such file"));
    }
    let output = tool("ffprobe")
        .args([
            "-v",
            "error",
            "-of",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(path)
        .output()
        .map_err(|e| missing_tool("ffprobe", &e))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::image(
            path,
            format!("not a video ffmpeg can read ({})", first_line(&stderr)),
        ));
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| Error::image(path, format!("ffprobe gave unreadable output: {e}")))?;
    let streams = json["streams"].as_array().cloned().unwrap_or_default();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .ok_or_else(|| Error::image(path, "not a video: it holds no video stream"))?;
    let has_audio = streams.iter().any(|s| s["codec_type"] == "audio");
    let width = video["width"].as_u64().unwrap_or(0) as u32;
    let height = video["height"].as_u64().unwrap_or(0) as u32;
    if width == 0 || height == 0 {
        return Err(Error::image(path, "the video stream has no picture size"));
    }
    let base = parse_rate(video["r_frame_rate"].as_str().unwrap_or(""));
    let average = parse_rate(video["avg_frame_rate"].as_str().unwrap_or(""));
    let frame_rate = average
        .or(base)
        .ok_or_else(|| Error::image(path, "the video stream states no frame rate"))?;
    let variable_frame_rate = match (base, average) {
        (Some(b), Some(a)) => {
            let (b, a) = (rate_value(b), rate_value(a));
            (b - a).abs() > 0.01 * a
        }
        _ => false,
    };
    let frames = video["nb_frames"]
        .as_str()
        .and_then(|n| n.parse::<u64>().ok())
        .or_else(|| {
            let duration: f64 = video["duration"]
                .as_str()
                .or(json["format"]["duration"].as_str())?
                .parse()
                .ok()?;
            Some((duration * rate_value(frame_rate)).round() as u64)
        });
    if frames == Some(0) {
        return Err(Error::image(path, "the video has no frames"));
    }
    Ok(ClipInfo {
        width,
        height,
        frame_rate,
        frames,
        has_audio,
        variable_frame_rate,
    })
}

fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
        .to_string()
}

fn parse_rate(text: &str) -> Option<(u32, u32)> {
    let (n, d) = text.split_once('/').unwrap_or((text, "1"));
    let (n, d): (u32, u32) = (n.trim().parse().ok()?, d.trim().parse().ok()?);
    (n > 0 && d > 0).then_some((n, d))
}

fn rate_value((n, d): (u32, u32)) -> f64 {
    f64::from(n) / f64::from(d)
}

/// Frame `index` (0-based) of a clip, for scrubbing: the image in a folder, or the frame at
/// `index / fps` seconds of a video (ffmpeg seeks to the keyframe before and decodes on).
pub fn frame_at(path: &Path, index: u64) -> Result<RgbImage> {
    if is_frame_folder(path) {
        let frames = crate::train::data::list_images(path)?;
        let frame = frames.get(index as usize).ok_or_else(|| {
            Error::image(
                path,
                format!("has {} frames, no frame {}", frames.len(), index + 1),
            )
        })?;
        return imaging::load_rgb(frame);
    }
    let info = probe(path)?;
    let seconds = index as f64 / info.fps().max(1e-9);
    let output = tool("ffmpeg")
        .args([
            "-v",
            "error",
            "-nostdin",
            "-ss",
            &format!("{seconds:.4}"),
            "-i",
        ])
        .arg(path)
        .args([
            "-map",
            "0:v:0",
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .output()
        .map_err(|e| missing_tool("ffmpeg", &e))?;
    let expected = info.width as usize * info.height as usize * 3;
    if !output.status.success() || output.stdout.len() < expected {
        return Err(Error::image(
            path,
            format!(
                "no frame {} ({})",
                index + 1,
                first_line(&String::from_utf8_lossy(&output.stderr))
            ),
        ));
    }
    let mut bytes = output.stdout;
    bytes.truncate(expected);
    RgbImage::from_raw(info.width, info.height, bytes)
        .ok_or_else(|| Error::invalid("a frame of the wrong size"))
}

/// [`probe`] for a folder of frames too (its first image's size, [`FOLDER_FRAME_RATE`]).
pub fn describe(path: &Path) -> Result<ClipInfo> {
    if is_frame_folder(path) {
        Ok(FolderSource::open(path)?.info.clone())
    } else {
        probe(path)
    }
}

/// Where frames come from, one at a time, in order.
pub trait FrameSource: Send {
    fn info(&self) -> &ClipInfo;
    /// The next frame (at the size the source was opened for), `None` after the last.
    fn next_frame(&mut self) -> Result<Option<RgbImage>>;
}

/// Where finished frames go. Nothing is visible at the destination until [`Self::finish`];
/// dropping an unfinished sink removes what it wrote.
pub trait FrameSink: Send {
    fn write_frame(&mut self, frame: &RgbImage) -> Result<()>;
    /// Completes the output (encodes, renames into place).
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Opens `path` (a video file, or a folder of images) to read its frames at their own size.
pub fn open(path: &Path) -> Result<Box<dyn FrameSource>> {
    open_scaled(path, &|width, height| (width, height))
}

/// Opens `path` to read its frames at `size(width, height)` (the clip's size in, the frames'
/// out). ffmpeg scales while it decodes, in its own process, so the scaling overlaps the
/// stylisation (a 1280x720 → 640x360 Catmull-Rom resize here cost about 9 % of a network
/// video's time); a folder's images are scaled as they are read.
pub fn open_scaled(
    path: &Path,
    size: &dyn Fn(u32, u32) -> (u32, u32),
) -> Result<Box<dyn FrameSource>> {
    if is_frame_folder(path) {
        let mut source = FolderSource::open(path)?;
        source.frame_size = size(source.info.width, source.info.height);
        Ok(Box::new(source))
    } else {
        Ok(Box::new(FfmpegSource::open(path, size)?))
    }
}

/// Frames decoded by ffmpeg into raw RGB over a pipe.
pub struct FfmpegSource {
    info: ClipInfo,
    /// The size ffmpeg scales each frame to.
    frame_size: (u32, u32),
    child: Child,
    stdout: ChildStdout,
    path: PathBuf,
    read: u64,
}

impl FfmpegSource {
    pub fn open(path: &Path, size: &dyn Fn(u32, u32) -> (u32, u32)) -> Result<Self> {
        let info = probe(path)?;
        let frame_size = size(info.width, info.height);
        let mut command = tool("ffmpeg");
        command
            .args(["-v", "error", "-nostdin", "-i"])
            .arg(path)
            // Every decoded frame once, in order, whatever the timestamps say.
            .args(["-map", "0:v:0", "-fps_mode", "passthrough"]);
        if frame_size != (info.width, info.height) {
            // Bicubic, as close as ffmpeg's scalers get to the Catmull-Rom used for photos.
            command.args([
                "-vf",
                &format!("scale={}:{}:flags=bicubic", frame_size.0, frame_size.1),
            ]);
        }
        let mut child = command
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| missing_tool("ffmpeg", &e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::invalid("ffmpeg gave no output pipe"))?;
        Ok(Self {
            info,
            frame_size,
            child,
            stdout,
            path: path.to_path_buf(),
            read: 0,
        })
    }
}

impl FrameSource for FfmpegSource {
    fn info(&self) -> &ClipInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<RgbImage>> {
        let (w, h) = self.frame_size;
        let mut bytes = vec![0u8; w as usize * h as usize * 3];
        let mut filled = 0;
        while filled < bytes.len() {
            match self.stdout.read(&mut bytes[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::image(&self.path, format!("reading frames: {e}"))),
            }
        }
        if filled == 0 {
            if self.read == 0 {
                return Err(Error::image(
                    &self.path,
                    "the video has no frames ffmpeg can decode",
                ));
            }
            return Ok(None);
        }
        if filled < bytes.len() {
            return Err(Error::image(
                &self.path,
                format!(
                    "frame {} was cut short: the video is damaged",
                    self.read + 1
                ),
            ));
        }
        self.read += 1;
        RgbImage::from_raw(w, h, bytes)
            .map(Some)
            .ok_or_else(|| Error::invalid("a frame of the wrong size"))
    }
}

impl Drop for FfmpegSource {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A folder of images, in name order; all must have the first one's size.
pub struct FolderSource {
    info: ClipInfo,
    /// The size each frame is scaled to (its own size: as it is).
    frame_size: (u32, u32),
    frames: std::vec::IntoIter<PathBuf>,
    /// The first frame, decoded while opening (for its size).
    first: Option<RgbImage>,
}

/// Frame rate assumed for a folder of frames (written videos and reports use it).
pub const FOLDER_FRAME_RATE: (u32, u32) = (25, 1);

impl FolderSource {
    pub fn open(path: &Path) -> Result<Self> {
        let frames = crate::train::data::list_images(path)?;
        let Some(first_path) = frames.first() else {
            return Err(Error::image(path, "the folder holds no frames (images)"));
        };
        let first = imaging::load_rgb(first_path)?;
        let info = ClipInfo {
            width: first.width(),
            height: first.height(),
            frame_rate: FOLDER_FRAME_RATE,
            frames: Some(frames.len() as u64),
            has_audio: false,
            variable_frame_rate: false,
        };
        let mut frames = frames.into_iter();
        frames.next();
        Ok(Self {
            frame_size: (info.width, info.height),
            info,
            frames,
            first: Some(first),
        })
    }
}

impl FrameSource for FolderSource {
    fn info(&self) -> &ClipInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<RgbImage>> {
        let (w, h) = self.frame_size;
        if let Some(first) = self.first.take() {
            return Ok(Some(imaging::resize_exact(&first, w, h)));
        }
        let Some(path) = self.frames.next() else {
            return Ok(None);
        };
        let frame = imaging::load_rgb(&path)?;
        if frame.dimensions() != (self.info.width, self.info.height) {
            return Err(Error::image(
                &path,
                format!(
                    "is {}x{}, the folder's first frame {}x{}: frames must share one size",
                    frame.width(),
                    frame.height(),
                    self.info.width,
                    self.info.height
                ),
            ));
        }
        Ok(Some(imaging::resize_exact(&frame, w, h)))
    }
}

/// Opens the output: a folder of PNG frames when `path` has no extension or is a folder, else a
/// video file encoded by ffmpeg (H.264 in MP4/MKV/MOV, the audio of `audio_from` copied).
pub fn create(
    path: &Path,
    width: u32,
    height: u32,
    frame_rate: (u32, u32),
    audio_from: Option<&Path>,
) -> Result<Box<dyn FrameSink>> {
    if path.is_dir() || path.extension().is_none() {
        Ok(Box::new(FolderSink::create(path)?))
    } else {
        Ok(Box::new(FfmpegSink::create(
            path, width, height, frame_rate, audio_from,
        )?))
    }
}

/// Whether frames of `size` written to `path` are padded to even sides (a video file; frames in
/// a folder keep their size).
pub fn pads_odd_sides(path: &Path, (width, height): (u32, u32)) -> bool {
    !(path.is_dir() || path.extension().is_none()) && (width % 2 == 1 || height % 2 == 1)
}

/// A video encoded by ffmpeg from raw frames on its stdin into a temporary file beside the
/// output, renamed when complete.
pub struct FfmpegSink {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    temp: PathBuf,
    path: PathBuf,
    stderr_log: tempfile::NamedTempFile,
    size: (u32, u32),
    _unfinished: UnfinishedWrite,
}

impl FfmpegSink {
    pub fn create(
        path: &Path,
        width: u32,
        height: u32,
        frame_rate: (u32, u32),
        audio_from: Option<&Path>,
    ) -> Result<Self> {
        let write_error = |reason: String| Error::Write {
            path: path.to_path_buf(),
            reason,
        };
        let extension = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if !matches!(extension.as_str(), "mp4" | "mkv" | "mov" | "m4v") {
            return Err(write_error(format!(
                "unsupported video type `.{extension}`: use .mp4, .mkv or .mov (or a folder \
                 name for PNG frames)"
            )));
        }
        let dir = imaging::parent_folder(path);
        if !dir.is_dir() {
            return Err(write_error(format!(
                "folder {} does not exist",
                dir.display()
            )));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dir.join(format!(".atelier-{}-{name}", std::process::id()));
        let unfinished = UnfinishedWrite::register(&temp);
        let stderr_log = tempfile::NamedTempFile::new()
            .map_err(|e| write_error(format!("cannot create a log file: {e}")))?;
        let log = stderr_log
            .reopen()
            .map_err(|e| write_error(format!("cannot open the log file: {e}")))?;
        let mut command = tool("ffmpeg");
        command
            .args(["-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24"])
            .args(["-s", &format!("{width}x{height}")])
            .args(["-r", &format!("{}/{}", frame_rate.0, frame_rate.1)])
            .args(["-i", "-"]);
        if let Some(audio) = audio_from {
            command.arg("-i").arg(audio);
            command.args(["-map", "0:v", "-map", "1:a?", "-c:a", "copy", "-shortest"]);
        }
        command
            // yuv420p (what players expect) needs even sides: an odd one gets a copied edge.
            .args(["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"])
            .args(["-c:v", "libx264", "-preset", "veryfast", "-crf", "18"])
            .args(["-pix_fmt", "yuv420p", "-f", format_of(&extension)])
            .arg(&temp)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = command.spawn().map_err(|e| missing_tool("ffmpeg", &e))?;
        let stdin = child.stdin.take();
        Ok(Self {
            child: Some(child),
            stdin,
            temp,
            path: path.to_path_buf(),
            stderr_log,
            size: (width, height),
            _unfinished: unfinished,
        })
    }

    fn ffmpeg_said(&self) -> String {
        std::fs::read_to_string(self.stderr_log.path())
            .map(|s| first_line(&s))
            .unwrap_or_default()
    }
}

fn format_of(extension: &str) -> &'static str {
    match extension {
        "mkv" => "matroska",
        "mov" => "mov",
        _ => "mp4",
    }
}

impl FrameSink for FfmpegSink {
    fn write_frame(&mut self, frame: &RgbImage) -> Result<()> {
        if frame.dimensions() != self.size {
            return Err(Error::invalid(format!(
                "a {}x{} frame for a {}x{} video",
                frame.width(),
                frame.height(),
                self.size.0,
                self.size.1
            )));
        }
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Error::invalid("the video is already finished"))?;
        stdin.write_all(frame.as_raw()).map_err(|e| Error::Write {
            path: self.path.clone(),
            reason: format!("ffmpeg stopped taking frames ({e}): {}", self.ffmpeg_said()),
        })
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        drop(self.stdin.take());
        let status = match self.child.take() {
            Some(mut child) => child.wait().map_err(|e| Error::Write {
                path: self.path.clone(),
                reason: format!("ffmpeg: {e}"),
            })?,
            None => return Err(Error::invalid("the video is already finished")),
        };
        if !status.success() {
            return Err(Error::Write {
                path: self.path.clone(),
                reason: format!("ffmpeg failed: {}", self.ffmpeg_said()),
            });
        }
        std::fs::rename(&self.temp, &self.path).map_err(|e| Error::Write {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }
}

impl Drop for FfmpegSink {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // After a successful finish the temp file is already renamed away.
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// PNG frames (`00001.png`, …) in a temporary folder beside the output, renamed to it when
/// complete.
pub struct FolderSink {
    temp: Option<tempfile::TempDir>,
    path: PathBuf,
    written: u64,
}

impl FolderSink {
    pub fn create(path: &Path) -> Result<Self> {
        let write_error = |reason: String| Error::Write {
            path: path.to_path_buf(),
            reason,
        };
        if path.is_dir()
            && std::fs::read_dir(path)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(write_error(
                "the folder exists and is not empty: give a new folder for the frames".into(),
            ));
        }
        let dir = imaging::parent_folder(path);
        let temp = tempfile::Builder::new()
            .prefix(".atelier-frames-")
            .tempdir_in(&dir)
            .map_err(|e| {
                write_error(format!("cannot create a folder in {}: {e}", dir.display()))
            })?;
        Ok(Self {
            temp: Some(temp),
            path: path.to_path_buf(),
            written: 0,
        })
    }
}

impl FrameSink for FolderSink {
    fn write_frame(&mut self, frame: &RgbImage) -> Result<()> {
        let temp = self
            .temp
            .as_ref()
            .ok_or_else(|| Error::invalid("the frames are already finished"))?;
        self.written += 1;
        let name = temp.path().join(format!("{:05}.png", self.written));
        imaging::save_atomic(frame, &name, OutputFormat::Png)
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        let temp = self
            .temp
            .take()
            .ok_or_else(|| Error::invalid("the frames are already finished"))?;
        let kept = temp.keep();
        if self.path.is_dir() {
            // An empty folder (checked at creation) gives way to the finished one.
            let _ = std::fs::remove_dir(&self.path);
        }
        std::fs::rename(&kept, &self.path).map_err(|e| {
            let _ = std::fs::remove_dir_all(&kept);
            Error::Write {
                path: self.path.clone(),
                reason: e.to_string(),
            }
        })
    }
}
