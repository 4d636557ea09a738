//! Frame timing, for the F12 readout and for measurements: how long each frame takes on the UI
//! thread, and (with `ATELIER_FRAME_LOG=FILE`) one CSV line per frame with the wall interval
//! between frames, the time in `ui()`, the UI thread's CPU time and run-queue wait in `ui()`
//! (Linux), and eframe's figure for the whole previous frame (ui, tessellation and paint
//! submission; with wgpu it leaves out the GPU wait and present, where a software renderer
//! rasterises, so the interval is the number that shows what a user sees).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

/// Frame-time numbers, overall (a sliding window) and while a job runs.
#[derive(Debug, Clone, Default)]
pub struct FrameStats {
    recent: VecDeque<Duration>,
    pub frames_during_job: usize,
    pub max_during_job: Duration,
    pub total_during_job: Duration,
}

impl FrameStats {
    const WINDOW: usize = 120;

    pub fn record(&mut self, took: Duration, job_running: bool) {
        if self.recent.len() == Self::WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(took);
        if job_running {
            self.frames_during_job += 1;
            self.max_during_job = self.max_during_job.max(took);
            self.total_during_job += took;
        }
    }

    pub fn mean_during_job(&self) -> Duration {
        if self.frames_during_job == 0 {
            Duration::ZERO
        } else {
            self.total_during_job / self.frames_during_job as u32
        }
    }

    /// Mean and max of the last frames.
    pub fn recent(&self) -> (Duration, Duration) {
        let max = self.recent.iter().copied().max().unwrap_or_default();
        let mean = if self.recent.is_empty() {
            Duration::ZERO
        } else {
            self.recent.iter().sum::<Duration>() / self.recent.len() as u32
        };
        (mean, max)
    }
}

/// The calling thread's scheduler counters: CPU time (exact, from the thread CPU clock) and time
/// spent runnable but waiting for a CPU (from `/proc/thread-self/schedstat`, updated at
/// scheduler events). Linux only; `None` elsewhere.
#[derive(Debug, Clone, Copy)]
pub struct SchedTimes {
    pub on_cpu: Duration,
    pub waiting: Duration,
}

impl SchedTimes {
    pub fn now() -> Option<Self> {
        let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        let waiting = text.split_whitespace().nth(1)?.parse::<u64>().ok()?;
        Some(Self {
            on_cpu: thread_cpu_time()?,
            waiting: Duration::from_nanos(waiting),
        })
    }
}

#[cfg(target_os = "linux")]
fn thread_cpu_time() -> Option<Duration> {
    use std::os::raw::{c_int, c_long};

    #[repr(C)]
    struct Timespec {
        tv_sec: c_long,
        tv_nsec: c_long,
    }
    extern "C" {
        fn clock_gettime(clock: c_int, time: *mut Timespec) -> c_int;
    }
    const CLOCK_THREAD_CPUTIME_ID: c_int = 3;
    let mut time = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut time) };
    (rc == 0).then(|| {
        Duration::new(
            u64::try_from(time.tv_sec).unwrap_or(0),
            u32::try_from(time.tv_nsec).unwrap_or(0),
        )
    })
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

/// One CSV line per frame, written to the file named by `ATELIER_FRAME_LOG`.
pub struct FrameLog {
    out: BufWriter<File>,
    started: Instant,
    last_frame: Option<Instant>,
}

impl FrameLog {
    /// The log the environment asks for, if any (a file that cannot be created is reported
    /// once and ignored: measurements must never stop the app).
    pub fn from_env() -> Option<Self> {
        let path = std::env::var_os("ATELIER_FRAME_LOG").filter(|p| !p.is_empty())?;
        match File::create(&path) {
            Ok(file) => {
                let mut out = BufWriter::new(file);
                let _ = writeln!(
                    out,
                    "t_s,interval_ms,ui_ms,ui_cpu_ms,ui_wait_ms,prev_frame_ms,job_running,uploads"
                );
                Some(Self {
                    out,
                    started: Instant::now(),
                    last_frame: None,
                })
            }
            Err(e) => {
                tracing::warn!("ATELIER_FRAME_LOG: {e}");
                None
            }
        }
    }

    /// Logs a frame whose `ui()` began at `at` (with the thread's counters `sched` then);
    /// `prev_frame` is eframe's time for the whole previous frame, in seconds; `uploads` counts
    /// the pictures sent to textures this frame.
    pub fn frame(
        &mut self,
        at: Instant,
        sched: Option<SchedTimes>,
        prev_frame: Option<f32>,
        job_running: bool,
        uploads: usize,
    ) {
        let ui = at.elapsed();
        let interval = self.last_frame.map(|t| at.duration_since(t));
        self.last_frame = Some(at);
        let (cpu, wait) = match (sched, SchedTimes::now()) {
            (Some(a), Some(b)) => (
                Some(b.on_cpu.saturating_sub(a.on_cpu)),
                Some(b.waiting.saturating_sub(a.waiting)),
            ),
            _ => (None, None),
        };
        let ms = |d: Option<Duration>| {
            d.map(|d| format!("{:.3}", d.as_secs_f64() * 1e3))
                .unwrap_or_default()
        };
        let _ = writeln!(
            self.out,
            "{:.3},{},{},{},{},{},{},{}",
            at.duration_since(self.started).as_secs_f64(),
            ms(interval),
            ms(Some(ui)),
            ms(cpu),
            ms(wait),
            prev_frame
                .map(|s| format!("{:.3}", s * 1e3))
                .unwrap_or_default(),
            u8::from(job_running),
            uploads
        );
        // Flushed every frame so a killed app still leaves a complete log.
        let _ = self.out.flush();
    }
}
