//! Training checkpoints: one `.safetensors` file with the transformer's and discriminator's
//! parameters and Adam moments (f32, exact), and in its metadata the iteration, the Adam step
//! counts and the recipe. Random state needs no saving: every sample is drawn from (seed,
//! iteration) (see [`super::data`]). Written atomically, so a run killed while saving keeps
//! the previous checkpoint.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::config::TrainRecipe;
use super::params::ParameterSet;
use crate::error::{Error, Result};
use crate::nn::weights::{self, WeightFile};

/// The checkpoint's file name inside the output folder.
pub const CHECKPOINT_NAME: &str = "checkpoint.safetensors";
/// Identifies our checkpoints (and their layout version) in the file's metadata.
const FORMAT: &str = "atelier-training-checkpoint/1";

/// What a checkpoint says about itself, read from its header alone (no tensors, no device):
/// enough to offer "Resume" and to resume with the recipe it was trained with.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointInfo {
    /// Iterations completed.
    pub iteration: u64,
    pub recipe: TrainRecipe,
}

/// A safetensors header larger than this is not one of our checkpoints (theirs are a few KB).
const MAX_HEADER: u64 = 16 << 20;

/// Reads the iteration and the recipe of the checkpoint at `path` without loading its tensors.
pub fn peek(path: &Path) -> Result<CheckpointInfo> {
    use std::io::Read;
    let bad = |reason: String| Error::weights(path, reason);
    let mut file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length)
        .map_err(|_| bad("not an Atelier training checkpoint".into()))?;
    let length = u64::from_le_bytes(length);
    if length > MAX_HEADER {
        return Err(bad("not an Atelier training checkpoint".into()));
    }
    let mut header = Vec::new();
    file.take(length)
        .read_to_end(&mut header)
        .map_err(|e| bad(e.to_string()))?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|_| bad("not an Atelier training checkpoint".into()))?;
    let metadata = header.get("__metadata__");
    let text = |key: &str| metadata.and_then(|m| m.get(key)).and_then(|v| v.as_str());
    if text("format") != Some(FORMAT) {
        return Err(bad("not an Atelier training checkpoint".into()));
    }
    let iteration = text("iteration")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("checkpoint metadata `iteration` is missing or invalid".into()))?;
    let recipe = text("recipe")
        .ok_or_else(|| bad("checkpoint has no recipe".into()))
        .and_then(|t| {
            serde_json::from_str(t).map_err(|e| bad(format!("checkpoint recipe: {e}")))
        })?;
    Ok(CheckpointInfo { iteration, recipe })
}

/// A loaded checkpoint.
pub struct Checkpoint {
    /// Iterations completed.
    pub iteration: u64,
    pub recipe: TrainRecipe,
    pub network_steps: i32,
    pub discriminator_steps: i32,
    pub tensors: HashMap<String, Tensor>,
}

/// Writes a checkpoint of the state after `iteration` iterations.
pub fn save(
    path: &Path,
    iteration: u64,
    recipe: &TrainRecipe,
    network: &ParameterSet,
    discriminator: Option<&ParameterSet>,
) -> Result<()> {
    let (mut tensors, network_steps) = network.state("net");
    let mut discriminator_steps = 0;
    if let Some(d) = discriminator {
        let (more, steps) = d.state("disc");
        tensors.extend(more);
        discriminator_steps = steps;
    }
    let recipe_json = serde_json::to_string(recipe).map_err(|e| Error::Write {
        path: path.to_path_buf(),
        reason: format!("cannot record the recipe: {e}"),
    })?;
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("iteration".to_string(), iteration.to_string()),
        ("network_adam_steps".to_string(), network_steps.to_string()),
        (
            "discriminator_adam_steps".to_string(),
            discriminator_steps.to_string(),
        ),
        ("recipe".to_string(), recipe_json),
    ]);
    weights::save_safetensors(path, &tensors, None, metadata)
}

/// Reads a checkpoint; anything that is not one of ours is refused with a clear reason.
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint> {
    if !path.is_file() {
        return Err(Error::weights(
            path,
            "no training checkpoint to resume from (train without --resume first)",
        ));
    }
    let file = WeightFile::load(path, device)?;
    let bad = |reason: String| Error::weights(path, reason);
    if file.metadata.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad("not an Atelier training checkpoint".into()));
    }
    let number = |key: &str| -> Result<u64> {
        file.metadata
            .get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(format!("checkpoint metadata `{key}` is missing or invalid")))
    };
    let iteration = number("iteration")?;
    let steps = |key: &str| -> Result<i32> {
        i32::try_from(number(key)?).map_err(|_| bad(format!("checkpoint `{key}` is too large")))
    };
    let network_steps = steps("network_adam_steps")?;
    let discriminator_steps = steps("discriminator_adam_steps")?;
    let recipe = file
        .metadata
        .get("recipe")
        .ok_or_else(|| bad("checkpoint has no recipe".into()))
        .and_then(|text| {
            serde_json::from_str(text).map_err(|e| bad(format!("checkpoint recipe: {e}")))
        })?;
    Ok(Checkpoint {
        iteration,
        recipe,
        network_steps,
        discriminator_steps,
        tensors: file.tensors,
    })
}

impl Checkpoint {
    /// Refuses to resume with a recipe other than the one trained so far, naming what differs
    /// (continuing with other settings would silently give another loss curve).
    pub fn check_recipe(&self, recipe: &TrainRecipe, path: &Path) -> Result<()> {
        let to_map = |r: &TrainRecipe| -> Result<serde_json::Map<String, serde_json::Value>> {
            match serde_json::to_value(r) {
                Ok(serde_json::Value::Object(map)) => Ok(map),
                _ => Err(Error::invalid("cannot compare training recipes")),
            }
        };
        let (saved, asked) = (to_map(&self.recipe)?, to_map(recipe)?);
        let differences: Vec<String> = saved
            .iter()
            .filter(|(key, value)| asked.get(*key) != Some(value))
            .map(|(key, value)| {
                let now = asked.get(key).cloned().unwrap_or(serde_json::Value::Null);
                format!("{} {value} (now {now})", key.replace('_', "-"))
            })
            .collect();
        if differences.is_empty() {
            return Ok(());
        }
        Err(Error::weights(
            path,
            format!(
                "this checkpoint was trained with other settings: {}; resume with the same settings or use another output folder",
                differences.join(", ")
            ),
        ))
    }
}
