//! Checks the custom ops in `atelier::nn::ops` against candle's reference forward passes and
//! against central finite differences computed in f64.

use atelier::nn::ops;
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

fn randn(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

fn tensor(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(data.to_vec(), shape, &Device::Cpu).unwrap()
}

fn tensor64(data: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(data.to_vec(), shape, &Device::Cpu).unwrap()
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Central differences of `f` at `at`, in f64.
fn numeric_grad(at: &[f64], f: impl Fn(&[f64]) -> f64, eps: f64) -> Vec<f64> {
    let mut point = at.to_vec();
    (0..at.len())
        .map(|i| {
            point[i] = at[i] + eps;
            let plus = f(&point);
            point[i] = at[i] - eps;
            let minus = f(&point);
            point[i] = at[i];
            (plus - minus) / (2.0 * eps)
        })
        .collect()
}

fn assert_close(what: &str, analytic: &[f32], numeric: &[f64], rel_tol: f64) {
    assert_eq!(analytic.len(), numeric.len(), "{what}: length");
    let scale = numeric.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-3);
    for (i, (&a, &n)) in analytic.iter().zip(numeric).enumerate() {
        let err = (a as f64 - n).abs();
        assert!(
            err <= rel_tol * scale,
            "{what}: element {i}: analytic {a} vs numeric {n} (scale {scale})"
        );
    }
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

struct ConvCase {
    k: usize,
    stride: usize,
    padding: usize,
    h: usize,
    w: usize,
}

const fn case(k: usize, stride: usize, padding: usize, h: usize, w: usize) -> ConvCase {
    ConvCase {
        k,
        stride,
        padding,
        h,
        w,
    }
}

const CONV_CASES: &[ConvCase] = &[
    case(3, 1, 1, 7, 6),
    case(3, 1, 1, 8, 8),
    case(3, 2, 1, 7, 7), // odd: (7 + 2 - 3) divisible by 2
    case(3, 2, 1, 8, 8), // even: (8 + 2 - 3) not divisible by 2, last row unreached
    case(3, 2, 1, 8, 9),
    case(3, 2, 0, 8, 7),
    case(9, 1, 4, 10, 9),
    case(9, 1, 0, 12, 11),
    case(1, 1, 0, 5, 6),
    case(1, 2, 0, 5, 6),
    case(4, 2, 1, 9, 8), // even kernel
    case(3, 3, 1, 10, 8),
    case(1, 1, 1, 4, 5), // padding > k - 1
];

/// Reference loss sum(conv(x, w) * r) in f64 with candle's own conv.
fn conv_loss_f64(
    x: &[f64],
    x_shape: &[usize],
    w: &[f64],
    w_shape: &[usize],
    r: &[f64],
    c: &ConvCase,
) -> f64 {
    let y = tensor64(x, x_shape)
        .conv2d(&tensor64(w, w_shape), c.padding, c.stride, 1, 1)
        .unwrap();
    let r = tensor64(r, y.dims());
    (y * r)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn check_conv_case(c: &ConvCase, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (n, c_in, c_out) = (2, 3, 4);
    let x_shape = [n, c_in, c.h, c.w];
    let w_shape = [c_out, c_in, c.k, c.k];
    let x_data = randn(&mut rng, x_shape.iter().product());
    let w_data = randn(&mut rng, w_shape.iter().product());
    let b_data = randn(&mut rng, c_out);

    let x = Var::from_tensor(&tensor(&x_data, &x_shape)).unwrap();
    let w = Var::from_tensor(&tensor(&w_data, &w_shape)).unwrap();
    let b = Var::from_tensor(&tensor(&b_data, &[c_out])).unwrap();
    let y = ops::conv2d(&x, &w, Some(&b), c.padding, c.stride, true).unwrap();

    // Forward equals candle's reference.
    let reference = x
        .as_tensor()
        .conv2d(w.as_tensor(), c.padding, c.stride, 1, 1)
        .unwrap()
        .broadcast_add(&b.reshape((1, c_out, 1, 1)).unwrap())
        .unwrap();
    assert_eq!(y.dims(), reference.dims());
    // f32 sums in a different order (GEMM tiles): agreement to f32 rounding, not bit for bit.
    assert_close("forward", &to_vec(&y), &widen(&to_vec(&reference)), 1e-5);

    let r_data = randn(&mut rng, y.elem_count());
    let loss = (&y * tensor(&r_data, y.dims())).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let grad_x = to_vec(grads.get(&x).expect("no input gradient"));
    let grad_w = to_vec(grads.get(&w).expect("no weight gradient"));
    let grad_b = to_vec(grads.get(&b).expect("no bias gradient"));

    let (x64, w64, r64) = (widen(&x_data), widen(&w_data), widen(&r_data));
    let label = format!("k={} s={} p={} {}x{}", c.k, c.stride, c.padding, c.h, c.w);
    // The loss is linear in x and in w, so a large step is exact and keeps roundoff small.
    let numeric_x = numeric_grad(
        &x64,
        |x| conv_loss_f64(x, &x_shape, &w64, &w_shape, &r64, c),
        0.5,
    );
    assert_close(&format!("grad x, {label}"), &grad_x, &numeric_x, 1e-4);
    let numeric_w = numeric_grad(
        &w64,
        |w| conv_loss_f64(&x64, &x_shape, w, &w_shape, &r64, c),
        0.5,
    );
    assert_close(&format!("grad w, {label}"), &grad_w, &numeric_w, 1e-4);
    // Bias gradient: the sum of r over batch and space for each output channel.
    let (ho, wo) = (y.dim(2).unwrap(), y.dim(3).unwrap());
    let numeric_b: Vec<f64> = (0..c_out)
        .map(|o| {
            (0..n)
                .flat_map(|b| {
                    let start = (b * c_out + o) * ho * wo;
                    r64[start..start + ho * wo].to_vec()
                })
                .sum()
        })
        .collect();
    assert_close(&format!("grad b, {label}"), &grad_b, &numeric_b, 1e-5);
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    for (i, c) in CONV_CASES.iter().enumerate() {
        check_conv_case(c, 100 + i as u64);
    }
}

#[test]
fn conv2d_without_weight_grad_gives_no_weight_gradient() {
    let mut rng = StdRng::seed_from_u64(7);
    let x = Var::from_tensor(&tensor(&randn(&mut rng, 2 * 3 * 6 * 6), &[2, 3, 6, 6])).unwrap();
    let w = Var::from_tensor(&tensor(&randn(&mut rng, 4 * 3 * 9), &[4, 3, 3, 3])).unwrap();
    let b = Var::from_tensor(&tensor(&randn(&mut rng, 4), &[4])).unwrap();
    for stride in [1, 2] {
        let y = ops::conv2d(&x, &w, Some(&b), 1, stride, false).unwrap();
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_some(), "input gradient missing");
        assert!(grads.get(&w).is_none(), "weight got a gradient");
        assert!(grads.get(&b).is_none(), "bias got a gradient");
    }
}

#[test]
fn conv2d_of_constants_builds_no_graph() {
    let x = Tensor::ones((1, 2, 5, 5), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::ones((3, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let y = ops::conv2d(&x, &w, None, 1, 1, true).unwrap();
    assert!(!y.track_op());
    assert_eq!(y.dims(), &[1, 3, 5, 5]);
}

#[test]
fn conv2d_accepts_non_contiguous_input() {
    let mut rng = StdRng::seed_from_u64(11);
    // (N, H, W, C) data viewed as NCHW through a permute: not contiguous.
    let nhwc = tensor(&randn(&mut rng, 2 * 7 * 5 * 3), &[2, 7, 5, 3]);
    let x = Var::from_tensor(&nhwc).unwrap();
    let x_nchw = x.permute((0, 3, 1, 2)).unwrap();
    assert!(!x_nchw.is_contiguous());
    let w = tensor(&randn(&mut rng, 4 * 3 * 9), &[4, 3, 3, 3]);
    // Non-contiguous kernel too.
    let w_t = w.transpose(2, 3).unwrap();
    for stride in [1, 2] {
        let y = ops::conv2d(&x_nchw, &w_t, None, 1, stride, false).unwrap();
        let reference = x_nchw
            .contiguous()
            .unwrap()
            .conv2d(&w_t, 1, stride, 1, 1)
            .unwrap();
        // f32 sums in a different order (GEMM tiles): agreement to f32 rounding, not bit for bit.
        assert_close("forward", &to_vec(&y), &widen(&to_vec(&reference)), 1e-5);
        let grad = y.sum_all().unwrap().backward().unwrap();
        let grad = grad.get(&x).unwrap();
        assert_eq!(grad.dims(), &[2, 7, 5, 3]);
        // Same gradient as through a contiguous copy.
        let x2 = Var::from_tensor(&x_nchw.contiguous().unwrap()).unwrap();
        let y2 = ops::conv2d(&x2, &w_t.contiguous().unwrap(), None, 1, stride, false).unwrap();
        let grad2 = y2.sum_all().unwrap().backward().unwrap();
        let grad2 = grad2.get(&x2).unwrap().permute((0, 2, 3, 1)).unwrap();
        assert_close(
            "non-contiguous grad",
            &to_vec(grad),
            &widen(&to_vec(&grad2)),
            1e-5,
        );
    }
}

/// Distinct values (a shuffled ramp), so every window has a unique maximum at least 0.01 above
/// the others.
fn distinct_values(rng: &mut StdRng, n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n).map(|i| i as f32 * 0.01 - n as f32 * 0.005).collect();
    v.shuffle(rng);
    v
}

/// Expected max-pool input gradient: `r` at each window's argmax (first on ties), 0 elsewhere.
fn expected_pool_grad(x: &[f32], shape: [usize; 4], r: &[f32]) -> Vec<f32> {
    let [n, c, h, w] = shape;
    let (oh, ow) = (h / 2, w / 2);
    let mut g = vec![0f32; x.len()];
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = None::<usize>;
                for dy in 0..2 {
                    for dx in 0..2 {
                        let idx = plane * h * w + (2 * oy + dy) * w + 2 * ox + dx;
                        if best.is_none_or(|b| x[idx] > x[b]) {
                            best = Some(idx);
                        }
                    }
                }
                g[best.unwrap()] = r[plane * oh * ow + oy * ow + ox];
            }
        }
    }
    g
}

#[test]
fn max_pool_forward_matches_candle() {
    let mut rng = StdRng::seed_from_u64(3);
    for (h, w) in [(8, 8), (7, 9), (5, 4), (2, 3)] {
        let x = tensor(&randn(&mut rng, 2 * 3 * h * w), &[2, 3, h, w]);
        let ours = ops::max_pool2x2(&x).unwrap();
        let reference = x.max_pool2d(2).unwrap();
        assert_eq!(ours.dims(), &[2, 3, h / 2, w / 2]);
        assert_eq!(to_vec(&ours), to_vec(&reference), "{h}x{w}");
    }
}

#[test]
fn max_pool_gradient_is_one_at_the_max() {
    let mut rng = StdRng::seed_from_u64(5);
    for (h, w) in [(6, 8), (7, 7), (5, 6), (3, 2)] {
        let shape = [2, 3, h, w];
        let data = distinct_values(&mut rng, shape.iter().product());
        let x = Var::from_tensor(&tensor(&data, &shape)).unwrap();
        let grads = ops::max_pool2x2(&x)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let grad = to_vec(grads.get(&x).unwrap());
        let ones = vec![1f32; 2 * 3 * (h / 2) * (w / 2)];
        assert_eq!(grad, expected_pool_grad(&data, shape, &ones), "{h}x{w}");
        // Explicitly: exactly one 1 per window (candle's own backward gives 0.25s).
        assert_eq!(grad.iter().filter(|&&g| g == 1.0).count(), ones.len());
        assert!(grad.iter().all(|&g| g == 0.0 || g == 1.0));
        // Odd sizes: the dropped last row/column gets nothing.
        if h % 2 == 1 {
            let last_row_sum: f32 = (0..6)
                .flat_map(|p| (0..w).map(move |x| (p, x)))
                .map(|(p, x)| grad[p * h * w + (h - 1) * w + x])
                .sum();
            assert_eq!(last_row_sum, 0.0);
        }
    }
}

#[test]
fn max_pool_gradient_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(9);
    for (h, w) in [(6, 6), (7, 5)] {
        let shape = [2, 2, h, w];
        let data = distinct_values(&mut rng, shape.iter().product());
        let x = Var::from_tensor(&tensor(&data, &shape)).unwrap();
        let y = ops::max_pool2x2(&x).unwrap();
        let r = randn(&mut rng, y.elem_count());
        let loss = (&y * tensor(&r, y.dims())).unwrap().sum_all().unwrap();
        let grad = to_vec(loss.backward().unwrap().get(&x).unwrap());
        assert_eq!(grad, expected_pool_grad(&data, shape, &r));

        let r64 = widen(&r);
        let numeric = numeric_grad(
            &widen(&data),
            |x| {
                let y = tensor64(x, &shape).max_pool2d(2).unwrap();
                (y * tensor64(&r64, &[2, 2, h / 2, w / 2]))
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            },
            1e-3,
        );
        assert_close(&format!("pool grad {h}x{w}"), &grad, &numeric, 1e-6);
    }
}

#[test]
fn max_pool_ties_go_to_the_first_element() {
    let x =
        Var::from_tensor(&Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap()).unwrap();
    let grads = ops::max_pool2x2(&x)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let grad = to_vec(grads.get(&x).unwrap());
    #[rustfmt::skip]
    let expected = [
        1., 0., 1., 0.,
        0., 0., 0., 0.,
        1., 0., 1., 0.,
        0., 0., 0., 0.,
    ];
    assert_eq!(grad, expected);
}

#[test]
fn max_pool_accepts_non_contiguous_input() {
    let mut rng = StdRng::seed_from_u64(13);
    let nhwc = tensor(&distinct_values(&mut rng, 6 * 5 * 4), &[1, 6, 5, 4]);
    let x = nhwc.permute((0, 3, 1, 2)).unwrap();
    assert!(!x.is_contiguous());
    let ours = ops::max_pool2x2(&x).unwrap();
    let reference = x.contiguous().unwrap().max_pool2d(2).unwrap();
    assert_eq!(to_vec(&ours), to_vec(&reference));
}

#[test]
fn max_pool_rejects_tiny_inputs() {
    let x = Tensor::zeros((1, 1, 1, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(ops::max_pool2x2(&x).is_err());
}

#[test]
fn max_pool_large_input_uses_threads_and_stays_correct() {
    // Above the parallel threshold (2^20 elements).
    let mut rng = StdRng::seed_from_u64(17);
    let shape = [1, 17, 250, 251];
    let data = randn(&mut rng, shape.iter().product());
    let x = Var::from_tensor(&tensor(&data, &shape)).unwrap();
    let y = ops::max_pool2x2(&x).unwrap();
    assert_eq!(to_vec(&y), to_vec(&x.max_pool2d(2).unwrap()));
    let grad = to_vec(y.sum_all().unwrap().backward().unwrap().get(&x).unwrap());
    let ones = vec![1f32; y.elem_count()];
    assert_eq!(grad, expected_pool_grad(&data, shape, &ones));
}

/// conv -> relu -> pool -> strided conv, against f64 finite differences of candle's reference
/// forward pass: checks that the ops compose under autograd.
#[test]
fn add_matches_candle_and_passes_the_gradient_to_both_operands() {
    let mut rng = StdRng::seed_from_u64(11);
    let shape = [1, 4, 70, 90]; // 25 200 elements: more than one parallel chunk
    let n = shape.iter().product();
    let (a, b, r) = (randn(&mut rng, n), randn(&mut rng, n), randn(&mut rng, n));
    let a = Var::from_tensor(&tensor(&a, &shape)).unwrap();
    let b = Var::from_tensor(&tensor(&b, &shape)).unwrap();
    let sum = ops::add(a.as_tensor(), b.as_tensor()).unwrap();
    let reference = (a.as_tensor() + b.as_tensor()).unwrap();
    assert_eq!(to_vec(&sum), to_vec(&reference));
    // A non-contiguous operand is made contiguous first.
    let t = b.as_tensor().transpose(2, 3).unwrap();
    let tt = ops::add(&t, &t).unwrap();
    assert_eq!(to_vec(&tt), to_vec(&(&t + &t).unwrap()));
    let loss = (sum * tensor(&r, &shape)).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    for v in [&a, &b] {
        assert_eq!(to_vec(grads.get(v.as_tensor()).unwrap()), r);
    }
}

#[test]
fn chained_ops_gradient_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(21);
    let x_shape = [1, 2, 9, 8];
    let w1_shape = [3, 2, 3, 3];
    let w2_shape = [2, 3, 3, 3];
    let x_data = randn(&mut rng, 2 * 9 * 8);
    let w1 = randn(&mut rng, 3 * 2 * 9);
    let w2 = randn(&mut rng, 2 * 3 * 9);

    let x = Var::from_tensor(&tensor(&x_data, &x_shape)).unwrap();
    let h = ops::conv2d(&x, &tensor(&w1, &w1_shape), None, 1, 1, false)
        .unwrap()
        .relu()
        .unwrap();
    let h = ops::max_pool2x2(&h).unwrap();
    let y = ops::conv2d(&h, &tensor(&w2, &w2_shape), None, 1, 2, false).unwrap();
    let r = randn(&mut rng, y.elem_count());
    let y_shape = y.dims().to_vec();
    let loss = (&y * tensor(&r, &y_shape)).unwrap().sum_all().unwrap();
    let grad = to_vec(loss.backward().unwrap().get(&x).unwrap());

    let (w1_64, w2_64, r64) = (widen(&w1), widen(&w2), widen(&r));
    let numeric = numeric_grad(
        &widen(&x_data),
        |x| {
            let h = tensor64(x, &x_shape)
                .conv2d(&tensor64(&w1_64, &w1_shape), 1, 1, 1, 1)
                .unwrap()
                .relu()
                .unwrap()
                .max_pool2d(2)
                .unwrap();
            let y = h.conv2d(&tensor64(&w2_64, &w2_shape), 1, 2, 1, 1).unwrap();
            (y * tensor64(&r64, &y_shape))
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        },
        1e-4,
    );
    assert_close("chained grad", &grad, &numeric, 1e-3);
}

/// Backward timing against candle's built-in ops on a VGG-sized layer; run with
/// `cargo test --release --test ops_gradients -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing_against_candle_backward() {
    use std::time::Instant;
    let mut rng = StdRng::seed_from_u64(1);
    for (c, size, stride) in [(64, 128, 1), (128, 64, 1), (64, 128, 2)] {
        let x = Var::from_tensor(&tensor(
            &randn(&mut rng, c * size * size),
            &[1, c, size, size],
        ))
        .unwrap();
        let w = tensor(&randn(&mut rng, c * c * 9), &[c, c, 3, 3]);
        let time = |f: &dyn Fn() -> Tensor| {
            let start = Instant::now();
            let y = f();
            let forward = start.elapsed();
            let grads = y.sum_all().unwrap().backward().unwrap();
            assert!(grads.get(&x).is_some());
            (forward, start.elapsed() - forward)
        };
        let ours = time(&|| {
            let y = ops::conv2d(&x, &w, None, 1, stride, false).unwrap();
            ops::max_pool2x2(&y).unwrap()
        });
        let candle = time(&|| {
            x.conv2d(&w, 1, stride, 1, 1)
                .unwrap()
                .max_pool2d(2)
                .unwrap()
        });
        println!(
            "C={c} {size}x{size} stride {stride}: ours fwd {:?} bwd {:?}; candle fwd {:?} bwd {:?}",
            ours.0, ours.1, candle.0, candle.1
        );
    }
}
