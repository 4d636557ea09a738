//! Helpers shared by the integration tests: synthetic networks and images, the development VGG
//! in `../shared` (tests that need it skip themselves without it), and the egui_kittest harness.
//! Each test binary uses a part of it.
#![allow(dead_code)]

pub mod fixtures;
#[cfg(feature = "gui")]
pub mod harness;
pub mod png;
pub mod pth;
pub mod server;
