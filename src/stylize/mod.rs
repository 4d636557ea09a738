//! Stylisation algorithms: Gatys optimisation and feed-forward inference.

pub mod adam;
pub mod arbitrary;
pub mod cache;
pub mod color;
pub mod gatys;
pub mod lbfgs;
pub mod network;
pub mod optim;
pub mod regions;
pub mod tiles;
