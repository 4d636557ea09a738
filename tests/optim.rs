//! The optimisers on small synthetic objectives with known minima.

use atelier::stylize::optim::{
    make_optimizer, Adam, AdamConfig, Lbfgs, LbfgsConfig, Objective, Optimizer, OptimizerKind,
};
use atelier::Error;
use candle_core::{DType, Device, Tensor, Var};

type TestResult = anyhow::Result<()>;

/// f(x) = 0.5 Σ a_i x_i² with the a_i cycling through `levels` log-spaced values from 1 to
/// `condition` (its condition number), started from all ones.
fn quadratic_with_levels(
    dim: usize,
    levels: usize,
    condition: f64,
    dtype: DType,
) -> candle_core::Result<(Tensor, Tensor)> {
    let scales: Vec<f64> = (0..dim)
        .map(|i| condition.powf((i % levels) as f64 / (levels - 1) as f64))
        .collect();
    let scales = Tensor::new(scales, &Device::Cpu)?.to_dtype(dtype)?;
    let start = Tensor::ones(dim, dtype, &Device::Cpu)?;
    Ok((scales, start))
}

/// Like [`quadratic_with_levels`] with every eigenvalue distinct.
fn quadratic(dim: usize, condition: f64, dtype: DType) -> candle_core::Result<(Tensor, Tensor)> {
    quadratic_with_levels(dim, dim, condition, dtype)
}

fn quadratic_objective(
    scales: &Tensor,
) -> impl FnMut(&Tensor) -> atelier::Result<(f64, Tensor)> + '_ {
    move |x: &Tensor| {
        let grad = (x * scales)?;
        let loss = (&grad * x)?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?
            * 0.5;
        Ok((loss, grad))
    }
}

/// The 2-D Rosenbrock function (1 - a)² + 100 (b - a²)² and its gradient, with tensor ops.
fn rosenbrock(x: &Tensor) -> atelier::Result<(f64, Tensor)> {
    let a = x.narrow(0, 0, 1)?;
    let b = x.narrow(0, 1, 1)?;
    let one_minus_a = a.affine(-1.0, 1.0)?;
    let valley = (&b - a.sqr()?)?;
    let loss = (one_minus_a.sqr()? + (valley.sqr()? * 100.0)?)?;
    // d/da = -2 (1 - a) - 400 a (b - a²), d/db = 200 (b - a²)
    let grad_a = ((&one_minus_a * -2.0)? - ((&a * &valley)? * 400.0)?)?;
    let grad_b = (&valley * 200.0)?;
    let grad = Tensor::cat(&[grad_a, grad_b], 0)?;
    let loss = loss.to_dtype(DType::F64)?.to_vec1::<f64>()?[0];
    Ok((loss, grad))
}

fn values(x: &Tensor) -> Vec<f64> {
    x.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// Steps L-BFGS takes to bring the loss below `relative` times its initial value.
fn lbfgs_steps_to(
    scales: &Tensor,
    mut x: Tensor,
    relative: f64,
    max_steps: usize,
) -> anyhow::Result<usize> {
    let mut objective = quadratic_objective(scales);
    let initial = objective(&x)?.0;
    let mut optimizer = Lbfgs::default();
    let mut loss = initial;
    for step in 1..=max_steps {
        let report = optimizer.step(&mut x, &mut objective)?;
        assert!(
            report.loss <= loss,
            "loss went up: {} -> {}",
            loss,
            report.loss
        );
        loss = report.loss;
        // The reported loss is the loss at the returned x.
        let actual = objective(&x)?.0;
        assert!(
            (actual - loss).abs() <= 1e-6 * actual.max(1e-30),
            "{actual} vs {loss}"
        );
        if loss <= relative * initial {
            return Ok(step);
        }
    }
    anyhow::bail!("loss {loss:e} (initial {initial:e}) after {max_steps} steps")
}

#[test]
fn lbfgs_solves_an_ill_conditioned_quadratic_in_few_steps() -> TestResult {
    // Steepest descent needs thousands of steps at condition 1e3; torch.optim.LBFGS
    // (strong_wolfe, history 10) needs 23 here and 80 for the fully spread spectrum.
    for dtype in [DType::F32, DType::F64] {
        let (scales, start) = quadratic_with_levels(50, 5, 1e3, dtype)?;
        let steps = lbfgs_steps_to(&scales, start, 1e-6, 29)?;
        println!("{dtype:?}, 5 eigenvalue levels: {steps} steps");

        let (scales, start) = quadratic(50, 1e3, dtype)?;
        let steps = lbfgs_steps_to(&scales, start, 1e-6, 100)?;
        println!("{dtype:?}, 50 distinct eigenvalues: {steps} steps");
    }
    Ok(())
}

#[test]
fn lbfgs_reaches_the_rosenbrock_minimum() -> TestResult {
    let mut x = Tensor::new(&[-1.2f64, 1.0], &Device::Cpu)?;
    let mut optimizer = Lbfgs::default();
    let mut objective = rosenbrock;
    for _ in 0..100 {
        optimizer.step(&mut x, &mut objective)?;
        if optimizer.has_converged() {
            break;
        }
    }
    let v = values(&x);
    assert!(
        (v[0] - 1.0).abs() < 1e-4 && (v[1] - 1.0).abs() < 1e-4,
        "ended at {v:?}"
    );
    Ok(())
}

#[test]
fn lbfgs_rosenbrock_in_f32() -> TestResult {
    let mut x = Tensor::new(&[-1.2f32, 1.0], &Device::Cpu)?;
    let mut optimizer = Lbfgs::default();
    let mut objective = rosenbrock;
    for _ in 0..100 {
        optimizer.step(&mut x, &mut objective)?;
    }
    let v = values(&x);
    assert!(
        (v[0] - 1.0).abs() < 1e-2 && (v[1] - 1.0).abs() < 1e-2,
        "ended at {v:?}"
    );
    Ok(())
}

#[test]
fn adam_reduces_the_quadratic_and_rosenbrock() -> TestResult {
    let (scales, mut x) = quadratic(50, 1e3, DType::F32)?;
    let mut objective = quadratic_objective(&scales);
    let initial = objective(&x)?.0;
    let mut adam = Adam::new(AdamConfig {
        learning_rate: 0.05,
        ..AdamConfig::default()
    });
    for _ in 0..300 {
        let report = adam.step(&mut x, &mut objective)?;
        assert_eq!(report.evaluations, 1);
    }
    let last = objective(&x)?.0;
    assert!(last < 1e-3 * initial, "{initial} -> {last}");

    let mut x = Tensor::new(&[-1.2f64, 1.0], &Device::Cpu)?;
    let mut adam = Adam::new(AdamConfig {
        learning_rate: 0.02,
        ..AdamConfig::default()
    });
    let mut objective = rosenbrock;
    let initial = objective(&x)?.0;
    for _ in 0..2000 {
        adam.step(&mut x, &mut objective)?;
    }
    let last = objective(&x)?.0;
    assert!(last < 1e-2 * initial, "{initial} -> {last}");
    Ok(())
}

/// A small Gatys-like loss through candle autograd: match the Gram matrix of `style` and the
/// values of `content`, for an image-shaped (1, 3, 4, 4) tensor.
fn autograd_objective(
    content: Tensor,
    style_gram: Tensor,
) -> impl FnMut(&Tensor) -> atelier::Result<(f64, Tensor)> {
    move |x: &Tensor| {
        let var = Var::from_tensor(x)?;
        let features = var.as_tensor().reshape((3, 16))?;
        let gram = (features.matmul(&features.t()?)? / 16.0)?;
        let style_loss = (gram - &style_gram)?.sqr()?.sum_all()?;
        let content_loss = (var.as_tensor() - &content)?.sqr()?.sum_all()?;
        let loss = (style_loss + (content_loss * 0.1)?)?;
        let grads = loss.backward()?;
        let grad = grads
            .get(var.as_tensor())
            .ok_or_else(|| Error::invalid("no gradient for the image"))?
            .clone();
        Ok((loss.to_scalar::<f32>()? as f64, grad))
    }
}

#[test]
fn both_optimizers_work_with_an_autograd_objective() -> TestResult {
    let device = Device::Cpu;
    let content = Tensor::arange(0f32, 48., &device)?.reshape((1, 3, 4, 4))?;
    let content = (content / 48.0)?;
    let style = Tensor::new(
        (0..48)
            .map(|i| ((i * 7 % 11) as f32) / 11.0)
            .collect::<Vec<_>>(),
        &device,
    )?
    .reshape((3, 16))?;
    let style_gram = (style.matmul(&style.t()?)? / 16.0)?;

    for kind in OptimizerKind::ALL {
        let learning_rate = match kind {
            OptimizerKind::Lbfgs => None,
            OptimizerKind::Adam => Some(0.01),
        };
        let mut optimizer = make_optimizer(kind, learning_rate);
        let mut objective = autograd_objective(content.clone(), style_gram.clone());
        let mut x = Tensor::zeros((1, 3, 4, 4), DType::F32, &device)?;
        let initial = objective(&x)?.0;
        let mut loss = initial;
        for _ in 0..200 {
            loss = optimizer.step(&mut x, &mut objective)?.loss;
        }
        assert!(!x.is_variable() && x.dims() == [1, 3, 4, 4]);
        assert!(loss < 0.2 * initial, "{kind}: {initial} -> {loss}");
    }
    Ok(())
}

#[test]
fn cancellation_propagates_and_leaves_x_at_the_last_accepted_point() -> TestResult {
    let (scales, start) = quadratic(10, 10.0, DType::F32)?;
    for kind in OptimizerKind::ALL {
        let mut optimizer = make_optimizer(kind, Some(0.1));
        let mut x = start.clone();
        let mut calls = 0;
        let mut inner = quadratic_objective(&scales);
        let mut objective = |point: &Tensor| {
            calls += 1;
            if calls == 3 {
                return Err(Error::Cancelled);
            }
            inner(point)
        };
        let mut result = Ok(());
        for _ in 0..5 {
            let before = values(&x);
            match optimizer.step(&mut x, &mut objective) {
                Ok(_) => {}
                Err(err) => {
                    assert_eq!(values(&x), before, "{kind}: x moved in a cancelled step");
                    result = Err(err);
                    break;
                }
            }
        }
        assert!(
            matches!(result, Err(Error::Cancelled)),
            "{kind}: expected Cancelled, got {result:?}"
        );
        // The optimiser stays usable after a cancelled step.
        let mut objective = quadratic_objective(&scales);
        let before = objective(&x)?.0;
        optimizer.step(&mut x, &mut objective)?;
        let after = objective(&x)?.0;
        assert!(after < before, "{kind}: {before} -> {after}");
    }
    Ok(())
}

#[test]
fn warmed_up_lbfgs_steps_cost_one_evaluation() -> TestResult {
    let (scales, mut x) = quadratic(200, 100.0, DType::F32)?;
    // A smooth non-quadratic term so the curvature changes from step to step.
    let mut inner = quadratic_objective(&scales);
    let mut calls = 0;
    let mut objective = |point: &Tensor| {
        calls += 1;
        let (loss, grad) = inner(point)?;
        let quartic = point.sqr()?.sqr()?;
        let extra = quartic.sum_all()?.to_scalar::<f32>()? as f64 * 0.25;
        let grad = (grad + point.sqr()?.mul(point)?)?;
        Ok((loss + extra, grad))
    };
    let mut optimizer = Lbfgs::default();
    let mut reports = Vec::new();
    for _ in 0..25 {
        reports.push(optimizer.step(&mut x, &mut objective)?);
    }
    let total: usize = reports.iter().map(|r| r.evaluations).sum();
    assert_eq!(
        total, calls,
        "reported evaluations must match the calls made"
    );
    let warmed = &reports[5..];
    let single = warmed.iter().filter(|r| r.evaluations == 1).count();
    assert!(
        single * 10 >= warmed.len() * 8,
        "only {single} of {} warmed-up steps used one evaluation: {:?}",
        warmed.len(),
        warmed.iter().map(|r| r.evaluations).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn lbfgs_reevaluates_when_the_caller_replaces_x() -> TestResult {
    let (scales, mut x) = quadratic(20, 10.0, DType::F32)?;
    let mut objective = quadratic_objective(&scales);
    let mut optimizer = Lbfgs::default();
    for _ in 0..3 {
        optimizer.step(&mut x, &mut objective)?;
    }
    // Like clamping the image to the pixel range between steps.
    x = x.clamp(0.01f32, 10.0)?;
    let expected = objective(&x)?.0;
    let report = optimizer.step(&mut x, &mut objective)?;
    assert!(report.evaluations >= 1);
    assert!(report.loss < expected);

    // A new image of another size starts afresh.
    let (scales, mut x) = quadratic(7, 10.0, DType::F32)?;
    let mut objective = quadratic_objective(&scales);
    let report = optimizer.step(&mut x, &mut objective)?;
    assert!(report.evaluations >= 2 && report.loss < 0.5 * 7.0 * 10.0);
    Ok(())
}

#[test]
fn lbfgs_stops_at_a_zero_gradient() -> TestResult {
    let (scales, _) = quadratic(5, 10.0, DType::F32)?;
    let mut x = Tensor::zeros(5, DType::F32, &Device::Cpu)?;
    let mut objective = quadratic_objective(&scales);
    let mut optimizer = Lbfgs::default();
    let report = optimizer.step(&mut x, &mut objective)?;
    assert_eq!(report.evaluations, 1);
    assert_eq!(report.loss, 0.0);
    assert!(optimizer.has_converged());
    assert_eq!(values(&x), vec![0.0; 5]);
    // Nothing left to do: later steps cost nothing.
    assert_eq!(optimizer.step(&mut x, &mut objective)?.evaluations, 0);
    Ok(())
}

#[test]
fn lbfgs_backtracks_out_of_nan_regions() -> TestResult {
    let (scales, mut x) = quadratic(10, 10.0, DType::F32)?;
    let mut inner = quadratic_objective(&scales);
    // Undefined (NaN) wherever some coordinate leaves (-1.5, 1.5).
    let mut objective = |point: &Tensor| {
        let (loss, grad) = inner(point)?;
        let outside = point.abs()?.max_all()?.to_scalar::<f32>()? >= 1.5;
        Ok((if outside { f64::NAN } else { loss }, grad))
    };
    // A huge learning rate makes the first trial land far outside.
    let mut optimizer = Lbfgs::new(LbfgsConfig {
        learning_rate: 1e4,
        ..LbfgsConfig::default()
    });
    let initial = objective(&x)?.0;
    let mut loss = initial;
    for _ in 0..10 {
        loss = optimizer.step(&mut x, &mut objective)?.loss;
        assert!(loss.is_finite());
    }
    assert!(loss < 0.1 * initial, "{initial} -> {loss}");
    Ok(())
}

#[test]
fn lbfgs_reports_a_loss_that_is_never_finite() -> TestResult {
    let (scales, mut x) = quadratic(4, 10.0, DType::F32)?;
    let start = x.clone();
    let mut inner = quadratic_objective(&scales);
    let mut objective = |point: &Tensor| {
        let (loss, grad) = inner(point)?;
        let at_start = values(point) == values(&start);
        Ok((if at_start { loss } else { f64::INFINITY }, grad))
    };
    let mut optimizer = Lbfgs::default();
    let err = optimizer.step(&mut x, &mut objective).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("NaN or infinite")),
        "{err}"
    );
    assert_eq!(values(&x), values(&start));
    Ok(())
}

#[test]
fn invalid_learning_rate_is_reported_by_step() -> TestResult {
    let (scales, mut x) = quadratic(4, 10.0, DType::F32)?;
    let mut objective = quadratic_objective(&scales);
    let objective: &mut Objective = &mut objective;
    for kind in OptimizerKind::ALL {
        let mut optimizer = make_optimizer(kind, Some(-1.0));
        let err = optimizer.step(&mut x, objective).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{kind}: {err}");
    }
    Ok(())
}

#[test]
fn lbfgs_first_step_survives_f32_rounding_on_large_images() -> TestResult {
    // Pixel-like values (100..200) with a large gradient: PyTorch's first step 1/|g|_1 moves
    // each pixel by ~1e-6, below f32 resolution there (~1e-5), so x does not change at all.
    let n = 3 * 256 * 256;
    let device = Device::Cpu;
    let ramp = Tensor::arange(0u32, n as u32, &device)?.to_dtype(DType::F32)?;
    let target = ((&ramp * 0.37)?.sin()? * 50.0)?.affine(1.0, 150.0)?;
    let weights = ((&ramp * 0.11)?.cos()? * 40.0)?.affine(1.0, 60.0)?;
    let mut x = Tensor::full(150f32, n, &device)?;
    let mut objective = |point: &Tensor| -> atelier::Result<(f64, Tensor)> {
        let diff = (point - &target)?;
        let weighted = (&diff * &weights)?;
        let loss = (&weighted * &diff)?.sum_all()?.to_scalar::<f32>()? as f64;
        Ok((loss, (weighted * 2.0)?))
    };
    let initial = objective(&x)?.0;
    let mut optimizer = Lbfgs::default();
    let first = optimizer.step(&mut x, &mut objective)?;
    assert!(first.loss < initial, "{initial} -> {first:?}");
    assert!(!optimizer.has_converged());
    let mut loss = first.loss;
    for _ in 0..20 {
        loss = optimizer.step(&mut x, &mut objective)?.loss;
    }
    assert!(loss < 1e-4 * initial, "{initial} -> {loss}");

    // With a one-evaluation line search the first step cannot grow far enough; the next one
    // carries on from where it stopped instead of declaring convergence.
    // Uniform values: the first trial step leaves every element unchanged.
    let target = Tensor::full(100f32, n, &device)?;
    let mut objective = |point: &Tensor| -> atelier::Result<(f64, Tensor)> {
        let diff = (point - &target)?;
        let loss = diff.sqr()?.sum_all()?.to_scalar::<f32>()? as f64 * 50.0;
        Ok((loss, (diff * 100.0)?))
    };
    let mut x = Tensor::full(140f32, n, &device)?;
    let initial = objective(&x)?.0;
    let mut optimizer = Lbfgs::new(LbfgsConfig {
        max_line_search_evals: 1,
        ..LbfgsConfig::default()
    });
    let first = optimizer.step(&mut x, &mut objective)?;
    assert_eq!((first.loss, first.evaluations), (initial, 2));
    assert!(!optimizer.has_converged());
    let mut loss = initial;
    for _ in 0..5 {
        loss = optimizer.step(&mut x, &mut objective)?.loss;
    }
    assert!(loss < initial, "{initial} -> {loss}");
    Ok(())
}
