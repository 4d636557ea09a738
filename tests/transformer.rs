//! The fast_neural_style transformer: its layers against reference results, loading from
//! `.safetensors` and PyTorch `.pth`, arbitrary image sizes, errors and gradients.

// Included by path so this test does not depend on a shared tests/common/mod.rs.
#[path = "common/pth.rs"]
mod pth;

use std::collections::HashMap;
use std::path::Path;

use atelier::nn::layers::{instance_norm, reflection_pad2d, upsample_nearest2x};
use atelier::nn::transformer::TransformerNet;
use atelier::nn::weights::WeightFile;
use atelier::Error;
use candle_core::{DType, Device, Tensor, Var};

type TestResult = anyhow::Result<()>;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// A deterministic test image with pixel values in 0..255.
fn image(h: usize, w: usize, seed: u64) -> anyhow::Result<Tensor> {
    let values: Vec<f32> = (0..3 * h * w)
        .map(|i| {
            let x = (i as u64 + 1).wrapping_mul(6364136223846793005 ^ seed) >> 33;
            (x % 256) as f32
        })
        .collect();
    Ok(Tensor::from_vec(values, (1, 3, h, w), &Device::Cpu)?)
}

fn weights_error_reason(err: atelier::Error) -> String {
    match err {
        Error::Weights { reason, .. } => reason,
        other => panic!("expected a weights error, got {other:?}"),
    }
}

#[test]
fn reflection_pad_matches_pytorch() -> TestResult {
    let x = Tensor::arange(1f32, 13., &Device::Cpu)?.reshape((1, 1, 3, 4))?;
    let y = reflection_pad2d(&x, 2)?;
    // torch.nn.ReflectionPad2d(2)(torch.arange(1., 13.).reshape(1, 1, 3, 4))
    let expected = [
        [11., 10., 9., 10., 11., 12., 11., 10.],
        [7., 6., 5., 6., 7., 8., 7., 6.],
        [3., 2., 1., 2., 3., 4., 3., 2.],
        [7., 6., 5., 6., 7., 8., 7., 6.],
        [11., 10., 9., 10., 11., 12., 11., 10.],
        [7., 6., 5., 6., 7., 8., 7., 6.],
        [3., 2., 1., 2., 3., 4., 3., 2.],
    ];
    assert_eq!(y.squeeze(0)?.squeeze(0)?.to_vec2::<f32>()?, expected);

    // Each input pixel's gradient counts how often it appears in the output.
    let var = Var::from_tensor(&x)?;
    let grads = reflection_pad2d(var.as_tensor(), 2)?
        .sum_all()?
        .backward()?;
    let grad = grads.get(var.as_tensor()).expect("gradient of the input");
    let (rows, cols) = ([2f32, 3., 2.], [1f32, 3., 3., 1.]);
    let expected: Vec<Vec<f32>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| r * c).collect())
        .collect();
    assert_eq!(grad.squeeze(0)?.squeeze(0)?.to_vec2::<f32>()?, expected);

    assert!(reflection_pad2d(&x, 3).is_err(), "pad must be < height");
    assert_eq!(reflection_pad2d(&x, 0)?.dims(), x.dims());
    Ok(())
}

#[test]
fn instance_norm_matches_naive_formula() -> TestResult {
    let (n, c, h, w) = (2, 3, 5, 7);
    let x = (image(h, w, 7)?.repeat((n, 1, 1, 1))? * 0.37)?;
    let x = (x + Tensor::arange(0f32, n as f32, &Device::Cpu)?
        .reshape((n, 1, 1, 1))?
        .broadcast_as((n, c, h, w))?)?;
    let weight = Tensor::new(&[0.5f32, -1.5, 2.0], &Device::Cpu)?;
    let bias = Tensor::new(&[0.1f32, 0.2, -3.0], &Device::Cpu)?;
    let y = instance_norm(&x, &weight, &bias, 1e-5)?;

    let xv = x.flatten_all()?.to_vec1::<f32>()?;
    let (wv, bv) = (weight.to_vec1::<f32>()?, bias.to_vec1::<f32>()?);
    let mut expected = Vec::with_capacity(xv.len());
    for (plane_index, plane) in xv.chunks(h * w).enumerate() {
        let ch = plane_index % c;
        let mean = plane.iter().map(|&v| v as f64).sum::<f64>() / (h * w) as f64;
        let var = plane
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / (h * w) as f64;
        for &v in plane {
            let normed = (v as f64 - mean) / (var + 1e-5).sqrt();
            expected.push((normed * wv[ch] as f64 + bv[ch] as f64) as f32);
        }
    }
    let expected = Tensor::from_vec(expected, (n, c, h, w), &Device::Cpu)?;
    assert!(max_abs_diff(&y, &expected)? < 1e-4);

    // The affine parameters get gradients: d(sum y)/d(bias) = H*W per sample.
    let (wvar, bvar) = (Var::from_tensor(&weight)?, Var::from_tensor(&bias)?);
    let grads = instance_norm(&x, wvar.as_tensor(), bvar.as_tensor(), 1e-5)?
        .sum_all()?
        .backward()?;
    let bias_grad = grads.get(bvar.as_tensor()).expect("bias gradient");
    assert_eq!(bias_grad.to_vec1::<f32>()?, vec![(n * h * w) as f32; c]);
    assert!(grads.get(wvar.as_tensor()).is_some());
    Ok(())
}

#[test]
fn upsample_repeats_pixels_and_sums_gradients() -> TestResult {
    let x = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu)?.reshape((1, 1, 2, 2))?;
    let y = upsample_nearest2x(&x)?;
    let expected = [
        [1., 1., 2., 2.],
        [1., 1., 2., 2.],
        [3., 3., 4., 4.],
        [3., 3., 4., 4.],
    ];
    assert_eq!(y.squeeze(0)?.squeeze(0)?.to_vec2::<f32>()?, expected);
    let odd = image(3, 5, 1)?;
    assert_eq!(
        upsample_nearest2x(&odd)?.flatten_all()?.to_vec1::<f32>()?,
        odd.upsample_nearest2d(6, 10)?
            .flatten_all()?
            .to_vec1::<f32>()?
    );

    let var = Var::from_tensor(&x)?;
    let grads = upsample_nearest2x(var.as_tensor())?.sum_all()?.backward()?;
    let grad = grads.get(var.as_tensor()).expect("gradient");
    assert_eq!(grad.flatten_all()?.to_vec1::<f32>()?, [4f32; 4]);
    Ok(())
}

#[test]
fn parameters_follow_the_pytorch_layout() -> TestResult {
    let shapes = TransformerNet::parameter_shapes();
    assert_eq!(shapes.len(), 62);
    let lookup: HashMap<_, _> = shapes.iter().cloned().collect();
    assert_eq!(lookup["conv1.conv2d.weight"], [32, 3, 9, 9]);
    assert_eq!(lookup["conv2.conv2d.weight"], [64, 32, 3, 3]);
    assert_eq!(lookup["res5.in2.bias"], [128]);
    assert_eq!(lookup["res1.conv1.conv2d.weight"], [128, 128, 3, 3]);
    assert_eq!(lookup["deconv1.conv2d.weight"], [64, 128, 3, 3]);
    assert_eq!(lookup["in5.weight"], [32]);
    assert_eq!(lookup["deconv3.conv2d.bias"], [3]);
    let params: usize = shapes
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(params, 1_679_235); // sum(p.numel() for p in TransformerNet().parameters())

    let net = TransformerNet::random(&Device::Cpu, 1)?;
    let tensors: Vec<(String, Vec<usize>)> = net
        .tensors()
        .into_iter()
        .map(|(name, t)| (name, t.dims().to_vec()))
        .collect();
    assert_eq!(tensors, shapes);
    let in3 = &net.tensors()[10];
    assert_eq!(in3.0, "in3.weight");
    assert_eq!(in3.1.to_vec1::<f32>()?, vec![1f32; 128]);
    let conv1 = net.tensors()[0].1.flatten_all()?.to_vec1::<f32>()?;
    let bound = 1.0 / (3.0f32 * 81.0).sqrt();
    assert!(conv1.iter().all(|v| v.abs() <= bound));
    assert!(conv1.iter().any(|v| v.abs() > bound / 2.0));
    Ok(())
}

#[test]
fn output_has_the_input_size() -> TestResult {
    let net = TransformerNet::random(&Device::Cpu, 3)?;
    for (h, w) in [(37, 53), (16, 16), (1, 1), (5, 3), (7, 9), (8, 13)] {
        let y = net.forward(&image(h, w, 5)?)?;
        assert_eq!(y.dims(), [1, 3, h, w], "for a {h}x{w} input");
        assert!(y
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|v| v.is_finite()));
    }
    // A batch and the bottom/right extension does not disturb what lies inside the image.
    let x = Tensor::cat(&[image(20, 24, 1)?, image(20, 24, 2)?], 0)?;
    let batched = net.forward(&x)?;
    let single = net.forward(&x.narrow(0, 1, 1)?)?;
    assert!(max_abs_diff(&batched.narrow(0, 1, 1)?, &single)? < 1e-3);
    assert!(net
        .forward(&Tensor::zeros((1, 1, 8, 8), DType::F32, &Device::Cpu)?)
        .is_err());
    // 2 x multiply-adds summed by hand over the 18 convolutions at 256x256.
    assert_eq!(TransformerNet::flops(256, 256), 2.0 * 10_078_912_512.0);
    assert_eq!(
        TransformerNet::flops(253, 255),
        TransformerNet::flops(256, 256)
    );
    Ok(())
}

#[test]
fn saved_networks_load_and_match() -> TestResult {
    let dir = tempfile::tempdir()?;
    let net = TransformerNet::random(&Device::Cpu, 42)?;
    let x = image(24, 20, 9)?;
    let reference = net.forward(&x)?;

    let f32_path = dir.path().join("style.safetensors");
    let metadata = HashMap::from([("style".to_string(), "mosaic".to_string())]);
    net.save_safetensors(&f32_path, DType::F32, metadata)?;
    let loaded = TransformerNet::load(&f32_path, &Device::Cpu)?;
    assert!(!loaded.trainable);
    assert_eq!(max_abs_diff(&loaded.forward(&x)?, &reference)?, 0.0);
    let file = WeightFile::load(&f32_path, &Device::Cpu)?;
    assert_eq!(file.metadata["style"], "mosaic");
    assert!(file.metadata.contains_key("architecture"));

    let f16_path = dir.path().join("style-f16.safetensors");
    net.save_safetensors(&f16_path, DType::F16, HashMap::new())?;
    assert!(std::fs::metadata(&f16_path)?.len() < std::fs::metadata(&f32_path)?.len() * 6 / 10);
    let loaded = TransformerNet::load(&f16_path, &Device::Cpu)?;
    assert_eq!(loaded.tensors()[0].1.dtype(), DType::F32);
    let diff = max_abs_diff(&loaded.forward(&x)?, &reference)?;
    let scale = reference
        .abs()?
        .max_keepdim(3)?
        .max_keepdim(2)?
        .max_keepdim(1)?;
    let scale = scale.flatten_all()?.to_vec1::<f32>()?[0];
    assert!(
        diff < 0.02 * scale,
        "f16 diff {diff} vs output scale {scale}"
    );

    // A PyTorch state dict, with the running stats old checkpoints carry.
    let pth_path = dir.path().join("style.pth");
    let mut tensors = net.tensors();
    tensors.push((
        "in1.running_mean".into(),
        Tensor::zeros(32, DType::F32, &Device::Cpu)?,
    ));
    tensors.push((
        "res2.in1.running_var".into(),
        Tensor::ones(128, DType::F32, &Device::Cpu)?,
    ));
    pth::write_state_dict(&pth_path, &tensors)?;
    let loaded = TransformerNet::load(&pth_path, &Device::Cpu)?;
    assert_eq!(max_abs_diff(&loaded.forward(&x)?, &reference)?, 0.0);

    // Names prefixed by nn.DataParallel.
    let prefixed: HashMap<String, Tensor> = net
        .tensors()
        .into_iter()
        .map(|(name, t)| (format!("module.{name}"), t))
        .collect();
    let loaded = TransformerNet::from_tensors(&prefixed, Path::new("prefixed"))?;
    assert_eq!(max_abs_diff(&loaded.forward(&x)?, &reference)?, 0.0);
    Ok(())
}

#[test]
fn pth_writer_round_trips() -> TestResult {
    let dir = tempfile::tempdir()?;
    let a = Tensor::arange(0f32, 24., &Device::Cpu)?.reshape((2, 3, 4))?;
    let b = Tensor::new(&[1.5f32, -2.25, 1e-7], &Device::Cpu)?;
    let big = (Tensor::arange(0f32, 70_000., &Device::Cpu)? * 0.5)?.reshape((70_000, 1))?;
    let tensors = vec![
        ("layer.weight".to_string(), a.clone()),
        ("layer.bias".to_string(), b.clone()),
        ("big".to_string(), big.clone()),
    ];
    let path = dir.path().join("plain.pth");
    pth::write_state_dict(&path, &tensors)?;

    let read: HashMap<String, Tensor> = candle_core::pickle::read_all(&path)?.into_iter().collect();
    assert_eq!(read.len(), 3);
    for (name, t) in &tensors {
        assert_eq!(read[name].dims(), t.dims(), "{name}");
        assert_eq!(read[name].dtype(), DType::F32);
        assert_eq!(max_abs_diff(&read[name], t)?, 0.0, "{name}");
    }
    let file = WeightFile::load(&path, &Device::Cpu)?;
    assert_eq!(
        file.get("layer.weight", &[2, 3, 4])?.to_vec3::<f32>()?,
        a.to_vec3::<f32>()?
    );
    assert_eq!(
        file.get("layer.bias", &[3])?.to_vec1::<f32>()?,
        b.to_vec1::<f32>()?
    );
    assert!(file.metadata.is_empty());

    // A training checkpoint {"state_dict": {...}}.
    let wrapped = dir.path().join("checkpoint.pth");
    pth::write_pth(&wrapped, &tensors, Some("state_dict"))?;
    let file = WeightFile::load(&wrapped, &Device::Cpu)?;
    assert_eq!(
        file.get("big", &[70_000, 1])?.to_vec2::<f32>()?,
        big.to_vec2::<f32>()?
    );
    Ok(())
}

#[test]
fn foreign_and_broken_files_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let device = Device::Cpu;

    let vgg = dir.path().join("vgg.pth");
    pth::write_state_dict(
        &vgg,
        &[
            (
                "features.0.weight".into(),
                Tensor::zeros((64, 3, 3, 3), DType::F32, &device)?,
            ),
            (
                "features.0.bias".into(),
                Tensor::zeros(64, DType::F32, &device)?,
            ),
        ],
    )?;
    let reason = weights_error_reason(TransformerNet::load(&vgg, &device).unwrap_err());
    assert!(
        reason.contains("not a fast_neural_style transformer"),
        "{reason}"
    );
    assert!(reason.contains("VGG"), "{reason}");
    let vgg_named = HashMap::from([(
        "conv1_1.weight".to_string(),
        Tensor::zeros((64, 3, 3, 3), DType::F32, &device)?,
    )]);
    let reason = weights_error_reason(TransformerNet::from_tensors(&vgg_named, &vgg).unwrap_err());
    assert!(reason.contains("not a fast_neural_style transformer") && reason.contains("VGG"));

    let net = TransformerNet::random(&device, 0)?;
    let good = dir.path().join("good.safetensors");
    net.save_safetensors(&good, DType::F16, HashMap::new())?;
    let bytes = std::fs::read(&good)?;
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2])?;
    weights_error_reason(TransformerNet::load(&truncated, &device).unwrap_err());

    let pth_good = dir.path().join("good.pth");
    pth::write_state_dict(&pth_good, &net.tensors())?;
    let bytes = std::fs::read(&pth_good)?;
    let truncated = dir.path().join("truncated.pth");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2])?;
    weights_error_reason(TransformerNet::load(&truncated, &device).unwrap_err());

    let mut map: HashMap<String, Tensor> = net.tensors().into_iter().collect();
    map.remove("res3.in2.bias");
    let reason = weights_error_reason(TransformerNet::from_tensors(&map, &good).unwrap_err());
    assert!(
        reason.contains("missing tensor `res3.in2.bias`"),
        "{reason}"
    );

    map.insert(
        "res3.in2.bias".into(),
        Tensor::zeros(64, DType::F32, &device)?,
    );
    let reason = weights_error_reason(TransformerNet::from_tensors(&map, &good).unwrap_err());
    assert!(
        reason.contains("res3.in2.bias") && reason.contains("[64]"),
        "{reason}"
    );
    Ok(())
}

#[test]
fn gradients_reach_the_parameters_when_trainable() -> TestResult {
    let net = TransformerNet::random(&Device::Cpu, 5)?;
    let vars: Vec<(String, Var)> = net
        .tensors()
        .into_iter()
        .map(|(name, t)| Ok((name, Var::from_tensor(&t)?)))
        .collect::<anyhow::Result<_>>()?;
    let map: HashMap<String, Tensor> = vars
        .iter()
        .map(|(name, v)| (name.clone(), v.as_tensor().clone()))
        .collect();
    let mut trainable = TransformerNet::from_tensors(&map, Path::new("vars"))?;
    trainable.trainable = true;

    let y = trainable.forward(&image(12, 16, 3)?)?;
    let grads = (y / 255.)?.sqr()?.mean_all()?.backward()?;
    for name in [
        "conv1.conv2d.weight",
        "in2.weight",
        "res3.conv2.conv2d.weight",
        "res5.in1.bias",
        "deconv2.conv2d.weight",
        "deconv3.conv2d.bias",
    ] {
        let var = &vars.iter().find(|(n, _)| n == name).expect("parameter").1;
        let grad = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no grad for {name}"));
        let norm = grad.sqr()?.sum_all()?.to_scalar::<f32>()?;
        assert!(
            norm > 0.0 && norm.is_finite(),
            "{name}: gradient norm {norm}"
        );
    }
    Ok(())
}

/// Conditional instance norm: a one-hot mix runs exactly the one-style network made of that
/// style's norm rows, a mix runs the mixed rows, the file keeps the (S, C) shapes, and a mix of
/// the wrong length is refused.
#[test]
fn a_conditional_network_is_its_styles_and_their_blends() -> TestResult {
    let device = Device::Cpu;
    let net = TransformerNet::random_conditional(&device, 3, 4, 3)?;
    assert_eq!(net.styles(), 3);
    // Distinct styles: perturb each row of every norm differently.
    let mut tensors: HashMap<String, Tensor> = net.tensors().into_iter().collect();
    for (name, t) in tensors.iter_mut() {
        if t.rank() == 2 {
            let (s, c) = t.dims2()?;
            let bump: Vec<f32> = (0..s * c)
                .map(|i| ((i * 7 + name.len()) % 11) as f32 * 0.05)
                .collect();
            *t = (t.clone() + Tensor::from_vec(bump, (s, c), &device)?)?;
        }
    }
    let net = TransformerNet::from_tensors(&tensors, Path::new("conditional"))?;
    let x = image(20, 24, 9)?;

    let rows = |mix: [f32; 3]| -> anyhow::Result<TransformerNet> {
        let mut plain = HashMap::new();
        for (name, t) in &tensors {
            let t = if t.rank() == 2 {
                Tensor::new(&mix, &device)?
                    .reshape((1, 3))?
                    .matmul(t)?
                    .squeeze(0)?
            } else {
                t.clone()
            };
            plain.insert(name.clone(), t);
        }
        Ok(TransformerNet::from_tensors(&plain, Path::new("plain"))?)
    };
    for mix in [[0f32, 1.0, 0.0], [0.5, 0.0, 0.5]] {
        let plain = rows(mix)?;
        assert_eq!(plain.styles(), 1);
        let conditional = net.forward_mixed(&x, Some(&Tensor::new(&mix, &device)?))?;
        assert!(max_abs_diff(&conditional, &plain.forward(&x)?)? < 1e-3);
    }
    let first = net.forward_mixed(&x, Some(&Tensor::new(&[1f32, 0.0, 0.0], &device)?))?;
    let second = net.forward_mixed(&x, Some(&Tensor::new(&[0f32, 1.0, 0.0], &device)?))?;
    assert!(
        max_abs_diff(&first, &second)? > 1.0,
        "the styles do not differ"
    );
    // No mix: the even blend.
    let even = rows([1.0 / 3.0; 3])?.forward(&x)?;
    assert!(max_abs_diff(&net.forward(&x)?, &even)? < 1e-3);

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("conditional.safetensors");
    net.save_safetensors(&path, DType::F32, HashMap::new())?;
    let loaded = TransformerNet::load(&path, &device)?;
    assert_eq!(loaded.styles(), 3);
    assert!(max_abs_diff(&loaded.forward(&x)?, &net.forward(&x)?)? < 1e-4);
    let err = net
        .forward_mixed(&x, Some(&Tensor::new(&[1f32, 0.0], &device)?))
        .unwrap_err();
    assert!(err.to_string().contains("3 styles"), "{err}");

    // Norms of different style counts in one file are refused, naming the tensor.
    let mut broken = tensors.clone();
    broken.insert("in2.weight".into(), Tensor::ones(8, DType::F32, &device)?);
    let err = TransformerNet::from_tensors(&broken, Path::new("broken")).unwrap_err();
    assert!(weights_error_reason(err).contains("in2.weight"));
    Ok(())
}
