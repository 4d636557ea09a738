//! The masks as a tinted texture over the canvas: one colour per style, a light grey for
//! "keep the photo". Brush strokes update only the rectangle they touched, once per frame.

use eframe::egui::{self, Color32};

use super::mask::{Layer, Masks, PixelRect};

/// Opacity of a fully painted mask over the picture.
const OVERLAY_OPACITY: f32 = 0.45;

/// The tints of the styles' masks, by the style's place in the selection.
const STYLE_TINTS: [Color32; 6] = [
    Color32::from_rgb(235, 64, 52),
    Color32::from_rgb(52, 152, 235),
    Color32::from_rgb(70, 200, 90),
    Color32::from_rgb(240, 200, 40),
    Color32::from_rgb(190, 80, 230),
    Color32::from_rgb(255, 140, 40),
];
/// The tint of the "keep the photo here" mask.
pub const PHOTO_TINT: Color32 = Color32::from_rgb(230, 230, 230);

/// The tint of the style at `index` of the selection.
pub fn style_tint(index: usize) -> Color32 {
    STYLE_TINTS[index % STYLE_TINTS.len()]
}

/// The tint of `layer`, given the selected styles' keys in order (`None`: not selected).
pub fn tint(layer: &Layer, selected: &[std::path::PathBuf]) -> Option<Color32> {
    match layer {
        Layer::Photo => Some(PHOTO_TINT),
        Layer::Style(key) => selected.iter().position(|k| k == key).map(style_tint),
    }
}

#[derive(Default)]
pub struct Overlay {
    texture: Option<egui::TextureHandle>,
    /// The layers and tints the texture was drawn with; another list redraws it all.
    drawn: Vec<(Layer, Color32)>,
    size: (u32, u32),
}

impl Overlay {
    /// The texture to draw over the picture (`None` while no mask exists).
    pub fn texture(&self) -> Option<&egui::TextureHandle> {
        self.texture.as_ref()
    }

    /// Brings the texture up to date with `masks` shown in `layers`' tints: only what changed
    /// since the last call, or everything when the layers or their tints did. Returns the
    /// number of uploads (0 or 1).
    pub fn sync(
        &mut self,
        ctx: &egui::Context,
        masks: &mut Masks,
        layers: Vec<(Layer, Color32)>,
    ) -> usize {
        let dirty = masks.take_dirty();
        let Some(size) = masks.size() else {
            self.texture = None;
            return 0;
        };
        let layers: Vec<(Layer, Color32)> = layers
            .into_iter()
            .filter(|(layer, _)| masks.layer(layer).is_some())
            .collect();
        if layers.is_empty() {
            // Nothing to show; drop the texture rather than draw a transparent one.
            self.texture = None;
            self.drawn.clear();
            return 0;
        }
        let redraw_all = self.texture.is_none() || self.drawn != layers || self.size != size;
        let rect = match (redraw_all, dirty) {
            (true, _) => PixelRect::full(size),
            (false, Some(rect)) => rect,
            (false, None) => return 0,
        };
        let image = draw(masks, &layers, rect);
        let options = egui::TextureOptions::LINEAR;
        match &mut self.texture {
            Some(texture) if !redraw_all => {
                texture.set_partial([rect.x as usize, rect.y as usize], image, options);
            }
            _ => self.texture = Some(ctx.load_texture("mask-overlay", image, options)),
        }
        self.drawn = layers;
        self.size = size;
        1
    }
}

/// The overlay's pixels in `rect`: each layer's tint weighted by its mask, as premultiplied
/// colour, as opaque as the most painted layer there.
fn draw(masks: &Masks, layers: &[(Layer, Color32)], rect: PixelRect) -> egui::ColorImage {
    let (w, h) = (rect.width as usize, rect.height as usize);
    let mut pixels = vec![Color32::TRANSPARENT; w * h];
    let images: Vec<(&image::GrayImage, Color32)> = layers
        .iter()
        .filter_map(|(layer, tint)| masks.layer(layer).map(|m| (m, *tint)))
        .collect();
    for row in 0..h {
        let y = rect.y + row as u32;
        for column in 0..w {
            let x = rect.x + column as u32;
            let (mut r, mut g, mut b, mut sum, mut top) = (0.0, 0.0, 0.0, 0.0, 0.0f32);
            for (mask, tint) in &images {
                let v = f32::from(mask.get_pixel(x, y).0[0]) / 255.0;
                if v > 0.0 {
                    r += v * f32::from(tint.r());
                    g += v * f32::from(tint.g());
                    b += v * f32::from(tint.b());
                    sum += v;
                    top = top.max(v);
                }
            }
            if sum > 0.0 {
                let alpha = top * OVERLAY_OPACITY;
                let scale = alpha / sum;
                pixels[row * w + column] = Color32::from_rgba_premultiplied(
                    (r * scale).round() as u8,
                    (g * scale).round() as u8,
                    (b * scale).round() as u8,
                    (alpha * 255.0).round() as u8,
                );
            }
        }
    }
    egui::ColorImage::new([w, h], pixels)
}
