//! Video: frames in and out, optical flow, temporal consistency.

pub mod clip;
pub mod flow;
pub mod temporal;
