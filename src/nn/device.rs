//! Where networks run: the best device this build supports, and the scheduling priority of the
//! threads that compute on the CPU. The desktop app runs the engine "nice" so that on a machine
//! with few cores the UI thread (and the window system) get the CPU the moment they need it; the
//! engine still gets every cycle they leave idle.

use candle_core::Device;

/// The best device this build supports: CUDA or Metal when compiled in and present, else CPU.
pub fn best_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    #[cfg(feature = "metal")]
    if let Ok(d) = Device::new_metal(0) {
        return d;
    }
    Device::Cpu
}

/// How much lower than normal (a Linux nice value).
const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's priority. On Linux the nice value is per thread and inherited by
/// the threads it starts later (such as a compute pool created on first use). Best effort: a
/// refusal is logged, and other systems keep the normal priority.
pub fn lower_current_thread() {
    #[cfg(target_os = "linux")]
    if let Err(e) = linux::nice_current_thread(BACKGROUND_NICE) {
        tracing::debug!("could not lower the engine's priority: {e}");
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::os::raw::{c_int, c_uint};

    extern "C" {
        fn setpriority(which: c_int, who: c_uint, prio: c_int) -> c_int;
    }

    const PRIO_PROCESS: c_int = 0;

    pub fn nice_current_thread(nice: i32) -> std::io::Result<()> {
        // SAFETY: a plain system call without pointers. On Linux `who == 0` with PRIO_PROCESS
        // names the calling thread only (nice values are per thread there).
        let rc = unsafe { setpriority(PRIO_PROCESS, 0, nice) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}
