//! The optimiser interface the Gatys loop drives, and the helpers both optimisers share.
//!
//! The loop owns the image tensor `x` and hands each optimiser an [`Objective`] that returns the
//! loss and its gradient at any point. Optimisers only replace `x` once a step has succeeded, so
//! an error (including [`Error::Cancelled`]) always leaves `x` at the last accepted point.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

pub use super::adam::{Adam, AdamConfig};
pub use super::lbfgs::{Lbfgs, LbfgsConfig};

/// Evaluates the loss and its gradient (same shape as the point) at a point.
///
/// Returning `Err(Error::Cancelled)` aborts the step; the optimiser propagates it at once.
pub type Objective<'a> = dyn FnMut(&Tensor) -> Result<(f64, Tensor)> + 'a;

/// What one optimiser step achieved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// L-BFGS: the loss at the accepted point after the step. Adam: the loss at the point where
    /// the gradient was evaluated (the point before the update).
    pub loss: f64,
    /// Objective evaluations this step used.
    pub evaluations: usize,
}

pub trait Optimizer: Send {
    /// Moves `x` towards a minimum of `objective`. On error `x` is left at the last accepted point.
    fn step(&mut self, x: &mut Tensor, objective: &mut Objective<'_>) -> Result<StepReport>;

    fn name(&self) -> &'static str;

    /// True once further steps cannot make progress from the current point (gradient ~0 or the
    /// loss stopped changing); callers may stop iterating early.
    fn has_converged(&self) -> bool {
        false
    }

    /// Forgets all state (moments, curvature history), e.g. before optimising a new image.
    /// Optimisers also reset themselves when the shape of `x` changes.
    fn reset(&mut self) {}
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Quasi-Newton; converges in far fewer evaluations on the smooth Gatys loss.
    #[default]
    Lbfgs,
    /// First-order; constant memory and cost per step, more steps needed.
    Adam,
}

impl OptimizerKind {
    pub const ALL: [OptimizerKind; 2] = [OptimizerKind::Lbfgs, OptimizerKind::Adam];

    pub fn as_str(self) -> &'static str {
        match self {
            OptimizerKind::Lbfgs => "lbfgs",
            OptimizerKind::Adam => "adam",
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OptimizerKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lbfgs" | "l-bfgs" => Ok(OptimizerKind::Lbfgs),
            "adam" => Ok(OptimizerKind::Adam),
            other => Err(Error::invalid(format!(
                "unknown optimizer {other:?} (expected \"lbfgs\" or \"adam\")"
            ))),
        }
    }
}

/// Builds an optimiser with defaults suited to images in pixel units (0..255).
///
/// `learning_rate` overrides the default (L-BFGS: 1.0, a multiplier on its line-search start;
/// Adam: 2.0 pixel levels per step). An invalid rate is reported by the first `step`.
pub fn make_optimizer(kind: OptimizerKind, learning_rate: Option<f64>) -> Box<dyn Optimizer> {
    match kind {
        OptimizerKind::Lbfgs => {
            let mut config = LbfgsConfig::default();
            if let Some(lr) = learning_rate {
                config.learning_rate = lr;
            }
            Box::new(Lbfgs::new(config))
        }
        OptimizerKind::Adam => {
            let mut config = AdamConfig::default();
            if let Some(lr) = learning_rate {
                config.learning_rate = lr;
            }
            Box::new(Adam::new(config))
        }
    }
}

pub(crate) fn check_learning_rate(learning_rate: f64) -> Result<()> {
    if learning_rate.is_finite() && learning_rate > 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "learning rate must be a positive finite number, got {learning_rate}"
        )))
    }
}

/// Calls the objective at `x` and checks that the gradient matches `x`.
///
/// The gradient is detached so optimiser state never keeps an autograd graph alive, and
/// converted to `x`'s dtype so all later tensor arithmetic lines up.
pub(crate) fn evaluate(objective: &mut Objective<'_>, x: &Tensor) -> Result<(f64, Tensor)> {
    let (loss, grad) = objective(x)?;
    if grad.shape() != x.shape() {
        return Err(Error::invalid(format!(
            "objective returned a gradient of shape {:?} for a point of shape {:?}",
            grad.dims(),
            x.dims()
        )));
    }
    let grad = if grad.dtype() == x.dtype() {
        grad.detach()
    } else {
        grad.to_dtype(x.dtype())?.detach()
    };
    Ok((loss, grad))
}

/// Dot product accumulated on the device, read back as f64.
pub(crate) fn dot(a: &Tensor, b: &Tensor) -> Result<f64> {
    scalar_f64(&(a * b)?.sum_all()?)
}

/// Largest absolute element (the infinity norm).
pub(crate) fn max_abs(a: &Tensor) -> Result<f64> {
    scalar_f64(&a.abs()?.max_all()?)
}

/// Sum of absolute elements (the L1 norm).
pub(crate) fn sum_abs(a: &Tensor) -> Result<f64> {
    scalar_f64(&a.abs()?.sum_all()?)
}

/// Reads a scalar back; converted on the CPU because Metal has no f64.
fn scalar_f64(t: &Tensor) -> Result<f64> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_round_trips_through_strings() {
        for kind in OptimizerKind::ALL {
            assert_eq!(kind.to_string().parse::<OptimizerKind>().unwrap(), kind);
        }
        assert_eq!(
            "L-BFGS".parse::<OptimizerKind>().unwrap(),
            OptimizerKind::Lbfgs
        );
        assert!(matches!(
            "sgd".parse::<OptimizerKind>(),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn make_optimizer_names() {
        assert_eq!(make_optimizer(OptimizerKind::Lbfgs, None).name(), "lbfgs");
        assert_eq!(
            make_optimizer(OptimizerKind::Adam, Some(0.5)).name(),
            "adam"
        );
    }
}
