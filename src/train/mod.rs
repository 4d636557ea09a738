//! Training custom feed-forward styles (Johnson et al.): a transformer network learns to paint
//! any photo in a style, from the perceptual loss (VGG content + Gram style + total variation)
//! on random crops of a photo collection, optionally with a patch discriminator that learns the
//! style from a collection of works.
//!
//! [`session::run`] runs a [`TrainConfig`] to its end and reports [`TrainEvent`]s (the engine runs
//! it as a training job); [`Trainer`] is the same run driven step by step.
//!
//! Modules: `config` (recipe and run settings), `data` (photos, style works, deterministic
//! crops, background loading), `loss` (perceptual loss), `discriminator` (patch discriminator,
//! hinge loss), `params` (variables with Adam state), `checkpoint`, `export` (the style
//! folder), `trainer` (one run), `session` (a whole run and its events).

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod decoder;
pub mod discriminator;
pub mod export;
pub mod loss;
pub mod params;
pub mod session;
pub mod trainer;

pub use config::{StyleCredits, StyleGroup, TrainConfig, TrainRecipe, DEFAULT_WIDTH};
pub use export::ExportedStyle;
pub use session::{TrainEvent, TrainProgress};
pub use trainer::{StepReport, TrainInputs, TrainLosses, Trainer};
