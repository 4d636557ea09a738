//! `atelier stylize`: photos (files or folders), one or more styles. One photo and an output
//! file name write that file; several photos (or a folder) and `-o FOLDER` run a batch through
//! the engine's queued render lane, with one progress bar for all of them. A photo that fails
//! (corrupt, unreadable) fails alone: the others are written and the exit code says some failed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use atelier::engine::{
    self, ArbitraryStyle, Engine, EventBody, FeatureTransform, GatysConfig, Init, Job, JobId,
    JobKind, JobStats, Method, NetworkStyle, OptimizerKind, StyleImage,
};
use atelier::imaging::{self, OutputFormat};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use super::regions::{self, RegionArg, StyleSpec};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// Gatys optimisation with VGG (any style image; slower).
    Optimize,
    /// A trained feed-forward network (instant; `--style` is a model file or style folder).
    Network,
    /// Any painting in one pass (universal style transfer: the built-in VGG16, a feature
    /// transform, trained decoders); `--style` is a painting or a folder of works (a collection).
    Arbitrary,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TransformArg {
    /// Channel means and deviations at relu4_1 (fastest).
    Adain,
    /// Whitening and colouring over four levels, coarse to fine (the full covariance).
    Wct,
}

#[derive(Args)]
pub struct StylizeArgs {
    /// Photos to stylise: files, or folders whose images are all taken.
    #[arg(required = true)]
    pub content: Vec<PathBuf>,
    /// Style image (optimize) or model file / style folder (network); repeat to blend styles.
    /// With --region: the default style for what no region covers (else the photo stays there).
    #[arg(long = "style", required_unless_present = "regions")]
    pub styles: Vec<PathBuf>,
    /// Paint the style only where this grey image is white (any size, scaled to the photo;
    /// black keeps the photo, grey blends).
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// A region with its own style, MASK=STYLE (repeatable); for one style of a conditional
    /// network MASK=FOLDER#NAME (its --mix terms). What no region covers keeps the photo, or
    /// takes --style.
    #[arg(long = "region", value_parser = super::regions::parse_region)]
    pub regions: Vec<RegionArg>,
    /// Feather of the masks' edges in pixels of the result: each edge fades over about this
    /// distance on either side.
    #[arg(long, default_value_t = 16.0)]
    pub feather: f32,
    /// Blend weights for several styles, e.g. 0.7,0.3 (default: equal).
    #[arg(long, value_delimiter = ',')]
    pub blend: Vec<f64>,
    /// Styles of a conditional network (--method network), e.g. starry-night=0.6,great-wave=0.4
    /// or a group such as ukiyo-e; in one pass. Default: the even blend of all its styles.
    #[arg(long, value_delimiter = ',')]
    pub mix: Vec<String>,
    /// How to stylise (default: optimize for `stylize`, network for `video`).
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// VGG weights (.safetensors or .pth); default $ATELIER_VGG, then the user cache.
    #[arg(long)]
    pub vgg: Option<PathBuf>,
    /// Longer side of the result in pixels (optimize default 512; network default: the photo's size).
    #[arg(long)]
    pub size: Option<u32>,
    /// Optimisation steps at each scale.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Weight of keeping the photo's structure (α).
    #[arg(long, allow_negative_numbers = true, default_value_t = GatysConfig::default().content_weight)]
    pub content_weight: f64,
    /// Weight of matching the style (β).
    #[arg(long, allow_negative_numbers = true, default_value_t = GatysConfig::default().style_weight)]
    pub style_weight: f64,
    /// Weight of the smoothness (total variation) term.
    #[arg(long, allow_negative_numbers = true, default_value_t = GatysConfig::default().tv_weight)]
    pub tv_weight: f64,
    /// Content layers, comma-separated (default relu4_2).
    #[arg(long, value_delimiter = ',')]
    pub content_layers: Vec<String>,
    /// Style layers with optional weights, e.g. relu1_2:1,relu2_2:0.5 (default relu1_2,relu2_2,relu3_3,relu4_3).
    #[arg(long, value_delimiter = ',')]
    pub style_layers: Vec<String>,
    /// Blend of result and photo: 0 keeps the photo, 1 is the full style.
    #[arg(long, default_value_t = 1.0)]
    pub strength: f32,
    /// Keep the photo's colours (luminance-only transfer).
    #[arg(long)]
    pub preserve_color: bool,
    /// Stroke scale of --method network, 0.25 to 4: 2 paints strokes twice as large (the
    /// network runs on the photo at half its size and the result is scaled back).
    #[arg(long, default_value_t = 1.0)]
    pub stroke: f64,
    /// Feature transform of --method arbitrary.
    #[arg(long, value_enum, default_value_t = TransformArg::Adain)]
    pub transform: TransformArg,
    /// Longer side the paintings are encoded at with --method arbitrary (smaller: bigger strokes).
    #[arg(long, default_value_t = engine::DEFAULT_STYLE_SIDE)]
    pub style_side: u32,
    /// A folder of decoders for --method arbitrary (default: the built-in ones).
    #[arg(long)]
    pub decoders: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = OptimizerArg::Lbfgs)]
    pub optimizer: OptimizerArg,
    /// Learning rate (Adam: pixels per step; L-BFGS: step scale).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Optimise starting from this image (e.g. a --method arbitrary result: a few --steps
    /// refine it), at one scale.
    #[arg(long)]
    pub start_from: Option<PathBuf>,
    /// Start from the photo or from seeded noise.
    #[arg(long, value_enum, default_value_t = InitArg::Content)]
    pub init: InitArg,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Coarse-to-fine scales (0: automatic, one per doubling above 512 px).
    #[arg(long, default_value_t = 0)]
    pub scales: usize,
    /// Style image size relative to the result.
    #[arg(long, default_value_t = 1.0)]
    pub style_scale: f64,
    /// Write a preview every N steps into --preview-dir.
    #[arg(long, default_value_t = 0)]
    pub preview_every: usize,
    #[arg(long)]
    pub preview_dir: Option<PathBuf>,
    /// JPEG quality for .jpg outputs.
    #[arg(long, default_value_t = 92)]
    pub quality: u8,
    /// Print one JSON object per photo with the result's numbers on stdout.
    #[arg(long)]
    pub json: bool,
    /// File type of a batch's outputs (in a folder given with -o).
    #[arg(long, value_enum, default_value_t = FormatArg::Png)]
    pub format: FormatArg,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Use a damaged image (a JPEG cut short) anyway, with a warning: its missing part may be grey.
    #[arg(long)]
    pub allow_truncated: bool,
    /// Output image (.png or .jpg) for one photo, or a folder for several (created if missing;
    /// each photo's name with the --format extension). Never one of the inputs.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
}

impl StylizeArgs {
    /// The method asked for, else optimisation.
    pub fn method(&self) -> MethodArg {
        self.method.unwrap_or(MethodArg::Optimize)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    Lbfgs,
    Adam,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InitArg {
    Content,
    Noise,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Png,
    Jpg,
}

impl FormatArg {
    fn extension(self) -> &'static str {
        match self {
            FormatArg::Png => "png",
            FormatArg::Jpg => "jpg",
        }
    }
}

/// A trained model: the file itself, or the model a style folder's `style.toml` names (else its
/// `model.safetensors` or `model.pth`).
fn resolve_model(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if path.is_dir() {
        return Ok(atelier::styles::model_in_folder(path)?);
    }
    match std::fs::metadata(path) {
        Ok(meta) => bail!(
            "model {} is not a regular file (it is {})",
            path.display(),
            imaging::describe_special_file(meta.file_type())
        ),
        Err(e) => bail!(
            "model {}: {}",
            path.display(),
            imaging::describe_metadata_error(&e)
        ),
    }
}

/// The styles a conditional network holds, for `--mix`: its folder's `[[styles]]`, else the
/// names the model file records.
fn conditional_styles(
    style: &Path,
    model: &Path,
) -> anyhow::Result<Vec<atelier::styles::ConditionalStyle>> {
    let manifest_path = style.join(atelier::styles::MANIFEST_NAME);
    if style.is_dir() && manifest_path.is_file() {
        let text = std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("cannot read {}", manifest_path.display()))?;
        let manifest = atelier::styles::parse_manifest(&text, &manifest_path)?;
        if !manifest.styles.is_empty() {
            return Ok(manifest.styles);
        }
    }
    let file = atelier::nn::weights::WeightFile::load(model, &candle_core::Device::Cpu)?;
    let names: Vec<_> = file
        .metadata
        .get("styles")
        .map(|names| {
            names
                .lines()
                .map(|name| atelier::styles::ConditionalStyle {
                    name: name.to_string(),
                    ..Default::default()
                })
                .collect()
        })
        .unwrap_or_default();
    if names.len() < 2 {
        bail!(
            "--mix picks styles of a conditional network; {} holds one style",
            model.display()
        );
    }
    Ok(names)
}

fn parse_style_layers(specs: &[String]) -> anyhow::Result<Vec<(String, f64)>> {
    specs
        .iter()
        .map(|spec| match spec.split_once(':') {
            Some((name, weight)) => {
                let w: f64 = weight
                    .parse()
                    .with_context(|| format!("bad layer weight in `{spec}`"))?;
                Ok((name.to_string(), w))
            }
            None => Ok((spec.clone(), 1.0)),
        })
        .collect()
}

/// One photo of the run and where its result goes.
struct Item {
    input: PathBuf,
    output: PathBuf,
    format: OutputFormat,
}

/// The photos the arguments name: files as given, folders expanded to their images (sorted).
fn expand_inputs(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut photos = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let found = engine::list_images(input)?;
            if found.is_empty() {
                bail!("folder {} holds no images", input.display());
            }
            photos.extend(found);
        } else {
            // Missing or unreadable files fail alone, later, with the decoder's message.
            photos.push(input.clone());
        }
    }
    Ok(photos)
}

/// Pairs each photo with its output and checks, before any work, that every output can be
/// written and none is an input.
fn plan(args: &StylizeArgs) -> anyhow::Result<Vec<Item>> {
    let photos = expand_inputs(&args.content)?;
    // A name with an extension is a file (a wrong extension is then refused by name); anything
    // else is a folder.
    let names_a_file = !args.output.is_dir() && args.output.extension().is_some();
    let single_file = photos.len() == 1 && !args.content[0].is_dir() && names_a_file;
    let mut inputs: Vec<&Path> = photos.iter().map(PathBuf::as_path).collect();
    inputs.extend(args.styles.iter().map(PathBuf::as_path));
    inputs.extend(args.mask.iter().map(PathBuf::as_path));
    for region in &args.regions {
        inputs.extend([region.mask.as_path(), region.style.as_path()]);
    }
    if single_file {
        let format = OutputFormat::from_path(&args.output, args.quality)?;
        imaging::ensure_not_an_input(&args.output, &inputs)?;
        check_folder_writable(&args.output, parent_or_dot(&args.output))?;
        return Ok(vec![Item {
            input: photos[0].clone(),
            output: args.output.clone(),
            format,
        }]);
    }
    if args.output.is_file() || names_a_file {
        bail!(
            "{} photos need an output folder, not the file {} (-o FOLDER)",
            photos.len(),
            args.output.display()
        );
    }
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create the output folder {}", args.output.display()))?;
    check_folder_writable(&args.output, args.output.clone())?;
    let extension = args.format.extension();
    let mut taken = HashSet::new();
    let mut items = Vec::new();
    for photo in &photos {
        let stem = photo
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "photo".into());
        // Two photos with one name (a.jpg, a.png, or the same name in two folders) get -2, -3…
        let mut output = args.output.join(format!("{stem}.{extension}"));
        let mut n = 2;
        while !taken.insert(output.clone()) {
            output = args.output.join(format!("{stem}-{n}.{extension}"));
            n += 1;
        }
        imaging::ensure_not_an_input(&output, &inputs)?;
        let format = OutputFormat::from_path(&output, args.quality)?;
        items.push(Item {
            input: photo.clone(),
            output,
            format,
        });
    }
    Ok(items)
}

fn parent_or_dot(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Fails now, not after minutes of work, when the output folder cannot take files.
fn check_folder_writable(output: &Path, dir: PathBuf) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!(
            "cannot write {}: folder {} does not exist",
            output.display(),
            dir.display()
        );
    }
    tempfile::tempfile_in(&dir)
        .with_context(|| format!("cannot write {}: folder is not writable", output.display()))?;
    Ok(())
}

/// The method for every photo of the run (style images are read once), its styles in the order
/// of `specs` (the regions' first).
pub(super) fn build_method(args: &StylizeArgs, specs: &[StyleSpec]) -> anyhow::Result<Method> {
    if args.method() != MethodArg::Network && specs.iter().any(|s| !s.mix.is_empty()) {
        bail!("MASK=FOLDER#NAME picks a conditional network's style: use it with --method network");
    }
    Ok(match args.method() {
        MethodArg::Network => {
            if specs.len() != 1 && args.regions.is_empty() {
                bail!(
                    "--method network takes exactly one --style (a model file or style folder);                      several networks paint regions (--region MASK=STYLE)"
                );
            }
            let styles = specs
                .iter()
                .map(|spec| {
                    let model = resolve_model(&spec.path)?;
                    let mix = if spec.mix.is_empty() {
                        None
                    } else {
                        let styles = conditional_styles(&spec.path, &model)?;
                        Some(
                            atelier::styles::resolve_mix(&styles, &spec.mix)
                                .map_err(anyhow::Error::msg)?,
                        )
                    };
                    Ok(NetworkStyle::new(model, mix))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Method::Network {
                styles,
                size: args.size,
                preserve_color: args.preserve_color,
                stroke: args.stroke,
            }
        }
        MethodArg::Arbitrary => {
            if args.vgg.is_some() {
                bail!(
                    "--method arbitrary encodes with the built-in VGG16 (its decoders invert \
                     that network); leave out --vgg"
                );
            }
            if args.style_side < 64 {
                bail!("--style-side must be at least 64, got {}", args.style_side);
            }
            let styles = blend_weights(args, specs.len())?
                .into_iter()
                .zip(specs.iter().map(|s| &s.path))
                .map(|(weight, path)| {
                    // A folder is a collection: its works' statistics are pooled.
                    let paths = if path.is_dir() {
                        let found = engine::list_images(path)?;
                        if found.is_empty() {
                            bail!("style folder {} holds no images", path.display());
                        }
                        found
                    } else {
                        vec![path.clone()]
                    };
                    let works = paths
                        .iter()
                        .map(|p| {
                            let (image, warning) = load_image(args, p)?;
                            if let Some(warning) = warning {
                                eprintln!("warning: {warning}");
                            }
                            Ok(Arc::new(image))
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    Ok(ArbitraryStyle { works, weight })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Method::Arbitrary {
                vgg: PathBuf::from(engine::BUNDLED_VGG),
                decoders: args.decoders.clone(),
                styles,
                transform: match args.transform {
                    TransformArg::Adain => FeatureTransform::Adain,
                    TransformArg::Wct => FeatureTransform::Wct,
                },
                size: args.size,
                style_side: args.style_side,
                preserve_color: args.preserve_color,
            }
        }
        MethodArg::Optimize => {
            let vgg = engine::resolve_vgg(args.vgg.as_deref())?;
            let blend = blend_weights(args, specs.len())?;
            let styles = specs
                .iter()
                .map(|s| &s.path)
                .zip(blend)
                .map(|(path, weight)| {
                    let (image, warning) = load_image(args, path)?;
                    if let Some(warning) = warning {
                        eprintln!("warning: {warning}");
                    }
                    Ok(StyleImage {
                        image: Arc::new(image),
                        weight,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let defaults = GatysConfig::default();
            let config = GatysConfig {
                size: args.size.unwrap_or(defaults.size),
                steps: args.steps,
                content_weight: args.content_weight,
                style_weight: args.style_weight,
                tv_weight: args.tv_weight,
                content_layers: if args.content_layers.is_empty() {
                    defaults.content_layers.clone()
                } else {
                    args.content_layers.clone()
                },
                style_layers: if args.style_layers.is_empty() {
                    defaults.style_layers.clone()
                } else {
                    parse_style_layers(&args.style_layers)?
                },
                preserve_color: args.preserve_color,
                init: match args.init {
                    InitArg::Content => Init::Content,
                    InitArg::Noise => Init::Noise,
                },
                seed: args.seed,
                optimizer: match args.optimizer {
                    OptimizerArg::Lbfgs => OptimizerKind::Lbfgs,
                    OptimizerArg::Adam => OptimizerKind::Adam,
                },
                learning_rate: args.lr,
                // A start image already holds the coarse structure.
                scales: if args.start_from.is_some() {
                    1
                } else {
                    args.scales
                },
                preview_every: if args.preview_dir.is_some() && args.preview_every == 0 {
                    10
                } else {
                    args.preview_every
                },
                style_scale: args.style_scale,
                start_from: match &args.start_from {
                    Some(path) => Some(Arc::new(load_image(args, path)?.0)),
                    None => None,
                },
                temporal: None,
            };
            config.validate()?;
            Method::Optimize {
                vgg,
                styles,
                config,
            }
        }
    })
}

/// The weight of each of the `count` styles (equal unless `--blend` gives one per style).
fn blend_weights(args: &StylizeArgs, count: usize) -> anyhow::Result<Vec<f64>> {
    if args.blend.is_empty() {
        Ok(vec![1.0; count])
    } else if !args.regions.is_empty() {
        bail!("--blend mixes styles everywhere; with --region each region has its own style")
    } else if args.blend.len() == args.styles.len() {
        Ok(args.blend.clone())
    } else {
        bail!(
            "--blend has {} weights for {} styles",
            args.blend.len(),
            args.styles.len()
        )
    }
}

/// Steps one photo counts for on the overall bar.
fn steps_per_photo(method: &Method) -> u64 {
    match method {
        Method::Optimize { config, .. } => config.total_steps() as u64,
        // Tiles report their progress as a share of this.
        Method::Network { .. } => 100,
        Method::Arbitrary { transform, .. } => transform.levels().len() as u64,
    }
}

/// Reads a photo or style image, a damaged one only with `--allow-truncated` (and then with a
/// warning, the second value); the error for one says how to use it anyway.
fn load_image(
    args: &StylizeArgs,
    path: &Path,
) -> anyhow::Result<(image::RgbImage, Option<String>)> {
    imaging::load_rgb_with(path, args.allow_truncated).map_err(|e| match e {
        atelier::error::Error::Image { reason, .. }
            if reason.starts_with(imaging::DAMAGED_JPEG) =>
        {
            anyhow::anyhow!(
                "{}; --allow-truncated uses it anyway",
                atelier::error::Error::image(path, reason)
            )
        }
        e => e.into(),
    })
}

/// Refuses a `--size` the network cannot run at for a `width`×`height` photo (it would be
/// capped to fit in memory, silently).
fn check_network_size(args: &StylizeArgs, (width, height): (u32, u32)) -> Result<(), String> {
    let (MethodArg::Network | MethodArg::Arbitrary, Some(side)) = (args.method(), args.size) else {
        return Ok(());
    };
    let (most, limit) = match args.method() {
        MethodArg::Arbitrary => (
            engine::arbitrary_side(
                width,
                height,
                Some(side),
                match args.transform {
                    TransformArg::Adain => FeatureTransform::Adain,
                    TransformArg::Wct => FeatureTransform::Wct,
                },
            ),
            engine::MAX_ARBITRARY_PIXELS,
        ),
        _ => (
            engine::network_side(width, height, Some(side)),
            engine::MAX_NETWORK_PIXELS,
        ),
    };
    if most >= side {
        return Ok(());
    }
    Err(format!(
        "--size {side} is above what the method runs on ({} megapixels) for this \
         {width}x{height} photo; choose --size {most} or less",
        limit / 1_000_000
    ))
}

/// Photos decoded and queued ahead of the one running: enough that the engine never waits for
/// a decode, few enough that a folder of big photos is not all in memory at once.
const QUEUED_AHEAD: usize = 2;

/// A photo submitted to the engine.
struct Submitted {
    job: JobId,
    item: usize,
    size: (u32, u32),
}

pub fn run(args: StylizeArgs) -> anyhow::Result<()> {
    check_settings(&args)?;
    let items = plan(&args)?;
    if let Some(dir) = &args.preview_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create preview folder {}", dir.display()))?;
    }
    let specs = regions::style_specs(&args.regions, &args.styles, &args.mix);
    let method = build_method(&args, &specs)?;
    let job_regions = regions::build(
        args.mask.as_deref(),
        &args.regions,
        &args.styles,
        args.feather,
    )?;
    run_items(&args, items, method, job_regions)
}

/// Refuses settings out of range or that do not go together, before any work.
pub(super) fn check_settings(args: &StylizeArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.strength) {
        bail!("--strength must be between 0 and 1, got {}", args.strength);
    }
    if let Some(size) = args.size.filter(|&size| size < 16) {
        bail!("--size must be at least 16 pixels, got {size}");
    }
    if !engine::STROKE_RANGE.contains(&args.stroke) {
        bail!(
            "--stroke must be between {} and {}, got {}",
            engine::STROKE_RANGE.start(),
            engine::STROKE_RANGE.end(),
            args.stroke
        );
    }
    if args.stroke != 1.0 && !matches!(args.method(), MethodArg::Network) {
        bail!("--stroke applies to --method network (the arbitrary method has --style-side)");
    }
    if !(1..=100).contains(&args.quality) {
        bail!("--quality must be between 1 and 100, got {}", args.quality);
    }
    if args.method() == MethodArg::Network && !args.blend.is_empty() {
        bail!(
            "--blend needs several styles; --method network takes one (for a conditional \
             network's styles use --mix NAME=WEIGHT,...)"
        );
    }
    if args.method() != MethodArg::Network && !args.mix.is_empty() {
        bail!("--mix picks the styles of a conditional network: use it with --method network");
    }
    Ok(())
}

/// Runs the photos of `items` through the engine's render lane with one progress bar.
fn run_items(
    args: &StylizeArgs,
    items: Vec<Item>,
    method: Method,
    job_regions: Option<atelier::engine::Regions>,
) -> anyhow::Result<()> {
    let per_photo = steps_per_photo(&method);
    let batch = items.len() > 1;

    let engine = Engine::new(engine::best_device())?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(per_photo * items.len() as u64);
        let template = if batch {
            "{spinner} [{elapsed_precise}] {bar:30} {prefix} {msg}"
        } else {
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps {msg}"
        };
        bar.set_style(
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    let say = |line: String| {
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };

    let mut next_item = 0;
    let mut in_flight: Vec<Submitted> = Vec::new();
    let mut done = 0usize;
    let mut failed = 0usize;
    let mut first_error: Option<String> = None;
    let mut fail = |item: &Item, message: String, failed: &mut usize| {
        *failed += 1;
        // Image errors already name their file.
        let named = message.contains(&item.input.display().to_string());
        let line = if batch && !named {
            format!("error: {}: {message}", item.input.display())
        } else {
            format!("error: {message}")
        };
        if args.json && batch {
            println!(
                "{}",
                serde_json::json!({
                    "input": item.input.display().to_string(),
                    "error": message,
                })
            );
        }
        if first_error.is_none() {
            first_error = Some(message);
        }
        if batch {
            say(line);
        }
    };
    loop {
        // Keep the queue fed; a photo that cannot be read fails here, alone.
        while in_flight.len() < QUEUED_AHEAD && next_item < items.len() {
            let item = &items[next_item];
            let loaded = load_image(args, &item.input)
                .map_err(|e| e.to_string())
                .and_then(|(photo, warning)| {
                    if let Some(warning) = warning {
                        say(format!("warning: {warning}"));
                    }
                    check_network_size(args, photo.dimensions())?;
                    Ok(photo)
                });
            match loaded {
                Ok(photo) => {
                    let size = photo.dimensions();
                    let job = engine.render(Job {
                        content: Arc::new(photo),
                        method: method.clone(),
                        strength: args.strength,
                        regions: job_regions.clone(),
                    })?;
                    in_flight.push(Submitted {
                        job,
                        item: next_item,
                        size,
                    });
                }
                Err(message) => {
                    fail(item, message, &mut failed);
                    done += 1;
                    bar.inc(per_photo);
                }
            }
            next_item += 1;
        }
        bar.set_prefix(format!("{done}/{} photos", items.len()));
        if in_flight.is_empty() {
            break;
        }
        let event = engine
            .events()
            .recv()
            .context("the engine stopped unexpectedly")?;
        let Some(index) = in_flight.iter().position(|s| s.job == event.job) else {
            continue;
        };
        let running = &in_flight[index];
        let item = &items[running.item];
        let base = (running.item as u64) * per_photo;
        match event.body {
            EventBody::Progress {
                step,
                total_steps,
                losses,
                ..
            } => {
                let share = (step as u64 * per_photo) / (total_steps.max(1) as u64);
                bar.set_position(base + share.min(per_photo));
                if let Some(losses) = losses {
                    bar.set_message(format!(
                        "content {:.3} style {:.3} tv {:.3}",
                        losses.content, losses.style, losses.tv
                    ));
                }
            }
            EventBody::Preview { step, .. } => {
                let frame = engine.take_preview(JobKind::Render);
                if let (Some(dir), Some(frame)) = (&args.preview_dir, frame) {
                    let dir = if batch {
                        let stem = item.output.file_stem().unwrap_or_default();
                        let dir = dir.join(stem);
                        std::fs::create_dir_all(&dir).with_context(|| {
                            format!("cannot create preview folder {}", dir.display())
                        })?;
                        dir
                    } else {
                        dir.clone()
                    };
                    let path = dir.join(format!("preview-{step:05}.png"));
                    imaging::save_atomic(&frame.image, &path, OutputFormat::Png)?;
                }
            }
            EventBody::Finished(output) => {
                let (w, h) = running.size;
                if args.size.is_none() && output.stats.width.max(output.stats.height) < w.max(h) {
                    say(format!(
                        "note: {}: the {w}x{h} photo was downscaled to {}x{} to fit in memory \
                         (choose with --size)",
                        item.input.display(),
                        output.stats.width,
                        output.stats.height
                    ));
                }
                for note in &output.stats.notes {
                    say(format!("note: {}: {note}", item.input.display()));
                }
                match imaging::save_atomic(&output.image, &item.output, item.format) {
                    Ok(()) => {
                        if args.json {
                            print_json(&output.stats, &item.input, &item.output)?;
                        } else if !args.quiet {
                            let tiles = output
                                .stats
                                .tiling
                                .map(|t| format!("; {}", t.describe()))
                                .unwrap_or_default();
                            say(format!(
                                "wrote {} ({}x{}, {:.1} s{tiles})",
                                item.output.display(),
                                output.stats.width,
                                output.stats.height,
                                output.stats.seconds
                            ));
                        }
                    }
                    Err(e) => fail(item, e.to_string(), &mut failed),
                }
                done += 1;
                bar.set_position(base + per_photo);
                in_flight.remove(index);
            }
            EventBody::Failed(failure) => {
                fail(item, failure.to_string(), &mut failed);
                done += 1;
                bar.set_position(base + per_photo);
                in_flight.remove(index);
            }
            EventBody::Cancelled => {
                fail(item, "cancelled".into(), &mut failed);
                done += 1;
                in_flight.remove(index);
            }
            _ => {}
        }
    }
    if failed == 0 {
        bar.finish_and_clear();
        return Ok(());
    }
    bar.abandon();
    if !batch {
        bail!("{}", first_error.unwrap_or_default());
    }
    bail!(
        "{failed} of {} photos failed (the others were written)",
        items.len()
    )
}

fn print_json(stats: &JobStats, input: &Path, output: &Path) -> anyhow::Result<()> {
    let losses = stats.losses.unwrap_or_default();
    let value = serde_json::json!({
        "input": input.display().to_string(),
        "method": stats.method,
        "width": stats.width,
        "height": stats.height,
        "steps": stats.steps,
        "evaluations": stats.evaluations,
        "seconds": stats.seconds,
        "content_loss": stats.losses.map(|_| losses.content),
        "style_loss": stats.losses.map(|_| losses.style),
        "tv_loss": stats.losses.map(|_| losses.tv),
        "total_loss": stats.losses.map(|_| losses.total),
        "initial_style_loss": stats.initial_style_loss,
        "tiling": stats.tiling,
        "notes": stats.notes,
        "output": output.display().to_string(),
    });
    println!("{value}");
    Ok(())
}
