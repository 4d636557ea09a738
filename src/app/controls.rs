//! The controls panel: method, strength, weights, sizes. Values persist between runs.

use eframe::egui;
use serde::{Deserialize, Serialize};

use crate::engine::{FeatureTransform, GatysConfig, MAX_OPTIMIZE_SIDE as MAX_SIZE, STROKE_RANGE};

/// The style layers offered in the advanced section (present in VGG16 and VGG19).
pub const STYLE_LAYERS: [&str; 5] = ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"];
const DEFAULT_LAYER_WEIGHTS: [f64; 5] = [1.0, 1.0, 1.0, 1.0, 0.0];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MethodChoice {
    /// Gatys optimisation against VGG: any style image, slower.
    Optimize,
    /// A trained feed-forward network: one style per model, instant.
    Network,
    /// Any painting in one pass (universal style transfer with the built-in decoders).
    Arbitrary,
}

impl MethodChoice {
    pub fn label(self) -> &'static str {
        match self {
            MethodChoice::Optimize => "Optimise",
            MethodChoice::Network => "Network",
            MethodChoice::Arbitrary => "Instant",
        }
    }

    /// One pass of a network (no steps): previews run on the photo itself.
    pub fn is_one_pass(self) -> bool {
        matches!(self, MethodChoice::Network | MethodChoice::Arbitrary)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Controls {
    pub method: MethodChoice,
    /// 0 keeps the photo, 1 is the full stylisation (re-blended instantly).
    pub strength: f32,
    pub content_weight: f64,
    pub style_weight: f64,
    pub tv_weight: f64,
    /// Relative weight of each of [`STYLE_LAYERS`]; 0 leaves a layer out.
    pub layer_weights: [f64; 5],
    pub preserve_color: bool,
    /// Stroke scale of the Network method (1: as trained; 2: strokes twice as large).
    pub stroke: f64,
    /// Feature transform of the Instant (arbitrary) method.
    pub transform: FeatureTransform,
    /// Longer side of the live preview.
    pub preview_size: u32,
    pub steps: usize,
    pub preview_every: usize,
    pub seed: u64,
    /// Upper bound for the saved render's longer side (optimisation; the network runs at full size).
    pub save_max_side: u32,
    pub jpeg_quality: u8,
}

impl Default for Controls {
    fn default() -> Self {
        let gatys = GatysConfig::default();
        Self {
            method: MethodChoice::Arbitrary,
            strength: 1.0,
            content_weight: gatys.content_weight,
            style_weight: gatys.style_weight,
            tv_weight: gatys.tv_weight,
            layer_weights: DEFAULT_LAYER_WEIGHTS,
            preserve_color: false,
            stroke: 1.0,
            transform: FeatureTransform::Adain,
            preview_size: 320,
            steps: 100,
            preview_every: 1,
            seed: 0,
            save_max_side: 2048,
            jpeg_quality: 92,
        }
    }
}

/// What a frame's edits to the controls require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ControlChange {
    None,
    /// Only the strength moved: re-blend the cached result.
    Strength,
    /// Something the result depends on changed: run a new job (debounced).
    Recompute,
}

/// Preview sizes above this make previews slow on a CPU.
const PREVIEW_SIZE_RANGE: std::ops::RangeInclusive<u32> = 64..=768;
/// Full-size optimisation above this is slow on a CPU; the panel says so.
pub const SLOW_SAVE_SIDE: u32 = 1024;

impl Controls {
    /// The values a finished result depends on (everything but strength and save settings).
    fn recompute_key(&self) -> Self {
        Self {
            strength: 0.0,
            save_max_side: 0,
            jpeg_quality: 0,
            ..self.clone()
        }
    }

    /// The strength of the pixel blend of result and photo: the Instant method applies its
    /// strength in feature space, so its result is shown and saved as it is.
    pub fn pixel_strength(&self) -> f32 {
        match self.method {
            MethodChoice::Arbitrary => 1.0,
            _ => self.strength,
        }
    }

    /// What changed between `before` and `self`.
    pub fn change_since(&self, before: &Controls) -> ControlChange {
        let feature_strength = self.method == MethodChoice::Arbitrary;
        if self.recompute_key() != before.recompute_key()
            || (feature_strength && self.strength != before.strength)
        {
            ControlChange::Recompute
        } else if self.strength != before.strength {
            ControlChange::Strength
        } else {
            ControlChange::None
        }
    }

    pub fn style_layers(&self) -> Vec<(String, f64)> {
        STYLE_LAYERS
            .iter()
            .zip(self.layer_weights)
            .filter(|(_, w)| *w > 0.0)
            .map(|(name, w)| (name.to_string(), w))
            .collect()
    }

    /// The optimisation settings for a render whose longer side is `size`.
    pub fn gatys_config(&self, size: u32, preview_every: usize) -> GatysConfig {
        GatysConfig {
            size: size.clamp(16, MAX_SIZE),
            steps: self.steps.max(1),
            content_weight: self.content_weight,
            style_weight: self.style_weight,
            tv_weight: self.tv_weight,
            style_layers: self.style_layers(),
            preserve_color: self.preserve_color,
            seed: self.seed,
            preview_every,
            ..GatysConfig::default()
        }
    }

    /// Clamps values that may come from an old or hand-edited settings file.
    pub fn sanitized(mut self) -> Self {
        self.strength = if self.strength.is_finite() {
            self.strength.clamp(0.0, 1.0)
        } else {
            1.0
        };
        for w in [
            &mut self.content_weight,
            &mut self.style_weight,
            &mut self.tv_weight,
        ]
        .into_iter()
        .chain(self.layer_weights.iter_mut())
        {
            if !w.is_finite() || *w < 0.0 {
                *w = 0.0;
            }
        }
        self.stroke = if self.stroke.is_finite() {
            self.stroke
                .clamp(*STROKE_RANGE.start(), *STROKE_RANGE.end())
        } else {
            1.0
        };
        self.preview_size = self
            .preview_size
            .clamp(*PREVIEW_SIZE_RANGE.start(), *PREVIEW_SIZE_RANGE.end());
        self.steps = self.steps.clamp(1, 2000);
        self.preview_every = self.preview_every.clamp(1, 100);
        self.save_max_side = self.save_max_side.clamp(64, MAX_SIZE);
        self.jpeg_quality = self.jpeg_quality.clamp(1, 100);
        self
    }

    /// Draws the controls; returns what the edits require.
    pub fn show(&mut self, ui: &mut egui::Ui, vgg_missing: bool) -> ControlChange {
        let before = self.clone();
        ui.horizontal(|ui| {
            ui.label("Method");
            ui.selectable_value(&mut self.method, MethodChoice::Arbitrary, "Instant")
                .on_hover_text(
                    "Any painting in about a second: the photo's VGG features take the \
                     painting's statistics and trained decoders paint them (universal style \
                     transfer). Optimise gives the best quality; Refine starts it from this.",
                );
            ui.selectable_value(&mut self.method, MethodChoice::Optimize, "Optimise")
                .on_hover_text(
                    "Gatys optimisation against the VGG network: works with any style image, \
                     refines step by step (slower).",
                );
            ui.selectable_value(&mut self.method, MethodChoice::Network, "Network")
                .on_hover_text(
                    "A trained feed-forward network (.safetensors / .pth style model): one pass, \
                     near-instant, one style per model.",
                );
        });
        if vgg_missing && self.method == MethodChoice::Optimize {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                "No VGG network found: run `atelier fetch-vgg` once (575 MB download), or set \
                 ATELIER_VGG to a VGG16/VGG19 file.",
            );
        }
        let strength_tip = if self.method == MethodChoice::Arbitrary {
            "How much of the style to apply: 0 is the photo, 1 the full stylisation. The \
             Instant method blends the photo's and the painting's features (not a pixel fade), \
             so it paints again."
        } else {
            "How much of the style to apply: 0 is the photo, 1 the full stylisation. \
             Instant: it re-blends the current result."
        };
        ui.add(egui::Slider::new(&mut self.strength, 0.0..=1.0).text("Strength"))
            .on_hover_text(strength_tip);
        if self.method == MethodChoice::Network {
            ui.add(
                egui::Slider::new(&mut self.stroke, STROKE_RANGE)
                    .logarithmic(true)
                    .fixed_decimals(2)
                    .text("Stroke size"),
            )
            .on_hover_text(
                "Scale of the brush strokes: the network paints the photo at 1/size of its \
                 resolution and the result is scaled back (2: strokes twice as large, as on a \
                 photo half the size). Large photos run in tiles.",
            );
        }
        if self.method == MethodChoice::Arbitrary {
            ui.horizontal(|ui| {
                ui.label("Transform");
                ui.selectable_value(&mut self.transform, FeatureTransform::Adain, "AdaIN")
                    .on_hover_text("Channel means and deviations at relu4_1: fastest.");
                ui.selectable_value(&mut self.transform, FeatureTransform::Wct, "WCT")
                    .on_hover_text(
                        "Whitening and colouring over four levels: the painting's full feature \
                         covariance; slower, more of its texture.",
                    );
            });
        }
        // Both methods honour it (luminance-only transfer), so it stays enabled for the network.
        ui.checkbox(&mut self.preserve_color, "Preserve colours")
            .on_hover_text(
                "Keep the photo's colours and take only the style's brushwork and light \
                 (luminance-only transfer; works with both methods).",
            );

        let optimizing = self.method == MethodChoice::Optimize;
        ui.add_enabled_ui(optimizing, |ui| {
            let slider = egui::Slider::new(&mut self.style_weight, 0.01..=1000.0)
                .logarithmic(true)
                .text("Style weight");
            tip(
                ui.add(slider),
                "How strongly the result must match the painting's textures (β).",
                OPTIMISE_ONLY,
            );
            let slider = egui::Slider::new(&mut self.content_weight, 0.01..=100.0)
                .logarithmic(true)
                .text("Content weight");
            tip(
                ui.add(slider),
                "How strongly the result must keep the photo's structure (α).",
                OPTIMISE_ONLY,
            );
            let slider = egui::Slider::new(&mut self.tv_weight, 0.0..=10.0)
                .logarithmic(true)
                .smallest_positive(0.0001)
                .text("Smoothness (TV)");
            tip(
                ui.add(slider),
                "Total-variation weight: higher gives smoother, less noisy results.",
                OPTIMISE_ONLY,
            );
            tip(
                ui.add(egui::Slider::new(&mut self.steps, 1..=500).text("Steps")),
                "Optimisation steps (more converge further but take longer).",
                OPTIMISE_ONLY,
            );
        });
        ui.add(
            egui::Slider::new(&mut self.preview_size, PREVIEW_SIZE_RANGE)
                .step_by(16.0)
                .text("Preview size"),
        )
        .on_hover_text(
            "Longer side of the live preview in pixels. Small sizes stream previews quickly; \
             Save renders at the photo's full size.",
        );
        egui::CollapsingHeader::new("Advanced")
            .id_salt("advanced")
            .show(ui, |ui| {
                ui.add_enabled_ui(optimizing, |ui| {
                    ui.label("Style layer weights").on_hover_text(
                        "Shallow layers carry fine texture and colour, deep ones larger \
                         brush strokes and shapes. 0 leaves a layer out.",
                    );
                    for (name, weight) in STYLE_LAYERS.iter().zip(self.layer_weights.iter_mut()) {
                        tip(
                            ui.add(egui::Slider::new(weight, 0.0..=2.0).text(*name)),
                            &format!("Relative weight of the style loss at {name}."),
                            OPTIMISE_ONLY,
                        );
                    }
                    tip(
                        ui.add(
                            egui::Slider::new(&mut self.preview_every, 1..=50)
                                .text("Preview every"),
                        ),
                        "Show a preview every this many steps.",
                        OPTIMISE_ONLY,
                    );
                    ui.horizontal(|ui| {
                        ui.label("Seed");
                        tip(
                            ui.add(egui::DragValue::new(&mut self.seed)),
                            "Random seed (noise initialisation, tie-breaks).",
                            OPTIMISE_ONLY,
                        );
                    });
                });
                if ui
                    .button("Reset controls")
                    .on_hover_text("Back to the default values.")
                    .clicked()
                {
                    *self = Controls::default();
                }
            })
            .header_response
            .on_hover_text("Per-layer style weights, preview rate, seed, reset.");
        self.change_since(&before)
    }
}

/// Why the optimisation-only controls are greyed out.
const OPTIMISE_ONLY: &str = "Only the Optimise method uses this; the Network method runs a \
                             trained model as it is, and Instant takes the painting's feature \
                             statistics.";

/// A tooltip that also shows on a disabled control, with the reason it is disabled (egui hides
/// ordinary tooltips there, which leaves a greyed-out control unexplained).
pub(super) fn tip(response: egui::Response, text: &str, disabled_because: &str) -> egui::Response {
    response
        .on_hover_text(text)
        .on_disabled_hover_text(format!("{text}\n\n{disabled_because}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strength_alone_needs_no_recompute() {
        // Pixel-space strength: the network and optimisation methods blend their result with
        // the photo, so a strength change only re-blends.
        for method in [MethodChoice::Network, MethodChoice::Optimize] {
            let before = Controls {
                method,
                ..Controls::default()
            };
            let mut after = before.clone();
            after.strength = 0.3;
            after.jpeg_quality = 50;
            assert_eq!(after.change_since(&before), ControlChange::Strength);
            after.steps += 1;
            assert_eq!(after.change_since(&before), ControlChange::Recompute);
        }
    }

    #[test]
    fn instant_strength_recomputes_in_feature_space() {
        let before = Controls {
            method: MethodChoice::Arbitrary,
            ..Controls::default()
        };
        let mut after = before.clone();
        after.strength = 0.3;
        assert_eq!(after.change_since(&before), ControlChange::Recompute);
    }

    #[test]
    fn zero_weight_layers_are_left_out() {
        let layers = Controls::default().style_layers();
        assert_eq!(layers.len(), 4);
        assert!(layers.iter().all(|(name, _)| name != "relu5_3"));
    }
}
