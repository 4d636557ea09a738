//! Trainable parameters with their Adam state: the unit that is updated each iteration and
//! saved in (and restored from) checkpoints.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::{Error, Result};
use crate::stylize::adam::{AdamConfig, AdamMoments};

/// Named variables, each with its Adam moments (none before its first update).
pub struct ParameterSet {
    names: Vec<String>,
    vars: Vec<Var>,
    moments: Vec<Option<AdamMoments>>,
}

impl ParameterSet {
    /// Copies `tensors` into fresh variables.
    pub fn new(tensors: Vec<(String, Tensor)>) -> Result<Self> {
        let mut names = Vec::with_capacity(tensors.len());
        let mut vars = Vec::with_capacity(tensors.len());
        for (name, t) in tensors {
            vars.push(Var::from_tensor(&t)?);
            names.push(name);
        }
        let moments = vec![None; vars.len()];
        Ok(Self {
            names,
            vars,
            moments,
        })
    }

    /// The variables by name, for building a network whose gradients reach them. The tensors
    /// share storage with the variables, so updates show through without rebuilding.
    pub fn tensor_map(&self) -> HashMap<String, Tensor> {
        self.names
            .iter()
            .cloned()
            .zip(self.vars.iter().map(|v| v.as_tensor().clone()))
            .collect()
    }

    /// One Adam step on every variable that has a gradient in `grads`.
    pub fn step(&mut self, grads: &GradStore, adam: &AdamConfig) -> Result<()> {
        for (var, moments) in self.vars.iter().zip(self.moments.iter_mut()) {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let (updated, next) = adam.update(var.as_tensor(), grad, moments.as_ref())?;
            var.set(&updated)?;
            *moments = Some(next);
        }
        Ok(())
    }

    /// Parameters and moments under `prefix` (`PREFIX/NAME`, `PREFIX.m/NAME`, `PREFIX.v/NAME`),
    /// and the step count, for a checkpoint.
    pub fn state(&self, prefix: &str) -> (Vec<(String, Tensor)>, i32) {
        let mut tensors = Vec::with_capacity(self.vars.len() * 3);
        let mut steps = 0;
        for ((name, var), moments) in self.names.iter().zip(&self.vars).zip(&self.moments) {
            tensors.push((format!("{prefix}/{name}"), var.as_tensor().clone()));
            if let Some(m) = moments {
                tensors.push((format!("{prefix}.m/{name}"), m.first.clone()));
                tensors.push((format!("{prefix}.v/{name}"), m.second.clone()));
                steps = steps.max(m.steps);
            }
        }
        (tensors, steps)
    }

    /// Restores what [`Self::state`] saved. Every parameter must be present with its shape.
    pub fn restore(
        &mut self,
        saved: &HashMap<String, Tensor>,
        prefix: &str,
        steps: i32,
    ) -> Result<()> {
        for ((name, var), moments) in self.names.iter().zip(&self.vars).zip(&mut self.moments) {
            let get = |key: String| -> Result<Option<Tensor>> {
                match saved.get(&key) {
                    Some(t) if t.dims() == var.dims() => Ok(Some(t.clone())),
                    Some(t) => Err(Error::invalid(format!(
                        "checkpoint tensor `{key}` has shape {:?}, expected {:?}",
                        t.dims(),
                        var.dims()
                    ))),
                    None => Ok(None),
                }
            };
            let value = get(format!("{prefix}/{name}"))?
                .ok_or_else(|| Error::invalid(format!("checkpoint lacks `{prefix}/{name}`")))?;
            var.set(&value.to_device(var.device())?)?;
            *moments = match (
                get(format!("{prefix}.m/{name}"))?,
                get(format!("{prefix}.v/{name}"))?,
            ) {
                (Some(first), Some(second)) => Some(AdamMoments {
                    first: first.to_device(var.device())?,
                    second: second.to_device(var.device())?,
                    steps,
                }),
                _ => None,
            };
        }
        Ok(())
    }
}
