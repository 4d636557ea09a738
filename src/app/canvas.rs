//! The canvas: the photo or the result, fit to the window or zoomed and panned, with a
//! before/after split (drag the line) or hold-to-compare. With the mask brush on, the primary
//! button paints (reported as [`StrokeInput`]s in photo pixels) and the other buttons pan; the
//! masks' tinted overlay and the brush's outline are drawn over the picture.

use eframe::egui::{self, Color32, Pos2, Rect, Sense, Stroke, Vec2};

const MIN_ZOOM: f32 = 0.02;
const MAX_ZOOM: f32 = 16.0;
const ZOOM_STEP: f32 = 1.25;
/// Grab distance (points) of the compare line.
const SPLIT_GRAB: f32 = 10.0;

/// Which pictures the canvas shows this frame.
pub struct CanvasImages<'a> {
    pub before: &'a egui::TextureHandle,
    pub after: Option<&'a egui::TextureHandle>,
    /// Size of the original photo in pixels (zoom 1 shows it 1:1).
    pub size: Vec2,
    /// Hold-to-compare: show only the photo.
    pub show_before: bool,
    /// The masks' tint, drawn over the whole picture.
    pub overlay: Option<&'a egui::TextureHandle>,
    /// The mask brush is on: drag paints.
    pub brush: Option<BrushCursor>,
}

/// How the brush shows under the pointer.
#[derive(Debug, Clone, Copy)]
pub struct BrushCursor {
    /// Radius in photo pixels.
    pub radius: f32,
    pub color: Color32,
    pub erase: bool,
}

/// Brush input, in photo pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StrokeInput {
    Begin(Pos2),
    To(Pos2),
    End,
}

/// What the canvas reports after a frame.
pub struct CanvasOutput {
    pub response: egui::Response,
    /// Brush input this frame, in order.
    pub strokes: Vec<StrokeInput>,
}

#[derive(Debug, Clone)]
pub struct Canvas {
    /// `None` fits the picture to the window.
    zoom: Option<f32>,
    /// Offset of the picture's centre from the canvas centre, in points.
    pan: Vec2,
    /// Before/after split on.
    pub compare: bool,
    /// Split position as a fraction of the picture's width.
    pub split: f32,
    dragging_split: bool,
    last_fit: f32,
    /// A brush stroke is in progress; the pointer's last position (screen points).
    stroke_at: Option<Pos2>,
}

impl Default for Canvas {
    fn default() -> Self {
        Self {
            zoom: None,
            pan: Vec2::ZERO,
            compare: false,
            split: 0.5,
            dragging_split: false,
            last_fit: 1.0,
            stroke_at: None,
        }
    }
}

impl Canvas {
    pub fn fit(&mut self) {
        self.zoom = None;
        self.pan = Vec2::ZERO;
    }

    pub fn actual_size(&mut self) {
        self.zoom = Some(1.0);
        self.pan = Vec2::ZERO;
    }

    pub fn zoom_by(&mut self, factor: f32) {
        let current = self.zoom.unwrap_or(self.last_fit);
        self.zoom = Some((current * factor).clamp(MIN_ZOOM, MAX_ZOOM));
    }

    pub fn zoom_in(&mut self) {
        self.zoom_by(ZOOM_STEP);
    }

    pub fn zoom_out(&mut self) {
        self.zoom_by(1.0 / ZOOM_STEP);
    }

    /// Screen points per photo pixel (the zoom, or the fit when fitted).
    pub fn scale(&self) -> f32 {
        self.zoom.unwrap_or(self.last_fit)
    }

    /// The zoom level as a percentage, for the status line.
    pub fn zoom_percent(&self) -> f32 {
        self.zoom.unwrap_or(self.last_fit) * 100.0
    }

    /// Draws the pictures into all the space left in `ui`.
    pub fn show(&mut self, ui: &mut egui::Ui, images: &CanvasImages<'_>) -> CanvasOutput {
        let area = ui.available_rect_before_wrap();
        let response = ui.allocate_rect(area, Sense::click_and_drag());
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "Canvas"));
        let size = images.size.max(Vec2::splat(1.0));
        self.last_fit = (area.width() / size.x)
            .min(area.height() / size.y)
            .max(MIN_ZOOM);
        let zoom = self.zoom.unwrap_or(self.last_fit);
        let picture = Rect::from_center_size(area.center() + self.pan, size * zoom);
        let comparing = self.compare && images.after.is_some() && !images.show_before;
        let split_x = picture.left() + self.split * picture.width();

        let strokes = match images.brush {
            Some(_) => self.brush_input(ui, &response, picture, zoom),
            None => {
                // The brush was switched off mid-stroke.
                self.stroke_at
                    .take()
                    .map(|_| vec![StrokeInput::End])
                    .unwrap_or_default()
            }
        };
        let painting = images.brush.is_some();
        self.handle_input(
            ui,
            &response,
            area,
            picture,
            zoom,
            comparing && !painting,
            split_x,
            painting,
        );

        let zoom = self.zoom.unwrap_or(self.last_fit);
        let picture = Rect::from_center_size(area.center() + self.pan, size * zoom);
        let split_x = picture.left() + self.split * picture.width();
        let painter = ui.painter_at(area);
        let full_uv = Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0));
        match images.after {
            Some(after) if comparing => {
                let (left, right) = split_rect(picture, split_x);
                let (left_uv, right_uv) = split_rect(full_uv, self.split);
                painter.image(images.before.id(), left, left_uv, Color32::WHITE);
                painter.image(after.id(), right, right_uv, Color32::WHITE);
                let line_top = Pos2::new(split_x, picture.top().max(area.top()));
                let line_bottom = Pos2::new(split_x, picture.bottom().min(area.bottom()));
                painter.line_segment([line_top, line_bottom], Stroke::new(2.0, Color32::WHITE));
                let handle = Pos2::new(split_x, line_top.y.midpoint(line_bottom.y));
                painter.circle(
                    handle,
                    7.0,
                    Color32::WHITE,
                    Stroke::new(1.0, Color32::DARK_GRAY),
                );
                let font = egui::FontId::proportional(13.0);
                let label_y = line_top.y + 8.0;
                for (text, pos, align) in [
                    (
                        "Before",
                        Pos2::new(split_x - 8.0, label_y),
                        egui::Align2::RIGHT_TOP,
                    ),
                    (
                        "After",
                        Pos2::new(split_x + 8.0, label_y),
                        egui::Align2::LEFT_TOP,
                    ),
                ] {
                    badge(
                        &painter,
                        pos,
                        align,
                        text,
                        font.clone(),
                        Color32::from_black_alpha(150),
                    );
                }
            }
            Some(after) if !images.show_before => {
                painter.image(after.id(), picture, full_uv, Color32::WHITE);
            }
            _ => {
                painter.image(images.before.id(), picture, full_uv, Color32::WHITE);
            }
        }
        if let Some(overlay) = images.overlay {
            painter.image(overlay.id(), picture, full_uv, Color32::WHITE);
        }
        if let (Some(brush), Some(pointer)) = (images.brush, response.hover_pos()) {
            let radius = (brush.radius * zoom).max(1.0);
            let color = if brush.erase {
                Color32::WHITE
            } else {
                brush.color
            };
            painter.circle_stroke(pointer, radius + 1.0, Stroke::new(1.0, Color32::BLACK));
            painter.circle_stroke(pointer, radius, Stroke::new(1.5, color));
            if brush.erase {
                // An eraser: a line across the circle.
                let d = Vec2::splat(radius * std::f32::consts::FRAC_1_SQRT_2);
                painter.line_segment([pointer - d, pointer + d], Stroke::new(1.0, color));
            }
            ui.ctx().set_cursor_icon(egui::CursorIcon::Crosshair);
        }
        if images.show_before && images.after.is_some() {
            let pos = area.left_top() + Vec2::new(10.0, 10.0);
            let font = egui::FontId::proportional(14.0);
            badge(
                &painter,
                pos,
                egui::Align2::LEFT_TOP,
                "Before",
                font,
                Color32::from_black_alpha(160),
            );
        }
        CanvasOutput { response, strokes }
    }

    /// The brush's input: a press on the canvas begins a stroke, moves continue it, the release
    /// ends it (a click is a stroke of one dab). Positions are in photo pixels.
    fn brush_input(
        &mut self,
        ui: &egui::Ui,
        response: &egui::Response,
        picture: Rect,
        zoom: f32,
    ) -> Vec<StrokeInput> {
        let to_photo = |p: Pos2| Pos2::ZERO + (p - picture.min) / zoom;
        let (down, pressed_at, pointer) = ui.input(|i| {
            (
                i.pointer.primary_down(),
                i.pointer.press_origin(),
                i.pointer.interact_pos(),
            )
        });
        let mut strokes = Vec::new();
        if self.stroke_at.is_none() {
            let start = if down && response.is_pointer_button_down_on() {
                pressed_at.or(pointer)
            } else if response.clicked() {
                // Pressed and released within one frame.
                pointer
            } else {
                None
            };
            if let Some(start) = start {
                strokes.push(StrokeInput::Begin(to_photo(start)));
                self.stroke_at = Some(start);
            }
        }
        if let Some(last) = self.stroke_at {
            if let Some(p) = pointer.filter(|p| *p != last) {
                strokes.push(StrokeInput::To(to_photo(p)));
                self.stroke_at = Some(p);
            }
            if !down {
                strokes.push(StrokeInput::End);
                self.stroke_at = None;
            }
        }
        strokes
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_input(
        &mut self,
        ui: &egui::Ui,
        response: &egui::Response,
        area: Rect,
        picture: Rect,
        zoom: f32,
        comparing: bool,
        split_x: f32,
        painting: bool,
    ) {
        if painting {
            // The primary button paints; the others pan.
            let panning = response.dragged_by(egui::PointerButton::Secondary)
                || response.dragged_by(egui::PointerButton::Middle);
            if panning {
                if self.zoom.is_none() {
                    self.zoom = Some(zoom);
                }
                self.pan += response.drag_delta();
            }
        } else if response.drag_started() {
            self.dragging_split = comparing
                && response
                    .interact_pointer_pos()
                    .is_some_and(|p| (p.x - split_x).abs() <= SPLIT_GRAB);
        }
        if response.dragged() && !painting {
            if self.dragging_split {
                if let Some(p) = response.interact_pointer_pos() {
                    self.split =
                        ((p.x - picture.left()) / picture.width().max(1.0)).clamp(0.0, 1.0);
                }
            } else {
                if self.zoom.is_none() {
                    self.zoom = Some(zoom);
                }
                self.pan += response.drag_delta();
            }
        }
        if response.drag_stopped() {
            self.dragging_split = false;
        }
        if response.double_clicked() && !painting {
            self.fit();
        }
        if comparing {
            if let Some(p) = response.hover_pos() {
                if (p.x - split_x).abs() <= SPLIT_GRAB || self.dragging_split {
                    ui.ctx().set_cursor_icon(egui::CursorIcon::ResizeHorizontal);
                }
            }
        }
        if response.hovered() {
            let (scroll, pinch) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
            let factor = (scroll / 200.0).exp() * pinch;
            if (factor - 1.0).abs() > 1e-4 {
                let new_zoom = (zoom * factor).clamp(MIN_ZOOM, MAX_ZOOM);
                // Keep the point under the pointer where it is.
                if let Some(pointer) = response.hover_pos() {
                    let from_center = pointer - area.center() - self.pan;
                    self.pan = pointer - area.center() - from_center * (new_zoom / zoom);
                }
                self.zoom = Some(new_zoom);
            }
        }
    }
}

/// Splits `rect` vertically at `x` into its left and right parts.
fn split_rect(rect: Rect, x: f32) -> (Rect, Rect) {
    let x = x.clamp(rect.left(), rect.right());
    (
        Rect::from_min_max(rect.min, Pos2::new(x, rect.bottom())),
        Rect::from_min_max(Pos2::new(x, rect.top()), rect.max),
    )
}

/// A small hint in the bottom-left corner of `area`.
pub fn hint(ui: &egui::Ui, area: Rect, text: &str) {
    let painter = ui.painter_at(area);
    badge(
        &painter,
        area.left_bottom() + Vec2::new(8.0, -8.0),
        egui::Align2::LEFT_BOTTOM,
        text,
        egui::FontId::proportional(12.0),
        Color32::from_black_alpha(140),
    );
}

/// White text on a filled rounded box, anchored at `pos`.
pub(super) fn badge(
    painter: &egui::Painter,
    pos: Pos2,
    align: egui::Align2,
    text: &str,
    font: egui::FontId,
    fill: Color32,
) {
    let galley = painter.layout_no_wrap(text.to_string(), font, Color32::WHITE);
    let rect = align.anchor_size(pos, galley.size());
    painter.rect_filled(rect.expand(3.0), 3.0, fill);
    painter.galley(rect.min, galley, Color32::WHITE);
}
