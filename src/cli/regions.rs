//! `--mask`, `--region` and `--feather` of `atelier stylize`: which style paints where. The
//! regions' styles come first in the job's style list, the `--style` default (if any) last.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use atelier::engine::{Regions, Rest, MAX_FEATHER};
use atelier::imaging;

/// `--region MASK=STYLE`, or `MASK=FOLDER#NAME` for one style of a conditional network.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionArg {
    pub mask: PathBuf,
    pub style: PathBuf,
    /// `--mix` terms for a conditional network's style (after `#`, comma-separated).
    pub mix: Vec<String>,
}

/// Parses `MASK=STYLE[#MIX]` (clap's value parser).
pub fn parse_region(text: &str) -> Result<RegionArg, String> {
    let Some((mask, style)) = text.split_once('=') else {
        return Err(format!(
            "`{text}` is not MASK=STYLE (e.g. sky.png=styles/starry-night)"
        ));
    };
    let (style, mix) = match style.split_once('#') {
        Some((style, mix)) => (style, mix.split(',').map(str::to_string).collect()),
        None => (style, Vec::new()),
    };
    if mask.is_empty() || style.is_empty() {
        return Err(format!(
            "`{text}` needs both a mask and a style (MASK=STYLE)"
        ));
    }
    Ok(RegionArg {
        mask: mask.into(),
        style: style.into(),
        mix,
    })
}

/// One style of the job, in the order the masks follow.
#[derive(Clone, Debug)]
pub struct StyleSpec {
    pub path: PathBuf,
    /// `--mix` terms when the style is (part of) a conditional network.
    pub mix: Vec<String>,
}

/// The job's styles: every region's, then each `--style` (the default of what no region covers).
pub fn style_specs(regions: &[RegionArg], styles: &[PathBuf], mix: &[String]) -> Vec<StyleSpec> {
    regions
        .iter()
        .map(|r| StyleSpec {
            path: r.style.clone(),
            mix: r.mix.clone(),
        })
        .chain(styles.iter().map(|path| StyleSpec {
            path: path.clone(),
            mix: mix.to_vec(),
        }))
        .collect()
}

/// The job's regions from the arguments: `None` without `--mask` or `--region`. Masks are read
/// once here (a file that is not an image fails now, naming it) and scaled to each photo by the
/// engine.
pub fn build(
    mask: Option<&Path>,
    regions: &[RegionArg],
    styles: &[PathBuf],
    feather: f32,
) -> anyhow::Result<Option<Regions>> {
    if !(0.0..=MAX_FEATHER).contains(&feather) {
        bail!("--feather must be between 0 and {MAX_FEATHER} pixels, got {feather}");
    }
    let load = |path: &Path| -> anyhow::Result<Option<Arc<image::GrayImage>>> {
        let mask = imaging::load_mask(path).with_context(|| "cannot use the mask".to_string())?;
        Ok(Some(Arc::new(mask)))
    };
    let label = |path: &Path| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string())
    };
    if let Some(mask) = mask {
        if !regions.is_empty() {
            bail!("--mask is for one style; with --region give each region its mask");
        }
        if styles.len() != 1 {
            bail!(
                "--mask goes with one --style; for several styles give each its region \
                 (--region MASK=STYLE)"
            );
        }
        return Ok(Some(Regions {
            masks: vec![load(mask)?],
            rest: Rest::Photo,
            feather,
            labels: vec![label(mask)],
        }));
    }
    if regions.is_empty() {
        return Ok(None);
    }
    if styles.len() > 1 {
        bail!(
            "with --region, --style names the one default style for what no region covers \
             (got {})",
            styles.len()
        );
    }
    let mut masks = regions
        .iter()
        .map(|r| load(&r.mask))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut labels: Vec<String> = regions.iter().map(|r| label(&r.mask)).collect();
    let rest = if styles.is_empty() {
        Rest::Photo
    } else {
        masks.push(None);
        labels.push(String::new());
        Rest::Style(regions.len())
    };
    Ok(Some(Regions {
        masks,
        rest,
        feather,
        labels,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_regions_with_and_without_a_mix() {
        let plain = parse_region("sky.png=styles/starry-night").expect("parses");
        assert_eq!(plain.mask, PathBuf::from("sky.png"));
        assert_eq!(plain.style, PathBuf::from("styles/starry-night"));
        assert!(plain.mix.is_empty());
        let mixed = parse_region("a.png=styles/four-painters#starry-night").expect("parses");
        assert_eq!(mixed.mix, vec!["starry-night".to_string()]);
        assert!(parse_region("sky.png").is_err());
        assert!(parse_region("=styles/x").is_err());
    }
}
