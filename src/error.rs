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

    /// No VGG loss network was found; `searched` lists the places looked at, in order.
    #[error("{}", missing_vgg_message(searched))]
    MissingVgg { searched: Vec<PathBuf> },

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

fn missing_vgg_message(searched: &[PathBuf]) -> String {
    let searched = searched
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let searched = if searched.is_empty() {
        "nowhere: no cache directory could be told".to_string()
    } else {
        searched
    };
    format!(
        "no VGG loss network found (looked in: {searched}). Get one with `atelier fetch-vgg` \
         (downloads {} from the Hugging Face hub, {}), or set {} or pass --vgg PATH to a \
         VGG16/VGG19 .safetensors or .pth file",
        crate::nn::hub::VGG19_DOWNLOAD_SIZE,
        crate::nn::hub::VGG19_REPO,
        crate::nn::hub::VGG_ENV
    )
}
