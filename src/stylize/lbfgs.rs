//! Limited-memory BFGS with a strong-Wolfe line search, on the [`Optimizer`] interface.
//!
//! Follows PyTorch's `torch.optim.LBFGS(line_search_fn="strong_wolfe")` closely (two-loop
//! recursion, gamma = s·y / y·y scaling, first step min(1, 1/|g|_1), cubic interpolation), with
//! differences that matter for style transfer: the line search has a small evaluation budget
//! (each evaluation is a full VGG forward + backward pass); the loss/gradient of the accepted
//! point is kept, so a step normally costs exactly one evaluation; and a steepest-descent step
//! too short to change an f32 image at all is grown instead of being taken for convergence.

use std::collections::VecDeque;

use candle_core::Tensor;

use super::optim::{
    check_learning_rate, dot, evaluate, max_abs, sum_abs, Objective, Optimizer, StepReport,
};
use crate::{Error, Result};

/// Sufficient-decrease (Armijo) constant of the Wolfe conditions.
const WOLFE_C1: f64 = 1e-4;
/// Curvature constant of the strong Wolfe conditions (0.9 is standard for quasi-Newton).
const WOLFE_C2: f64 = 0.9;
/// Curvature pairs with y·s at or below this are skipped: they would break positive definiteness.
const MIN_CURVATURE: f64 = 1e-10;
/// Loss changes below this fraction of the loss are treated as float rounding (losses are
/// usually summed in f32), not as evidence that a step went too far.
const LOSS_ROUNDING: f64 = 1e-6;
/// Growth of a trial step that was too short to change the loss measurably.
const SHORT_STEP_GROWTH: f64 = 10.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LbfgsConfig {
    /// Number of curvature pairs (s, y) remembered.
    pub history: usize,
    /// Multiplier on the initial trial step of each line search.
    pub learning_rate: f64,
    /// Most objective evaluations one line search may spend (its first trial included).
    pub max_line_search_evals: usize,
    /// Converged once the largest absolute gradient element is at or below this.
    pub tolerance_grad: f64,
    /// Converged once a step changes the loss, or every element of x, by less than this.
    pub tolerance_change: f64,
}

impl Default for LbfgsConfig {
    fn default() -> Self {
        Self {
            history: 10,
            learning_rate: 1.0,
            max_line_search_evals: 6,
            tolerance_grad: 1e-7,
            tolerance_change: 1e-9,
        }
    }
}

impl LbfgsConfig {
    fn validate(&self) -> Result<()> {
        check_learning_rate(self.learning_rate)?;
        if self.max_line_search_evals == 0 {
            return Err(Error::invalid(
                "L-BFGS max_line_search_evals must be at least 1",
            ));
        }
        for (name, value) in [
            ("tolerance_grad", self.tolerance_grad),
            ("tolerance_change", self.tolerance_change),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(Error::invalid(format!(
                    "L-BFGS {name} must be a non-negative number, got {value}"
                )));
            }
        }
        Ok(())
    }
}

/// One remembered step: s = x_{k+1} - x_k, y = g_{k+1} - g_k, rho = 1 / y·s.
struct CurvaturePair {
    s: Tensor,
    y: Tensor,
    rho: f64,
}

/// A point where the objective was evaluated.
#[derive(Clone)]
struct Evaluated {
    x: Tensor,
    loss: f64,
    grad: Tensor,
}

pub struct Lbfgs {
    config: LbfgsConfig,
    pairs: VecDeque<CurvaturePair>,
    /// Scale of the initial inverse Hessian H0 = gamma * I (from the newest pair).
    gamma: f64,
    /// The current point with its loss and gradient; reused while the caller's `x` is this tensor.
    current: Option<Evaluated>,
    /// Where the next steepest-descent search starts when the last one ran out of evaluations
    /// while its steps were still too short to register (only valid while x is unchanged).
    resume_step: Option<f64>,
    converged: bool,
}

impl Lbfgs {
    pub fn new(config: LbfgsConfig) -> Self {
        Self {
            config,
            pairs: VecDeque::new(),
            gamma: 1.0,
            current: None,
            resume_step: None,
            converged: false,
        }
    }

    pub fn config(&self) -> &LbfgsConfig {
        &self.config
    }

    /// Number of curvature pairs currently remembered.
    pub fn history_len(&self) -> usize {
        self.pairs.len()
    }

    fn clear_history(&mut self) {
        self.pairs.clear();
        self.gamma = 1.0;
    }

    /// Loss and gradient at `x`: cached when `x` is the very tensor the last step produced,
    /// otherwise evaluated (the caller may have clamped or replaced the image).
    fn current_point(
        &mut self,
        x: &Tensor,
        objective: &mut Objective<'_>,
        evaluations: &mut usize,
    ) -> Result<Evaluated> {
        if let Some(current) = &self.current {
            if current.x.id() == x.id() {
                return Ok(current.clone());
            }
        }
        // Curvature pairs of another shape, dtype or device cannot be combined with this x.
        let compatible = self.pairs.front().is_none_or(|pair| {
            pair.s.shape() == x.shape()
                && pair.s.dtype() == x.dtype()
                && pair.s.device().same_device(x.device())
        });
        if !compatible {
            self.clear_history();
        }
        self.converged = false;
        self.resume_step = None;
        let (loss, grad) = evaluate(objective, x)?;
        *evaluations += 1;
        let point = Evaluated {
            x: x.clone(),
            loss,
            grad,
        };
        // Cache before anything can fail, so a cancelled step does not cost this evaluation again.
        self.current = Some(point.clone());
        Ok(point)
    }

    /// Two-loop recursion: returns -H·g for the implicit inverse Hessian H.
    fn direction(&self, grad: &Tensor) -> Result<Tensor> {
        let mut q = grad.clone();
        let mut alphas = Vec::with_capacity(self.pairs.len());
        for pair in self.pairs.iter().rev() {
            let alpha = pair.rho * dot(&pair.s, &q)?;
            q = (q - (&pair.y * alpha)?)?;
            alphas.push(alpha);
        }
        let mut r = (q * self.gamma)?;
        for (pair, alpha) in self.pairs.iter().zip(alphas.into_iter().rev()) {
            let beta = pair.rho * dot(&pair.y, &r)?;
            r = (r + (&pair.s * (alpha - beta))?)?;
        }
        Ok(r.neg()?)
    }

    fn remember(&mut self, s: Tensor, y: Tensor) -> Result<()> {
        let ys = dot(&y, &s)?;
        if ys > MIN_CURVATURE {
            let yy = dot(&y, &y)?;
            if self.config.history == 0 {
                return Ok(());
            }
            while self.pairs.len() >= self.config.history {
                self.pairs.pop_front();
            }
            self.gamma = ys / yy;
            self.pairs.push_back(CurvaturePair {
                s,
                y,
                rho: 1.0 / ys,
            });
        }
        Ok(())
    }
}

impl Default for Lbfgs {
    fn default() -> Self {
        Self::new(LbfgsConfig::default())
    }
}

impl Optimizer for Lbfgs {
    fn step(&mut self, x: &mut Tensor, objective: &mut Objective<'_>) -> Result<StepReport> {
        self.config.validate()?;
        let mut evaluations = 0;
        let start = self.current_point(x, objective, &mut evaluations)?;
        let unchanged = |evaluations| StepReport {
            loss: start.loss,
            evaluations,
        };

        if !start.loss.is_finite() {
            return Err(Error::invalid(format!(
                "L-BFGS: the loss at the current point is {}; cannot optimise from there",
                start.loss
            )));
        }
        let grad_max = max_abs(&start.grad)?;
        if !grad_max.is_finite() {
            return Err(Error::invalid(
                "L-BFGS: the gradient at the current point is not finite",
            ));
        }
        if grad_max <= self.config.tolerance_grad {
            self.converged = true;
        }
        if self.converged {
            return Ok(unchanged(evaluations));
        }

        let mut from_history = !self.pairs.is_empty();
        let mut direction = if from_history {
            self.direction(&start.grad)?
        } else {
            start.grad.neg()?
        };
        let mut slope = dot(&start.grad, &direction)?;
        if from_history && !(slope < 0.0 && slope.is_finite()) {
            // The curvature model went bad (e.g. after the caller moved x): fall back to -g.
            self.clear_history();
            from_history = false;
            direction = start.grad.neg()?;
            slope = dot(&start.grad, &direction)?;
        }
        // Without curvature information the step length is unknown; start small like PyTorch
        // (or where the previous, too timid, search left off).
        let initial_step = match (from_history, self.resume_step.take()) {
            (true, _) => self.config.learning_rate,
            (false, Some(resume)) => resume,
            (false, None) => (1.0 / sum_abs(&start.grad)?).min(1.0) * self.config.learning_rate,
        };

        let search = LineSearch {
            origin: &start,
            direction: &direction,
            slope,
            max_evals: self.config.max_line_search_evals,
            tolerance_change: self.config.tolerance_change,
            grow_short_steps: !from_history,
        };
        let outcome = search.run(objective, initial_step)?;
        evaluations += outcome.evaluations;

        let Some(accepted) = outcome.accepted else {
            self.clear_history();
            if let Some(resume) = outcome.resume_step {
                // Every step so far vanished in rounding (a huge gradient on f32 pixels):
                // keep growing from there next time instead of giving up.
                self.resume_step = Some(resume);
                return Ok(unchanged(evaluations));
            }
            if outcome.any_finite {
                // No decrease even along -g with tiny steps: the loss is as low as float
                // precision can tell, so further steps would only burn evaluations.
                if !from_history {
                    self.converged = true;
                }
                return Ok(unchanged(evaluations));
            }
            if from_history {
                // Retry next step along -g, which starts from a much smaller step.
                return Ok(unchanged(evaluations));
            }
            return Err(Error::invalid(format!(
                "L-BFGS: the loss was NaN or infinite at all {} trial points along the \
                 steepest-descent direction (smallest step {:e}); the loss weights or \
                 learning rate are likely too large",
                outcome.evaluations, outcome.smallest_step
            )));
        };

        let s = (&accepted.x - &start.x)?;
        let y = (&accepted.grad - &start.grad)?;
        let change = max_abs(&s)?;
        self.remember(s, y)?;
        if (accepted.loss - start.loss).abs() < self.config.tolerance_change
            || change <= self.config.tolerance_change
        {
            self.converged = true;
        }
        *x = accepted.x.clone();
        let loss = accepted.loss;
        self.current = Some(accepted);
        Ok(StepReport { loss, evaluations })
    }

    fn name(&self) -> &'static str {
        "lbfgs"
    }

    fn has_converged(&self) -> bool {
        self.converged
    }

    fn reset(&mut self) {
        self.clear_history();
        self.current = None;
        self.resume_step = None;
        self.converged = false;
    }
}

/// A trial point of the line search, at `origin + t * direction`.
#[derive(Clone)]
struct Trial {
    t: f64,
    point: Evaluated,
    /// Directional derivative g(t)·d.
    slope: f64,
}

impl Trial {
    /// NaN/inf points are treated as "too far": they bound the bracket from above.
    fn is_finite(&self) -> bool {
        self.point.loss.is_finite() && self.slope.is_finite()
    }

    /// Loss for comparisons, with non-finite points ranked worst.
    fn loss(&self) -> f64 {
        if self.is_finite() {
            self.point.loss
        } else {
            f64::INFINITY
        }
    }
}

struct LineSearchOutcome {
    /// The new point, with a loss strictly below the origin's; None when none was found.
    accepted: Option<Evaluated>,
    evaluations: usize,
    any_finite: bool,
    smallest_step: f64,
    /// Set when the budget ran out while steps were still too short to change the loss.
    resume_step: Option<f64>,
}

/// Book-keeping across the evaluations of one line search.
struct SearchProgress {
    evaluations: usize,
    any_finite: bool,
    smallest_step: f64,
    /// Lowest-loss trial so far, if any is below the origin.
    best: Option<Trial>,
}

struct LineSearch<'p> {
    origin: &'p Evaluated,
    direction: &'p Tensor,
    /// g(0)·d, negative.
    slope: f64,
    max_evals: usize,
    tolerance_change: f64,
    /// Grow steps that change the loss only by rounding (for a guessed initial step).
    grow_short_steps: bool,
}

impl LineSearch<'_> {
    fn trial(&self, objective: &mut Objective<'_>, t: f64) -> Result<Trial> {
        let x = (&self.origin.x + (self.direction * t)?)?.detach();
        let (loss, grad) = evaluate(objective, &x)?;
        let slope = dot(&grad, self.direction)?;
        Ok(Trial {
            t,
            point: Evaluated { x, loss, grad },
            slope,
        })
    }

    fn sufficient_decrease(&self, trial: &Trial) -> bool {
        trial.is_finite() && trial.point.loss <= self.origin.loss + WOLFE_C1 * trial.t * self.slope
    }

    fn flat_enough(&self, trial: &Trial) -> bool {
        trial.slope.abs() <= -WOLFE_C2 * self.slope
    }

    /// A step too short to tell anything: the loss moved by rounding only while the function
    /// still descends. Seen on f32 images, where PyTorch's first step 1/|g|_1 is below the
    /// resolution of pixel values, so x (and the loss) barely change.
    fn too_short_to_measure(&self, trial: &Trial) -> bool {
        trial.is_finite()
            && trial.slope < 0.0
            && (trial.point.loss - self.origin.loss).abs() <= LOSS_ROUNDING * self.origin.loss.abs()
    }

    fn evaluate_at(
        &self,
        objective: &mut Objective<'_>,
        progress: &mut SearchProgress,
        t: f64,
    ) -> Result<Trial> {
        let trial = self.trial(objective, t)?;
        progress.evaluations += 1;
        progress.any_finite |= trial.is_finite();
        progress.smallest_step = progress.smallest_step.min(t);
        let best_loss = progress.best.as_ref().map_or(self.origin.loss, Trial::loss);
        if trial.loss() < best_loss {
            progress.best = Some(trial.clone());
        }
        Ok(trial)
    }

    /// Strong-Wolfe search (Nocedal & Wright, algorithms 3.5 and 3.6) within `max_evals`.
    fn run(&self, objective: &mut Objective<'_>, initial_step: f64) -> Result<LineSearchOutcome> {
        let mut progress = SearchProgress {
            evaluations: 0,
            any_finite: false,
            smallest_step: initial_step,
            best: None,
        };

        let origin = Trial {
            t: 0.0,
            point: self.origin.clone(),
            slope: self.slope,
        };
        let mut accepted: Option<Trial> = None;

        // Bracketing: grow the step until it overshoots or satisfies both Wolfe conditions.
        let mut previous = origin;
        let mut current = self.evaluate_at(objective, &mut progress, initial_step)?;
        let mut bracket: Option<(Trial, Trial)> = None; // (low, high)
        let mut resume_step = None;
        loop {
            let overshoot = !self.sufficient_decrease(&current)
                || (previous.t > 0.0 && current.loss() >= previous.loss());
            if overshoot && self.grow_short_steps && self.too_short_to_measure(&current) {
                let next = current.t * SHORT_STEP_GROWTH;
                if progress.evaluations >= self.max_evals {
                    resume_step = Some(next);
                    break;
                }
                // `previous` stays: the short trial tells nothing about the bracket.
                current = self.evaluate_at(objective, &mut progress, next)?;
                continue;
            }
            if overshoot {
                bracket = Some((previous, current));
                break;
            }
            if self.flat_enough(&current) {
                accepted = Some(current);
                break;
            }
            if current.slope >= 0.0 {
                bracket = Some((current, previous));
                break;
            }
            if progress.evaluations >= self.max_evals {
                // Still descending steeply but out of budget: the point has sufficient decrease.
                accepted = Some(current);
                break;
            }
            let t = current.t;
            let next = cubic_minimizer(
                (previous.t, previous.loss(), previous.slope),
                (t, current.loss(), current.slope),
                Some((t + 0.01 * (t - previous.t), t * 10.0)),
            );
            previous = current;
            current = self.evaluate_at(objective, &mut progress, next)?;
        }

        // Zoom: shrink the bracket around a point satisfying the strong Wolfe conditions.
        if let Some((mut low, mut high)) = bracket {
            let direction_norm = max_abs(self.direction)?;
            let mut insufficient_progress = false;
            while progress.evaluations < self.max_evals {
                let (lo, hi) = (low.t.min(high.t), low.t.max(high.t));
                if (hi - lo) * direction_norm < self.tolerance_change {
                    break;
                }
                let mut t = if high.is_finite() {
                    cubic_minimizer(
                        (low.t, low.loss(), low.slope),
                        (high.t, high.loss(), high.slope),
                        None,
                    )
                } else {
                    // Nothing to interpolate with a NaN: retreat decisively towards `low`.
                    low.t + 0.1 * (high.t - low.t)
                };
                // Keep trials away from the bracket ends so the bracket keeps shrinking.
                let margin = 0.1 * (hi - lo);
                if (hi - t).min(t - lo) < margin {
                    if insufficient_progress || t >= hi || t <= lo {
                        t = if (t - hi).abs() < (t - lo).abs() {
                            hi - margin
                        } else {
                            lo + margin
                        };
                        insufficient_progress = false;
                    } else {
                        insufficient_progress = true;
                    }
                } else {
                    insufficient_progress = false;
                }

                let trial = self.evaluate_at(objective, &mut progress, t)?;
                if !self.sufficient_decrease(&trial) || trial.loss() >= low.loss() {
                    high = trial;
                } else {
                    if self.flat_enough(&trial) {
                        accepted = Some(trial);
                        break;
                    }
                    if trial.slope * (high.t - low.t) >= 0.0 {
                        high = low;
                    }
                    low = trial;
                }
            }
        }

        // Out of budget without a Wolfe point: any decrease still beats standing still (unless
        // it is rounding noise from steps that were all too short).
        let best = progress.best.filter(|_| resume_step.is_none());
        let accepted = accepted
            .filter(|trial| trial.loss() < self.origin.loss)
            .or(best)
            .map(|trial| trial.point);
        Ok(LineSearchOutcome {
            accepted,
            evaluations: progress.evaluations,
            any_finite: progress.any_finite,
            smallest_step: progress.smallest_step,
            resume_step,
        })
    }
}

/// Minimiser of the cubic through two points with values and slopes, clamped to `bounds`
/// (default: between the two points). Falls back to the middle when the cubic has no minimum.
fn cubic_minimizer(
    (x1, f1, g1): (f64, f64, f64),
    (x2, f2, g2): (f64, f64, f64),
    bounds: Option<(f64, f64)>,
) -> f64 {
    let (lower, upper) = bounds.unwrap_or((x1.min(x2), x1.max(x2)));
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let d2_square = d1 * d1 - g1 * g2;
    let minimum = if d2_square >= 0.0 {
        let d2 = d2_square.sqrt();
        if x1 <= x2 {
            x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
        } else {
            x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
        }
    } else {
        f64::NAN
    };
    if minimum.is_finite() {
        minimum.clamp(lower, upper)
    } else {
        (lower + upper) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_minimizer_finds_the_minimum_of_a_quadratic() {
        // f(x) = (x - 2)^2: f(0) = 4, f'(0) = -4, f(3) = 1, f'(3) = 2.
        let t = cubic_minimizer((0.0, 4.0, -4.0), (3.0, 1.0, 2.0), None);
        assert!((t - 2.0).abs() < 1e-12, "{t}");
        // Clamped to the bounds, and never NaN.
        assert_eq!(
            cubic_minimizer((0.0, 4.0, -4.0), (3.0, 1.0, 2.0), Some((2.5, 3.0))),
            2.5
        );
        let t = cubic_minimizer((0.0, 1.0, -1.0), (1.0, f64::INFINITY, 0.0), None);
        assert!(t.is_finite());
    }
}
