//! The VGG loss network: both weight layouts, normalisation metadata, errors, features under
//! autograd, FLOP counting, and (when present) the real VGG16 file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use atelier::nn::vgg::{Normalization, Vgg, VggArch};
use atelier::Error;
use candle_core::{Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

const REAL_VGG16: &str = "../shared/models/vgg16-features.safetensors";

/// Name suffixes ("1_1", ...), torchvision `features` indices and shapes of every conv.
fn conv_specs(arch: VggArch) -> Vec<(String, usize, [usize; 4])> {
    let blocks: [usize; 5] = match arch {
        VggArch::Vgg16 => [2, 2, 3, 3, 3],
        VggArch::Vgg19 => [2, 2, 4, 4, 4],
    };
    let widths = [64, 128, 256, 512, 512];
    let (mut specs, mut c_in, mut index) = (Vec::new(), 3, 0);
    for (block, (&convs, &c_out)) in blocks.iter().zip(&widths).enumerate() {
        for conv in 0..convs {
            specs.push((
                format!("{}_{}", block + 1, conv + 1),
                index,
                [c_out, c_in, 3, 3],
            ));
            c_in = c_out;
            index += 2;
        }
        index += 1;
    }
    specs
}

#[derive(Clone, Copy)]
enum Naming {
    Atelier,
    Torchvision,
}

/// Seeded Kaiming-ish weights and small biases, named per `naming`; the same seed gives the
/// same values under both namings.
fn vgg_weights(arch: VggArch, naming: Naming, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (suffix, index, shape) in conv_specs(arch) {
        let prefix = match naming {
            Naming::Atelier => format!("conv{suffix}"),
            Naming::Torchvision => format!("features.{index}"),
        };
        let fan_in = shape[1] * 9;
        let normal = Normal::new(0.0f32, (2.0 / fan_in as f32).sqrt()).unwrap();
        let weight = (0..shape[0] * fan_in)
            .map(|_| normal.sample(&mut rng))
            .collect();
        let bias = (0..shape[0])
            .map(|_| normal.sample(&mut rng) * 0.1)
            .collect();
        out.push((format!("{prefix}.weight"), shape.to_vec(), weight));
        out.push((format!("{prefix}.bias"), vec![shape[0]], bias));
    }
    out
}

fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: &[(&str, &str)],
) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, data)| data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<_> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .unwrap();
            (name.clone(), view)
        })
        .collect();
    let metadata = (!metadata.is_empty()).then(|| {
        metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>()
    });
    safetensors::serialize_to_file(views, metadata, path).unwrap();
}

fn temp_file(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// A deterministic test image, RGB 0..255.
fn test_image(h: usize, w: usize) -> Tensor {
    let data: Vec<f32> = (0..3 * h * w)
        .map(|i| ((i * 37 + i / 7 * 11) % 256) as f32)
        .collect();
    Tensor::from_vec(data, (1, 3, h, w), &Device::Cpu).unwrap()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn weights_reason(result: Result<Vgg, Error>) -> String {
    match result {
        Err(Error::Weights { reason, .. }) => reason,
        Err(other) => panic!("expected a weights error, got {other}"),
        Ok(_) => panic!("expected a weights error, got a network"),
    }
}

#[test]
fn atelier_layout_without_metadata_uses_caffe_normalisation() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_file(&dir, "vgg16.safetensors");
    let tensors = vgg_weights(VggArch::Vgg16, Naming::Atelier, 1);
    write_safetensors(&path, &tensors, &[]);

    let vgg = Vgg::load(&path, &Device::Cpu).unwrap();
    assert_eq!(vgg.arch(), VggArch::Vgg16);
    assert_eq!(vgg.normalization(), Normalization::CAFFE);
    let expected_names = [
        "relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1", "relu3_2", "relu3_3", "relu4_1",
        "relu4_2", "relu4_3", "relu5_1", "relu5_2", "relu5_3",
    ];
    assert_eq!(vgg.layer_names(), names(&expected_names));

    // relu1_1 by hand: normalise, conv1_1, bias, ReLU.
    let image = test_image(12, 10);
    let features = vgg
        .features(&image, &names(&["relu1_1", "relu3_3"]))
        .unwrap();
    assert_eq!(features.len(), 2);
    assert_eq!(features["relu3_3"].dims(), &[1, 256, 3, 2]);
    let mean = Tensor::new(&[123.68f32, 116.779, 103.939], &Device::Cpu)
        .unwrap()
        .reshape((1, 3, 1, 1))
        .unwrap();
    let (_, shape, w) = &tensors[0];
    let w = Tensor::from_vec(w.clone(), shape.as_slice(), &Device::Cpu).unwrap();
    let b = Tensor::from_vec(tensors[1].2.clone(), (1, 64, 1, 1), &Device::Cpu).unwrap();
    let expected = image
        .broadcast_sub(&mean)
        .unwrap()
        .conv2d(&w, 1, 1, 1, 1)
        .unwrap()
        .broadcast_add(&b)
        .unwrap()
        .relu()
        .unwrap();
    assert!(max_abs_diff(&features["relu1_1"], &expected) < 1e-3);
}

#[test]
fn torchvision_and_atelier_layouts_give_the_same_network() {
    let dir = tempfile::tempdir().unwrap();
    for arch in [VggArch::Vgg16, VggArch::Vgg19] {
        let tv_path = temp_file(&dir, "tv.safetensors");
        let mut tv = vgg_weights(arch, Naming::Torchvision, 2);
        // Classifier weights in the file are ignored.
        tv.push(("classifier.0.weight".into(), vec![4, 2], vec![0.5; 8]));
        tv.push(("classifier.0.bias".into(), vec![4], vec![0.5; 4]));
        write_safetensors(&tv_path, &tv, &[]);
        let at_path = temp_file(&dir, "atelier.safetensors");
        write_safetensors(
            &at_path,
            &vgg_weights(arch, Naming::Atelier, 2),
            &[
                ("mean", "0.485,0.456,0.406"),
                ("std", "0.229, 0.224, 0.225"),
                ("input_range", "0..1"),
            ],
        );

        let from_tv = Vgg::load(&tv_path, &Device::Cpu).unwrap();
        let from_at = Vgg::load(&at_path, &Device::Cpu).unwrap();
        assert_eq!(from_tv.arch(), arch);
        assert_eq!(from_at.arch(), arch);
        assert_eq!(from_tv.normalization(), Normalization::TORCHVISION);
        let n = from_at.normalization();
        assert_eq!(n.mean, [0.485, 0.456, 0.406]);
        assert_eq!(n.std, [0.229, 0.224, 0.225]);
        assert!((n.scale - 1.0 / 255.0).abs() < 1e-9);

        let deepest = match arch {
            VggArch::Vgg16 => "relu5_3",
            VggArch::Vgg19 => "relu5_4",
        };
        assert_eq!(from_tv.layer_names().last().unwrap(), deepest);
        let layers = names(&["relu2_2", deepest]);
        let image = test_image(32, 34);
        let a = from_tv.features(&image, &layers).unwrap();
        let b = from_at.features(&image, &layers).unwrap();
        assert_eq!(a[deepest].dims(), &[1, 512, 2, 2]);
        for layer in &layers {
            let scale = a[layer]
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(scale > 0.0, "{layer} is all zero");
            assert!(max_abs_diff(&a[layer], &b[layer]) <= 1e-5 * scale.max(1.0));
        }
    }
}

#[test]
fn vgg19_layer_names() {
    let vgg = Vgg::random(VggArch::Vgg19, &Device::Cpu, 0).unwrap();
    let names = vgg.layer_names();
    assert_eq!(names.len(), 16);
    for name in ["relu3_4", "relu4_4", "relu5_4"] {
        assert!(names.contains(&name.to_string()), "{name} missing");
    }
}

#[test]
fn wrong_shape_is_reported_with_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_file(&dir, "bad.safetensors");
    let mut tensors = vgg_weights(VggArch::Vgg16, Naming::Atelier, 3);
    let conv2_1 = tensors
        .iter_mut()
        .find(|(name, _, _)| name == "conv2_1.weight")
        .unwrap();
    conv2_1.1 = vec![128, 64, 1, 9];
    let reason = weights_reason(Vgg::load(&path_after_write(&path, &tensors), &Device::Cpu));
    assert!(reason.contains("conv2_1.weight"), "{reason}");
    assert!(reason.contains("[128, 64, 1, 9]"), "{reason}");
    assert!(reason.contains("[128, 64, 3, 3]"), "{reason}");
}

fn path_after_write(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> PathBuf {
    write_safetensors(path, tensors, &[]);
    path.to_path_buf()
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_file(&dir, "partial.safetensors");
    // Up to conv3_2.weight only: conv3_2.bias is the first missing tensor.
    let tensors: Vec<_> = vgg_weights(VggArch::Vgg16, Naming::Atelier, 4)
        .into_iter()
        .take_while(|(name, _, _)| name != "conv3_2.bias")
        .collect();
    let reason = weights_reason(Vgg::load(&path_after_write(&path, &tensors), &Device::Cpu));
    assert!(reason.contains("missing"), "{reason}");
    assert!(reason.contains("conv3_2.bias"), "{reason}");
}

#[test]
fn non_vgg_files_are_rejected_clearly() {
    let dir = tempfile::tempdir().unwrap();

    let other = temp_file(&dir, "other.safetensors");
    write_safetensors(
        &other,
        &[("encoder.weight".into(), vec![2], vec![1.0, 2.0])],
        &[],
    );
    let reason = weights_reason(Vgg::load(&other, &Device::Cpu));
    assert!(
        reason.contains("does not look like a VGG16/VGG19"),
        "{reason}"
    );
    assert!(reason.contains("encoder.weight"), "{reason}");

    let garbage = temp_file(&dir, "garbage.safetensors");
    std::fs::write(&garbage, b"this is not a weights file at all, just text\n").unwrap();
    let reason = weights_reason(Vgg::load(&garbage, &Device::Cpu));
    assert!(reason.contains("not a weights file"), "{reason}");

    let absent = temp_file(&dir, "absent.safetensors");
    weights_reason(Vgg::load(&absent, &Device::Cpu));

    // Batch-norm VGG: indices shift, so it must not be misread as a plain VGG.
    let bn = temp_file(&dir, "bn.safetensors");
    write_safetensors(
        &bn,
        &[
            (
                "features.0.weight".into(),
                vec![64, 3, 3, 3],
                vec![0.0; 64 * 27],
            ),
            ("features.1.weight".into(), vec![64], vec![1.0; 64]),
        ],
        &[],
    );
    let reason = weights_reason(Vgg::load(&bn, &Device::Cpu));
    assert!(reason.contains("batch-norm"), "{reason}");
}

#[test]
fn bad_metadata_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    // Only conv1_1 is needed: metadata is checked before the tensors are read.
    let tensors: Vec<_> = vgg_weights(VggArch::Vgg16, Naming::Atelier, 5)
        .into_iter()
        .take(2)
        .collect();
    for (key, value, expected) in [
        ("mean", "1,2", "mean"),
        ("std", "1,0,1", "std"),
        ("input_range", "-1..1", "input_range"),
    ] {
        let path = temp_file(&dir, "meta.safetensors");
        write_safetensors(&path, &tensors, &[(key, value)]);
        let reason = weights_reason(Vgg::load(&path, &Device::Cpu));
        assert!(reason.contains(expected), "{reason}");
    }
}

#[test]
fn unknown_layer_lists_valid_names() {
    let vgg = Vgg::random(VggArch::Vgg16, &Device::Cpu, 1).unwrap();
    let image = test_image(16, 16);
    match vgg.features(&image, &names(&["relu1_1", "relu6_1"])) {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains("relu6_1"), "{message}");
            assert!(message.contains("relu5_3"), "{message}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert!(matches!(
        vgg.features(
            &Tensor::zeros((1, 1, 16, 16), candle_core::DType::F32, &Device::Cpu).unwrap(),
            &names(&["relu1_1"])
        ),
        Err(Error::InvalidArgument(_))
    ));
    // Too small for four poolings.
    assert!(matches!(
        vgg.features(&test_image(8, 8), &names(&["relu5_1"])),
        Err(Error::InvalidArgument(_))
    ));
    assert!(vgg.features(&image, &[]).unwrap().is_empty());
}

#[test]
fn features_are_differentiable_and_deterministic() {
    let vgg = Vgg::random(VggArch::Vgg16, &Device::Cpu, 7).unwrap();
    let again = Vgg::random(VggArch::Vgg16, &Device::Cpu, 7).unwrap();
    let image = test_image(20, 18);
    let layers = names(&["relu1_2", "relu2_1"]);
    let pixels = Var::from_tensor(&image).unwrap();
    let features = vgg.features(&pixels, &layers).unwrap();
    let repeat = again.features(&image, &layers).unwrap();
    assert_eq!(features["relu2_1"].dims(), &[1, 128, 10, 9]);
    assert_eq!(max_abs_diff(&features["relu2_1"], &repeat["relu2_1"]), 0.0);

    let loss = (features["relu1_2"].sqr().unwrap().mean_all().unwrap()
        + features["relu2_1"].sqr().unwrap().mean_all().unwrap())
    .unwrap();
    let grads = loss.backward().unwrap();
    let grad = grads.get(&pixels).expect("no gradient for the pixels");
    assert_eq!(grad.dims(), image.dims());
    let values = grad.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
    assert!(values.iter().any(|&v| v != 0.0));
}

#[test]
fn conv_flops_counts_convs_up_to_the_layer() {
    let vgg = Vgg::random(VggArch::Vgg16, &Device::Cpu, 0).unwrap();
    let (h, w) = (224.0, 224.0);
    let relu1_2 = 2.0 * 9.0 * (3.0 * 64.0 + 64.0 * 64.0) * h * w;
    assert_eq!(vgg.conv_flops(224, 224, "relu1_2"), relu1_2);
    let relu2_1 = relu1_2 + 2.0 * 9.0 * 64.0 * 128.0 * (h / 2.0) * (w / 2.0);
    assert_eq!(vgg.conv_flops(224, 224, "relu2_1"), relu2_1);
    // VGG16's conv stack is about 15.4 GMACs at 224x224.
    let total = vgg.conv_flops(224, 224, "relu5_3");
    assert!((total / 2e9 - 15.35).abs() < 0.1, "{total}");
    assert_eq!(vgg.conv_flops(224, 224, "relu9_9"), 0.0);
}

#[test]
fn real_vgg16_file() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(REAL_VGG16);
    if !path.exists() {
        eprintln!("skipping: {} not found", path.display());
        return;
    }
    let vgg = Vgg::load(&path, &Device::Cpu).unwrap();
    assert_eq!(vgg.arch(), VggArch::Vgg16);
    let n = vgg.normalization();
    assert_eq!(n.scale, 1.0);
    assert!((n.mean[0] - 123.68).abs() < 1e-3, "{n:?}");
    let features = vgg
        .features(&test_image(64, 64), &names(&["relu4_3"]))
        .unwrap();
    let relu4_3 = &features["relu4_3"];
    assert_eq!(relu4_3.dims(), &[1, 512, 8, 8]);
    let values = relu4_3.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
    assert!(values.iter().any(|&v| v > 0.0));
}

#[test]
fn tape_backward_matches_autograd() {
    // Random weights at odd sizes: every layer, pool and ReLU mask in play, features taken
    // at several depths (one of them also feeding deeper layers).
    let vgg = Vgg::random(VggArch::Vgg16, &Device::Cpu, 3).unwrap();
    let layers = names(&["relu1_2", "relu2_1", "relu3_3", "relu4_2"]);
    let mut rng = StdRng::seed_from_u64(9);
    let normal = Normal::new(0f32, 1.0).unwrap();
    let pixels = (test_image(37, 29) * 200.0).unwrap();

    let reference = Var::from_tensor(&pixels).unwrap();
    let feats = vgg.features(reference.as_tensor(), &layers).unwrap();
    let mut weights = HashMap::new();
    let mut loss: Option<Tensor> = None;
    for name in &layers {
        let f = &feats[name];
        let n = f.elem_count();
        let r: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng)).collect();
        let r = Tensor::from_vec(r, f.dims(), &Device::Cpu).unwrap();
        let term = (f * &r).unwrap().sum_all().unwrap();
        loss = Some(match loss {
            Some(l) => (l + term).unwrap(),
            None => term,
        });
        weights.insert(name.clone(), r);
    }
    let grads = loss.unwrap().backward().unwrap();
    let expected = grads.get(reference.as_tensor()).unwrap();

    let tape = vgg.forward_tape(&pixels, &layers).unwrap();
    for name in &layers {
        assert!(max_abs_diff(&tape.features()[name], &feats[name]) < 1e-4);
    }
    let got = vgg.backward(&tape, &weights).unwrap().unwrap();
    let scale = expected
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let diff = max_abs_diff(&got, expected);
    assert!(
        diff <= 1e-5 * scale.max(1e-6),
        "diff {diff} (scale {scale})"
    );
}

/// The loader reads tensors one at a time and only those asked for: a timm/torchvision file's
/// classifier is listed but never read, f16 data arrives as f32, and a file cut short names
/// the tensor whose data is missing.
#[test]
fn weight_files_are_read_tensor_by_tensor() {
    use atelier::nn::weights::WeightFile;
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = vgg_weights(VggArch::Vgg16, Naming::Torchvision, 5);
    tensors.push(("head.fc.weight".into(), vec![10, 4], vec![0.5; 40]));
    let path = temp_file(&dir, "with-classifier.safetensors");
    write_safetensors(&path, &tensors, &[]);
    let file = WeightFile::load_only(&path, &Device::Cpu, |n| n.starts_with("features.")).unwrap();
    assert!(file.contains("head.fc.weight"));
    assert!(!file.tensors.contains_key("head.fc.weight"));
    assert_eq!(file.tensors.len(), tensors.len() - 1);
    Vgg::load(&path, &Device::Cpu).unwrap();

    let half = temp_file(&dir, "half.safetensors");
    // IEEE half-precision bit patterns of 0.5, -2.0 and 1.25.
    let values = [0.5f32, -2.0, 1.25];
    let bytes: Vec<u8> = [0x3800u16, 0xC000, 0x3D00]
        .iter()
        .flat_map(|bits| bits.to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![3], &bytes).unwrap();
    safetensors::serialize_to_file(vec![("w", view)], None, &half).unwrap();
    let file = WeightFile::load(&half, &Device::Cpu).unwrap();
    let got = file.get("w", &[3]).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(got, values);

    let cut = temp_file(&dir, "cut.safetensors");
    let full = std::fs::read(&path).unwrap();
    // Past the classifier (last in the file) into the convolutions' data.
    std::fs::write(&cut, &full[..full.len() - 1000]).unwrap();
    let reason = weights_reason(Vgg::load(&cut, &Device::Cpu));
    assert!(reason.contains("truncated"), "{reason}");
}
