//! Replays the fuzz corpus (`fuzz/corpus/TARGET/`, kept small: the inputs that cover the most,
//! after `cargo fuzz cmin`), every input that once crashed a target (`fuzz/regressions/TARGET/`)
//! and the generated seeds through the fuzz targets' bodies, on stable Rust: what the fuzzer
//! found stays fixed. `ATELIER_FUZZ_SEEDS=DIR cargo test --test fuzz_corpus` writes the seeds
//! to `DIR/TARGET/` to start a fuzzing run from (see fuzz/README.md).

#[path = "../fuzz/targets.rs"]
mod targets;

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use atelier::nn::weights::save_safetensors;
use atelier::recipe::{self, Recipe, RecipeStyle};
use candle_core::{DType, Device, Tensor};
use image::{ImageFormat, RgbImage};

mod common;
use common::pth;

type TestResult = anyhow::Result<()>;

#[test]
fn the_kept_fuzz_inputs_and_the_seeds_run_cleanly() -> TestResult {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = seeds()?;
    if let Some(dir) = std::env::var_os("ATELIER_FUZZ_SEEDS") {
        write_seeds(Path::new(&dir), &seeds)?;
    }
    for target in targets::TARGETS {
        let mut count = 0;
        for input in seeds.get(target).into_iter().flatten() {
            targets::run(target, input);
            count += 1;
        }
        for kept in ["corpus", "regressions"] {
            for path in files_in(&fuzz.join(kept).join(target))? {
                let data = std::fs::read(&path)?;
                // A panic here names the input, to reproduce with `cargo fuzz run TARGET PATH`.
                eprintln!("{target}: {}", path.display());
                targets::run(target, &data);
                count += 1;
            }
        }
        assert!(count > 0, "no inputs for fuzz target {target}");
    }
    Ok(())
}

fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The `archive/data.pkl` of the `.pth` at `path`.
fn data_pkl(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(path)?)?;
    let mut pickle = Vec::new();
    std::io::Read::read_to_end(&mut archive.by_name("archive/data.pkl")?, &mut pickle)?;
    Ok(pickle)
}

fn write_seeds(dir: &Path, seeds: &HashMap<&str, Vec<Vec<u8>>>) -> TestResult {
    for (target, inputs) in seeds {
        let folder = dir.join(target);
        std::fs::create_dir_all(&folder)?;
        for (index, input) in inputs.iter().enumerate() {
            std::fs::write(folder.join(format!("seed-{index}")), input)?;
        }
    }
    Ok(())
}

/// A few valid inputs of each kind (and near misses) for the fuzzer to mutate.
fn seeds() -> anyhow::Result<HashMap<&'static str, Vec<Vec<u8>>>> {
    let dir = tempfile::tempdir()?;
    let mut seeds = HashMap::new();

    let photo = RgbImage::from_fn(9, 7, |x, y| {
        image::Rgb([(x * 28) as u8, (y * 36) as u8, 90])
    });
    let mut images = Vec::new();
    for format in [
        ImageFormat::Png,
        ImageFormat::Jpeg,
        ImageFormat::WebP,
        ImageFormat::Bmp,
        ImageFormat::Tiff,
    ] {
        let mut bytes = Cursor::new(Vec::new());
        photo.write_to(&mut bytes, format)?;
        let bytes = bytes.into_inner();
        images.push([&[0u8][..], &bytes].concat());
        if format == ImageFormat::Jpeg {
            // Cut short: refused, or accepted with a warning when the first byte allows it.
            let cut = &bytes[..bytes.len() / 2];
            images.push([&[0u8][..], cut].concat());
            images.push([&[1u8][..], cut].concat());
        }
    }
    images.push([&[0u8][..], &common::png::png_header_only(30_000, 30_000)].concat());
    seeds.insert("image", images);

    let weights = dir.path().join("w.safetensors");
    let tensors = vec![
        (
            "conv.weight".to_string(),
            Tensor::ones((2, 1, 3, 3), DType::F32, &Device::Cpu)?,
        ),
        (
            "norm.bias".to_string(),
            Tensor::zeros(2, DType::F32, &Device::Cpu)?,
        ),
    ];
    let mut safetensors = Vec::new();
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        save_safetensors(&weights, &tensors, Some(dtype), metadata)?;
        safetensors.push(std::fs::read(&weights)?);
    }
    seeds.insert("safetensors", safetensors);

    // Whole files (first byte odd), and their pickles alone (even: the target wraps them).
    let mut pths = Vec::new();
    let state = dir.path().join("state.pth");
    pth::write_state_dict(&state, &tensors)?;
    pths.push([&[1u8][..], &std::fs::read(&state)?].concat());
    pths.push([&[0u8][..], &data_pkl(&state)?].concat());
    pth::write_pth(&state, &tensors, Some("state_dict"))?;
    pths.push([&[1u8][..], &std::fs::read(&state)?].concat());
    pths.push([&[0u8][..], &data_pkl(&state)?].concat());
    pths.push([&[0u8][..], &pth::pickle_calling("os", "system", true)].concat());
    seeds.insert("pth", pths);

    seeds.insert(
        "style_toml",
        [
            "name = \"Fuzzed\"\nmodel = \"model.safetensors\"\nthumbnail = \"painting.jpg\"\n",
            "image = \"painting.jpg\"\nartist = \"A\"\ntitle = \"B\"\nyear = \"1889\"\n",
            "model = \"out\"\n",
            "model = \"../other/model.safetensors\"\n",
            "model = \"/etc/passwd\"\n",
            "model = \"etc/passwd\"\n",
            "model = \"loop/model.safetensors\"\n",
            "model = \"model.safetensors\"\n\n[[styles]]\nname = \"a\"\nthumbnail = \"painting.jpg\"\n\
             groups = [\"g\"]\n\n[[styles]]\nname = \"b\"\ngroups = [\"g\"]\n",
        ]
        .map(|text| text.as_bytes().to_vec())
        .to_vec(),
    );

    let recipe = Recipe {
        styles: vec![RecipeStyle {
            path: PathBuf::from("styles/starry-night.jpg"),
            weight: 0.7,
        }],
        mix: Some(vec![0.25, 0.75]),
        seed: 7,
        style_layers: vec![("relu1_2".into(), 0.5)],
        ..Recipe::default()
    };
    let text = recipe.to_text()?;
    let png_path = dir.path().join("recipe.png");
    recipe::save_png_with_recipe(&RgbImage::new(2, 2), &png_path, &recipe)?;
    seeds.insert(
        "png_recipe",
        vec![
            [&[0u8][..], &targets::recipe_chunk_body(&text)].concat(),
            [&[0u8][..], &targets::recipe_chunk_body("{}")].concat(),
            [&[1u8][..], &std::fs::read(&png_path)?].concat(),
        ],
    );
    Ok(seeds)
}
