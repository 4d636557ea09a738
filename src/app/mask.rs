//! Masks for local style: one grey layer per style (white: that style paints there) and one
//! for "keep the photo here", painted with a brush or loaded from files, with undo and redo.
//! No egui here: the canvas and the mask panel drive it, and jobs read it as [`Regions`].
//!
//! Layers are kept at the photo's size, the longer side capped at [`MASK_MAX_SIDE`] (the engine
//! scales masks to each result anyway). Undo keeps only the rectangle an edit touched.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use image::{imageops, GrayImage, Luma};

use crate::engine::{Regions, Rest};

/// Longer side of the masks' working size.
pub const MASK_MAX_SIDE: u32 = 2048;
/// Undo keeps at most this many edits…
const UNDO_STEPS: usize = 100;
/// …and at most this many bytes of saved pixels (before and after each edit).
const UNDO_BYTES: usize = 256 << 20;
/// A loaded mask whose aspect ratio differs from the photo's by more than this is "stretched".
const ASPECT_TOLERANCE: f64 = 0.02;

/// What a mask layer is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    /// Keep the photo here: wins over every style's mask and over the default style.
    Photo,
    /// The style with this gallery key paints here.
    Style(PathBuf),
}

/// A rectangle of mask pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelRect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl PixelRect {
    pub fn full(size: (u32, u32)) -> Self {
        Self {
            x: 0,
            y: 0,
            width: size.0,
            height: size.1,
        }
    }

    pub fn union(self, other: PixelRect) -> PixelRect {
        let x = self.x.min(other.x);
        let y = self.y.min(other.y);
        let right = (self.x + self.width).max(other.x + other.width);
        let bottom = (self.y + self.height).max(other.y + other.height);
        PixelRect {
            x,
            y,
            width: right - x,
            height: bottom - y,
        }
    }

    fn bytes(self) -> usize {
        self.width as usize * self.height as usize
    }
}

/// Adds `rect` to an accumulated dirty area.
fn grow(dirty: &mut Option<PixelRect>, rect: PixelRect) {
    *dirty = Some(match *dirty {
        Some(d) => d.union(rect),
        None => rect,
    });
}

/// What the brush does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrushMode {
    Paint,
    Erase,
}

/// One layer's change in an edit: the pixels of `rect` before and after (`None`: the layer did
/// not exist, i.e. it was black everywhere and is left out of jobs).
struct Change {
    layer: Layer,
    rect: PixelRect,
    before: Option<GrayImage>,
    after: Option<GrayImage>,
}

/// One undo step (a stroke, an invert, a loaded mask, a recipe's masks…).
struct Edit {
    changes: Vec<Change>,
}

impl Edit {
    fn bytes(&self) -> usize {
        self.changes
            .iter()
            .map(|c| {
                let patches = usize::from(c.before.is_some()) + usize::from(c.after.is_some());
                c.rect.bytes() * patches
            })
            .sum()
    }
}

/// A stroke in progress.
struct Stroke {
    layer: Layer,
    mode: BrushMode,
    /// Radius in mask pixels.
    radius: f32,
    last: (f32, f32),
    /// The layer as it was when the stroke began (`None`: absent).
    before: Option<Arc<GrayImage>>,
    touched: Option<PixelRect>,
}

/// The masks of the open photo, what no mask covers, the feather, and their history.
pub struct Masks {
    /// Working size of every layer; `None` before a photo is open.
    size: Option<(u32, u32)>,
    layers: BTreeMap<Layer, Arc<GrayImage>>,
    /// Masks that arrived (from a recipe) before a photo was open: adopted by the next photo.
    pending: Vec<(Layer, GrayImage)>,
    undo: Vec<Edit>,
    redo: Vec<Edit>,
    stroke: Option<Stroke>,
    /// Pixels changed since the overlay last looked.
    dirty: Option<PixelRect>,
    /// The style (gallery key) that paints where no mask does; `None`: the photo.
    pub rest: Option<PathBuf>,
    /// Feather radius in pixels of the photo (converted to each result's pixels for jobs).
    pub feather: f32,
}

impl Default for Masks {
    fn default() -> Self {
        Self {
            size: None,
            layers: BTreeMap::new(),
            pending: Vec::new(),
            undo: Vec::new(),
            redo: Vec::new(),
            stroke: None,
            dirty: None,
            rest: None,
            feather: DEFAULT_FEATHER,
        }
    }
}

/// Feather of a new photo's masks, in photo pixels.
pub const DEFAULT_FEATHER: f32 = 8.0;

/// The masks' working size for a `width`×`height` photo.
pub fn working_size(width: u32, height: u32) -> (u32, u32) {
    if width.max(height) <= MASK_MAX_SIDE {
        (width.max(1), height.max(1))
    } else {
        crate::imaging::fit_size(width, height, MASK_MAX_SIDE)
    }
}

/// Whether a `from` image stretched to `to` changes its shape noticeably.
pub fn is_stretched(from: (u32, u32), to: (u32, u32)) -> bool {
    let aspect = |(w, h): (u32, u32)| f64::from(w) / f64::from(h.max(1));
    (aspect(from) / aspect(to) - 1.0).abs() > ASPECT_TOLERANCE
}

/// `mask` at `size` (stretched when its shape differs).
fn fit(mask: GrayImage, size: (u32, u32)) -> GrayImage {
    if mask.dimensions() == size {
        mask
    } else {
        imageops::resize(&mask, size.0, size.1, imageops::FilterType::Triangle)
    }
}

/// The pixels of `rect` in `image`.
fn crop(image: &GrayImage, rect: PixelRect) -> GrayImage {
    imageops::crop_imm(image, rect.x, rect.y, rect.width, rect.height).to_image()
}

impl Masks {
    /// Starts over for a newly opened `width`×`height` photo: masks and history are dropped,
    /// except masks a recipe brought before any photo was open, which this photo takes.
    /// Returns the pending masks that had to be stretched (their labels).
    pub fn reset_for_photo(&mut self, width: u32, height: u32) -> Vec<Layer> {
        let size = working_size(width, height);
        self.size = Some(size);
        self.layers.clear();
        self.undo.clear();
        self.redo.clear();
        self.stroke = None;
        self.dirty = Some(PixelRect::full(size));
        let mut stretched = Vec::new();
        for (layer, mask) in std::mem::take(&mut self.pending) {
            if is_stretched(mask.dimensions(), size) {
                stretched.push(layer.clone());
            }
            self.layers.insert(layer, Arc::new(fit(mask, size)));
        }
        stretched
    }

    pub fn size(&self) -> Option<(u32, u32)> {
        self.size
    }

    /// Any layer exists (jobs then run with regions).
    pub fn has_any(&self) -> bool {
        !self.layers.is_empty()
    }

    pub fn layer(&self, layer: &Layer) -> Option<&GrayImage> {
        self.layers.get(layer).map(|m| m.as_ref())
    }

    /// Every layer with its mask (for the recipe).
    pub fn layers(&self) -> impl Iterator<Item = (&Layer, &Arc<GrayImage>)> {
        self.layers.iter()
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// The area changed since the last call (for the overlay), `None` when nothing did.
    pub fn take_dirty(&mut self) -> Option<PixelRect> {
        self.dirty.take()
    }

    fn push_edit(&mut self, edit: Edit) {
        if edit.changes.is_empty() {
            return;
        }
        self.redo.clear();
        self.undo.push(edit);
        let mut bytes: usize = self.undo.iter().map(Edit::bytes).sum();
        while self.undo.len() > UNDO_STEPS || (bytes > UNDO_BYTES && self.undo.len() > 1) {
            bytes -= self.undo[0].bytes();
            self.undo.remove(0);
        }
    }

    /// Puts `patch` (or the layer's absence) back at `rect`.
    fn restore(&mut self, layer: &Layer, rect: PixelRect, patch: Option<&GrayImage>) {
        let Some(size) = self.size else { return };
        match patch {
            None => {
                self.layers.remove(layer);
            }
            Some(patch) => {
                let mask = self
                    .layers
                    .entry(layer.clone())
                    .or_insert_with(|| Arc::new(GrayImage::new(size.0, size.1)));
                imageops::replace(
                    Arc::make_mut(mask),
                    patch,
                    i64::from(rect.x),
                    i64::from(rect.y),
                );
            }
        }
        grow(&mut self.dirty, rect);
    }

    /// Undoes the last edit; returns whether there was one.
    pub fn undo(&mut self) -> bool {
        self.end_stroke();
        let Some(edit) = self.undo.pop() else {
            return false;
        };
        for change in edit.changes.iter().rev() {
            self.restore(&change.layer, change.rect, change.before.as_ref());
        }
        self.redo.push(edit);
        true
    }

    /// Redoes the last undone edit; returns whether there was one.
    pub fn redo(&mut self) -> bool {
        self.end_stroke();
        let Some(edit) = self.redo.pop() else {
            return false;
        };
        for change in &edit.changes {
            self.restore(&change.layer, change.rect, change.after.as_ref());
        }
        self.undo.push(edit);
        true
    }

    /// Replaces whole layers as one undo step (`None` removes a layer).
    fn replace_layers(&mut self, new: Vec<(Layer, Option<GrayImage>)>) {
        let Some(size) = self.size else { return };
        self.end_stroke();
        let full = PixelRect::full(size);
        let mut changes = Vec::new();
        for (layer, mask) in new {
            let before = self.layers.get(&layer).map(|m| (**m).clone());
            if before.is_none() && mask.is_none() {
                continue;
            }
            match &mask {
                Some(mask) => {
                    self.layers.insert(layer.clone(), Arc::new(mask.clone()));
                }
                None => {
                    self.layers.remove(&layer);
                }
            }
            changes.push(Change {
                layer,
                rect: full,
                before,
                after: mask,
            });
        }
        if !changes.is_empty() {
            grow(&mut self.dirty, full);
        }
        self.push_edit(Edit { changes });
    }

    /// Inverts a layer (a missing one becomes all white).
    pub fn invert(&mut self, layer: &Layer) {
        let Some(size) = self.size else { return };
        let mut mask = self
            .layer(layer)
            .cloned()
            .unwrap_or_else(|| GrayImage::new(size.0, size.1));
        imageops::invert(&mut mask);
        self.replace_layers(vec![(layer.clone(), Some(mask))]);
    }

    /// Removes a layer (undoable).
    pub fn clear(&mut self, layer: &Layer) {
        self.replace_layers(vec![(layer.clone(), None)]);
    }

    /// Removes every layer (undoable).
    pub fn clear_all(&mut self) {
        let all = self.layers.keys().map(|l| (l.clone(), None)).collect();
        self.replace_layers(all);
    }

    /// Sets a layer from a loaded mask, scaled to the working size (undoable). Returns whether
    /// it had to be stretched (another aspect ratio than the photo), or `None` when no photo is
    /// open.
    pub fn set_layer(&mut self, layer: Layer, mask: GrayImage) -> Option<bool> {
        let size = self.size?;
        let stretched = is_stretched(mask.dimensions(), size);
        self.replace_layers(vec![(layer, Some(fit(mask, size)))]);
        Some(stretched)
    }

    /// Replaces all layers with a recipe's (undoable). Without a photo they wait for the next
    /// one. Returns the layers that had to be stretched.
    pub fn replace_all(&mut self, masks: Vec<(Layer, GrayImage)>) -> Vec<Layer> {
        let Some(size) = self.size else {
            self.pending = masks;
            return Vec::new();
        };
        let stretched = masks
            .iter()
            .filter(|(_, m)| is_stretched(m.dimensions(), size))
            .map(|(l, _)| l.clone())
            .collect();
        let mut new: Vec<(Layer, Option<GrayImage>)> =
            self.layers.keys().map(|l| (l.clone(), None)).collect();
        for (layer, mask) in masks {
            new.retain(|(l, _)| *l != layer);
            new.push((layer, Some(fit(mask, size))));
        }
        self.replace_layers(new);
        stretched
    }

    /// Starts a stroke on `layer` at `at` (mask pixels) with a brush of `radius` mask pixels.
    pub fn begin_stroke(&mut self, layer: Layer, mode: BrushMode, radius: f32, at: (f32, f32)) {
        self.end_stroke();
        if self.size.is_none() {
            return;
        }
        let before = self.layers.get(&layer).cloned();
        self.stroke = Some(Stroke {
            layer,
            mode,
            radius: radius.max(0.5),
            last: at,
            before,
            touched: None,
        });
        self.dab(at);
    }

    /// Continues the stroke to `at` (mask pixels), with dabs close enough to leave no gaps.
    pub fn stroke_to(&mut self, at: (f32, f32)) {
        let Some(stroke) = &self.stroke else { return };
        let (from, radius) = (stroke.last, stroke.radius);
        let distance = ((at.0 - from.0).powi(2) + (at.1 - from.1).powi(2)).sqrt();
        let spacing = (radius * 0.25).max(0.5);
        let dabs = (distance / spacing).ceil().max(1.0) as usize;
        for i in 1..=dabs {
            let t = i as f32 / dabs as f32;
            self.dab((from.0 + (at.0 - from.0) * t, from.1 + (at.1 - from.1) * t));
        }
        if let Some(stroke) = &mut self.stroke {
            stroke.last = at;
        }
    }

    /// Ends the stroke in progress; returns whether it changed any pixel (an undo step).
    pub fn end_stroke(&mut self) -> bool {
        let Some(stroke) = self.stroke.take() else {
            return false;
        };
        let Some(rect) = stroke.touched else {
            return false;
        };
        let after = self.layers.get(&stroke.layer).map(|m| crop(m, rect));
        let before = stroke.before.as_deref().map(|m| crop(m, rect));
        if before == after {
            return false;
        }
        // Erasing a layer down to nothing removes it, so an erased mask stops making regions.
        let erased_away = stroke.mode == BrushMode::Erase
            && self
                .layers
                .get(&stroke.layer)
                .is_some_and(|m| m.pixels().all(|p| p.0[0] == 0));
        let mut changes = vec![Change {
            layer: stroke.layer.clone(),
            rect,
            before,
            after,
        }];
        if erased_away {
            if let (Some(size), Some(mask)) = (self.size, self.layers.remove(&stroke.layer)) {
                // As one step: the stroke, then the (black) layer's removal.
                changes.push(Change {
                    layer: stroke.layer,
                    rect: PixelRect::full(size),
                    before: Some((*mask).clone()),
                    after: None,
                });
            }
        }
        self.push_edit(Edit { changes });
        true
    }

    /// One round dab of the stroke's brush at `at`, anti-aliased over a pixel at its edge.
    fn dab(&mut self, at: (f32, f32)) {
        let (Some(size), Some(stroke)) = (self.size, &mut self.stroke) else {
            return;
        };
        let r = stroke.radius;
        let x0 = (at.0 - r - 1.0).floor().max(0.0) as u32;
        let y0 = (at.1 - r - 1.0).floor().max(0.0) as u32;
        let x1 = ((at.0 + r + 1.0).ceil().max(0.0) as u32).min(size.0);
        let y1 = ((at.1 + r + 1.0).ceil().max(0.0) as u32).min(size.1);
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        if stroke.mode == BrushMode::Erase && !self.layers.contains_key(&stroke.layer) {
            // Nothing to erase on a layer that does not exist.
            return;
        }
        let mask = self
            .layers
            .entry(stroke.layer.clone())
            .or_insert_with(|| Arc::new(GrayImage::new(size.0, size.1)));
        let mask = Arc::make_mut(mask);
        for y in y0..y1 {
            for x in x0..x1 {
                // Distance from the pixel's centre.
                let d = ((x as f32 + 0.5 - at.0).powi(2) + (y as f32 + 0.5 - at.1).powi(2)).sqrt();
                let coverage = (r + 0.5 - d).clamp(0.0, 1.0);
                if coverage <= 0.0 {
                    continue;
                }
                let level = (coverage * 255.0).round() as u8;
                let pixel = mask.get_pixel_mut(x, y);
                pixel.0[0] = match stroke.mode {
                    BrushMode::Paint => pixel.0[0].max(level),
                    BrushMode::Erase => pixel.0[0].min(255 - level),
                };
            }
        }
        let rect = PixelRect {
            x: x0,
            y: y0,
            width: x1 - x0,
            height: y1 - y0,
        };
        grow(&mut stroke.touched, rect);
        grow(&mut self.dirty, rect);
    }

    /// The job's regions for `styles` (gallery keys and names, in the method's order), with the
    /// feather `feather` in pixels of the result; `None` when no layer exists (every style
    /// paints everywhere, as without masks).
    ///
    /// The engine knows style masks and one "rest"; the app's "keep the photo" layer is folded
    /// in here: it is cut out of every style's mask, and the default style is given explicitly
    /// as what no other mask covers, so the rest can stay the photo.
    pub fn regions(&self, styles: &[(PathBuf, String)], feather: f32) -> Option<Regions> {
        if self.layers.is_empty() {
            return None;
        }
        let size = self.size?;
        let rest = self
            .rest
            .as_ref()
            .and_then(|key| styles.iter().position(|(k, _)| k == key));
        let mut masks: Vec<Option<Arc<GrayImage>>> = styles
            .iter()
            .map(|(key, _)| self.layers.get(&Layer::Style(key.clone())).cloned())
            .collect();
        let labels: Vec<String> = styles.iter().map(|(_, name)| name.clone()).collect();
        let mut rest_for_engine = rest.map_or(Rest::Photo, Rest::Style);
        if let Some(keep) = self.layers.get(&Layer::Photo) {
            if let Some(default) = rest {
                let covered = coverage(&masks, size);
                let own = masks[default].clone();
                let fill = GrayImage::from_fn(size.0, size.1, |x, y| {
                    let own = own.as_ref().map_or(0, |m| m.get_pixel(x, y).0[0]);
                    Luma([own.max(255 - covered.get_pixel(x, y).0[0])])
                });
                masks[default] = Some(Arc::new(fill));
                rest_for_engine = Rest::Photo;
            }
            for mask in masks.iter_mut().flatten() {
                *mask = Arc::new(without(mask, keep));
            }
        }
        if rest_for_engine == Rest::Photo && masks.iter().all(Option::is_none) {
            // Nothing paints: say so through the engine's "empty mask" note.
            if let Some(first) = masks.first_mut() {
                *first = Some(Arc::new(GrayImage::new(size.0, size.1)));
            }
        }
        Some(Regions {
            masks,
            rest: rest_for_engine,
            feather: feather.clamp(0.0, crate::engine::MAX_FEATHER),
            labels,
        })
    }

    /// Whether some style paints somewhere with these styles (for the panel's hint).
    pub fn something_paints(&self, styles: &[PathBuf]) -> bool {
        let default = self.rest.as_ref().is_some_and(|key| styles.contains(key));
        default
            || styles.iter().any(|key| {
                self.layers
                    .get(&Layer::Style(key.clone()))
                    .is_some_and(|m| m.pixels().any(|p| p.0[0] > 0))
            })
    }
}

/// How much the masks together cover each pixel (capped at white).
fn coverage(masks: &[Option<Arc<GrayImage>>], size: (u32, u32)) -> GrayImage {
    let mut sum = GrayImage::new(size.0, size.1);
    for mask in masks.iter().flatten() {
        for (s, m) in sum.pixels_mut().zip(mask.pixels()) {
            s.0[0] = s.0[0].saturating_add(m.0[0]);
        }
    }
    sum
}

/// `mask` with `keep` cut out (multiplied by its inverse).
fn without(mask: &GrayImage, keep: &GrayImage) -> GrayImage {
    let mut out = mask.clone();
    for (o, k) in out.pixels_mut().zip(keep.pixels()) {
        o.0[0] = ((u16::from(o.0[0]) * u16::from(255 - k.0[0]) + 127) / 255) as u8;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn style(name: &str) -> Layer {
        Layer::Style(PathBuf::from(name))
    }

    fn masks(width: u32, height: u32) -> Masks {
        let mut masks = Masks::default();
        masks.reset_for_photo(width, height);
        masks
    }

    fn painted(mask: &GrayImage) -> usize {
        mask.pixels().filter(|p| p.0[0] > 0).count()
    }

    #[test]
    fn working_size_caps_the_longer_side() {
        assert_eq!(working_size(640, 480), (640, 480));
        assert_eq!(working_size(4096, 2048), (2048, 1024));
    }

    #[test]
    fn a_stroke_paints_a_line_and_undoes_in_one_step() {
        let mut m = masks(100, 50);
        let a = style("a");
        m.begin_stroke(a.clone(), BrushMode::Paint, 4.0, (10.0, 25.0));
        m.stroke_to((90.0, 25.0));
        assert!(m.end_stroke());
        let mask = m.layer(&a).unwrap();
        // Continuous along the line, nothing far from it.
        assert!((12..88).all(|x| mask.get_pixel(x, 25).0[0] == 255));
        assert_eq!(mask.get_pixel(50, 5).0[0], 0);
        let stroke = mask.clone();
        assert!(m.undo());
        assert!(m.layer(&a).is_none(), "the layer did not exist before");
        assert!(m.redo());
        assert_eq!(m.layer(&a), Some(&stroke));
        assert!(!m.redo());
    }

    #[test]
    fn erasing_everything_removes_the_layer_and_undo_brings_it_back() {
        let mut m = masks(20, 20);
        let a = style("a");
        m.begin_stroke(a.clone(), BrushMode::Paint, 3.0, (10.0, 10.0));
        m.end_stroke();
        let dab = m.layer(&a).unwrap().clone();
        m.begin_stroke(a.clone(), BrushMode::Erase, 8.0, (10.0, 10.0));
        m.end_stroke();
        assert!(m.layer(&a).is_none());
        m.undo();
        assert_eq!(m.layer(&a), Some(&dab));
        // Erasing a layer that does not exist changes nothing and adds no undo step.
        m.begin_stroke(style("b"), BrushMode::Erase, 3.0, (5.0, 5.0));
        assert!(!m.end_stroke());
    }

    #[test]
    fn invert_and_clear_are_undoable() {
        let mut m = masks(8, 4);
        let a = style("a");
        m.invert(&a);
        assert!(m.layer(&a).unwrap().pixels().all(|p| p.0[0] == 255));
        m.begin_stroke(a.clone(), BrushMode::Erase, 1.0, (1.0, 1.0));
        m.end_stroke();
        let erased = m.layer(&a).unwrap().clone();
        m.invert(&a);
        let inverted = m.layer(&a).unwrap();
        assert_eq!(
            painted(inverted),
            32 - painted(&erased) + count_partial(&erased)
        );
        m.clear(&a);
        assert!(m.layer(&a).is_none());
        m.undo();
        m.undo();
        assert_eq!(m.layer(&a), Some(&erased));
    }

    /// Pixels neither black nor white (painted in both a mask and its inverse).
    fn count_partial(mask: &GrayImage) -> usize {
        mask.pixels()
            .filter(|p| p.0[0] != 0 && p.0[0] != 255)
            .count()
    }

    #[test]
    fn loaded_masks_are_scaled_and_stretching_is_reported() {
        let mut m = masks(200, 100);
        assert_eq!(m.set_layer(style("a"), GrayImage::new(50, 25)), Some(false));
        assert_eq!(m.layer(&style("a")).unwrap().dimensions(), (200, 100));
        assert_eq!(m.set_layer(style("b"), GrayImage::new(30, 30)), Some(true));
    }

    #[test]
    fn recipe_masks_before_a_photo_wait_for_it() {
        let mut m = Masks::default();
        let stretched = m.replace_all(vec![(style("a"), GrayImage::new(10, 10))]);
        assert!(stretched.is_empty() && !m.has_any());
        let stretched = m.reset_for_photo(40, 20);
        assert_eq!(stretched, vec![style("a")]);
        assert_eq!(m.layer(&style("a")).unwrap().dimensions(), (40, 20));
        // A second photo starts clean.
        m.reset_for_photo(40, 20);
        assert!(!m.has_any());
    }

    #[test]
    fn regions_follow_the_styles_order_and_fold_in_the_photo_layer() {
        let mut m = masks(10, 10);
        let styles = vec![
            (PathBuf::from("a"), "A".to_string()),
            (PathBuf::from("b"), "B".to_string()),
        ];
        assert!(m.regions(&styles, 3.0).is_none(), "no masks, no regions");
        m.set_layer(
            style("b"),
            GrayImage::from_fn(10, 10, |x, _| Luma([if x < 5 { 255 } else { 0 }])),
        );
        let regions = m.regions(&styles, 3.0).unwrap();
        assert!(regions.masks[0].is_none() && regions.masks[1].is_some());
        assert_eq!(regions.rest, Rest::Photo);
        assert_eq!(regions.labels, ["A", "B"]);
        regions.check(2).unwrap();

        // The default style fills the rest; the photo layer is cut out of it.
        m.rest = Some(PathBuf::from("a"));
        assert_eq!(m.regions(&styles, 0.0).unwrap().rest, Rest::Style(0));
        m.set_layer(
            Layer::Photo,
            GrayImage::from_fn(10, 10, |_, y| Luma([if y < 2 { 255 } else { 0 }])),
        );
        let regions = m.regions(&styles, 0.0).unwrap();
        assert_eq!(regions.rest, Rest::Photo);
        let a = regions.masks[0].as_ref().unwrap();
        let b = regions.masks[1].as_ref().unwrap();
        assert_eq!(a.get_pixel(8, 5).0[0], 255, "the default where b is not");
        assert_eq!(a.get_pixel(2, 5).0[0], 0);
        assert_eq!(b.get_pixel(2, 5).0[0], 255);
        assert_eq!(a.get_pixel(8, 0).0[0], 0, "the photo is kept");
        assert_eq!(b.get_pixel(2, 0).0[0], 0, "the photo is kept");
        regions.check(2).unwrap();
    }

    #[test]
    fn only_a_photo_layer_paints_nothing_but_still_makes_valid_regions() {
        let mut m = masks(6, 6);
        m.invert(&Layer::Photo);
        let styles = vec![(PathBuf::from("a"), "A".to_string())];
        assert!(!m.something_paints(&[PathBuf::from("a")]));
        let regions = m.regions(&styles, 0.0).unwrap();
        regions.check(1).unwrap();
        assert!(regions.notes(6, 6).iter().any(|n| n.contains("empty")));
    }
}
