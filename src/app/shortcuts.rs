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
}

const TABLE: [(Shortcut, Modifiers, Key, &str); 12] = [
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
            .filter(|(_, modifiers, ..)| !(typing && modifiers.is_none()))
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
