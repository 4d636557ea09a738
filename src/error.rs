//! The library's error type. Each variant says what went wrong in words a user can act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image could not be read, decoded or is unusable (zero-size, too large, ...).
    #[error("image {path}: {reason}")]
    Image { path: PathBuf, reason: String },

    /// A weights file is missing, unreadable or does not hold the expected network.
    #[error("weights {path}: {reason}")]
    Weights { path: PathBuf, reason: String },

    /// A parameter is out of range (negative weight, size 0, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// No VGG loss network was found; `searched` lists the places looked at, in order, and
    /// `message` says so with how to get one.
    #[error("{message}")]
    MissingVgg {
        searched: Vec<PathBuf>,
        message: String,
    },

    /// Writing an output failed; nothing was left half-written.
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },

    /// The job was cancelled or superseded by a newer one.
    #[error("cancelled")]
    Cancelled,

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn weights(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::Weights {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    pub fn image(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::Image {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    pub fn invalid(reason: impl std::fmt::Display) -> Self {
        Error::InvalidArgument(reason.to_string())
    }
}
