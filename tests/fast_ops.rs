//! The fast CPU kernels against candle's own ops (the reference): forward outputs and the
//! gradients with respect to input, weight and bias, on random shapes including odd sizes,
//! stride 2, reflection padding, upsampling and fused ReLU; instance norm likewise.

use atelier::nn::layers::{
    instance_norm as stock_instance_norm, reflection_pad2d, upsample_nearest2x,
};
use atelier::nn::ops::{self, ConvParams, PadMode};
use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};

fn random(rng: &mut rand::rngs::StdRng, shape: &[usize], scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Max |a - b| relative to max |b|.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// The same layer from candle's stock ops, differentiable end to end.
fn reference_conv(x: &Tensor, w: &Tensor, b: &Tensor, p: ConvParams) -> Tensor {
    let x = if p.upsample {
        upsample_nearest2x(x).unwrap()
    } else {
        x.clone()
    };
    // candle's own strided conv backward returns a gradient of the wrong shape when
    // (H + 2p - k) is not a multiple of the stride, so the reference convolves with stride 1
    // and then keeps every stride-th row and column.
    let y = match p.mode {
        PadMode::Zero => x.conv2d(w, p.pad, 1, 1, 1).unwrap(),
        PadMode::Reflect => reflection_pad2d(&x, p.pad)
            .unwrap()
            .conv2d(w, 0, 1, 1, 1)
            .unwrap(),
    };
    let y = if p.stride > 1 {
        let keep = |len: usize| {
            let ids: Vec<u32> = (0..len).step_by(p.stride).map(|i| i as u32).collect();
            Tensor::new(ids, &Device::Cpu).unwrap()
        };
        let (h, w) = (y.dim(2).unwrap(), y.dim(3).unwrap());
        y.index_select(&keep(h), 2)
            .unwrap()
            .index_select(&keep(w), 3)
            .unwrap()
    } else {
        y
    };
    let y = y.broadcast_add(&b.reshape((1, (), 1, 1)).unwrap()).unwrap();
    if p.relu {
        y.relu().unwrap()
    } else {
        y
    }
}

struct Case {
    x: [usize; 4],
    c_out: usize,
    k: (usize, usize),
    params: ConvParams,
}

fn params(pad: usize, mode: PadMode, stride: usize, upsample: bool, relu: bool) -> ConvParams {
    ConvParams {
        pad,
        mode,
        stride,
        upsample,
        relu,
    }
}

fn check_conv(case: &Case, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let [n, c, h, w] = case.x;
    let x = Var::from_tensor(&random(&mut rng, &case.x, 1.0)).unwrap();
    let wt =
        Var::from_tensor(&random(&mut rng, &[case.c_out, c, case.k.0, case.k.1], 0.3)).unwrap();
    let b = Var::from_tensor(&random(&mut rng, &[case.c_out], 0.3)).unwrap();
    let label = format!(
        "x {n}x{c}x{h}x{w}, {}x{}x{}x{}, {:?}",
        case.c_out, c, case.k.0, case.k.1, case.params
    );

    let ours = ops::conv2d_fused(
        x.as_tensor(),
        wt.as_tensor(),
        Some(b.as_tensor()),
        case.params,
        true,
    )
    .unwrap();
    let reference = reference_conv(x.as_tensor(), wt.as_tensor(), b.as_tensor(), case.params);
    let e = rel_err(&ours, &reference);
    assert!(e < 2e-5, "{label}: forward error {e}");

    // A random linear functional of the output gives non-trivial gradients everywhere.
    let r = random(&mut rng, ours.dims(), 1.0);
    let g_ours = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g_ref = (reference * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (name, var) in [("x", &x), ("w", &wt), ("b", &b)] {
        let a = g_ours.get(var.as_tensor()).unwrap();
        let e = rel_err(a, g_ref.get(var.as_tensor()).unwrap());
        assert!(e < 2e-5, "{label}: grad {name} error {e}");
    }
}

#[test]
fn winograd_3x3_matches_candle() {
    let cases = [
        // Output sizes that are and are not multiples of the 4x4 tile.
        Case {
            x: [1, 16, 8, 8],
            c_out: 16,
            k: (3, 3),
            params: params(1, PadMode::Zero, 1, false, false),
        },
        Case {
            x: [2, 17, 13, 11],
            c_out: 20,
            k: (3, 3),
            params: params(1, PadMode::Zero, 1, false, true),
        },
        Case {
            x: [1, 32, 5, 30],
            c_out: 16,
            k: (3, 3),
            params: params(0, PadMode::Zero, 1, false, false),
        },
        Case {
            x: [2, 24, 9, 7],
            c_out: 16,
            k: (3, 3),
            params: params(1, PadMode::Reflect, 1, false, false),
        },
        Case {
            x: [1, 16, 6, 5],
            c_out: 32,
            k: (3, 3),
            params: params(1, PadMode::Reflect, 1, true, false),
        },
        Case {
            x: [1, 64, 3, 3],
            c_out: 64,
            k: (3, 3),
            params: params(1, PadMode::Zero, 1, false, true),
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        check_conv(case, 100 + i as u64);
    }
}

/// The fused conv + max-pool (inference, Winograd layers) against candle's conv and a 2×2
/// max-pool from stock ops, on even and odd sizes (odd: the last row/column is dropped).
#[test]
fn conv_maxpool_matches_candle() {
    let cases = [
        ([1, 16, 8, 8], 16, params(1, PadMode::Zero, 1, false, true)),
        (
            [2, 16, 13, 10],
            24,
            params(1, PadMode::Zero, 1, false, true),
        ),
        (
            [1, 20, 7, 9],
            16,
            params(1, PadMode::Reflect, 1, false, false),
        ),
        ([1, 16, 2, 5], 16, params(1, PadMode::Zero, 1, false, true)),
        (
            [1, 32, 22, 18],
            16,
            params(1, PadMode::Reflect, 1, true, true),
        ),
    ];
    for (seed, (shape, c_out, p)) in cases.into_iter().enumerate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed as u64);
        let x = random(&mut rng, &shape, 1.0);
        let w = random(&mut rng, &[c_out, shape[1], 3, 3], 0.3);
        let b = random(&mut rng, &[c_out], 0.3);
        let ours = ops::conv2d_fused_maxpool(&x, &w, &b, p).unwrap();
        let y = reference_conv(&x, &w, &b, p);
        let (n, c, h, wd) = y.dims4().unwrap();
        let y = y
            .narrow(2, 0, h / 2 * 2)
            .unwrap()
            .narrow(3, 0, wd / 2 * 2)
            .unwrap()
            .reshape((n, c, h / 2, 2, wd / 2, 2))
            .unwrap();
        let reference = y.max(5).unwrap().max(3).unwrap();
        let e = rel_err(&ours, &reference);
        assert!(e < 2e-5, "{shape:?} -> {c_out}, {p:?}: error {e}");
    }
}

#[test]
fn gemm_path_matches_candle() {
    let cases = [
        // The transformer's 9x9 head and tail, stride-2 downsampling, few channels.
        Case {
            x: [1, 3, 19, 14],
            c_out: 8,
            k: (9, 9),
            params: params(4, PadMode::Reflect, 1, false, false),
        },
        Case {
            x: [2, 8, 12, 13],
            c_out: 3,
            k: (9, 9),
            params: params(4, PadMode::Reflect, 1, false, false),
        },
        Case {
            x: [2, 4, 15, 10],
            c_out: 8,
            k: (3, 3),
            params: params(1, PadMode::Reflect, 2, false, false),
        },
        Case {
            x: [1, 6, 16, 16],
            c_out: 5,
            k: (3, 3),
            params: params(1, PadMode::Zero, 2, false, true),
        },
        Case {
            x: [1, 5, 11, 9],
            c_out: 7,
            k: (3, 3),
            params: params(2, PadMode::Zero, 3, false, false),
        },
        Case {
            x: [1, 3, 10, 12],
            c_out: 4,
            k: (3, 5),
            params: params(1, PadMode::Zero, 1, false, false),
        },
        Case {
            x: [1, 3, 7, 6],
            c_out: 16,
            k: (1, 1),
            params: params(0, PadMode::Zero, 1, false, true),
        },
        // First layers (few input channels): the direct kernel, with odd widths (a partial
        // pixel block), channel counts that are not a multiple of 4, and several bands.
        Case {
            x: [2, 3, 37, 21],
            c_out: 16,
            k: (3, 3),
            params: params(1, PadMode::Zero, 1, false, true),
        },
        Case {
            x: [1, 2, 9, 13],
            c_out: 8,
            k: (5, 3),
            params: params(1, PadMode::Reflect, 1, true, false),
        },
        Case {
            x: [1, 4, 5, 7],
            c_out: 6,
            k: (3, 3),
            params: params(1, PadMode::Reflect, 1, true, false),
        },
        Case {
            x: [1, 16, 9, 9],
            c_out: 8,
            k: (3, 3),
            params: params(1, PadMode::Zero, 1, false, false),
        },
        // Narrow layers with large kernels (the width-8 network's RGB output layer) run direct
        // with a zero-padded channel block; wider inputs keep the scatter GEMM.
        Case {
            x: [1, 8, 21, 19],
            c_out: 3,
            k: (9, 9),
            params: params(4, PadMode::Reflect, 1, false, false),
        },
        Case {
            x: [1, 20, 11, 10],
            c_out: 3,
            k: (3, 3),
            params: params(1, PadMode::Zero, 1, false, false),
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        check_conv(case, 200 + i as u64);
    }
}

#[test]
fn random_shapes_match_candle() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..12 {
        let k = [1, 3, 3, 5][rng.random_range(0..4)];
        let stride = if rng.random_bool(0.3) { 2 } else { 1 };
        let upsample = stride == 1 && rng.random_bool(0.3);
        let mode = if rng.random_bool(0.5) {
            PadMode::Reflect
        } else {
            PadMode::Zero
        };
        let pad = rng.random_range(0..=k / 2);
        let c = rng.random_range(1..40);
        let c_out = rng.random_range(1..40);
        let h = rng.random_range(k.max(pad + 1)..20);
        let w = rng.random_range(k.max(pad + 1)..20);
        let case = Case {
            x: [rng.random_range(1..3), c, h, w],
            c_out,
            k: (k, k),
            params: params(pad, mode, stride, upsample, rng.random_bool(0.5)),
        };
        check_conv(&case, 300 + i);
    }
}

#[test]
fn conv_rejects_bad_shapes() {
    let x = Tensor::zeros((1, 3, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((8, 3, 9, 9), candle_core::DType::F32, &Device::Cpu).unwrap();
    let p = params(4, PadMode::Reflect, 1, false, false);
    let err = ops::conv2d_fused(&x, &w, None, p, false).unwrap_err();
    assert!(err.to_string().contains("reflection padding"), "{err}");
    let w = Tensor::zeros((8, 4, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(ops::conv2d(&x, &w, None, 1, 1, false).is_err());
}

#[test]
fn instance_norm_matches_stock_ops() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for (i, shape) in [[1usize, 4, 7, 9], [3, 6, 16, 5], [2, 3, 1, 33]]
        .iter()
        .enumerate()
    {
        for relu in [false, true] {
            let x = Var::from_tensor(&(random(&mut rng, shape, 3.0) + 1.5).unwrap()).unwrap();
            let g = Var::from_tensor(&random(&mut rng, &[shape[1]], 1.0)).unwrap();
            let b = Var::from_tensor(&random(&mut rng, &[shape[1]], 1.0)).unwrap();
            let ours = ops::instance_norm(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-5, relu)
                .unwrap();
            let mut reference =
                stock_instance_norm(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-5).unwrap();
            if relu {
                reference = reference.relu().unwrap();
            }
            let e = rel_err(&ours, &reference);
            assert!(e < 1e-5, "case {i} relu {relu}: forward {e}");
            let r = random(&mut rng, shape, 1.0);
            let go = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gr = (reference * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (name, v) in [("x", &x), ("gamma", &g), ("beta", &b)] {
                let e = rel_err(
                    go.get(v.as_tensor()).unwrap(),
                    gr.get(v.as_tensor()).unwrap(),
                );
                assert!(e < 1e-4, "case {i} relu {relu}: grad {name} {e}");
            }
        }
    }
}
