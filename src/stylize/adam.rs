//! Adam (Kingma & Ba, 2015) on the [`Optimizer`] interface: one objective evaluation per step.

use candle_core::Tensor;

use super::optim::{check_learning_rate, evaluate, max_abs, Objective, Optimizer, StepReport};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Step size; in pixel units (0..255) roughly how far a pixel moves per step early on.
    pub learning_rate: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            learning_rate: 2.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

impl AdamConfig {
    pub fn validate(&self) -> Result<()> {
        check_learning_rate(self.learning_rate)?;
        for (name, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(Error::invalid(format!(
                    "Adam {name} must be in [0, 1), got {beta}"
                )));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::invalid(format!(
                "Adam eps must be positive, got {}",
                self.eps
            )));
        }
        Ok(())
    }

    /// One Adam update of `x` with gradient `grad`: returns the new point and the new moments.
    /// `previous` moments of another shape, dtype or device are ignored (a fresh start). Shared
    /// by image optimisation and network training, which keeps one [`AdamMoments`] per
    /// parameter (and saves them in checkpoints).
    pub fn update(
        &self,
        x: &Tensor,
        grad: &Tensor,
        previous: Option<&AdamMoments>,
    ) -> Result<(Tensor, AdamMoments)> {
        let AdamConfig {
            learning_rate,
            beta1,
            beta2,
            eps,
        } = *self;
        let previous = match previous {
            Some(m)
                if m.first.shape() == x.shape()
                    && m.first.dtype() == x.dtype()
                    && m.first.device().same_device(x.device()) =>
            {
                m.clone()
            }
            _ => AdamMoments {
                first: grad.zeros_like()?,
                second: grad.zeros_like()?,
                steps: 0,
            },
        };
        let steps = previous.steps.saturating_add(1);
        // Detached: the moments outlive this step and must not hold on to its autograd graph.
        let first = ((&previous.first * beta1)? + (grad * (1.0 - beta1))?)?.detach();
        let second = ((&previous.second * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?.detach();

        let first_correction = 1.0 - beta1.powi(steps);
        let second_correction = 1.0 - beta2.powi(steps);
        // x -= lr * m_hat / (sqrt(v_hat) + eps), with the corrections folded into scalars.
        let denominator = ((second.sqrt()? / second_correction.sqrt())? + eps)?;
        let update = ((&first / denominator)? * (learning_rate / first_correction))?;
        let updated = (x - update)?.detach();
        Ok((
            updated,
            AdamMoments {
                first,
                second,
                steps,
            },
        ))
    }
}

/// First and second moment estimates, kept in the dtype and on the device of `x`, and the
/// number of steps taken (for the bias correction).
#[derive(Debug, Clone)]
pub struct AdamMoments {
    pub first: Tensor,
    pub second: Tensor,
    pub steps: i32,
}

pub struct Adam {
    config: AdamConfig,
    moments: Option<AdamMoments>,
}

impl Adam {
    pub fn new(config: AdamConfig) -> Self {
        Self {
            config,
            moments: None,
        }
    }

    pub fn config(&self) -> &AdamConfig {
        &self.config
    }
}

impl Default for Adam {
    fn default() -> Self {
        Self::new(AdamConfig::default())
    }
}

impl Optimizer for Adam {
    fn step(&mut self, x: &mut Tensor, objective: &mut Objective<'_>) -> Result<StepReport> {
        self.config.validate()?;
        let (loss, grad) = evaluate(objective, x)?;
        // A NaN would poison the moments for good, so refuse it before touching any state.
        if !loss.is_finite() || !max_abs(&grad)?.is_finite() {
            return Err(Error::invalid(format!(
                "Adam: the objective returned a non-finite loss or gradient (loss {loss})"
            )));
        }
        let (updated, moments) = self.config.update(x, &grad, self.moments.as_ref())?;
        *x = updated;
        self.moments = Some(moments);
        Ok(StepReport {
            loss,
            evaluations: 1,
        })
    }

    fn name(&self) -> &'static str {
        "adam"
    }

    fn reset(&mut self) {
        self.moments = None;
    }
}
