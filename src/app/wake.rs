//! Engine events that wake the UI. The engine knows nothing of egui, so a small thread moves its
//! events into a channel the UI drains and requests a repaint for each: the UI sleeps until
//! something happens instead of polling (every extra frame costs CPU the engine needs).

use crossbeam_channel::Receiver;
use eframe::egui;

use crate::engine::Event;

pub struct EngineEvents {
    receiver: Receiver<Event>,
    /// Events arrive without a wake-up (the forwarding thread could not start): poll.
    pub needs_polling: bool,
}

impl EngineEvents {
    /// Forwards `source` until the engine closes it.
    pub fn forward(source: &Receiver<Event>, ctx: &egui::Context) -> Self {
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
                tracing::warn!("cannot start the event thread ({e}); polling the engine instead");
                Self {
                    receiver: source.clone(),
                    needs_polling: true,
                }
            }
        }
    }

    /// The next event, if one is waiting; never blocks.
    pub fn try_recv(&self) -> Option<Event> {
        self.receiver.try_recv().ok()
    }
}
