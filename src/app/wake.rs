//! Background events that wake the UI. The engine knows nothing of egui, so a small thread moves
//! its events into a channel the UI drains and requests a repaint for each: the UI sleeps until
//! something happens instead of polling (every extra frame costs CPU the engine needs). Events
//! are small: preview images wait in the engine's latest-value slot.

use crossbeam_channel::Receiver;
use eframe::egui;

use crate::engine::Event;

/// The stylize engine's events.
pub type EngineEvents = Forwarded<Event>;

pub struct Forwarded<T> {
    receiver: Receiver<T>,
    /// Events arrive without a wake-up (the forwarding thread could not start): poll.
    pub needs_polling: bool,
}

impl<T: Send + 'static> Forwarded<T> {
    /// Forwards `source` until its sender is dropped.
    pub fn forward(source: &Receiver<T>, ctx: &egui::Context) -> Self {
        let (sender, receiver) = crossbeam_channel::unbounded();
        let (from, ctx) = (source.clone(), ctx.clone());
        let spawned = std::thread::Builder::new()
            .name("atelier-events".into())
            .spawn(move || {
                for event in from.iter() {
                    if sender.send(event).is_err() {
                        break;
                    }
                    ctx.request_repaint();
                }
            });
        match spawned {
            Ok(_) => Self {
                receiver,
                needs_polling: false,
            },
            Err(e) => {
                tracing::warn!("cannot start an event thread ({e}); polling instead");
                Self {
                    receiver: source.clone(),
                    needs_polling: true,
                }
            }
        }
    }

    /// The next event, if one is waiting; never blocks.
    pub fn try_recv(&self) -> Option<T> {
        self.receiver.try_recv().ok()
    }
}
