//! Networks: the VGG loss network, the feed-forward style transformer, the layers they share and
//! custom candle ops with correct (and cheaper) gradients.

pub mod cpu;
pub mod decoder;
pub mod device;
pub mod hub;
pub mod layers;
pub mod ops;
pub mod pth;
pub mod transformer;
pub mod vgg;
pub mod weights;
