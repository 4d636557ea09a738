//! Atelier: neural style transfer on candle.
//!
//! Layout: [`nn`] holds the networks and the custom ops they need, [`stylize`] the algorithms
//! (Gatys optimisation, feed-forward inference), [`engine`] the background worker the CLI and the
//! app talk to, [`imaging`] image decoding, conversion and atomic saving, [`app`] the desktop
//! app (egui), [`styles`] its style gallery model, [`recipe`] render recipes in PNG metadata, [`server`] `atelier serve` (web page and HTTP API),
//! [`train`] training custom feed-forward styles.

// Errors are handled, not unwrapped: a failure reaches the user as a message (tests may
// unwrap; see clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "gui")]
pub mod app;
pub mod bench;
pub mod engine;
pub mod error;
pub mod imaging;
pub mod nn;
pub mod recipe;
pub mod server;
pub mod styles;
pub mod stylize;
pub mod train;
pub mod video;

pub use error::{Error, Result};
