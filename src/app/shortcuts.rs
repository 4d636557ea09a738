//! Keyboard shortcuts. Each one is consumed in one place so a text field never sees it twice.

use eframe::egui::{self, Key, KeyboardShortcut, Modifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortcut {
    Open,
    NewStyle,
    Save,
    SaveAs,
    ToggleCompare,
    ZoomIn,
    ZoomOut,
    ZoomFit,
    ZoomActual,
    Cancel,
    /// Undo / redo a mask edit.
    Undo,
    Redo,
    /// The mask brush on or off.
    MaskTool,
    /// Brush or eraser.
    SwapBrushMode,
    BrushSmaller,
    BrushLarger,
}

impl Shortcut {
    /// Shortcuts a focused text field has its own meaning for (its own undo).
    fn belongs_to_text_fields(self) -> bool {
        matches!(self, Shortcut::Undo | Shortcut::Redo)
    }
}

const TABLE: [(Shortcut, Modifiers, Key, &str); 19] = [
    (Shortcut::Open, Modifiers::COMMAND, Key::O, "Open a photo"),
    (
        Shortcut::NewStyle,
        Modifiers::COMMAND,
        Key::N,
        "New style… (train one from a painting)",
    ),
    (
        Shortcut::Save,
        Modifiers::COMMAND,
        Key::S,
        "Save (full resolution)",
    ),
    (
        Shortcut::SaveAs,
        Modifiers::COMMAND.plus(Modifiers::SHIFT),
        Key::S,
        "Save as…",
    ),
    (
        Shortcut::ToggleCompare,
        Modifiers::NONE,
        Key::C,
        "Before/after split on or off",
    ),
    (Shortcut::ZoomIn, Modifiers::NONE, Key::Plus, "Zoom in"),
    (Shortcut::ZoomIn, Modifiers::NONE, Key::Equals, "Zoom in"),
    (Shortcut::ZoomOut, Modifiers::NONE, Key::Minus, "Zoom out"),
    (
        Shortcut::ZoomFit,
        Modifiers::NONE,
        Key::Num0,
        "Fit to window",
    ),
    (
        Shortcut::ZoomActual,
        Modifiers::NONE,
        Key::Num1,
        "Actual size (1:1)",
    ),
    (
        Shortcut::Cancel,
        Modifiers::NONE,
        Key::Escape,
        "Cancel the running job",
    ),
    (Shortcut::ZoomFit, Modifiers::NONE, Key::F, "Fit to window"),
    (
        Shortcut::MaskTool,
        Modifiers::NONE,
        Key::B,
        "Mask brush on or off (drag paints)",
    ),
    (
        Shortcut::SwapBrushMode,
        Modifiers::NONE,
        Key::X,
        "Brush or eraser",
    ),
    (
        Shortcut::BrushSmaller,
        Modifiers::NONE,
        Key::OpenBracket,
        "Smaller brush",
    ),
    (
        Shortcut::BrushLarger,
        Modifiers::NONE,
        Key::CloseBracket,
        "Larger brush",
    ),
    (
        Shortcut::Undo,
        Modifiers::COMMAND,
        Key::Z,
        "Undo a mask edit",
    ),
    (
        Shortcut::Redo,
        Modifiers::COMMAND.plus(Modifiers::SHIFT),
        Key::Z,
        "Redo a mask edit",
    ),
    (
        Shortcut::Redo,
        Modifiers::COMMAND,
        Key::Y,
        "Redo a mask edit",
    ),
];

/// The shortcut's key combination as text, for menus and tooltips.
pub fn label(ctx: &egui::Context, shortcut: Shortcut) -> String {
    TABLE
        .iter()
        .find(|(s, ..)| *s == shortcut)
        .map(|(_, modifiers, key, _)| ctx.format_shortcut(&KeyboardShortcut::new(*modifiers, *key)))
        .unwrap_or_default()
}

/// Rows for the help window: keys and what they do (plus the mouse and hold-to-compare).
pub fn help_rows(ctx: &egui::Context) -> Vec<(String, &'static str)> {
    let mut rows: Vec<(String, &'static str)> = TABLE
        .iter()
        .map(|(_, modifiers, key, what)| {
            (
                ctx.format_shortcut(&KeyboardShortcut::new(*modifiers, *key)),
                *what,
            )
        })
        .collect();
    rows.push(("Hold Space".into(), "Show the photo (hold to compare)"));
    rows.push(("Wheel / drag".into(), "Zoom around the pointer / pan"));
    rows.push((
        "Drag (mask brush on)".into(),
        "Paint the mask; right- or middle-drag pans",
    ));
    rows.push(("Double-click".into(), "Fit to window"));
    rows
}

/// The shortcuts pressed this frame. Plain-key shortcuts are ignored while a text field has focus.
pub fn pressed(ctx: &egui::Context) -> Vec<Shortcut> {
    let typing = ctx.memory(|m| m.focused().is_some()) && ctx.egui_wants_keyboard_input();
    ctx.input_mut(|input| {
        // Longest modifier sets first, so Ctrl+Shift+S is not taken as Ctrl+S.
        let mut table = TABLE.to_vec();
        table.sort_by_key(|(_, modifiers, ..)| std::cmp::Reverse(modifier_count(*modifiers)));
        table
            .into_iter()
            .filter(|(shortcut, modifiers, ..)| {
                !(typing && (modifiers.is_none() || shortcut.belongs_to_text_fields()))
            })
            .filter(|(_, modifiers, key, _)| {
                input.consume_shortcut(&KeyboardShortcut::new(*modifiers, *key))
            })
            .map(|(shortcut, ..)| shortcut)
            .collect()
    })
}

/// Hold-to-compare: Space held while no text field has focus.
pub fn holding_compare(ctx: &egui::Context) -> bool {
    !ctx.egui_wants_keyboard_input() && ctx.input(|i| i.key_down(Key::Space))
}

fn modifier_count(m: Modifiers) -> u8 {
    u8::from(m.alt)
        + u8::from(m.ctrl)
        + u8::from(m.shift)
        + u8::from(m.command)
        + u8::from(m.mac_cmd)
}
