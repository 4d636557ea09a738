//! Element-wise kernels on plain slices, split over rayon's pool.
//!
//! Why not candle's: candle 0.11 runs large element-wise ops on a thread pool of its own whose
//! caller spins until its worker finishes. Next to rayon's workers (and the video loop's flow
//! thread) on two cores that worker is often descheduled, and the spin cost a width-8 network
//! at 640×360 about a fifth of its time (65–69 ms against 53 ms with candle's pool off).

use rayon::prelude::*;

use super::{assert_written, output_buffer};

/// Elements per parallel task: large enough that the split costs nothing next to the work.
const CHUNK: usize = 16 * 1024;

/// `a + b` element by element (same lengths).
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "add: operand lengths differ");
    let mut out = output_buffer(a.len());
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = a + b;
            }
        });
    assert_written(&out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_covers_every_element() {
        let n = 3 * CHUNK + 17;
        let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..n).map(|i| 0.5 - i as f32).collect();
        assert!(add(&a, &b).iter().all(|&v| v == 0.5));
        assert!(add(&[], &[]).is_empty());
    }
}
