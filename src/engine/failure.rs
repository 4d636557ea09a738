//! Why a job failed, typed so that a UI can act on it (offer `fetch-vgg`, point at the file)
//! instead of matching message text.

use std::path::PathBuf;

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Failure {
    /// No VGG loss network: `searched` lists the places looked at; `atelier fetch-vgg` gets one.
    #[error("{message}")]
    MissingVgg {
        searched: Vec<PathBuf>,
        message: String,
    },
    /// A photo or style image could not be read or used.
    #[error("image {}: {reason}", path.display())]
    BadInput { path: PathBuf, reason: String },
    /// A weights file (model or VGG) is missing, unreadable or not the expected network.
    #[error("weights {}: {reason}", path.display())]
    BadModel { path: PathBuf, reason: String },
    /// A setting is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An output could not be written (nothing was left half-written).
    #[error("cannot write {}: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
    /// The device ran out of memory: a smaller size may work.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// A bug: a kernel failed or panicked. The engine keeps running.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Failure {
    /// From a library error; `None` for a cancellation, which is not a failure.
    pub fn from_error(error: Error) -> Option<Self> {
        Some(match error {
            Error::Cancelled => return None,
            Error::MissingVgg { searched, message } => Failure::MissingVgg { searched, message },
            Error::Image { path, reason } => Failure::BadInput { path, reason },
            Error::Weights { path, reason } => Failure::BadModel { path, reason },
            Error::InvalidArgument(reason) => Failure::InvalidArgument(reason),
            Error::Write { path, reason } => Failure::Write { path, reason },
            Error::Candle(e) => {
                let message = e.to_string();
                if looks_like_out_of_memory(&message) {
                    Failure::OutOfMemory(message)
                } else {
                    Failure::Internal(message)
                }
            }
        })
    }
}

/// candle reports allocation failures as text (CUDA: "out of memory"; CPU: "memory allocation
/// failed", "cannot allocate").
fn looks_like_out_of_memory(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    [
        "out of memory",
        "memory allocation",
        "cannot allocate",
        "alloc error",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

/// Why the engine took no job: its thread is gone (or never started).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("the engine could not start its thread: {0}")]
    NotStarted(String),
    #[error("the engine has stopped (its thread is gone); restart the program")]
    Stopped,
}
